//! Inpainting and outpainting end to end on the embedded model: the example workflows repaint
//! only under their masks (pixels outside are exactly the input's after ImageCompositeMasked,
//! and close to it before), and a 9-channel inpainting UNet (tiny-shapes with conv_in widened
//! to take the mask and masked-image latent, as sd-v1-5-inpainting's) is fed those channels
//! after the latent's.
use std::path::{Path, PathBuf};
use std::process::Command;

use weft_test_support::{converted_asset, luma, repo_root, ssim, weft_run_ok};

/// RGB rows of a PNG as 0..1 floats, with its size.
fn pixels(png: &Path) -> (u32, u32, Vec<[f64; 3]>) {
    let img = image::open(png)
        .unwrap_or_else(|e| panic!("{}: {e}", png.display()))
        .to_rgb8();
    let (w, h) = img.dimensions();
    let px = img
        .pixels()
        .map(|p| p.0.map(|v| f64::from(v) / 255.0))
        .collect();
    (w, h, px)
}

/// Mean absolute difference (0..1, over RGB) of the pixels of `a` and `b` where `inside(x, y)`.
fn mean_difference(a: &Path, b: &Path, inside: impl Fn(u32, u32) -> bool) -> f64 {
    let (w, h, pa) = pixels(a);
    let (w2, h2, pb) = pixels(b);
    assert_eq!((w, h), (w2, h2), "{} and {}", a.display(), b.display());
    let (mut sum, mut n) = (0.0, 0.0);
    for y in 0..h {
        for x in 0..w {
            if inside(x, y) {
                let i = (y * w + x) as usize;
                sum += (0..3).map(|c| (pa[i][c] - pb[i][c]).abs()).sum::<f64>() / 3.0;
                n += 1.0;
            }
        }
    }
    sum / n
}

/// A copy of the repository's example workflow `name` and its input pictures in a fresh folder.
fn example_project(name: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let inputs = dir.path().join("workflows/inputs");
    std::fs::create_dir_all(&inputs).unwrap();
    std::fs::copy(
        repo_root().join("workflows").join(name),
        dir.path().join("workflows").join(name),
    )
    .unwrap();
    for picture in ["yellow-star.png", "yellow-star-masked.png"] {
        std::fs::copy(
            repo_root().join("workflows/inputs").join(picture),
            inputs.join(picture),
        )
        .unwrap_or_else(|e| panic!("workflows/inputs/{picture}: {e}"));
    }
    dir
}

/// Adds a SaveImage of the raw decode (before compositing) to a workflow's text.
fn with_raw_save(workflow: &str) -> String {
    let (nodes, layout) = workflow.split_once("layout:").expect("a layout section");
    format!("{nodes}  save_raw:\n    type: SaveImage\n    image: $decode.image\n    prefix: raw\nlayout:{layout}")
}

#[test]
#[ignore = "needs models/converted from set-up; `make test` runs it"]
fn inpaint_example_repaints_the_masked_square_and_keeps_the_rest() {
    converted_asset("minilm/model.safetensors");
    let dir = example_project("inpaint.yaml");
    let file = dir.path().join("workflows/inpaint.yaml");
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, with_raw_save(&text)).unwrap();
    weft_run_ok(
        Path::new(env!("CARGO_BIN_EXE_weft")),
        dir.path(),
        "workflows/inpaint.yaml",
        "out",
    );
    let source = dir.path().join("workflows/inputs/yellow-star.png");
    let composite = dir.path().join("out/inpaint_00001.png");
    let raw = dir.path().join("out/raw_00001.png");
    let outside = mean_difference(&source, &composite, |x, y| !in_centre(x, y));
    assert_eq!(
        outside, 0.0,
        "the composite keeps every pixel outside the mask"
    );
    let inside = mean_difference(&source, &composite, in_centre);
    // Away from the mask's edge (the VAE's receptive field reaches a few latent pixels), the
    // raw decode is the VAE round trip of the kept latent.
    let far = |x: u32, y: u32| !(8..56).contains(&x) || !(8..56).contains(&y);
    let kept = mean_difference(&source, &raw, far);
    // SSIM outside the mask: the raw decode with the source's pixels put back under the mask.
    let (w, h, raw_px) = pixels(&raw);
    let (_, _, source_px) = pixels(&source);
    let luma_of = |px: &[[f64; 3]], masked_from: Option<&[[f64; 3]]>| -> Vec<f64> {
        (0..px.len())
            .map(|i| {
                let (x, y) = (i as u32 % w, i as u32 / w);
                let p = match masked_from {
                    Some(other) if in_centre(x, y) => other[i],
                    _ => px[i],
                };
                0.299 * p[0] + 0.587 * p[1] + 0.114 * p[2]
            })
            .collect()
    };
    let similarity = ssim(
        &luma_of(&source_px, None),
        &luma_of(&raw_px, Some(&source_px)),
        w as usize,
        h as usize,
    );
    // The prompt asks for a red circle: the centre turns red (the star's yellow had as much
    // green as red).
    let (_, _, px) = pixels(&composite);
    let centre: Vec<[f64; 3]> = (16..48u32)
        .flat_map(|y| (16..48u32).map(move |x| (x, y)))
        .map(|(x, y)| px[(y * w + x) as usize])
        .collect();
    let mean = |c: usize| centre.iter().map(|p| p[c]).sum::<f64>() / centre.len() as f64;
    let (r, g, b) = (mean(0), mean(1), mean(2));
    eprintln!(
        "mean |difference| to the source: inside the mask {inside:.3}, raw decode outside the \
         mask's 8-pixel surround {kept:.3}; SSIM of the raw decode outside the mask \
         {similarity:.3}; centre mean \
         RGB {r:.2} {g:.2} {b:.2}"
    );
    assert!(inside > 0.1, "the masked square is repainted: {inside:.3}");
    assert!(
        kept < 0.06,
        "the raw decode keeps the unmasked part: {kept:.3}"
    );
    assert!(similarity > 0.8, "SSIM outside the mask {similarity:.3}");
    assert!(
        r > g + 0.3 && r > b + 0.3,
        "the centre follows 'red circle': {r:.2} {g:.2} {b:.2}"
    );
}

/// The mask of workflows/inputs/yellow-star-masked.png: the centre 32x32 (alpha 0 there).
fn in_centre(x: u32, y: u32) -> bool {
    (16..48).contains(&x) && (16..48).contains(&y)
}

#[test]
#[ignore = "needs models/converted from set-up; `make test` runs it"]
fn outpaint_example_widens_the_picture_and_keeps_the_original() {
    converted_asset("minilm/model.safetensors");
    let dir = example_project("outpaint.yaml");
    weft_run_ok(
        Path::new(env!("CARGO_BIN_EXE_weft")),
        dir.path(),
        "workflows/outpaint.yaml",
        "out",
    );
    let out = dir.path().join("out/outpaint_00001.png");
    let (w, h, px) = pixels(&out);
    assert_eq!((w, h), (96, 64), "64 + 32 pixels wide");
    // The original 64 columns outside the 8-pixel feathered band are exactly the input's.
    let (_, _, source) = pixels(&dir.path().join("workflows/inputs/yellow-star.png"));
    for y in 0..64u32 {
        for x in 0..56u32 {
            assert_eq!(
                px[(y * 96 + x) as usize],
                source[(y * 64 + x) as usize],
                "pixel ({x}, {y}) is the input's"
            );
        }
    }
    // The new strip is painted, not left grey (the pad's 0.5).
    let grey = (64..96u32)
        .flat_map(|x| (0..64u32).map(move |y| (x, y)))
        .filter(|&(x, y)| {
            let p = px[(y * 96 + x) as usize];
            p.iter().all(|v| (v - 0.5).abs() < 0.02)
        })
        .count();
    assert!(
        grey < 32 * 64 / 4,
        "{grey} of the new pixels are still the pad's grey"
    );
    // It continues the purple background the prompt names: purple's red and blue beat green.
    let strip: Vec<[f64; 3]> = (88..96u32)
        .flat_map(|x| (0..64u32).map(move |y| (x, y)))
        .map(|(x, y)| px[(y * 96 + x) as usize])
        .collect();
    let mean = |c: usize| strip.iter().map(|p| p[c]).sum::<f64>() / strip.len() as f64;
    eprintln!(
        "right strip mean RGB {:.2} {:.2} {:.2}",
        mean(0),
        mean(1),
        mean(2)
    );
    assert!(mean(2) > mean(1), "the new strip is purple-ish, not green");
}

/// A copy of tiny-shapes in `models/<name>` whose UNet takes 9 channels, sd-v1-5-inpainting's
/// layout: conv_in's weights for the latent's 4 are tiny-shapes', those for the 5 extra
/// (mask, masked-image latent) are `extra` (zeros, or seeded random values).
fn write_inpainting_tiny_shapes(models: &Path, name: &str, extra: Option<i64>) -> PathBuf {
    let source = repo_root().join("models/tiny-shapes");
    let target = models.join(name);
    for part in ["vae", "scheduler", "unet"] {
        std::fs::create_dir_all(target.join(part)).unwrap();
    }
    std::fs::copy(
        source.join("model_index.json"),
        target.join("model_index.json"),
    )
    .unwrap();
    for file in ["vae/config.json", "vae/diffusion_pytorch_model.safetensors"] {
        std::fs::copy(source.join(file), target.join(file)).unwrap();
    }
    for entry in std::fs::read_dir(source.join("scheduler")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(
            entry.path(),
            target.join("scheduler").join(entry.file_name()),
        )
        .unwrap();
    }
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(source.join("unet/config.json")).unwrap())
            .unwrap();
    config["in_channels"] = serde_json::json!(9);
    std::fs::write(
        target.join("unet/config.json"),
        serde_json::to_string_pretty(&config).unwrap(),
    )
    .unwrap();
    let weights =
        tch::Tensor::read_safetensors(source.join("unet/diffusion_pytorch_model.safetensors"))
            .unwrap();
    let widened: Vec<(String, tch::Tensor)> = weights
        .into_iter()
        .map(|(key, t)| {
            if key != "conv_in.weight" {
                return (key, t);
            }
            let size = t.size();
            let shape = [size[0], 5, size[2], size[3]];
            let more = match extra {
                None => tch::Tensor::zeros(shape, (t.kind(), t.device())),
                Some(seed) => {
                    tch::manual_seed(seed);
                    (tch::Tensor::randn(shape, (tch::Kind::Float, t.device())) * 0.2)
                        .to_kind(t.kind())
                }
            };
            (key, tch::Tensor::cat(&[&t, &more], 1))
        })
        .collect();
    tch::Tensor::write_safetensors(
        &widened,
        target.join("unet/diffusion_pytorch_model.safetensors"),
    )
    .unwrap();
    target
}

/// The inpaint example with `checkpoint`, and the mask from `mask_file`.
fn inpaint_with(checkpoint: &str, mask_file: &str) -> String {
    let text = std::fs::read_to_string(repo_root().join("workflows/inpaint.yaml")).unwrap();
    text.replace("name: tiny-shapes", &format!("name: {checkpoint}"))
        .replace(
            "path: workflows/inputs/yellow-star-masked.png",
            &format!("path: workflows/inputs/{mask_file}"),
        )
}

/// Runs `workflow` in `dir` with `models` searched before the repository's models; the saved
/// picture.
fn run_in(dir: &Path, models: &Path, name: &str, workflow: &str) -> PathBuf {
    let file = format!("{name}.yaml");
    let output = format!("out-{name}");
    std::fs::write(dir.join(&file), workflow).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_weft"))
        .current_dir(dir)
        .args(["run", &file, "--device", "cpu", "--output", &output])
        .arg("--models")
        .arg(models)
        .arg("--models")
        .arg(repo_root().join("models"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "weft run {file}:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    dir.join(output).join("inpaint_00001.png")
}

fn ssim_of(a: &Path, b: &Path) -> f64 {
    let a = image::open(a).unwrap().to_rgb8();
    let b = image::open(b).unwrap().to_rgb8();
    let (w, h) = a.dimensions();
    ssim(&luma(a.as_raw()), &luma(b.as_raw()), w as usize, h as usize)
}

#[test]
#[ignore = "needs models/converted from set-up; `make test` runs it"]
fn a_nine_channel_inpainting_unet_gets_the_mask_and_masked_latent_after_the_latent() {
    converted_asset("minilm/model.safetensors");
    let dir = example_project("inpaint.yaml");
    let models = dir.path().join("models");
    write_inpainting_tiny_shapes(&models, "tiny-inpaint-zero", None);
    write_inpainting_tiny_shapes(&models, "tiny-inpaint-random", Some(3));
    // A second mask: the bottom-right quarter instead of the centre.
    let masked = image::open(dir.path().join("workflows/inputs/yellow-star.png"))
        .unwrap()
        .to_rgba8();
    let mut other = masked.clone();
    for (x, y, p) in other.enumerate_pixels_mut() {
        if x >= 32 && y >= 32 {
            p.0[3] = 0;
        }
    }
    other
        .save(dir.path().join("workflows/inputs/other-mask.png"))
        .unwrap();

    let plain = run_in(
        dir.path(),
        &models,
        "plain",
        &inpaint_with("tiny-shapes", "yellow-star-masked.png"),
    );
    let zero = run_in(
        dir.path(),
        &models,
        "zero",
        &inpaint_with("tiny-inpaint-zero", "yellow-star-masked.png"),
    );
    // Zero weights on the 5 extra input channels: the same picture as the 4-channel model,
    // which holds only if the latent comes first and the extra channels after it.
    let same = mean_difference(&plain, &zero, |_, _| true);
    assert!(
        same < 1.0 / 255.0,
        "zero extra weights change the picture by {same:.4}"
    );

    let random = run_in(
        dir.path(),
        &models,
        "random",
        &inpaint_with("tiny-inpaint-random", "yellow-star-masked.png"),
    );
    let other_mask = run_in(
        dir.path(),
        &models,
        "other",
        &inpaint_with("tiny-inpaint-random", "other-mask.png"),
    );
    // With weights on them, the extra channels change what is painted under the mask...
    let fed = mean_difference(&plain, &random, in_centre);
    assert!(
        fed > 0.01,
        "the mask and masked latent reach the UNet: {fed:.4}"
    );
    // ...and outside it the composite still keeps the input exactly.
    let kept = mean_difference(&plain, &random, |x, y| !in_centre(x, y));
    assert_eq!(kept, 0.0);
    // A different mask is a different concat (and repaints elsewhere).
    let moved = ssim_of(&random, &other_mask);
    eprintln!(
        "zero extra weights vs 4 channels: {same:.5}; random extra weights vs 4 channels under \
         the mask: {fed:.3}; SSIM between the two masks' pictures: {moved:.3}"
    );
    assert!(
        moved < 0.99,
        "another mask gives another picture: SSIM {moved:.3}"
    );
}

/// Grey value (0..255) of a PNG's pixel.
fn grey_at(png: &Path, x: u32, y: u32) -> u8 {
    image::open(png).unwrap().to_rgb8().get_pixel(x, y).0[1]
}

#[test]
fn mask_nodes_chain_through_a_workflow() {
    let dir = example_project("inpaint.yaml");
    let workflow = "weft: 1
nodes:
  input:
    type: LoadImage
    path: workflows/inputs/yellow-star-masked.png
  grow:
    type: GrowMask
    mask: $input.mask
    expand: 4
    tapered_corners: false
  feather:
    type: FeatherMask
    mask: $grow.mask
    left: 32
  hard:
    type: ThresholdMask
    mask: $feather.mask
    value: 0.5
  invert:
    type: InvertMask
    mask: $hard.mask
  solid:
    type: SolidMask
    value: 0.25
    width: 64
    height: 64
  invert_image:
    type: MaskToImage
    mask: $invert.mask
  back:
    type: ImageToMask
    image: $invert_image.image
    channel: green
  back_image:
    type: MaskToImage
    mask: $back.mask
  solid_image:
    type: MaskToImage
    mask: $solid.mask
  composite:
    type: ImageCompositeMasked
    destination: $input.image
    source: $solid_image.image
    mask: $hard.mask
  save_invert:
    type: SaveImage
    image: $invert_image.image
    prefix: invert
  save_back:
    type: SaveImage
    image: $back_image.image
    prefix: back
  save_composite:
    type: SaveImage
    image: $composite.image
    prefix: composite
";
    std::fs::write(dir.path().join("masks.yaml"), workflow).unwrap();
    weft_run_ok(
        Path::new(env!("CARGO_BIN_EXE_weft")),
        dir.path(),
        "masks.yaml",
        "out",
    );
    let invert = dir.path().join("out/invert_00001.png");
    // The centre 16..48 grown by 4 is 12..52; the left 32 columns are scaled by (x + 1) / 32,
    // so the threshold at 0.5 cuts columns 12..=15 (13/32 .. 16/32) again.
    assert_eq!(grey_at(&invert, 30, 30), 0, "inside the mask");
    assert_eq!(grey_at(&invert, 30, 12), 0, "grown upward by 4");
    assert_eq!(grey_at(&invert, 30, 52), 255, "below the grown square");
    assert_eq!(grey_at(&invert, 51, 51), 0, "square corners: not tapered");
    assert_eq!(
        grey_at(&invert, 12, 30),
        255,
        "feathered below the threshold (13/32)"
    );
    assert_eq!(
        grey_at(&invert, 15, 30),
        255,
        "feathered to exactly 0.5: not above it"
    );
    assert_eq!(
        grey_at(&invert, 16, 30),
        0,
        "17/32 stays above the threshold"
    );
    let back = dir.path().join("out/back_00001.png");
    assert_eq!(
        image::open(&back).unwrap().to_rgb8(),
        image::open(&invert).unwrap().to_rgb8(),
        "ImageToMask gives back what MaskToImage drew"
    );
    let composite = dir.path().join("out/composite_00001.png");
    let source = dir.path().join("workflows/inputs/yellow-star.png");
    assert_eq!(
        grey_at(&composite, 30, 30),
        64,
        "the solid 0.25 pasted under the mask"
    );
    let outside = mean_difference(&source, &composite, |x, y| {
        !((16..52).contains(&x) && (12..52).contains(&y))
    });
    assert_eq!(outside, 0.0, "the destination is kept outside the mask");

    // A bad size is refused before anything runs, naming the node and the input.
    let bad = workflow.replace("    width: 64\n", "    width: 0\n");
    std::fs::write(dir.path().join("bad.yaml"), bad).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_weft"))
        .current_dir(dir.path())
        .args(["validate", "bad.yaml"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("node 'solid', input 'width'"), "{stderr}");
}
