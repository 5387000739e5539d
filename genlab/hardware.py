"""What this machine computes fast, measured rather than guessed from CPU flags, and the CPU's float mode.

bf16 matrix products run several times faster than fp32 on CPUs with AVX512-BF16 or AMX and
several times slower on CPUs without them (bf16 is then emulated; docs/architecture.md has the
figures). Training precision `auto` and Muon's Newton-Schulz iteration ask `bf16_is_fast` which
one this CPU is.

`flush_denormals` sets the CPU to treat subnormal floats as zero. An undertrained network's
activations decay into the subnormal range, where x86 arithmetic takes a slow microcode path
(bench/results/denormal.json measures what flushing changes for every family). The flag is per
thread and OpenMP's worker threads copy it when they are created, which is at torch's first
parallel operation. The CLI sets it before anything computes, the server for each worker thread,
and `genlab.train` for the duration of a run, each giving the calling thread back its IEEE mode at
the end; in a program of your own, call `flush_denormals()` before your first torch operation to
have it for everything.
"""

from __future__ import annotations

import contextlib
import functools
import os
import time

import torch


def bf16_is_fast() -> bool:
    """Whether a bf16 matrix product beats fp32 by 1.5x or more on this CPU (timed once per process, in milliseconds).

    GENLAB_BF16=1 or 0 decides instead of the measurement, read at every call: the processes of one run set it
    to the first process's answer (genlab.engine.trainer.agreed_precision), after which every one of them
    answers alike whatever it timed before."""
    forced = os.environ.get("GENLAB_BF16")
    if forced in ("0", "1"):
        return forced == "1"
    return _bf16_timed_fast()


@functools.cache
def _bf16_timed_fast() -> bool:
    return _seconds(torch.bfloat16) * 1.5 <= _seconds(torch.float32)


def _seconds(dtype: torch.dtype, n: int = 384, repeats: int = 5) -> float:
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    for _ in range(2):  # the first calls pick and compile kernels
        a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return time.perf_counter() - start


_process_wide = False  # whether flush_denormals() set the mode for the whole process (the CLI does)


def flush_denormals(whole_process: bool = True) -> bool:
    """Flush subnormal floats to zero on this thread and on the torch threads it starts from now on, for good: for
    a process genlab owns (the CLI), or with `whole_process=False` for a thread it owns (a server worker: the
    process's other threads keep their mode). False where the CPU cannot, or GENLAB_FLUSH_DENORMAL=0."""
    global _process_wide
    if os.environ.get("GENLAB_FLUSH_DENORMAL") == "0":
        return False
    flushed = torch.set_flush_denormal(True)
    if whole_process:
        _process_wide = flushed
    return flushed


@contextlib.contextmanager
def denormals_flushed():
    """Flush subnormals within a block, then give the calling thread back its IEEE mode (unless the whole process
    flushes): for work genlab does in a process that may go on to do other things."""
    if os.environ.get("GENLAB_FLUSH_DENORMAL") == "0":
        yield
        return
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(_process_wide)


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
