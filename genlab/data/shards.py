"""Image folders prepared once into Arrow shards on disk (Hugging Face `datasets`), so that a folder of any number of
images trains in bounded memory.

Why `datasets` rather than litdata (docs/scale.md): Arrow files are memory-mapped and read by row index, so training
keeps genlab's exact resume (epoch e's order is a permutation drawn from seed + e, and a resumed run starts at the
batch it had reached) and a process of a multi-process run can take its own rows of each batch by index; litdata
streams chunks in an order of its own, resumable through its loader's state only, and its wheel pulls a CUDA build
of torch on this machine.

`prepare_images`:
1. lists the image files (class subfolders become labels, as genlab.data.images reads a folder) and reads every
   header in worker processes (unreadable files are reported and skipped);
2. fixes the size (`image_size`, or the most common one) and the channels (colour if any image is);
3. holds out the same fixed `test_fraction` as the in-memory path does;
4. decodes, converts, resizes and encodes each image again as PNG in `workers` processes into Arrow shards
   (train/ and test/, each a `datasets` folder), and writes meta.json last: a folder with it is whole.

`load_image_shards` opens such a folder as ImageData whose `train_x` and `test_x` are `ShardImages`, arrays in form
(length, shape, indexing) that decode the rows asked for; genlab.data.loader decodes training batches in DataLoader
worker processes.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import time
import uuid
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from genlab.data.base import DataReport, ImageData, fill_report, prepared_format
from genlab.data.images import IMAGE_SUFFIXES
from genlab.errors import DataError
from genlab.files import atomic_write

FORMAT = "genlab-image-shards"
META_FILE = "meta.json"


class ShardImages:
    """The images of one split's Arrow shards as a read-only uint8 array (N, C, H, W): indexing with an int, a slice
    or an array of indices decodes just those rows.

    The shards are memory-mapped, and every page fault on a mapped file maps the pages around it too (the kernel's
    fault-around), so random reads leave far more of the files resident in this process than they read: 5,000
    random rows of 7 kB put 650 MB of a 1.3 GB shard in its RSS. These are clean pages of the page cache, but they
    count, and over a run they would grow to the whole dataset. After every RELEASE_ROWS rows read, the reader
    drops its mapped pages (madvise MADV_DONTNEED: the mapping stays, and the next read faults the page in again
    from the page cache), which keeps its memory bounded by what it read since."""

    RELEASE_ROWS = 1024

    def __init__(self, path: Path, length: int, shape: tuple[int, int, int], digest: str):
        self.path, self.length, self.item_shape, self.digest = Path(path), length, tuple(shape), digest
        self._rows = None
        self._mapped: list[tuple[int, int]] = []
        self._unreleased = 0

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_rows": None, "_mapped": [], "_unreleased": 0}  # each process maps the files

    def __len__(self) -> int:
        return self.length

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.length, *self.item_shape)

    dtype = np.dtype(np.uint8)
    ndim = 4

    def __getitem__(self, key) -> np.ndarray:
        if isinstance(key, int | np.integer):
            return self[np.array([key])][0]
        indices = np.arange(self.length)[key] if isinstance(key, slice) else np.asarray(key, dtype=np.int64)
        if self._rows is None:
            from datasets import load_from_disk

            self._rows = load_from_disk(str(self.path))
            self._mapped = mapped_ranges(self.path)
        out = np.empty((len(indices), *self.item_shape), dtype=np.uint8)
        for start in range(0, len(indices), self.RELEASE_ROWS):
            chunk = indices[start : start + self.RELEASE_ROWS]
            for i, png in enumerate(self._rows[chunk.tolist()]["png"], start):
                out[i] = decode(png, self.item_shape[0])
            self._unreleased += len(chunk)
            if self._unreleased >= self.RELEASE_ROWS:
                release(self._mapped)
                self._unreleased = 0
        return out

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        whole = self[:]
        return whole if dtype is None else whole.astype(dtype)


def mapped_ranges(folder: Path) -> list[tuple[int, int]]:
    """(address, length) of this process's memory mappings of files under `folder` (Linux; none elsewhere)."""
    out, prefix = [], str(Path(folder).resolve())
    try:
        lines = Path("/proc/self/maps").read_text().splitlines()
    except OSError:
        return out
    for line in lines:
        fields = line.split(maxsplit=5)
        if len(fields) == 6 and fields[5].startswith(prefix):
            start, end = (int(x, 16) for x in fields[0].split("-"))
            out.append((start, end - start))
    return out


def release(ranges: list[tuple[int, int]]) -> None:
    """Drop the resident pages of read-only file mappings (they stay mapped; reads fault them in again)."""
    if not ranges:
        return
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    for start, length in ranges:
        libc.madvise(start, length, 4)  # MADV_DONTNEED


def decode(png: bytes, channels: int) -> np.ndarray:
    with Image.open(io.BytesIO(png)) as image:
        array = np.asarray(image, dtype=np.uint8)
    return array[None] if channels == 1 else array.transpose(2, 0, 1)


def is_shard_folder(path: Path) -> bool:
    return prepared_format(path) == FORMAT


def load_image_shards(folder: str | Path) -> ImageData:
    """A folder made by `prepare_images` (genlab data prepare on a folder of images)."""
    folder = Path(folder).resolve()
    meta = json.loads((folder / META_FILE).read_text())
    if meta.get("version") != 1:
        raise DataError(f"{folder} was prepared by another genlab (shard format version {meta.get('version')})",
                        f"prepare it again: genlab data prepare {meta.get('source', 'IMAGES')} --out {folder}")
    parts = {}
    for split in ("train", "test"):
        if not (folder / split / "dataset_info.json").is_file():
            raise DataError(f"{folder / split} is missing: the shards are incomplete",
                            f"prepare it again: genlab data prepare {meta['source']} --out {folder}")
        labels = np.load(folder / f"{split}_labels.npy", allow_pickle=False)
        parts[split] = (ShardImages(folder / split, len(labels), tuple(meta["shape"]), meta["digest"]), labels)
    note = f"prepared from {meta['source']} into Arrow shards at {meta['images_per_s']} images/s"
    report = DataReport(**{**meta["report"], "notes": [*meta["report"]["notes"], note]})
    data = ImageData(folder.name, *parts["train"], *parts["test"], tuple(meta["classes"]), report)
    fill_report(data)
    return data


# -- preparing a folder --------------------------------------------------------------------------------------------


def _header(path: str) -> tuple[tuple[int, int] | None, str]:
    """((height, width), mode) of an image file, or (None, why it cannot be read), from its header alone."""
    try:
        if os.path.getsize(path) == 0:
            return None, "empty file"
        with Image.open(path) as image:
            return (image.height, image.width), image.mode
    except (OSError, ValueError, Image.DecompressionBombError) as error:
        return None, f"unreadable image ({type(error).__name__}: {str(error)[:80]})"


def _rows(items: list[tuple[str, int]], size: tuple[int, int], channels: int):
    """The generator each `datasets` worker runs over its share of (path, label): PNG bytes of the image conformed to
    `size` and `channels`, and its label; a file that fails to decode now is left out."""
    for path, label in items:
        try:
            with Image.open(path) as image:
                image = image.convert("L" if channels == 1 else "RGB")
                if (image.height, image.width) != size:
                    image = image.resize((size[1], size[0]), Image.Resampling.BICUBIC)
                buffer = io.BytesIO()
                image.save(buffer, format="PNG", compress_level=1)
        except (OSError, ValueError, Image.DecompressionBombError):
            continue
        yield {"png": buffer.getvalue(), "label": label}


def prepare_images(source: str | Path, out: str | Path, image_size: int | None = None, test_fraction: float = 0.1,
                   workers: int | None = None, max_bad_fraction: float = 0.05) -> dict:
    """Encode the image folder `source` into Arrow shards in `out`; returns meta.json's record."""
    from datasets import Dataset, Features, Value, disable_progress_bars

    source, out = Path(source).resolve(), Path(out).resolve()
    workers = workers or os.cpu_count() or 1
    start = time.perf_counter()
    files = sorted(p for p in source.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DataError(f"no image files ({', '.join(sorted(IMAGE_SUFFIXES))}) under {source}",
                        "point genlab data prepare at a folder of images, or a text file or folder of text")
    out.mkdir(parents=True, exist_ok=True)
    (out / META_FILE).unlink(missing_ok=True)
    report = DataReport(source.name, "image", str(source), "path")
    with ProcessPoolExecutor(workers) as pool:
        headers = list(pool.map(_header, map(str, files), chunksize=256))
    good = []
    for path, (size, mode) in zip(files, headers, strict=True):
        if size is None:
            report.bad_files.append((str(path.relative_to(source)), mode))
        else:
            good.append((path, size, mode))
    report.check_bad_fraction(len(files), max_bad_fraction)
    if not good:
        raise DataError(f"none of the {len(files)} images under {source} could be read", "check the files")
    channels = 1 if all(mode in ("L", "1", "I", "I;16", "LA") for _, _, mode in good) else 3
    sizes = Counter(size for _, size, _ in good)
    target = (image_size, image_size) if image_size else sizes.most_common(1)[0][0]
    resized = sum(n for size, n in sizes.items() if size != target)
    if resized:
        report.notes.append(f"resized {resized} images to {target[0]}x{target[1]}")
    names = sorted({p.parent.relative_to(source).as_posix() for p, _, _ in good} - {"."})
    labelled = bool(names) and all(p.parent != source for p, _, _ in good)
    classes = tuple(names) if labelled else ()
    index = {c: i for i, c in enumerate(classes)}
    items = [(str(p), index[p.parent.relative_to(source).as_posix()] if labelled else -1) for p, _, _ in good]
    order = np.random.default_rng(0).permutation(len(items))  # the in-memory path's split
    n_test = int(round(len(items) * test_fraction)) if len(items) >= 10 else 0
    disable_progress_bars()
    features = Features({"png": Value("binary"), "label": Value("int64")})
    counts = {}
    for split, chosen in (("test", order[:n_test]), ("train", order[n_test:])):
        part = [items[i] for i in sorted(chosen)]  # file order on disk; training shuffles by index
        cache = out / ".cache"
        # `datasets` gives each of num_proc workers a contiguous share of the list in gen_kwargs
        rows = Dataset.from_generator(_rows, features=features, cache_dir=str(cache),
                                      num_proc=max(1, min(workers, len(part))),
                                      fingerprint=uuid.uuid4().hex,  # not a hash of every path: written once
                                      gen_kwargs={"items": part, "size": tuple(target), "channels": channels})
        shutil.rmtree(out / split, ignore_errors=True)
        rows.save_to_disk(str(out / split))
        np.save(out / f"{split}_labels.npy", np.asarray(rows["label"], dtype=np.int64))
        del rows
        shutil.rmtree(cache, ignore_errors=True)
        counts[split] = len(np.load(out / f"{split}_labels.npy"))
    lost = len(items) - sum(counts.values())
    if lost:
        report.notes.append(f"{lost} images decoded in their header but not in full were left out")
    seconds = time.perf_counter() - start
    listing = "\n".join(f"{p}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p, _, _ in good[:100_000])
    meta = {"format": FORMAT, "version": 1, "source": str(source), "shape": [channels, *target],
            "classes": list(classes), "counts": counts, "files": len(files), "workers": workers,
            "digest": hashlib.sha256(f"{listing}|{len(files)}|{target}|{test_fraction}".encode()).hexdigest()[:16],
            "report": report.to_dict(), "seconds": round(seconds, 2),
            "images_per_s": round(sum(counts.values()) / max(seconds, 1e-9), 1)}
    atomic_write(out / META_FILE, json.dumps(meta, indent=1))
    return meta
