"""The data layer: registry resolution, image folders with bad files, text, CSV, the batch loader."""

from __future__ import annotations

import gzip
import struct
import urllib.request

import numpy as np
import pytest
import torch
from PIL import Image

from genlab.data import BatchLoader, load_data
from genlab.data.images import read_idx
from genlab.data.registry import DATASETS
from genlab.errors import DataError


def write_idx(path, array: np.ndarray) -> None:
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(gzip.compress(header + array.astype(np.uint8).tobytes()))


def test_digits_loads_and_second_start_is_cached():
    data = load_data("digits")
    assert data.train_x.shape == (1437, 1, 8, 8) and data.test_x.shape == (360, 1, 8, 8)
    assert data.train_x.dtype == np.uint8 and data.train_x.max() == 255
    assert data.classes == tuple(str(i) for i in range(10))
    assert sorted(set(data.train_y.tolist())) == list(range(10))
    again = load_data("digits")
    np.testing.assert_array_equal(again.train_x, data.train_x)
    assert again.content_hash() == data.content_hash()


def test_idx_reader_round_trip_and_truncation(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (5, 28, 28))
    write_idx(tmp_path / "x.gz", images)
    np.testing.assert_array_equal(read_idx(tmp_path / "x.gz"), images)
    raw = gzip.decompress((tmp_path / "x.gz").read_bytes())
    (tmp_path / "short").write_bytes(raw[:-10])
    with pytest.raises(DataError, match="truncated"):
        read_idx(tmp_path / "short")


def test_registered_name_resolves_from_a_system_copy(tmp_path, monkeypatch):
    folder = tmp_path / "mnist"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for stem, n in [("train", 30), ("t10k", 10)]:
        write_idx(folder / f"{stem}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
        write_idx(folder / f"{stem}-labels-idx1-ubyte.gz", rng.integers(0, 10, n))
    monkeypatch.setenv("GENLAB_DATA_DIRS", str(tmp_path))
    data = load_data("mnist", refresh=True)
    assert data.train_x.shape == (30, 1, 28, 28) and data.report.resolved_from == "system"


def test_missing_dataset_names_the_install_command(monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("network unreachable")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    monkeypatch.setenv("GENLAB_DATA_DIRS", "")
    with pytest.raises(DataError) as error:
        load_data("cifar10")
    assert "could not be downloaded" in str(error.value) and DATASETS["cifar10"].install in str(error.value)


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(DataError, match="fashion-mnist"):
        load_data("no-such-dataset")


def make_image_folder(root, per_class=10, size=(12, 12)):
    rng = np.random.default_rng(0)
    for label in ("cats", "dogs"):
        (root / label).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 256, size, dtype=np.uint8)).save(root / label / f"{i}.png")
    return root


def test_image_folder_skips_and_reports_bad_files(tmp_path):
    root = make_image_folder(tmp_path / "pets", per_class=30)
    (root / "cats" / "broken.png").write_bytes(b"this is not a png")
    (root / "dogs" / "empty.jpg").write_bytes(b"")
    Image.fromarray(np.zeros((20, 20), np.uint8)).save(root / "dogs" / "big.png")  # another size: resized
    data = load_data(str(root))
    assert data.classes == ("cats", "dogs")
    assert len(data.train_x) + len(data.test_x) == 61 and data.shape == (1, 12, 12)
    reasons = dict(data.report.bad_files)
    assert set(reasons) == {"cats/broken.png", "dogs/empty.jpg"}
    assert "empty" in reasons["dogs/empty.jpg"] and "unreadable" in reasons["cats/broken.png"]
    assert any("resized 1" in note for note in data.report.notes)


def test_too_many_bad_files_stop_before_training(tmp_path):
    root = make_image_folder(tmp_path / "pets", per_class=3)
    for i in range(4):
        (root / "cats" / f"bad{i}.png").write_bytes(b"garbage")
    with pytest.raises(DataError, match="could not be used"):
        load_data(str(root))


def test_text_and_tables(tmp_path):
    (tmp_path / "a.txt").write_text("hello world\n" * 100)
    (tmp_path / "b.txt").write_bytes(b"\x00\x01binary")
    (tmp_path / "c.txt").write_text("more text here\n" * 100)
    with pytest.raises(DataError, match="1 of 3 files"):
        load_data(str(tmp_path))  # one bad file in three is above the default 5% limit
    data = load_data(str(tmp_path), max_bad_fraction=0.5)
    assert data.kind == "text" and "hello" in data.train and len(data.test) > 0
    assert [reason for _, reason in data.report.bad_files] == ["binary file (NUL bytes)"]
    csv_path = tmp_path / "t.csv"
    csv_path.write_text("a,b,c\n" + "1,2,x\n" * 40 + "1,2\n")
    table = load_data(str(csv_path))  # read as a table by its name, not as text
    assert table.kind == "table" and [c.kind for c in table.columns] == ["numeric", "numeric", "categorical"]
    assert len(table.train) + len(table.test) == 41 and table.column("c").missing + table.test["c"].isna().sum() == 1


def test_batch_loader_resumes_at_any_position():
    x = torch.arange(100)
    full = [b[0] for _, b in zip(range(25), _epochs(BatchLoader((x,), 8, seed=3)))]
    position = 17
    resumed = BatchLoader((x,), 8, seed=3, position=lambda: position)
    tail = [b[0] for _, b in zip(range(8), _epochs(resumed, start=position))]
    for a, b in zip(full[position:], tail):
        assert torch.equal(a, b)
    assert len(BatchLoader((x,), 8)) == 12 and len(BatchLoader((x,), 8, drop_last=False)) == 13


def test_holdout_zero_trains_on_the_whole_image_split():
    from genlab.data.loader import image_loaders

    data = load_data("digits")
    train, val = image_loaders(data, 64, 0, lambda: 0)
    assert len(train.tensors[0]) + len(val.tensors[0]) == len(data.train_x) and len(val.tensors[0]) == 71
    whole, none = image_loaders(data, 64, 0, lambda: 0, holdout=0.0)
    assert none is None and len(whole.tensors[0]) == len(data.train_x)


def _epochs(loader, start=0):
    """Iterate epoch after epoch the way the engine does, moving the position along."""
    seen = start
    loader.position = lambda: seen
    while True:
        for batch in loader:
            seen += 1
            yield batch
