"""genlab: train, evaluate, fine-tune, sample and serve generative models from one API and one CLI."""

from __future__ import annotations

__version__ = "0.1.0"


def load(folder, device="cpu"):
    """Rebuild a saved model of any family: `genlab.load("runs/NAME/model")`."""
    from genlab.persist import load as _load

    return _load(folder, device)


def train(family: str, data: str, out: str, model: dict | None = None, **train_options):
    """Train `family` on `data` into the run folder `out`; returns the run folder.

    `model` overrides fields of the family's Config; `train_options` override TrainConfig
    fields (max_steps, lr, batch_size, ...), on top of the family's own defaults.
    """
    from genlab.config import TrainConfig, from_dict
    from genlab.engine import train as _train
    from genlab.models import get_family

    cls = get_family(family)
    config = from_dict(cls.Config, model or {})
    options = {**cls.train_defaults, **train_options}
    return _train(family, data, config, from_dict(TrainConfig, options), out)


__all__ = ["__version__", "load", "train"]
