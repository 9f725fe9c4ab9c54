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

/// The largest absolute difference between two tensors of the same shape, in f64.
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.size(), b.size(), "shapes differ");
    (a.to_kind(Kind::Double) - b.to_kind(Kind::Double))
        .abs()
        .max()
        .double_value(&[])
}
