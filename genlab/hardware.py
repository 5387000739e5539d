"""What this machine computes fast, measured rather than guessed from CPU flags.

bf16 matrix products run several times faster than fp32 on CPUs with AVX512-BF16 or AMX
(an AMD EPYC of this project's machines: 800 against 165 GFLOP/s) and several times slower
on CPUs without them (bf16 is then emulated). Training precision `auto` and Muon's
Newton-Schulz iteration ask `bf16_is_fast` which one this CPU is.
"""

from __future__ import annotations

import functools
import os
import time

import torch


@functools.cache
def bf16_is_fast() -> bool:
    """Whether a bf16 matrix product beats fp32 by 1.5x or more on this CPU (timed once per process, ~20 ms).

    GENLAB_BF16=1 or 0 decides instead of the measurement."""
    forced = os.environ.get("GENLAB_BF16")
    if forced in ("0", "1"):
        return forced == "1"
    return _seconds(torch.bfloat16) * 1.5 <= _seconds(torch.float32)


def _seconds(dtype: torch.dtype, n: int = 384, repeats: int = 5) -> float:
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    for _ in range(2):  # the first calls pick and compile kernels
        a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return time.perf_counter() - start


def training_precision(precision: str, accelerator: str) -> str:
    """A Lightning precision for `precision`, resolving `auto`: bf16-mixed where bf16 is fast (a GPU that
    supports it, or a CPU that `bf16_is_fast`), 32-true elsewhere."""
    if precision != "auto":
        return precision
    gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    if gpu:
        return "bf16-mixed" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "32-true"
    if accelerator in ("cpu", "auto"):
        return "bf16-mixed" if bf16_is_fast() else "32-true"
    return "32-true"  # other accelerators (mps, tpu): their own defaults
