//! Images: float tensors [batch, 3, height, width] in [0, 1], RGB; their files (PNGs that
//! carry the workflow that made them); and the image nodes.

mod files;
mod nodes;
mod tensor;

pub use files::{load_image, load_image_and_alpha, workflow_from_png, WORKFLOW_PNG_KEY};
pub use nodes::{ImageBatch, ImageScale, LoadImage, SaveImage};
pub use tensor::{check_image, to_rgb8};
