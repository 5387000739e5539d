"""The server's limits, and the worker threads that run generation off the event loop.

Admission: at most `concurrency` jobs run at once (one thread each) and `queue` more
wait for a thread; a request beyond that is refused at once with 429 and Retry-After,
so a flood of clients costs the server nothing but the refusal. A job holds its place
until its thread returns, even when its client has gone or its deadline passed, so the
count of admitted jobs is the work the machine really has.

Deadlines and cancellation are cooperative: a job calls `check()` between tokens (or
before a batch of images), which raises `Stopped` once its client disconnected, the
server timed it out, or the server is shutting down. The event loop never blocks on a
job: it waits on an asyncio future and answers /health in the meantime.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch

from genlab.errors import ConfigError

# Ceilings of the limits themselves: the request schemas bound their fields by these, and a
# server's own limits (below) must lie within them.
HARD_PROMPT_CHARS = 1_000_000
HARD_MAX_TOKENS = 100_000  # genlab.generation.MAX_NEW_TOKENS
HARD_MAX_N = 64
HARD_MAX_STEPS = 10_000


@dataclasses.dataclass(frozen=True)
class ServeConfig:
    """What `genlab serve` binds to and the limits that keep a public server alive."""

    host: str = "127.0.0.1"  # loopback only; 0.0.0.0 to accept other machines (then set an API key)
    port: int = 8000
    api_key: str | None = None  # clients send `Authorization: Bearer KEY`; None: no key needed
    concurrency: int = 0  # jobs generating at once, one thread each (0: one per CPU core)
    queue: int = 16  # jobs waiting for a thread; more are refused with 429
    threads: int = 0  # torch threads per job (0: CPU cores / concurrency)
    timeout: float = 120.0  # seconds a request may take, waiting included; then 503 (waiting) or 504 (running)
    max_prompt_chars: int = 8000  # longer prompts are refused (422)
    max_tokens: int = 1024  # completions asking for more are lowered to this
    max_n: int = 16  # completions or images per request; more are refused (422)
    max_steps: int = 1000  # sampling steps of a diffusion model; more are refused (422)
    max_body_bytes: int = 16 * 2**20  # request bodies (uploaded images included); larger ones get 413
    max_image_pixels: int = 4096 * 4096  # uploaded images larger than this are refused (413) before decoding
    max_videos: int = 64  # finished video jobs kept in memory (their MP4, GIF and PNGs); older ones are forgotten
    max_batch: int = 64  # text sequences a GPT decodes together, images a diffusion model samples together (1: no
    # batching of images); `queue` more wait

    def __post_init__(self):
        checks = [("port", 0 <= self.port < 65536, "0 .. 65535"), ("concurrency", self.concurrency >= 0, ">= 0"),
                  ("queue", self.queue >= 0, ">= 0"), ("threads", self.threads >= 0, ">= 0"),
                  ("timeout", self.timeout > 0, "> 0 seconds"),
                  ("max_prompt_chars", 1 <= self.max_prompt_chars <= HARD_PROMPT_CHARS, f"1 .. {HARD_PROMPT_CHARS:,}"),
                  ("max_tokens", 1 <= self.max_tokens <= HARD_MAX_TOKENS, f"1 .. {HARD_MAX_TOKENS:,}"),
                  ("max_n", 1 <= self.max_n <= HARD_MAX_N, f"1 .. {HARD_MAX_N}"),
                  ("max_steps", 1 <= self.max_steps <= HARD_MAX_STEPS, f"1 .. {HARD_MAX_STEPS:,}"),
                  ("max_body_bytes", self.max_body_bytes >= 1024, ">= 1024"),
                  ("max_image_pixels", self.max_image_pixels >= 64, ">= 64"),
                  ("max_videos", self.max_videos >= 1, ">= 1"), ("max_batch", 1 <= self.max_batch <= 1024, "1 .. 1024")]
        for name, ok, valid in checks:
            if not ok:
                raise ConfigError(f"serve {name} = {getattr(self, name)!r} is out of range", f"use {valid}")
        if self.api_key is not None and len(self.api_key) < 8:
            raise ConfigError(
                "the API key is shorter than 8 characters",
                "use a long random key, e.g. `openssl rand -hex 24`",
            )

    @property
    def workers(self) -> int:
        return self.concurrency or os.cpu_count() or 1

    @property
    def torch_threads(self) -> int:
        return self.threads or max(1, (os.cpu_count() or 1) // self.workers)

    def public(self) -> dict[str, Any]:
        """The limits a client may see (GET /health): everything except the key."""
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in ("api_key", "host", "port")} | {
            "concurrency": self.workers, "threads": self.torch_threads}


class Stopped(Exception):
    """A job stopped before it finished: `reason` is "disconnected", "timeout" or "shutdown"."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class Job:
    """One request's work: its deadline, and the flag that cancels it."""

    def __init__(self, deadline: float):
        self.deadline = deadline
        self.started = False
        self.reason: str | None = None
        self._stop = threading.Event()

    def cancel(self, reason: str) -> None:
        if not self._stop.is_set():
            self.reason = reason
            self._stop.set()

    def check(self) -> None:
        """Raise `Stopped` if the job was cancelled or ran past its deadline (called by the worker)."""
        if not self._stop.is_set() and time.monotonic() > self.deadline:
            self.cancel("timeout")
        if self._stop.is_set():
            raise Stopped(self.reason or "cancelled")


class Busy(Exception):
    """No room for another job: the server answers 429."""


def start_worker(threads: int) -> None:
    """A worker thread's set-up: its torch threads, and subnormal floats flushed (the flag is per thread)."""
    from genlab.hardware import flush_denormals

    torch.set_num_threads(threads)
    flush_denormals(whole_process=False)


def count_outcome(counts: Counter[str], future: asyncio.Future) -> None:
    """Count a finished job by how it ended (on the event loop)."""
    if future.cancelled():
        counts["cancelled"] += 1
        return
    error = future.exception()  # retrieved here, so asyncio never logs it as unhandled
    if error is None:
        counts["completed"] += 1
    elif isinstance(error, Stopped):
        counts["timed_out" if error.reason == "timeout" else "cancelled"] += 1
    else:
        counts["failed"] += 1


class Workers:
    """A fixed pool of generation threads with a bounded queue in front of it."""

    def __init__(self, config: ServeConfig):
        self.config = config
        self.capacity = config.workers + config.queue
        self.pool = ThreadPoolExecutor(config.workers, thread_name_prefix="genlab-serve",
                                       initializer=start_worker, initargs=(config.torch_threads,))
        self.admitted = 0  # running + waiting; changed on the event loop only
        self.running = 0  # changed by the worker threads, under the lock
        self.counts: Counter[str] = Counter()  # finished jobs by outcome; changed on the event loop only
        self.jobs: set[Job] = set()
        self._lock = threading.Lock()

    @property
    def waiting(self) -> int:
        return max(0, self.admitted - self.running)

    def submit(self, fn: Callable[..., Any], *args: Any) -> tuple[Job, asyncio.Future]:
        """Start `fn(job, *args)` on a worker thread; raise `Busy` when running + waiting is at capacity."""
        if self.admitted >= self.capacity:
            self.counts["refused"] += 1
            raise Busy(f"{self.running} requests are running and {self.waiting} waiting, the server's limit "
                       f"({self.config.workers} at once + {self.config.queue} in the queue)")
        job = Job(time.monotonic() + self.config.timeout)

        def run() -> Any:
            job.check()  # the client may have gone, or the deadline passed, while the job waited
            job.started = True
            with self._lock:
                self.running += 1
            try:
                return fn(job, *args)
            finally:
                with self._lock:
                    self.running -= 1

        self.admitted += 1
        self.jobs.add(job)
        future = asyncio.wrap_future(self.pool.submit(run))
        future.add_done_callback(lambda f: self._finished(job, f))
        return job, future

    def _finished(self, job: Job, future: asyncio.Future) -> None:
        self.admitted -= 1
        self.jobs.discard(job)
        count_outcome(self.counts, future)

    def shutdown(self) -> None:
        """Stop every job at its next check and let the threads finish."""
        for job in list(self.jobs):
            job.cancel("shutdown")
        self.pool.shutdown(wait=True, cancel_futures=True)
