"""Text prepared once into token arrays on disk, so that a corpus larger than memory trains in bounded memory.

As nanoGPT's data/*/prepare.py does, the text is tokenized once, in parallel, into flat arrays of token ids on disk
(train.bin and val.bin: uint16 when the vocabulary fits, else uint32), and training reads one window at a time from
them. `prepare_text`:

1. cuts the files into spans of about `chunk_mb` that end at a newline (so a span never splits a UTF-8
   character), with one boundary at the hold-out cut: the last `test_fraction` of the bytes is the validation text,
   as `genlab.data.text` holds out the tail;
2. fits the tokenizer: byte-level BPE on an evenly spread sample of the spans (`sample_mb`), or a char alphabet
   from a parallel pass over all of them;
3. encodes the spans in `workers` processes, in order, appending each span's ids to its split's file;
4. writes tokenizer.json and, last, meta.json (the tokenizer's hash, the counts, the sources' sizes and mtimes,
   the seconds and MB/s): a folder with meta.json is whole, and the arrays are checked against it when loaded.

`load_tokens` opens a prepared folder as `TokenData`; its `TokenFile`s read windows with `os.pread` rather than
a memory map, so that the pages read stay in the kernel's page cache instead of the process's resident memory.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import multiprocessing
import os
import time
from pathlib import Path

import numpy as np

from genlab.data.base import DataReport, prepared_format
from genlab.data.text import decode_utf8, text_files
from genlab.data.tokenizers import BPETokenizer, CharTokenizer, Tokenizer, load_tokenizer, remember
from genlab.errors import DataError
from genlab.files import atomic_write

log = logging.getLogger(__name__)

FORMAT = "genlab-tokens"
META_FILE = "meta.json"
SPLITS = ("train", "val")


# -- reading a prepared folder --------------------------------------------------------------------------


class TokenFile:
    """A flat array of token ids on disk, read a slice at a time (picklable: it reopens its file in each process,
    as a DataLoader worker or a DDP rank needs)."""

    def __init__(self, path: Path, dtype: str, length: int):
        self.path, self.dtype, self.length = Path(path), np.dtype(dtype), length
        self._fd: int | None = None
        self._pid = -1

    def __len__(self) -> int:
        return self.length

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_fd": None, "_pid": -1}

    def read(self, start: int, count: int) -> np.ndarray:
        """Ids start .. start + count (as int64)."""
        if start < 0 or start + count > self.length:
            raise IndexError(f"tokens {start}..{start + count} outside {self.path.name}'s {self.length}")
        if self._pid != os.getpid():
            self._fd, self._pid = os.open(self.path, os.O_RDONLY), os.getpid()
        size = self.dtype.itemsize
        raw = os.pread(self._fd, count * size, start * size)
        return np.frombuffer(raw, dtype=self.dtype).astype(np.int64)


@dataclasses.dataclass
class TokenData:
    """A prepared corpus: its training and validation token files and the tokenizer that made them."""

    name: str
    train: TokenFile
    test: TokenFile
    tokenizer: Tokenizer
    meta: dict
    report: DataReport

    kind = "tokens"

    def text(self, split: str = "test", tokens: int = 200_000) -> str:
        """The first `tokens` ids of a split, decoded: a bounded piece of the text for metrics that read text."""
        file = self.train if split == "train" else self.test
        return self.tokenizer.decode(file.read(0, min(tokens, len(file))).tolist())


def is_token_folder(path: Path) -> bool:
    return prepared_format(path) == FORMAT


def load_tokens(folder: str | Path) -> TokenData:
    """A folder made by `prepare_text` (genlab data prepare), its arrays checked against meta.json."""
    folder = Path(folder).resolve()
    meta = json.loads((folder / META_FILE).read_text())
    again = f"prepare it again: genlab data prepare {meta.get('source', 'TEXT')} --out {folder}"
    if meta.get("version") != 1:
        raise DataError(f"{folder} was prepared by another genlab (token format version {meta.get('version')})", again)
    files = {}
    for split in SPLITS:
        path = folder / f"{split}.bin"
        expected = meta["tokens"][split] * np.dtype(meta["dtype"]).itemsize
        if not path.is_file() or path.stat().st_size != expected:
            raise DataError(f"{path} is missing or not the {meta['tokens'][split]:,} tokens meta.json records", again)
        files[split] = TokenFile(path, meta["dtype"], meta["tokens"][split])
    tokenizer = remember(load_tokenizer(folder))
    if tokenizer.hash != meta["tokenizer_hash"]:
        raise DataError(f"{folder / 'tokenizer.json'} is not the tokenizer the tokens were made with "
                        f"(hash {tokenizer.hash}, meta.json says {meta['tokenizer_hash']})", again)
    report = DataReport(folder.name, "tokens", str(folder), "path")
    report.counts = {"train tokens": meta["tokens"]["train"], "validation tokens": meta["tokens"]["val"],
                     "text bytes": meta["bytes"], "vocabulary": tokenizer.vocab_size}
    report.notes.append(f"prepared from {meta['source']} with a {meta['tokenizer']} tokenizer "
                        f"({meta['tokenizer_hash']}) at {meta['mb_per_s']} MB/s")
    return TokenData(folder.name, files["train"], files["val"], tokenizer, meta, report)


# -- preparing one -------------------------------------------------------------------------------------


def spans(files: list[Path], chunk_bytes: int, test_fraction: float) -> list[tuple[str, int, int, str]]:
    """(file, start, end, split) spans of about `chunk_bytes`, each ending after a newline (or at its file's end);
    the spans after the byte `(1 - test_fraction)` of the whole corpus are the validation split."""
    sizes = [f.stat().st_size for f in files]
    cut = int(sum(sizes) * (1 - test_fraction)) if test_fraction > 0 else sum(sizes)
    out, before = [], 0
    for file, size in zip(files, sizes, strict=True):
        targets = sorted({*range(chunk_bytes, size, chunk_bytes), *([cut - before] if 0 < cut - before < size else [])})
        bounds = [0]
        with open(file, "rb") as f:
            for target in targets:
                if target <= bounds[-1]:
                    continue
                f.seek(target)
                f.readline()  # on to the end of the line
                if f.tell() < size:
                    bounds.append(f.tell())
        bounds.append(size)
        out += [(str(file), a, b, "train" if before + a < cut else "val") for a, b in zip(bounds, bounds[1:]) if b > a]
        before += size
    return out


def _read_span(path: str, start: int, end: int) -> tuple[str | None, str]:
    with open(path, "rb") as f:
        f.seek(start)
        return decode_utf8(f.read(end - start), offset=start)


_WORKER: dict = {}


def _start_worker(kind: str, payload: str) -> None:
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # one process per core: the BPE library must not fan out again
    tokenizer = CharTokenizer(payload) if kind == "char" else BPETokenizer.from_json(payload)
    _WORKER["tokenizer"] = tokenizer
    if kind == "char":  # ids by code point: a sorted table searched in NumPy, not a dict per character
        points = np.array([ord(c) for c in tokenizer.chars], dtype=np.uint32)
        order = np.argsort(points)
        _WORKER["points"], _WORKER["ids"] = points[order], (order + 1).astype(np.uint32)


def _encode_span(span: tuple[str, int, int, str]) -> tuple[np.ndarray | None, str, int]:
    """(the span's ids, why it was refused, its bytes)."""
    path, start, end, _ = span
    text, reason = _read_span(path, start, end)
    if text is None:
        return None, reason, end - start
    tokenizer = _WORKER["tokenizer"]
    if isinstance(tokenizer, CharTokenizer):
        points = np.frombuffer(text.encode("utf-32-le"), dtype="<u4")
        table, ids = _WORKER["points"], _WORKER["ids"]
        where = np.minimum(np.searchsorted(table, points), len(table) - 1)
        return np.where(table[where] == points, ids[where], 0).astype(np.uint32), "", end - start
    return np.asarray(tokenizer.encode(text), dtype=np.uint32), "", end - start


def _chars_of_span(span: tuple[str, int, int, str]) -> str:
    text, _ = _read_span(*span[:3])
    return "".join(set(text)) if text else ""


def _alphabet(all_spans: list, pool) -> CharTokenizer:
    """Every character of the corpus (a char model's alphabet comes from all of its text, as nanoGPT's does)."""
    chars = set().union(*pool.imap_unordered(_chars_of_span, all_spans, chunksize=4))
    return CharTokenizer("".join(sorted(chars - {"\ufffd"})))


def _bpe(all_spans: list, vocab_size: int, sample_bytes: int) -> BPETokenizer:
    """Byte-level BPE fitted on the head of every training span, `sample_bytes` in all: a sample spread evenly
    over the corpus, cut at a line's end."""
    train = [s for s in all_spans if s[3] == "train"]
    take = max(1 << 16, sample_bytes // max(1, len(train)))
    sample = []
    for path, start, end, _ in train:
        with open(path, "rb") as f:
            f.seek(start)
            raw = f.read(min(end - start, take))
        if end - start > take:
            raw = raw[: raw.rfind(b"\n") + 1] or raw
        if b"\x00" not in raw:
            sample.append(raw.decode("utf-8", errors="ignore"))
    return BPETokenizer.fit("".join(sample), vocab_size)


def prepare_text(source: str | Path, out: str | Path, tokenizer: str = "bpe", vocab_size: int = 4096,
                 test_fraction: float = 0.005, workers: int | None = None, chunk_mb: float = 8,
                 sample_mb: float = 64, max_bad_fraction: float = 0.05) -> dict:
    """Tokenize the text at `source` (a file or a folder of text files) into `out`; returns meta.json's record."""
    if tokenizer not in ("char", "bpe"):
        raise DataError(f"--tokenizer {tokenizer!r} is not one of char, bpe", "pass --tokenizer bpe or char")
    if not 0 <= test_fraction < 0.5:
        raise DataError(f"--test-fraction {test_fraction} is outside [0, 0.5)", "e.g. --test-fraction 0.005")
    source, out = Path(source).resolve(), Path(out).resolve()
    files = text_files(source, "point genlab data prepare at a text file or a folder of them")
    out.mkdir(parents=True, exist_ok=True)
    (out / META_FILE).unlink(missing_ok=True)  # the folder is not whole until the new meta.json is written
    workers = workers or os.cpu_count() or 1
    all_spans = spans(files, max(1 << 12, int(chunk_mb * 2**20)), test_fraction)
    start = time.perf_counter()
    # fork, so that a script calling this needs no __main__ guard; the BPE library notices the fork and keeps each
    # worker to one thread, which is what one process per core wants
    context = multiprocessing.get_context("fork")
    if tokenizer == "char":
        with context.Pool(workers) as pool:
            fitted = _alphabet(all_spans, pool)
    else:
        fitted = _bpe(all_spans, vocab_size, int(sample_mb * 2**20))
    fit_seconds = time.perf_counter() - start
    payload = fitted.chars if tokenizer == "char" else fitted.json
    dtype = np.uint16 if fitted.vocab_size <= 2**16 else np.uint32
    counts, bad, total = {s: 0 for s in SPLITS}, {}, 0
    handles = {s: open(out / f"{s}.bin.partial", "wb") for s in SPLITS}
    try:
        with context.Pool(workers, initializer=_start_worker, initargs=(tokenizer, payload)) as pool:
            for span, (ids, reason, size) in zip(all_spans, pool.imap(_encode_span, all_spans), strict=True):
                total += size
                if ids is None:
                    bad.setdefault(span[0], reason)
                    continue
                handles[span[3]].write(ids.astype(dtype).tobytes())
                counts[span[3]] += len(ids)
    finally:
        for handle in handles.values():
            handle.close()
    if bad and len(bad) > max_bad_fraction * len(files):
        shown = "; ".join(f"{p}: {r}" for p, r in list(bad.items())[:5])
        raise DataError(f"{len(bad)} of {len(files)} text files could not be read ({shown})",
                        "fix or remove them (text must be UTF-8), or raise --max-bad-fraction")
    if counts["train"] == 0:
        raise DataError(f"no training text under {source}", "prepare a text file or folder with text in it")
    for split in SPLITS:
        os.replace(out / f"{split}.bin.partial", out / f"{split}.bin")
    fitted.save(out)
    seconds = time.perf_counter() - start
    meta = {"format": FORMAT, "version": 1, "source": str(source), "tokenizer": tokenizer,
            "tokenizer_hash": fitted.hash, "vocab_size": fitted.vocab_size, "dtype": np.dtype(dtype).name,
            "tokens": counts, "bytes": total, "test_fraction": test_fraction, "workers": workers,
            "files": [{"path": str(f), "bytes": f.stat().st_size, "mtime": f.stat().st_mtime} for f in files],
            "bad_files": [[p, r] for p, r in bad.items()], "fit_seconds": round(fit_seconds, 2),
            "seconds": round(seconds, 2), "mb_per_s": round(total / 2**20 / max(seconds, 1e-9), 1)}
    atomic_write(out / META_FILE, json.dumps(meta, indent=1))
    return meta
