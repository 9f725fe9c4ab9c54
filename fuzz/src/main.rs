//! `weft-fuzz`: a mutation fuzzer for the workflow reader, validator and planner together,
//! on stable Rust (no nightly here for cargo-fuzz). It starts from the committed examples,
//! the broken-workflow corpus and `fuzz/corpus`, mutates bytes, lines and YAML tokens, and
//! keeps inputs that reach a diagnostic not seen before (a coarse stand-in for coverage).
//!
//! Every input must: not panic, take under a second, give errors whose first one has a
//! line:column, and, when it parses, write canonical YAML that reads back to the same text.
//! Found problems are written to the output folder and make the exit status non-zero.
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use weft_engine::{validate, Registry, Workflow};

/// Longest time one input may take.
const HANG: Duration = Duration::from_secs(1);

/// Tokens that mean something to YAML, JSON or the workflow format.
const DICTIONARY: &[&str] = &[
    "$",
    "$$",
    "$a.b",
    "$model.unet",
    ".",
    ": ",
    ":",
    "\n",
    "\n  ",
    "\n    ",
    "- ",
    "[",
    "]",
    "{",
    "}",
    ",",
    "&a ",
    "*a",
    "!!str ",
    "!!binary ",
    "! ",
    "\"",
    "'",
    "#",
    "\t",
    "\r\n",
    "---\n",
    "...\n",
    "? ",
    "|\n",
    ">-\n",
    "~",
    "null",
    "true",
    "no",
    "-1",
    "0",
    "1e309",
    "-0.0",
    ".nan",
    ".inf",
    "0x1F",
    "0o17",
    "9223372036854775808",
    "-9223372036854775809",
    "type: ",
    "weft: 1",
    "nodes:",
    "layout:",
    "weft: 2",
    "\u{0}",
    "\u{feff}",
    "é",
    "🌈",
    "\\",
    "%YAML 1.2\n",
    "Sampler",
    "LoadCheckpoint",
    "EmptyLatent",
    "SaveImage",
    "PromptEncode",
    "VaeDecode",
    "Int",
    "AddInt",
    "ShowInt",
    "seed",
    "steps",
    "width",
    "cfg",
    "text",
    "latent",
    "image",
];

/// xorshift64*: deterministic, so a run is reproduced by its seed.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

fn mutate(rng: &mut Rng, input: &[u8], other: &[u8]) -> Vec<u8> {
    let mut bytes = input.to_vec();
    for _ in 0..1 + rng.below(4) {
        let len = bytes.len();
        match rng.below(10) {
            0 if len > 0 => {
                let i = rng.below(len);
                bytes[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                bytes[i] = rng.next() as u8;
            }
            2 if len > 0 => {
                let start = rng.below(len);
                let end = (start + 1 + rng.below(16)).min(len);
                bytes.drain(start..end);
            }
            3 if len > 0 => {
                let start = rng.below(len);
                let end = (start + 1 + rng.below(32)).min(len);
                let chunk = bytes[start..end].to_vec();
                let at = rng.below(len);
                bytes.splice(at..at, chunk);
            }
            4 | 5 => {
                let token = DICTIONARY[rng.below(DICTIONARY.len())].as_bytes();
                let at = rng.below(len + 1);
                bytes.splice(at..at, token.iter().copied());
            }
            6 => {
                // Replace a token (a run of letters, digits or `$._`) with a dictionary entry.
                let at = rng.below(len + 1);
                let end = bytes[at..]
                    .iter()
                    .position(|b| !(b.is_ascii_alphanumeric() || b"$._-".contains(b)))
                    .map_or(len, |p| at + p);
                let token = DICTIONARY[rng.below(DICTIONARY.len())].as_bytes();
                bytes.splice(at..end, token.iter().copied());
            }
            7 => {
                // Line-level: duplicate, delete or swap whole lines (keeps YAML mostly valid).
                let mut lines: Vec<Vec<u8>> =
                    bytes.split(|&b| b == b'\n').map(<[u8]>::to_vec).collect();
                let n = lines.len();
                let (a, b) = (rng.below(n), rng.below(n));
                match rng.below(3) {
                    0 => {
                        let line = lines[a].clone();
                        lines.insert(b, line);
                    }
                    1 if n > 1 => {
                        lines.remove(a);
                    }
                    _ => lines.swap(a, b),
                }
                bytes = lines.join(&b'\n');
            }
            8 => {
                // Indent or dedent one line by two spaces.
                let line_starts: Vec<usize> = std::iter::once(0)
                    .chain(
                        bytes
                            .iter()
                            .enumerate()
                            .filter(|(_, &b)| b == b'\n')
                            .map(|(i, _)| i + 1),
                    )
                    .filter(|&i| i <= len)
                    .collect();
                let at = line_starts[rng.below(line_starts.len())];
                if rng.below(2) == 0 {
                    bytes.splice(at..at, *b"  ");
                } else if bytes[at..].starts_with(b"  ") {
                    bytes.drain(at..at + 2);
                }
            }
            _ => {
                // Splice: the head of this input and the tail of another.
                let cut = rng.below(len + 1);
                let from = rng.below(other.len() + 1);
                bytes.truncate(cut);
                bytes.extend_from_slice(&other[from..]);
            }
        }
    }
    bytes.truncate(1 << 16);
    bytes
}

/// What went wrong with one input, if anything; and the signature of what it reached.
fn check(registry: &Registry, bytes: &[u8]) -> (Option<String>, String) {
    let started = Instant::now();
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let workflow = match Workflow::parse(bytes) {
            Err(errors) => return Ok(errors),
            Ok(w) => w,
        };
        let canonical = workflow.to_yaml();
        match Workflow::parse_str(&canonical) {
            Ok(again) if again.to_yaml() == canonical => {}
            Ok(_) => return Err("canonical YAML does not read back to itself".to_string()),
            Err(e) => {
                return Err(format!(
                    "canonical YAML does not parse: {}\n--- canonical ---\n{canonical}",
                    e[0]
                ))
            }
        }
        let errors = validate(&workflow, registry, None);
        if errors.is_empty() {
            // Planning hashes the files that loaders name: give it a fixed hash instead.
            let mut hash = |_: &Path| -> std::io::Result<[u8; 32]> { Ok([7; 32]) };
            let models = weft_engine::ModelFolders::single("models");
            if let Err(errors) =
                weft_engine::plan::plan(&workflow, registry, None, &models, &mut hash)
            {
                return Ok(errors);
            }
        }
        Ok(errors)
    }));
    let elapsed = started.elapsed();
    let (problem, signature) = match outcome {
        Err(_) => (Some("panicked".to_string()), "panic".to_string()),
        Ok(Err(problem)) => (Some(problem), "roundtrip".to_string()),
        Ok(Ok(errors)) => match errors.first() {
            None => (None, "valid".to_string()),
            Some(first) if first.pos.is_none() => (
                Some(format!("unlocated error: {first}")),
                "unlocated".to_string(),
            ),
            Some(first) => (None, shape(&first.message)),
        },
    };
    if elapsed > HANG {
        return (Some(format!("took {elapsed:?}")), signature);
    }
    (problem, signature)
}

/// The kind of an error: its message up to the first particular (a quote or a digit), so
/// "unknown node type 'X'" is one kind whatever X is.
fn shape(message: &str) -> String {
    message
        .split(|c: char| c == '\'' || c == '"' || c.is_ascii_digit())
        .next()
        .unwrap_or_default()
        .to_string()
}

fn seeds(folders: &[PathBuf]) -> Vec<Vec<u8>> {
    let mut seeds = Vec::new();
    for folder in folders {
        let Ok(entries) = std::fs::read_dir(folder) else {
            eprintln!("weft-fuzz: cannot read {}", folder.display());
            continue;
        };
        let mut paths: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
        paths.sort();
        for path in paths {
            let keep = path
                .extension()
                .is_some_and(|e| e == "yaml" || e == "json" || e == "bin");
            if keep {
                if let Ok(bytes) = std::fs::read(&path) {
                    if bytes.len() <= 1 << 16 {
                        seeds.push(bytes);
                    }
                }
            }
        }
    }
    seeds
}

struct Options {
    seconds: u64,
    seed: u64,
    out: PathBuf,
    corpus: Vec<PathBuf>,
}

fn options() -> Result<Options, String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut options = Options {
        seconds: 600,
        seed: 1,
        out: PathBuf::from("fuzz-findings"),
        corpus: vec![
            root.join("workflows"),
            root.join("tests/corpus/broken"),
            root.join("fuzz/corpus"),
        ],
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--seconds" => {
                options.seconds = value()?.parse().map_err(|e| format!("--seconds: {e}"))?
            }
            "--seed" => options.seed = value()?.parse().map_err(|e| format!("--seed: {e}"))?,
            "--out" => options.out = PathBuf::from(value()?),
            "--corpus" => options.corpus = vec![PathBuf::from(value()?)],
            "--help" | "-h" => {
                return Err(
                    "usage: weft-fuzz [--seconds N] [--seed S] [--out DIR] [--corpus DIR]".into(),
                )
            }
            other => return Err(format!("unknown argument {other}; try --help")),
        }
    }
    Ok(options)
}

fn main() -> std::process::ExitCode {
    let options = match options() {
        Ok(o) => o,
        Err(message) => {
            eprintln!("{message}");
            return std::process::ExitCode::from(2);
        }
    };
    // Panics are caught and counted; their default report would flood the terminal.
    std::panic::set_hook(Box::new(|_| {}));
    let registry = weft_nodes::registry();
    let mut pool = seeds(&options.corpus);
    if pool.is_empty() {
        eprintln!("weft-fuzz: no seed inputs found");
        return std::process::ExitCode::from(2);
    }
    let mut seen: HashSet<String> = HashSet::new();
    for seed in &pool {
        seen.insert(check(&registry, seed).1);
    }
    println!(
        "weft-fuzz: {} seeds, {} kinds of outcome, {} s, seed {}",
        pool.len(),
        seen.len(),
        options.seconds,
        options.seed
    );
    let mut rng = Rng(options.seed.max(1).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let started = Instant::now();
    let deadline = started + Duration::from_secs(options.seconds);
    let (mut runs, mut problems, mut slowest) = (0u64, 0u64, Duration::ZERO);
    let mut last_report = Instant::now();
    while Instant::now() < deadline {
        let (a, b) = (rng.below(pool.len()), rng.below(pool.len()));
        let input = mutate(&mut rng, &pool[a], &pool[b]);
        let t = Instant::now();
        let (problem, signature) = check(&registry, &input);
        slowest = slowest.max(t.elapsed());
        runs += 1;
        if let Some(problem) = problem {
            problems += 1;
            let _ = std::fs::create_dir_all(&options.out);
            let path = options.out.join(format!("problem-{problems:04}.yaml"));
            let _ = std::fs::write(&path, &input);
            println!("PROBLEM {}: {problem}", path.display());
        }
        // An input that reaches a new kind of outcome joins the pool (bounded).
        if seen.insert(signature) && pool.len() < 4096 {
            pool.push(input);
        }
        if last_report.elapsed() > Duration::from_secs(10) {
            last_report = Instant::now();
            let secs = started.elapsed().as_secs_f64();
            println!(
                "  {runs} inputs, {:.0}/s, {} kinds of outcome, pool {}, slowest {slowest:?}, problems {problems}",
                runs as f64 / secs,
                seen.len(),
                pool.len()
            );
        }
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "weft-fuzz: {runs} inputs in {secs:.0} s ({:.0}/s), {} kinds of outcome, slowest {slowest:?}, {problems} problems",
        runs as f64 / secs,
        seen.len()
    );
    if problems == 0 {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::from(1)
    }
}
