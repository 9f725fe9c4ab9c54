//! Img2Img keeps the layout: through the `Img2Img` library subgraph, a low denoise changes a
//! picture a little (SSIM on luma against the source stays high, the shape stays where it
//! was) and a full denoise follows the new prompt instead (the background and the shape take
//! the colours it names, and the picture is further from the source). The source picture is drawn by the `Txt2Img`
//! subgraph in the same run. The images are judged, not compared with stored pixels, so the
//! test holds for any tiny-shapes weights that follow prompts.
use std::path::Path;

use weft_test_support::{converted_asset, copy_library, luma, ssim, weft_run_ok};

/// The colours tiny-shapes is trained on, as `scripts/train_tiny_shapes.py` draws them (RGB in 0..1).
const PALETTE: [(&str, [f64; 3]); 8] = [
    ("red", [0.86, 0.10, 0.10]),
    ("green", [0.10, 0.70, 0.20]),
    ("blue", [0.12, 0.25, 0.90]),
    ("yellow", [0.98, 0.88, 0.12]),
    ("white", [0.97, 0.97, 0.97]),
    ("black", [0.05, 0.05, 0.05]),
    ("orange", [0.98, 0.55, 0.08]),
    ("purple", [0.55, 0.15, 0.70]),
];

/// Mean RGB (0..1) of the border ring (the outer eighth on each side) of a PNG.
fn border_colour(png: &Path) -> [f64; 3] {
    let img = image::open(png).expect("a PNG").to_rgb8();
    let (w, h) = img.dimensions();
    let mut sum = [0.0; 3];
    let mut n = 0.0;
    for (x, y, p) in img.enumerate_pixels() {
        if x < w / 8 || x >= w * 7 / 8 || y < h / 8 || y >= h * 7 / 8 {
            for c in 0..3 {
                sum[c] += f64::from(p[c]) / 255.0;
            }
            n += 1.0;
        }
    }
    sum.map(|v| v / n)
}

/// The palette colour nearest (Euclidean, RGB) to `rgb`.
fn nearest_colour(rgb: [f64; 3]) -> &'static str {
    PALETTE
        .iter()
        .min_by(|a, b| {
            let d = |c: &[f64; 3]| (0..3).map(|i| (c[i] - rgb[i]).powi(2)).sum::<f64>();
            d(&a.1).total_cmp(&d(&b.1))
        })
        .unwrap()
        .0
}

/// The object of a PNG: the centre (x, y as fractions of the size) of the pixels whose nearest
/// palette colour is not the border's, and the palette colour most of them are nearest to.
fn object(png: &Path) -> ([f64; 2], &'static str) {
    let background = nearest_colour(border_colour(png));
    let img = image::open(png).expect("a PNG").to_rgb8();
    let (w, h) = img.dimensions();
    let (mut sum, mut n) = ([0.0; 2], 0.0);
    let mut votes: Vec<(&str, usize)> = PALETTE.iter().map(|(name, _)| (*name, 0)).collect();
    for (x, y, p) in img.enumerate_pixels() {
        let colour = nearest_colour(p.0.map(|v| f64::from(v) / 255.0));
        if colour != background {
            sum[0] += f64::from(x) + 0.5;
            sum[1] += f64::from(y) + 0.5;
            n += 1.0;
            votes
                .iter_mut()
                .find(|(name, _)| *name == colour)
                .unwrap()
                .1 += 1;
        }
    }
    assert!(n > 0.0, "{}: nothing but background", png.display());
    let colour = votes.iter().max_by_key(|(_, count)| *count).unwrap().0;
    (
        [sum[0] / n / f64::from(w), sum[1] / n / f64::from(h)],
        colour,
    )
}

/// SSIM on luma of two PNGs of the same size.
fn ssim_of(a: &Path, b: &Path) -> f64 {
    let a = image::open(a).unwrap().to_rgb8();
    let b = image::open(b).unwrap().to_rgb8();
    assert_eq!(a.dimensions(), b.dimensions());
    let (w, h) = a.dimensions();
    ssim(&luma(a.as_raw()), &luma(b.as_raw()), w as usize, h as usize)
}

const SOURCE: &str = "a large red circle on a blue background";
/// The repaint at denoise 0.3 changes the shape only. With a prompt that also changes colours
/// the current weights repaint the colours even at 0.3, with dark blotches (SSIM 0.29 to 0.59
/// against the source; models/tiny-shapes/README.md), so this test would not show the layout.
const LIGHT_TARGET: &str = "a large red square on a blue background";
const TARGET: &str = "a large yellow square on a green background";

/// Txt2Img draws `SOURCE`; two Img2Img nodes repaint it, toward `LIGHT_TARGET` at denoise 0.3
/// and toward `TARGET` at 1.0.
fn workflow() -> String {
    let repaint = |id: &str, prompt: &str, denoise: &str| {
        format!(
            "  {id}:
    type: Img2Img
    image: $draw.image
    unet: $model.unet
    vae: $model.vae
    text_encoder: $model.text_encoder
    prompt: {prompt}
    denoise: {denoise}
    seed: 11
    steps: 12
  save_{id}:
    type: SaveImage
    image: ${id}.image
    prefix: {id}
"
        )
    };
    format!(
        "weft: 1
nodes:
  model:
    type: LoadCheckpoint
    name: tiny-shapes
  draw:
    type: Txt2Img
    unet: $model.unet
    vae: $model.vae
    text_encoder: $model.text_encoder
    prompt: {SOURCE}
    seed: 7
    steps: 12
  save_draw:
    type: SaveImage
    image: $draw.image
    prefix: source
{}{}",
        repaint("light", LIGHT_TARGET, "0.3"),
        repaint("full", TARGET, "1.0")
    )
}

#[test]
#[ignore = "needs models/converted from set-up; `make test` runs it"]
fn img2img_at_low_denoise_keeps_the_layout_and_at_full_denoise_follows_the_prompt() {
    converted_asset("minilm/model.safetensors");
    let dir = tempfile::tempdir().unwrap();
    copy_library(dir.path());
    let file = dir.path().join("repaint.yaml");
    std::fs::write(&file, workflow()).unwrap();
    weft_run_ok(
        Path::new(env!("CARGO_BIN_EXE_weft")),
        dir.path(),
        "repaint.yaml",
        "out",
    );
    let png = |prefix: &str| dir.path().join(format!("out/{prefix}_00001.png"));
    let (source, light, full) = (png("source"), png("light"), png("full"));

    let source_border = border_colour(&source);
    let (source_at, source_colour) = object(&source);
    assert_eq!(
        (nearest_colour(source_border), source_colour),
        ("blue", "red"),
        "the source follows its own prompt first: border {source_border:?}"
    );

    let kept = ssim_of(&source, &light);
    let replaced = ssim_of(&source, &full);
    let (light_at, _) = object(&light);
    let (_, full_colour) = object(&full);
    let full_border = border_colour(&full);
    eprintln!(
        "SSIM against the source: denoise 0.3 {kept:.3}, denoise 1.0 {replaced:.3}; object at \
         source {source_at:.2?}, 0.3 {light_at:.2?}; at 1.0 border {full_border:.2?} (nearest \
         {}), object {full_colour}",
        nearest_colour(full_border)
    );
    // Denoise 0.3: the layout stays.
    assert!(kept >= 0.6, "denoise 0.3 keeps the layout: SSIM {kept:.3}");
    let moved = (light_at[0] - source_at[0]).hypot(light_at[1] - source_at[1]);
    assert!(
        moved < 0.125,
        "denoise 0.3 leaves the shape where it was: {light_at:.2?} vs {source_at:.2?}"
    );
    // Denoise 1.0: the new prompt wins.
    assert_eq!(
        (nearest_colour(full_border), full_colour),
        ("green", "yellow"),
        "denoise 1.0 follows the new prompt: border {full_border:?}"
    );
    assert!(
        replaced < kept,
        "denoise 1.0 is further from the source than 0.3: SSIM {replaced:.3} vs {kept:.3}"
    );
}
