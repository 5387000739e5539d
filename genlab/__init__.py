"""genlab: train, evaluate, fine-tune, sample and serve generative models from one API and one CLI.

    import genlab
    run = genlab.train("vae", "fashion-mnist", "runs/vae", max_steps=3000)
    model = genlab.load(run)                      # any family; see genlab.models.base for what it can do
    images = model.sample(16)

Importing genlab imports nothing heavy; torch comes with the first call.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__version__ = "0.1.0"


def load(folder: str | Path, device: str = "cpu"):
    """Rebuild a saved model of any family from a model folder or a run folder: `genlab.load("runs/NAME")`."""
    from genlab.models.persist import load as _load

    return _load(folder, device)


def train(family: str, data: str | None = None, out: str | Path | None = None, model: dict[str, Any] | None = None, *,
          resume: bool = False, from_study: str | Path | None = None, trial: int | None = None,
          max_bad_fraction: float = 0.05, callbacks: list | None = None, command: str | None = None,
          **train_options: Any) -> Path:
    """Train `family` on `data` into the run folder `out` (default runs/FAMILY-DATA); returns the run folder.

    `model` sets fields of the family's Config and `train_options` fields of TrainConfig (max_steps, lr,
    batch_size, ...), over the family's recipe defaults. `resume=True` continues the run in `out` from its
    last checkpoint with its recorded config (the train options given override it); `from_study` trains
    with the settings of a study's best trial (or `trial`), the options given winning.
    """
    from genlab.engine.runs import plan_run
    from genlab.engine.trainer import fit

    plan = plan_run(family, data, out, model, train_options, resume=resume, from_study=from_study, trial=trial)
    return fit(plan.family, plan.data, plan.model, plan.train, plan.out, resume=plan.resume,
               max_bad_fraction=max_bad_fraction, callbacks=callbacks, command=command)


__all__ = ["__version__", "load", "train"]
