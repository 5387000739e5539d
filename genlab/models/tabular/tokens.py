"""A table as rows of tokens and back: the encoding the `gpt` kind (gpt.py) learns.

Each modelled column is one token of its own small vocabulary:

- a categorical column: its categories, plus a missing slot when the training part has missing cells;
- a numeric (or datetime, in seconds) column gets at most K = min(`MAX_TOKENS`, max(`MIN_TOKENS`, sqrt(rows)))
  tokens, as a histogram's bins grow with the square root of its rows so that each bin's probability rests on
  enough of them. When it holds at most K distinct values, each value is a token (Adult's age, hours and
  capital gains are written exactly); otherwise every value holding at least 1/K of the rows is a token of
  its own (a point mass, such as a capital gain of 0), and the other values are cut into bins of about equal
  count, never splitting a value. Each token is an interval [lo, hi] (lo = hi for a value); a sample draws
  its value uniformly inside, integers rounded by the layout.
  A missing slot follows, as for categories.

The tokens live in the layout's JSON (`col["tokens"]`), so a model folder stays config and weights. The
log density of a value given its token's probability (`log_volume`) makes the model's NLL a density of the
numbers: minus log of a bin's width, plus a Laplace tail, one bin's mean width in scale, for values beyond
the range seen, so that a value outside every training value scores the higher the further out it lies.
"""

from __future__ import annotations

from typing import Any

import numpy as np

MAX_TOKENS = 128
MIN_TOKENS = 8


def fit_numeric_tokens(x: np.ndarray, max_tokens: int | None = None) -> dict[str, list[float]]:
    """The intervals [lo, hi] of a numeric column's tokens, from its present (non-NaN) training values."""
    if max_tokens is None:
        max_tokens = int(min(MAX_TOKENS, max(MIN_TOKENS, round(np.sqrt(len(x))))))
    values, counts = np.unique(x, return_counts=True)
    if len(values) == 0:
        return {"lo": [0.0], "hi": [0.0]}
    if len(values) <= max_tokens:
        return {"lo": values.tolist(), "hi": values.tolist()}
    atom = counts >= len(x) / max_tokens
    rest, rest_counts = values[~atom], counts[~atom]
    k = max(1, max_tokens - int(atom.sum()))
    # each distinct value's group by the middle of its share of the rest's count: groups of about equal count
    middle = np.cumsum(rest_counts) - rest_counts / 2
    group = np.minimum((middle / rest_counts.sum() * k).astype(int), k - 1)
    starts = np.flatnonzero(np.r_[True, group[1:] != group[:-1]])
    ends = np.r_[starts[1:], len(rest)] - 1
    lo = np.r_[values[atom], rest[starts]]
    hi = np.r_[values[atom], rest[ends]]
    order = np.lexsort((hi, lo))
    return {"lo": lo[order].tolist(), "hi": hi[order].tolist()}


def vocabulary(col: dict[str, Any]) -> int:
    """How many tokens a column has (its missing slot included)."""
    if col["kind"] == "categorical":
        return len(col["categories"]) + (1 if col.get("has_missing") else 0)
    return len(col["tokens"]["lo"]) + (1 if col.get("has_missing") else 0)


def encode_numbers(x: np.ndarray, col: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """(tokens, distance): each value's token (an exact value's own, else the bin holding it, else the nearest
    interval) and how far outside that token's interval it lies (0 inside). NaN is the missing slot, or the
    commonest token's where training had no missing cells."""
    lo, hi = np.array(col["tokens"]["lo"]), np.array(col["tokens"]["hi"])
    missing = np.isnan(x)
    xs = np.where(missing, lo[len(lo) // 2], x)
    distance = np.maximum(lo[None] - xs[:, None], 0) + np.maximum(xs[:, None] - hi[None], 0)  # (N, K)
    exact = (lo == hi)[None] & (lo[None] == xs[:, None])
    token = np.where(exact.any(1), exact.argmax(1), distance.argmin(1))
    gap = distance[np.arange(len(xs)), token]
    if col.get("has_missing"):
        token = np.where(missing, len(lo), token)
    return token, np.where(missing, 0.0, gap)


def log_volume(x: np.ndarray, token: np.ndarray, distance: np.ndarray, col: dict[str, Any]) -> np.ndarray:
    """log of the volume a value's token spreads its probability over (a bin's width; 0 for a value, a missing
    cell) plus its Laplace tail beyond the range, in nats (N,): the NLL of the value is the token's NLL plus it."""
    lo, hi = np.array(col["tokens"]["lo"]), np.array(col["tokens"]["hi"])
    slot = np.minimum(token, len(lo) - 1)
    step = 1.0 if col.get("integer") else 0.0  # an integer bin holds hi - lo + 1 values, each with its mass
    width = np.where(hi[slot] > lo[slot], hi[slot] - lo[slot] + step, 1.0)
    scale = max((lo[-1] - lo[0]) / len(lo), 1e-12)
    present = ~np.isnan(x)
    return np.where(present, np.log(width) + distance / scale, 0.0)


def decode_numbers(token: np.ndarray, col: dict[str, Any], u: np.ndarray) -> np.ndarray:
    """Values from tokens: uniform inside each interval (`u` in [0, 1), one per row), NaN for the missing slot."""
    lo, hi = np.array(col["tokens"]["lo"]), np.array(col["tokens"]["hi"])
    slot = np.minimum(token, len(lo) - 1)
    x = lo[slot] + u * (hi[slot] - lo[slot])
    return np.where(token >= len(lo), np.nan, x)
