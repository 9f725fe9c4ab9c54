//! The contact sheet of a sweep: each cell's first image placed at its row and column, with
//! headers giving the values of the row and column axes, drawn with the font in `font.rs`
//! (shipped as source; no font file is read).
pub mod font;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use image::{Rgb, RgbImage};
use weft_engine::sweep::SweepPlan;
use weft_engine::Constant;

/// Font pixels are drawn this many image pixels wide: 5x7 glyphs become 10x14.
const TEXT_SCALE: u32 = 2;
/// Space around a header's text and between cells, in image pixels.
const PAD: u32 = 6;
const GAP: u32 = 4;
/// The longest label text drawn (a long prompt is cut with "...").
const LABEL_CHARS: usize = 40;
const BACKGROUND: Rgb<u8> = Rgb([255, 255, 255]);
const INK: Rgb<u8> = Rgb([20, 20, 20]);
const NO_IMAGE: Rgb<u8> = Rgb([200, 200, 200]);

/// Where each cell goes and what heads the rows and columns (a header may have several lines:
/// one per axis it stands for).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct GridLayout {
    pub row_labels: Vec<Vec<String>>,
    pub column_labels: Vec<Vec<String>>,
    /// (row, column) of each cell, in cell order.
    pub positions: Vec<(usize, usize)>,
}

/// A value as a header shows it: text without quotes, cut when long.
fn shown(value: &Constant) -> String {
    let text = match value {
        Constant::String(s) => s.clone(),
        other => other.to_string(),
    };
    if text.chars().count() > LABEL_CHARS {
        let cut: String = text.chars().take(LABEL_CHARS - 3).collect();
        format!("{cut}...")
    } else {
        text
    }
}

/// The grid's layout for a sweep: headers say `input=value` (`node.input=value` where two axes
/// share an input name).
pub fn layout(plan: &SweepPlan) -> GridLayout {
    let input_of = |axis: &str| axis.split_once('.').map_or(axis, |(_, i)| i).to_string();
    let label_name = |axis: &str| {
        let input = input_of(axis);
        let shared = plan
            .axes
            .iter()
            .filter(|(n, _)| input_of(n) == input)
            .count()
            > 1;
        if shared {
            axis.to_string()
        } else {
            input
        }
    };
    let (rows, columns) = plan.shape();
    let (row_axes, column_axes) = (plan.rows(), plan.columns());
    let mut row_labels = vec![Vec::new(); rows];
    let mut column_labels = vec![Vec::new(); columns];
    let mut positions = Vec::with_capacity(plan.len());
    for cell in 0..plan.len() {
        let (row, column) = plan.position(cell);
        positions.push((row, column));
        let values = plan.values(cell);
        let header = |axes: &[String]| -> Vec<String> {
            axes.iter()
                .filter_map(|a| {
                    values
                        .get(a)
                        .map(|v| format!("{}={}", label_name(a), shown(v)))
                })
                .collect()
        };
        if row_labels[row].is_empty() {
            row_labels[row] = header(&row_axes);
        }
        if column_labels[column].is_empty() {
            column_labels[column] = header(&column_axes);
        }
    }
    GridLayout {
        row_labels,
        column_labels,
        positions,
    }
}

fn draw_text(canvas: &mut RgbImage, text: &str, x: u32, y: u32) {
    let mut pen = x;
    for c in text.chars() {
        for (gy, row) in font::glyph(c).iter().enumerate() {
            for (gx, bit) in row.bytes().enumerate() {
                if bit != b'#' {
                    continue;
                }
                for dy in 0..TEXT_SCALE {
                    for dx in 0..TEXT_SCALE {
                        let px = pen + gx as u32 * TEXT_SCALE + dx;
                        let py = y + gy as u32 * TEXT_SCALE + dy;
                        if px < canvas.width() && py < canvas.height() {
                            canvas.put_pixel(px, py, INK);
                        }
                    }
                }
            }
        }
        pen += (font::GLYPH_WIDTH + font::SPACING) * TEXT_SCALE;
    }
}

fn line_height() -> u32 {
    (font::GLYPH_HEIGHT + 3) * TEXT_SCALE
}

fn lines_width(lines: &[String]) -> u32 {
    lines
        .iter()
        .map(|l| font::text_width(l) * TEXT_SCALE)
        .max()
        .unwrap_or(0)
}

/// Composes the sheet: `images[i]` is cell i's image file (`None` for a cell that made none,
/// drawn as a grey box).
pub fn compose(layout: &GridLayout, images: &[Option<PathBuf>]) -> Result<RgbImage> {
    let mut loaded = Vec::with_capacity(images.len());
    for path in images {
        loaded.push(match path {
            Some(p) => Some(
                image::open(p)
                    .with_context(|| format!("reading cell image {}", p.display()))?
                    .to_rgb8(),
            ),
            None => None,
        });
    }
    compose_images(layout, &loaded)
}

/// Composes the sheet from images already read (a fleet's come from its outputs storage).
pub fn compose_images(layout: &GridLayout, loaded: &[Option<RgbImage>]) -> Result<RgbImage> {
    let cell_w = loaded
        .iter()
        .flatten()
        .map(|i| i.width())
        .max()
        .unwrap_or(64);
    let cell_h = loaded
        .iter()
        .flatten()
        .map(|i| i.height())
        .max()
        .unwrap_or(64);
    let has_row_labels = layout.row_labels.iter().any(|l| !l.is_empty());
    let row_header_w = if has_row_labels {
        layout
            .row_labels
            .iter()
            .map(|l| lines_width(l))
            .max()
            .unwrap_or(0)
            + 2 * PAD
    } else {
        0
    };
    let column_lines = layout.column_labels.iter().map(Vec::len).max().unwrap_or(0) as u32;
    let column_header_h = if column_lines > 0 {
        column_lines * line_height() + 2 * PAD
    } else {
        0
    };
    let column_w = layout
        .column_labels
        .iter()
        .map(|l| lines_width(l) + 2 * PAD)
        .max()
        .unwrap_or(0)
        .max(cell_w);
    let row_h = layout
        .row_labels
        .iter()
        .map(|l| l.len() as u32 * line_height() + 2 * PAD)
        .max()
        .unwrap_or(0)
        .max(cell_h);
    let (rows, columns) = (
        layout.row_labels.len().max(1) as u32,
        layout.column_labels.len().max(1) as u32,
    );
    let width = row_header_w + columns * column_w + (columns + 1) * GAP;
    let height = column_header_h + rows * row_h + (rows + 1) * GAP;
    let pixels = u64::from(width) * u64::from(height);
    anyhow::ensure!(
        pixels <= 400_000_000,
        "the grid would be {width}x{height} pixels; too large to compose (fewer cells or smaller images)"
    );
    let mut canvas = RgbImage::from_pixel(width, height, BACKGROUND);
    let column_x = |c: u32| row_header_w + GAP + c * (column_w + GAP);
    let row_y = |r: u32| column_header_h + GAP + r * (row_h + GAP);
    for (c, lines) in layout.column_labels.iter().enumerate() {
        for (i, line) in lines.iter().enumerate() {
            let w = font::text_width(line) * TEXT_SCALE;
            let x = column_x(c as u32) + (column_w.saturating_sub(w)) / 2;
            draw_text(&mut canvas, line, x, PAD + i as u32 * line_height());
        }
    }
    for (r, lines) in layout.row_labels.iter().enumerate() {
        let block = lines.len() as u32 * line_height();
        let top = row_y(r as u32) + row_h.saturating_sub(block) / 2;
        for (i, line) in lines.iter().enumerate() {
            draw_text(&mut canvas, line, PAD, top + i as u32 * line_height());
        }
    }
    for (cell, &(r, c)) in layout.positions.iter().enumerate() {
        let (x0, y0) = (column_x(c as u32), row_y(r as u32));
        match loaded.get(cell).and_then(Option::as_ref) {
            Some(img) => {
                let x = x0 + (column_w - img.width()) / 2;
                let y = y0 + (row_h - img.height()) / 2;
                image::imageops::overlay(&mut canvas, img, x.into(), y.into());
            }
            None => {
                let x = x0 + (column_w - cell_w) / 2;
                let y = y0 + (row_h - cell_h) / 2;
                for py in y..y + cell_h {
                    for px in x..x + cell_w {
                        canvas.put_pixel(px, py, NO_IMAGE);
                    }
                }
            }
        }
    }
    Ok(canvas)
}

/// The composed sheet as PNG bytes.
pub fn png(layout: &GridLayout, loaded: &[Option<RgbImage>]) -> Result<Vec<u8>> {
    let canvas = compose_images(layout, loaded)?;
    let mut bytes = Vec::new();
    canvas
        .write_to(
            &mut std::io::Cursor::new(&mut bytes),
            image::ImageFormat::Png,
        )
        .context("encoding the grid as PNG")?;
    Ok(bytes)
}

/// Composes the sheet and writes it as a PNG at `path` (its folder made if needed).
pub fn write(layout: &GridLayout, images: &[Option<PathBuf>], path: &Path) -> Result<()> {
    let canvas = compose(layout, images)?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    canvas
        .save(path)
        .with_context(|| format!("writing the grid {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(doc: &str) -> SweepPlan {
        let wf = weft_engine::Workflow::parse_str(doc).unwrap();
        weft_engine::sweep::plan(&wf, &weft_nodes::registry(), 100)
            .unwrap()
            .unwrap()
    }

    const DOC: &str = "weft: 1
nodes:
  sample:
    type: EmptyLatent
sweep:
  axes:
    sample.width: [64, 128]
    sample.height: 64..192 step 64
";

    #[test]
    fn headers_give_each_row_and_column_its_values() {
        let l = layout(&plan(DOC));
        assert_eq!(l.row_labels, [vec!["width=64"], vec!["width=128"]]);
        assert_eq!(
            l.column_labels,
            [vec!["height=64"], vec!["height=128"], vec!["height=192"]]
        );
        assert_eq!(l.positions[4], (1, 1));
    }

    #[test]
    fn the_sheet_is_sized_by_its_cells_and_headers_and_draws_labels() {
        let dir = tempfile::tempdir().unwrap();
        let cell = dir.path().join("cell.png");
        RgbImage::from_pixel(64, 48, Rgb([0, 0, 255]))
            .save(&cell)
            .unwrap();
        let l = layout(&plan(DOC));
        let images: Vec<Option<PathBuf>> = (0..6).map(|i| (i != 5).then(|| cell.clone())).collect();
        let sheet = compose(&l, &images).unwrap();
        let row_header = font::text_width("width=128") * TEXT_SCALE + 2 * PAD;
        let column_w = (font::text_width("height=128") * TEXT_SCALE + 2 * PAD).max(64);
        assert_eq!(sheet.width(), row_header + 3 * column_w + 4 * GAP);
        assert_eq!(sheet.height(), line_height() + 2 * PAD + 2 * 48 + 3 * GAP);
        let ink = sheet.pixels().filter(|p| **p == INK).count();
        assert!(ink > 100, "the headers are drawn ({ink} ink pixels)");
        assert!(
            sheet.pixels().any(|p| *p == NO_IMAGE),
            "a failed cell is a grey box"
        );
    }
}
