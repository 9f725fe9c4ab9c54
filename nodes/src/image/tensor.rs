//! Images as tensors: the shape check every image input goes through, and one image of a
//! batch as 8-bit RGB.

use tch::{Device, Kind, Tensor};
use weft_engine::{NodeError, NodeResult};

/// Checks an image tensor's shape: [batch, 3, height, width].
pub fn check_image(t: &Tensor, what: &str) -> NodeResult<(i64, i64, i64)> {
    match t.size()[..] {
        [b, 3, h, w] if b > 0 && h > 0 && w > 0 => Ok((b, h, w)),
        ref other => Err(NodeError::msg(format!(
            "{what} must be an image [batch, 3, height, width], got {other:?}"
        ))),
    }
}

/// One image of a batch as 8-bit RGB rows.
pub fn to_rgb8(image: &Tensor, index: i64) -> NodeResult<(u32, u32, Vec<u8>)> {
    let (_, h, w) = check_image(image, "image")?;
    let pixels = image
        .f_get(index)?
        .f_to_device(Device::Cpu)?
        .f_to_kind(Kind::Float)?
        .f_clamp(0.0, 1.0)?
        .f_mul_scalar(255.0)?
        .f_round()?
        .f_to_kind(Kind::Uint8)?
        .f_permute([1, 2, 0])?
        .f_contiguous()?
        .f_flatten(0, -1)?;
    let bytes = Vec::<u8>::try_from(&pixels)?;
    Ok((w as u32, h as u32, bytes))
}
