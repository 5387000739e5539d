"""Text metrics for language-model samples: diversity, repetition and memorisation.

- distinct-n (Li et al. 2016): unique n-grams / all n-grams over every generated text;
  low values mean the model keeps saying the same things.
- repetition-n (seq-rep-n, Welleck et al. 2019): within one text, the fraction of n-grams
  that repeat an earlier one, averaged over texts; high values mean degenerate loops.
- memorisation: the fraction of generated n-grams that occur verbatim in the training
  text (long n-grams: word 8-grams or character 50-grams rarely recur by chance), plus
  the fraction of texts that contain at least one such copy.

Texts are cut into whitespace-separated words by default, or into characters.
Memorisation hashes every training n-gram once into a sorted array of 64-bit hashes
(`NgramIndex`), so a 1 MB corpus is indexed in well under a second and looked up with
a binary search.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Literal

import numpy as np

Unit = Literal["word", "char"]
UNITS = ("word", "char")


def tokenize(text: str, unit: Unit = "word") -> list[str]:
    """Whitespace-separated words, or single characters (whitespace included)."""
    if unit not in UNITS:
        raise ValueError(f"unit {unit!r} is not one of {', '.join(UNITS)}")
    return text.split() if unit == "word" else list(text)


def ngrams(tokens: Sequence[str], n: int) -> list[tuple[str, ...]]:
    """The len(tokens) - n + 1 consecutive n-grams of a token list (none when it is shorter than n)."""
    return [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


def distinct_n(texts: Iterable[str], n: int, unit: Unit = "word") -> float:
    """Unique n-grams / total n-grams, pooled over all texts; 0.0 when no text has n tokens."""
    unique: set[tuple[str, ...]] = set()
    total = 0
    for text in texts:
        grams = ngrams(tokenize(text, unit), n)
        unique.update(grams)
        total += len(grams)
    return len(unique) / total if total else 0.0


def repetition_rate(texts: Iterable[str], n: int = 4, unit: Unit = "word") -> float:
    """Mean over texts of 1 - unique n-grams / n-grams within the text (seq-rep-n); texts shorter than n are skipped."""
    rates = []
    for text in texts:
        grams = ngrams(tokenize(text, unit), n)
        if grams:
            rates.append(1 - len(set(grams)) / len(grams))
    return float(np.mean(rates)) if rates else 0.0


# ---------------------------------------------------------------------------------------------
# memorisation

def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser (Steele et al. 2014): spreads every input bit over all 64 output bits."""
    x = x.astype(np.uint64)
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _ngram_hashes(ids: np.ndarray, n: int) -> np.ndarray:
    """64-bit hashes of every n-gram of a token-id array, vectorised: n passes of h = h * B + mix(id).

    A polynomial hash modulo 2^64 over mixed token ids; with ~1e6 training n-grams the
    chance of any false match among 1e5 generated ones is about 1e11 / 2^64, i.e. nil.
    """
    count = len(ids) - n + 1
    if count <= 0:
        return np.zeros(0, np.uint64)
    mixed = _mix64(ids)
    h = np.zeros(count, np.uint64)
    with np.errstate(over="ignore"):
        for j in range(n):
            h = h * np.uint64(0x100000001B3) + mixed[j : j + count]
    return _mix64(h)


class NgramIndex:
    """Every n-gram of a training text, hashed, to ask which generated n-grams were copied from it.

    The index lives in memory for one process: word ids are Python's (per-process salted) string hashes.
    """

    def __init__(self, train_text: str, n: int, unit: Unit = "word"):
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        self.n, self.unit = n, unit
        self.hashes = np.sort(_ngram_hashes(self._ids(train_text), n))  # sorted for searchsorted; repeats are harmless

    def _ids(self, text: str) -> np.ndarray:
        """One 64-bit id per token: the code point of a character, the string hash of a word."""
        if self.unit == "char":
            return np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32).astype(np.int64)
        return np.fromiter((hash(word) for word in tokenize(text, "word")), dtype=np.int64)

    def copied(self, text: str) -> np.ndarray:
        """A boolean per n-gram of `text`: does it occur verbatim in the training text?"""
        hashes = _ngram_hashes(self._ids(text), self.n)
        if len(self.hashes) == 0:
            return np.zeros(len(hashes), bool)
        where = np.searchsorted(self.hashes, hashes).clip(max=len(self.hashes) - 1)
        return self.hashes[where] == hashes


def memorisation(texts: Iterable[str], train_text: str | NgramIndex, n: int = 8,
                 unit: Unit = "word") -> dict[str, float]:
    """Fraction of generated n-grams found verbatim in training, and of texts with at least one.

    Pass an `NgramIndex` instead of the training text to index a corpus once for many calls.
    Returns {"memorised_ngrams": ..., "memorised_texts": ...}; texts shorter than n count as
    not memorised and add no n-grams.
    """
    index = train_text if isinstance(train_text, NgramIndex) else NgramIndex(train_text, n, unit)
    copied_total, ngram_total, texts_copied, text_count = 0, 0, 0, 0
    for text in texts:
        copied = index.copied(text)
        copied_total += int(copied.sum())
        ngram_total += len(copied)
        texts_copied += bool(copied.any())
        text_count += 1
    return {"memorised_ngrams": copied_total / ngram_total if ngram_total else 0.0,
            "memorised_texts": texts_copied / text_count if text_count else 0.0}


def text_metrics(texts: Sequence[str], train_text: str | NgramIndex | None = None, unit: Unit = "word",
                 max_n: int = 4, repetition_n: int = 4, memorisation_n: int | None = None) -> dict[str, float]:
    """distinct_1..distinct_{max_n}, repetition_{repetition_n} and, given the training text, memorisation.

    `memorisation_n` defaults to 8 for words and 50 for characters (ignored when an
    `NgramIndex` is passed: its own n is used). Keys name the unit: e.g. distinct_2,
    repetition_4, memorised_ngrams, memorised_texts, memorisation_n.
    """
    metrics = {f"distinct_{n}": distinct_n(texts, n, unit) for n in range(1, max_n + 1)}
    metrics[f"repetition_{repetition_n}"] = repetition_rate(texts, repetition_n, unit)
    if train_text is not None:
        if not isinstance(train_text, NgramIndex):
            n = memorisation_n or (8 if unit == "word" else 50)
            train_text = NgramIndex(train_text, n, unit)
        metrics |= memorisation(texts, train_text)
        metrics["memorisation_n"] = float(train_text.n)
    return metrics
