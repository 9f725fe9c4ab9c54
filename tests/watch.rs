//! Hot reload: `weft watch` re-runs on save, executes only what changed, survives a broken
//! save (keeping its cache), and sees editors that save by rename-and-replace.
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::Duration;

/// a -> b (adds 10) -> c (adds 100) -> show.
fn workflow() -> String {
    weft_test_support::add_int_chain(&[10, 100])
}

/// Marks a stdout line that is not a JSON object.
const NOT_JSON: &str = "NOT JSON on stdout: ";

struct Watcher {
    child: Child,
    lines: Receiver<String>,
}

impl Watcher {
    fn start(file: &Path) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_weft"))
            .args(["watch", file.to_str().unwrap(), "--json", "--device", "cpu"])
            .current_dir(file.parent().unwrap())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("weft watch starts");
        let (tx, lines) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        let tx2 = tx.clone();
        std::thread::spawn(move || {
            // `--json` promises one JSON object per stdout line; anything else is a defect.
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let checked = match serde_json::from_str::<serde_json::Value>(&line) {
                    Ok(v) if v.is_object() => line,
                    _ => format!("{NOT_JSON}{line}"),
                };
                let _ = tx.send(checked);
            }
        });
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx2.send(format!("stderr: {line}"));
            }
        });
        Self { child, lines }
    }

    /// Lines up to and including the next `run_finished` event (stderr lines that came in
    /// meanwhile are kept for failure messages; assertions read the JSON events).
    fn next_run(&self) -> Vec<String> {
        let mut seen = Vec::new();
        loop {
            let line = self
                .lines
                .recv_timeout(Duration::from_secs(30))
                .unwrap_or_else(|_| panic!("no run within 30 s; saw:\n{}", seen.join("\n")));
            assert!(
                !line.starts_with(NOT_JSON),
                "weft watch --json wrote a non-JSON line to stdout: {line}"
            );
            let done = line.contains("\"run_finished\"");
            seen.push(line);
            if done {
                return seen;
            }
        }
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn started(lines: &[String]) -> Vec<String> {
    lines
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["event"] == "node_started")
        .map(|e| e["node"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn saving_reruns_only_changed_nodes_and_a_broken_save_keeps_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("flow.yaml");
    std::fs::write(&file, workflow()).unwrap();
    let watcher = Watcher::start(&file);
    assert_eq!(started(&watcher.next_run()), ["a", "b", "c", "show"]);

    // A later node changed: only it and what follows run.
    std::thread::sleep(Duration::from_millis(300));
    std::fs::write(&file, workflow().replace("b: 100", "b: 200")).unwrap();
    assert_eq!(started(&watcher.next_run()), ["c", "show"]);

    // A broken save: errors, nothing runs.
    std::thread::sleep(Duration::from_millis(300));
    std::fs::write(
        &file,
        workflow().replace(
            "type: AddInt\n    a: $b.sum",
            "type: AddInnt\n    a: $b.sum",
        ),
    )
    .unwrap();
    let broken = watcher.next_run();
    assert!(
        broken.iter().any(|l| l.contains("did you mean 'AddInt'")),
        "{broken:#?}"
    );
    assert!(started(&broken).is_empty());

    // Saved by rename-and-replace (vim, VS Code, most editors), back to the second version:
    // everything is still cached from before the broken save.
    std::thread::sleep(Duration::from_millis(300));
    let temp = dir.path().join(".flow.yaml.swp");
    std::fs::write(&temp, workflow().replace("b: 100", "b: 200")).unwrap();
    std::fs::rename(&temp, &file).unwrap();
    let fixed = watcher.next_run();
    assert!(started(&fixed).is_empty(), "{fixed:#?}");
    assert!(
        fixed.iter().any(|l| l.contains("\"cached\":4")),
        "{fixed:#?}"
    );
}
