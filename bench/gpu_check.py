"""The prepared GPU check (issue 24): a few minutes on a lent GPU machine that exercise what a CPU cannot.

    python bench/gpu_check.py --out $OUT/gpu_check.json        # on the GPU machine (the device tool's run)
    python bench/gpu_check.py --cpu --steps 3 --out /tmp/gpu_check_smoke.json   # the same path on a CPU

1. Flash attention: whether PyTorch's flash kernel is enabled and runs a bf16 causal attention of the GPT's shape
   (forced with `sdpa_kernel(FLASH_ATTENTION)`), and its agreement with the math kernel.
2. The GPT on token files (`genlab data prepare` of the repository's own docs and code) with bf16 mixed
   precision, on one device and, where there are two or more, on two with DDP (NCCL): tokens/s of each, the loss
   at the end, and whether the two-device run's first logged losses follow the one-device run's.
3. Diffusion on digits with bf16 mixed precision on one device: steps/s and a finite loss.

Each part records its error instead of stopping the script, so one run tells everything; figures go to --out.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import traceback
from pathlib import Path

import torch
from common import ROOT, machine, write


def attention(device: str) -> dict:
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    out: dict = {"flash_enabled": bool(torch.backends.cuda.flash_sdp_enabled()) if device == "cuda" else None}
    q, k, v = (torch.randn(8, 8, 256, 64, device=device, dtype=torch.bfloat16) for _ in range(3))
    reference = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), is_causal=True)
    backend = SDPBackend.FLASH_ATTENTION if device == "cuda" else SDPBackend.MATH
    with sdpa_kernel(backend):
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    out |= {"kernel": backend.name, "max_abs_error_vs_fp32": round(float((y.float() - reference).abs().max()), 4)}
    return out


def corpus(work: Path) -> Path:
    """The repository's docs and Python code as one text file (a few MB), prepared into token files."""
    from genlab.data.tokens import prepare_text

    text = work / "corpus.txt"
    parts = [p.read_text() for pattern in ("docs/*.md", "genlab/**/*.py", "bench/*.py", "tests/*.py")
             for p in sorted(ROOT.glob(pattern))]
    text.write_text("\n".join(parts) * 4)
    prepare_text(text, work / "tokens", tokenizer="bpe", vocab_size=4096)
    return work / "tokens"


def train(family: str, data: str, run: Path, devices: int, args, **model) -> dict:
    """`genlab train` as a user runs it, in its own process: Lightning's DDP starts the second process by running
    the same command again, which must be the training command, not this script."""
    options = {"max-steps": args.steps, "accelerator": args.accelerator, "devices": devices,
               "strategy": "ddp" if devices > 1 else "auto", "precision": args.precision,
               "batch-size": args.batch_size, "progress": "false", "sample-every": 10**9, "val-every": 10**9,
               "log-every": max(1, min(10, args.steps - 1)),
               **{f"model.{k.replace('_', '-')}": v for k, v in model.items()}}
    command = [sys.executable, "-m", "genlab.cli", "train", family, "--data", data, "--out", str(run),
               *[x for k, v in options.items() for x in (f"--{k}", str(v))]]
    start = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(done.stderr[-3000:])
    seconds = time.perf_counter() - start
    losses = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    losses = [(r["step"], r["train/loss"]) for r in losses if "train/loss" in r]
    return {"devices": devices, "steps": args.steps, "seconds (process start included)": round(seconds, 1),
            "steps_per_s": round(args.steps / seconds, 2), "losses": losses[:5] + losses[-1:]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--cpu", action="store_true", help="run the same path on a CPU (a smoke test)")
    parser.add_argument("--work", default="/tmp/genlab-gpu-check")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "gpu_check.json"))
    args = parser.parse_args()
    args.accelerator = "cpu" if args.cpu else "gpu"
    args.precision = "32-true" if args.cpu else "bf16-mixed"
    gpus = 0 if args.cpu else torch.cuda.device_count()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    results: dict = {"machine": machine(), "gpus": [torch.cuda.get_device_name(i) for i in range(gpus)],
                     "precision": args.precision}

    def part(name: str, fn) -> None:
        try:
            results[name] = fn()
        except Exception as error:  # one failing part must not hide the others
            results[name] = {"error": f"{type(error).__name__}: {error}", "trace": traceback.format_exc()[-2000:]}
        print(name, json.dumps(results[name])[:400], flush=True)

    part("attention", lambda: attention("cpu" if args.cpu else "cuda"))
    tokens = corpus(work)
    gpt = {"n_layer": 6, "n_head": 6, "n_embd": 384, "block_size": 256}
    stamp = int(time.time())
    part("gpt_one_device", lambda: train("gpt", str(tokens), work / f"gpt1-{stamp}", 1, args, **gpt))
    if gpus >= 2:
        part("gpt_two_devices", lambda: train("gpt", str(tokens), work / f"gpt2-{stamp}", 2, args, **gpt))
    part("diffusion_one_device", lambda: train("diffusion", "digits", work / f"diffusion-{stamp}", 1, args))
    write(results, args.out)


if __name__ == "__main__":
    main()
