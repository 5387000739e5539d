"""The training engine: one place where the Lightning Trainer, its callbacks and the run folder are assembled.

`fit(...)` turns a family, a dataset and configs into a run folder: config.yaml,
checkpoints/last.ckpt (atomic, resumable exactly), metrics.jsonl, TensorBoard logs in tb/,
previews in samples/, and the exported model/. The family's recipe (genlab/engine/recipes.py)
gives its batches, optimisers and callbacks; the model gives its loss.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Timer
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.plugins.io import TorchCheckpointIO

from genlab.config import TrainConfig, parse_duration, to_dict
from genlab.data import as_images, load_data
from genlab.engine.callbacks import Checkpointer, JsonlLogger, Preview, RNGState, StepProgressBar
from genlab.engine.recipes import Recipe, recipe_for
from genlab.engine.runs import first_process, write_run_config
from genlab.errors import ConfigError, DataError, GenlabError, NonFiniteLossError
from genlab.files import atomic_path, atomic_write, load_torch_file
from genlab.hardware import bf16_is_fast, denormals_flushed, training_precision
from genlab.models import get_family
from genlab.models.base import GenerativeModel, TwoPlayerGame


class GenlabModule(pl.LightningModule):
    """Wraps any family's model: the model owns the loss, the recipe the optimisers, this the steps and logging."""

    def __init__(self, model: GenerativeModel, train: TrainConfig, recipe: Recipe):
        super().__init__()
        self.two_player = isinstance(model, TwoPlayerGame) and model.is_game()
        self.automatic_optimization = not self.two_player
        self.model = model
        self.train_config = train
        self.recipe = recipe
        self.batches_seen = 0  # training batches consumed; the loader resumes from here
        self.batch_step = 0  # the optimiser step the current batch trains (what the model is told)
        self.nonfinite: str | None = None  # set when a loss is NaN/inf: training stops before stepping
        self._stepped = False  # two players: whether this batch's counted optimiser step was taken

    def training_step(self, batch, batch_idx):
        self.batch_step = self.global_step
        if self.two_player:
            self._stepped = False
            out = self.model.train_step(batch, self._update, self.global_step)
        else:
            out = self.model.loss(batch, self.global_step)
            bad = [k for k, v in out.items() if not torch.isfinite(v).all()]
            if bad:
                self._stop(f"non-finite {', '.join(bad)} at step {self.global_step}")
        self.batches_seen += 1
        if self.nonfinite is not None:
            return None  # skips the optimiser step: the weights stay those of the last good step
        # self.log costs about as much as a small model's step (docs/architecture.md): log only what is written.
        # Lightning writes the logged values after the batch whose (index + 1) is a multiple of log_every_n_steps;
        # logging at other batches would write a value that many steps stale (and none after a resume between
        # the two, where nothing was logged since)
        if (self.global_step + 1) % self.train_config.log_every == 0:
            # several processes: the mean over them, the loss of the whole global batch (costs one reduction)
            sync = self.trainer.world_size > 1
            self.log_dict({f"train/{k}": v.detach() for k, v in out.items()}, prog_bar=False, sync_dist=sync)
            self.log("loss", out["loss"].detach(), prog_bar=True, logger=False, sync_dist=sync)
        return None if self.two_player else out["loss"]

    def _stop(self, reason: str) -> None:
        self.nonfinite = reason
        self.trainer.should_stop = True

    def _update(self, loss: torch.Tensor, player: int) -> None:
        """Apply one player's update in a two-player game, unless a loss went non-finite."""
        if self.nonfinite is not None:
            return
        if not torch.isfinite(loss):
            self._stop(f"non-finite loss for player {player} at step {self.global_step}")
            return
        optimizers = self.optimizers()
        optimizer = optimizers[player] if isinstance(optimizers, list) else optimizers
        optimizer.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        if self.train_config.grad_clip:
            self.clip_gradients(
                optimizer, gradient_clip_val=self.train_config.grad_clip, gradient_clip_algorithm="norm"
            )
        # Lightning counts every LightningOptimizer.step as a global step, so a GAN's two players would make
        # --max-steps, log_every and ckpt_every count half-batches. One counted step per batch; the others go
        # through the strategy (same precision plugin and hooks, no count).
        if self._stepped:
            self.trainer.strategy.optimizer_step(optimizer.optimizer, lambda: None)
        else:
            optimizer.step()
            self._stepped = True
        schedulers = self.lr_schedulers()
        (schedulers[player] if isinstance(schedulers, list) else schedulers).step()

    def validation_step(self, batch, batch_idx):
        # Validation draws its own fixed random numbers and leaves the training stream untouched,
        # so that a resumed run and an uninterrupted one see the same training randomness.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(10_000 + batch_idx)
            out = self.model.validation_metrics(batch)
        self.log_dict({f"val/{k}": v for k, v in out.items()}, on_epoch=True, prog_bar=False, batch_size=len(batch[0]))

    def configure_optimizers(self):
        """The recipe's optimisers, each with the warm-up + constant/cosine schedule, stepped per step."""
        t = self.train_config
        optimizers = self.recipe.optimizers(self.model, t)
        schedulers = [torch.optim.lr_scheduler.LambdaLR(o, lambda step: lr_factor(step, t, self._time_fraction()))
                      for o in optimizers]
        if self.two_player:
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
        with atomic_path(path) as tmp:
            torch.save(checkpoint, tmp)

    def load_checkpoint(self, path, map_location=None, weights_only=None):
        return load_torch_file(path)


def agreed_precision(t: TrainConfig) -> str:
    """The run's Lightning precision, the same in every process, and one answer to `bf16_is_fast` for all of
    them. `auto` and Muon's Newton-Schulz iteration (genlab.engine.optim) both time a bf16 product against an fp32
    one, and processes timing at once on a busy machine can disagree, after which their weights drift apart
    (caught by tests/test_ddp_families.py under make test's load). The first process decides: the processes DDP
    starts later inherit its GENLAB_BF16, and processes already joined take its answer by broadcast."""
    import torch.distributed as dist

    fast = bf16_is_fast()
    if dist.is_available() and dist.is_initialized():
        box = [fast]
        dist.broadcast_object_list(box, src=0)
        fast = box[0]
    os.environ["GENLAB_BF16"] = "1" if fast else "0"
    return training_precision(t.precision, t.accelerator)


def build_trainer(run: Path, t: TrainConfig, callbacks: list[pl.Callback], two_player: bool = False) -> pl.Trainer:
    """The Trainer every family trains with; device and distribution options pass straight through."""
    devices: Any = t.devices
    if isinstance(devices, str) and devices.isdigit():
        devices = int(devices)
    # validation gives every process every batch (genlab.data.loader), so its figures need no reduction
    warnings.filterwarnings("ignore", message=r".*sync_dist=True.*when logging on epoch level", category=UserWarning)
    strategy: Any = t.strategy
    if strategy == "ddp":
        # A player of a two-player game leaves the other's weights out of its loss, and a conditional model's
        # embedding of the condition sits out the batches whose condition was dropped: DDP must look for weights
        # without gradients at each step, or it waits for them forever.
        from lightning.pytorch.strategies import DDPStrategy

        strategy = DDPStrategy(find_unused_parameters=True)
        warnings.filterwarnings("ignore", message=r".*find_unused_parameters=True was specified.*")
    return pl.Trainer(
        default_root_dir=run,
        max_steps=t.max_steps,
        max_epochs=-1,
        max_time=parse_duration(t.max_time),
        accelerator=t.accelerator,
        devices=devices,
        num_nodes=t.num_nodes,
        strategy=strategy,
        precision=agreed_precision(t),
        gradient_clip_val=None if two_player else (t.grad_clip or None),  # two players clip in their update
        val_check_interval=t.val_every,
        check_val_every_n_epoch=None,
        limit_val_batches=t.val_batches,
        num_sanity_val_steps=0,
        log_every_n_steps=t.log_every,
        logger=[JsonlLogger(run / "metrics.jsonl"), TensorBoardLogger(run, name="tb", version="")],
        callbacks=[*callbacks, *([StepProgressBar()] if t.progress else [])],
        enable_checkpointing=False,  # the Checkpointer callback writes them, atomically
        enable_progress_bar=t.progress,
        enable_model_summary=False,
        plugins=[AtomicCheckpointIO()],
    )


def fit(family: str, data: str, model_config: Any, train_config: TrainConfig, out: str | Path, resume: bool = False,
        max_bad_fraction: float = 0.05, callbacks: list[pl.Callback] | None = None, command: str | None = None) -> Path:
    """Train a family on data into the run folder `out`; with `resume`, continue from its last.ckpt."""
    with denormals_flushed():
        return _fit(family, data, model_config, train_config, Path(out), resume, max_bad_fraction, callbacks, command)


def _fit(family: str, data: str, model_config: Any, train_config: TrainConfig, run: Path, resume: bool,
         max_bad_fraction: float, callbacks: list[pl.Callback] | None, command: str | None) -> Path:
    cls, recipe = get_family(family), recipe_for(family)
    ckpt = run / "checkpoints" / "last.ckpt"
    if resume and not ckpt.exists():
        raise GenlabError(
            f"cannot resume: {ckpt} does not exist", f"train first with genlab train {family} --out {run}"
        )
    if not resume and ckpt.exists():
        raise GenlabError(f"{run} already holds a run", f"resume it with --resume {run}, or choose another --out")
    if train_config.threads:
        torch.set_num_threads(train_config.threads)

    dataset = load_data(data, max_bad_fraction=max_bad_fraction)
    if cls.data_kind == "image":  # sound, as the images of its spectrograms
        dataset = as_images(dataset)
    if dataset.kind != cls.data_kind and dataset.kind not in cls.also_trains_on:
        example = {"image": "fashion-mnist or a folder of images", "text": "tiny-shakespeare or a text file",
                   "table": "adult or a CSV file", "audio": "a folder of sound files (genlab data make spoken-digits)",
                   "speech": "a corpus of texts and sound (genlab data make tts-corpus)",
                   "video": "a folder of clips (genlab data make moving-fashion)"}[cls.data_kind]
        raise DataError(f"the {family} family trains on {cls.data_kind} data, but --data {data} is "
                        f"{dataset.kind} data",
                        f"pass {cls.data_kind} data such as {example}")
    config = cls.config_for_data(model_config, dataset)

    pl.seed_everything(train_config.seed, workers=True, verbose=False)
    model = cls(config)

    def record_run() -> None:  # the run folder's config.yaml and data report (by the first process of several)
        if not first_process():
            return
        run.mkdir(parents=True, exist_ok=True)
        write_run_config(run, {
            "family": family, "data": data, "model": to_dict(config), "train": to_dict(train_config),
            "command": command or " ".join(sys.argv), "parameters": model.num_parameters(),
        })
        atomic_write(run / "data_report.json", json.dumps(dataset.report.to_dict(), indent=1))

    started = time.time()
    if model.fit_closed_form(dataset, seed=train_config.seed):  # no steps to take: fitted, then saved as trained
        record_run()
        if not first_process():
            return run
        model.save_pretrained(run / "model", card={"data": data, "steps": 0, "fit": "closed form",
                                                   "fit seconds": round(time.time() - started, 1),
                                                   "run folder": str(run)})
        return run
    module = GenlabModule(model, train_config, recipe)
    train_loader, val_loader = recipe.loaders(model, dataset, train_config, lambda: module.batches_seen)
    record_run()

    checkpointer = Checkpointer(run / "checkpoints", train_config.ckpt_every, recipe.monitor)
    preview = Preview(run / "samples", train_config.sample_every, train_config.seed, dataset, recipe.preview)
    trainer = build_trainer(run, train_config, [RNGState(train_config.seed), checkpointer, preview,
                                                *recipe.callbacks(model, dataset, train_config), *(callbacks or [])],
                            two_player=module.two_player)
    if train_config.batch_size % trainer.world_size:
        raise ConfigError(f"--batch-size {train_config.batch_size} does not split evenly over {trainer.world_size} "
                          "processes (the batch size is the global one: each process trains on its share)",
                          f"use a multiple of {trainer.world_size}, e.g. --batch-size "
                          f"{train_config.batch_size // trainer.world_size * trainer.world_size or trainer.world_size}")
    started = time.time()
    trainer.fit(module, train_loader, val_loader, ckpt_path=ckpt if resume else None)
    if module.nonfinite:
        raise NonFiniteLossError(
            f"training stopped: {module.nonfinite}; the last good checkpoint is {ckpt}",
            "lower --lr, raise --warmup-steps or set --grad-clip, then resume or start again")
    if trainer.interrupted:
        raise GenlabError("training was interrupted", f"continue with genlab train {family} --resume {run}")

    trainer.save_checkpoint(ckpt, weights_only=False)
    if not trainer.is_global_zero:  # the first process exports the model; the others are done
        return run
    model.fit_after_training(dataset, seed=train_config.seed)
    preview.write(model, trainer.global_step)
    metrics = {k: round(float(v), 4) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
    model.save_pretrained(run / "model", card={
        "data": data, "steps": trainer.global_step, "train seconds (this session)": round(time.time() - started, 1),
        "validation": metrics, "run folder": str(run)})
    return run
