"""Run folders: what `genlab train` writes and reads, and how a run starts, resumes, or follows a study.

`plan_run` turns what a user gave (the Python API's arguments, or the options written on the
command line) into the family, data, configs and folder of a run: a new run takes the family's
recipe defaults under the options given; `resume` keeps the run's recorded config and takes only the
train options given; `from_study` takes a tuning trial's settings under the options given. The CLI
and `genlab.train` share it, so both resume the same way. Nothing here imports Lightning.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

import yaml

from genlab.config import TrainConfig, data_fields, from_dict
from genlab.errors import ConfigError, GenlabError
from genlab.files import atomic_write

# TrainConfig fields that say where a run computes, not what it learns: a run started from a study's
# trial takes them from this machine's defaults (or the command line), never from the trial.
MACHINE_FIELDS = ("threads", "accelerator", "devices", "num_nodes", "strategy", "precision", "progress")


def write_run_config(run: Path, record: dict[str, Any]) -> None:
    atomic_write(Path(run) / "config.yaml", yaml.safe_dump(record, sort_keys=False))


def read_run_config(run: str | Path) -> dict[str, Any]:
    path = Path(run) / "config.yaml"
    if not path.exists():
        raise GenlabError(f"{run} has no config.yaml: it is not a genlab run folder",
                          "pass a folder written by genlab train (for example runs/NAME)")
    try:
        record = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise GenlabError(f"{path} is not readable YAML ({str(error).splitlines()[0]})",
                          "restore the file from the run, or train again") from None
    if not isinstance(record, dict) or not {"family", "data", "model", "train"} <= set(record):
        raise GenlabError(f"{path} is not a genlab run config", "pass a folder written by genlab train")
    return record


def read_metrics(run: str | Path) -> list[dict[str, float]]:
    path = Path(run) / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def train_seconds(history: list[dict[str, float]]) -> float | None:
    """Training wall-clock over all sessions of a run, from metrics.jsonl's per-session clock.

    Each session's logger restarts its clock at 0, so a drop in `time` starts a new session.
    """
    total, last = 0.0, None
    for record in history:
        t = record.get("time")
        if t is None:
            continue
        if last is not None and t < last:
            total += last
        last = t
    return None if last is None else round(total + last, 1)


@dataclasses.dataclass(frozen=True)
class RunPlan:
    family: str
    data: str
    model: Any  # the family's Config
    train: TrainConfig
    out: Path
    resume: bool


def plan_run(family: str, data: str | None = None, out: str | Path | None = None, model: dict[str, Any] | None = None,
             train: dict[str, Any] | None = None, resume: bool = False, from_study: str | Path | None = None,
             trial: int | None = None) -> RunPlan:
    """What to train where. `model` and `train` hold only the fields the user set (Config and TrainConfig)."""
    from genlab.engine.recipes import recipe_for
    from genlab.models import get_family

    cls = get_family(family)
    model, train = dict(model or {}), dict(train or {})
    refused = sorted(set(model) & set(data_fields(cls.Config)))
    if refused:
        raise ConfigError(f"{', '.join(refused)} come from the data and cannot be set",
                          f"drop {', '.join('--model.' + r for r in refused)}")
    defaults = {**{f.name: f.default for f in dataclasses.fields(TrainConfig)}, **recipe_for(family).defaults}
    if resume:
        if out is None:
            raise ConfigError("resuming needs the run folder", f"genlab train {family} --resume runs/NAME")
        record = read_run_config(out)
        if record["family"] != family:
            raise ConfigError(f"{out} is a {record['family']} run, not {family}",
                              f"genlab train {record['family']} --resume {out}")
        if model:
            raise ConfigError(f"a resumed run keeps its model config; cannot change {', '.join(sorted(model))}",
                              "start a new run with --out to change the model")
        if data and data != record["data"]:
            raise ConfigError(f"{out} was trained on {record['data']}, not {data}",
                              "drop --data when resuming, or fine-tune into a new run")
        return RunPlan(family, record["data"], from_dict(cls.Config, record["model"]),
                       from_dict(TrainConfig, {**record["train"], **train}), Path(out), True)
    if from_study is not None:
        from genlab.tune import settings_from_study

        study_family, study_data, trial_model, trial_train, number = settings_from_study(from_study, trial)
        if study_family != family:
            raise ConfigError(f"{from_study} tuned a {study_family}, not a {family}",
                              f"genlab train {study_family} --from-study {from_study}")
        machine = {k: defaults[k] for k in MACHINE_FIELDS}
        print(f"training trial {number} of {from_study} (its settings; the options given win)", file=sys.stderr)
        return RunPlan(family, data or study_data, from_dict(cls.Config, {**trial_model, **model}),
                       from_dict(TrainConfig, {**trial_train, **machine, **train}),
                       Path(out or f"runs/{family}-{Path(from_study).name}-trial{number}"), False)
    if trial is not None:
        raise ConfigError("--trial picks a trial of a study", "add --from-study STUDY, or drop --trial")
    if not data:
        raise ConfigError(f"genlab train {family} needs --data", "pass a dataset name (genlab data list) or a path")
    config = from_dict(cls.Config, model)
    defaults = {**defaults, **recipe_for(family).defaults_for(config)}  # the model kind's own, where it has them
    return RunPlan(family, data, config, from_dict(TrainConfig, {**defaults, **train}),
                   Path(out or f"runs/{family}-{Path(data).name}"), False)


def first_process() -> bool:
    """Whether this is the first (or only) process of a run: the launcher of a multi-process run starts the others
    with their rank in the environment (the variables Lightning's rank_zero_only reads)."""
    import os

    return all(os.environ.get(key, "0") == "0" for key in ("RANK", "LOCAL_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK"))
