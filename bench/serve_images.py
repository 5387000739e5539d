"""Image requests under load on loopback: `genlab serve` with a class-conditional diffusion model, hammered by
concurrent clients, with and without batched sampling (genlab.serve.batching.ImageBatcher).

Two server processes, started here with the real CLI (what users run), one after the other:

1. batched (`--max-batch 64`): one client alone for D seconds, sending requests of one image back to back (the
   images/s one client gets and its latency); then N clients (default 16) at once for D seconds, each doing the
   same and honouring Retry-After when refused;
2. unbatched (`--max-batch 1`): the same N clients served as before batching, each request sampled alone on the
   worker pool (one thread per core, one request each).

Recorded: status counts (zero 5xx), images/s, p50/p95 latency, the widest batch, and the server's RSS before
and after the load. Each image is a DPM-Solver++ sample of `--steps` steps with classifier-free guidance (two
network rows per image). The model has the default DiffusionConfig (widths 16-64, attention at the two coarse
levels) at Fashion-MNIST's 28 x 28 grey, with untrained weights unless --model names a trained run: serving cost
does not depend on what the weights say. Run: `.venv/bin/python bench/serve_images.py` (about 3 minutes);
`--duration 3` for a quick check.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import torch

ROOT = Path(__file__).resolve().parent.parent
CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
sys.path.insert(0, str(ROOT / "bench"))
from serve import percentile, rss_mb  # noqa: E402  (bench/serve.py: the text benchmark's helpers)


def demo_diffusion(folder: Path) -> Path:
    from genlab.models.diffusion import Diffusion, DiffusionConfig

    torch.manual_seed(0)
    model = Diffusion(DiffusionConfig(channels=1, image_size=(28, 28), condition="class", num_classes=10,
                                      class_names=CLASSES))
    model.save_pretrained(folder / "model")
    return folder


async def load(url: str, clients: int, duration: float, steps: int) -> dict:
    records: list[tuple[int, float, int, str]] = []  # status, seconds, images, error message
    stop_at = time.monotonic() + duration

    async def client(http: httpx.AsyncClient, k: int) -> None:
        rng = random.Random(k)
        while time.monotonic() < stop_at:
            body = {"model": "dm", "label": rng.randrange(10), "n": 1, "steps": steps, "sampler": "dpm++",
                    "seed": rng.randrange(2**31)}
            start = time.monotonic()
            try:
                r = await http.post("/v1/images/generations", json=body)
            except httpx.HTTPError as error:
                records.append((0, time.monotonic() - start, 0, f"{type(error).__name__}: {error}"))
                continue
            message = r.json().get("error", {}).get("message", "") if r.status_code != 200 else ""
            records.append((r.status_code, time.monotonic() - start,
                            len(r.json()["data"]) if r.status_code == 200 else 0, message))
            if r.status_code != 200:
                await asyncio.sleep(float(r.headers.get("retry-after", 1)))

    limits = httpx.Limits(max_connections=clients + 4, max_keepalive_connections=clients + 4)
    async with httpx.AsyncClient(base_url=url, timeout=300, limits=limits) as http:
        start = time.monotonic()
        await asyncio.gather(*(client(http, k) for k in range(clients)))
        wall = time.monotonic() - start
    ok = [r for r in records if r[0] == 200]
    statuses: dict[str, int] = {}
    for r in records:
        statuses[str(r[0])] = statuses.get(str(r[0]), 0) + 1
    refused = [r for r in records if r[0] in (429, 503)]
    return {"wall_s": round(wall, 1), "requests": len(records), "status_counts": statuses,
            "server_errors_5xx": sum(1 for r in records if r[0] >= 500 and r[0] != 503),
            "connection_errors": sum(1 for r in records if r[0] == 0),
            "refusals_without_message": sum(1 for r in refused if not r[3]),
            "latency_p50_s": round(percentile([r[1] for r in ok], 0.5), 3),
            "latency_p95_s": round(percentile([r[1] for r in ok], 0.95), 3),
            "images_per_s": round(sum(r[2] for r in ok) / wall, 2), "completed": len(ok)}


def serving(model: Path, args, max_batch: int):
    """A started `genlab serve` process and its URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    command = [sys.executable, "-m", "genlab.cli", "serve", f"dm={model}", "--port", str(port),
               "--queue", str(args.queue), "--max-batch", str(max_batch), "--max-n", "1"]
    server = subprocess.Popen(command, cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 600  # a busy machine may take minutes to import torch
    while True:
        try:
            httpx.get(url + "/health")
            return server, url
        except httpx.HTTPError:
            if server.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("the server did not start") from None
            time.sleep(0.2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=45.0, help="seconds of each load")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--steps", type=int, default=20, help="DPM-Solver++ steps per image")
    parser.add_argument("--queue", type=int, default=64, help="the servers' --queue")
    parser.add_argument("--model", default=None, help="a trained diffusion run (default: an untrained default one)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "serve_images.json"))
    args = parser.parse_args()

    results: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        model = Path(args.model) if args.model else demo_diffusion(Path(tmp) / "dm")
        for name, max_batch in (("batched", 64), ("unbatched", 1)):
            server, url = serving(model, args, max_batch)
            try:
                asyncio.run(load(url, 1, 2, args.steps))  # warm-up
                part: dict = {"max_batch": max_batch}
                if name == "batched":
                    part["one_client_alone"] = asyncio.run(load(url, 1, args.duration, args.steps))
                rss_before = rss_mb(server.pid)
                part["load"] = asyncio.run(load(url, args.clients, args.duration, args.steps))
                part |= {"rss_mb_before": round(rss_before, 1), "rss_mb_after": round(rss_mb(server.pid), 1),
                         "health": httpx.get(url + "/health").json()}
                print(name, json.dumps({k: v for k, v in part.items() if k != "health"}), flush=True)
            finally:
                server.terminate()
                server.wait(30)
            results[name] = part
        from genlab import load as load_model

        params = load_model(model).num_parameters()

    batched, unbatched = results["batched"], results["unbatched"]
    ratios = {"load_over_one_client_alone": round(batched["load"]["images_per_s"]
                                                  / max(batched["one_client_alone"]["images_per_s"], 1e-9), 2),
              "batched_over_unbatched": round(batched["load"]["images_per_s"]
                                              / max(unbatched["load"]["images_per_s"], 1e-9), 2)}
    out = {"machine": {"cores": os.cpu_count(), "torch": torch.__version__, "python": platform.python_version(),
                       "platform": platform.platform()},
           "budget": {"load_seconds": args.duration, "clients": args.clients, "steps": args.steps,
                      "sampler": "dpm++", "guidance": "the model's default (3)"},
           "model": {"family": "diffusion", "weights": args.model or "untrained, default DiffusionConfig, 28x28 grey",
                     "parameters": params},
           "genlab": results, "ratios": ratios,
           "zero_5xx": all(r["load"]["server_errors_5xx"] == 0 and r["load"]["connection_errors"] == 0
                           for r in results.values()),
           "anchor": "the same server without image batching (--max-batch 1: the worker pool, one request per "
                     "thread, as before issue 24), and one client alone, in the same run",
           "command": "python bench/serve_images.py " + " ".join(sys.argv[1:])}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps({"ratios": ratios, "zero_5xx": out["zero_5xx"]}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
