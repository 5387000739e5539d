"""The Lightning callbacks of a genlab run: exact resume, atomic checkpoints, previews, progress, EMA, collapse.

Each takes what it needs explicitly; the ones that must not act after a non-finite loss read the
engine's `GenlabModule.nonfinite`.
"""

from __future__ import annotations

import json
import math
import random
import sys
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.callbacks import TQDMProgressBar
from lightning.pytorch.loggers import Logger
from lightning.pytorch.utilities import rank_zero_only

from genlab.errors import DataError
from genlab.models.base import ImageSampler, TextGenerator, Translator, class_labels


class RNGState(pl.Callback):
    """Saves the torch, numpy and Python RNG states in checkpoints and restores them when training
    restarts (Lightning does not), so that a resumed run draws the same random numbers.

    In a run of several processes each draws its own stream: a fresh run seeds process r from (seed, r) once the
    processes are up (the weights were made alike before, and DDP copies the first process's anyway), and a
    checkpoint holds every process's state, gathered from all of them, so that each resumes its own."""

    def __init__(self, seed: int = 0):
        self.seed = seed
        self._pending: dict[str, Any] | None = None

    @staticmethod
    def _own() -> dict[str, Any]:
        kind, keys, pos, has_gauss, gauss = np.random.get_state()
        state = {"torch": torch.get_rng_state(), "python": random.getstate(),
                 "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                           "has_gauss": int(has_gauss), "gauss": float(gauss)}}
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def state_dict(self) -> dict[str, Any]:
        import torch.distributed as dist

        state = self._own()
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            every: list = [None] * dist.get_world_size()
            dist.all_gather_object(every, state)  # every process saves: all of them take part
            return {**every[0], "ranks": every}
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._pending = state_dict

    def on_train_start(self, trainer, pl_module):
        if self._pending is None:
            if trainer.world_size > 1:
                seed = int(np.random.SeedSequence([self.seed, trainer.global_rank]).generate_state(1)[0])
                torch.manual_seed(seed)
                np.random.seed(seed)
                random.seed(seed)
            return
        s = self._pending
        if "ranks" in s:
            if len(s["ranks"]) != trainer.world_size:
                raise DataError(f"this run was checkpointed by {len(s['ranks'])} processes and resumes on "
                                f"{trainer.world_size}: its random streams cannot continue exactly",
                                f"resume it with --devices {len(s['ranks'])} (as many processes as it had)")
            s = s["ranks"][trainer.global_rank]
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
    """Writes what the model makes to samples/ every `every` steps and at the end: a grid of samples, a grid of
    validation images' translations, or a text. Its random numbers come from its own seed."""

    def __init__(self, folder: Path, every: int, seed: int, data: Any, options: dict[str, Any]):
        self.folder, self.every, self.seed, self.options = folder, every, seed, options
        self.images = None
        if data.kind == "image":
            from genlab.data.loader import validation_images

            self.images = validation_images(data, 16)

    @staticmethod
    def count(model) -> int:
        """64 samples of images up to 32x32, fewer of larger ones (as many pixels, at least 16): a spectrogram
        model's 80 x 51 preview would otherwise cost minutes on a CPU at the end of every run."""
        h, w = model.config.image_size
        return max(16, min(64, 64 * 32 * 32 // (h * w)))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step % self.every == 0 and pl_module.nonfinite is None:
            self.write(pl_module.model, trainer.global_step)

    @rank_zero_only
    def write(self, model, step: int) -> Path | None:
        from genlab.evaluation.report import save_grid, translation_grid

        was_training = model.training
        model.eval()
        path = self.folder / f"step_{step:07d}"
        with torch.random.fork_rng(devices=[]):
            if isinstance(model, ImageSampler):
                generator = torch.Generator(device=next(model.parameters()).device).manual_seed(self.seed)
                written = save_grid(model.sample(self.count(model), generator=generator,
                                                 options=model.sample_options(**self.options)),
                                    path.with_suffix(".png"))
            elif isinstance(model, Translator) and self.images is not None and len(self.images):
                grid, nrow = translation_grid(model, self.images)
                written = save_grid(grid, path.with_suffix(".png"), nrow=nrow)
            elif isinstance(model, TextGenerator):
                from genlab.files import atomic_write

                text = "".join(model.generate(max_new_tokens=300, temperature=0.8, seed=self.seed))
                written = atomic_write(path.with_suffix(".txt"), text)
            else:
                written = None
        model.train(was_training)
        return written


class StepProgressBar(TQDMProgressBar):
    """One bar over the run's optimiser steps, with its ETA. Lightning's bars count the batches of an epoch (one
    pass over the data here) and show the epoch against max_epochs, which a step-bounded run leaves at -1."""

    def on_train_start(self, trainer, pl_module):
        self.train_progress_bar = self.init_train_tqdm()
        self.train_progress_bar.reset(total=trainer.max_steps)
        self.train_progress_bar.n = trainer.global_step
        self.train_progress_bar.set_description("training")

    def on_train_epoch_start(self, trainer, *_):
        pass

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        bar = self.train_progress_bar
        if bar is not None and self._should_update(trainer.global_step, bar.total):
            bar.n = trainer.global_step
            bar.set_postfix(self.get_metrics(trainer, pl_module), refresh=False)
            bar.refresh()

    def on_train_epoch_end(self, trainer, pl_module):
        pass

    def get_metrics(self, trainer, pl_module) -> dict[str, Any]:
        metrics = super().get_metrics(trainer, pl_module)
        metrics.pop("v_num", None)  # the logger's version: always 0 in a genlab run
        return metrics


class EMAUpdate(pl.Callback):
    """After each optimiser step, moves a model's EMA weights towards the trained ones (diffusion)."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        pl_module.model.update_ema(pl_module.batch_step)


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



class TrialPruning(pl.Callback):
    """Reports the watched validation metric to the Optuna trial at every validation pass and stops
    training when the pruner says so (or the metric is no longer finite). Written here rather than taken
    from optuna-integration, whose callback reports by epoch: genlab validates every `val_every` steps."""

    def __init__(self, trial, metric: str):
        self.trial, self.metric = trial, metric
        self.pruned_at: int | None = None
        self.reason = ""

    def on_validation_end(self, trainer, pl_module):
        value = trainer.callback_metrics.get(self.metric)
        if trainer.sanity_checking or value is None or self.pruned_at is not None:
            return
        value, step = float(value), trainer.global_step
        if not trainer.is_global_zero:
            pass  # several processes (genlab.tune.trial): the first reports and decides, below they all follow it
        elif not math.isfinite(value):
            self.pruned_at, self.reason = step, f"{self.metric} is {value} at step {step}"
        else:
            self.trial.report(value, step)
            if self.trial.should_prune():
                self.pruned_at = step
                self.reason = f"{self.metric} = {value:.4g} at step {step} is worse than the pruner's threshold"
        if trainer.world_size > 1:
            self.pruned_at, self.reason = trainer.strategy.broadcast((self.pruned_at, self.reason), src=0)
        if self.pruned_at is not None:
            trainer.should_stop = True


# -- collapse monitoring ----------------------------------------------------------------------


def collapse_warning(recall: float, fractions, real_fractions, names, recall_floor: float) -> str | None:
    """What looks collapsed, or None: recall below the floor, or classes whose share of the samples is under
    a fifth of their share of real images (the reference classifier's predicted-class histograms)."""
    problems = []
    if recall < recall_floor:
        problems.append(f"recall {recall:.3f} < {recall_floor:g}: the samples cover little of the data")
    missing = [name for name, f, r in zip(names, fractions, real_fractions, strict=True) if r > 0 and f < 0.2 * r]
    if missing:
        problems.append(f"classes nearly absent from the samples: {', '.join(missing)}")
    return "; ".join(problems) or None


class CollapseMonitor(pl.Callback):
    """At each validation pass: samples from the EMA generator measured against the held-out validation images in
    the reference classifier's feature space (recall, precision, FD-genlab, class histogram), logged as monitor/...,
    with a warning when they look collapsed. Draws its noise from its own generator: training randomness is
    untouched. In a run of several processes the first measures and the others receive its figures."""

    def __init__(self, data, samples: int, recall_floor: float, seed: int, progress: bool):
        self.data, self.samples, self.recall_floor, self.seed, self.progress = (
            data, samples, recall_floor, seed, progress,
        )
        self.reference = None
        self.real: tuple[torch.Tensor, torch.Tensor] | None = None  # features and class probabilities
        self.warnings: list[str] = []

    def on_fit_start(self, trainer, pl_module):
        from genlab.data.loader import validation_images
        from genlab.metrics.reference import reference_classifier

        if not trainer.is_global_zero:
            return
        try:
            self.reference = reference_classifier(self.data, progress=self.progress)
        except DataError as error:
            print(f"collapse monitor off: {error}", file=sys.stderr)
            return
        self.real = self.reference.embed(validation_images(self.data, self.samples))

    def on_validation_epoch_end(self, trainer, pl_module):
        if trainer.sanity_checking:
            return
        measured = self.measure(trainer, pl_module) if trainer.is_global_zero else None
        if trainer.world_size > 1:
            measured = trainer.strategy.broadcast(measured, src=0)
        if measured is None:
            return
        metrics, warning = measured
        pl_module.log_dict(metrics)
        if warning and trainer.is_global_zero:
            message = f"possible mode collapse at step {trainer.global_step}: {warning}"
            self.warnings.append(message)
            print(f"warning: {message}", file=sys.stderr)

    @torch.no_grad()
    def measure(self, trainer, pl_module) -> tuple[dict[str, float], str | None] | None:
        """The monitor's figures and its warning (None when it is off)."""
        from genlab.metrics.images import class_accuracy, class_histogram, fd_genlab, prdc

        if self.reference is None or len(self.real[0]) <= 5:
            return None
        model = pl_module.model
        labels = class_labels(model.config, None, self.samples)
        generator = torch.Generator(next(model.parameters()).device).manual_seed(self.seed)  # the same z at every check
        fake = model.sample(self.samples, labels=labels, generator=generator)
        features, probs = self.reference.embed(fake.cpu())
        real_features, real_probs = self.real
        metrics = {f"monitor/{k}": v for k, v in prdc(real_features, features).items()}
        metrics["monitor/fd_genlab"] = fd_genlab(real_features, features)
        fractions, real_fractions = class_histogram(probs), class_histogram(real_probs)
        metrics["monitor/class_histogram_tv"] = float(abs(fractions - real_fractions).sum() / 2)
        metrics |= {
            f"monitor/class_fraction/{name}": float(f)
            for name, f in zip(self.reference.classes, fractions, strict=True)
        }
        if labels is not None:
            metrics["monitor/class_accuracy"] = class_accuracy(probs, labels)
        return metrics, collapse_warning(metrics["monitor/recall"], fractions, real_fractions, self.reference.classes,
                                         self.recall_floor)
