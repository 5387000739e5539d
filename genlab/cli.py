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

VERBS = ["sample", "reconstruct", "interpolate", "reference", "translate", "generate"]


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
    parser.add_class_arguments(cls.Config, "model", instantiate=False)
    parser.add_class_arguments(TrainConfig, None, instantiate=False)
    parser.set_defaults(cls.train_defaults)
    return parser


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


def main(argv: list[str] | None = None) -> int:
    original = sys.argv[1:] if argv is None else argv
    argv = expand_shortcuts(normalise_argv(original))
    warnings.filterwarnings("ignore", message=r".*(LeafSpec|litlogger|does not have many workers).*")
    logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.WARNING)
    parser = build_parser()
    cfg = parser.parse_args(argv)
    try:
        if cfg.verb == "train":
            command = "genlab " + " ".join(shlex.quote(a) for a in original)
            run_train(cfg.train.family, cfg.train[cfg.train.family], argv, command)
        elif cfg.verb == "compare":
            from genlab.compare import compare, print_table

            print_table(compare(**cfg.compare.as_dict()))
        elif cfg.verb == "data":
            from genlab import commands

            action = cfg.data.action
            getattr(commands, f"data_{action}")(**cfg.data[action].as_dict())
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
