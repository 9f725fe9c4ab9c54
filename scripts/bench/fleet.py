#!/usr/bin/env python3
"""Issue 23's overhead and routing figures, each printed beside the machine's 1-minute load.

Cached rerun: a fully cached 100-node rerun through a fleet (one `weft serve --queue` API
server + one `weft worker` on PostgreSQL) against the same rerun through a lone `weft serve`.
The workflow is a chain of 100 trivial nodes (Int, 98 AddInt, ShowInt). Each setup runs it once
(every node executes), then `--reruns` more times with nothing changed: every node is cached,
so the figure is the queue's and the process boundaries' cost. Per rerun: the wall time from
POST /api/runs to the run's `run_finished` on a /ws socket, the record's finished_at -
queued_at and started_at - queued_at (enqueue -> claim with an idle worker; millisecond
clocks: on a fleet the API server's and the database's), and POST -> the run's `run_started`
on the socket (enqueue -> claim plus the HTTP answer and the event's way back). The fleet is
measured twice: with PostgreSQL's durable commits (its default: each commit waits for a fsync)
and with `synchronous_commit=off`, which, like the lone server's SQLite (WAL,
synchronous=NORMAL), does not wait for the disk (docs/scaling.md says what that risks).

`--claims`: claims per second on one PostgreSQL (tests/fleet.rs,
leased_claims_take_each_run_once_and_report_their_rate: 2,000 runs, 4 claimers, oldest-first
and cache-aware statements).

`--routing` (or `--only-routing`): `--routing-runs` runs (300) from three workflows, each
loading its own model file (copies of the embedded model under three names), seeds changing,
queued at once to three workers whose caches hold about one model: the share of runs that
found their model loaded on the worker that took them, oldest-first vs cache-aware claims,
side by side.

Run it next to a throwaway PostgreSQL, after `cargo build --release`:
    scripts/postgres.sh .venv/bin/python scripts/bench/fleet.py [--reruns 30] [--claims]
        [--routing | --only-routing] [--logs DIR]
(the set-up's .venv has the `websockets` client).
A figure a person reads, not a test.
"""
import argparse
import json
import os
import random
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
    finished_at - queued_at ms, the record, seconds from POST to its `run_started`)."""
    began = time.perf_counter()
    started = None
    deadline = time.time() + 300
    run = request(port, "POST", "/api/runs", {"workflow": "chain"})["id"]
    while True:
        left = deadline - time.time()
        if left <= 0:
            sys.exit(f"no run_finished for run {run} within 300 s")
        try:
            message = json.loads(socket.recv(timeout=left))
        except TimeoutError:
            continue
        if message.get("run") != run:
            continue
        if message.get("event") == "run_started" and started is None:
            started = time.perf_counter() - began
        if message.get("event") == "run_finished":
            break
    wall = time.perf_counter() - began
    record = request(port, "GET", f"/api/runs/{run}")
    if record["status"] != "succeeded":
        sys.exit(f"run {run}: {json.dumps(record)[:2000]}")
    return wall, record.get("finished_at", 0) - record.get("queued_at", 0), record, started


def measure(name, port, reruns):
    from websockets.sync.client import connect  # in the set-up's .venv

    with connect(f"ws://127.0.0.1:{port}/ws", max_size=None) as socket:
        return measure_on(name, port, reruns, socket)


def measure_on(name, port, reruns, socket):
    _, _, first, _ = run_once(port, socket)
    walls, inside, claims, started = [], [], [], []
    for _ in range(reruns):
        wall, ms, record, to_started = run_once(port, socket)
        if record.get("started_at") is not None:
            claims.append(record["started_at"] - record["queued_at"])
        if to_started is not None:
            started.append(to_started * 1000)
        states = {n.get("state") for n in record.get("nodes", {}).values()}
        if states != {"cached"}:
            sys.exit(f"{name}: a rerun was not fully cached: {sorted(map(str, states))}")
        walls.append(wall * 1000)
        inside.append(ms)
    say(setup=name, nodes=len(first.get("nodes", {})), reruns=reruns,
        wall_ms_median=round(statistics.median(walls), 2), wall_ms_min=round(min(walls), 2),
        wall_ms_max=round(max(walls), 2), queued_to_finished_ms_median=statistics.median(inside),
        **latency("queued_to_started_ms", claims), **latency("post_to_run_started_on_ws_ms", started))
    return statistics.median(walls)


def latency(name, values):
    """Median and p99 of `values` as `name_median`, `name_p99` (none when empty)."""
    if not values:
        return {}
    ordered = sorted(values)
    p99 = ordered[min(len(ordered) - 1, -(-len(ordered) * 99 // 100) - 1)]
    return {f"{name}_median": round(statistics.median(ordered), 2), f"{name}_p99": round(p99, 2)}


def start(args, project, what):
    log = open(os.path.join(project, f"{what}.log"), "w")
    return subprocess.Popen([WEFT, *args], cwd=project, stdout=log, stderr=subprocess.STDOUT)


def cached_reruns(url, options):
    """The fully cached 100-node rerun: a lone `weft serve`, then two fleets."""
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

        # PostgreSQL's default commits wait for the disk (a fsync each: the enqueue, the claim,
        # the record); the lone server's SQLite (WAL, synchronous=NORMAL) does not. The second
        # fleet shows the same runs with commits that do not wait either
        # (synchronous_commit=off; docs/scaling.md says what that risks).
        relaxed = url + (" options=-csynchronous_commit=off" if "://" not in url
                         else ("&" if "?" in url else "?") + "options=-csynchronous_commit%3Doff")
        for label, queue in [("durable commits", url), ("synchronous_commit=off", relaxed)]:
            fleet_port = free_port()
            api = start(["serve", "--port", str(fleet_port), "--queue", queue, *common], project,
                        f"api-{len(processes)}")
            processes.append(api)
            wait_ready(fleet_port, api, "weft serve --queue")
            worker = start(["worker", "--queue", queue, "--device", "cpu", "--name", "bench", *common],
                           project, f"worker-{len(processes)}")
            processes.append(worker)
            fleet = measure(f"fleet: 1 API server + 1 worker, {label}", fleet_port, options.reruns)
            say(commits=label, fleet_over_single=round(fleet / single, 2), goal="< 2")
            for process in (api, worker):
                process.terminate()
                process.wait()
    finally:
        for process in processes:
            if process.poll() is None:
                process.terminate()
                process.wait()
        if options.logs:
            os.makedirs(options.logs, exist_ok=True)
            for name in os.listdir(project):
                if name.endswith(".log"):
                    shutil.copy(os.path.join(project, name), options.logs)
        shutil.rmtree(project, ignore_errors=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reruns", type=int, default=30)
    parser.add_argument("--routing", action="store_true",
                        help="also measure routing: cache-aware vs oldest-first claims")
    parser.add_argument("--routing-runs", type=int, default=300)
    parser.add_argument("--only-routing", action="store_true",
                        help="measure routing only (not the cached rerun)")
    parser.add_argument("--claims", action="store_true",
                        help="also run the claims-per-second test (tests/fleet.rs) and print it")
    parser.add_argument("--logs", metavar="DIR",
                        help="copy the servers' and the worker's logs into DIR before cleaning up")
    options = parser.parse_args()
    url = os.environ.get("WEFT_TEST_POSTGRES")
    if not url:
        sys.exit("WEFT_TEST_POSTGRES is not set: run this under scripts/postgres.sh")
    if not os.path.exists(WEFT):
        sys.exit(f"{WEFT} is missing: cargo build --release first")
    if not options.only_routing:
        cached_reruns(url, options)

    if options.claims:
        test = subprocess.run(
            ["bash", "-c", f'cd "{ROOT}" && source scripts/env.sh && cargo test --release -p weft '
             "--test fleet -- --include-ignored --nocapture claims_take_each_run_once"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        lines = [l for l in test.stdout.decode().splitlines() if l.startswith("figure:")]
        say(claims=lines, test_exit=test.returncode)

    if options.routing or options.only_routing:
        routing(url, options.routing_runs, options.logs)


ROUTING_MODELS = ["shapes-a", "shapes-b", "shapes-c"]
ROUTING_PROMPTS = ["a red circle on a blue background", "a green square on a yellow background",
                   "a white triangle on a black background"]
# Holds one loaded model with its prompt encodes, not two (the embedded model takes about
# 100 MB of a worker's cache on the CPU): a worker that takes another model's run evicts.
ONE_MODEL_BUDGET = "150MB"


def routing(url, runs, logs):
    """Issue 23's routing figure: `runs` runs from three workflows, each loading its own model
    file (copies of the embedded model under three names), seeds changing, queued at once to
    three workers whose caches hold about one model; the share of runs that found their model
    loaded on the worker that took them, oldest-first claims vs cache-aware, same runs."""
    project = tempfile.mkdtemp(prefix="weft-fleet-routing.")
    base = open(os.path.join(ROOT, "workflows/txt2img.yaml")).read()
    for needle in ["name: tiny-shapes", "prefix: txt2img", "steps: 20", ROUTING_PROMPTS[0]]:
        if needle not in base:
            sys.exit(f"workflows/txt2img.yaml has no '{needle}' any more: update bench/fleet.py")
    os.makedirs(os.path.join(project, "workflows"))
    extra = os.path.join(project, "extra-models")
    for model, prompt in zip(ROUTING_MODELS, ROUTING_PROMPTS):
        shutil.copytree(os.path.join(MODELS, "tiny-shapes"), os.path.join(extra, model))
        doc = (base.replace("name: tiny-shapes", f"name: {model}")
               .replace("prefix: txt2img", f"prefix: {model}").replace("steps: 20", "steps: 3")
               .replace(ROUTING_PROMPTS[0], prompt))
        with open(os.path.join(project, f"workflows/{model}.yaml"), "w") as f:
            f.write(doc)
    # The same order of workflows and seeds for both ways of claiming.
    chooser = random.Random(23)
    order = [(chooser.choice(ROUTING_MODELS), 5000 + i) for i in range(runs)]
    common = ["--models", MODELS, "--models", extra, "--workflows", "workflows", "--data", "data"]
    figures = {}
    try:
        for label, affinity in [("oldest first", "0"), ("cache-aware", "2")]:
            processes = []
            try:
                port = free_port()
                api = start(["serve", "--port", str(port), "--queue", url, *common], project,
                            f"routing-api-{affinity}")
                processes.append(api)
                wait_ready(port, api, "weft serve --queue")
                for w in range(3):
                    name = f"routing-{affinity}-w{w}"
                    worker = start(["worker", "--queue", url, "--device", "cpu", "--threads", "1",
                                    "--name", name, "--cache-budget", ONE_MODEL_BUDGET,
                                    "--cache-affinity", affinity, *common], project, name)
                    processes.append(worker)
                    wait_log(os.path.join(project, f"{name}.log"), "takes runs from", worker)
                began = time.time()
                ids = [request(port, "POST", "/api/runs",
                               {"workflow": model, "set": {"sample.seed": seed}})["id"]
                       for model, seed in order]
                loaded, left, deadline = 0, set(ids), time.time() + 1800
                while left:
                    if time.time() > deadline:
                        sys.exit(f"routing ({label}): {len(left)} runs unfinished after 30 min")
                    time.sleep(1)
                    for run in sorted(left):
                        record = request(port, "GET", f"/api/runs/{run}")
                        if record["status"] in ("queued", "running"):
                            continue
                        if record["status"] != "succeeded":
                            sys.exit(f"routing ({label}): run {run}: {json.dumps(record)[:2000]}")
                        loaded += record["nodes"]["model"]["state"] == "cached"
                        left.discard(run)
                seconds = time.time() - began
                figures[label] = loaded
                say(routing=label, runs=runs, workers=3, models=3, cache_budget=ONE_MODEL_BUDGET,
                    found_model_loaded=loaded, share=round(loaded / runs, 3),
                    seconds=round(seconds, 1))
            finally:
                for process in processes:
                    if process.poll() is None:
                        process.terminate()
                        process.wait()
        say(routing="side by side", runs=runs,
            oldest_first=f"{figures['oldest first']}/{runs} ({100 * figures['oldest first'] / runs:.1f}%)",
            cache_aware=f"{figures['cache-aware']}/{runs} ({100 * figures['cache-aware'] / runs:.1f}%)",
            ceiling=f"{runs - 3}/{runs} (each model's first load misses)", goal=">= 90%")
    finally:
        if logs:
            os.makedirs(logs, exist_ok=True)
            for name in os.listdir(project):
                if name.endswith(".log"):
                    shutil.copy(os.path.join(project, name), logs)
        shutil.rmtree(project, ignore_errors=True)


def wait_log(path, text, process):
    """Waits (2 minutes at most) until the log at `path` says `text`."""
    deadline = time.time() + 120
    while time.time() < deadline:
        if process.poll() is not None:
            sys.exit(f"{path}: exited with {process.returncode}")
        if os.path.exists(path) and text in open(path).read():
            return
        time.sleep(0.1)
    sys.exit(f"{path} did not say '{text}' within 120 s")


if __name__ == "__main__":
    main()
