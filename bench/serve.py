"""Serving under load on loopback: `genlab serve` with a demo-sized GPT, hammered by concurrent clients.

Three measurements, one server process (started here with the real CLI, so what is measured is what users run):

1. time to first streamed token: sequential streaming completions of 200 tokens; the time from sending the
   request to the first SSE chunk with text (bar: p50 < 100 ms);
2. one client alone for D seconds, sending streamed completions back to back: the tokens/s one client gets;
3. load: N clients (default 32) for D seconds (default 60), each doing the same at once and honouring
   Retry-After when refused. Recorded: status counts (bar: zero 5xx; every refusal a 429/503 with a message),
   time to first token of every answered request (bar: p95 < 250 ms), p50/p95 latency, tokens/s served (bar:
   at least 4x what the one client got alone: the GPT's completions decode together, genlab.serve.batching),
   and the server's RSS before and after (bar: no growth beyond allocator noise).

The GPT has the default GPTConfig (the demo size: 4 layers, 128 wide, context 128) over a 96-character
alphabet, with untrained weights unless --model names a trained run: serving cost does not depend on what the
weights say. Run: `.venv/bin/python bench/serve.py` (about 90 s); `--duration 5` for a quick check.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import socket
import statistics
import string
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import torch

ROOT = Path(__file__).resolve().parent.parent


def demo_gpt(folder: Path) -> Path:
    from genlab.data.tokenizers import CharTokenizer
    from genlab.models.lm.gpt import GPT, GPTConfig

    tokenizer = CharTokenizer.fit(string.printable)
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=tokenizer.vocab_size, chars=tokenizer.chars))
    model.tokenizer = tokenizer
    model.save_pretrained(folder / "model")
    return folder


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


def first_token_ms(url: str, prompts: int) -> tuple[list[float], float]:
    times, tokens, seconds = [], 0, 0.0
    with httpx.Client(base_url=url, timeout=60) as http:
        for i in range(prompts):
            body = {"model": "gpt", "prompt": "ROMEO:", "max_tokens": 200, "stream": True, "seed": i,
                    "stream_options": {"include_usage": True}}
            start = time.perf_counter()
            first = None
            with http.stream("POST", "/v1/completions", json=body) as r:
                for line in r.iter_lines():
                    if not line.startswith("data: ") or line == "data: [DONE]":
                        continue
                    chunk = json.loads(line[6:])
                    if first is None and any(c["text"] for c in chunk["choices"]):
                        first = (time.perf_counter() - start) * 1000
                    if chunk.get("usage"):
                        tokens += chunk["usage"]["completion_tokens"]
            seconds += time.perf_counter() - start
            times.append(first)
    return times, tokens / seconds


async def load(url: str, clients: int, duration: float, max_tokens: int) -> dict:
    records: list[tuple[int, float, int, str, float]] = []  # status, seconds, tokens, error message, first token s
    stop_at = time.monotonic() + duration

    async def client(http: httpx.AsyncClient, k: int) -> None:
        rng = random.Random(k)
        while time.monotonic() < stop_at:
            body = {"model": "gpt", "prompt": rng.choice(["ROMEO:", "JULIET:", "First Citizen:\n", ""]),
                    "max_tokens": max_tokens, "temperature": 0.8, "seed": rng.randrange(2**31), "stream": True,
                    "stream_options": {"include_usage": True}}
            start = time.monotonic()
            first, tokens, status, message = float("nan"), 0, 0, ""
            try:
                async with http.stream("POST", "/v1/completions", json=body) as r:
                    status = r.status_code
                    if status != 200:
                        data = json.loads(await r.aread()) if r.headers.get("content-type", "").startswith(
                            "application/json") else {}
                        message = data.get("error", {}).get("message", "")
                    else:
                        async for line in r.aiter_lines():
                            if not line.startswith("data: ") or line == "data: [DONE]":
                                continue
                            chunk = json.loads(line[6:])
                            if first != first and any(c["text"] for c in chunk["choices"]):
                                first = time.monotonic() - start
                            if chunk.get("usage"):
                                tokens = chunk["usage"]["completion_tokens"]
                            if "error" in chunk:
                                status, message = 500, chunk["error"]["message"]
            except httpx.HTTPError as error:
                records.append((0, time.monotonic() - start, 0, f"{type(error).__name__}: {error}", first))
                continue
            records.append((status, time.monotonic() - start, tokens, message, first))
            if status != 200:
                await asyncio.sleep(float(r.headers.get("retry-after", 1)))

    limits = httpx.Limits(max_connections=clients + 4, max_keepalive_connections=clients + 4)
    async with httpx.AsyncClient(base_url=url, timeout=300, limits=limits) as http:
        start = time.monotonic()
        await asyncio.gather(*(client(http, k) for k in range(clients)))
        wall = time.monotonic() - start
    ok = [r for r in records if r[0] == 200]
    refused = [r for r in records if r[0] in (429, 503)]
    statuses: dict[str, int] = {}
    for r in records:
        statuses[str(r[0])] = statuses.get(str(r[0]), 0) + 1
    return {"wall_s": round(wall, 1), "requests": len(records), "status_counts": statuses,
            "server_errors_5xx": sum(1 for r in records if r[0] >= 500 and r[0] != 503),
            "connection_errors": sum(1 for r in records if r[0] == 0),
            "refusals_429_503": len(refused), "refusals_without_message": sum(1 for r in refused if not r[3]),
            "other_4xx": sum(1 for r in records if 400 <= r[0] < 500 and r[0] != 429),
            "latency_p50_s": round(percentile([r[1] for r in ok], 0.5), 3),
            "latency_p95_s": round(percentile([r[1] for r in ok], 0.95), 3),
            "first_token_ms_p50": round(1000 * percentile([r[4] for r in ok if r[4] == r[4]], 0.5), 1),
            "first_token_ms_p95": round(1000 * percentile([r[4] for r in ok if r[4] == r[4]], 0.95), 1),
            "tokens_per_s": round(sum(r[2] for r in ok) / wall, 1), "completed": len(ok)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of load")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=64, help="tokens per completion under load")
    parser.add_argument("--first-token-runs", type=int, default=20)
    parser.add_argument("--concurrency", type=int, default=0, help="the server's --concurrency (0: one per core)")
    parser.add_argument("--queue", type=int, default=16, help="the server's --queue")
    parser.add_argument("--max-batch", type=int, default=64, help="the server's --max-batch")
    parser.add_argument("--alone", type=float, default=None, help="one client's seconds (--duration)")
    parser.add_argument("--model", default=None, help="a trained GPT run folder (default: a demo-sized untrained GPT)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "serve.json"))
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        model = Path(args.model) if args.model else demo_gpt(Path(tmp) / "gpt")
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        sock.close()
        command = [sys.executable, "-m", "genlab.cli", "serve", f"gpt={model}", "--port", str(port),
                   "--concurrency", str(args.concurrency), "--queue", str(args.queue),
                   "--max-batch", str(args.max_batch)]
        server = subprocess.Popen(command, cwd=ROOT)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 600  # a busy machine may take minutes to import torch
            while True:
                try:
                    limits = httpx.get(url + "/health").json()["limits"]
                    break
                except httpx.HTTPError:
                    if server.poll() is not None or time.monotonic() > deadline:
                        raise SystemExit("the server did not start") from None
                    time.sleep(0.2)
            first_token_ms(url, 3)  # warm-up
            ttft, stream_tokens_per_s = first_token_ms(url, args.first_token_runs)
            alone = asyncio.run(load(url, 1, args.alone or args.duration, args.max_tokens))
            rss_before = rss_mb(server.pid)
            print(f"time to first token: p50 {statistics.median(ttft):.1f} ms; single stream {stream_tokens_per_s:.0f} "
                  f"tokens/s; one client alone {alone['tokens_per_s']:.0f} tokens/s; server RSS {rss_before:.0f} MB; "
                  f"load: {args.clients} clients for {args.duration:g} s ...", flush=True)
            result = asyncio.run(load(url, args.clients, args.duration, args.max_tokens))
            rss_after = rss_mb(server.pid)
            health = httpx.get(url + "/health").json()
        finally:
            server.terminate()
            server.wait(30)
        params = None
        if not args.model:
            from genlab import load as load_model

            params = load_model(model).num_parameters()

    genlab = {
        "first_token_ms_p50": round(statistics.median(ttft), 1),
        "first_token_ms_p95": round(percentile(ttft, 0.95), 1),
        "first_token_ms_max": round(max(ttft), 1),
        "single_stream_tokens_per_s": round(stream_tokens_per_s, 1),
        "one_client_alone": alone,
        "load": result,
        "rss_mb_before": round(rss_before, 1),
        "rss_mb_after": round(rss_after, 1),
        "rss_growth_mb": round(rss_after - rss_before, 1),
        "server_counts": health["counts"],
    }
    genlab["load_over_alone"] = round(result["tokens_per_s"] / max(alone["tokens_per_s"], 1e-9), 2)
    bars = {"zero_5xx": result["server_errors_5xx"] == 0 and result["connection_errors"] == 0,
            "refusals_are_429_503_with_message": result["other_4xx"] == 0 and result["refusals_without_message"] == 0,
            "first_token_under_100_ms": genlab["first_token_ms_p50"] < 100,
            "load_tokens_per_s_at_least_4x_alone": genlab["load_over_alone"] >= 4,
            "load_first_token_p95_under_250_ms": result["first_token_ms_p95"] < 250,
            "memory_flat": genlab["rss_growth_mb"] < max(20.0, 0.05 * rss_before)}
    out = {"machine": {"cores": os.cpu_count(), "torch": torch.__version__, "python": platform.python_version(),
                       "platform": platform.platform()},
           "budget": {"load_seconds": args.duration, "clients": args.clients, "max_tokens_per_request": args.max_tokens,
                      "first_token_runs": args.first_token_runs, "server_limits": limits},
           "model": {"family": "gpt", "weights": args.model or "untrained, default GPTConfig (demo size)",
                     "parameters": params},
           "genlab": genlab, "bars": bars,
           "anchor": {"name": "issue 8 and 24 bars: one client alone on the same server, in the same run",
                      "first_token_ms_p50_max": 100, "load_first_token_ms_p95_max": 250, "load_over_alone_min": 4,
                      "server_errors_5xx": 0},
           "command": "python bench/serve.py " + " ".join(sys.argv[1:])}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps({"genlab": genlab, "bars": bars}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
