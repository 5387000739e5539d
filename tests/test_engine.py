"""The engine: a killed run resumes exactly, a NaN stops training and keeps the last good checkpoint,
checkpoints are written atomically, and device options reach Lightning."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from genlab.config import TrainConfig, from_dict
from genlab.engine.runs import read_metrics
from genlab.engine.trainer import AtomicCheckpointIO, build_trainer
from genlab.engine.trainer import fit as train
from genlab.errors import NonFiniteLossError
from genlab.files import load_torch_file as load_checkpoint
from genlab.models.vae import VAE, VAEConfig

ROOT = Path(__file__).resolve().parents[1]


def _cli(out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "genlab.cli", "train", "vae", "--data", "digits", "--out", str(out),
            "--model.widths", "[4,8]", "--model.hidden-dim", "32", "--model.latent-dim", "4",
            "--batch-size", "16", "--ckpt-every", "25", "--val-every", "100", "--val-batches", "2",
            "--sample-every", "100000", "--log-every", "25", "--threads", "1", "--progress", "false", *extra]


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(run / "checkpoints" / "last.ckpt")["state_dict"]


def test_sigkill_then_resume_equals_uninterrupted_run(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    steps = "400"
    straight = tmp_path / "straight"
    subprocess.run(_cli(straight, "--max-steps", steps), check=True, env=env, capture_output=True)

    killed = tmp_path / "killed"
    proc = subprocess.Popen(_cli(killed, "--max-steps", steps), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    ckpt = killed / "checkpoints" / "last.ckpt"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if ckpt.exists() and load_checkpoint(ckpt)["global_step"] >= 75:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed; raise --max-steps"
    stopped_at = load_checkpoint(ckpt)["global_step"]
    assert 0 < stopped_at < int(steps)
    assert not list((killed / "checkpoints").glob(".*tmp")), "a killed save must leave no partial file behind"

    subprocess.run([sys.executable, "-m", "genlab.cli", "train", "vae", "--resume", str(killed),
                    "--max-steps", steps, "--progress", "false"], check=True, env=env, capture_output=True)
    a, b = _weights(straight), _weights(killed)
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-5, atol=1e-6, msg=key)
    # The losses logged after the resume point match the uninterrupted run's.
    logged = lambda run: {r["step"]: r["train/loss"] for r in read_metrics(run) if "train/loss" in r}  # noqa: E731
    later = [s for s in logged(straight) if s > stopped_at]
    assert later
    for step in later:
        assert logged(killed)[step] == pytest.approx(logged(straight)[step], rel=1e-5)


def test_a_run_resumed_between_log_steps_logs_what_an_uninterrupted_one_does(tmp_path, tiny_vae, tiny_train):
    """Lightning writes logged values after batch 19, 39, ... (--log-every 20): the loss is logged at those batches,
    so a record holds its own step's loss, and a run resumed at step 30 still writes step 39's (it once wrote
    step 20's loss as step 39's, and nothing after such a resume). That the losses after a resume equal an
    uninterrupted run's is test_sigkill_then_resume_equals_uninterrupted_run's."""
    import lightning.pytorch as pl

    class StopAt30(pl.Callback):  # the first session ends at step 30, its checkpoint there, as a killed run would
        def on_train_batch_end(self, trainer, *args):
            trainer.should_stop = trainer.should_stop or trainer.global_step >= 30

    config = from_dict(TrainConfig, {**tiny_train, "log_every": 20, "ckpt_every": 30, "val_every": 1000,
                                     "max_steps": 40})
    train("vae", "digits", from_dict(VAEConfig, tiny_vae), config, tmp_path / "straight")
    train("vae", "digits", from_dict(VAEConfig, tiny_vae), config, tmp_path / "resumed", callbacks=[StopAt30()])
    train("vae", "digits", from_dict(VAEConfig, tiny_vae), config, tmp_path / "resumed", resume=True)
    logged = lambda run: {r["step"]: r["train/loss"] for r in read_metrics(run) if "train/loss" in r}  # noqa: E731
    straight, resumed = logged(tmp_path / "straight"), logged(tmp_path / "resumed")
    assert sorted(straight) == [19, 39] and 39 in resumed, "the resumed session writes step 39's record"


def test_nan_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch, tiny_vae, tiny_train):
    original = VAE.loss

    def poisoned(self, batch, step=None):
        out = original(self, batch, step)
        if step == 12:
            out["loss"] = out["loss"] * float("nan")
        return out

    monkeypatch.setattr(VAE, "loss", poisoned)
    with pytest.raises(NonFiniteLossError, match="non-finite loss at step 12"):
        train("vae", "digits", from_dict(VAEConfig, tiny_vae), from_dict(TrainConfig, {**tiny_train, "max_steps": 40}),
              tmp_path / "run")
    checkpoint = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt")
    assert checkpoint["global_step"] == 10
    assert all(torch.isfinite(v).all() for v in checkpoint["state_dict"].values())
    assert not (tmp_path / "run" / "model").exists(), "a failed run must not export a model"


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    io = AtomicCheckpointIO()
    path = tmp_path / "last.ckpt"
    io.save_checkpoint({"step": torch.tensor(1)}, path)

    def crash(obj, f, *args, **kwargs):
        Path(f).write_bytes(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(OSError, match="disk full"):
        io.save_checkpoint({"step": torch.tensor(2)}, path)
    monkeypatch.undo()
    assert load_checkpoint(path)["step"].item() == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


def test_run_folder_and_resume_refusals(tmp_path, tiny_vae, tiny_train):
    run = train("vae", "digits", from_dict(VAEConfig, tiny_vae),
                from_dict(TrainConfig, {**tiny_train, "max_steps": 12}), tmp_path / "run")
    for name in ["config.yaml", "data_report.json", "metrics.jsonl", "checkpoints/last.ckpt", "checkpoints/best.ckpt",
                 "model/config.json", "model/model.safetensors", "model/README.md", "tb"]:
        assert (run / name).exists(), name
    assert any(p.suffix == ".png" for p in (run / "samples").iterdir())
    assert json.loads((run / "data_report.json").read_text())["counts"] == {"train": 1437, "test": 360}
    from genlab.errors import GenlabError

    with pytest.raises(GenlabError, match="--resume"):
        train("vae", "digits", from_dict(VAEConfig, tiny_vae), from_dict(TrainConfig, tiny_train), run)


def test_device_options_reach_lightning(tmp_path):
    config = TrainConfig(precision="bf16-mixed", accelerator="cpu", devices="1", max_time="90s")
    trainer = build_trainer(tmp_path, config, [])
    assert trainer.precision == "bf16-mixed" and trainer.num_devices == 1
    assert trainer.max_steps == config.max_steps
    assert trainer.fit_loop.max_steps == 3000


def test_cosine_schedule_anneals_within_max_time(tmp_path, tiny_vae, tiny_train):
    """A wall-clock budget far shorter than max_steps still takes the learning rate down to its floor."""
    import lightning.pytorch as pl

    class RecordLR(pl.Callback):
        def __init__(self):
            self.lrs = []

        def on_train_batch_end(self, trainer, *args):
            self.lrs.append(trainer.optimizers[0].param_groups[0]["lr"])

    record = RecordLR()
    train_config = from_dict(TrainConfig, {**tiny_train, "max_steps": 10**6, "max_time": "4s", "lr": 1e-3,
                                           "schedule": "cosine", "warmup_steps": 0, "ckpt_every": 10**6,
                                           "val_every": 10**6})
    train("vae", "digits", from_dict(VAEConfig, tiny_vae), train_config, tmp_path / "run", callbacks=[record])
    assert 20 < len(record.lrs) < 10**6, "stopped by the time budget"
    assert record.lrs[0] > 0.95e-3 and record.lrs[len(record.lrs) // 2] < 0.9e-3
    assert record.lrs[-1] < 0.25e-3, f"annealed to about min_lr_ratio x lr by the deadline, got {record.lrs[-1]:.2e}"
    assert all(a >= b for a, b in zip(record.lrs, record.lrs[1:])), "monotone decay"
