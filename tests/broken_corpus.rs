//! The broken-workflow corpus: every file gives a located error quickly, and nothing panics.
use std::path::Path;
use std::time::{Duration, Instant};

use weft_engine::{validate, Diagnostic, Workflow};

fn diagnose(bytes: &[u8]) -> Vec<Diagnostic> {
    let registry = weft_nodes::registry();
    match Workflow::parse(bytes) {
        Err(errors) => errors,
        Ok(workflow) => validate(&workflow, &registry, None),
    }
}

fn check(name: &str, bytes: &[u8], expected: &str) {
    let started = Instant::now();
    let errors =
        std::panic::catch_unwind(|| diagnose(bytes)).unwrap_or_else(|_| panic!("{name}: panicked"));
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_secs(1), "{name}: took {elapsed:?}");
    assert!(!errors.is_empty(), "{name}: no error reported");
    assert!(
        errors[0].pos.is_some(),
        "{name}: first error has no line:column: {}",
        errors[0]
    );
    let rendered: Vec<String> = errors.iter().map(|e| e.render(name)).collect();
    assert!(
        rendered.iter().any(|r| r.contains(expected)),
        "{name}: expected an error containing {expected:?}, got:\n{}",
        rendered.join("\n")
    );
}

#[test]
fn every_corpus_file_gives_its_located_error() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/broken");
    let table = std::fs::read_to_string(dir.join("EXPECT.tsv")).expect("EXPECT.tsv");
    let mut checked = 0;
    for line in table
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (name, expected) = line.split_once('\t').expect("file<TAB>expected");
        let bytes = std::fs::read(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        check(name, &bytes, expected);
        checked += 1;
    }
    let files = std::fs::read_dir(&dir).unwrap().count() - 1;
    assert_eq!(checked, files, "every corpus file has a line in EXPECT.tsv");
    assert!(
        checked >= 40,
        "the corpus keeps at least 40 files, has {checked}"
    );
}

#[test]
fn binary_garbage_is_located() {
    // A deterministic pseudo-random byte soup (xorshift), with invalid UTF-8 early on.
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let bytes: Vec<u8> = (0..4096)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect();
    check("garbage.bin", &bytes, "1:1: error: file is not UTF-8 text");
    check(
        "invalid_utf8.yaml",
        b"weft: 1\nnodes:\n  a:\n    type: \xc3\x28Int\n",
        "4:11",
    );
}

#[test]
fn a_ten_megabyte_file_is_refused_at_once() {
    let line = "  # padding padding padding padding padding padding padding padding padding\n";
    let mut text = String::from("weft: 1\nnodes:\n");
    while text.len() < 10 * 1024 * 1024 {
        text.push_str(line);
    }
    check("huge.yaml", text.as_bytes(), "limited to 8 MB");
}

#[test]
fn a_million_nested_brackets_do_not_overflow_the_stack() {
    let text = format!("weft: 1\nnodes: {}", "[".repeat(1_000_000));
    check("brackets.yaml", text.as_bytes(), "nesting deeper");
}
