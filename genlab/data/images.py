"""Image readers: IDX files (MNIST family), CIFAR-10 binary batches, folders of image files."""

from __future__ import annotations

import gzip
import hashlib
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from genlab.data.base import DataReport, ImageData, load_arrays, save_arrays
from genlab.errors import DataError
from genlab.files import genlab_home

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}
ARRAY_KEYS = ["train_x", "train_y", "test_x", "test_y"]


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (optionally gzipped): magic 0x00 0x00 0x08 ndim, big-endian dims, uint8 data."""
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DataError(f"{path} is not an IDX file of unsigned bytes", "re-download or reinstall the dataset")
    ndim = raw[3]
    dims = np.frombuffer(raw, dtype=">u4", count=ndim, offset=4).astype(int)
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise DataError(f"{path} is truncated: {data.size} bytes for shape {tuple(dims)}", "re-download the file")
    return data.reshape(dims)


def parse_idx_folder(folder: Path, name: str, classes: tuple[str, ...]) -> ImageData:
    """The four standard IDX files of MNIST-style datasets in `folder`."""

    def find(stem: str) -> Path:
        for candidate in (folder / f"{stem}.gz", folder / stem):
            if candidate.exists():
                return candidate
        raise DataError(f"{folder} has no {stem}[.gz]", f"reinstall the {name} dataset")

    train_x = read_idx(find("train-images-idx3-ubyte"))[:, None]
    train_y = read_idx(find("train-labels-idx1-ubyte")).astype(np.int64)
    test_x = read_idx(find("t10k-images-idx3-ubyte"))[:, None]
    test_y = read_idx(find("t10k-labels-idx1-ubyte")).astype(np.int64)
    if len(train_x) != len(train_y) or len(test_x) != len(test_y):
        raise DataError(f"image and label counts differ in {folder}", f"reinstall the {name} dataset")
    return ImageData(name, train_x, train_y, test_x, test_y, classes, DataReport(name, "image", str(folder)))


def parse_cifar_binary(folder: Path, name: str, classes: tuple[str, ...]) -> ImageData:
    """CIFAR-10's binary version: records of 1 label byte + 3072 pixel bytes (no pickle)."""
    root = folder / "cifar-10-batches-bin" if (folder / "cifar-10-batches-bin").exists() else folder

    def read(files: list[str]) -> tuple[np.ndarray, np.ndarray]:
        records = np.concatenate([np.fromfile(root / f, dtype=np.uint8).reshape(-1, 3073) for f in files])
        return records[:, 1:].reshape(-1, 3, 32, 32), records[:, 0].astype(np.int64)

    train_x, train_y = read([f"data_batch_{i}.bin" for i in range(1, 6)])
    test_x, test_y = read(["test_batch.bin"])
    return ImageData(name, train_x, train_y, test_x, test_y, classes, DataReport(name, "image", str(folder)))


def load_image(path: str | Path, channels: int | None = None, size: tuple[int, int] | None = None) -> np.ndarray:
    """One image file -> uint8 (C, H, W), converted to `channels` and resized to `size` (H, W) if given."""
    path = Path(path)
    try:
        with Image.open(path) as image:
            image.load()
            mode = {1: "L", 3: "RGB"}.get(channels or 0, "RGB" if image.mode not in ("L", "1", "I", "I;16") else "L")
            image = image.convert(mode)
            if size is not None and image.size != (size[1], size[0]):
                image = image.resize((size[1], size[0]), Image.Resampling.BICUBIC)
            array = np.asarray(image, dtype=np.uint8)
    except FileNotFoundError:
        raise DataError(f"image file {path} does not exist", "check the path") from None
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as error:
        raise DataError(f"cannot read {path} as an image: {error}", "pass a PNG or JPEG file") from None
    return array[None] if array.ndim == 2 else array.transpose(2, 0, 1)


def _read_one(path: Path) -> tuple[np.ndarray | None, str]:
    """Decode one file; on failure return (None, reason) instead of raising."""
    try:
        if path.stat().st_size == 0:
            return None, "empty file"
        with Image.open(path) as image:
            image.load()
            if image.mode in ("L", "1", "I", "I;16", "LA"):
                return np.asarray(image.convert("L"), dtype=np.uint8)[None], ""
            return np.asarray(image.convert("RGB"), dtype=np.uint8).transpose(2, 0, 1), ""
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as error:
        return None, f"unreadable image ({type(error).__name__}: {str(error)[:80]})"


def load_image_folder(
    folder: Path,
    image_size: int | None = None,
    test_fraction: float = 0.1,
    max_bad_fraction: float = 0.05,
    refresh: bool = False,
) -> ImageData:
    """A folder of images; class subfolders become labels. Bad files are skipped and reported.

    Images of other sizes are resized to `image_size` (default: the most common size);
    grayscale and colour mixed become colour. A fixed `test_fraction` is held out.
    """
    folder = Path(folder).resolve()
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    skipped = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() not in IMAGE_SUFFIXES)
    if not files:
        raise DataError(
            f"no image files ({', '.join(sorted(IMAGE_SUFFIXES))}) under {folder}",
            "point --data at a folder of images",
        )

    listing = "\n".join(f"{p.relative_to(folder)}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in files)
    key = hashlib.sha256(f"{listing}|{image_size}|{test_fraction}".encode()).hexdigest()[:16]
    cache = genlab_home() / "cache" / "folders" / key
    cached = None if refresh else load_arrays(cache, ARRAY_KEYS)
    if cached is not None:
        arrays, meta = cached
        report = DataReport(**meta["report"])
        return ImageData(folder.name, *(arrays[k] for k in ARRAY_KEYS), tuple(meta["classes"]), report)

    report = DataReport(folder.name, "image", str(folder), "path")
    report.notes += [f"ignored non-image file {p.relative_to(folder)}" for p in skipped[:10]]
    with ThreadPoolExecutor(max_workers=4) as pool:
        decoded = list(pool.map(_read_one, files))
    good: list[tuple[Path, np.ndarray]] = []
    for path, (array, reason) in zip(files, decoded):
        if array is None:
            report.bad_files.append((str(path.relative_to(folder)), reason))
        else:
            good.append((path, array))
    report.check_bad_fraction(len(files), max_bad_fraction)
    if not good:
        raise DataError(f"none of the {len(files)} images under {folder} could be read", "check the files")

    channels = 3 if any(a.shape[0] == 3 for _, a in good) else 1
    sizes = Counter(a.shape[1:] for _, a in good)
    target = (image_size, image_size) if image_size else sizes.most_common(1)[0][0]
    resized = sum(n for size, n in sizes.items() if size != target)
    if resized:
        report.notes.append(f"resized {resized} images to {target[0]}x{target[1]} (sizes found: {dict(sizes)})")

    def conform(array: np.ndarray) -> np.ndarray:
        if array.shape[0] != channels:
            array = np.repeat(array, channels, axis=0)
        if array.shape[1:] != target:
            image = Image.fromarray(array.transpose(1, 2, 0).squeeze(-1) if channels == 1 else array.transpose(1, 2, 0))
            array = np.asarray(image.resize((target[1], target[0]), Image.Resampling.BICUBIC), dtype=np.uint8)
            array = array[None] if array.ndim == 2 else array.transpose(2, 0, 1)
        return array

    class_names = sorted({p.parent.relative_to(folder).as_posix() for p, _ in good} - {"."})
    labelled = bool(class_names) and all(p.parent != folder for p, _ in good)
    classes = tuple(class_names) if labelled else ()
    index = {c: i for i, c in enumerate(classes)}
    x = np.stack([conform(a) for _, a in good])
    y = np.array([index[p.parent.relative_to(folder).as_posix()] if labelled else -1 for p, _ in good], dtype=np.int64)

    order = np.random.default_rng(0).permutation(len(x))  # fixed split, independent of the training seed
    n_test = int(round(len(x) * test_fraction)) if len(x) >= 10 else 0
    test, train = order[:n_test], order[n_test:]
    if n_test == 0:
        report.notes.append("fewer than 10 images: no test split held out")
    data = ImageData(folder.name, x[train], y[train], x[test], y[test], classes, report)
    save_arrays(cache, dict(zip(ARRAY_KEYS, (data.train_x, data.train_y, data.test_x, data.test_y))),
                {"classes": list(classes), "report": report.to_dict()})
    return data
