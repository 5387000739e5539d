"""Sampling text from a language model, one token at a time, as a stream of text pieces.

The loop is family-agnostic. A language model offers two calls:

- `prefill(ids (1, T)) -> (logits (V,), state)`: run a window of tokens, return the
  next-token logits and whatever makes the next step cheap (a GPT's KV cache, an LSTM's
  hidden state);
- `step(token, state) -> (logits (V,), state)`: feed one more token;

and `context_size` (tokens a window may hold; None when unbounded, as for an LSTM).
When the window would outgrow the context, it slides: it restarts from its second half
(the last `context_size // 2` tokens) with a fresh prefill, so a re-prefill is paid once
per half-context of new tokens and every token still sees at least half a context. `use_cache=False` recomputes the same
window from scratch at every token: slower, and equal token for token, which is what the
tests check.

Each next token goes through the usual processors in the usual order (Hugging Face's):
repetition penalty (CTRL, Keskar et al. 2019: positive logits of seen tokens divided by
the penalty, negative ones multiplied), temperature, top-k, top-p (nucleus, Holtzman et
al. 2020); temperature 0 is greedy. Stop strings are matched in text, across pieces:
text that could be the start of a stop string is held back until it is decided.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import torch

from genlab.errors import ConfigError

MAX_NEW_TOKENS = 100_000  # a hard bound, so that no request runs unbounded


# Below this many FLOPs (~2 x parameters x tokens) a forward pass runs on one thread: its operations
# are microseconds each, and waking and joining a second thread costs more than it saves, far more on
# a busy machine (docs/lm.md).
ONE_THREAD_FLOPS = 2e8


@contextlib.contextmanager
def threads(n: int):
    """Run a block with n torch threads (see ONE_THREAD_FLOPS)."""
    before = torch.get_num_threads()
    if n != before:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if n != before:
            torch.set_num_threads(before)


def check_options(max_new_tokens: int, temperature: float, top_k: int | None, top_p: float | None,
                  repetition_penalty: float) -> None:
    if not 0 <= max_new_tokens <= MAX_NEW_TOKENS:
        raise ConfigError(f"max_new_tokens = {max_new_tokens} is out of range", f"use 0 .. {MAX_NEW_TOKENS:,}")
    if temperature < 0:
        raise ConfigError(f"temperature = {temperature} must be >= 0", "use 0 for greedy, 0.7-1.0 for sampling")
    if top_k is not None and top_k < 1:
        raise ConfigError(f"top_k = {top_k} must be >= 1", "leave it unset to keep every token")
    if top_p is not None and not 0 < top_p <= 1:
        raise ConfigError(f"top_p = {top_p} must be in (0, 1]", "e.g. --top-p 0.9")
    if repetition_penalty <= 0:
        raise ConfigError(f"repetition_penalty = {repetition_penalty} must be > 0", "1.0 disables it; 1.1-1.3 is usual")


def filter_logits(logits: torch.Tensor, top_k: int | None = None, top_p: float | None = None) -> torch.Tensor:
    """Set the logits outside the top-k and outside the nucleus of mass top_p to -inf (1-D or batched)."""
    if top_k is not None and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = sorted_logits.softmax(-1)
        # drop a token when the tokens ranked above it already hold top_p of the mass (the first always stays)
        drop_sorted = (probs.cumsum(-1) - probs) >= top_p
        drop = drop_sorted.scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


class GumbelNoise:
    """Gumbel(0, 1) noise rows over a vocabulary, drawn `rows` at a time from one generator.

    The Gumbel-max trick: argmax_i (log p_i + G_i) with G_i = -log E_i, E_i ~ Exp(1) independent, is an
    exact draw from p, and log p may be the filtered logits over the temperature (the normaliser does not
    move the argmax): no softmax, and a token costs an add and an argmax. Drawing a block of rows in one
    call spreads the random number generation's per-call cost over many tokens; the stream is still
    fixed by the generator's seed. E is kept above 0, so G stays finite and a filtered token (-inf) never
    wins."""

    def __init__(self, vocab: int, generator: torch.Generator | None = None, device=None, rows: int = 64):
        self.vocab, self.generator, self.device, self.rows = vocab, generator, device, rows
        self.block, self.used = None, rows

    def draw(self) -> torch.Tensor:
        if self.used == self.rows:
            with threads(1):  # a few thousand numbers: a second thread only adds its wake-up (ms on a busy machine)
                block = torch.empty(self.rows, self.vocab, device=self.device).exponential_(generator=self.generator)
                self.block, self.used = torch.log(block.clamp_min_(1e-30)).neg_(), 0
        self.used += 1
        return self.block[self.used - 1]


def next_token(logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
               repetition_penalty: float = 1.0, seen: torch.Tensor | None = None,
               generator: torch.Generator | None = None, noise: GumbelNoise | None = None) -> int:
    """One token id from next-token logits (V,); `seen` marks the tokens the penalty applies to. Draws
    come from `noise` (a generation's stream) or, without it, from a fresh row of `generator`'s."""
    logits = logits.float()
    if repetition_penalty != 1.0 and seen is not None:
        penalised = torch.where(logits > 0, logits / repetition_penalty, logits * repetition_penalty)
        logits = torch.where(seen, penalised, logits)
    if temperature == 0:
        return int(logits.argmax())
    scaled = filter_logits(logits / temperature, top_k, top_p)
    gumbel = (noise or GumbelNoise(logits.shape[-1], generator, logits.device, rows=1)).draw()
    return int(torch.argmax(scaled + gumbel))


class StopMatcher:
    """Cuts a stream of text at the first stop string, holding back text that may begin one."""

    def __init__(self, stops: Sequence[str]):
        self.stops = [s for s in stops if s]
        self.pending = ""
        self.done = False

    def feed(self, piece: str) -> str:
        """Text that is safe to emit now; sets `done` once a stop string appeared (it is not emitted)."""
        self.pending += piece
        if not self.stops:
            out, self.pending = self.pending, ""
            return out
        hits = [i for i in (self.pending.find(s) for s in self.stops) if i >= 0]
        if hits:
            self.done = True
            out, self.pending = self.pending[: min(hits)], ""
            return out
        hold = max((k for s in self.stops for k in range(1, min(len(s), len(self.pending) + 1))
                    if self.pending.endswith(s[:k])), default=0)
        cut = len(self.pending) - hold
        out, self.pending = self.pending[:cut], self.pending[cut:]
        return out

    def flush(self) -> str:
        out, self.pending = self.pending, ""
        return out


@torch.inference_mode()  # as a decorator, it wraps each resumption of the generator, not the caller's code
def generate_ids(model: Any, ids: list[int], max_new_tokens: int, temperature: float = 1.0, top_k: int | None = None,
                 top_p: float | None = None, repetition_penalty: float = 1.0,
                 generator: torch.Generator | None = None, use_cache: bool = True,
                 end: Sequence[int] = ()) -> Iterator[int]:
    """New token ids after the prompt `ids`, one at a time (the loop behind `generate`); it returns early,
    without yielding it, at a token of `end` (a chat template's end token)."""
    if not ids:
        raise ConfigError("generation needs at least one prompt token")
    context = model.context_size
    keep = max(1, context // 2) if context else None
    device = next(model.parameters()).device
    ids = list(ids)
    start = max(0, len(ids) - context) if context else 0
    seen = None
    if repetition_penalty != 1.0:
        seen = torch.zeros(model.config.vocab_size, dtype=torch.bool, device=device)
        seen[torch.tensor(ids, device=device)] = True

    banned = model.never_generate()
    ban = torch.zeros(model.config.vocab_size, device=device)  # added to the logits: -inf at banned ids
    ban[banned] = float("-inf")

    def window() -> torch.Tensor:
        return torch.tensor([ids[start:]], device=device)

    flops_per_token = 2 * model.num_parameters()
    many = torch.get_num_threads()

    def prefill() -> tuple[torch.Tensor, Any]:
        with threads(1 if flops_per_token * (len(ids) - start) < ONE_THREAD_FLOPS else many):
            return model.prefill(window())

    step_threads = 1 if flops_per_token < ONE_THREAD_FLOPS else many
    noise = GumbelNoise(model.config.vocab_size, generator, device)
    logits, state = prefill()
    for _ in range(max_new_tokens):
        logits = logits + ban if banned else logits  # an add costs a tenth of index_fill's call
        token = next_token(logits, temperature, top_k, top_p, repetition_penalty, seen, noise=noise)
        if token in end:
            return
        yield token
        ids.append(token)
        if seen is not None:
            seen[token] = True
        if context and len(ids) - start > context:
            start = len(ids) - keep  # slide the window: a fresh prefill over the last `keep` tokens
            logits, state = prefill()
        elif use_cache:
            with threads(step_threads):
                logits, state = model.step(token, state)
        else:
            logits, state = prefill()


def generate(model: Any, prompt: str = "", max_new_tokens: int = 200, temperature: float = 1.0,
             top_k: int | None = None, top_p: float | None = None, repetition_penalty: float = 1.0,
             stop: str | Sequence[str] | None = None, seed: int | None = None, use_cache: bool = True,
             ids: list[int] | None = None, end: Sequence[int] = (), decoder: Any = None) -> Iterator[str]:
    """Text pieces continuing `prompt`, yielded as they are produced (see the module docstring).

    `seed` makes the output reproducible; without it, sampling draws from torch's global generator.
    An empty prompt starts from the model's start token (a newline where the tokenizer has one).
    `ids` (a chat prompt) stands for the prompt's ids; generation ends before a token of `end`;
    `decoder` turns ids into text (default a StreamDecoder; a chat reply's is chat.ReplyDecoder).
    """
    from genlab.data.tokenizers import StreamDecoder

    check_options(max_new_tokens, temperature, top_k, top_p, repetition_penalty)
    tokenizer = model.tokenizer
    if tokenizer is None:
        raise ConfigError("this model has no tokenizer attached", "load it with genlab.load(folder), which reads it")
    generator = None
    if seed is not None:
        generator = torch.Generator(device=next(model.parameters()).device).manual_seed(seed)
    if ids is None:
        ids = tokenizer.encode(prompt) if prompt else model.start_ids()
    stops = [stop] if isinstance(stop, str) else list(stop or [])
    matcher, decoder = StopMatcher(stops), decoder or StreamDecoder(tokenizer)
    was_training = model.training
    model.eval()
    try:
        for token in generate_ids(model, ids, max_new_tokens, temperature, top_k, top_p, repetition_penalty,
                                  generator, use_cache, end):
            text = matcher.feed(decoder.push(token))
            if text:
                yield text
            if matcher.done:
                return
        rest = matcher.flush()
        if rest:
            yield rest
    finally:
        model.train(was_training)
