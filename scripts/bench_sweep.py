#!/usr/bin/env python3
"""Benchmark: a 12-cell sweep (4 seeds x 3 cfg on the embedded model) as one
`POST /api/runs` with a `sweep`, against the same 12 (seed, cfg) pairs as 12 separate
`POST /api/runs`, each side on a fresh `weft serve` (its own data folder, so neither the memory
nor the disk cache carries over). Prints, per side, the wall time from the first request to
the last run's end and the checkpoint loads (runs whose `model` node ran, from the run
records). A figure a person compares, not a timed test.

    scripts/bench_sweep.py [--threads N] [--port P]
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
    print(json.dumps({"side": name, "runs": len(records), "statuses": statuses,
                      "wall_s": round(wall, 2), "checkpoint_loads": loads(records)}))


def sweep(port):
    reply = call(port, "POST", "/api/runs", {
        "workflow": "txt2img",
        "sweep": {"axes": {"sample.seed": SEEDS, "sample.cfg": CFGS}},
    })
    return reply["runs"]


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
    args = parser.parse_args()
    side("sweep", args.port, args.threads, sweep)
    side("12 separate POST /api/runs", args.port + 1, args.threads, separate)


if __name__ == "__main__":
    main()
