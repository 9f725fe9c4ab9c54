//! Image files: decoding PNG / JPEG to tensors, writing PNGs that carry their workflow,
//! reading the workflow back, and the next free file number.
use std::path::Path;

use tch::{Kind, Tensor};
use weft_engine::{FileAccess, NodeError, NodeResult};

/// The PNG text keyword under which a saved image carries the workflow that made it (JSON).
pub const WORKFLOW_PNG_KEY: &str = "weft-workflow";

/// Decodes an image file, opened under `files`' rule, to a [1, 3, H, W] tensor in [0, 1].
pub fn load_image(path: &Path, files: &FileAccess) -> NodeResult<Tensor> {
    Ok(load_image_and_alpha(path, files)?.0)
}

/// As [`load_image`], with the file's alpha channel as a [1, H, W] tensor in [0, 1] when it
/// has one (`None` for RGB or grey files without alpha).
pub fn load_image_and_alpha(
    path: &Path,
    files: &FileAccess,
) -> NodeResult<(Tensor, Option<Tensor>)> {
    let file = files
        .open(path)
        .map_err(|e| NodeError::msg(format!("cannot read {}: {e}", path.display())))?;
    let not_image = |e: &dyn std::fmt::Display| {
        NodeError::msg(format!("{}: not a readable image ({e})", path.display()))
    };
    let decoded = image::ImageReader::new(std::io::BufReader::new(file))
        .with_guessed_format()
        .map_err(|e| not_image(&e))?
        .decode()
        .map_err(|e| not_image(&e))?;
    let alpha = if decoded.color().has_alpha() {
        // 16-bit alpha is kept at full precision: a painted mask's edge may be soft.
        let rgba = decoded.to_rgba32f();
        let (w, h) = rgba.dimensions();
        let t = Tensor::f_from_slice(rgba.as_raw())?.f_reshape([h as i64, w as i64, 4])?;
        Some(t.f_select(2, 3)?.f_unsqueeze(0)?.f_contiguous()?)
    } else {
        None
    };
    let img = decoded.to_rgb8();
    let (w, h) = img.dimensions();
    let t = Tensor::f_from_data_size(img.as_raw(), &[h as i64, w as i64, 3], Kind::Uint8)?;
    let rgb = t
        .f_permute([2, 0, 1])?
        .f_unsqueeze(0)?
        .f_to_kind(Kind::Float)?
        .f_div_scalar(255.0)?;
    Ok((rgb, alpha))
}

pub(super) fn next_counter(dir: &Path, stem: &str) -> u32 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 1;
    };
    entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let rest = name
                .strip_prefix(stem)?
                .strip_prefix('_')?
                .strip_suffix(".png")?;
            rest.parse::<u32>().ok()
        })
        .max()
        .map_or(1, |m| m + 1)
}

pub(super) fn write_png(
    path: &Path,
    width: u32,
    height: u32,
    rgb: &[u8],
    workflow_json: &str,
) -> NodeResult<()> {
    let fail =
        |e: &dyn std::fmt::Display| NodeError::msg(format!("writing {}: {e}", path.display()));
    let file = std::fs::File::create(path).map_err(|e| fail(&e))?;
    let mut encoder = png::Encoder::new(std::io::BufWriter::new(file), width, height);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    encoder
        .add_itxt_chunk(WORKFLOW_PNG_KEY.to_string(), workflow_json.to_string())
        .map_err(|e| fail(&e))?;
    let mut writer = encoder.write_header().map_err(|e| fail(&e))?;
    writer.write_image_data(rgb).map_err(|e| fail(&e))?;
    writer.finish().map_err(|e| fail(&e))?;
    Ok(())
}

/// Reads the workflow JSON a weft PNG carries, if any.
pub fn workflow_from_png(path: &Path) -> Result<Option<String>, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let decoder = png::Decoder::new(std::io::BufReader::new(file));
    let reader = decoder
        .read_info()
        .map_err(|e| format!("{}: not a PNG ({e})", path.display()))?;
    let info = reader.info();
    for chunk in &info.utf8_text {
        if chunk.keyword == WORKFLOW_PNG_KEY {
            return chunk.get_text().map(Some).map_err(|e| e.to_string());
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_engine::ModelFolders;

    #[test]
    fn load_image_reads_the_file_it_checked_and_refuses_a_link_put_in_its_place() {
        let dir = std::env::temp_dir().join(format!("weft-load-image-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let inputs = dir.join("inputs");
        std::fs::create_dir_all(&inputs).unwrap();
        let image = inputs.join("in.png");
        let outside = dir.join("outside.png");
        for path in [&image, &outside] {
            image::RgbImage::from_pixel(2, 2, image::Rgb([9, 9, 9]))
                .save(path)
                .unwrap();
        }
        let files = FileAccess::within(
            &ModelFolders::single(dir.join("models")),
            std::slice::from_ref(&inputs),
            "the inputs folder",
        );
        assert_eq!(load_image(&image, &files).unwrap().size(), [1, 3, 2, 2]);
        std::fs::remove_file(&image).unwrap();
        std::os::unix::fs::symlink(&outside, &image).unwrap();
        let error = load_image(&image, &files).unwrap_err().to_string();
        assert!(
            error.contains("in.png") && error.contains("symbolic link"),
            "{error}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
