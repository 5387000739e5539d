"""Scale (issue 24): text prepared once into token files on disk and trained on in bounded memory."""

from __future__ import annotations

import json

import numpy as np
import pytest

import genlab
from genlab.cli import main
from genlab.data import load_data
from genlab.data.loader import token_loaders
from genlab.data.tokens import load_tokens, prepare_text, spans
from genlab.errors import DataError

LINES = ["To be, or not to be, that is the question:", "Whether 'tis nobler in the mind to suffer",
         "naïve café — ünïcödé ✓ 🙂", "", "    indented code = [1, 2, 3]  # a comment"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Two files of about 60 KB each, multi-byte characters throughout."""
    folder = tmp_path_factory.mktemp("corpus")
    rng = np.random.default_rng(0)
    for name in ("a.txt", "b.md"):
        (folder / name).write_text("\n".join(LINES[i] for i in rng.integers(0, len(LINES), 2500)) + "\n")
    return folder


@pytest.mark.parametrize("tokenizer", ["char", "bpe"])
def test_prepared_tokens_are_the_tokenizer_s_ids_of_the_text(corpus, tmp_path, tokenizer):
    meta = prepare_text(corpus, tmp_path / "t", tokenizer=tokenizer, vocab_size=300, test_fraction=0.2, workers=2,
                        chunk_mb=0.01)
    data = load_data(str(tmp_path / "t"))
    assert data.kind == "tokens" and meta["tokens"]["train"] == len(data.train) > 0 and len(data.test) > 0
    assert meta["dtype"] == "uint16" and meta["tokenizer_hash"] == data.tokenizer.hash
    text = "".join(p.read_text() for p in sorted(corpus.iterdir()))
    train = data.tokenizer.decode(data.train.read(0, len(data.train)).tolist())
    test = data.tokenizer.decode(data.test.read(0, len(data.test)).tolist())
    assert train + test == text  # nothing lost or doubled at the spans' seams
    assert 0.15 < len(test.encode()) / len(text.encode()) < 0.25  # the tail is held out
    # span by span, the same ids as encoding the text in one piece (spans end at a line's end)
    assert data.train.read(0, len(data.train)).tolist() == data.tokenizer.encode(train)


def test_spans_end_at_line_ends_and_cut_the_held_out_tail(corpus):
    files = sorted(corpus.iterdir())
    parts = spans(files, 5000, 0.3)
    assert len(parts) > 20 and {p[3] for p in parts} == {"train", "val"}
    for path, _, end, _ in parts:
        raw = open(path, "rb").read()
        assert end == len(raw) or raw[end - 1 : end] == b"\n"
    splits = [p[3] for p in parts]
    assert splits == sorted(splits, key=lambda s: s == "val")  # every training span before every validation span


def test_a_changed_or_truncated_prepared_folder_is_refused(corpus, tmp_path):
    prepare_text(corpus, tmp_path / "t", tokenizer="char", workers=1)
    train = tmp_path / "t" / "train.bin"
    train.write_bytes(train.read_bytes()[:-2])
    with pytest.raises(DataError, match="prepare it again"):
        load_tokens(tmp_path / "t")
    prepare_text(corpus, tmp_path / "t", tokenizer="char", workers=1)
    (tmp_path / "t" / "tokenizer.json").write_text(json.dumps({"kind": "char", "chars": "abc"}))
    with pytest.raises(DataError, match="not the tokenizer"):
        load_tokens(tmp_path / "t")


def test_unreadable_files_are_skipped_or_refused(corpus, tmp_path):
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for i in range(30):
        (mixed / f"{i}.txt").write_text(f"line {i} of good text\n" * 20)
    (mixed / "z.txt").write_bytes(b"\xff\xfe not utf-8\n")
    meta = prepare_text(mixed, tmp_path / "t", tokenizer="char", workers=1)
    assert len(meta["bad_files"]) == 1 and "not UTF-8" in meta["bad_files"][0][1]
    with pytest.raises(DataError, match="could not be read"):
        prepare_text(mixed, tmp_path / "t2", tokenizer="char", workers=1, max_bad_fraction=0.0)
    with pytest.raises(DataError, match="--tokenizer"):
        prepare_text(mixed, tmp_path / "t3", tokenizer="words")


def test_token_windows_are_drawn_by_batch_index(corpus, tmp_path):
    prepare_text(corpus, tmp_path / "t", tokenizer="char", workers=1, test_fraction=0.1)
    data = load_tokens(tmp_path / "t")
    position = [0]
    train, val = token_loaders(data.train, data.test, 16, 4, seed=3, position=lambda: position[0])
    batches = [b[0] for _, b in zip(range(5), iter(train), strict=False)]
    assert batches[0].shape == (4, 17) and batches[0].dtype.is_floating_point is False
    position[0] = 3  # a resumed loader starts at the batch the run had reached
    assert all((a == b[0]).all() for a, b in zip(batches[3:], iter(train), strict=False))
    text = data.tokenizer.decode(data.train.read(0, len(data.train)).tolist())
    assert data.tokenizer.decode(batches[0][0].tolist()) in text
    windows = next(iter(val))[0]
    assert windows.shape[1] == 17 and data.tokenizer.decode(windows[0].tolist()) in data.text("test", 10**9)


def test_cli_prepares_trains_and_evaluates_from_token_files(corpus, tmp_path, capsys):
    tokens, run = tmp_path / "tokens", tmp_path / "run"
    assert main(["data", "prepare", str(corpus), "--out", str(tokens), "--tokenizer", "bpe", "--vocab-size", "300",
                 "--workers", "2", "--test-fraction", "0.1"]) == 0
    assert "training and" in capsys.readouterr().out
    assert main(["train", "gpt", "--data", str(tokens), "--out", str(run), "--max-steps", "4", "--batch-size", "4",
                 "--model.n-layer", "1", "--model.n-head", "2", "--model.n-embd", "32", "--model.block-size", "32",
                 "--val-every", "2", "--val-batches", "2", "--progress", "false"]) == 0
    model = genlab.load(run / "model")
    assert model.config.tokenizer == "bpe" and model.tokenizer.hash == load_tokens(tokens).tokenizer.hash
    assert "".join(model.generate("To be", max_new_tokens=4, seed=0))
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert any("val/loss" in r for r in records)
    assert main(["eval", str(run), "--n", "2", "--progress", "false"]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["nats_per_token"] > 0 and "distinct_1" in metrics


# -- image folders prepared into Arrow shards ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    """60 images in three class folders, one of another size, one colour among greys, and one broken file."""
    from PIL import Image

    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for i in range(60):
        (folder / f"c{i % 3}").mkdir(exist_ok=True)
        size = 20 if i == 7 else 16
        Image.fromarray(rng.integers(0, 256, (size, size), dtype=np.uint8)).save(folder / f"c{i % 3}" / f"{i}.png")
    Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(folder / "c0" / "colour.png")
    (folder / "c1" / "broken.png").write_bytes(b"not a png")
    return folder


def test_shards_hold_what_the_in_memory_path_reads(image_folder, tmp_path):
    from genlab.data.shards import prepare_images

    meta = prepare_images(image_folder, tmp_path / "s", workers=2)
    shards, memory = load_data(str(tmp_path / "s")), load_data(str(image_folder), refresh=True)
    assert meta["counts"] == {"train": len(memory.train_x), "test": len(memory.test_x)}
    assert shards.shape == memory.shape == (3, 16, 16) and shards.classes == memory.classes == ("c0", "c1", "c2")
    assert [b for b, _ in shards.report.bad_files] == ["c1/broken.png"]
    for got, want, labels, want_labels in ((shards.train_x, memory.train_x, shards.train_y, memory.train_y),
                                           (shards.test_x, memory.test_x, shards.test_y, memory.test_y)):
        pixels = got[np.arange(len(got))]
        assert pixels.dtype == np.uint8 and pixels.shape == want.shape
        key = lambda x, y: sorted((int(label), image.tobytes()) for image, label in zip(x, y))  # noqa: E731
        assert key(pixels, labels) == key(want, want_labels)  # the same images in the same split, labels and all
    assert (shards.train_x[3] == shards.train_x[2:5][1]).all()


def test_a_run_on_shards_resumes_exactly(image_folder, tmp_path, tiny_vae, tiny_train):
    import lightning.pytorch as pl
    import torch

    from genlab.config import TrainConfig, from_dict
    from genlab.data.shards import prepare_images
    from genlab.engine.trainer import fit as train
    from genlab.files import load_torch_file
    from genlab.models.vae import VAEConfig

    class StopAt(pl.Callback):
        def on_train_batch_end(self, trainer, *args):
            trainer.should_stop = trainer.global_step >= 5

    prepare_images(image_folder, tmp_path / "s", workers=1)
    data = str(tmp_path / "s")
    config = from_dict(VAEConfig, {**tiny_vae, "image_size": [16, 16], "channels": 3})
    options = from_dict(TrainConfig, {**tiny_train, "max_steps": 10, "batch_size": 8, "ckpt_every": 5})
    train("vae", data, config, options, tmp_path / "whole")
    train("vae", data, config, options, tmp_path / "part", callbacks=[StopAt()])
    train("vae", data, config, options, tmp_path / "part", resume=True)
    # the networks' weights (the Gaussian mixture fitted after training amplifies rounding: test_engine compares
    # the checkpoints too)
    a, b = (load_torch_file(tmp_path / run / "checkpoints" / "last.ckpt")["state_dict"] for run in ("whole", "part"))
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-5, atol=1e-6, msg=key)
