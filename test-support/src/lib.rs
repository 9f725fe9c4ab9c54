//! Helpers shared by weft's tests: the repository's paths, parity fixtures, assets made by
//! set-up (missing ones fail the test with what to run), and tensor comparison.
use std::path::{Path, PathBuf};

use tch::{Kind, Tensor};

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("test-support lives in the repository")
        .to_path_buf()
}

/// A data file of the test-support crate (test-support/data/NAME).
pub fn test_support_data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("data")
        .join(name)
}

/// Workflow text of a chain of trivial nodes: `a` (Int, value 1), then an AddInt for each of
/// `adds` (named `b`, `c`, ...; each adds its number to the sum before) and `show` (ShowInt)
/// of the last.
pub fn add_int_chain(adds: &[i64]) -> String {
    let mut text = String::from("weft: 1\nnodes:\n  a:\n    type: Int\n    value: 1\n");
    let mut from = "$a.value".to_string();
    for (i, add) in adds.iter().enumerate() {
        let name = char::from(b'b' + i as u8);
        text.push_str(&format!(
            "  {name}:\n    type: AddInt\n    a: {from}\n    b: {add}\n"
        ));
        from = format!("${name}.sum");
    }
    text.push_str(&format!("  show:\n    type: ShowInt\n    value: {from}\n"));
    text
}

/// A folder of committed parity fixtures: `nodes/tests/fixtures/<name>`.
pub fn fixtures(name: &str) -> PathBuf {
    repo_root().join("nodes/tests/fixtures").join(name)
}

/// A file or folder set-up converts into `models/converted/`; panics, saying what to run,
/// when it is missing (a test must not pass because what it tests is absent).
pub fn converted_asset(relative: &str) -> PathBuf {
    let path = repo_root().join("models/converted").join(relative);
    assert!(
        path.exists(),
        "{} is missing: it is made by set-up; run `make setup` (or scripts/setup.sh) first",
        path.display()
    );
    path
}

/// Copies the project's library subgraphs (`workflows/lib/*.yaml`) into `project/lib`, as a
/// workflow folder beside its library holds them.
pub fn copy_library(project: &Path) {
    let lib = project.join("lib");
    std::fs::create_dir_all(&lib).expect("create lib/");
    let library = repo_root().join("workflows/lib");
    let entries =
        std::fs::read_dir(&library).unwrap_or_else(|e| panic!("read {}: {e}", library.display()));
    for entry in entries {
        let file = entry.expect("a lib/ entry").file_name();
        std::fs::copy(library.join(&file), lib.join(&file))
            .unwrap_or_else(|e| panic!("copy workflows/lib/{}: {e}", file.to_string_lossy()));
    }
}

/// `bin run FILE --device cpu --output OUTPUT --models <repo>/models` in `dir`; panics with
/// weft's output unless it succeeds.
pub fn weft_run_ok(bin: &Path, dir: &Path, file: &str, output: &str) -> std::process::Output {
    let out = std::process::Command::new(bin)
        .current_dir(dir)
        .args(["run", file, "--device", "cpu", "--output", output])
        .arg("--models")
        .arg(repo_root().join("models"))
        .output()
        .expect("weft runs");
    assert!(
        out.status.success(),
        "weft run {file}:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The Python of set-up's virtual environment (`.venv/bin/python`); panics, saying what to
/// run, when set-up has not made it.
pub fn setup_python() -> PathBuf {
    let path = repo_root().join(".venv/bin/python");
    assert!(
        path.exists(),
        "{} is missing: it is made by set-up; run `make setup` (or scripts/setup.sh) first",
        path.display()
    );
    path
}

/// The largest absolute difference between two tensors of the same shape, in f64.
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.size(), b.size(), "shapes differ");
    (a.to_kind(Kind::Double) - b.to_kind(Kind::Double))
        .abs()
        .max()
        .double_value(&[])
}

/// The SD1.5 single-file layout: every LDM tensor name with its shape (1,130 tensors), a
/// file of the repository (test-support/data/sd15_ldm_shapes.json) so a clone needs nothing
/// beside it.
pub fn sd15_ldm_shapes() -> std::collections::BTreeMap<String, Vec<u64>> {
    ldm_shapes("sd15_ldm_shapes.json")
}

/// The SDXL base single-file layout: every tensor name with its shape (2,514 tensors: UNet,
/// VAE, CLIP-L and OpenCLIP-bigG), written by scripts/parity/sdxl.py from diffusers' and
/// transformers' full-size models (test-support/data/sdxl_ldm_shapes.json).
pub fn sdxl_ldm_shapes() -> std::collections::BTreeMap<String, Vec<u64>> {
    ldm_shapes("sdxl_ldm_shapes.json")
}

/// The SDXL refiner single-file layout (1,858 tensors: UNet, VAE and OpenCLIP-bigG at
/// `conditioner.embedders.0.model.*`), written by scripts/parity/sdxl_refiner.py
/// (test-support/data/sdxl_refiner_ldm_shapes.json).
pub fn sdxl_refiner_ldm_shapes() -> std::collections::BTreeMap<String, Vec<u64>> {
    ldm_shapes("sdxl_refiner_ldm_shapes.json")
}

fn ldm_shapes(name: &str) -> std::collections::BTreeMap<String, Vec<u64>> {
    let path = test_support_data(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (a tracked file of the repository: restore it with git checkout)",
            path.display()
        )
    });
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Writes an SD1.5-sized fp16 single-file checkpoint (2.1 GB) of small pseudo-random values,
/// in a few seconds and without Python: enough to measure loading time and memory, not to draw pictures.
pub fn write_sd15_shaped_checkpoint(path: &Path) -> std::io::Result<()> {
    write_shaped_checkpoint(path, &sd15_ldm_shapes())
}

/// Writes an SDXL-base-sized fp16 single-file checkpoint (6.9 GB) the same way.
pub fn write_sdxl_shaped_checkpoint(path: &Path) -> std::io::Result<()> {
    write_shaped_checkpoint(path, &sdxl_ldm_shapes())
}

/// Writes an SDXL-base-sized fp16 single-file checkpoint (6.9 GB) whose values are scaled as a
/// default initialisation scales them ([`ShapedValues::FanInScaled`]), so that activations keep
/// their size through the 70 UNet blocks and a full-size image has structure (the small values
/// of [`write_sdxl_shaped_checkpoint`] give a flat grey image).
pub fn write_sdxl_shaped_checkpoint_fan_in_scaled(path: &Path) -> std::io::Result<()> {
    write_shaped_checkpoint_with(path, &sdxl_ldm_shapes(), ShapedValues::FanInScaled)
}

/// Writes an SDXL-refiner-sized fp16 single-file checkpoint (6.1 GB) the same way.
pub fn write_sdxl_refiner_shaped_checkpoint(path: &Path) -> std::io::Result<()> {
    write_shaped_checkpoint(path, &sdxl_refiner_ldm_shapes())
}

/// Writes the two reduced-width SDXL-architecture files of the ComfyUI comparison
/// (scripts/parity/sdxl_comfyui.py wrote their names and shapes into
/// test-support/data/tiny_sdxl_ldm_shapes.json and tiny_sdxl_refiner_ldm_shapes.json): a base
/// (UNet 64/128/256 channels, CLIP-L 64 wide and bigG 128 wide with the full 49408-token
/// vocabulary, a full-size SDXL VAE; 190 MB) and a refiner (bigG only; 180 MB), filled with
/// the same small pseudo-random values. Returns (base, refiner).
pub fn write_tiny_sdxl_checkpoints(dir: &Path) -> std::io::Result<(PathBuf, PathBuf)> {
    let base = dir.join("tiny_sdxl.safetensors");
    let refiner = dir.join("tiny_sdxl_refiner.safetensors");
    write_shaped_checkpoint(&base, &ldm_shapes("tiny_sdxl_ldm_shapes.json"))?;
    write_shaped_checkpoint(&refiner, &ldm_shapes("tiny_sdxl_refiner_ldm_shapes.json"))?;
    Ok((base, refiner))
}

/// The values a shaped checkpoint is filled with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShapedValues {
    /// fp16 values of magnitude 2^-7 .. 2^-6 with random sign and mantissa: finite everywhere,
    /// enough to measure loading time and memory (the values the reduced-width tests expect).
    Small,
    /// Per tensor, as a default initialisation: a matrix or convolution kernel uniform with
    /// standard deviation 1/sqrt(fan-in) (fan-in = the product of every dimension after the
    /// first), a 1-D or scalar `*weight` (every one is a norm's scale in these layouts) 1, a
    /// 1-D bias 0.
    FanInScaled,
}

fn write_shaped_checkpoint(
    path: &Path,
    shapes: &std::collections::BTreeMap<String, Vec<u64>>,
) -> std::io::Result<()> {
    write_shaped_checkpoint_with(path, shapes, ShapedValues::Small)
}

/// Writes `shapes` as an fp16 safetensors file of pseudo-random values of the kind `values`
/// says (the same bytes on every run: a fixed xorshift seed).
pub fn write_shaped_checkpoint_with(
    path: &Path,
    shapes: &std::collections::BTreeMap<String, Vec<u64>>,
    values: ShapedValues,
) -> std::io::Result<()> {
    use std::io::Write;
    let mut header = String::from("{\"__metadata__\":{\"format\":\"pt\"}");
    let mut offset = 0u64;
    for (name, shape) in shapes {
        let bytes = shape.iter().product::<u64>() * 2;
        let dims: Vec<String> = shape.iter().map(u64::to_string).collect();
        header.push_str(&format!(
            ",\"{name}\":{{\"dtype\":\"F16\",\"shape\":[{}],\"data_offsets\":[{offset},{}]}}",
            dims.join(","),
            offset + bytes
        ));
        offset += bytes;
    }
    header.push('}');
    while header.len() % 8 != 0 {
        header.push(' ');
    }
    let mut out = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    out.write_all(&(header.len() as u64).to_le_bytes())?;
    out.write_all(header.as_bytes())?;
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut chunk = vec![0u8; 1 << 20];
    if values == ShapedValues::Small {
        // fp16 values of magnitude 2^-7 .. 2^-6 with random sign and mantissa: finite everywhere.
        let mut left = offset;
        while left > 0 {
            let n = left.min(chunk.len() as u64) as usize;
            for pair in chunk[..n].chunks_exact_mut(2) {
                let bits = ((next() as u16) & 0x83FF) | 0x2000;
                pair.copy_from_slice(&bits.to_le_bytes());
            }
            out.write_all(&chunk[..n])?;
            left -= n as u64;
        }
        return out.flush();
    }
    for (name, shape) in shapes {
        let fill = fan_in_scaled_fill(name, shape);
        let mut left = shape.iter().product::<u64>() * 2;
        while left > 0 {
            let n = left.min(chunk.len() as u64) as usize;
            for pair in chunk[..n].chunks_exact_mut(2) {
                let value = match fill {
                    Fill::Constant(c) => c,
                    // 53 random bits to a uniform draw in [-bound, bound).
                    Fill::Uniform(bound) => {
                        let unit = (next() >> 11) as f64 / (1u64 << 53) as f64;
                        ((2.0 * unit - 1.0) * bound) as f32
                    }
                };
                pair.copy_from_slice(&f32_to_f16_bits(value).to_le_bytes());
            }
            out.write_all(&chunk[..n])?;
            left -= n as u64;
        }
    }
    out.flush()
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Fill {
    Constant(f32),
    Uniform(f64),
}

/// What [`ShapedValues::FanInScaled`] writes into one tensor.
fn fan_in_scaled_fill(name: &str, shape: &[u64]) -> Fill {
    if shape.len() <= 1 {
        return if name.ends_with("weight") || shape.is_empty() {
            Fill::Constant(1.0)
        } else {
            Fill::Constant(0.0)
        };
    }
    let fan_in = shape[1..].iter().product::<u64>().max(1) as f64;
    // A uniform draw on [-b, b] has standard deviation b / sqrt(3).
    Fill::Uniform((3.0 / fan_in).sqrt())
}

/// The IEEE half-precision bits nearest `value` (round half to even), for values below
/// 65504 in magnitude; magnitudes under fp16's smallest normal (6.1e-5) become zero, which a
/// uniform draw reaches rarely enough not to change its spread.
fn f32_to_f16_bits(value: f32) -> u16 {
    let bits = value.to_bits();
    let sign = ((bits >> 16) & 0x8000) as u16;
    let exponent = ((bits >> 23) & 0xff) as i32 - 127 + 15;
    if exponent <= 0 {
        return sign;
    }
    assert!(exponent < 31, "{value} is out of fp16's range");
    let mantissa = bits & 0x7f_ffff;
    let mut half = ((exponent as u32) << 10) | (mantissa >> 13);
    let rest = mantissa & 0x1fff;
    if rest > 0x1000 || (rest == 0x1000 && half & 1 == 1) {
        // A carry out of the mantissa steps the exponent, which is the right rounding.
        half += 1;
    }
    sign | half as u16
}

/// Peak resident memory (bytes) of the children this process has waited for, from getrusage.
pub fn children_peak_rss() -> u64 {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes a rusage into the pointer it is given.
    let usage = unsafe {
        libc::getrusage(libc::RUSAGE_CHILDREN, usage.as_mut_ptr());
        usage.assume_init()
    };
    usage.ru_maxrss as u64 * 1024
}

/// Luma (ITU-R BT.601: 0.299 R + 0.587 G + 0.114 B) of packed 8-bit RGB pixels, in 0..=255.
pub fn luma(rgb: &[u8]) -> Vec<f64> {
    rgb.chunks_exact(3)
        .map(|p| 0.299 * f64::from(p[0]) + 0.587 * f64::from(p[1]) + 0.114 * f64::from(p[2]))
        .collect()
}

/// Mean structural similarity (SSIM) of two grey images of `width` x `height` values in
/// 0..=255, as Wang, Bovik, Sheikh & Simoncelli (2004) define it: an 11x11 Gaussian window of
/// sigma 1.5, K1 = 0.01, K2 = 0.03, L = 255, averaged over the window positions that lie wholly
/// inside the image (no padding). 1 for identical images; near 0 for unrelated ones.
pub fn ssim(a: &[f64], b: &[f64], width: usize, height: usize) -> f64 {
    const RADIUS: usize = 5;
    const SIGMA: f64 = 1.5;
    assert_eq!(a.len(), width * height, "image a is not {width}x{height}");
    assert_eq!(b.len(), width * height, "image b is not {width}x{height}");
    let size = 2 * RADIUS + 1;
    assert!(
        width >= size && height >= size,
        "SSIM needs at least {size}x{size}"
    );
    let mut kernel: Vec<f64> = (0..size)
        .map(|i| {
            let d = i as f64 - RADIUS as f64;
            (-d * d / (2.0 * SIGMA * SIGMA)).exp()
        })
        .collect();
    let total: f64 = kernel.iter().sum();
    kernel.iter_mut().for_each(|k| *k /= total);
    // Separable Gaussian filter over the valid region: rows, then columns.
    let filter = |x: &dyn Fn(usize) -> f64| -> Vec<f64> {
        let (ow, oh) = (width - size + 1, height - size + 1);
        let mut rows = vec![0.0; ow * height];
        for y in 0..height {
            for ox in 0..ow {
                rows[y * ow + ox] = (0..size).map(|k| kernel[k] * x(y * width + ox + k)).sum();
            }
        }
        let mut out = vec![0.0; ow * oh];
        for oy in 0..oh {
            for ox in 0..ow {
                out[oy * ow + ox] = (0..size)
                    .map(|k| kernel[k] * rows[(oy + k) * ow + ox])
                    .sum();
            }
        }
        out
    };
    let mu_a = filter(&|i| a[i]);
    let mu_b = filter(&|i| b[i]);
    let aa = filter(&|i| a[i] * a[i]);
    let bb = filter(&|i| b[i] * b[i]);
    let ab = filter(&|i| a[i] * b[i]);
    let (c1, c2) = ((0.01f64 * 255.0).powi(2), (0.03f64 * 255.0).powi(2));
    let n = mu_a.len() as f64;
    (0..mu_a.len())
        .map(|i| {
            let (ma, mb) = (mu_a[i], mu_b[i]);
            let var_a = aa[i] - ma * ma;
            let var_b = bb[i] - mb * mb;
            let cov = ab[i] - ma * mb;
            ((2.0 * ma * mb + c1) * (2.0 * cov + c2))
                / ((ma * ma + mb * mb + c1) * (var_a + var_b + c2))
        })
        .sum::<f64>()
        / n
}

#[cfg(test)]
mod tests {
    use super::{ssim, write_shaped_checkpoint_with, ShapedValues};

    #[test]
    fn fan_in_scaled_values_are_norms_of_one_zero_biases_and_kernels_of_std_one_over_sqrt_fan_in() {
        let shapes: std::collections::BTreeMap<String, Vec<u64>> = [
            ("conv.weight", vec![64, 32, 3, 3]),
            ("conv.bias", vec![64]),
            ("linear.weight", vec![256, 1280]),
            ("attn.in_proj_bias", vec![96]),
            ("norm.weight", vec![64]),
            ("logit_scale", vec![]),
        ]
        .into_iter()
        .map(|(n, s)| (n.to_string(), s))
        .collect();
        let dir = std::env::temp_dir().join(format!("weft-fan-in-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("scaled.safetensors");
        write_shaped_checkpoint_with(&path, &shapes, ShapedValues::FanInScaled).unwrap();
        let tensors: std::collections::HashMap<String, tch::Tensor> =
            tch::Tensor::read_safetensors(&path)
                .unwrap()
                .into_iter()
                .collect();
        std::fs::remove_dir_all(&dir).unwrap();
        let float = |name: &str| tensors[name].to_kind(tch::Kind::Double);
        for (name, fan_in) in [("conv.weight", 32.0 * 9.0), ("linear.weight", 1280.0f64)] {
            let t = float(name);
            let std = t.std(true).double_value(&[]);
            let expected = 1.0 / fan_in.sqrt();
            assert!(
                (std / expected - 1.0).abs() < 0.03,
                "{name}: std {std}, expected {expected}"
            );
            let bound = (3.0 / fan_in).sqrt();
            let largest = t.abs().max().double_value(&[]);
            assert!(
                largest <= bound * 1.001 && largest > bound * 0.95,
                "{name}: {largest} vs {bound}"
            );
            assert!(t.mean(tch::Kind::Double).double_value(&[]).abs() < 0.05 * expected);
        }
        for (name, value) in [
            ("norm.weight", 1.0),
            ("logit_scale", 1.0),
            ("conv.bias", 0.0),
            ("attn.in_proj_bias", 0.0),
        ] {
            let t = float(name);
            assert_eq!(t.min().double_value(&[]), value, "{name}");
            assert_eq!(t.max().double_value(&[]), value, "{name}");
        }
    }

    #[test]
    fn f16_bits_round_to_nearest_even() {
        use super::f32_to_f16_bits;
        assert_eq!(f32_to_f16_bits(1.0), 0x3c00);
        assert_eq!(f32_to_f16_bits(-2.0), 0xc000);
        assert_eq!(f32_to_f16_bits(0.0), 0);
        assert_eq!(f32_to_f16_bits(1e-6), 0);
        // 1 + 2^-11 lies halfway between 1 and 1 + 2^-10: to even (1); 1 + 3 * 2^-11 rounds up.
        assert_eq!(f32_to_f16_bits(1.0 + 2f32.powi(-11)), 0x3c00);
        assert_eq!(f32_to_f16_bits(1.0 + 3.0 * 2f32.powi(-11)), 0x3c02);
        // A carry out of the mantissa: just under 2 rounds to 2.
        assert_eq!(f32_to_f16_bits(2.0 - 2f32.powi(-13)), 0x4000);
        assert_eq!(f32_to_f16_bits(0.1), 0x2e66);
    }

    /// A 32x32 test card: a gradient with a bright square.
    fn card() -> Vec<f64> {
        (0..32 * 32)
            .map(|i| {
                let (x, y) = (i % 32, i / 32);
                let square = (8..20).contains(&x) && (10..24).contains(&y);
                if square {
                    230.0
                } else {
                    (x * 4 + y * 2) as f64
                }
            })
            .collect()
    }

    #[test]
    fn ssim_is_one_for_the_same_image_and_falls_with_damage() {
        let a = card();
        assert!((ssim(&a, &a, 32, 32) - 1.0).abs() < 1e-12);
        // A uniform brightness shift keeps the structure: still high.
        let shifted: Vec<f64> = a.iter().map(|v| (v + 10.0).min(255.0)).collect();
        let s_shift = ssim(&a, &shifted, 32, 32);
        // Pseudo-random noise of +-60 destroys much of it.
        let mut state = 12345u32;
        let noisy: Vec<f64> = a
            .iter()
            .map(|v| {
                state = state.wrapping_mul(1_103_515_245).wrapping_add(12345);
                (v + f64::from(state >> 16 & 0x7f) - 64.0).clamp(0.0, 255.0)
            })
            .collect();
        let s_noise = ssim(&a, &noisy, 32, 32);
        // An unrelated image (flat grey) scores far lower.
        let flat = vec![128.0; 32 * 32];
        let s_flat = ssim(&a, &flat, 32, 32);
        assert!(s_shift > 0.9, "{s_shift}");
        assert!(s_noise < s_shift && s_noise < 0.7, "{s_noise}");
        assert!(s_flat < 0.3, "{s_flat}");
    }
}
