"""Frozen, typed configs: validation, JSON round trip, and the training config.

Every family's `Config` is a frozen dataclass that calls `validate(self)` in
`__post_init__`; `to_dict`/`from_dict` give a JSON round trip in which an unknown
key or a value outside a `Literal[...]` is a `ConfigError` naming the valid ones.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from datetime import timedelta
from typing import Any, Literal

from genlab.errors import ConfigError


def _literal_choices(tp: Any) -> tuple | None:
    """The allowed values of a `Literal[...]` (possibly inside `X | None`), else None."""
    if typing.get_origin(tp) is Literal:
        return typing.get_args(tp)
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            choices = _literal_choices(arg)
            if choices is not None:
                return (*choices, None) if type(None) in typing.get_args(tp) else choices
    return None


def validate(config: Any) -> None:
    """Check every `Literal` field of a dataclass instance; raise `ConfigError` naming the valid values."""
    hints = typing.get_type_hints(type(config))
    for field in dataclasses.fields(config):
        choices = _literal_choices(hints[field.name])
        value = getattr(config, field.name)
        if choices is not None and value not in choices:
            name = f"{type(config).__name__}.{field.name}"
            valid = ", ".join(repr(c) for c in choices)
            raise ConfigError(f"{name} = {value!r} is not allowed", f"use one of {valid}")


def to_dict(config: Any) -> dict[str, Any]:
    """A JSON-ready dict of a (possibly nested) config dataclass; tuples become lists."""

    def plain(value: Any) -> Any:
        if dataclasses.is_dataclass(value):
            return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        return value

    return plain(config)


def from_dict(cls: type, data: dict[str, Any]) -> Any:
    """Build `cls` from a dict, refusing unknown keys and turning lists back into tuples."""
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise ConfigError(
            f"unknown {cls.__name__} field(s): {', '.join(unknown)}",
            f"valid fields are {', '.join(sorted(names))}",
        )
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in data.items():
        hint = hints[key]
        if dataclasses.is_dataclass(hint) and isinstance(value, dict):
            value = from_dict(hint, value)
        elif isinstance(value, list) and "tuple" in str(hint):
            value = tuple(tuple(v) if isinstance(v, list) else v for v in value)
        kwargs[key] = value
    return cls(**kwargs)


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")


def parse_duration(text: str | float | None) -> timedelta | None:
    """'90s', '10m', '1.5h', '2d' or a number of seconds -> timedelta; None stays None."""
    if text is None or text == "":
        return None
    if isinstance(text, (int, float)):
        return timedelta(seconds=float(text))
    match = _DURATION.match(str(text))
    if not match:
        raise ConfigError(f"cannot read the duration {text!r}", "write it like 90s, 10m, 1.5h or 2d")
    unit = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]
    return timedelta(seconds=float(match.group(1)) * unit)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """How to train: steps, time, optimisation, logging and where to run.

    Families may change the defaults (a GPT wants another learning rate than a VAE);
    the CLI and YAML files override them.
    """

    max_steps: int = 3000
    max_time: str | None = None  # wall-clock budget such as "10m"; training stops at whichever comes first
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = 100
    schedule: Literal["constant", "cosine"] = "constant"
    min_lr_ratio: float = 0.1  # cosine decays to lr * min_lr_ratio at max_steps
    grad_clip: float | None = 1.0
    seed: int = 0
    # the fraction of the training split held out for validation (text: the tail of the token stream, whole;
    # images: a random 5%, at most 5,000); 0 trains on all of it and skips validation, as nanoGPT's recipe does
    holdout: float = 0.05
    val_every: int = 500  # steps between validation passes
    val_batches: int = 20  # batches of the validation split per pass
    log_every: int = 50
    sample_every: int = 1000  # steps between sample grids in samples/
    ckpt_every: int = 500  # steps between atomic checkpoints
    threads: int | None = None  # torch intra-op threads; None = all cores
    accelerator: str = "auto"
    devices: str = "auto"
    num_nodes: int = 1
    strategy: str = "auto"
    precision: str = "32-true"
    progress: bool = True

    def __post_init__(self):
        validate(self)
        if self.max_steps <= 0:
            raise ConfigError(f"max_steps = {self.max_steps} must be positive", "pass --max-steps 1000 or similar")
        if self.batch_size <= 0:
            raise ConfigError(f"batch_size = {self.batch_size} must be positive", "pass --batch-size 64 or similar")
        if self.lr <= 0:
            raise ConfigError(f"lr = {self.lr} must be positive", "pass --lr 1e-3 or similar")
        if not 0 <= self.holdout < 1:
            raise ConfigError(f"holdout = {self.holdout} must be in [0, 1)", "e.g. --holdout 0.05, or 0 for no validation")
        parse_duration(self.max_time)
