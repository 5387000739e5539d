"""`genlab VERB ...`: one dispatcher from verbs to typed functions, each parser built from its function.

`VERBS` names each verb's function by its import path, so `genlab --help` imports nothing and a
verb imports only what it uses. A function's signature gives the options and its docstring their
help; `genlab train FAMILY` and `genlab tune FAMILY` add every field of the family's Config
(`--model.FIELD`, with the field's own doc) and of TrainConfig, minus the fields the data decides.
Options may be written with dashes or underscores (`--max-steps`, `--max_steps`: both spellings
are declared); `--config run.yaml` reads any of them from a YAML file, the command line winning.
What was written on the command line is what the parser returns without defaults (jsonargparse's
`defaults=False`): a resumed run overrides exactly that.
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import inspect
import json
import logging
import os
import shlex
import sys
import types
import typing
import warnings
from collections.abc import Callable
from typing import Any, NamedTuple

from genlab import __version__
from genlab.errors import GenlabError
from genlab.models import FAMILIES


class Verb(NamedTuple):
    target: str  # module:function, or a table of sub-verbs for "data"
    summary: str
    show: str | None = None  # module:function that prints the result for a person


VERBS: dict[str, Verb] = {
    "data": Verb("", "list, check, make and prepare datasets (genlab data list | check DATA | make WHAT | "
                     "prepare TEXT)"),
    "train": Verb("", "train a model family into a run folder (genlab train FAMILY --help)"),
    "tune": Verb("", "hyperparameter study with Optuna (genlab tune FAMILY --help; --resume/--report STUDY)"),
    "finetune": Verb("genlab.engine.finetune:finetune",
                     "fine-tune a model on new data (language models: full or LoRA; others: full)"),
    "eval": Verb("genlab.evaluation.evaluate:evaluate", "test-split metrics, metrics.json and report.html",
                 "genlab.cli:show_metrics"),
    "compare": Verb("genlab.evaluation.compare:compare", "runs side by side, ranked, with a recommendation per goal",
                    "genlab.evaluation.compare:print_table"),
    "sample": Verb("genlab.cli.verbs:sample",
                   "draw images into a PNG grid, rows into a table, or clips into GIF/MP4 files"),
    "generate": Verb("genlab.cli.verbs:generate", "continue a prompt with a language model, streamed"),
    "detect": Verb("genlab.cli.verbs:detect", "anomaly scores of new examples, and a threshold set without labels"),
    "chat": Verb("genlab.cli.verbs:chat", "a conversation with an instruction-tuned language model, streamed"),
    "speak": Verb("genlab.cli.verbs:speak", "speak text with a text-to-speech model (and a vocoder) into a WAV file"),
    "reconstruct": Verb("genlab.cli.verbs:reconstruct", "encode and decode images"),
    "interpolate": Verb("genlab.cli.verbs:interpolate", "walk the latent line between two images"),
    "translate": Verb("genlab.cli.verbs:translate", "translate images with a pix2pix model"),
    "edit": Verb("genlab.cli.verbs:edit",
                 "edit an image or a clip of sound with a diffusion model: image-to-image, inpainting, a morph"),
    "video": Verb("genlab.cli.verbs:video",
                  "continue a clip, raise its frame rate or animate a still with a video model (GIF or MP4)"),
    "reference": Verb("genlab.cli.verbs:reference", "train (once) the reference classifier behind FD-genlab"),
    "style": Verb("genlab.cli.verbs:style",
                  "restyle a photo after a style image (Gatys, or a style model: genlab train style)"),
    "serve": Verb("genlab.serve:serve", "serve models over HTTP (OpenAI-shaped API) with a web page"),
}
DATA_VERBS = {"list": Verb("genlab.cli.verbs:data_list", "registered datasets and where they resolve"),
              "check": Verb("genlab.cli.verbs:data_check",
                            "counts, shapes, classes, column kinds, sound files' rates and lengths, bad files"),
              "make": Verb("genlab.cli.verbs:data_make",
                           "make a dataset offline: spoken digits or a TTS corpus (flite), notes (FluidSynth), "
                           "shapes (captioned scenes), moving-fashion (clips)"),
              "prepare": Verb("genlab.cli.verbs:data_prepare",
                              "tokenize text once into token files on disk, to train on corpora larger than memory")}
RUN_OPTIONS = ("data", "out", "resume", "from_study", "trial", "data_max_bad_fraction", "config")


def _function(path: str) -> Callable:
    module, name = path.split(":")
    return getattr(importlib.import_module(module), name)


def _overview(title: str, summaries: dict[str, str], usage: str) -> str:
    width = max(len(name) for name in summaries)
    rows = "\n".join(f"  {name:<{width}}  {summary}" for name, summary in summaries.items())
    return f"usage: {usage}\n\n{title}\n\n{rows}\n"


# -- parsers ----------------------------------------------------------------------------------------
# A verb that uses a trained model takes flat options: the standard library's argparse parses them, which
# keeps those verbs' start-up to torch's. train and tune take typed, nested configs and YAML files:
# jsonargparse parses those.


def _typed_parser(prog: str, description: str):
    from jsonargparse import ArgumentParser

    return ArgumentParser(prog=prog, description=description)


def _converter(hint: Any) -> tuple[Callable[[str], Any], tuple | None]:
    """(a function from the command-line string to a value of `hint`, the allowed values or None)."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) is typing.Literal:
        return str, typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        if len(args) == 1:
            convert, choices = _converter(args[0])
            if convert is str:  # a text may be "none": only numbers and flags read null as None
                return convert, choices
            return (lambda text: None if text.lower() in ("none", "null") else convert(text)), choices
        return _list_or_string, None  # list[str] | str: a JSON list, or one string
    if hint is bool:
        return _boolean, None
    return hint, None


def _boolean(text: str) -> bool:
    if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
        raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")
    return text.lower() in ("true", "1", "yes")


def _list_or_string(text: str) -> list[str] | str:
    import json

    if text.startswith("["):
        try:
            value = json.loads(text)
        except json.JSONDecodeError as error:
            raise argparse.ArgumentTypeError(f"not a JSON list of strings: {error}") from None
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return value
    return text


def add_option(parser, name: str, hint: Any, default: Any = inspect.Parameter.empty, help: str = "",
               typed: bool = True) -> None:
    """`--name` (dashed, then the underscored spelling), or a positional argument when there is no default.
    `typed`: a jsonargparse parser, which takes the type hint itself; else argparse, given a converter."""
    many = typing.get_origin(hint) is list
    hint_of_one = typing.get_args(hint)[0] if many else hint
    convert, choices = (hint_of_one, None) if typed else _converter(hint_of_one)
    if default is inspect.Parameter.empty:
        parser.add_argument(name, type=convert, choices=choices, nargs="+" if many else None, help=help)
        return
    leaf = name.rsplit(".", 1)[-1]
    prefix = name[: len(name) - len(leaf)]
    names = [f"--{prefix}{leaf.replace('_', '-')}"] + ([f"--{name}"] if "_" in leaf else [])
    extra = {"nargs": "?", "const": True} if hint is bool else {}  # a bare --flag means true
    if not typed:
        extra |= {"dest": name, "choices": choices}
        one = [a for a in typing.get_args(hint) if a is not type(None)]
        if default is None and len(one) == 1 and typing.get_origin(one[0]) is list:  # list[X] | None: repeatable
            convert, choices = _converter(typing.get_args(one[0])[0])
            extra |= {"action": "append", "choices": choices}
        help = f"{help} (default: {default})" if help else f"default: {default}"
    parser.add_argument(*names, type=convert, default=default, help=help, **extra)


def add_function(parser, function: Callable, skip: tuple[str, ...] = (), rename: dict[str, str] | None = None,
                 typed: bool = True, docs: bool = True) -> None:
    """Every parameter of `function` as an option (positional when it has no default), helped by its docstring
    (read only when `docs`: for --help)."""
    helps: dict[str, str] = {}
    if docs:
        from docstring_parser import parse

        helps = {p.arg_name: " ".join(p.description.split()) for p in parse(function.__doc__ or "").params}
    hints = typing.get_type_hints(function)
    for name, parameter in inspect.signature(function).parameters.items():
        if name in skip or parameter.kind in (parameter.VAR_KEYWORD, parameter.VAR_POSITIONAL):
            continue
        add_option(parser, (rename or {}).get(name, name), hints[name], parameter.default, helps.get(name, ""), typed)


def add_dataclass(parser, cls: type, prefix: str = "", defaults: dict[str, Any] | None = None,
                  skip: tuple[str, ...] = ()) -> None:
    """Every field of a config dataclass as `--PREFIX.FIELD`, helped by the field's docstring."""
    import dataclasses

    from genlab.config import field_docs

    docs, hints = field_docs(cls), typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        if field.name in skip:
            continue
        default = (defaults or {}).get(field.name, field.default)
        add_option(parser, f"{prefix}{field.name}", hints[field.name], default, docs.get(field.name, ""))


def _description(function: Callable) -> str:
    return (function.__doc__ or "").split("\n\n")[0].strip()


PYTHON_ONLY = ("callbacks",)  # parameters of a verb's function that only Python callers can pass


def verb_parser(verb: str, function: Callable, docs: bool = True) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"genlab {verb}", description=_description(function))
    add_function(parser, function, skip=PYTHON_ONLY, typed=False, docs=docs)
    return parser


def train_parser(family: str):
    from jsonargparse import ActionConfigFile

    from genlab.config import TrainConfig, data_fields
    from genlab.engine.recipes import recipe_for
    from genlab.models import get_family

    cls = get_family(family)
    parser = _typed_parser(f"genlab train {family}", f"Train a {family} model: {(cls.__doc__ or '').strip()}")
    parser.add_argument("--config", action=ActionConfigFile, help="a YAML file with any of these options")
    add_option(parser, "data", str | None, None, "a registered dataset name (genlab data list) or a path")
    add_option(parser, "out", str | None, None, "the run folder (default runs/FAMILY-DATA)")
    add_option(
        parser,
        "resume",
        str | None,
        None,
        "continue the run in this folder from its last checkpoint; the train "
        "options given override its recorded ones",
    )
    add_option(parser, "from_study", str | None, None, "train with the settings of a study's best trial (genlab tune); "
               "the options given win")
    add_option(parser, "trial", int | None, None, "with --from-study: this trial instead of the best")
    add_option(parser, "data_max_bad_fraction", float, 0.05, "stop before training when more files are unreadable")
    add_dataclass(parser, cls.Config, "model.", skip=data_fields(cls.Config))
    add_dataclass(parser, TrainConfig, defaults=recipe_for(family).defaults)
    return parser


def tune_parser(family: str):
    from jsonargparse import ActionConfigFile

    from genlab.config import TrainConfig, data_fields
    from genlab.engine.recipes import recipe_for
    from genlab.models import get_family
    from genlab.tune import OBJECTIVES, tune

    cls = get_family(family)
    parser = _typed_parser(
        f"genlab tune {family}",
        f"Tune a {family} model: an Optuna study whose trials are genlab runs. "
        "Options of genlab train given here are fixed for every trial.",
    )
    parser.add_argument("--config", action=ActionConfigFile, help="a YAML file with any of these options")
    add_option(parser, "data", str | None, None, "a registered dataset name (genlab data list) or a path")
    add_option(parser, "out", str | None, None, "the study folder (default studies/FAMILY-DATA)")
    parser.add_argument("--objective", type=str, action="append",
                        help=f"what to optimise, one of {', '.join(OBJECTIVES)}; repeat it (or separate with commas) "
                        "for several, which make a Pareto front (default: fd-genlab for a GAN, else val-loss)")
    add_function(parser, tune, skip=("family", "data", "out", "objectives", "model", "train", "heartbeat"),
                 rename={"seed": "study_seed"})
    add_dataclass(parser, cls.Config, "model.", skip=data_fields(cls.Config))
    add_dataclass(parser, TrainConfig, defaults=recipe_for(family).defaults)
    return parser


def study(resume: str | None = None, report: str | None = None, trials: int | None = None,
          budget: str | None = None) -> str | None:
    """Continue a study, or write its report.

    Args:
        resume: continue the study in this folder: dead workers' trials are retried, finished ones kept.
        report: write report.html for the study in this folder.
        trials: with --resume: a new target of finished trials.
        budget: with --resume: wall-clock of this session, e.g. 15m.
    """
    from genlab.errors import ConfigError
    from genlab.tune import resume as resume_study
    from genlab.tune import write_report

    if report:
        print(f"report: {write_report(report)}")
        return None
    if resume:
        return str(resume_study(resume, budget=budget, trials=trials))
    raise ConfigError("genlab tune needs a family, --resume STUDY or --report STUDY",
                      "e.g. genlab tune vae --data digits --trials 20 --out studies/vae")


# -- running ----------------------------------------------------------------------------------------


def run_train(family: str, argv: list[str], command: str) -> None:
    import genlab
    from genlab.errors import ConfigError

    given = train_parser(family).parse_args(argv, defaults=False).as_dict()
    given.pop("config", None)
    model = given.pop("model", {})
    options = {k: given.pop(k) for k in RUN_OPTIONS if k in given}
    resume = options.get("resume")
    if resume and options.get("out") and options["out"] != resume:
        raise ConfigError(f"--resume {resume} and --out {options['out']} name two run folders", "give only --resume")
    run = genlab.train(family, options.get("data"), resume or options.get("out"), model, resume=bool(resume),
                       from_study=options.get("from_study"), trial=options.get("trial"),
                       max_bad_fraction=options.get("data_max_bad_fraction", 0.05), command=command, **given)
    from genlab.engine.runs import first_process

    if not first_process():  # a second process of a multi-process run: the first one reports
        return
    from genlab.models import get_family
    from genlab.models.base import Stylizer, TableSampler, TextGenerator, TextToSpeech, Vocoder

    cls = get_family(family)
    sound = bool(json.loads((run / "model" / "config.json").read_text())["config"].get("sound"))
    use = f"genlab generate {run} --prompt TEXT ; genlab eval {run}" if issubclass(cls, TextGenerator) \
        else f"genlab sample {run} --n 1000 --out synthetic.csv ; genlab eval {run}" if issubclass(cls, TableSampler) \
        else f"genlab sample A_SOUND_MODEL --vocoder {run} --out sounds/" if issubclass(cls, Vocoder) \
        else f'genlab speak {run} --text "four two seven" --out speech.wav' if issubclass(cls, TextToSpeech) \
        else f"genlab sample {run} --out sounds/" if sound \
        else f"genlab style PHOTO.jpg --style STYLE.jpg --model {run} --out styled.png" if issubclass(cls, Stylizer) \
        else f"genlab sample {run} --out samples.png ; genlab eval {run}"
    print(f"\nrun folder: {run}\n  model: {run / 'model'}\n  next: {use}")


def run_tune(argv: list[str]) -> None:
    import dataclasses

    from genlab.config import TrainConfig
    from genlab.tune import best_trial, read_settings, tune, write_report

    if argv and argv[0] in FAMILIES:
        family, parser = argv[0], tune_parser(argv[0])
        given = parser.parse_args(argv[1:], defaults=False).as_dict()
        options = parser.parse_args(argv[1:]).as_dict()
        train_fields = {f.name for f in dataclasses.fields(TrainConfig)}
        study_options = {k: v for k, v in options.items() if k not in train_fields | {"model", "config", "objective"}}
        study_options["seed"] = study_options.pop("study_seed")
        objectives = (
            tuple(
                o.strip()
                for given_objective in options["objective"] or []
                for o in given_objective.split(",")
                if o.strip()
            )
            or None
        )
        folder = tune(family, model=given.get("model", {}), train={k: v for k, v in given.items() if k in train_fields},
                      objectives=objectives, **study_options)
    else:
        folder = study(**vars(verb_parser("tune", study).parse_args(argv)))
        if folder is None:
            return
    print(f"\nstudy folder: {folder}\n  report: {write_report(folder)}")
    try:
        best = best_trial(folder)
    except GenlabError as error:
        print(f"  {error.problem}: {error.fix}")
        return
    print(f"  best trial: {best.number} ({', '.join(f'{v:.4g}' for v in best.values)})\n"
          f"  next: genlab train {read_settings(folder).family} --from-study {folder}")


def show_metrics(metrics: dict[str, Any]) -> None:
    for key, value in metrics.items():
        if not key.startswith("class_fraction/"):
            print(f"  {key}: {value:.4f}" if isinstance(value, float) else f"  {key}: {value}")


def dispatch(argv: list[str]) -> None:
    verb, rest = argv[0], argv[1:]
    if verb == "train":
        if not rest or rest[0] in ("-h", "--help") or rest[0] not in FAMILIES:
            if rest and rest[0] not in ("-h", "--help"):
                raise GenlabError(f"unknown model family {rest[0]!r}", f"use one of {', '.join(FAMILIES)}")
            print(_overview("families:", {k: f.summary for k, f in FAMILIES.items()},
                            "genlab train FAMILY --data DATA [--out RUN] [options]  (genlab train FAMILY --help)"))
            return
        command = "genlab " + " ".join(shlex.quote(a) for a in argv)
        return run_train(rest[0], rest[1:], command)
    if verb == "tune":
        return run_tune(rest)
    table, entry = (DATA_VERBS, None) if verb == "data" else (None, VERBS[verb])
    if table is not None:
        if not rest or rest[0] in ("-h", "--help") or rest[0] not in table:
            if rest and rest[0] not in ("-h", "--help"):
                raise GenlabError(f"unknown action {rest[0]!r} of genlab data", f"use one of {', '.join(table)}")
            print(_overview("actions:", {name: verb.summary for name, verb in table.items()}, "genlab data ACTION ..."))
            return
        verb, entry, rest = f"data {rest[0]}", table[rest[0]], rest[1:]
    function = _function(entry.target)
    wants_help = "-h" in rest or "--help" in rest
    result = function(**vars(verb_parser(verb, function, docs=wants_help).parse_args(rest)))
    if entry.show:
        _function(entry.show)(result)


class _Stderr(logging.StreamHandler):
    """A handler that writes to whatever sys.stderr is when it writes (test runners and notebooks replace it)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):
        pass


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_overview("Train, evaluate, sample and serve generative models. Verbs:",
                        {name: verb.summary for name, verb in VERBS.items()},
                        "genlab VERB [options]  (genlab VERB --help)"))
        return 0
    if argv[0] == "--version":
        print(f"genlab {__version__}")
        return 0
    if argv[0] not in VERBS:
        close = difflib.get_close_matches(argv[0], VERBS, n=1)
        print(f"error: unknown verb {argv[0]!r}\n  fix: {'did you mean ' + close[0] + '? ' if close else ''}"
              f"the verbs are {', '.join(VERBS)} (genlab --help)", file=sys.stderr)
        return 2
    # Lightning's notes that do not concern a genlab user (--holdout 0 means no validation loader, on purpose)
    warnings.filterwarnings(
        "ignore", message=r".*(LeafSpec|litlogger|does not have many workers|no `val_dataloader`).*"
    )
    logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.WARNING)
    log = logging.getLogger("genlab")  # genlab's own notes (a reference classifier trained, a kernel not built)
    if not log.handlers:
        log.addHandler(_Stderr())
        log.setLevel(logging.INFO)
    try:
        if {"-h", "--help"} & set(argv):
            dispatch(argv)
        else:
            from genlab.hardware import denormals_flushed

            with denormals_flushed():  # before anything computes, so that torch's threads inherit it
                dispatch(argv)
    except GenlabError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except OSError as error:  # a path that cannot be written or read: the user's to fix
        print(f"error: {error.strerror or error}: {error.filename or ''}\n  fix: check the path and its permissions",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


# Verbs that only read files and write their own (atomically, closed before they return): the `genlab` command
# ends them without the interpreter's teardown, which with torch loaded takes longer than a whole `genlab
# generate` of 300 tokens (docs/architecture.md). Training, tuning and serving exit normally.
QUICK_EXIT = {"sample", "generate", "reconstruct", "interpolate", "translate", "edit", "data", "eval", "compare",
              "reference"}


def run() -> None:
    """The `genlab` command."""
    code = main()
    if sys.argv[1:2] and sys.argv[1] in QUICK_EXIT:
        sys.stdout.flush()
        sys.stderr.flush()
        logging.shutdown()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    run()
