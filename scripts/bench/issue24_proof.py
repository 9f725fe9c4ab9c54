#!/usr/bin/env python3
"""Issue 24's Proof figures in one run, each printed beside the machine's 1-minute load:

1. sweeps: the 4 seeds x 3 cfg sweep on the embedded model as one `POST /api/runs` vs 12
   separate `POST /api/runs` (scripts/bench_sweep.py: wall time, checkpoint loads, prompt
   encodes, sampler runs), and through `weft run` batched vs not, for the seed x cfg sweep and
   for a 4 prompts x 3 cfg sweep (cells differing in prompt and cfg batched);
2. the disk tier: `weft run` twice in two processes sharing a fresh --cache-dir, for
   workflows/txt2img.yaml (64x64) and an SD1.5-sized checkpoint (random weights, written into
   /tmp by scripts/sd15_bench_workflow.sh, never committed): the second executes nothing, loads
   no model, every node `cached (disk)`; then five more fully cached reruns (time inside the
   run and of the process); then one entry corrupted by hand: a notice, a re-run, no crash;
3. 1,000 runs (a 40 seeds x 25 cfg sweep, 1 step) with a 50 MB disk budget: the cache folder's
   size, polled while they run and at the end, stays within it.

A figure a person reads, not a test (the tests assert the same behaviour without timings).
    scripts/bench/issue24_proof.py [--threads 2] [--skip-sd15] [--skip-api]
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
WEFT = os.path.join(ROOT, "target/release/weft")
MODELS = os.path.join(ROOT, "models")


def load():
    return round(os.getloadavg()[0], 2)


def say(**fields):
    fields.setdefault("load_1min", load())
    print(json.dumps(fields), flush=True)


def weft_run(args, threads):
    """`weft run ARGS --json`: (exit code, events, process wall seconds)."""
    command = [WEFT, "run", *args, "--device", "cpu", "--json", "--models", MODELS]
    if threads:
        command += ["--threads", str(threads)]
    began = time.perf_counter()
    done = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    wall = time.perf_counter() - began
    events = [json.loads(l) for l in done.stdout.decode().splitlines() if l.startswith("{")]
    if done.returncode != 0:
        sys.stderr.write(done.stderr.decode()[-2000:])
    return done.returncode, events, wall


def of(events, kind):
    return [e for e in events if e.get("event") == kind]


def sweeps(threads, skip_api):
    bench = [sys.executable, os.path.join(ROOT, "scripts/bench_sweep.py"), "--threads", str(threads)]
    if not skip_api:
        subprocess.run(bench, check=True)
    subprocess.run(bench + ["--cli"], check=True)
    # Cells differing in prompt and cfg: 4 prompts x 3 cfg, batched by 4 vs one by one.
    prompts = "a red circle,a blue square,a green triangle,a yellow circle on black"
    for batch in (4, 1):
        with tempfile.TemporaryDirectory() as out:
            code, events, wall = weft_run(
                [os.path.join(ROOT, "workflows/txt2img.yaml"), "--output", out,
                 "--sweep", f"positive.text={prompts}", "--sweep", "sample.cfg=4,6,8",
                 "--batch", str(batch)], threads)
        started = [e["type"] for e in of(events, "node_started")]
        say(side=f"weft run 4 prompts x 3 cfg --batch {batch}", exit=code, wall_s=round(wall, 2),
            runs=len(of(events, "run_finished")), sampler_runs=started.count("Sampler"),
            prompt_encodes_shown=started.count("PromptEncode"),
            encodes_for_a_batch=sum(1 for e in of(events, "notice")
                                    if "ran another sweep cell's" in e.get("message", "")))


def disk_tier(name, workflow, threads):
    cache = tempfile.mkdtemp(prefix="weft-proof-cache.")
    out = tempfile.mkdtemp(prefix="weft-proof-out.")
    args = [workflow, "--disk-cache", "10GiB", "--cache-dir", cache, "--output", out]
    try:
        code, first, wall = weft_run(args, threads)
        done = of(first, "run_finished")[-1]
        say(workflow=name, run="first process", exit=code, run_ms=done["micros"] / 1000,
            wall_s=round(wall, 2), executed=len(of(first, "node_started")))
        for i in range(6):
            code, events, wall = weft_run(args, threads)
            done = of(events, "run_finished")[-1]
            cached = of(events, "node_cached")
            say(workflow=name, run=f"new process {i + 2}", exit=code,
                run_ms=done["micros"] / 1000, wall_s=round(wall, 3),
                executed=[e["node"] for e in of(events, "node_started")],
                model_loads=sum(1 for e in of(events, "node_started") if e["type"] == "LoadCheckpoint"),
                cached_from_disk=sum(1 for e in cached if e.get("from_disk")),
                cached_in_all=len(cached))
        # Corrupt one entry by hand: the newest, the output node's (the one a full hit reads;
        # entries upstream of it are not read at all). Cut it in half: the next run says so
        # once, re-runs what it needs, and succeeds.
        entries = [os.path.join(d, f) for d, _, fs in os.walk(cache) for f in fs
                   if f.endswith(".safetensors")]
        victim = max(entries, key=os.path.getmtime)
        size = os.path.getsize(victim)
        with open(victim, "r+b") as f:
            f.truncate(size // 2)
        code, events, wall = weft_run(args, threads)
        notices = [e["message"] for e in of(events, "notice") if "unusable" in e.get("message", "")]
        say(workflow=name, run="after corrupting one entry", exit=code,
            status=of(events, "run_finished")[-1]["status"],
            executed=[e["node"] for e in of(events, "node_started")], notices=notices)
        code, events, _ = weft_run(args, threads)
        say(workflow=name, run="after that", exit=code,
            executed=[e["node"] for e in of(events, "node_started")],
            cached_from_disk=sum(1 for e in of(events, "node_cached") if e.get("from_disk")))
    finally:
        shutil.rmtree(cache, ignore_errors=True)
        shutil.rmtree(out, ignore_errors=True)


def folder_bytes(path):
    total = 0
    for d, _, fs in os.walk(path):
        for f in fs:
            try:
                total += os.path.getsize(os.path.join(d, f))
            except OSError:
                pass  # removed by an eviction between listing and stat
    return total


def thousand_runs(threads):
    budget = 50_000_000
    cache = tempfile.mkdtemp(prefix="weft-proof-budget.")
    out = tempfile.mkdtemp(prefix="weft-proof-out.")
    most = [0]
    running = [True]

    def poll():
        while running[0]:
            most[0] = max(most[0], folder_bytes(cache))
            time.sleep(0.2)

    poller = threading.Thread(target=poll)
    poller.start()
    try:
        code, events, wall = weft_run(
            [os.path.join(ROOT, "workflows/txt2img.yaml"), "--output", out,
             "--set", "sample.steps=1", "--sweep", "sample.seed=1..40",
             "--sweep", "sample.cfg=1..7 step 0.25", "--disk-cache", "50MB",
             "--cache-dir", cache], threads)
    finally:
        running[0] = False
        poller.join()
    stats = subprocess.run([WEFT, "cache", "stats", "--cache-dir", cache],
                           stdout=subprocess.PIPE).stdout.decode().strip()
    runs = of(events, "run_finished")
    say(check="1,000 runs with --disk-cache 50MB", exit=code, wall_s=round(wall, 1),
        runs=len(runs), succeeded=sum(1 for r in runs if r["status"] == "succeeded"),
        budget_bytes=budget, largest_folder_bytes_seen=most[0],
        final_folder_bytes=folder_bytes(cache), within=most[0] <= budget, stats=stats)
    shutil.rmtree(cache, ignore_errors=True)
    shutil.rmtree(out, ignore_errors=True)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-sd15", action="store_true")
    parser.add_argument("--skip-api", action="store_true")
    parser.add_argument("--only", choices=["sweeps", "disk", "budget"])
    args = parser.parse_args()
    say(started=time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), cpus=os.cpu_count())
    if args.only in (None, "sweeps"):
        sweeps(args.threads, args.skip_api)
    if args.only in (None, "disk"):
        disk_tier("workflows/txt2img.yaml (64x64)", os.path.join(ROOT, "workflows/txt2img.yaml"),
                  args.threads)
        if not args.skip_sd15:
            folder = os.environ.get("WEFT_BENCH_DIR", "/tmp/weft-bench-sd15")
            subprocess.run(["bash", "-c", f'cd "{ROOT}" && source scripts/env.sh && dir="{folder}" '
                            '&& source scripts/sd15_bench_workflow.sh'], check=True)
            disk_tier("SD1.5-sized checkpoint (64x64, 10 steps)",
                      os.path.join(folder, "txt2img.yaml"), args.threads)
    if args.only in (None, "budget"):
        thousand_runs(args.threads)
    say(finished=time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()))


if __name__ == "__main__":
    main()
