#!/usr/bin/env python3
"""ComfyUI and `weft serve` side by side, over the same HTTP/WebSocket API.

Both servers must be running (scripts/compare_comfyui.sh starts them). The same ComfyUI
API-format txt2img prompt (CheckpointLoaderSimple, 2x CLIPTextEncode, EmptyLatentImage
64x64, KSampler euler/normal 10 steps cfg 7, VAEDecode, SaveImage) goes to both through
POST /prompt, and ComfyUI's /ws?clientId= reports its progress. The servers take turns:
each measure runs on ComfyUI, then on weft, and so on. Measured: the reply to an invalid
prompt (node_errors) and to a valid one, the cold run (the first after start), a fully
cached rerun, a rerun with only SaveImage's prefix changed, a rerun with a new seed, node
times from the `executing` messages, WebSocket bytes per prompt, peak RSS (VmHWM). Then a
chain of 100 trivial nodes: ComfyUI's StringConcatenate x98 -> PreviewAny through POST
/prompt, weft's Int -> AddInt x98 -> ShowInt through POST /api/runs and weft's /ws.

Standard library only.

    scripts/compare_comfyui.py --comfy-url http://127.0.0.1:8188 --weft-url http://127.0.0.1:8189 \
        [--comfy-pid PID --weft-pid PID] [--ckpt sd15.safetensors] [--repeat 5] [--json OUT]
"""

import argparse
import base64
import json
import os
import socket
import statistics
import struct
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid


class WebSocket:
    """A minimal RFC 6455 client: reads text and binary frames, answers pings, and counts
    the bytes of every frame received (headers included)."""

    def __init__(self, url):
        u = urllib.parse.urlsplit(url)
        self.sock = socket.create_connection((u.hostname, u.port or 80))
        key = base64.b64encode(os.urandom(16)).decode()
        path = u.path + ("?" + u.query if u.query else "")
        request = (
            f"GET {path} HTTP/1.1\r\nHost: {u.hostname}:{u.port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        self.sock.sendall(request.encode())
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError("WebSocket handshake: connection closed")
            self.buf += chunk
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        if b" 101 " not in head.split(b"\r\n", 1)[0]:
            raise ConnectionError(f"WebSocket handshake refused: {head[:200]!r}")
        self.bytes = 0

    def _read(self, n):
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("WebSocket closed")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def _send(self, opcode, payload):
        mask = os.urandom(4)
        head = bytes([0x80 | opcode])
        n = len(payload)
        if n < 126:
            head += bytes([0x80 | n])
        elif n < 65536:
            head += bytes([0x80 | 126]) + struct.pack(">H", n)
        else:
            head += bytes([0x80 | 127]) + struct.pack(">Q", n)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(head + mask + masked)

    def recv(self, timeout):
        """The next data message as (is_text, payload bytes); None after `timeout` seconds."""
        self.sock.settimeout(timeout)
        try:
            data, text = b"", None
            while True:
                b0, b1 = self._read(2)
                n = b1 & 0x7F
                size = 2
                if n == 126:
                    (n,) = struct.unpack(">H", self._read(2))
                    size += 2
                elif n == 127:
                    (n,) = struct.unpack(">Q", self._read(8))
                    size += 8
                if b1 & 0x80:
                    mask = self._read(4)
                    size += 4
                payload = self._read(n)
                if b1 & 0x80:
                    payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
                opcode = b0 & 0x0F
                if opcode == 0x9:
                    self._send(0xA, payload)
                    continue
                if opcode == 0x8:
                    raise ConnectionError("WebSocket closed by the server")
                if opcode == 0xA:
                    continue
                self.bytes += size + n
                if opcode in (0x1, 0x2):
                    text = opcode == 0x1
                data += payload
                if b0 & 0x80:
                    return text, data
        except socket.timeout:
            return None


def http(method, url, body=None):
    """(status, parsed JSON body, seconds) of one request."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(req) as reply:
            status, raw = reply.status, reply.read()
    except urllib.error.HTTPError as e:
        status, raw = e.code, e.read()
    took = time.perf_counter() - started
    try:
        parsed = json.loads(raw)
    except ValueError:
        parsed = raw.decode(errors="replace")
    return status, parsed, took


def txt2img(ckpt, seed=1, prefix="cmp"):
    return {
        "3": {
            "class_type": "KSampler",
            "inputs": {
                "seed": seed, "steps": 10, "cfg": 7.0, "sampler_name": "euler",
                "scheduler": "normal", "denoise": 1.0, "model": ["4", 0],
                "positive": ["6", 0], "negative": ["7", 0], "latent_image": ["5", 0],
            },
        },
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a red circle", "clip": ["4", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["4", 1]}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": prefix, "images": ["8", 0]}},
    }


def comfy_chain(n, root="x", last="y"):
    """ComfyUI: StringConcatenate x (n-2) -> PreviewAny (n nodes with the root's string)."""
    prompt = {}
    for i in range(1, n - 1):
        a = root if i == 1 else [str(i - 1), 0]
        b = last if i == n - 2 else "y"
        prompt[str(i)] = {
            "class_type": "StringConcatenate",
            "inputs": {"string_a": a, "string_b": b, "delimiter": ""},
        }
    prompt[str(n - 1)] = {"class_type": "PreviewAny", "inputs": {"source": [str(n - 2), 0]}}
    return prompt


def weft_chain(n, root=0, last=1):
    """weft: Int -> AddInt x (n-2) -> ShowInt, as tests/support's chain_yaml."""
    nodes = {"n0": {"type": "Int", "value": root}}
    for i in range(1, n - 1):
        a = "$n0.value" if i == 1 else f"$n{i - 1}.sum"
        nodes[f"n{i}"] = {"type": "AddInt", "a": a, "b": last if i == n - 2 else 1}
    nodes["show"] = {"type": "ShowInt", "value": f"$n{n - 2}.sum"}
    return {"weft": 1, "nodes": nodes}


class Server:
    def __init__(self, name, url, pid):
        self.name, self.url, self.pid = name, url.rstrip("/"), pid
        self.client_id = str(uuid.uuid4())
        ws_url = self.url.replace("http", "ws", 1)
        self.ws = WebSocket(f"{ws_url}/ws?clientId={self.client_id}")
        self.drain()

    def drain(self, quiet=0.05):
        while self.ws.recv(quiet) is not None:
            pass

    def post(self, prompt):
        return http("POST", f"{self.url}/prompt", {"prompt": prompt, "client_id": self.client_id})

    def run(self, prompt, timeout=600):
        """POST the prompt and follow it to `executing` with node null. Times are seconds
        from the start of the POST."""
        self.drain()
        self.ws.bytes = 0
        t0 = time.perf_counter()
        status, body, post_s = self.post(prompt)
        if status != 200:
            raise RuntimeError(f"{self.name}: POST /prompt answered {status}: {body}")
        pid = body["prompt_id"]
        out = {"post_s": post_s, "executing": [], "progress": [], "cached": None}
        while True:
            msg = self.ws.recv(timeout)
            if msg is None:
                raise TimeoutError(f"{self.name}: no message for {timeout} s")
            now = time.perf_counter() - t0
            is_text, payload = msg
            if not is_text:
                continue
            m = json.loads(payload)
            kind, data = m.get("type"), m.get("data") or {}
            if data.get("prompt_id") not in (None, pid):
                continue
            if kind == "execution_cached":
                out["cached"] = data.get("nodes")
            elif kind == "executing" and data.get("node") is not None:
                out["executing"].append((data["node"], now))
            elif kind == "progress":
                out["progress"].append(now)
            elif kind == "execution_success":
                out["total_s"] = now
            elif kind in ("execution_error", "execution_interrupted"):
                raise RuntimeError(f"{self.name}: {kind}: {data}")
            elif kind == "executing" and data.get("node") is None and "total_s" in out:
                break
        out["ws_bytes"] = self.ws.bytes
        marks = out["executing"] + [("end", out["total_s"])]
        out["nodes_s"] = {node: marks[i + 1][1] - t for i, (node, t) in enumerate(marks[:-1])}
        p = out["progress"]
        out["progress_span_s"] = p[-1] - p[0] if len(p) > 1 else None
        return out

    def peak_rss_bytes(self):
        if not self.pid:
            return None
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
        return None


class WeftRuns:
    """weft's own API: POST /api/runs followed on weft's /ws to `run_finished`."""

    def __init__(self, url):
        self.url = url.rstrip("/")
        self.ws = WebSocket(self.url.replace("http", "ws", 1) + "/ws")
        while self.ws.recv(0.05) is not None:
            pass

    def run(self, doc, timeout=60):
        while self.ws.recv(0.01) is not None:
            pass
        self.ws.bytes = 0
        t0 = time.perf_counter()
        status, body, post_s = http("POST", f"{self.url}/api/runs", {"workflow": doc})
        if status != 202:
            raise RuntimeError(f"weft: POST /api/runs answered {status}: {body}")
        run = body["id"]
        while True:
            msg = self.ws.recv(timeout)
            if msg is None:
                raise TimeoutError("weft: no run_finished")
            m = json.loads(msg[1])
            if m.get("event") == "run_finished" and m.get("run") == run:
                if m.get("status") != "succeeded":
                    raise RuntimeError(f"weft: run {run} {m}")
                return {"post_s": post_s, "total_s": time.perf_counter() - t0, "ws_bytes": self.ws.bytes}


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def read_through(path):
    """Reads a file to its end, leaving its pages in the page cache."""
    with open(path, "rb") as f:
        while f.read(1 << 24):
            pass


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--comfy-url", required=True)
    ap.add_argument("--weft-url", required=True)
    ap.add_argument("--comfy-pid", type=int)
    ap.add_argument("--weft-pid", type=int)
    ap.add_argument("--ckpt", default="sd15.safetensors", help="ckpt_name both servers resolve")
    ap.add_argument("--repeat", type=int, default=5, help="runs per measure (medians)")
    ap.add_argument("--seeds", type=int, default=3, help="new-seed reruns per server")
    ap.add_argument("--chain", type=int, default=100, help="nodes in the trivial chain")
    ap.add_argument("--json", help="write every raw figure to this file")
    ap.add_argument(
        "--weft-first",
        action="store_true",
        help="weft takes its cold run (and each turn) before ComfyUI: on this VM whichever "
        "loads second may meet a different memory state, so run both orders",
    )
    ap.add_argument(
        "--ckpt-file",
        help="the checkpoint's path: read through before each server's cold run, so both load "
        "it from the page cache (this VM's kernel pages out file pages untouched for about a "
        "minute, and whichever server loads second otherwise reads the disk)",
    )
    args = ap.parse_args()

    comfy = Server("ComfyUI", args.comfy_url, args.comfy_pid)
    weft = Server("weft", args.weft_url, args.weft_pid)
    both = (weft, comfy) if args.weft_first else (comfy, weft)
    raw = {s.name: {} for s in both}

    def record(measure, server, value):
        raw[server.name].setdefault(measure, []).append(value)

    # Validation: an unknown sampler is a node error on both.
    bad = txt2img(args.ckpt)
    bad["3"]["inputs"]["sampler_name"] = "no_such_sampler"
    for _ in range(args.repeat):
        for s in both:
            status, body, took = s.post(bad)
            assert status == 400 and "3" in body.get("node_errors", {}), (s.name, status, body)
            record("invalid_post_s", s, took)

    # The cold run (the first after start), then reruns.
    for s in both:
        if args.ckpt_file:
            read_through(args.ckpt_file)
        record("cold", s, s.run(txt2img(args.ckpt)))
    for _ in range(args.repeat):
        for s in both:
            record("cached", s, s.run(txt2img(args.ckpt)))
    for k in range(args.repeat):
        for s in both:
            record("prefix", s, s.run(txt2img(args.ckpt, prefix=f"cmp_{k}")))
    for k in range(args.seeds):
        for s in both:
            record("seed", s, s.run(txt2img(args.ckpt, seed=1000 + k, prefix=f"cmp_{args.repeat - 1}")))
    for s in both:
        record("peak_rss_bytes", s, s.peak_rss_bytes())

    # The chain of trivial nodes: ComfyUI through POST /prompt, weft through /api/runs.
    n = args.chain
    runs = WeftRuns(args.weft_url)
    chain = {
        "ComfyUI": lambda root, last: comfy.run(comfy_chain(n, f"r{root}", f"l{last}")),
        "weft": lambda root, last: runs.run(weft_chain(n, root, last)),
    }
    for k in range(args.repeat):
        for s in both:
            record("chain_cold", s, chain[s.name](k + 1, 0))
    for _ in range(args.repeat):
        for s in both:
            record("chain_cached", s, chain[s.name](args.repeat, 0))
    for k in range(args.repeat):
        for s in both:
            record("chain_last", s, chain[s.name](args.repeat, k + 1))

    def fig(name, measure, get, unit="ms", scale=1e3):
        vals = [median([get(r) for r in raw[s.name].get(measure, [])]) for s in (comfy, weft)]
        return (name, vals, unit, scale)

    sd = {"3": "KSampler", "4": "CheckpointLoaderSimple", "8": "VAEDecode"}
    rows = [
        fig("invalid prompt: POST reply (node_errors)", "invalid_post_s", lambda v: v),
        fig("valid prompt: POST reply (cached reruns)", "cached", lambda r: r["post_s"]),
        fig("cold run: POST -> execution_success", "cold", lambda r: r["total_s"], "s", 1),
    ]
    for node, label in sd.items():
        rows.append(fig(f"  cold: {label} ({node})", "cold", lambda r, n=node: r["nodes_s"].get(n), "s", 1))
    rows += [
        fig("  cold: first -> last progress (9 steps)", "cold", lambda r: r["progress_span_s"], "s", 1),
        fig("  cold: WebSocket bytes", "cold", lambda r: r["ws_bytes"], "B", 1),
        fig("fully cached rerun", "cached", lambda r: r["total_s"]),
        fig("  cached: WebSocket bytes", "cached", lambda r: r["ws_bytes"], "B", 1),
        fig("rerun, SaveImage prefix changed", "prefix", lambda r: r["total_s"]),
        fig("  prefix: WebSocket bytes", "prefix", lambda r: r["ws_bytes"], "B", 1),
        fig("rerun, new seed (sampler + decode)", "seed", lambda r: r["total_s"], "s", 1),
        fig("  seed: KSampler (3)", "seed", lambda r: r["nodes_s"].get("3"), "s", 1),
        fig("  seed: first -> last progress (9 steps)", "seed", lambda r: r["progress_span_s"], "s", 1),
        fig("  seed: WebSocket bytes", "seed", lambda r: r["ws_bytes"], "B", 1),
        fig("peak RSS (VmHWM)", "peak_rss_bytes", lambda v: v, "GiB", 1 / 2**30),
        fig(f"chain {n}: cold (every node runs)", "chain_cold", lambda r: r["total_s"]),
        fig(f"chain {n}: fully cached", "chain_cached", lambda r: r["total_s"]),
        fig(f"chain {n}: last node changed", "chain_last", lambda r: r["total_s"]),
        fig(f"chain {n}: POST reply (cached)", "chain_cached", lambda r: r["post_s"]),
        fig(f"chain {n}: WebSocket bytes (cold)", "chain_cold", lambda r: r["ws_bytes"], "B", 1),
    ]
    print(f"medians of {args.repeat} (new seed: {args.seeds}); cold: one run each, "
          f"{' before '.join(s.name for s in both)}; chain: ComfyUI "
          f"POST /prompt + /ws, weft POST /api/runs + /ws")
    print(f"| measure | ComfyUI | weft | weft/ComfyUI |\n| --- | --- | --- | --- |")
    for name, (c, w), unit, scale in rows:
        def show(v):
            if v is None:
                return "-"
            v = v * scale
            return f"{v:.0f} {unit}" if unit == "B" else f"{v:.3g} {unit}"
        ratio = f"{w / c:.3g}" if c and w is not None else "-"
        print(f"| {name} | {show(c)} | {show(w)} | {ratio} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(raw, f, indent=1)


if __name__ == "__main__":
    main()
