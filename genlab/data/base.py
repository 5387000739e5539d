"""What the data layer hands to the rest of genlab, and the report it keeps on the way."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np

from genlab.errors import DataError
from genlab.files import atomic_write


@dataclasses.dataclass
class DataReport:
    """Where a dataset came from and what was found in it; saved in every run folder."""

    name: str
    kind: str  # "image" | "text" | "table"
    source: str = ""  # the path or URL it resolved to
    resolved_from: str = ""  # "cache" | "system" | "download" | "bundled" | "path"
    counts: dict[str, int] = dataclasses.field(default_factory=dict)
    shape: list[int] = dataclasses.field(default_factory=list)
    classes: list[str] = dataclasses.field(default_factory=list)
    class_counts: dict[str, int] = dataclasses.field(default_factory=dict)
    bad_files: list[tuple[str, str]] = dataclasses.field(default_factory=list)  # (path, reason)
    notes: list[str] = dataclasses.field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def summary(self) -> str:
        lines = [f"{self.name} ({self.kind}) from {self.resolved_from}: {self.source}"]
        lines.append("  counts: " + ", ".join(f"{k} {v:,}" for k, v in self.counts.items()))
        if self.shape:
            lines.append(f"  shape: {' x '.join(map(str, self.shape))}")
        if self.classes:
            shown = ", ".join(f"{c} ({self.class_counts.get(c, 0):,})" for c in self.classes[:20])
            more = f" and {len(self.classes) - 20} more" if len(self.classes) > 20 else ""
            lines.append(f"  classes ({len(self.classes)}): {shown}{more}")
        lines.append(f"  bad files: {len(self.bad_files)}")
        lines += [f"    {path}: {reason}" for path, reason in self.bad_files[:20]]
        if len(self.bad_files) > 20:
            lines.append(f"    ... and {len(self.bad_files) - 20} more")
        lines += [f"  note: {note}" for note in self.notes]
        return "\n".join(lines)

    def check_bad_fraction(self, total: int, max_bad_fraction: float) -> None:
        """Stop before training when too many files could not be read."""
        if total and len(self.bad_files) / total > max_bad_fraction:
            first = "; ".join(f"{p}: {r}" for p, r in self.bad_files[:5])
            raise DataError(
                f"{len(self.bad_files)} of {total} files in {self.source} could not be used "
                f"(more than {max_bad_fraction:.0%}); first: {first}",
                "remove or repair those files, or raise the limit with --data-max-bad-fraction",
            )


@dataclasses.dataclass
class ImageData:
    """Images as uint8 arrays (N, C, H, W) with integer labels (-1 when unlabelled)."""

    name: str
    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    classes: tuple[str, ...]
    report: DataReport
    sound: str = ""  # spectrograms of sound: their settings (genlab.data.spectrogram.sound_config); "" for images
    # (train, test): every caption and every object ({"shape", "colour", "size", "x", "y"}) of each image, for
    # sets that have them (genlab.data.shapes)
    captions: tuple[list[list[str]], list[list[str]]] | None = None
    objects: tuple[list[list[dict]], list[list[dict]]] | None = None
    # (train, test): for each caption of each image, the boxes of the objects it names in the order it names them,
    # (x, y, r) centre and half-side as fractions of the image (what a layout-grounded model trains on)
    layouts: tuple[list[list[list[tuple[float, float, float]]]], ...] | None = None

    kind = "image"

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.train_x.shape[1:])

    def content_hash(self) -> str:
        """A short hash of the pixels and labels, to key caches that depend on the data."""
        import hashlib

        h = hashlib.sha256()
        if hasattr(self.train_x, "digest"):  # prepared shards (genlab.data.shards) are named by their files
            return hashlib.sha256(self.train_x.digest.encode()).hexdigest()[:16]
        for array in (self.train_x, self.train_y, self.test_x, self.test_y):
            h.update(np.ascontiguousarray(array).tobytes())
        return h.hexdigest()[:16]


@dataclasses.dataclass
class TextData:
    """A corpus as one training string and one held-out string."""

    name: str
    train: str
    test: str
    report: DataReport

    kind = "text"


def fill_report(data: Any) -> None:
    """The counts, shape, classes and class counts of arrays of examples (images, clips) in their report."""
    report = data.report
    report.counts = {"train": len(data.train_x), "test": len(data.test_x)}
    report.shape = list(data.shape)
    report.classes = list(data.classes)
    labels = np.concatenate([data.train_y, data.test_y])
    report.class_counts = {c: int((labels == i).sum()) for i, c in enumerate(data.classes)}


def save_arrays(folder: Path, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
    """Cache parsed arrays as .npy (loaded later without pickle) plus meta.json, meta last."""
    folder.mkdir(parents=True, exist_ok=True)
    for key, array in arrays.items():
        import io

        buffer = io.BytesIO()
        np.save(buffer, array, allow_pickle=False)
        atomic_write(folder / f"{key}.npy", buffer.getvalue())
    atomic_write(folder / "meta.json", json.dumps(meta, indent=1).encode())


def load_arrays(folder: Path, keys: list[str]) -> tuple[dict[str, np.ndarray], dict[str, Any]] | None:
    """The cached arrays and meta, or None when the cache is missing or unreadable."""
    try:
        meta = json.loads((folder / "meta.json").read_text())
        arrays = {key: np.load(folder / f"{key}.npy", allow_pickle=False) for key in keys}
    except (OSError, ValueError):
        return None
    return arrays, meta


def prepared_format(path: Path) -> str | None:
    """The `format` a folder's meta.json names (data prepared on disk: genlab.data.tokens, genlab.data.shards), or
    None for a folder without one."""
    meta = Path(path) / "meta.json"
    if not meta.is_file():
        return None
    try:
        record = json.loads(meta.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    return record.get("format") if isinstance(record, dict) else None
