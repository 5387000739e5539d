"""Tokenizers for the language-model families: characters, or byte-level BPE (Hugging Face `tokenizers`).

- `CharTokenizer`: one id per character seen in training, plus id 0 for anything else
  (decoded as U+FFFD), so unseen input never crashes; `encode(text, strict=True)` names
  the characters it cannot encode instead. Its alphabet is small enough to live in the
  model config, which keeps a char model self-describing.
- `BPETokenizer`: byte-level BPE (GPT-2 style) trained on the corpus; every string
  encodes, since any byte is a token. It is saved as `tokenizer.json` in the model folder
  and named in the config by the SHA-256 of that file.

Tokenizers are content addressed: `remember`/`recall` keep the ones this process has
fitted or loaded, so a model built from a config finds its tokenizer by hash.
`StreamDecoder` turns ids into text pieces as they are generated, holding back bytes
that do not yet make a whole UTF-8 character.
"""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path
from typing import Literal

import numpy as np

from genlab.errors import DataError
from genlab.files import atomic_write

TOKENIZER_FILE = "tokenizer.json"
UNKNOWN = "\ufffd"  # what the char tokenizer's unknown id decodes to
Kind = Literal["char", "bpe"]


class CharTokenizer:
    kind = "char"

    def __init__(self, chars: str):
        if len(set(chars)) != len(chars) or UNKNOWN in chars:
            raise ValueError("a char tokenizer's alphabet must hold distinct characters and not U+FFFD")
        self.chars = chars
        self.stoi = {c: i + 1 for i, c in enumerate(chars)}  # id 0: unknown
        self.itos = [UNKNOWN, *chars]

    @classmethod
    def fit(cls, text: str) -> CharTokenizer:
        return cls("".join(sorted(set(text) - {UNKNOWN})))

    @property
    def vocab_size(self) -> int:
        return len(self.itos)

    @property
    def hash(self) -> str:
        return hashlib.sha256(self.chars.encode()).hexdigest()[:16]

    def unknown(self, text: str) -> list[str]:
        """The distinct characters of `text` this tokenizer cannot encode, sorted."""
        return sorted(set(text) - self.stoi.keys())

    def encode(self, text: str, strict: bool = False) -> list[int]:
        if strict:
            refuse_unknown(self.unknown(text))
        get = self.stoi.get
        return [get(c, 0) for c in text]

    def decode(self, ids) -> str:
        itos = self.itos
        return "".join(itos[i] if 0 <= i < len(itos) else UNKNOWN for i in ids)

    def save(self, folder: Path) -> None:
        atomic_write(Path(folder) / TOKENIZER_FILE, json.dumps({"kind": "char", "chars": self.chars}))


class BPETokenizer:
    kind = "bpe"

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer  # a tokenizers.Tokenizer
        self.json = tokenizer.to_str()

    @classmethod
    def fit(cls, text: str, vocab_size: int) -> BPETokenizer:
        """Byte-level BPE with `vocab_size` tokens at most (256 byte tokens plus merges)."""
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

        if vocab_size < 257:
            raise ValueError(f"a byte-level BPE vocabulary needs more than the 256 byte tokens, got {vocab_size}")
        tokenizer = Tokenizer(models.BPE())
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tokenizer.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                      show_progress=False, special_tokens=[])
        tokenizer.train_from_iterator(_chunks(text), trainer)
        return cls(tokenizer)

    @classmethod
    def from_json(cls, text: str) -> BPETokenizer:
        from tokenizers import Tokenizer

        return cls(Tokenizer.from_str(text))

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size()

    @property
    def hash(self) -> str:
        return hashlib.sha256(self.json.encode()).hexdigest()[:16]

    def unknown(self, text: str) -> list[str]:
        return []  # every byte is a token

    def encode(self, text: str, strict: bool = False) -> list[int]:
        # Encoding a 1 MB string in one call is slow and memory-hungry; lines keep it linear.
        pieces = text.splitlines(keepends=True) or [text]
        return [i for encoding in self.tokenizer.encode_batch(pieces) for i in encoding.ids]

    def decode(self, ids) -> str:
        return self.tokenizer.decode(list(ids))

    def encode_with_dropout(self, text: str, dropout: float, copies: int, seed: int) -> list[np.ndarray]:
        """`copies` encodings of `text` under BPE-dropout (Provilkov et al. 2020), seeded.

        BPE applies its merges in rank order; BPE-dropout skips each merge that could apply with
        probability `dropout` at every step, so a word comes out in smaller, varying pieces and a
        model trained on many segmentations of a small corpus overfits its one segmentation less.
        Each decodes to `text`. Hugging Face's own dropout draws from an unseeded generator, so it is
        done here: `copies` segmentations are drawn for every distinct word, and each occurrence of
        the word in each copy takes one of them at random (the same seed gives the same copies).
        """
        if not 0 <= dropout < 1:
            raise ValueError(f"BPE-dropout must be in [0, 1), got {dropout}")
        rng = np.random.default_rng(seed)
        model = json.loads(self.json)["model"]
        vocab = model["vocab"]
        merges = {}
        for rank, merge in enumerate(model["merges"]):
            left, right = merge if isinstance(merge, list) else merge.split(" ")
            merges[vocab[left], vocab[right]] = (rank, vocab[left + right])
        pre = self.tokenizer.pre_tokenizer.pre_tokenize_str
        kinds: dict[str, int] = {}
        words = np.array(
            [
                kinds.setdefault(w, len(kinds))
                for line in text.splitlines(keepends=True)
                for w, _ in pre(line)
            ],
            dtype=np.int64,
        )
        pieces, lengths = [], []
        for word in kinds:  # insertion order: kind i is the i-th distinct word
            symbols = [vocab[ch] for ch in word]
            for _ in range(copies):
                segmented = _bpe_with_dropout(symbols, merges, dropout, rng)
                pieces.append(segmented)
                lengths.append(len(segmented))
        flat = np.fromiter((i for piece in pieces for i in piece), dtype=np.int64)
        lengths = np.array(lengths, dtype=np.int64)
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        encodings = []
        for _ in range(copies):
            chosen = words * copies + rng.integers(copies, size=len(words))
            n = lengths[chosen]
            # the ids of the chosen segmentations, one after another: each run starts at its segmentation's start
            offsets = np.repeat(starts[chosen] - np.concatenate([[0], np.cumsum(n)[:-1]]), n)
            encodings.append(flat[offsets + np.arange(n.sum())])
        return encodings

    def save(self, folder: Path) -> None:
        atomic_write(Path(folder) / TOKENIZER_FILE, self.json)


def _bpe_with_dropout(symbols: list[int], merges: dict, dropout: float, rng: np.random.Generator) -> list[int]:
    """One word's BPE with each applicable merge skipped with probability `dropout` at each step: the best
    ranked merge not skipped joins its pair wherever it occurs, left to right; the word is done when
    every applicable merge was skipped or none applies. With dropout 0 this is plain BPE."""
    while len(symbols) > 1:
        candidates = sorted({(*merges[pair], pair) for pair in zip(symbols, symbols[1:]) if pair in merges})
        if dropout:
            candidates = [c for c, u in zip(candidates, rng.random(len(candidates))) if u >= dropout]
        if not candidates:
            break
        _, merged, (left, right) = candidates[0]
        out, i = [], 0
        while i < len(symbols):
            if i + 1 < len(symbols) and symbols[i] == left and symbols[i + 1] == right:
                out.append(merged)
                i += 2
            else:
                out.append(symbols[i])
                i += 1
        symbols = out
    return symbols


Tokenizer = CharTokenizer | BPETokenizer


def _chunks(text: str, size: int = 1 << 16):
    for start in range(0, len(text), size):
        yield text[start : start + size]


def refuse_unknown(chars: list[str]) -> None:
    """A DataError naming the characters a tokenizer cannot encode, and what to do; nothing when there are none."""
    if chars:
        shown = ", ".join(repr(c) for c in chars[:20]) + (f" and {len(chars) - 20} more" if len(chars) > 20 else "")
        raise DataError(f"the tokenizer cannot encode {len(chars)} character(s) of this text: {shown}",
                        "remove or replace them (or pass --unknown drop to fine-tuning), or train a new model "
                        "with --tokenizer bpe, which encodes any text")


# -- content-addressed memory of the tokenizers this process has fitted or loaded --------------

_KNOWN: dict[str, Tokenizer] = {}


def remember(tokenizer: Tokenizer) -> Tokenizer:
    _KNOWN[tokenizer.hash] = tokenizer
    return tokenizer


def recall(hash: str) -> Tokenizer | None:
    return _KNOWN.get(hash)


@functools.lru_cache(maxsize=8)
def _fit_cached(kind: str, text_hash: str, vocab_size: int, text: str) -> Tokenizer:
    return CharTokenizer.fit(text) if kind == "char" else BPETokenizer.fit(text, vocab_size)


def fit_tokenizer(kind: Kind, text: str, vocab_size: int = 4096) -> Tokenizer:
    """Fit a tokenizer on training text (memoised: fitting the same text twice is free)."""
    if kind not in ("char", "bpe"):
        raise ValueError(f"tokenizer {kind!r} is not one of 'char', 'bpe'")
    digest = hashlib.sha256(text.encode()).hexdigest()
    return remember(_fit_cached(kind, digest, vocab_size if kind == "bpe" else 0, text))


def load_tokenizer(folder: str | Path) -> Tokenizer:
    """The tokenizer saved in a model folder."""
    path = Path(folder) / TOKENIZER_FILE
    if not path.exists():
        raise DataError(
            f"{path} is missing: the model folder has no tokenizer",
            "re-export the model with save_pretrained",
        )
    text = path.read_text()
    try:
        meta = json.loads(text)
    except json.JSONDecodeError as error:
        raise DataError(f"{path} is not valid JSON ({error})", "re-export the model with save_pretrained") from None
    if meta.get("kind") == "char":
        return remember(CharTokenizer(meta["chars"]))
    return remember(BPETokenizer.from_json(text))


class StreamDecoder:
    """Ids in, text pieces out, as soon as they make whole characters.

    A byte-level token may end inside a multi-byte UTF-8 character; decoding it alone gives
    U+FFFD. The decoder keeps the ids of the last few pieces, decodes them together, and
    emits only the new text once it no longer ends in a partial character (the method of
    Hugging Face's text-generation-inference `decode_token`).
    """

    def __init__(self, tokenizer: Tokenizer):
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self.prefix = 0  # ids[prefix:read] decode to text already emitted
        self.read = 0

    def push(self, token: int) -> str:
        if self.tokenizer.kind == "char":
            return self.tokenizer.decode([token])
        self.ids.append(token)
        before = self.tokenizer.decode(self.ids[self.prefix : self.read])
        text = self.tokenizer.decode(self.ids[self.prefix :])
        if text.endswith(UNKNOWN) and len(self.ids) - self.read < 4:  # at most 4 bytes per character
            return ""
        self.prefix, self.read = self.read, len(self.ids)
        return text[len(before) :]
