"""Search spaces: which config fields a study varies, over which ranges, and how a trial draws them.

A space maps dotted field names to a spec (the format of a recipe's `search_space`, genlab/engine/recipes.py):

    "train.lr":         {"low": 1e-4, "high": 1e-2, "log": True}   # float, log-uniform
    "model.n_layer":    {"low": 2, "high": 6}                       # int (both bounds ints), uniform
    "model.hidden_dim": {"low": 64, "high": 512, "step": 64}        # int on a grid
    "model.widths":     {"choices": [[16, 32], [32, 64]]}           # categorical (lists and tuples allowed)
    "train.batch_size": 64                                          # fixed: every trial uses it

`model.X` names a field of the family's `Config`, `train.X` a field of `TrainConfig`. A YAML
file given with `--space` is merged over the family's default: its entries replace or add
fields, and `null` removes a field from the default space.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import yaml

from genlab.config import TrainConfig
from genlab.errors import ConfigError

SPEC_KEYS = {"low", "high", "log", "step", "choices"}
EXAMPLE = (
    "write it like  train.lr: {low: 1.0e-4, high: 1.0e-2, log: true}  or  model.latent_dim: {choices: [8, 16, 32]}"
)


@dataclasses.dataclass(frozen=True)
class Param:
    """One searched field: a float or int range (optionally log-scaled or stepped) or a list of choices."""

    name: str  # "model.latent_dim" or "train.lr"
    kind: str  # "float", "int", "categorical" or "fixed"
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple[Any, ...] = ()
    value: Any = None  # the value of a fixed field

    @property
    def section(self) -> str:
        return self.name.split(".", 1)[0]

    @property
    def field(self) -> str:
        return self.name.split(".", 1)[1]

    def suggest(self, trial) -> Any:
        """Draw this parameter's value for an Optuna trial (lists travel as JSON strings: Optuna stores scalars)."""
        if self.kind == "fixed":
            return self.value
        if self.kind == "float":
            return trial.suggest_float(self.name, self.low, self.high, log=self.log, step=self.step)
        if self.kind == "int":
            return trial.suggest_int(self.name, int(self.low), int(self.high), log=self.log, step=int(self.step or 1))
        return decode(trial.suggest_categorical(self.name, [encode(c) for c in self.choices]))

    def describe(self) -> str:
        if self.kind == "fixed":
            return f"= {self.value!r}"
        if self.kind == "categorical":
            return "one of " + ", ".join(json.dumps(c) for c in self.choices)
        scale = "log" if self.log else "linear"
        step = f", step {self.step:g}" if self.step else ""
        return f"{self.kind} in [{self.low:g}, {self.high:g}] ({scale}{step})"


def encode(value: Any) -> Any:
    return json.dumps(list(value)) if isinstance(value, (list, tuple)) else value


def decode(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) and value.startswith("[") else value


def _fields(config_cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(config_cls)}


def parse_param(name: str, spec: Any, model_config: type) -> Param:
    """One entry of a space, checked against the config classes: unknown fields and bad specs are ConfigErrors."""
    section, _, field = name.partition(".")
    valid = {"model": _fields(model_config), "train": _fields(TrainConfig)}
    if section not in valid or not field:
        raise ConfigError(f"search space entry {name!r} names neither a model nor a train field",
                          f"prefix the field with model. or train. ({EXAMPLE})")
    if field not in valid[section]:
        raise ConfigError(
            f"search space entry {name!r}: {model_config.__name__ if section == 'model' else 'TrainConfig'} "
            f"has no field {field!r}",
            f"valid {section} fields are {', '.join(sorted(valid[section]))}",
        )
    if not isinstance(spec, dict):
        return Param(name, "fixed", value=spec)
    unknown = sorted(set(spec) - SPEC_KEYS)
    if unknown:
        raise ConfigError(f"search space entry {name!r} has unknown key(s) {', '.join(unknown)}",
                          f"use low/high (with optional log, step) or choices: {EXAMPLE}")
    if "choices" in spec:
        choices = spec["choices"]
        if set(spec) != {"choices"} or not isinstance(choices, list) or not choices:
            raise ConfigError(f"search space entry {name!r}: choices must be a non-empty list, alone", EXAMPLE)
        return Param(name, "categorical", choices=tuple(tuple(c) if isinstance(c, list) else c for c in choices))
    if "low" not in spec or "high" not in spec:
        raise ConfigError(f"search space entry {name!r} needs both low and high (or choices)", EXAMPLE)
    low, high, log, step = spec["low"], spec["high"], bool(spec.get("log", False)), spec.get("step")
    numbers = [v for v in (low, high, step) if v is not None]
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in numbers):
        raise ConfigError(f"search space entry {name!r}: low, high and step must be numbers", EXAMPLE)
    if not low < high:
        raise ConfigError(f"search space entry {name!r}: low = {low} must be below high = {high}", EXAMPLE)
    if log and (low <= 0 or step is not None):
        raise ConfigError(f"search space entry {name!r}: a log scale needs low > 0 and no step", EXAMPLE)
    kind = "int" if all(isinstance(v, int) for v in numbers) else "float"
    return Param(name, kind, low=low, high=high, log=log, step=step)


def build_space(model_config: type, default: dict[str, Any], override: dict[str, Any] | None = None) -> list[Param]:
    """The family's default space with the override merged over it (None removes an entry)."""
    merged = dict(default)
    for key, spec in (override or {}).items():
        if spec is None:
            merged.pop(key, None)
        else:
            merged[key] = spec
    params = [parse_param(name, spec, model_config) for name, spec in merged.items()]
    if not any(p.kind != "fixed" for p in params):
        raise ConfigError("the search space has no field to search",
                          "give at least one range or list of choices (genlab tune FAMILY --space my_space.yaml)")
    return params


def read_space_file(path: str | Path) -> dict[str, Any]:
    """A YAML space file as a dict; a missing or malformed file is a ConfigError."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(
            f"the search space file {path} does not exist", "pass a YAML file (see genlab/models/base.py)"
        )
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise ConfigError(f"cannot read the search space file {path}: {error}", EXAMPLE) from None
    if not isinstance(data, dict):
        raise ConfigError(f"the search space file {path} must be a mapping of fields to ranges", EXAMPLE)
    return data


def suggest(trial, space: list[Param]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(model overrides, train overrides) drawn for a trial."""
    model, train = {}, {}
    for param in space:
        (model if param.section == "model" else train)[param.field] = param.suggest(trial)
    return model, train


def default_point(space: list[Param], model_defaults: dict[str, Any], train_defaults: dict[str, Any]) -> dict[str, Any]:
    """The searched parameters at the family's default config, as Optuna params (for enqueueing the baseline)."""
    point = {}
    for param in space:
        if param.kind == "fixed":
            continue
        value = (model_defaults if param.section == "model" else train_defaults).get(param.field)
        if param.kind == "categorical":
            if value is None:
                continue
            value = encode(value)
            if value not in [encode(c) for c in param.choices]:
                continue  # the default is not among the choices: the baseline leaves it to the sampler
        point[param.name] = value
    return point
