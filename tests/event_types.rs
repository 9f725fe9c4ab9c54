//! The editor's TypeScript types of the /ws events are the ones the Rust types generate.
use std::path::PathBuf;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn committed_event_types_are_fresh() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_weft"))
        .arg("event-types")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let generated = String::from_utf8(out.stdout).unwrap();
    let path = repo().join("web-ui/src/generated/events.ts");
    let committed = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}: run `make event-types`", path.display()));
    assert!(
        generated == committed,
        "web-ui/src/generated/events.ts is stale: run `make event-types`"
    );
    // Every event the server sends is declared, tagged as the editor switches on it.
    for tag in [
        "\"queue\"",
        "\"run_queued\"",
        "\"run_started\"",
        "\"node_finished\"",
        "\"run_finished\"",
        "\"workflow_invalid\"",
        "\"sweep_finished\"",
    ] {
        assert!(
            committed.contains(&format!("event: {tag};")),
            "{tag} is missing"
        );
    }
    assert!(
        !committed.contains("fleet_flush"),
        "a worker's internal marker is not an event clients see"
    );
}
