"""Training on several processes (issue 24): each process reads its share of every global batch, two processes
follow one process's loss curve, and a two-process run killed mid-way resumes exactly. The families one by one on
two processes: tests/test_ddp_families.py."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import genlab.data.loader as loader
from genlab.data.loader import BatchLoader, DrawnBatches, IndexedBatches
from genlab.engine.runs import read_metrics
from genlab.files import load_torch_file

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
TWO = ["--devices", "2", "--strategy", "ddp", "--accelerator", "cpu"]


def shares(make, monkeypatch) -> list[list[torch.Tensor]]:
    """The first batches each of two processes takes from the loader `make()` builds."""
    out = []
    for rank in (0, 1):
        monkeypatch.setattr(loader, "rank_share", lambda rank=rank: (rank, 2))
        out.append([batch[0] for _, batch in zip(range(4), iter(make()), strict=False)])
    return out


@pytest.mark.parametrize("kind", ["tensors", "drawn", "indexed"])
def test_each_process_takes_its_own_rows_of_the_same_global_batch(kind, monkeypatch):
    rows = torch.arange(1000)
    make = {"tensors": lambda: BatchLoader((rows,), 8, seed=1),
            "drawn": lambda: DrawnBatches(lambda n, rng: (torch.from_numpy(rng.permutation(1000)[:n]),), 8, 50, 1),
            "indexed": lambda: IndexedBatches(lambda i: (rows[i],), np.arange(1000), 8, seed=1, workers=0)}[kind]
    first, second = shares(make, monkeypatch)
    monkeypatch.setattr(loader, "rank_share", lambda: (0, 1))
    whole = [batch[0] for _, batch in zip(range(4), iter(make()), strict=False)]
    for a, b, w in zip(first, second, whole, strict=True):
        assert len(a) == len(b) == 4 and not set(a.tolist()) & set(b.tolist())
        assert sorted(a.tolist() + b.tolist()) == sorted(w.tolist())  # together: the one-process batch


def test_validation_gives_every_process_everything(monkeypatch):
    make = lambda: BatchLoader((torch.arange(20),), 8, shuffle=False, drop_last=False)  # noqa: E731
    first, second = shares(make, monkeypatch)
    assert all((a == b).all() for a, b in zip(first, second, strict=True)) and sum(map(len, first)) == 20


def _train(out: Path, *extra: str, wait: bool = True):
    command = [sys.executable, "-m", "genlab.cli", "train", *extra, "--out", str(out), "--threads", "1",
               "--progress", "false", "--sample-every", "100000"]
    if wait:
        done = subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        return None
    return subprocess.Popen(command, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)


def test_two_processes_follow_one_process_loss_curve(tmp_path):
    text = tmp_path / "text.txt"
    text.write_text("".join(f"line {i}: the quick brown fox jumps over the lazy dog {i * 7 % 13}\n"
                            for i in range(400)))
    gpt = ["gpt", "--data", str(text), "--model.n-layer", "1", "--model.n-head", "2", "--model.n-embd", "32",
           "--model.block-size", "32", "--model.dropout", "0", "--batch-size", "16", "--max-steps", "12",
           "--warmup-steps", "2", "--log-every", "1", "--val-every", "6", "--val-batches", "2", "--ckpt-every", "100"]
    _train(tmp_path / "one", *gpt)
    _train(tmp_path / "two", *gpt, *TWO)
    losses = [{r["step"]: r["train/loss"] for r in read_metrics(tmp_path / run) if "train/loss" in r}
              for run in ("one", "two")]
    assert sorted(losses[0]) == sorted(losses[1]) == list(range(12))  # one record per step: rank 1 wrote none
    for step in losses[0]:  # the same until rounding, which the steps amplify
        assert losses[1][step] == pytest.approx(losses[0][step], rel=2e-3), step
    assert losses[0][11] < losses[0][0] - 0.5  # and it learned


def test_a_killed_two_process_run_resumes_exactly(tmp_path):
    vae = ["vae", "--data", "digits", "--model.widths", "[4,8]", "--model.hidden-dim", "32",
           "--model.latent-dim", "4", "--batch-size", "16", "--max-steps", "160", "--ckpt-every", "20",
           "--val-every", "100", "--val-batches", "2", "--log-every", "20", *TWO]
    _train(tmp_path / "straight", *vae)
    proc = _train(tmp_path / "killed", *vae, wait=False)
    ckpt = tmp_path / "killed" / "checkpoints" / "last.ckpt"
    deadline = time.time() + 200
    while time.time() < deadline and proc.poll() is None:
        if ckpt.exists() and load_torch_file(ckpt)["global_step"] >= 40:
            break
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # both processes, as a lost machine would
    proc.wait()
    stopped = load_torch_file(ckpt)["global_step"]
    assert 0 < stopped < 160, "the run finished before it could be killed"
    assert len(load_torch_file(ckpt)["callbacks"]["RNGState"]["ranks"]) == 2  # each process's random stream
    _train(tmp_path / "killed", "vae", "--resume", str(tmp_path / "killed"), *TWO)
    a, b = (load_torch_file(tmp_path / run / "checkpoints" / "last.ckpt")["state_dict"]
            for run in ("straight", "killed"))
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-5, atol=1e-6, msg=key)
    logged = lambda run: {r["step"]: r["train/loss"] for r in read_metrics(run) if "train/loss" in r}  # noqa: E731
    # the losses logged after the resume point match (the steps both logs hold: a log record written between the
    # last checkpoint and the kill is written again after the resume)
    straight, killed = logged(tmp_path / "straight"), logged(tmp_path / "killed")
    later = [s for s in straight if s > stopped and s in killed]
    assert later and all(killed[s] == pytest.approx(straight[s], rel=1e-5) for s in later)
    record = json.loads((tmp_path / "killed" / "model" / "config.json").read_text())
    assert record["family"] == "vae"
