#!/usr/bin/env python3
"""Issue 23's overhead figure: a fully cached 100-node rerun through a fleet (one `weft serve
--queue` API server + one `weft worker` on PostgreSQL) against the same rerun through a lone
`weft serve`, each printed beside the machine's 1-minute load.

The workflow is a chain of 100 trivial nodes (Int, 98 AddInt, ShowInt). Each setup runs it once
(every node executes), then `--reruns` more times with nothing changed: every node is cached,
so the figure is the queue's and the process boundaries' cost. Per rerun: the wall time from
POST /api/runs to the run's `run_finished` on a /ws socket, and the record's finished_at -
queued_at (both millisecond clocks; on a fleet the API server's and the worker's).

Run it next to a throwaway PostgreSQL, after `cargo build --release`:
    scripts/postgres.sh .venv/bin/python scripts/bench/fleet.py [--reruns 30] [--routing]
(the set-up's .venv has the `websockets` client).
`--routing` also runs the cache-aware vs oldest-first comparison (tests/fleet.rs,
cache_aware_claims_compared_with_oldest_first) and prints its figure line.
A figure a person reads, not a test.
"""
import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
WEFT = os.path.join(ROOT, "target/release/weft")
MODELS = os.path.join(ROOT, "models")


def load():
    return round(os.getloadavg()[0], 2)


def say(**fields):
    fields.setdefault("load_1min", load())
    print(json.dumps(fields), flush=True)


def chain(nodes):
    """A workflow of `nodes` nodes: Int, AddInts, ShowInt."""
    lines = ["weft: 1", "nodes:", "  n0:", "    type: Int", "    value: 1"]
    for i in range(1, nodes - 1):
        lines += [f"  n{i}:", "    type: AddInt", f"    a: $n{i - 1}.value" if i == 1 else f"    a: $n{i - 1}.sum",
                  f"    b: {i}"]
    lines += ["  show:", "    type: ShowInt", f"    value: $n{nodes - 2}.sum"]
    return "\n".join(lines) + "\n"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def request(port, method, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method=method,
                                 headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as reply:
        return json.loads(reply.read() or b"null")


def wait_ready(port, process, what):
    deadline = time.time() + 120
    while time.time() < deadline:
        if process.poll() is not None:
            sys.exit(f"{what} exited with {process.returncode}")
        try:
            request(port, "GET", "/api/runs?limit=1")
            return
        except OSError:
            time.sleep(0.1)
    sys.exit(f"{what} did not answer on port {port} within 120 s")


def run_once(port, socket):
    """(wall seconds from POST to the run's `run_finished` on the /ws `socket`,
    finished_at - queued_at ms, the record)."""
    began = time.perf_counter()
    run = request(port, "POST", "/api/runs", {"workflow": "chain"})["id"]
    deadline = time.time() + 300
    while True:
        left = deadline - time.time()
        if left <= 0:
            sys.exit(f"no run_finished for run {run} within 300 s")
        try:
            message = json.loads(socket.recv(timeout=left))
        except TimeoutError:
            continue
        if message.get("event") == "run_finished" and message.get("run") == run:
            break
    wall = time.perf_counter() - began
    record = request(port, "GET", f"/api/runs/{run}")
    if record["status"] != "succeeded":
        sys.exit(f"run {run}: {json.dumps(record)[:2000]}")
    return wall, record.get("finished_at", 0) - record.get("queued_at", 0), record


def measure(name, port, reruns):
    from websockets.sync.client import connect  # in the set-up's .venv

    with connect(f"ws://127.0.0.1:{port}/ws", max_size=None) as socket:
        return measure_on(name, port, reruns, socket)


def measure_on(name, port, reruns, socket):
    _, _, first = run_once(port, socket)
    walls, inside = [], []
    for _ in range(reruns):
        wall, ms, record = run_once(port, socket)
        states = {n.get("state") for n in record.get("nodes", {}).values()}
        if states != {"cached"}:
            sys.exit(f"{name}: a rerun was not fully cached: {sorted(map(str, states))}")
        walls.append(wall * 1000)
        inside.append(ms)
    say(setup=name, nodes=len(first.get("nodes", {})), reruns=reruns,
        wall_ms_median=round(statistics.median(walls), 2), wall_ms_min=round(min(walls), 2),
        wall_ms_max=round(max(walls), 2), queued_to_finished_ms_median=statistics.median(inside))
    return statistics.median(walls)


def start(args, project, what):
    log = open(os.path.join(project, f"{what}.log"), "w")
    return subprocess.Popen([WEFT, *args], cwd=project, stdout=log, stderr=subprocess.STDOUT)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reruns", type=int, default=30)
    parser.add_argument("--routing", action="store_true")
    options = parser.parse_args()
    url = os.environ.get("WEFT_TEST_POSTGRES")
    if not url:
        sys.exit("WEFT_TEST_POSTGRES is not set: run this under scripts/postgres.sh")
    if not os.path.exists(WEFT):
        sys.exit(f"{WEFT} is missing: cargo build --release first")
    project = tempfile.mkdtemp(prefix="weft-fleet-bench.")
    processes = []
    try:
        os.makedirs(os.path.join(project, "workflows"))
        with open(os.path.join(project, "workflows/chain.yaml"), "w") as f:
            f.write(chain(100))
        common = ["--models", MODELS, "--workflows", "workflows", "--data", "data"]

        port = free_port()
        alone = start(["serve", "--port", str(port), *common, "--device", "cpu"], project, "alone")
        processes.append(alone)
        wait_ready(port, alone, "weft serve")
        single = measure("weft serve alone", port, options.reruns)
        alone.terminate()
        alone.wait()

        fleet_port = free_port()
        api = start(["serve", "--port", str(fleet_port), "--queue", url, *common], project, "api")
        processes.append(api)
        wait_ready(fleet_port, api, "weft serve --queue")
        worker = start(["worker", "--queue", url, "--device", "cpu", "--name", "bench", *common],
                       project, "worker")
        processes.append(worker)
        fleet = measure("fleet: 1 API server + 1 worker", fleet_port, options.reruns)
        say(fleet_over_single=round(fleet / single, 2), goal="< 2")
    finally:
        for process in processes:
            if process.poll() is None:
                process.terminate()
                process.wait()
        shutil.rmtree(project, ignore_errors=True)

    if options.routing:
        test = subprocess.run(
            ["bash", "-c", f'cd "{ROOT}" && source scripts/env.sh && cargo test --release -p weft '
             "--test fleet -- --include-ignored --nocapture cache_aware_claims_compared"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        lines = [l for l in test.stdout.decode().splitlines() if l.startswith("figure:")]
        say(routing=lines, test_exit=test.returncode)


if __name__ == "__main__":
    main()
