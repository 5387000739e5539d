"""The training engine: one place where the Lightning Trainer, its callbacks and the run folder are assembled.

`train(...)` turns a family, a dataset and configs into a run folder:
config.yaml, checkpoints/last.ckpt (atomic, resumable exactly), metrics.jsonl,
TensorBoard logs in tb/, sample grids in samples/, and the exported model/.
"""

from __future__ import annotations

import json
import math
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
import yaml
from lightning.pytorch.callbacks import Timer
from lightning.pytorch.loggers import Logger, TensorBoardLogger
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities import rank_zero_only

from genlab.config import TrainConfig, parse_duration, to_dict
from genlab.data import load_data
from genlab.errors import DataError, GenlabError, NonFiniteLossError
from genlab.hardware import training_precision
from genlab.models.base import GenerativeModel, get_family
from genlab.persist import load_checkpoint


class GenlabModule(pl.LightningModule):
    """Wraps any family's model: the model owns the loss, this owns optimisation and logging."""

    def __init__(self, model: GenerativeModel, train: TrainConfig):
        super().__init__()
        self.automatic_optimization = not model.manual_optimization
        self.model = model
        self.train_config = train
        self.batches_seen = 0  # training batches consumed; the loader resumes from here
        self.nonfinite: str | None = None  # set when a loss is NaN/inf: training stops before stepping
        self._stepped = False  # manual optimisation: whether this batch's counted optimiser step was taken

    def training_step(self, batch, batch_idx):
        self.model.global_step = self.global_step
        if self.model.manual_optimization:
            self._stepped = False
            out = self.model.train_step(batch, self._manual_step)
        else:
            out = self.model.loss(batch)
            bad = [k for k, v in out.items() if not torch.isfinite(v).all()]
            if bad:
                self._stop(f"non-finite {', '.join(bad)} at step {self.global_step}")
        self.batches_seen += 1
        if self.nonfinite is not None:
            return None  # skips the optimiser step: the weights stay those of the last good step
        if self.global_step % self.train_config.log_every == 0:  # self.log costs ~1 ms a call: log only when written
            self.log_dict({f"train/{k}": v.detach() for k, v in out.items()}, prog_bar=False)
            self.log("loss", out["loss"].detach(), prog_bar=True, logger=False)
        return None if self.model.manual_optimization else out["loss"]

    def _stop(self, reason: str) -> None:
        self.nonfinite = reason
        self.trainer.should_stop = True

    def _manual_step(self, loss: torch.Tensor, index: int) -> None:
        """Apply one optimiser's update for a manually optimised family, unless a loss went non-finite."""
        if self.nonfinite is not None:
            return
        if not torch.isfinite(loss):
            self._stop(f"non-finite loss for optimiser {index} at step {self.global_step}")
            return
        optimizers = self.optimizers()
        optimizer = optimizers[index] if isinstance(optimizers, list) else optimizers
        optimizer.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        if self.train_config.grad_clip:
            self.clip_gradients(optimizer, gradient_clip_val=self.train_config.grad_clip, gradient_clip_algorithm="norm")
        # Lightning counts every LightningOptimizer.step as a global step, so a GAN's two players would make
        # --max-steps, log_every and ckpt_every count half-batches. One counted step per batch; the others go
        # through the strategy (same precision plugin and hooks, no count).
        if self._stepped:
            self.trainer.strategy.optimizer_step(optimizer.optimizer, lambda: None)
        else:
            optimizer.step()
            self._stepped = True
        schedulers = self.lr_schedulers()
        (schedulers[index] if isinstance(schedulers, list) else schedulers).step()

    def validation_step(self, batch, batch_idx):
        # Validation draws its own fixed random numbers and leaves the training stream untouched,
        # so that a resumed run and an uninterrupted one see the same training randomness.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(10_000 + batch_idx)
            out = self.model.validation_metrics(batch)
        self.log_dict({f"val/{k}": v for k, v in out.items()}, on_epoch=True, prog_bar=False, batch_size=len(batch[0]))

    def configure_optimizers(self):
        """The family's optimisers when it declares them (GANs, Muon for LMs), else AdamW with decoupled
        weight decay on matrices only; each gets the warm-up + constant/cosine schedule, stepped per step."""
        t = self.train_config
        if type(self.model).optimizers is not GenerativeModel.optimizers:
            optimizers = self.model.optimizers(t)
        else:
            decay = [p for p in self.model.parameters() if p.ndim >= 2]
            no_decay = [p for p in self.model.parameters() if p.ndim < 2]
            groups = [{"params": decay, "weight_decay": t.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
            optimizers = [torch.optim.AdamW(groups, lr=t.lr, betas=t.betas)]
        schedulers = [torch.optim.lr_scheduler.LambdaLR(o, lambda step: lr_factor(step, t, self._time_fraction()))
                      for o in optimizers]
        if self.model.manual_optimization:
            return optimizers, schedulers
        return {"optimizer": optimizers[0], "lr_scheduler": {"scheduler": schedulers[0], "interval": "step"}}

    def _time_fraction(self) -> float:
        """The share of --max-time spent training (0 without one), from Lightning's Timer (restored on resume)."""
        trainer = getattr(self, "_trainer", None)
        timer = next((c for c in trainer.callbacks if isinstance(c, Timer)), None) if trainer is not None else None
        remaining = timer.time_remaining("train") if timer is not None else None
        if remaining is None:
            return 0.0
        elapsed = timer.time_elapsed("train")
        return min(1.0, elapsed / max(elapsed + remaining, 1e-9))

    def on_save_checkpoint(self, checkpoint):
        checkpoint["genlab"] = {"batches_seen": self.batches_seen, "family": self.model.family}

    def on_load_checkpoint(self, checkpoint):
        self.batches_seen = int(checkpoint.get("genlab", {}).get("batches_seen", 0))


def lr_factor(step: int, t: TrainConfig, time_fraction: float = 0.0) -> float:
    """Linear warm-up, then constant or cosine decay to `min_lr_ratio` at `max_steps`, or at --max-time
    when that comes first: `time_fraction` is the share of the time budget spent, and the decay follows
    whichever budget runs out sooner (a 90-second tuning trial of a 3,000-step config still anneals)."""
    if step < t.warmup_steps:
        return (step + 1) / t.warmup_steps
    if t.schedule == "constant":
        return 1.0
    progress = min(1.0, max((step - t.warmup_steps) / max(1, t.max_steps - t.warmup_steps), time_fraction))
    return t.min_lr_ratio + (1 - t.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints go to a temporary file that is renamed into place: a crash never leaves half a file.
    Loading refuses anything but tensors and plain containers (no unpickling of objects)."""

    def save_checkpoint(self, checkpoint, path, storage_options=None):
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        finally:
            Path(tmp).unlink(missing_ok=True)

    def load_checkpoint(self, path, map_location=None, weights_only=None):
        return load_checkpoint(path)


class RNGState(pl.Callback):
    """Saves the torch, numpy and Python RNG states in checkpoints and restores them when training
    restarts (Lightning does not), so that a resumed run draws the same random numbers."""

    def __init__(self):
        self._pending: dict[str, Any] | None = None

    def state_dict(self) -> dict[str, Any]:
        kind, keys, pos, has_gauss, gauss = np.random.get_state()
        state = {"torch": torch.get_rng_state(), "python": random.getstate(),
                 "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                           "has_gauss": int(has_gauss), "gauss": float(gauss)}}
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._pending = state_dict

    def on_train_start(self, trainer, pl_module):
        if self._pending is None:
            return
        s = self._pending
        torch.set_rng_state(s["torch"])
        random.setstate(tuple(tuple(x) if isinstance(x, list) else x for x in s["python"]))
        n = s["numpy"]
        np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
        if "cuda" in s and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(s["cuda"])
        self._pending = None


class Checkpointer(pl.Callback):
    """last.ckpt every `every` steps and at the end; best.ckpt when the monitored validation metric improves.
    Nothing is written once a non-finite loss was seen, so the last good checkpoint survives."""

    def __init__(self, folder: Path, every: int, monitor: str):
        self.folder, self.every, self.monitor = folder, every, monitor
        self.best = math.inf

    def state_dict(self):
        return {"best": self.best}

    def load_state_dict(self, state_dict):
        self.best = state_dict["best"]

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if pl_module.nonfinite is None and trainer.global_step % self.every == 0:
            trainer.save_checkpoint(self.folder / "last.ckpt", weights_only=False)

    def on_validation_end(self, trainer, pl_module):
        value = trainer.callback_metrics.get(self.monitor)
        if trainer.sanity_checking or value is None or pl_module.nonfinite is not None:
            return
        if float(value) < self.best:
            self.best = float(value)
            trainer.save_checkpoint(self.folder / "best.ckpt", weights_only=False)


class Preview(pl.Callback):
    """Writes what the model makes (an image grid or text) to samples/ every `every` steps."""

    def __init__(self, folder: Path, every: int, seed: int):
        self.folder, self.every, self.seed = folder, every, seed

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step % self.every == 0 and pl_module.nonfinite is None:
            self.write(pl_module.model, trainer.global_step)

    @rank_zero_only
    def write(self, model: GenerativeModel, step: int) -> Path | None:
        from genlab.report import save_grid

        was_training = model.training
        model.eval()
        with torch.random.fork_rng(devices=[]):
            out = model.preview(torch.Generator(device=next(model.parameters()).device).manual_seed(self.seed))
        model.train(was_training)
        self.folder.mkdir(parents=True, exist_ok=True)
        if isinstance(out, torch.Tensor):
            return save_grid(out, self.folder / f"step_{step:07d}.png")
        if isinstance(out, str):
            path = self.folder / f"step_{step:07d}.txt"
            path.write_text(out)
            return path
        return None


class JsonlLogger(Logger):
    """metrics.jsonl: one JSON object per logging call, appended (a resumed run continues the file)."""

    def __init__(self, path: Path):
        super().__init__()
        self.path = path
        self.start = time.time()

    @property
    def name(self):
        return "jsonl"

    @property
    def version(self):
        return 0

    @rank_zero_only
    def log_hyperparams(self, params, *args, **kwargs):
        pass

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, float], step: int | None = None):
        record = {"step": step, "time": round(time.time() - self.start, 3)}
        record.update({k: float(v) for k, v in metrics.items()})
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")


def read_metrics(run: Path) -> list[dict[str, float]]:
    path = Path(run) / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def build_trainer(run: Path, t: TrainConfig, callbacks: list[pl.Callback], manual: bool = False) -> pl.Trainer:
    """The Trainer every family trains with; device and distribution options pass straight through."""
    devices: Any = t.devices
    if isinstance(devices, str) and devices.isdigit():
        devices = int(devices)
    return pl.Trainer(
        default_root_dir=run,
        max_steps=t.max_steps,
        max_epochs=-1,
        max_time=parse_duration(t.max_time),
        accelerator=t.accelerator,
        devices=devices,
        num_nodes=t.num_nodes,
        strategy=t.strategy,
        precision=training_precision(t.precision, t.accelerator),
        gradient_clip_val=None if manual else t.grad_clip,  # manual families clip in their step
        val_check_interval=t.val_every,
        check_val_every_n_epoch=None,
        limit_val_batches=t.val_batches,
        num_sanity_val_steps=0,
        log_every_n_steps=t.log_every,
        logger=[JsonlLogger(run / "metrics.jsonl"), TensorBoardLogger(run, name="tb", version="")],
        callbacks=callbacks,
        enable_checkpointing=False,  # the Checkpointer callback writes them, atomically
        enable_progress_bar=t.progress,
        enable_model_summary=False,
        plugins=[AtomicCheckpointIO()],
    )


def write_run_config(run: Path, record: dict[str, Any]) -> None:
    from genlab.data.base import atomic_write_bytes

    atomic_write_bytes(run / "config.yaml", yaml.safe_dump(record, sort_keys=False).encode())


def read_run_config(run: Path) -> dict[str, Any]:
    path = Path(run) / "config.yaml"
    if not path.exists():
        raise GenlabError(f"{run} has no config.yaml: it is not a genlab run folder",
                          "pass a folder written by genlab train (for example runs/NAME)")
    return yaml.safe_load(path.read_text())


def train(family: str, data: str, model_config: Any, train_config: TrainConfig, out: str | Path,
          resume: bool = False, max_bad_fraction: float = 0.05, callbacks: list[pl.Callback] | None = None,
          command: str | None = None) -> Path:
    """Train a family on data into the run folder `out`; with `resume`, continue from its last.ckpt."""
    run = Path(out)
    cls = get_family(family)
    ckpt = run / "checkpoints" / "last.ckpt"
    if resume and not ckpt.exists():
        raise GenlabError(f"cannot resume: {ckpt} does not exist", f"train first with genlab train {family} --out {run}")
    if not resume and ckpt.exists():
        raise GenlabError(f"{run} already holds a run", f"resume it with --resume {run}, or choose another --out")
    if train_config.threads:
        torch.set_num_threads(train_config.threads)

    dataset = load_data(data, max_bad_fraction=max_bad_fraction)
    if dataset.kind != cls.data_kind:
        example = "fashion-mnist or a folder of images" if cls.data_kind == "image" else "tiny-shakespeare or a text file"
        raise DataError(f"the {family} family trains on {cls.data_kind} data, but --data {data} is {dataset.kind}",
                        f"pass {cls.data_kind} data such as {example}")
    config = cls.config_for_data(model_config, dataset)

    pl.seed_everything(train_config.seed, workers=True, verbose=False)
    model = cls(config)
    module = GenlabModule(model, train_config)
    train_loader, val_loader = model.make_loaders(dataset, train_config, lambda: module.batches_seen)  # LMs: their tokenizer

    run.mkdir(parents=True, exist_ok=True)
    write_run_config(run, {
        "family": family, "data": data, "model": to_dict(config), "train": to_dict(train_config),
        "command": command or " ".join(sys.argv), "parameters": model.num_parameters(),
    })
    (run / "data_report.json").write_text(json.dumps(dataset.report.to_dict(), indent=1))

    checkpointer = Checkpointer(run / "checkpoints", train_config.ckpt_every, cls.monitor)
    preview = Preview(run / "samples", train_config.sample_every, train_config.seed)
    trainer = build_trainer(run, train_config, [RNGState(), checkpointer, preview, *model.callbacks(dataset, train_config),
                                                *(callbacks or [])],
                            manual=cls.manual_optimization)
    started = time.time()
    trainer.fit(module, train_loader, val_loader, ckpt_path=ckpt if resume else None)
    if module.nonfinite:
        raise NonFiniteLossError(
            f"training stopped: {module.nonfinite}; the last good checkpoint is {ckpt}",
            "lower --lr, raise --warmup-steps or set --grad-clip, then resume or start again")
    if trainer.interrupted:
        raise GenlabError("training was interrupted", f"continue with genlab train {family} --resume {run}")

    trainer.save_checkpoint(ckpt, weights_only=False)
    preview.write(model, trainer.global_step)
    metrics = {k: round(float(v), 4) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
    model.save_pretrained(run / "model", card={
        "data": data, "steps": trainer.global_step, "train seconds (this session)": round(time.time() - started, 1),
        "validation": metrics, "run folder": str(run)})
    return run
