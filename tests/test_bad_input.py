"""Every verb against every family's tiny run, and a table of bad values: each call succeeds, or ends with an
error that names the problem and the fix. A Python traceback anywhere here fails the test."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import genlab
from genlab.cli import main

TEXT = "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n" * 40
TRAIN = {"max_steps": 4, "batch_size": 8, "val_every": 2, "val_batches": 1, "ckpt_every": 2, "log_every": 2,
         "sample_every": 10**6, "warmup_steps": 1, "progress": False, "threads": 1}
TINY = {
    "vae": ("digits", {"widths": (4, 8), "hidden_dim": 8, "latent_dim": 2, "condition": "class"}),
    "gan": ("digits", {"g_widths": (8, 4), "d_widths": (4, 8), "latent_dim": 4, "monitor_samples": 0}),
    "pix2pix": ("digits", {"widths": (4, 8), "d_widths": (4, 8), "task": "superres", "scale": 2}),
    "diffusion": ("digits", {"widths": (8, 16), "blocks": (1, 1), "attention": (False, True), "condition": "class",
                             "sample_steps": 2}),
    "rnn": ("text", {"block_size": 16, "bptt": 8, "n_layer": 1, "n_embd": 8, "hidden": 16}),
    "gpt": ("text", {"block_size": 16, "n_layer": 1, "n_head": 2, "n_embd": 16}),
    "tabular": ("table", {"hidden": 8, "latent_dim": 2}),
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bad-input")
    text = folder / "text.txt"
    text.write_text(TEXT)
    rng = np.random.default_rng(0)
    table = folder / "table.csv"
    table.write_text("age,job\n" + "".join(f"{rng.integers(18, 80)},{rng.choice(['a', 'b'])}\n" for _ in range(60)))
    paths = {"text": str(text), "table": str(table)}
    out = {}
    for family, (data, model) in TINY.items():
        out[family] = genlab.train(family, paths.get(data, data), folder / family, model, **TRAIN)
    return out


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (30, 40, 3), dtype=np.uint8)).save(folder / "rgb.png")
    Image.fromarray(np.full((1, 1), 200, np.uint8)).save(folder / "dot.png")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(folder / "black.png")
    (folder / "not-an-image.png").write_bytes(b"this is not a PNG")
    return folder


def _run(argv: list[str], capsys) -> tuple[int, str]:
    try:
        code = main(argv)
    except SystemExit as exit_info:  # the parser's own refusal of a malformed value
        code = exit_info.code
    err = capsys.readouterr().err
    return code, err


def _ok_or_clear(argv: list[str], capsys) -> int:
    code, err = _run(argv, capsys)
    assert "Traceback" not in err, f"{argv}: {err}"
    if code != 0:
        assert code == 2 and "error:" in err, f"{argv} exited {code}: {err}"
        assert "fix:" in err or "usage:" in err, f"{argv}: the error names no fix: {err}"
    return code


# Each verb's calls; RUN stands for each family's run folder in turn, OUT for a file to write, FILE: for an image.
CALLS = {
    "sample": [[], ["--n", "0"], ["--n", "-3"], ["--n", "abc"], ["--temperature", "-1"], ["--label", "nonexistent"],
               ["--label", "99"], ["--steps", "0"], ["--steps", "-1"], ["--sampler", "euler"], ["--guidance", "-1"],
               ["--eta", "-1"], ["--prompt", "a shoe"], ["--nrow", "0"], ["--steps", "1"]],
    "reconstruct": [["--n", "2"], ["--n", "0"], ["--n", "-3"], ["--image", "test:abc"], ["--image", "test:99999"],
                    ["--image", "FILE:rgb.png"], ["--image", "FILE:dot.png"], ["--image", "FILE:not-an-image.png"],
                    ["--image", "FILE:missing.png"], ["--image", "Sneaker"], ["--image", "3,test:1"]],
    "interpolate": [["--steps", "3"], ["--steps", "0"], ["--steps", "-1"], ["--a", "FILE:rgb.png"], ["--b", "nothing"]],
    "translate": [["--n", "2"], ["--n", "0"], ["--image", "FILE:rgb.png"], ["--image", "FILE:dot.png"],
                  ["--image", "test:-1"], ["--image", "FILE:rgb.png,test:0"]],
    "edit": [[], ["--image", "test:0", "--n", "1", "--steps", "2"], ["--image", "FILE:rgb.png", "--n", "0"],
             ["--image", "test:0", "--strength", "0"], ["--image", "test:0", "--strength", "2"],
             ["--image", "test:0", "--mask", "FILE:black.png"], ["--image", "test:0", "--mask", "FILE:rgb.png",
                                                                  "--n", "1", "--steps", "2"],
             ["--image", "test:0", "--steps", "-1"], ["--image", "test:0", "--resample", "0"],
             ["--image", "test:0", "--label", "nonexistent"], ["--image", "FILE:missing.png"]],
    "generate": [["--max-new-tokens", "5"], ["--max-new-tokens", "0"], ["--max-new-tokens", "-1"],
                 ["--temperature", "-1"], ["--top-k", "0"], ["--top-p", "0"], ["--top-p", "2"],
                 ["--repetition-penalty", "0"], ["--prompt", "Zebra 🙂", "--max-new-tokens", "3"],
                 ["--stop", "[1, 2]"]],
    "detect": [["--data", "TEXT"], ["--data", "FILE:rgb.png"], ["--data", "TABLE"], ["--data", "FILE:missing.png"],
               ["--data", "FILE:not-an-image.png"], ["--data", "TEXT", "--percentile", "101"], []],
    "eval": [["--n", "0"], ["--n", "-3"], ["--k", "0"], ["--n", "12", "--k", "2", "--max-examples", "20",
                                                          "--progress", "false"]],
    "finetune": [[], ["--data", "TEXT", "--method", "lora", "--rank", "0"], ["--data", "missing.txt"],
                 ["--data", "TEXT", "--max-steps", "0"], ["--data", "TEXT", "--method", "sideways"],
                 ["--data", "TEXT", "--method", "lora", "--max-steps", "2", "--progress", "false"],
                 ["--data", "TEXT", "--method", "full", "--max-steps", "2", "--progress", "false"],
                 ["--data", "TEXT", "--dropout", "1.5"]],
}


@pytest.mark.parametrize("verb", sorted(CALLS))
def test_every_verb_on_every_family_succeeds_or_names_the_fix(verb, runs, files, tmp_path, capsys):
    text = runs["gpt"].parent / "text.txt"
    table = runs["gpt"].parent / "table.csv"
    outcomes = {}
    for family, run in runs.items():
        for i, extra in enumerate(CALLS[verb]):
            out = tmp_path / f"{family}-{i}"
            args = [str(files / a[5:]) if a.startswith("FILE:") else str(text) if a == "TEXT" else
                    str(table) if a == "TABLE" else
                    ",".join(str(files / p[5:]) if p.startswith("FILE:") else p for p in a.split(","))
                    if "FILE:" in a else a for a in extra]
            argv = [verb, str(run), *args] + (["--out", str(out)] if verb not in ("generate", "eval") else [])
            outcomes[family, i] = _ok_or_clear(argv, capsys)
    # each verb works on the families that can do it, and is refused by the others
    able = {"sample": {"vae", "gan", "diffusion", "tabular"}, "reconstruct": {"vae"}, "interpolate": {"vae"},
            "translate": {"pix2pix"}, "edit": {"diffusion"}, "generate": {"rnn", "gpt"},
            "eval": set(TINY), "finetune": {"rnn", "gpt"},
            "detect": {"vae", "gan", "diffusion", "rnn", "gpt", "tabular"}}[verb]
    for family in TINY:
        worked = any(outcomes[family, i] == 0 for i in range(len(CALLS[verb])))
        assert worked == (family in able), f"genlab {verb} on {family}: {'worked' if worked else 'never worked'}"


def test_bad_runs_and_training_values_are_clear_errors(runs, tmp_path, capsys):
    text = str(runs["gpt"].parent / "text.txt")
    for argv in [["sample", str(tmp_path / "missing")], ["generate", str(tmp_path)], ["eval", str(tmp_path)],
                 ["train", "vae", "--data", "digits", "--max-steps", "0"],
                 ["train", "vae", "--data", "digits", "--batch-size", "-1"],
                 ["train", "vae", "--data", "digits", "--model.latent-dim", "0"],
                 ["train", "vae", "--data", text], ["train", "gpt", "--data", "digits"],
                 ["train", "gpt", "--data", text, "--model.vocab-size", "5"],
                 ["train", "gpt", "--resume", str(runs["vae"])],
                 ["train", "vae", "--resume", str(tmp_path / "nothing")],
                 ["train", "vae", "--resume", str(runs["vae"]), "--model.latent-dim", "3"],
                 ["train", "vae", "--data", "digits", "--trial", "3"], ["train", "bayes"], ["trian", "vae"],
                 ["data", "check", str(tmp_path / "missing")], ["data", "frobnicate"],
                 ["tune", "vae", "--trials", "0", "--data", "digits", "--out", str(tmp_path / "study")], ["tune"],
                 ["compare", str(runs["vae"])], ["serve", str(tmp_path / "missing")]]:
        code = _ok_or_clear(argv, capsys)
        assert code == 2, argv
