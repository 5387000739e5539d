"""`genlab <verb> ...`: one dispatcher from verbs to typed functions (jsonargparse).

Options may be written with dashes or underscores (`--max-steps` = `--max_steps`,
`--model.latent-dim` = `--model.latent_dim`); `--config run.yaml` reads any of them
from a YAML file, and the command line wins over it.
"""

from __future__ import annotations

import logging
import shlex
import sys
import warnings
from pathlib import Path

from jsonargparse import ActionConfigFile, ArgumentParser, Namespace

from genlab import __version__
from genlab.errors import ConfigError, GenlabError

VERBS = ["sample", "edit", "reconstruct", "interpolate", "reference", "translate", "generate"]


BARE_FLAGS = {"--interactive"}  # boolean options that may be written without a value


def normalise_argv(argv: list[str]) -> list[str]:
    """`--max-steps=5` -> `--max_steps=5`; a bare `--interactive` -> `--interactive true`; values are left alone."""
    out = []
    for i, token in enumerate(argv):
        if token.startswith("--") and len(token) > 2:
            key, eq, value = token[2:].partition("=")
            token = "--" + key.replace("-", "_") + eq + value
        out.append(token)
        if token in BARE_FLAGS and (i + 1 == len(argv) or argv[i + 1].startswith("--")):
            out.append("true")
    return out


def expand_shortcuts(argv: list[str]) -> list[str]:
    """`genlab train FAMILY --task X` -> `--model.task X` for the options a family declares in `cli_shortcuts`."""
    from genlab.models import FAMILIES, get_family

    if len(argv) < 2 or argv[0] != "train" or argv[1] not in FAMILIES:
        return argv
    shortcuts = getattr(get_family(argv[1]), "cli_shortcuts", {})
    out = []
    for token in argv:
        key, eq, value = token[2:].partition("=") if token.startswith("--") else ("", "", "")
        out.append(f"--{shortcuts[key]}{eq}{value}" if key in shortcuts else token)
    return out


def _function_parser(function) -> ArgumentParser:
    parser = ArgumentParser(description=function.__doc__.split("\n\n")[0])
    parser.add_function_arguments(function, as_positional=True)
    return parser


def _train_parser(family: str) -> ArgumentParser:
    from genlab.config import TrainConfig
    from genlab.models import get_family

    cls = get_family(family)
    parser = ArgumentParser(description=f"Train a {family} model. {cls.__doc__ or ''}".strip())
    parser.add_argument("--config", action=ActionConfigFile, help="a YAML file with any of these options")
    parser.add_argument("--data", type=str | None, default=None, help="a registered dataset name or a path")
    parser.add_argument("--out", type=str | None, default=None, help="the run folder (default runs/FAMILY-DATA)")
    parser.add_argument("--resume", type=str | None, default=None, help="continue the run in this folder from its last checkpoint")
    parser.add_argument("--data_max_bad_fraction", type=float, default=0.05, help="stop before training when more files are unreadable")
    parser.add_argument("--from_study", type=str | None, default=None,
                        help="train with the settings of a study's best trial (genlab tune); options given here win")
    parser.add_argument("--trial", type=int | None, default=None, help="with --from-study: this trial instead of the best")
    parser.add_class_arguments(cls.Config, "model", instantiate=False)
    parser.add_class_arguments(TrainConfig, None, instantiate=False)
    parser.set_defaults(cls.train_defaults)
    return parser


def _tune_parser(family: str) -> ArgumentParser:
    from typing import Literal

    from genlab.config import TrainConfig
    from genlab.models import get_family
    from genlab.tune import OBJECTIVES

    cls = get_family(family)
    parser = ArgumentParser(description=f"Tune a {family} model: an Optuna study whose trials are genlab runs. "
                                        "Options of genlab train given here are fixed for every trial.")
    parser.add_argument("--config", action=ActionConfigFile, help="a YAML file with any of these options")
    parser.add_argument("--data", type=str | None, default=None, help="a registered dataset name or a path")
    parser.add_argument("--out", type=str | None, default=None, help="the study folder (default studies/FAMILY-DATA)")
    parser.add_argument("--trials", type=int, default=20, help="finished trials to reach, over all workers")
    parser.add_argument("--budget", type=str | None, default=None, help="wall-clock of this worker, e.g. 15m")
    parser.add_argument("--trial_budget", type=str | None, default=None, help="wall-clock of one trial's training, e.g. 90s")
    parser.add_argument("--objective", type=str | None, default=None,
                        help=f"what to optimise; repeat for several (Pareto front): {', '.join(OBJECTIVES)} "
                             "(default: fd-genlab for a GAN, else val-loss)")
    parser.add_argument("--space", type=str | None, default=None, help="a YAML search space merged over the family's")
    parser.add_argument("--storage", type=str | None, default=None,
                        help="an SQLAlchemy URL (postgresql://user@host/db) shared by workers; default SQLite in --out")
    parser.add_argument("--study", type=str | None, default=None, help="the study name in the storage (default: --out's name)")
    parser.add_argument("--pruner", type=Literal["median", "halving", "none"], default="median",
                        help="stop trials whose validation metric falls behind (single objective only)")
    parser.add_argument("--startup_trials", type=int, default=3, help="trials that finish before the median pruner acts")
    parser.add_argument("--eval_samples", type=int, default=1000, help="samples for fd-genlab, recall and samples-per-s")
    parser.add_argument("--eval_batches", type=int, default=20, help="validation batches of 64 for val-loss")
    parser.add_argument("--study_seed", type=int, default=0, help="seed of the sampler (single worker)")
    parser.add_class_arguments(cls.Config, "model", instantiate=False)
    parser.add_class_arguments(TrainConfig, None, instantiate=False)
    parser.set_defaults(cls.train_defaults)
    return parser


def join_repeated(argv: list[str], option: str) -> list[str]:
    """`--objective a --objective b` -> `--objective a,b` (jsonargparse keeps only the last of a repeated option)."""
    values, out, i = [], [], 0
    while i < len(argv):
        token = argv[i]
        if token == option and i + 1 < len(argv):
            values.append(argv[i + 1])
            i += 2
            continue
        if token.startswith(option + "="):
            values.append(token.split("=", 1)[1])
        else:
            out.append(token)
        i += 1
    return out + [option, ",".join(values)] if values else out


def build_parser() -> ArgumentParser:
    from genlab import commands, evaluate
    from genlab.compare import compare as compare_runs
    from genlab.models import FAMILIES

    parser = ArgumentParser(prog="genlab", description="Train, evaluate, sample and serve generative models.")
    parser.add_argument("--version", action="version", version=f"genlab {__version__}")
    verbs = parser.add_subcommands(dest="verb")

    # jsonargparse wants each level added to its parent before the level below is filled.
    data = ArgumentParser(description="Find and check datasets.")
    verbs.add_subcommand("data", data, help="list and check datasets")
    data_actions = data.add_subcommands(dest="action")
    data_actions.add_subcommand("list", _function_parser(commands.data_list), help="registered datasets and where they resolve")
    data_actions.add_subcommand("check", _function_parser(commands.data_check), help="counts, shapes, classes, bad files")

    train = ArgumentParser(description="Train a model family on a dataset into a run folder.")
    verbs.add_subcommand("train", train, help="train a model (genlab train FAMILY --help)")
    families = train.add_subcommands(dest="family")
    for family in FAMILIES:
        families.add_subcommand(family, _train_parser(family), help=f"train a {family}")

    tune = ArgumentParser(description="Tune hyperparameters with Optuna; continue a study or report on it.")
    verbs.add_subcommand("tune", tune, help="hyperparameter study (genlab tune FAMILY --help; --resume/--report STUDY)")
    tune.add_argument("--resume", type=str | None, default=None, help="continue the study in this folder")
    tune.add_argument("--report", type=str | None, default=None, help="write report.html for the study in this folder")
    tune.add_argument("--trials", type=int | None, default=None, help="with --resume: a new target of finished trials")
    tune.add_argument("--budget", type=str | None, default=None, help="with --resume: wall-clock of this session")
    tune_families = tune.add_subcommands(dest="family", required=False)
    for family in FAMILIES:
        tune_families.add_subcommand(family, _tune_parser(family), help=f"tune a {family}")

    for verb in VERBS:
        function = getattr(commands, verb)
        verbs.add_subcommand(verb, _function_parser(function), help=function.__doc__.split("\n")[0])
    verbs.add_subcommand("eval", _function_parser(evaluate.evaluate), help="test-split metrics and report.html")
    from genlab.finetune import finetune

    verbs.add_subcommand("finetune", _function_parser(finetune), help="fine-tune a language model (full or LoRA)")
    compare = ArgumentParser(description=compare_runs.__doc__.split("\n\n")[0])
    compare.add_argument("runs", nargs="+", help="two or more run folders")
    compare.add_function_arguments(compare_runs, skip={"runs"})
    verbs.add_subcommand("compare", compare, help="runs side by side, ranked, with a recommendation per goal")
    from genlab.serve import serve

    serve_parser = ArgumentParser(description=serve.__doc__.split("\n\n")[0])
    serve_parser.add_argument("models", nargs="+", help="run or model folders, or NAME=PATH")
    serve_parser.add_function_arguments(serve, skip={"models"})
    verbs.add_subcommand("serve", serve_parser, help="serve models over HTTP (OpenAI-shaped API) with a web page")
    return parser


def _given(argv: list[str]) -> set[str]:
    """The option names written on the command line (to know what a resume overrides)."""
    return {token[2:].split("=")[0] for token in argv if token.startswith("--")}


def run_train(family: str, cfg: Namespace, argv: list[str], command: str) -> None:
    from genlab.config import TrainConfig, from_dict
    from genlab.engine import read_run_config, train
    from genlab.models import get_family

    cls = get_family(family)
    train_fields = {f for f in TrainConfig.__dataclass_fields__}
    given = _given(argv)
    if cfg.resume:
        record = read_run_config(Path(cfg.resume))
        if record["family"] != family:
            raise ConfigError(f"{cfg.resume} is a {record['family']} run, not {family}",
                              f"genlab train {record['family']} --resume {cfg.resume}")
        changed_model = sorted(g for g in given if g.startswith("model."))
        if changed_model:
            raise ConfigError(f"a resumed run keeps its model config; cannot change {', '.join(changed_model)}",
                              "start a new run with --out to change the model")
        if cfg.data and cfg.data != record["data"]:
            raise ConfigError(f"{cfg.resume} was trained on {record['data']}, not {cfg.data}",
                              "drop --data when resuming, or fine-tune into a new run")
        options = {**record["train"], **{k: cfg[k] for k in given & train_fields}}
        model_config = from_dict(cls.Config, record["model"])
        data, out = record["data"], cfg.resume
    elif cfg.from_study:
        from genlab.tune import settings_from_study

        study_family, data, model, trained, number = settings_from_study(cfg.from_study, cfg.trial)
        if study_family != family:
            raise ConfigError(f"{cfg.from_study} tuned a {study_family}, not a {family}",
                              f"genlab train {study_family} --from-study {cfg.from_study}")
        # The trial's settings, except where the command line says otherwise and where to run (a machine choice).
        machine = {"threads", "accelerator", "devices", "num_nodes", "strategy", "precision", "progress"}
        options = {**trained, **{k: cfg[k] for k in (given & train_fields) | machine}}
        given_model = {g.split(".", 1)[1] for g in given if g.startswith("model.")}
        model_config = from_dict(cls.Config, {**model, **{k: cfg.model[k] for k in given_model}})
        data = cfg.data or data
        out = cfg.out or f"runs/{family}-{Path(cfg.from_study).name}-trial{number}"
        print(f"training trial {number} of {cfg.from_study} (its settings; the command line wins)", file=sys.stderr)
    else:
        if not cfg.data:
            raise ConfigError("genlab train needs --data", "pass a dataset name (genlab data list) or a path")
        options = {k: cfg[k] for k in train_fields}
        model_config = from_dict(cls.Config, cfg.model.as_dict())
        data = cfg.data
        out = cfg.out or f"runs/{family}-{Path(data).name}"
    train_config = from_dict(TrainConfig, options)
    run = train(family, data, model_config, train_config, out, resume=bool(cfg.resume),
                max_bad_fraction=cfg.data_max_bad_fraction, command=command)
    use = f"genlab generate {run} --prompt TEXT" if cls.data_kind == "text" else f"genlab sample {run} --out samples.png"
    print(f"\nrun folder: {run}\n  model: {run / 'model'}\n  next: {use} ; genlab eval {run}")


def run_tune(cfg: Namespace, argv: list[str]) -> None:
    from genlab.config import TrainConfig
    from genlab.tune import resume, tune, write_report

    if cfg.report:
        page = write_report(cfg.report)
        print(f"report: {page}")
        return
    if cfg.resume:
        folder = resume(cfg.resume, budget=cfg.budget, trials=cfg.trials)
    elif cfg.family:
        family, options = cfg.family, cfg[cfg.family]
        if not options.data:
            raise ConfigError("genlab tune needs --data", "pass a dataset name (genlab data list) or a path")
        given = _given(argv[argv.index(family) + 1:])
        train_fields = set(TrainConfig.__dataclass_fields__)
        model = {g.split(".", 1)[1]: options.model[g.split(".", 1)[1]] for g in given if g.startswith("model.")}
        train = {k: options[k] for k in given & train_fields}
        out = options.out or f"studies/{family}-{Path(options.data).name}"
        objectives = tuple(o.strip() for o in (options.objective or "").split(",") if o.strip()) or None
        folder = tune(family, options.data, out, objectives=objectives, trials=options.trials, budget=options.budget,
                      trial_budget=options.trial_budget, space=options.space, model=model, train=train,
                      storage=options.storage, study=options.study, pruner=options.pruner,
                      startup_trials=options.startup_trials, eval_samples=options.eval_samples,
                      eval_batches=options.eval_batches, seed=options.study_seed)
    else:
        raise ConfigError("genlab tune needs a family, --resume STUDY or --report STUDY",
                          "e.g. genlab tune vae --data digits --trials 20 --out studies/vae")
    from genlab.tune.study import best_trial, read_settings

    page = write_report(folder)
    print(f"\nstudy folder: {folder}\n  report: {page}")
    try:
        best = best_trial(folder)
    except GenlabError as error:
        print(f"  {error.problem}: {error.fix}")
        return
    print(f"  best trial: {best.number} ({', '.join(f'{v:.4g}' for v in best.values)})\n"
          f"  next: genlab train {read_settings(folder).family} --from-study {folder}")


def main(argv: list[str] | None = None) -> int:
    original = sys.argv[1:] if argv is None else argv
    if original[:1] == ["tune"]:
        original = join_repeated(original, "--objective")
    argv = expand_shortcuts(normalise_argv(original))
    # Lightning's notes that do not concern a genlab user (--holdout 0 means no validation loader, on purpose)
    warnings.filterwarnings("ignore", message=r".*(LeafSpec|litlogger|does not have many workers|no `val_dataloader`).*")
    logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.WARNING)
    parser = build_parser()
    cfg = parser.parse_args(argv)
    try:
        if cfg.verb == "tune":
            run_tune(cfg.tune, argv)
        elif cfg.verb == "train":
            command = "genlab " + " ".join(shlex.quote(a) for a in original)
            run_train(cfg.train.family, cfg.train[cfg.train.family], argv, command)
        elif cfg.verb == "compare":
            from genlab.compare import compare, print_table

            print_table(compare(**cfg.compare.as_dict()))
        elif cfg.verb == "data":
            from genlab import commands

            action = cfg.data.action
            getattr(commands, f"data_{action}")(**cfg.data[action].as_dict())
        elif cfg.verb == "serve":
            from genlab.serve import serve

            serve(**cfg.serve.as_dict())
        elif cfg.verb == "finetune":
            from genlab.finetune import finetune

            finetune(**cfg.finetune.as_dict())
        elif cfg.verb == "eval":
            from genlab.evaluate import evaluate

            metrics = evaluate(**cfg.eval.as_dict())
            for key, value in metrics.items():
                if not key.startswith("class_fraction/"):
                    print(f"  {key}: {value:.4f}" if isinstance(value, float) else f"  {key}: {value}")
        else:
            from genlab import commands

            getattr(commands, cfg.verb)(**cfg[cfg.verb].as_dict())
    except GenlabError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
