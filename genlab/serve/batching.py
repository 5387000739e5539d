"""Continuous batching of a language model's completions: one thread decodes every running sequence together.

Requests served one at a time leave a CPU mostly idle: a token of a small model costs a few hundred microseconds
of matrix-vector products, and 32 clients wait in line for them. Decoding the running sequences as one batch turns
those into matrix-matrix products at nearly the cost of one, so the machine serves many streams at once (Orca,
Yu et al., OSDI 2022: iteration-level scheduling; vLLM's scheduler works the same way).

`TextBatcher` owns a KV cache of `max_batch` rows and a thread. A request's `n` sequences wait in its queue; at
each token boundary the thread admits waiting sequences into free rows (a prefill of each prompt into its row),
then takes one step for every row at once (`GPT.step_rows`: each row at its own position), samples each row's
token with its own options and seed, and hands the text to the request. A sequence leaves at its end (length,
stop string, end token) or at once when its job is cancelled (client gone, deadline, shutdown); the last row moves
into the gap, so the running rows stay 0 .. B-1. A sequence at the end of the context slides as `generate_ids`
does: its last half is prefilled again into its row.

Admission is counted in sequences: `max_batch` decode together and `queue` more wait; beyond that a request is
refused at once (429), like the worker pool's jobs (genlab.serve.limits).

`ImageBatcher` does the same for an image model whose `sample` takes a generator per image (a diffusion model):
requests that wait together and sample alike (sampler, steps, guidance, ...) run as one batch through the network,
up to `max_batch` images, and each image draws its noise (and a grounded model its layout) from its own generator,
seeded `seed + i` for the i-th image of a request: an image is the same whether its request ran alone or beside
others (tested), and the network's cost per image falls with the batch (bench/serve_images.py).

What a step decides reaches the event loop once per step: the text pieces, the ends and the requests' results go
into an outbox that one `call_soon_threadsafe` delivers in order (a wake-up of the loop per token would cost more
than the token at 32 streams).
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from typing import Any

import torch

from genlab.serve.limits import Busy, Job, ServeConfig, Stopped, count_outcome


@dataclasses.dataclass(eq=False)
class Request:
    """One completion request: its job, where its text goes (called on the event loop), how many of its sequences
    are still running, and the future the event loop awaits."""

    job: Job
    emit: Callable[[str, int, Any], None]
    prompt_tokens: int
    running: int
    future: asyncio.Future
    completion_tokens: int = 0
    failed: bool = False


def _settle(future: asyncio.Future, result: Any = None, error: BaseException | None = None) -> None:
    if not future.done():
        future.set_exception(error) if error is not None else future.set_result(result)


def _deliver(outbox: list[tuple]) -> None:
    for call, *args in outbox:
        call(*args)


@dataclasses.dataclass(eq=False)
class Sequence:
    """One of a request's `n` completions: its tokens so far, how it samples, and how its text is cut."""

    request: Request
    index: int
    ids: list[int]
    start: int  # the window's first token: the cache row holds ids[start:-1]
    options: dict[str, Any]
    noise: Any  # its Gumbel noise stream (genlab.models.lm.generation), from its own seed
    seen: torch.Tensor | None  # tokens the repetition penalty applies to
    matcher: Any
    decoder: Any
    end: list[int]
    made: int = 0


class TextBatcher:
    """Continuous batching for one language model that offers `step_rows` (see the module docstring)."""

    def __init__(self, model: Any, config: ServeConfig, counts: Counter[str], name: str = "model"):
        self.model, self.config, self.counts = model, config, counts
        self.max_batch = config.max_batch
        self.capacity = config.max_batch + config.queue
        self.cache = model.new_cache(self.max_batch)
        self.tokens = torch.zeros(self.max_batch, dtype=torch.long)
        self.positions = torch.zeros(self.max_batch, dtype=torch.long)
        self.rows: list[Sequence] = []  # row i of the cache is rows[i]
        self.waiting: deque[Sequence] = deque()
        self.sequences = 0  # admitted: running + waiting
        self.widest = 0  # the most rows one step has decoded
        vocab = model.config.vocab_size
        self.ban = torch.zeros(vocab)  # added to every row's logits: -inf at the ids a model never writes
        banned = model.never_generate()
        self.ban[banned] = float("-inf")
        self.banned = bool(banned)
        self.context = model.context_size
        self._wake = threading.Condition()
        self._stopping = False
        self.loop: asyncio.AbstractEventLoop | None = None  # the server's, set by the first request
        self._outbox: list[tuple] = []
        self.thread = threading.Thread(target=self._run, name=f"genlab-batcher-{name}", daemon=True)
        self.thread.start()

    # -- the event loop's side ------------------------------------------------------------------------------

    @property
    def running(self) -> int:
        return len(self.rows)

    @property
    def queued(self) -> int:
        return len(self.waiting)

    def submit(self, options: dict[str, Any], emit: Callable[[str, int, Any], None]) -> tuple[Job, asyncio.Future]:
        """Queue a request's `n` sequences (called on the event loop, as `emit` will be); the future's result is its
        token counts (as `registry.complete`'s). Raises Busy when they do not fit, and the request's own errors
        (bad options) at once."""
        from genlab.models.lm.generation import GumbelNoise, StopMatcher
        from genlab.serve.registry import prompt_of

        n = options["n"]
        if self.sequences + n > self.capacity:
            self.counts["refused"] += 1
            raise Busy(f"{self.sequences} sequences are decoding or waiting, this model's limit ({self.max_batch} "
                       f"at once + {self.config.queue} in the queue)")
        ids, end, decoder_of = prompt_of(self.model, options)
        job = Job(time.monotonic() + self.config.timeout)
        self.loop = asyncio.get_running_loop()
        request = Request(job, emit, len(ids), n, self.loop.create_future())
        vocab = self.model.config.vocab_size
        sequences = []
        for index in range(n):
            generator = torch.Generator().manual_seed(options["seed"] + index)
            seen = None
            if options["repetition_penalty"] != 1.0:
                seen = torch.zeros(vocab, dtype=torch.bool)
                seen[torch.tensor(ids)] = True
            start = max(0, len(ids) - self.context) if self.context else 0
            sequences.append(Sequence(request, index, list(ids), start, options, GumbelNoise(vocab, generator), seen,
                                      StopMatcher(options["stop"]), decoder_of(self.model.tokenizer), end))
        with self._wake:
            self.sequences += n
            self.waiting.extend(sequences)
            self._wake.notify()
        request.future.add_done_callback(lambda f: count_outcome(self.counts, f))
        return job, request.future

    def shutdown(self) -> None:
        with self._wake:
            self._stopping = True
            for sequence in [*self.rows, *self.waiting]:
                sequence.request.job.cancel("shutdown")
            self._wake.notify()
        self.thread.join(timeout=10)

    # -- the batcher's thread -------------------------------------------------------------------------------

    def _run(self) -> None:
        from genlab.serve.limits import start_worker

        start_worker(self.config.torch_threads)
        while True:
            with self._wake:
                while not self.rows and not self.waiting and not self._stopping:
                    self._wake.wait()
                if self._stopping:
                    break
                joining = []
                while self.waiting and len(self.rows) + len(joining) < self.max_batch:
                    joining.append(self.waiting.popleft())
            try:
                with torch.inference_mode():
                    for sequence in joining:
                        self._join(sequence)
                    if self.rows:
                        self._step()
            except Exception as error:  # a bug must not leave requests hanging: they fail, the thread goes on
                for sequence in self.rows:
                    self._fail(sequence.request, error)
                self._release(len(self.rows))
                self.rows.clear()
            self._flush()
        for sequence in [*self.rows, *self.waiting]:
            self._fail(sequence.request, Stopped("shutdown"))
        self._flush()

    def _flush(self) -> None:
        """Hand the step's text, ends and results to the event loop, in order, with one wake-up."""
        if self._outbox and self.loop is not None:
            outbox, self._outbox = self._outbox, []
            try:
                self.loop.call_soon_threadsafe(_deliver, outbox)
            except RuntimeError:  # the loop has closed: nobody is waiting any more
                pass

    def _fail(self, request: Request, error: BaseException) -> None:
        if not request.failed:
            request.failed = True
            self._outbox.append((_settle, request.future, None, error))

    def _join(self, sequence: Sequence) -> None:
        """Prefill a waiting sequence's window (all but its last token) into the next free row."""
        try:
            sequence.request.job.check()
            sequence.request.job.started = True
        except Stopped as stop:
            self._forget(sequence, stop)
            return
        row = len(self.rows)
        self._prefill(row, sequence)
        self.rows.append(sequence)

    def _prefill(self, row: int, sequence: Sequence) -> None:
        window = sequence.ids[sequence.start :]
        if len(window) > 1:
            self.model(torch.tensor([window[:-1]]), self.cache.row(row))
        self.tokens[row], self.positions[row] = window[-1], len(window) - 1

    def _step(self) -> None:
        """One token for every running row: a batched step, then each row's sampling and text."""
        from genlab.models.lm.generation import next_token

        B = len(self.rows)
        self.widest = max(self.widest, B)
        logits = self.model.step_rows(self.tokens[:B], self.positions[:B], self.cache)
        if self.banned:
            logits = logits + self.ban
        self.positions[:B] += 1
        tokens = self._sample(logits)
        done = [False] * B
        for i, sequence in enumerate(self.rows):
            request, o = sequence.request, sequence.options
            try:
                request.job.check()
            except Stopped as stop:
                self._forget(sequence, stop)
                done[i] = True
                continue
            if tokens[i] < 0:  # top-k, top-p or the repetition penalty: this row's own processors
                top_p = None if o["top_p"] >= 1 else o["top_p"]
                tokens[i] = next_token(logits[i], o["temperature"], o["top_k"], top_p, o["repetition_penalty"],
                                       sequence.seen, noise=sequence.noise)
            token = tokens[i]
            done[i] = self._take(sequence, token)
            if done[i]:
                continue
            sequence.ids.append(token)
            if sequence.seen is not None:
                sequence.seen[token] = True
            if self.context and len(sequence.ids) - sequence.start > self.context:
                sequence.start = len(sequence.ids) - max(1, self.context // 2)  # slide, as generate_ids does
                self._prefill(i, sequence)
            else:
                self.tokens[i] = token
        self._drop(done)

    def _sample(self, logits: torch.Tensor) -> list[int]:
        """The tokens of the rows that sample plainly (temperature only, or greedy), drawn for all of them at once:
        argmax(logits / T + Gumbel noise from each row's own stream), the arithmetic of `next_token`; -1 for the
        rows with other processors."""
        plain, greedy, temperatures, noise = [], [], [], []
        for i, sequence in enumerate(self.rows):
            o = sequence.options
            if o["top_k"] is not None or o["top_p"] < 1 or o["repetition_penalty"] != 1.0:
                continue
            if o["temperature"] == 0:
                greedy.append(i)
            else:
                plain.append(i)
                temperatures.append(o["temperature"])
                noise.append(sequence.noise.draw())
        tokens = [-1] * len(self.rows)
        if greedy:
            for i, token in zip(greedy, logits[greedy].argmax(1).tolist(), strict=True):
                tokens[i] = token
        if plain:
            scaled = logits[plain].float() / torch.tensor(temperatures)[:, None] + torch.stack(noise)
            for i, token in zip(plain, scaled.argmax(1).tolist(), strict=True):
                tokens[i] = token
        return tokens

    def _take(self, sequence: Sequence, token: int) -> bool:
        """Hand a sampled token to its request; True when the sequence has ended."""
        request = sequence.request
        if token in sequence.end:  # the model wrote its end token (a chat reply)
            return self._finish(sequence, "stop")
        sequence.made += 1
        request.completion_tokens += 1
        text = sequence.matcher.feed(sequence.decoder.push(token))
        if text:
            self._outbox.append((request.emit, "text", sequence.index, text))
        if sequence.matcher.done:
            return self._finish(sequence, "stop")
        if sequence.made >= sequence.options["max_tokens"]:
            return self._finish(sequence, "length")
        return False

    def _finish(self, sequence: Sequence, reason: str) -> bool:
        request = sequence.request
        rest = "" if sequence.matcher.done else sequence.matcher.flush()
        if rest:
            self._outbox.append((request.emit, "text", sequence.index, rest))
        self._outbox.append((request.emit, "finish", sequence.index, reason))
        request.running -= 1
        self._release(1)
        if request.running == 0 and not request.failed:
            n = sequence.options["n"]
            usage = {"prompt_tokens": request.prompt_tokens, "completion_tokens": request.completion_tokens,
                     "total_tokens": request.prompt_tokens * n + request.completion_tokens}
            self._outbox.append((_settle, request.future, usage))
        return True

    def _forget(self, sequence: Sequence, stop: Stopped) -> None:
        self._fail(sequence.request, stop)
        self._release(1)

    def _release(self, count: int) -> None:
        with self._wake:
            self.sequences -= count

    def _drop(self, done: list[bool]) -> None:
        """Remove the rows that ended, moving the last running rows into their places."""
        i = 0
        while i < len(self.rows):
            if not done[i]:
                i += 1
                continue
            last = len(self.rows) - 1
            if i != last:
                self.cache.move(last, i)
                self.tokens[i], self.positions[i] = self.tokens[last], self.positions[last]
                self.rows[i], done[i] = self.rows[last], done[last]
            self.rows.pop()
            done.pop()


@dataclasses.dataclass(eq=False)
class ImageRequest:
    """One image request waiting for its batch: its job, its options (as registry.sample_images takes them) and
    the future the event loop awaits."""

    job: Job
    options: dict[str, Any]
    future: asyncio.Future

    @property
    def n(self) -> int:
        return self.options["n"]


class ImageBatcher:
    """Batched sampling for one image model with `generator_per_image` (see the module docstring)."""

    def __init__(self, served: Any, config: ServeConfig, counts: Counter[str], name: str = "model"):
        self.served, self.config, self.counts = served, config, counts
        self.max_batch = config.max_batch
        self.capacity = config.max_batch + config.queue  # in images, as the text batcher's in sequences
        self.waiting: deque[ImageRequest] = deque()
        self.images = 0  # admitted: sampling + waiting
        self.sampling = 0
        self.widest = 0  # the most images one batch has held
        self.cores = config.threads or os.cpu_count() or 1  # what a batch of four images or more runs on
        self._wake = threading.Condition()
        self._stopping = False
        self.loop: asyncio.AbstractEventLoop | None = None
        self.thread = threading.Thread(target=self._run, name=f"genlab-images-{name}", daemon=True)
        self.thread.start()

    @property
    def queued(self) -> int:
        return sum(r.n for r in self.waiting)

    def submit(self, options: dict[str, Any]) -> tuple[Job, asyncio.Future]:
        """Queue a request for `options["n"]` images (called on the event loop); the future's result is
        registry.sample_images's. Raises Busy when they do not fit."""
        n = options["n"]
        if self.images + n > self.capacity:
            self.counts["refused"] += 1
            raise Busy(f"{self.images} images are sampling or waiting, this model's limit ({self.max_batch} at once "
                       f"+ {self.config.queue} in the queue)")
        job = Job(time.monotonic() + self.config.timeout)
        self.loop = asyncio.get_running_loop()
        request = ImageRequest(job, options, self.loop.create_future())
        with self._wake:
            self.images += n
            self.waiting.append(request)
            self._wake.notify()
        request.future.add_done_callback(lambda f: count_outcome(self.counts, f))
        return job, request.future

    def shutdown(self) -> None:
        with self._wake:
            self._stopping = True
            for request in self.waiting:
                request.job.cancel("shutdown")
            self._wake.notify()
        self.thread.join(timeout=10)

    def _key(self, request: ImageRequest) -> tuple:
        """What must be equal for requests to share a batch: how they sample, and whether they give labels or
        prompts. A conditional model's request with neither cycles through its classes or captions from its own
        first image, so it runs alone."""
        o = request.options
        alone = o["labels"] is None and o["prompt"] is None and self.served.conditioning != "none"
        return (tuple(sorted(o["sample"].items())), o["labels"] is None, o["prompt"] is None,
                id(request) if alone else None)

    def _run(self) -> None:
        from genlab.serve.limits import start_worker

        start_worker(1)
        while True:
            with self._wake:
                while not self.waiting and not self._stopping:
                    self._wake.wait()
                if self._stopping:
                    break
                first = self.waiting.popleft()
                batch, total, key = [first], first.n, self._key(first)
                for request in list(self.waiting):  # first come, first served: later alike requests join
                    if total + request.n <= self.max_batch and self._key(request) == key:
                        self.waiting.remove(request)
                        batch.append(request)
                        total += request.n
                self.sampling = total
            self._sample(batch)
            with self._wake:
                self.images -= total
                self.sampling = 0
        for request in self.waiting:
            self._settle(request, error=Stopped("shutdown"))

    def _settle(self, request: ImageRequest, result: Any = None, error: BaseException | None = None) -> None:
        if self.loop is not None:
            try:
                self.loop.call_soon_threadsafe(_settle, request.future, result, error)
            except RuntimeError:  # the loop has closed: nobody is waiting any more
                pass

    def _sample(self, batch: list[ImageRequest]) -> None:
        from genlab.serve.registry import image_generators, images_of, sampling_options

        live = []
        for request in batch:
            try:
                request.job.check()  # gone or late while it waited: it leaves before the batch is drawn
                request.job.started = True
                live.append(request)
            except Stopped as stop:
                self._settle(request, error=stop)
        if not live:
            return
        o = live[0].options
        model = self.served.model
        labels = None if o["labels"] is None else [y for r in live for y in _listed(r.options["labels"], r.n)]
        prompts = None if o["prompt"] is None else [p for r in live for p in _listed(r.options["prompt"], r.n)]
        generators = [g for r in live for g in image_generators(r.options["seed"], r.n)]
        self.widest = max(self.widest, len(generators))
        # the model's one sampling thread: a batch's convolutions take every core (or --threads); a batch of an
        # image or two runs faster on one thread (bench/results/serve_images.json: one client alone, 1 thread
        # 5.4 images/s, 2 threads 3.2)
        torch.set_num_threads(self.cores if len(generators) >= 4 else 1)
        try:
            with torch.inference_mode():
                images = model.sample(len(generators), labels=labels, prompt=prompts, generator=generators,
                                      options=sampling_options(model, o))
        except Exception as error:  # a request's own bad options, or a bug: its batch fails, the thread goes on
            for request in live:
                self._settle(request, error=error)
            return
        start = 0
        for request in live:
            part, start = images[start : start + request.n], start + request.n
            try:
                request.job.check()
                self._settle(request, images_of(self.served, part, request.options))
            except Exception as error:  # noqa: BLE001 - Stopped, or an encoder's error: this request's alone
                self._settle(request, error=error)


def _listed(value: Any, n: int) -> list:
    """A request's labels or prompts as one per image (one given for all is repeated)."""
    if isinstance(value, torch.Tensor):
        value = value.tolist()
    if isinstance(value, str | int) or not isinstance(value, list | tuple):
        return [value] * n
    return list(value)
