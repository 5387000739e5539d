"""Text readers: one file or a folder of .txt files, split into training and held-out text."""

from __future__ import annotations

import logging
from pathlib import Path

from genlab.data.base import DataReport, TextData
from genlab.errors import DataError

TEXT_SUFFIXES = {".txt", ".md", ".text", ""}
IN_MEMORY_BYTES = 256 * 2**20  # above this, training from text held in memory is slow and large: prepare it

log = logging.getLogger(__name__)


def _read_text(path: Path) -> tuple[str | None, str]:
    """Decode a file as UTF-8; binary files (NUL bytes) and undecodable ones are refused with a reason."""
    try:
        raw = path.read_bytes()
    except OSError as error:
        return None, f"unreadable ({error.strerror})"
    if not raw.strip():
        return None, "empty file"
    return decode_utf8(raw, scan=65536)


def decode_utf8(raw: bytes, offset: int = 0, scan: int | None = None) -> tuple[str | None, str]:
    """`raw` decoded, or None and why not: binary (NUL bytes in its first `scan` bytes; all of them by default) or
    not UTF-8 (naming the byte where decoding failed, counted from `offset`: where `raw` starts in its file)."""
    if b"\x00" in raw[:scan]:
        return None, "binary file (NUL bytes)"
    try:
        return raw.decode("utf-8"), ""
    except UnicodeDecodeError as error:
        return None, f"not UTF-8 ({error.reason} at byte {offset + error.start})"


def text_files(path: Path, fix: str) -> list[Path]:
    """The text file at `path`, or every text file under the folder, sorted; none is a DataError with `fix`."""
    path = Path(path).resolve()
    files = [path] if path.is_file() else sorted(
        p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in TEXT_SUFFIXES)
    if not files:
        raise DataError(f"no text files (.txt, .md) under {path}", fix)
    return files


def load_text(
    path: Path, test_fraction: float = 0.1, max_bad_fraction: float = 0.05, name: str | None = None
) -> TextData:
    """A text file or folder; the last `test_fraction` of the text is held out, as nanoGPT splits it."""
    path = Path(path).resolve()
    files = text_files(path, "point --data at a text file or a folder of them")
    size = sum(f.stat().st_size for f in files)
    if size > IN_MEMORY_BYTES:
        log.warning("%s holds %.0f MB of text, read whole into memory (several times its size once tokenized); "
                    "tokenize it once into token files with `genlab data prepare %s --out DIR` and train with "
                    "--data DIR, in bounded memory", path, size / 2**20, path)
    report = DataReport(name or path.stem, "text", str(path), "path")
    pieces = []
    for file in files:
        text, reason = _read_text(file)
        if text is None:
            report.bad_files.append((str(file), reason))
        else:
            pieces.append(text)
    report.check_bad_fraction(len(files), max_bad_fraction)
    if not pieces:
        raise DataError(
            f"none of the {len(files)} text files under {path} could be read", "check their encoding (UTF-8)"
        )
    text = "\n".join(pieces)
    return split_text(report.name, text, report, test_fraction)


def split_text(name: str, text: str, report: DataReport, test_fraction: float = 0.1) -> TextData:
    cut = int(len(text) * (1 - test_fraction))
    report.counts = {"characters": len(text), "train characters": cut, "test characters": len(text) - cut,
                     "distinct characters": len(set(text))}
    return TextData(name, text[:cut], text[cut:], report)
