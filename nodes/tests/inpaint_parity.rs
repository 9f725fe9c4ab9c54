//! Parity of weft's mask and inpainting work with ComfyUI's own code, on fixtures written by
//! scripts/parity/inpaint.py from a ComfyUI checkout: ImageCompositeMasked's `composite`,
//! ImagePadForOutpaint, FeatherMask, VAEEncodeForInpaint's and InpaintModelConditioning's pixel
//! and mask work (around a stand-in VAE), one KSamplerX0Inpaint call with its mask prepared
//! as ComfyUI's sampler does, GrowMask (scipy's grey dilation and erosion) and ImageColorToMask.
use std::collections::HashMap;
use std::path::PathBuf;

use tch::{Device, Kind, Tensor};
use weft_nodes::inpaint::{
    composite_masked, inpaint_model_pixels, inpaint_pixels, pad_for_outpaint,
};
use weft_nodes::mask::{color_mask, feather_mask, grow_mask};
use weft_nodes::samplers::inpaint::MaskedDenoiser;
use weft_nodes::samplers::Denoiser;
use weft_nodes::weights::read_safetensors;

/// float32 work on both sides; bilinear resizes are the same ATen kernels.
const TOLERANCE: f64 = 1e-6;

fn fixture() -> HashMap<String, Tensor> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/inpaint/inpaint.safetensors");
    read_safetensors(&path, Device::Cpu, None)
        .expect("run scripts/parity/inpaint.py to write the fixtures")
}

fn get<'a>(f: &'a HashMap<String, Tensor>, name: &str) -> &'a Tensor {
    f.get(name)
        .unwrap_or_else(|| panic!("fixture has no tensor {name}"))
}

fn assert_close(what: &str, ours: &Tensor, theirs: &Tensor) {
    assert_eq!(ours.size(), theirs.size(), "{what}: shapes");
    let diff = (ours.to_kind(Kind::Double) - theirs.to_kind(Kind::Double))
        .abs()
        .max()
        .double_value(&[]);
    assert!(diff <= TOLERANCE, "{what}: max |difference| {diff:e}");
}

#[test]
fn grow_mask_matches_comfyuis_scipy_dilation_and_erosion() {
    let f = fixture();
    let mask = get(&f, "grow.mask");
    for expand in [3, -2, 0] {
        for (tapered, name) in [(true, "tapered"), (false, "square")] {
            let ours = grow_mask(mask, expand, tapered).unwrap();
            let what = format!("grow.{expand}.{name}");
            assert_close(&what, &ours, get(&f, &what));
        }
    }
}

#[test]
fn colour_mask_matches_comfyui() {
    let f = fixture();
    let color = get(&f, "color.color").double_value(&[0]) as i64;
    let ours = color_mask(get(&f, "color.image"), color).unwrap();
    let theirs = get(&f, "color.mask");
    assert!(
        theirs.sum(Kind::Double).double_value(&[]) > 1.0,
        "several pixels match"
    );
    assert_close("colour mask", &ours, theirs);
}

#[test]
fn composite_matches_comfyui() {
    let f = fixture();
    let destination = get(&f, "composite.destination");
    let source = get(&f, "composite.source");
    let mask = get(&f, "composite.mask");
    let offset = composite_masked(destination, source, 17, 11, false, Some(mask)).unwrap();
    assert_close("offset, masked", &offset, get(&f, "composite.offset"));
    let resized = composite_masked(destination, source, 0, 0, true, None).unwrap();
    assert_close("resized, no mask", &resized, get(&f, "composite.resized"));
}

#[test]
fn outpaint_padding_and_feathering_match_comfyui() {
    let f = fixture();
    let (padded, mask) = pad_for_outpaint(get(&f, "pad.image"), 8, 0, 16, 8, 5).unwrap();
    assert_close("padded image", &padded, get(&f, "pad.padded"));
    assert_close("outpaint mask", &mask, get(&f, "pad.mask"));
    let feathered = feather_mask(get(&f, "feather.mask"), 3, 2, 4, 5).unwrap();
    assert_close("feathered mask", &feathered, get(&f, "feather.out"));
}

#[test]
fn encode_for_inpaint_pixels_and_masks_match_comfyui() {
    let f = fixture();
    let image = get(&f, "encode.image");
    let mask = get(&f, "encode.mask");
    for grow in [0, 5, 6] {
        let (pixels, noise_mask) = inpaint_pixels(image, mask, grow, 8).unwrap();
        assert_close(
            &format!("grow {grow}: pixels"),
            &pixels,
            get(&f, &format!("encode.grow{grow}.pixels")),
        );
        assert_close(
            &format!("grow {grow}: noise mask"),
            &noise_mask,
            get(&f, &format!("encode.grow{grow}.noise_mask")),
        );
    }
    let (cropped, greyed, mask_at_image) = inpaint_model_pixels(
        get(&f, "conditioning.image"),
        get(&f, "conditioning.mask"),
        8,
    )
    .unwrap();
    assert_close(
        "model conditioning: samples",
        &cropped,
        get(&f, "conditioning.samples"),
    );
    assert_close(
        "model conditioning: concat latent",
        &greyed,
        get(&f, "conditioning.concat_latent"),
    );
    assert_close(
        "model conditioning: concat mask",
        &mask_at_image,
        get(&f, "conditioning.concat_mask"),
    );
    assert_close(
        "model conditioning: noise mask",
        &mask_at_image,
        get(&f, "conditioning.noise_mask"),
    );
}

#[test]
fn masked_denoiser_matches_ksampler_x0_inpaint() {
    let f = fixture();
    let stand_in = |x: &Tensor, sigma: f64| -> weft_nodes::Result<Tensor> {
        Ok(x * 0.5 + (x * 3.0).sin() * 0.1 - 0.05 * sigma)
    };
    let masked = MaskedDenoiser::new(
        &stand_in,
        get(&f, "x0inpaint.latent"),
        get(&f, "x0inpaint.noise"),
        get(&f, "x0inpaint.mask"),
    )
    .unwrap();
    let denoised = masked.denoise(get(&f, "x0inpaint.x"), 2.5).unwrap();
    assert_close(
        "KSamplerX0Inpaint",
        &denoised,
        get(&f, "x0inpaint.denoised"),
    );
}
