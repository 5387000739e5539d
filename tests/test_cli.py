"""Every CLI verb end to end on `digits`, in-process, in seconds; --help everywhere; clear errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from genlab.cli import main

TINY = ["--model.widths", "[4,8]", "--model.hidden-dim", "16", "--model.latent-dim", "3", "--batch-size", "32",
        "--val-every", "10", "--val-batches", "2", "--ckpt-every", "10", "--log-every", "5", "--progress", "false",
        "--threads", "1"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "run"
    assert main(["train", "vae", "--data", "digits", "--out", str(out), "--max-steps", "20", *TINY]) == 0
    return out


def test_train_writes_resolved_config(run):
    import yaml

    record = yaml.safe_load((run / "config.yaml").read_text())
    assert record["family"] == "vae" and record["model"]["latent_dim"] == 3 and record["train"]["max_steps"] == 20
    assert record["model"]["image_size"] == [8, 8] and "--max-steps" in record["command"]


def test_resume_overrides_only_what_is_given(run, capsys):
    assert main(["train", "vae", "--resume", str(run), "--max-steps", "30"]) == 0
    import yaml

    record = yaml.safe_load((run / "config.yaml").read_text())
    assert record["train"]["max_steps"] == 30 and record["train"]["batch_size"] == 32
    assert main(["train", "vae", "--resume", str(run), "--model.latent-dim", "8"]) == 2
    assert "keeps its model config" in capsys.readouterr().err


def test_sample_reconstruct_interpolate_eval(run, tmp_path, capsys):
    assert main(["sample", str(run), "--n", "9", "--out", str(tmp_path / "s.png"), "--seed", "3"]) == 0
    first = np.asarray(Image.open(tmp_path / "s.png"))
    assert main(["sample", str(run / "model"), "--n", "9", "--out", str(tmp_path / "s2.png"), "--seed", "3"]) == 0
    assert np.array_equal(first, np.asarray(Image.open(tmp_path / "s2.png"))), "same seed, same images"
    assert main(["reconstruct", str(run), "--n", "4", "--out", str(tmp_path / "r.png")]) == 0
    Image.fromarray(np.full((8, 8), 200, np.uint8)).save(tmp_path / "in.png")
    assert main(["reconstruct", str(run), "--image", f"{tmp_path / 'in.png'},test:5",
                 "--out", str(tmp_path / "r2.png")]) == 0
    assert main(["interpolate", str(run), "--a", "3", "--b", "8", "--steps", "5",
                 "--out", str(tmp_path / "i.png")]) == 0
    assert Image.open(tmp_path / "i.png").size[0] > Image.open(tmp_path / "i.png").size[1] * 4
    assert main(["eval", str(run), "--k", "4", "--progress", "false"]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert 0 < metrics["nll_nats"] < 64 * np.log(2) * 1.5 and metrics["examples"] == 360
    assert metrics["elbo_nats"] <= -metrics["nll_nats"] + 1e-6  # the IWAE bound is at least the ELBO
    page = (run / "report.html").read_text()
    assert "data:image/png;base64" in page and "nll_nats" in page and "http" not in page.split("<body>")[1]


def test_data_verbs(capsys):
    assert main(["data", "list"]) == 0
    assert "fashion-mnist" in capsys.readouterr().out
    assert main(["data", "check", "digits", "--as-json", "true"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["counts"] == {"train": 1437, "test": 360} and len(report["classes"]) == 10


@pytest.mark.parametrize("verb", [["data", "list"], ["data", "check"], ["data"], ["train"], ["train", "vae"],
                                  ["train", "gpt"], ["tune"], ["tune", "gan"], ["sample"], ["reconstruct"],
                                  ["interpolate"], ["translate"], ["edit"], ["generate"], ["eval"], ["compare"],
                                  ["finetune"], ["serve"], ["reference"], []])
def test_help_on_every_verb(verb, capsys):
    try:
        code = main([*verb, "--help"])
    except SystemExit as exit_info:
        code = exit_info.code
    out = capsys.readouterr().out
    assert code == 0 and "usage" in out


def test_model_options_are_documented_and_data_fields_are_not_offered(capsys):
    with pytest.raises(SystemExit):
        main(["train", "gpt", "--help"])
    out = capsys.readouterr().out
    assert "--model.n-layer" in out and "transformer blocks" in out and "--max-steps" in out
    assert "--model.vocab-size" not in out and "--model.chars" not in out and "GPTConfig(" not in out
    with pytest.raises(SystemExit):
        main(["train", "vae", "--help"])
    out = capsys.readouterr().out
    assert "--model.latent-dim" in out and "size of the latent code" in out
    assert "--model.image-size" not in out and "--model.channels" not in out and "--model.num-classes" not in out


def test_bad_input_is_a_clear_error(tmp_path, capsys):
    assert main(["train", "vae", "--data", str(tmp_path / "missing")]) == 2
    assert "neither a registered dataset nor an existing path" in capsys.readouterr().err
    assert main(["sample", str(tmp_path)]) == 2
    assert "not a genlab model folder" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", "vae", "--data", "digits", "--model.likelihood", "gaussian-ish"])


def test_options_take_dashes_or_underscores(run, tmp_path):
    assert main(["sample", str(run), "--n", "4", "--out", str(tmp_path / "a.png")]) == 0
    assert main(["sample", str(run), "--n=4", "--out=" + str(tmp_path / "b.png"), "--nrow", "2"]) == 0
    assert main(["train", "vae", "--resume", str(run), "--max_steps", "31", "--progress=false"]) == 0
    assert main(["train", "vae", "--resume", str(run), "--max-steps", "32", "--progress", "false"]) == 0
