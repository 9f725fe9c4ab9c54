#!/usr/bin/env python3
"""Benchmark: a 12-cell sweep (4 seeds x 3 cfg on the embedded model) as one
`POST /api/runs` with a `sweep` (its 4 seeds of each cfg sampled as one batch, the default),
the same sweep with `"batch": 1` (every cell sampled alone), and the same 12 (seed, cfg) pairs
as 12 separate `POST /api/runs`, each side on a fresh `weft serve` (its own data folder, so
neither the memory nor the disk cache carries over). Prints, per side, the wall time from the
first request to the last run's end, the checkpoint loads (runs whose `model` node ran, from
the run records) and the sampler runs. With `--cli`, times `weft run workflows/sweep.yaml`
with `--batch 4` and `--batch 1` instead (a fresh process each, wall time). Each side runs
`--rounds` times, alternating the order. A figure a person compares, not a timed test.

    scripts/bench_sweep.py [--threads N] [--port P] [--rounds R] [--cli]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEEDS = [1, 2, 3, 4]
CFGS = [4, 6, 8]


def call(port, method, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        data=data,
        method=method,
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=60) as reply:
        return json.loads(reply.read() or b"null")


def start_server(port, threads, data_dir):
    workflows = os.path.join(data_dir, "workflows")
    os.makedirs(workflows, exist_ok=True)
    with open(os.path.join(ROOT, "workflows/txt2img.yaml")) as src:
        with open(os.path.join(workflows, "txt2img.yaml"), "w") as dst:
            dst.write(src.read())
    command = [
        os.path.join(ROOT, "target/release/weft"), "serve", "--port", str(port),
        "--workflows", workflows, "--data", os.path.join(data_dir, "data"),
        "--models", os.path.join(ROOT, "models"), "--device", "cpu",
    ]
    if threads:
        command += ["--threads", str(threads)]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            call(port, "GET", "/api/runs?limit=0")
            return server
        except OSError:
            time.sleep(0.2)
    server.kill()
    sys.exit("weft serve did not start")


def wait_runs(port, ids):
    """Waits for every run; returns their records."""
    records = {}
    while len(records) < len(ids):
        for run in ids:
            if run in records:
                continue
            record = call(port, "GET", f"/api/runs/{run}")
            if record["status"] not in ("queued", "running"):
                records[run] = record
        time.sleep(0.05)
    return [records[run] for run in ids]


def loads(records):
    return sum(1 for r in records if r["nodes"].get("model", {}).get("state") == "ran")


def side(name, port, threads, submit):
    with tempfile.TemporaryDirectory() as data_dir:
        server = start_server(port, threads, data_dir)
        try:
            began = time.perf_counter()
            ids = submit(port)
            records = wait_runs(port, ids)
            wall = time.perf_counter() - began
        finally:
            server.terminate()
            server.wait()
    statuses = sorted({r["status"] for r in records})
    # Time inside the nodes, summed: steadier than wall time on a shared machine.
    node_s = sum(n.get("micros", 0) for r in records for n in r["nodes"].values()) / 1e6
    print(json.dumps({"side": name, "runs": len(records), "statuses": statuses,
                      "wall_s": round(wall, 2), "node_s": round(node_s, 2),
                      "checkpoint_loads": loads(records),
                      "sampler_runs": sum(1 for r in records
                                          if r["nodes"].get("sample", {}).get("state") == "ran"),
                      "prompt_encodes": sum(1 for r in records for k in ("positive", "negative")
                                            if r["nodes"].get(k, {}).get("state") == "ran")}))


def sweep(port, batch=None):
    body = {
        "workflow": "txt2img",
        "sweep": {"axes": {"sample.seed": SEEDS, "sample.cfg": CFGS}},
    }
    if batch is not None:
        body["batch"] = batch
    return call(port, "POST", "/api/runs", body)["runs"]


def sweep_unbatched(port):
    return sweep(port, batch=1)


def cli_side(batch, threads):
    """`weft run workflows/sweep.yaml --batch N` in a fresh process: wall seconds."""
    with tempfile.TemporaryDirectory() as out:
        command = [
            os.path.join(ROOT, "target/release/weft"), "run",
            os.path.join(ROOT, "workflows/sweep.yaml"), "--device", "cpu", "--json",
            "--models", os.path.join(ROOT, "models"), "--output", out, "--batch", str(batch),
        ]
        if threads:
            command += ["--threads", str(threads)]
        began = time.perf_counter()
        done = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        wall = time.perf_counter() - began
    events = [json.loads(line) for line in done.stdout.decode().splitlines() if line.strip()]
    samplers = sum(1 for e in events if e.get("event") == "node_started" and e.get("type") == "Sampler")
    print(json.dumps({"side": f"weft run --batch {batch}", "exit": done.returncode,
                      "wall_s": round(wall, 2), "sampler_runs": samplers,
                      "load_1min": round(os.getloadavg()[0], 2)}))


def separate(port):
    return [
        call(port, "POST", "/api/runs", {
            "workflow": "txt2img", "set": {"sample.seed": seed, "sample.cfg": cfg},
        })["id"]
        for seed in SEEDS for cfg in CFGS
    ]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--port", type=int, default=18391)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--cli", action="store_true",
                        help="time `weft run` of the sweep batched and not, instead of the API")
    args = parser.parse_args()
    for round_ in range(args.rounds):
        print(json.dumps({"round": round_ + 1, "load_1min": round(os.getloadavg()[0], 2)}))
        if args.cli:
            batches = [4, 1] if round_ % 2 == 0 else [1, 4]
            for batch in batches:
                cli_side(batch, args.threads)
            continue
        sides = [("sweep (batched)", sweep), ("sweep, batch 1", sweep_unbatched),
                 ("12 separate POST /api/runs", separate)]
        if round_ % 2 == 1:
            sides.reverse()
        for i, (name, submit) in enumerate(sides):
            side(name, args.port + i, args.threads, submit)


if __name__ == "__main__":
    main()
