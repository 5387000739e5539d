"""`genlab tune`: an Optuna study whose trials are genlab training runs.

A study folder holds everything needed to continue, inspect or report it:

    studies/NAME/
      study.yaml        family, data, objectives, search space, budgets, storage: what --resume reads
      study.db          the Optuna storage (SQLite), unless --storage names another database
      trials/0000/      one normal genlab run folder per trial (trial 0 is the family's default config)
      report.html       after `genlab tune --report`

Workers are `genlab tune` processes pointed at one storage and study name; Optuna's RDB storage
coordinates them (no genlab-specific distributed code). Each running trial sends heartbeats; a trial
whose worker died is marked failed and re-enqueued with its parameters (`RetryFailedTrialCallback`),
and `--resume` does so at once for the trials of workers it can see are gone (same machine).
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any, Literal

import torch
import yaml

from genlab.config import TrainConfig, from_dict, parse_duration, to_dict
from genlab.engine.recipes import recipe_for
from genlab.errors import ConfigError, GenlabError, NonFiniteLossError
from genlab.files import atomic_write
from genlab.models.base import ImageSampler, TextGenerator, class_labels
from genlab.tune.space import build_space, default_point, read_space_file, suggest

STUDY_FILE = "study.yaml"
EVAL_BATCH = 64  # examples per batch of the val-loss objective, whatever batch size a trial trains with


@dataclasses.dataclass(frozen=True)
class Objective:
    name: str
    direction: str  # "minimize" or "maximize"
    meaning: str
    intermediate: str | None = None  # the logged metric that pruning watches (same direction)


OBJECTIVES = {
    "val-loss": Objective("val-loss", "minimize", "the family's training loss on the held-out validation split "
                          f"({EVAL_BATCH}-example batches, fixed random numbers)", "val/loss"),
    "fd-genlab": Objective("fd-genlab", "minimize", "Frechet distance of samples to the test split in the reference "
                           "classifier's features", "monitor/fd_genlab"),
    "recall": Objective("recall", "maximize", "k-NN manifold recall: the share of real images the samples cover",
                        "monitor/recall"),
    "samples-per-s": Objective("samples-per-s", "maximize", "images (or 64-token texts) generated per second"),
}


@dataclasses.dataclass(frozen=True)
class StudySettings:
    """Everything a study needs to run and to be resumed; written to study.yaml."""

    family: str
    data: str
    objectives: tuple[str, ...] = ("val-loss",)
    trials: int = 20  # finished (complete or pruned) trials the study aims at, over all workers
    budget: str | None = None  # wall-clock of one worker session, e.g. "15m"
    trial_budget: str | None = None  # wall-clock of one trial's training (its --max-time)
    space: dict[str, Any] = dataclasses.field(default_factory=dict)  # the merged space, as written in YAML
    model: dict[str, Any] = dataclasses.field(default_factory=dict)  # fixed model fields for every trial
    train: dict[str, Any] = dataclasses.field(default_factory=dict)  # fixed train fields for every trial
    storage: str | None = None  # any SQLAlchemy URL; None: SQLite in the study folder
    study: str = "genlab"  # the study name inside the storage
    pruner: str = "median"  # median, halving or none
    startup_trials: int = 3  # the median pruner prunes nothing until this many trials finished
    eval_samples: int = 1000  # samples for fd-genlab / recall / samples-per-s
    eval_batches: int = 20  # validation batches of EVAL_BATCH examples for val-loss
    seed: int = 0
    heartbeat: int = 10  # seconds between a running trial's heartbeats; stale after 3x

    def __post_init__(self):
        unknown = [o for o in self.objectives if o not in OBJECTIVES]
        if unknown or not self.objectives:
            raise ConfigError(
                f"unknown objective {', '.join(unknown) or '(none given)'}",
                f"use one or more of {', '.join(OBJECTIVES)} (--objective val-loss --objective samples-per-s)",
            )
        if len(set(self.objectives)) != len(self.objectives):
            raise ConfigError(f"objective listed twice: {', '.join(self.objectives)}", "name each objective once")
        if self.pruner not in ("median", "halving", "none"):
            raise ConfigError(f"unknown pruner {self.pruner!r}", "use median, halving or none")
        if self.trials < 1:
            raise ConfigError(f"--trials {self.trials} must be at least 1", "e.g. --trials 20")
        parse_duration(self.budget)
        parse_duration(self.trial_budget)


# -- storage -------------------------------------------------------------------------------------


def storage_url(settings: StudySettings, folder: Path) -> str:
    return settings.storage or f"sqlite:///{(folder / 'study.db').resolve()}"


def safe_url(url: str) -> str:
    """The URL with any password hidden, for messages and reports."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "(unreadable URL)"


def retry_callback():
    """Optuna's callback that re-enqueues a dead worker's trial with its parameters (renamed in Optuna 4.9)."""
    import optuna

    retry = (
        getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback", None)
        or optuna.storages.RetryFailedTrialCallback
    )
    return retry(max_retry=2)


def quiet_optuna() -> None:
    """Heartbeats and stale-trial handling are marked experimental in Optuna; they are what we rely on."""
    import warnings

    import optuna

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    optuna.logging.set_verbosity(optuna.logging.WARNING)


def open_storage(url: str, heartbeat: int):
    """An Optuna RDB storage with heartbeats and retry of a dead worker's trial; bad URLs are ConfigErrors."""
    import optuna
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, IntegrityError, NoSuchModuleError, OperationalError, ProgrammingError

    fix = "pass a SQLAlchemy URL such as sqlite:///studies/x/study.db or postgresql://user@host:5432/db"
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ConfigError(f"--storage {url!r} is not a database URL", fix) from None
    quiet_optuna()
    import inspect

    stale = "heartbeat_stale_trial_callback" if "heartbeat_stale_trial_callback" in inspect.signature(
        optuna.storages.RDBStorage).parameters else "failed_trial_callback"
    import time

    def connect():
        return optuna.storages.RDBStorage(
            # SQLite: workers and heartbeat threads wait for each other's writes rather than fail at once.
            url, engine_kwargs={"connect_args": {"timeout": 60}} if parsed.drivername.startswith("sqlite")
            else {"pool_pre_ping": True},
            heartbeat_interval=heartbeat, grace_period=3 * heartbeat, **{stale: retry_callback()})

    try:
        for attempt in range(10):
            try:
                return connect()
            except (OperationalError, IntegrityError, ProgrammingError) as error:
                # Workers started together on a new database race to create its tables and types: the
                # loser sees "already exists" or a failed UNIQUE constraint on the version row (SQLite), or a
                # duplicate key (PostgreSQL's catalogue) and, once the winner has finished, finds it all there.
                races = ("already exists", "UNIQUE constraint failed", "duplicate key")
                if not any(s in str(error) for s in races) or attempt == 9:
                    raise
                time.sleep(0.5 + 0.5 * attempt)
    except (NoSuchModuleError, ModuleNotFoundError, ImportError) as error:
        extra = " (pip install 'genlab[postgres]')" if parsed.drivername.startswith("postgres") else ""
        raise ConfigError(f"no database driver for {parsed.drivername}: {error}",
                          f"install the driver{extra}, or {fix}") from None
    except OperationalError as error:
        reason = str(error.orig).strip().splitlines()[0] if error.orig else str(error)
        raise GenlabError(f"cannot open the study storage {safe_url(url)}: {reason}",
                          "check that the database server runs, the database exists and the user may connect") from None


# -- pruning -------------------------------------------------------------------------------------


def make_pruner(settings: StudySettings):
    import optuna

    if settings.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=settings.startup_trials, n_warmup_steps=0)
    if settings.pruner == "halving":
        return optuna.pruners.SuccessiveHalvingPruner()
    return optuna.pruners.NopPruner()


# -- objectives ----------------------------------------------------------------------------------


def default_objectives(family: str) -> tuple[str, ...]:
    """The objective a family is tuned for unless told otherwise: the one its training watches (a GAN's
    FD-genlab), else the validation loss."""
    monitor = recipe_for(family).monitor
    watched = [o.name for o in OBJECTIVES.values() if o.intermediate == monitor]
    return (watched[0],) if watched else ("val-loss",)


def check_objectives(family: str, settings: StudySettings, dataset) -> None:
    """Refuse objectives the family or data cannot measure, before any trial runs."""
    from genlab.models import families_with, get_family

    cls, monitor = get_family(family), recipe_for(family).monitor
    for name in settings.objectives:
        if name == "val-loss" and not monitor.startswith("val/"):
            raise ConfigError(f"the {family} family's validation loss does not measure what it makes "
                              f"(it watches {monitor})", f"use --objective {default_objectives(family)[0]}")
        if name in ("fd-genlab", "recall"):
            if not issubclass(cls, ImageSampler):
                raise ConfigError(f"the {family} family does not sample images, so it has no {name}",
                                  f"use --objective val-loss, or tune a {' or '.join(families_with(ImageSampler))}")
            if not dataset.classes:
                raise ConfigError(f"--objective {name} needs labelled images (the reference classifier learns the "
                                  f"labels), and {settings.data} has none", "use --objective val-loss")
        if name == "samples-per-s" and not issubclass(cls, (ImageSampler, TextGenerator)):
            raise ConfigError(f"the {family} family samples nothing from noise, so it has no samples-per-s",
                              "use --objective val-loss")


@torch.no_grad()
def validation_loss(model, dataset, train: TrainConfig, batches: int) -> float:
    """The mean validation loss over `batches` batches of EVAL_BATCH examples, with the engine's fixed seeds."""
    model.eval()
    _, val = recipe_for(model.family).loaders(model, dataset, dataclasses.replace(train, batch_size=EVAL_BATCH),
                                              lambda: 0)
    if val is None:
        raise ConfigError("--objective val-loss scores the validation hold-out, and --holdout 0 keeps none",
                          "leave --holdout at its default (0.05), or tune another objective")
    total, count = 0.0, 0
    for i, batch in enumerate(val):
        if i >= batches:
            break
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(10_000 + i)
            loss = float(model.validation_metrics(batch)["loss"])
        total, count = total + loss * len(batch[0]), count + len(batch[0])
    return total / max(count, 1)


def measure(model, dataset, train: TrainConfig, settings: StudySettings) -> dict[str, float]:
    """The value of every objective of the study for a trained model."""
    values: dict[str, float] = {}
    if "val-loss" in settings.objectives:
        values["val-loss"] = validation_loss(model, dataset, train, settings.eval_batches)
    wanted = set(settings.objectives) - {"val-loss"}
    if wanted & {"fd-genlab", "recall"}:  # the evaluation layer's protocol, on eval_samples samples
        from genlab.evaluation.evaluate import image_quality

        metrics = image_quality(model, dataset, settings.eval_samples, settings.seed, progress=False)[0]
        values |= {"fd-genlab": metrics.get("fd_genlab"), "recall": metrics.get("recall"),
                   "samples-per-s": metrics["samples_per_s"]}
    elif "samples-per-s" in wanted and isinstance(model, ImageSampler):
        from genlab.evaluation.evaluate import generate_images

        labels = class_labels(model.config, None, settings.eval_samples)
        seconds = generate_images(model, settings.eval_samples, settings.seed, labels, progress=False)[1]
        values["samples-per-s"] = settings.eval_samples / seconds
    elif "samples-per-s" in wanted:
        n = 4
        model.eval()
        list(model.generate(max_new_tokens=8, seed=0))  # warm-up
        start = time.perf_counter()
        for i in range(n):
            list(model.generate(max_new_tokens=64, seed=settings.seed + i))
        values["samples-per-s"] = n / (time.perf_counter() - start)
    return {k: float(v) for k, v in values.items() if k in settings.objectives and v is not None}


# -- the study -----------------------------------------------------------------------------------


def write_settings(folder: Path, settings: StudySettings) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write(folder / STUDY_FILE, yaml.safe_dump(to_dict(settings), sort_keys=False))


def read_settings(folder: str | Path) -> StudySettings:
    path = Path(folder) / STUDY_FILE
    if not path.exists():
        raise GenlabError(f"{folder} has no {STUDY_FILE}: it is not a genlab study folder",
                          "pass a folder written by genlab tune FAMILY --out studies/NAME")
    record = yaml.safe_load(path.read_text())
    record["objectives"] = tuple(record["objectives"])
    return StudySettings(**record)


def load_study(folder: str | Path, settings: StudySettings | None = None, create: bool = False):
    """The Optuna study of a study folder (created, with the default config enqueued as trial 0, if asked)."""
    import optuna

    folder = Path(folder)
    settings = settings or read_settings(folder)
    storage = open_storage(storage_url(settings, folder), settings.heartbeat)
    directions = [OBJECTIVES[o].direction for o in settings.objectives]
    from genlab.models import get_family

    seeded = settings.storage is None  # parallel workers must not draw the same points from one seed
    sampler = optuna.samplers.TPESampler(seed=settings.seed if seeded else None, n_startup_trials=5, multivariate=True)
    try:
        if create:
            study = optuna.create_study(storage=storage, study_name=settings.study, directions=directions,
                                        sampler=sampler, pruner=make_pruner(settings), load_if_exists=True)
        else:
            study = optuna.load_study(storage=storage, study_name=settings.study, sampler=sampler,
                                      pruner=make_pruner(settings))
    except KeyError:
        raise GenlabError(f"the storage {safe_url(storage_url(settings, folder))} holds no study {settings.study!r}",
                          "start it with genlab tune FAMILY ... first") from None
    if [d.name.lower() for d in study.directions] != directions:
        raise ConfigError(f"study {settings.study!r} already exists with other objectives",
                          "use the same --objective options as its first worker, or another --study name")
    if create and not study.user_attrs.get("baseline_enqueued"):
        study.set_user_attr("baseline_enqueued", True)
        cls = get_family(settings.family)
        model_defaults = to_dict(from_dict(cls.Config, settings.model))
        train_defaults = to_dict(from_dict(TrainConfig, {**recipe_for(settings.family).defaults, **settings.train}))
        space = build_space(cls.Config, settings.space)
        study.enqueue_trial(default_point(space, model_defaults, train_defaults), user_attrs={"baseline": True})
    return study


def _process_start(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _worker() -> dict[str, Any]:
    return {"host": socket.gethostname(), "pid": os.getpid(), "start": _process_start(os.getpid())}


def _alive(worker: dict[str, Any]) -> bool:
    """Whether a worker process on this machine still runs (a reused pid has another start time)."""
    if worker.get("host") != socket.gethostname():
        return True  # another machine: its heartbeats tell
    start = _process_start(int(worker["pid"]))
    return start is not None and start == worker.get("start")


def retry_dead_trials(study) -> list[int]:
    """Fail the running trials of workers that died on this machine and re-enqueue their parameters now,
    rather than after the heartbeat grace period. Returns the numbers of the trials retried."""
    from optuna.trial import TrialState

    retried = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = trial.user_attrs.get("worker")
        if worker and not _alive(worker):
            if study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL):
                retry_callback()(study, study._storage.get_trial(trial._trial_id))
                retried.append(trial.number)
    return retried


def trial_configs(trial, settings: StudySettings, max_time: str | None):
    """A trial's model and training configs (its parameters drawn, or read back when drawn before: Optuna returns
    a trial's earlier suggestion) and the metric its pruning watches (None: no pruning)."""
    from genlab.models import get_family

    cls = get_family(settings.family)
    model_over, train_over = suggest(trial, build_space(cls.Config, settings.space))
    recipe = recipe_for(settings.family)
    options = {**recipe.defaults, **settings.train, **train_over, "progress": False}
    if max_time is not None:
        options["max_time"] = max_time
    try:
        model_config = from_dict(cls.Config, {**settings.model, **model_over})
        train_config = from_dict(TrainConfig, options)
    except ConfigError as error:  # an invalid combination (heads that do not divide the width): the trial fails
        trial.set_user_attr("error", error.problem)
        raise
    objective = OBJECTIVES[settings.objectives[0]]
    prune = len(settings.objectives) == 1 and objective.intermediate is not None and settings.pruner != "none"
    metric = recipe.monitor if settings.objectives[0] == "val-loss" and recipe.monitor.startswith("val/") \
        else objective.intermediate
    return model_config, train_config, metric if prune else None


def several_processes(t: TrainConfig) -> bool:
    """Whether a run trains on several devices or machines (Lightning then starts a process for each)."""
    devices = t.devices.split(",") if isinstance(t.devices, str) and "," in t.devices else t.devices
    many = len(devices) > 1 if isinstance(devices, list | tuple) else str(devices).isdigit() and int(devices) > 1
    return many or t.num_nodes > 1


def run_trial(trial, settings: StudySettings, folder: Path, dataset, deadline: float | None) -> tuple[float, ...]:
    """One trial: draw its config, train it into trials/NNNN (pruned if it falls behind), measure the objectives.
    A trial on several devices trains in processes of its own (genlab.tune.trial), which report to the trial
    through the study's storage; this process then measures it."""
    import optuna

    from genlab import load

    # The worker is named only once the trial's parameters are drawn: a trial that --resume retries
    # for a dead worker always has parameters to retry with.
    model_config, train_config, metric = trial_configs(trial, settings, None)
    trial.set_user_attr("worker", _worker())
    run = folder / "trials" / f"{trial.number:04d}"
    trial.set_user_attr("run", f"trials/{trial.number:04d}")  # relative: the study folder may move
    budgets = [t for t in (parse_duration(train_config.max_time), parse_duration(settings.trial_budget)) if t]
    seconds = min([b.total_seconds() for b in budgets] + ([deadline - time.time()] if deadline else []), default=None)
    max_time = f"{max(seconds, 1.0):.0f}s" if seconds is not None else None
    if max_time is not None:
        train_config = dataclasses.replace(train_config, max_time=max_time)
    started = time.time()
    if several_processes(train_config):
        outcome = train_in_own_processes(folder, trial.number, max_time)
    else:
        command = f"genlab tune {settings.family} --out {folder} (trial {trial.number}); " \
                  f"retrain with: genlab train {settings.family} --from-study {folder} --trial {trial.number}"
        outcome = train_trial(trial, settings, run, model_config, train_config, metric, command)
    if "diverged" in outcome:
        trial.set_user_attr("pruned", f"diverged: {outcome['diverged']}")
        raise optuna.TrialPruned(outcome["diverged"])
    trial.set_user_attr("train_seconds", round(time.time() - started, 1))
    if "pruned" in outcome:
        trial.set_user_attr("pruned", outcome["pruned"])
        raise optuna.TrialPruned(outcome["pruned"])
    model = load(run / "model")
    values = measure(model, dataset, train_config, settings)
    missing = [o for o in settings.objectives if o not in values]
    if missing:
        raise GenlabError(f"trial {trial.number} could not measure {', '.join(missing)}")
    trial.set_user_attr("metrics", values)
    return tuple(values[o] for o in settings.objectives)


def train_trial(trial, settings: StudySettings, run: Path, model_config, train_config: TrainConfig,
                metric: str | None, command: str) -> dict[str, str]:
    """Train a trial's run, pruned by `metric` when given: {} when it trained to the end, else {"pruned" or
    "diverged": why}."""
    from genlab.engine.callbacks import TrialPruning
    from genlab.engine.trainer import fit

    pruning = TrialPruning(trial, metric) if metric else None
    try:
        fit(settings.family, settings.data, model_config, train_config, run,
            callbacks=[pruning] if pruning else [], command=command)
    except NonFiniteLossError as error:
        return {"diverged": error.problem}
    return {"pruned": pruning.reason} if pruning is not None and pruning.pruned_at is not None else {}


def train_in_own_processes(folder: Path, number: int, max_time: str | None) -> dict[str, str]:
    """Train trial `number` with `python -m genlab.tune.trial` (whose first process Lightning's launcher joins with
    the others) and return its outcome: {} when it trained to the end, else {"pruned" or "diverged": why}."""
    import subprocess

    env = {k: v for k, v in os.environ.items() if k not in ("LOCAL_RANK", "NODE_RANK", "WORLD_SIZE")}
    command = [sys.executable, "-m", "genlab.tune.trial", str(folder), str(number), max_time or ""]
    finished = subprocess.run(command, env=env)
    outcome = folder / "trials" / f"{number:04d}" / "outcome.json"
    if finished.returncode != 0 or not outcome.exists():
        raise GenlabError(f"trial {number}'s training processes exited with {finished.returncode}",
                          "see their output above")
    return json.loads(outcome.read_text())


def counts(study) -> dict[str, int]:
    from optuna.trial import TrialState

    out = {s.name.lower(): 0 for s in TrialState}
    for trial in study.get_trials(deepcopy=False):
        out[trial.state.name.lower()] += 1
    return out


def prepare(settings: StudySettings):
    """The study's dataset, checked against the family and the objectives before any trial runs."""
    from genlab.data import load_data
    from genlab.models import get_family

    cls = get_family(settings.family)
    dataset = load_data(settings.data)
    if dataset.kind != cls.data_kind and dataset.kind not in cls.also_trains_on:
        raise ConfigError(
            f"the {settings.family} family trains on {cls.data_kind} data, but {settings.data} is {dataset.kind} data",
            f"pass {cls.data_kind} data",
        )
    check_objectives(settings.family, settings, dataset)
    return dataset


def optimise(
    folder: Path, settings: StudySettings, study, budget: str | None = None, trials: int | None = None
) -> dict[str, int]:
    """Run trials until the study has `trials` finished ones (all workers together) or the budget is spent."""
    import optuna
    from optuna.trial import TrialState

    dataset = prepare(settings)
    if settings.train.get("threads"):
        torch.set_num_threads(int(settings.train["threads"]))
    limit = parse_duration(budget if budget is not None else settings.budget)
    deadline = time.time() + limit.total_seconds() if limit else None
    target = trials or settings.trials
    failures = 0
    while True:
        optuna.storages.fail_stale_trials(study)
        c = counts(study)
        if c["complete"] + c["pruned"] + c["running"] >= target:
            break
        if deadline is not None and deadline - time.time() < 1:
            break
        before = c["fail"]
        try:
            study.optimize(lambda trial: run_trial(trial, settings, folder, dataset, deadline), n_trials=1,
                           catch=(ConfigError,), gc_after_trial=True, show_progress_bar=False)
        except (KeyboardInterrupt, GenlabError) as error:
            # Optuna marked the interrupted trial failed; enqueue its parameters again so --resume runs it.
            mine = [t for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
                    if t.user_attrs.get("worker", {}).get("pid") == os.getpid()]
            if mine and "error" not in mine[-1].user_attrs and not mine[-1].system_attrs.get("genlab_retried"):
                study._storage.set_trial_system_attr(mine[-1]._trial_id, "genlab_retried", True)
                retry_callback()(study, study._storage.get_trial(mine[-1]._trial_id))
            if isinstance(error, KeyboardInterrupt):
                raise
            raise GenlabError(f"{error.problem}", f"continue the study with genlab tune --resume {folder}") from None
        last = study.get_trials(deepcopy=False)[-1]
        finished = counts(study)
        done = finished["complete"] + finished["pruned"]
        status = last.state.name.lower() + (
            f" ({last.user_attrs['pruned']})" if last.state == TrialState.PRUNED else ""
        )
        values = "" if last.values is None else " = " + ", ".join(f"{v:.4g}" for v in last.values)
        print(f"trial {last.number}: {status}{values}  [{done}/{target} finished]", file=sys.stderr)
        if finished["fail"] > before:
            failures += 1
            if failures >= max(3, target):
                raise GenlabError(f"{failures} trials failed (the last: {last.user_attrs.get('error', 'see above')})",
                                  "check the search space and the fixed options")
    return counts(study)


def tune(family: str, data: str | None = None, out: str | Path | None = None, objectives: tuple[str, ...] | None = None,
         trials: int = 20, budget: str | None = None, trial_budget: str | None = None, space: str | None = None,
         model: dict[str, Any] | None = None, train: dict[str, Any] | None = None, storage: str | None = None,
         study: str | None = None, pruner: Literal["median", "halving", "none"] = "median", startup_trials: int = 3,
         eval_samples: int = 1000, eval_batches: int = 20, seed: int = 0, heartbeat: int = 10) -> Path:
    """Run (or join) a study; returns its folder. The same call on many machines with one storage and study
    name makes parallel workers.

    Args:
        family: the model family to tune.
        data: a registered dataset name or a path.
        out: the study folder (default studies/FAMILY-DATA).
        objectives: what to optimise; several make a Pareto front (default: fd-genlab for a GAN, else val-loss).
        trials: finished trials to reach, over all workers.
        budget: wall-clock of this worker, e.g. 15m.
        trial_budget: wall-clock of one trial's training, e.g. 90s.
        space: a YAML search space merged over the family's (or the dict itself).
        model: Config fields fixed for every trial.
        train: TrainConfig fields fixed for every trial.
        storage: an SQLAlchemy URL (postgresql://user@host/db) shared by workers; default SQLite in the folder.
        study: the study name in the storage (default: the folder's name).
        pruner: stop trials whose validation metric falls behind (single objective only).
        startup_trials: trials that finish before the median pruner acts.
        eval_samples: samples for fd-genlab, recall and samples-per-s.
        eval_batches: validation batches of 64 for val-loss.
        seed: seed of the sampler (single worker).
        heartbeat: seconds between a running trial's heartbeats.
    """
    from genlab.models import get_family

    if not data:
        raise ConfigError(f"genlab tune {family} needs --data", "pass a dataset name (genlab data list) or a path")
    folder = Path(out or f"studies/{family}-{Path(data).name}")
    cls = get_family(family)
    override = read_space_file(space) if isinstance(space, (str, Path)) else (space or {})
    recipe = recipe_for(family)
    fixed = from_dict(cls.Config, model or {})
    merged = {**recipe.search_space_for(fixed), **override}
    merged = {k: v for k, v in merged.items() if v is not None}
    if not merged:
        raise ConfigError(f"a {family} {getattr(fixed, 'kind', '')} model has nothing to tune (it is fitted in "
                          "closed form)", "train it with genlab train, or tune another kind (--model.kind tvae)")
    build_space(cls.Config, merged)  # unknown fields and bad ranges fail here, before anything is written
    from_dict(TrainConfig, {**recipe.defaults, **(train or {})})
    settings = StudySettings(family=family, data=data, objectives=tuple(objectives or default_objectives(family)),
                             trials=trials, budget=budget,
                             trial_budget=trial_budget, space=merged, model=dict(model or {}), train=dict(train or {}),
                             storage=storage, study=study or folder.name or "genlab", pruner=pruner,
                             startup_trials=startup_trials, eval_samples=eval_samples, eval_batches=eval_batches,
                             seed=seed, heartbeat=heartbeat)
    prepare(settings)  # a wrong kind of data or an objective the family cannot measure fails before anything is written
    if (folder / STUDY_FILE).exists():
        existing = read_settings(folder)
        if existing != settings and storage is None:
            raise GenlabError(f"{folder} already holds another study",
                              f"continue it with genlab tune --resume {folder}, or choose another --out")
    else:
        write_settings(folder, settings)
    optimise(folder, settings, load_study(folder, settings, create=True))
    return folder


def resume(folder: str | Path, budget: str | None = None, trials: int | None = None) -> Path:
    """Continue a study: trials of dead workers are retried, finished ones kept, the rest run."""
    folder = Path(folder)
    settings = read_settings(folder)
    study = load_study(folder, settings)
    retried = retry_dead_trials(study)
    if retried:
        print(f"retrying trial(s) {', '.join(map(str, retried))} of a worker that stopped", file=sys.stderr)
    if trials is not None and trials != settings.trials:
        settings = dataclasses.replace(settings, trials=trials)
        write_settings(folder, settings)
    optimise(folder, settings, study, budget=budget)
    return folder


def best_trial(folder: str | Path, number: int | None = None):
    """The trial to train from: the given number, else the best one (for several objectives, the
    Pareto-optimal trial best on the first objective)."""
    from optuna.trial import TrialState

    settings = read_settings(folder)
    study = load_study(folder, settings)
    if number is not None:
        matches = [t for t in study.get_trials(deepcopy=False) if t.number == number]
        if not matches or matches[0].state != TrialState.COMPLETE:
            raise GenlabError(f"study {folder} has no completed trial {number}", "pick one from genlab tune --report")
        return matches[0]
    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        raise GenlabError(
            f"study {folder} has no completed trial yet", f"run more trials: genlab tune --resume {folder}"
        )
    front = study.best_trials
    sign = 1 if study.directions[0].name.lower() == "minimize" else -1
    return min(front, key=lambda t: sign * t.values[0])


def settings_from_study(
    folder: str | Path, number: int | None = None
) -> tuple[str, str, dict[str, Any], dict[str, Any], int]:
    """(family, data, model fields, train fields, trial number) of a study's best (or given) trial,
    read from the trial's run folder, which records the fully resolved config it trained with."""
    from genlab.engine.runs import read_run_config

    trial = best_trial(folder, number)
    record = read_run_config(Path(folder) / trial.user_attrs["run"])
    return record["family"], record["data"], record["model"], record["train"], trial.number
