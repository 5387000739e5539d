"""Frozen, typed configs: validation, JSON round trip, field docs, and the training config.

Every family's `Config` is a frozen dataclass that calls `validate(self)` in
`__post_init__`; `to_dict`/`from_dict` give a JSON round trip in which an unknown
key or a value outside a `Literal[...]` is a `ConfigError` naming the valid ones.
Each field is documented by the string on the line below it (an attribute docstring,
as litgpt's argument dataclasses do); `field_docs` reads them, and the CLI shows them
as the help of `--model.FIELD` and `--FIELD`.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
import re
import textwrap
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


@functools.cache
def field_docs(cls: type) -> dict[str, str]:
    """The attribute docstring of every field of a dataclass and its dataclass bases, on one line each."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            body = ast.parse(textwrap.dedent(inspect.getsource(klass))).body[0].body
        except (OSError, TypeError, SyntaxError):
            continue
        for node, after in zip(body, body[1:]):
            if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and isinstance(after, ast.Expr)
                    and isinstance(after.value, ast.Constant) and isinstance(after.value.value, str)):
                docs[node.target.id] = " ".join(after.value.value.split())
    return docs


def data_fields(cls: type) -> tuple[str, ...]:
    """The fields of a model config that the data fills (image shape, classes, vocabulary): never user options."""
    return tuple(cls.FROM_DATA)


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

    Families change the defaults (a GPT wants another learning rate than a VAE: their recipes in
    genlab/engine/recipes.py); the CLI and YAML files override them.
    """

    max_steps: int = 3000
    """optimiser steps; training stops at this or at --max-time, whichever comes first"""
    max_time: str | None = None
    """wall-clock budget such as 90s, 10m or 1.5h"""
    batch_size: int = 128
    """examples (images, or text windows) per step"""
    lr: float = 1e-3
    """peak learning rate"""
    weight_decay: float = 0.0
    """decoupled weight decay (AdamW), on weight matrices only"""
    betas: tuple[float, float] = (0.9, 0.999)
    """Adam's moment decay rates"""
    warmup_steps: int = 100
    """steps of linear learning-rate warm-up"""
    schedule: Literal["constant", "cosine"] = "constant"
    """learning rate after the warm-up: constant, or cosine decay over the run"""
    min_lr_ratio: float = 0.1
    """cosine: the learning rate decays to lr x this at the end of the run"""
    grad_clip: float | None = 1.0
    """clip the gradient norm to this (0 or none: no clipping)"""
    seed: int = 0
    """seed of the weights, the data order and every random number of the run"""
    holdout: float = 0.05
    """fraction of the training split held out for validation (text: the tail of the token stream; images: a random
    5%, at most 5,000); 0 trains on all of it and skips validation"""
    replay: float = 0.0
    """instruction tuning: the share of training windows that are plain text from `replay_data` (genlab finetune
    sets it to the base run's training text), so that tuning on a narrow set keeps what pre-training taught"""
    replay_data: str | None = None
    """the text replayed (a file, folder or dataset); needed when replay > 0"""
    val_every: int = 500
    """steps between validation passes"""
    val_batches: int = 20
    """batches of the validation split per pass"""
    log_every: int = 50
    """steps between logged metrics (metrics.jsonl, TensorBoard)"""
    sample_every: int = 1000
    """steps between previews in samples/ (image grids or text)"""
    ckpt_every: int = 500
    """steps between atomic checkpoints (checkpoints/last.ckpt)"""
    threads: int | None = None
    """torch intra-op threads (none: all cores)"""
    accelerator: str = "auto"
    """Lightning accelerator: auto, cpu, gpu, ..."""
    devices: str = "auto"
    """Lightning devices: auto, a count, or a list"""
    num_nodes: int = 1
    """machines for distributed training"""
    strategy: str = "auto"
    """Lightning strategy: auto, ddp, fsdp, ..."""
    precision: str = "32-true"
    """Lightning precision: 32-true, bf16-mixed, ...; auto picks bf16-mixed where bf16 is fast"""
    progress: bool = True
    """show a progress bar"""

    def __post_init__(self):
        validate(self)
        for name in ("max_steps", "batch_size", "val_every", "val_batches", "log_every", "sample_every", "ckpt_every",
                     "num_nodes"):
            if getattr(self, name) <= 0:
                flag = name.replace("_", "-")
                raise ConfigError(f"{name} = {getattr(self, name)} must be positive", f"pass --{flag} 1 or more")
        if self.warmup_steps < 0:
            raise ConfigError(f"warmup_steps = {self.warmup_steps} must be >= 0", "pass --warmup-steps 0 or more")
        if self.lr <= 0:
            raise ConfigError(f"lr = {self.lr} must be positive", "pass --lr 1e-3 or similar")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(
                f"threads = {self.threads} must be at least 1", "pass --threads 1 or more, or leave it unset"
            )
        if self.grad_clip is not None and self.grad_clip < 0:
            raise ConfigError(f"grad_clip = {self.grad_clip} must be >= 0", "pass --grad-clip 1.0, or 0 for none")
        if not 0 <= self.holdout < 1:
            raise ConfigError(
                f"holdout = {self.holdout} must be in [0, 1)", "e.g. --holdout 0.05, or 0 for no validation"
            )
        if not 0 <= self.replay < 1:
            raise ConfigError(f"replay = {self.replay} must be in [0, 1)", "e.g. --replay 0.5, or 0 for none")
        if self.replay and not self.replay_data:
            raise ConfigError(f"replay = {self.replay} needs the text to replay",
                              "fine-tune with genlab finetune (it replays the base run's text), or set replay_data")
        parse_duration(self.max_time)
