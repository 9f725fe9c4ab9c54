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

/// The SD1.5 single-file layout (LDM tensor names and shapes) kept in the shared bench folder.
pub fn sd15_ldm_shapes() -> std::collections::BTreeMap<String, Vec<u64>> {
    let path = repo_root().join("../shared/bench/sd15_ldm_shapes.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (the shared folder beside the repository)",
            path.display()
        )
    });
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Writes an SD1.5-sized fp16 single-file checkpoint (2.1 GB) of small pseudo-random values,
/// as `shared/bench/make_sd15_shaped_checkpoint.py` does but in a few seconds and without
/// Python: enough to measure loading time and memory, not to draw pictures.
pub fn write_sd15_shaped_checkpoint(path: &Path) -> std::io::Result<()> {
    use std::io::Write;
    let shapes = sd15_ldm_shapes();
    let mut header = String::from("{\"__metadata__\":{\"format\":\"pt\"}");
    let mut offset = 0u64;
    for (name, shape) in &shapes {
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
    // fp16 values of magnitude 2^-7 .. 2^-6 with random sign and mantissa: finite everywhere.
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut chunk = vec![0u8; 1 << 20];
    let mut left = offset;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        for pair in chunk[..n].chunks_exact_mut(2) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let bits = ((state as u16) & 0x83FF) | 0x2000;
            pair.copy_from_slice(&bits.to_le_bytes());
        }
        out.write_all(&chunk[..n])?;
        left -= n as u64;
    }
    out.flush()
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
