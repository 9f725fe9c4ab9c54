#!/usr/bin/env python3
"""Checks that drive a running `weft serve` through its HTTP API (stdlib only), for the device
machine's one-shot script (scripts/device/gpu_checks.sh) and, smaller, on a CPU:

  latency URL --workflow W [--set node.input=value ...] [--runs N]
      one warm-up run (model load, CUDA-graph capture), then N runs with new seeds: the time
      from queued to finished (the PNG is written before a run finishes) from the run records
      (ms) and as the client saw it, and the sampler's and decoder's node times.
  memory URL --workflow W [--runs N] [--budget BYTES]
      N runs with a new seed and prompt each; after each, `/system_stats`' weft.last_run_memory:
      the cache's bytes beside the device's allocated and reserved bytes. Reports whether the
      device memory the cache does not account for stays flat, whether reserved memory stops
      growing, and (with --budget) whether the device stays within the cache budget +5%.

W is a workflow name of the server's workflows folder, or a path to a JSON file (sent as the
document). Prints one JSON object; exits 1 if a run fails or a check does not hold.
"""
import argparse
import json
import statistics
import sys
import time
import urllib.error
import urllib.request

PROMPTS = [
    "a red circle on a blue background", "a yellow star on a green background",
    "a blue square on a white background", "a green triangle on a black background",
    "a purple circle on an orange background", "a white star on a red background",
    "an orange square on a purple background", "a black triangle on a yellow background",
]


def http(method, url, body=None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=600) as answer:
            return answer.status, json.loads(answer.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")


def workflow_field(spec):
    if spec.endswith(".json"):
        return json.load(open(spec))
    return spec


def run(url, workflow, settings, poll=0.002):
    """Queues one run and waits for its record to finish; (record, client seconds)."""
    start = time.perf_counter()
    status, body = http("POST", f"{url}/api/runs", {"workflow": workflow, "set": settings})
    if status != 202:
        raise RuntimeError(f"POST /api/runs answered {status}: {body}")
    run_id = body["id"]
    while True:
        status, record = http("GET", f"{url}/api/runs/{run_id}")
        if status == 200 and record.get("status") not in ("queued", "running"):
            return record, time.perf_counter() - start
        time.sleep(poll)


def parse_sets(pairs):
    settings = {}
    for pair in pairs or []:
        key, _, value = pair.partition("=")
        try:
            settings[key] = json.loads(value)
        except json.JSONDecodeError:
            settings[key] = value
    return settings


def node_ms(record, node):
    micros = record.get("nodes", {}).get(node, {}).get("micros")
    return None if micros is None else micros / 1e3


def latency(args):
    workflow = workflow_field(args.workflow)
    base = parse_sets(args.set)
    warm, warm_s = run(args.url, workflow, {**base, args.seed_input: 0})
    if warm["status"] != "succeeded":
        return {"ok": False, "warm_up": warm}, False
    server_ms, client_ms, sampler_ms, decode_ms = [], [], [], []
    for seed in range(1, args.runs + 1):
        record, seconds = run(args.url, workflow, {**base, args.seed_input: seed})
        if record["status"] != "succeeded":
            return {"ok": False, "failed_run": record}, False
        server_ms.append(record["finished_at"] - record["queued_at"])
        client_ms.append(1e3 * seconds)
        sampler_ms.append(node_ms(record, args.sampler_node))
        decode_ms.append(node_ms(record, args.decode_node))
    median = lambda xs: statistics.median(x for x in xs if x is not None) if any(
        x is not None for x in xs) else None
    return {
        "ok": True,
        "warm_up_s": round(warm_s, 3),
        "runs": args.runs,
        "queued_to_finished_ms_median": median(server_ms),
        "queued_to_finished_ms_min": min(server_ms),
        "client_ms_median": median(client_ms),
        "sampler_ms_median": median(sampler_ms),
        "decode_ms_median": median(decode_ms),
        "last_record_nodes": record.get("nodes"),
    }, True


def memory(args):
    workflow = workflow_field(args.workflow)
    base = parse_sets(args.set)
    rows = []
    started = time.perf_counter()
    for i in range(args.runs):
        settings = {**base, args.seed_input: 1000 + i}
        if args.prompt_input:
            settings[args.prompt_input] = f"{PROMPTS[i % len(PROMPTS)]}, take {i}"
        record, _ = run(args.url, workflow, settings)
        if record["status"] != "succeeded":
            return {"ok": False, "failed_run": i, "record": record}, False
        status, stats = http("GET", f"{args.url}/system_stats")
        memory = (stats.get("weft") or {}).get("last_run_memory") if status == 200 else None
        if not memory:
            return {"ok": False, "error": f"/system_stats has no weft.last_run_memory: {stats}"}, False
        device = memory.get("device") or {}
        rows.append((memory["cache_bytes"], device.get("allocated"), device.get("reserved"),
                     device.get("allocated_peak")))
    elapsed = time.perf_counter() - started
    mib = lambda b: None if b is None else round(b / 2**20, 1)
    out = {"runs": args.runs, "seconds": round(elapsed, 1),
           "ms_per_run": round(1e3 * elapsed / args.runs, 1)}
    marks = sorted({0, 9, 99, args.runs // 2, args.runs - 1} & set(range(args.runs)))
    out["at_run"] = {str(i + 1): {"cache_mib": mib(rows[i][0]), "allocated_mib": mib(rows[i][1]),
                                  "reserved_mib": mib(rows[i][2]),
                                  "allocated_peak_mib": mib(rows[i][3])} for i in marks}
    ok = True
    if rows[0][1] is None:
        out["device"] = "no CUDA figures (CPU run): only the cache was followed"
        out["cache_mib_max"] = mib(max(r[0] for r in rows))
        return {**out, "ok": True}, True
    # What the device holds beyond the cache's values (library workspaces, graph buffers):
    # flat means no leak, whatever the cache does within its budget.
    untracked = [r[1] - r[0] for r in rows]
    settled = untracked[min(9, len(untracked) - 1):]
    out["untracked_mib"] = {"first": mib(untracked[0]), "min_after_10": mib(min(settled)),
                            "max_after_10": mib(max(settled)), "last": mib(untracked[-1])}
    out["untracked_flat"] = max(settled) - min(settled) <= 32 * 2**20
    ok &= out["untracked_flat"]
    reserved = [r[2] for r in rows]
    tail = reserved[len(reserved) // 2:]
    out["reserved_mib"] = {"first": mib(reserved[0]), "max": mib(max(reserved)),
                           "second_half_min": mib(min(tail)), "second_half_max": mib(max(tail))}
    out["reserved_flat_in_second_half"] = max(tail) - min(tail) <= 64 * 2**20
    ok &= out["reserved_flat_in_second_half"]
    if args.budget:
        worst = max(r[1] for r in rows)
        out["budget_mib"] = mib(args.budget)
        out["allocated_max_over_budget"] = round(worst / args.budget, 4)
        out["cache_max_over_budget"] = round(max(r[0] for r in rows) / args.budget, 4)
        out["within_budget_5pct"] = worst <= 1.05 * args.budget
        ok &= out["within_budget_5pct"]
    return {**out, "ok": ok}, ok


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("check", choices=["latency", "memory"])
    ap.add_argument("url")
    ap.add_argument("--workflow", required=True)
    ap.add_argument("--set", action="append", help="node.input=value (JSON or text)")
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--budget", type=int, help="the server's --cache-budget in bytes")
    ap.add_argument("--seed-input", default="sample.seed")
    ap.add_argument("--prompt-input", default="positive.text")
    ap.add_argument("--sampler-node", default="sample")
    ap.add_argument("--decode-node", default="decode")
    args = ap.parse_args()
    result, ok = (latency if args.check == "latency" else memory)(args)
    print(json.dumps(result))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
