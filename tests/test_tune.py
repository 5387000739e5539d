"""genlab tune on `digits` with a tiny VAE: a study beats the default config, pruning stops a diverging
trial, a killed worker's study resumes without losing a completed trial, two workers share one study on a
real PostgreSQL server, and bad input is a clear error."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from genlab.cli import main
from genlab.errors import ConfigError, GenlabError

torch.set_num_threads(1)

TINY = ["--model.widths", "[4,8]", "--model.hidden-dim", "16", "--model.latent-dim", "3", "--batch-size", "32",
        "--val-every", "10", "--val-batches", "2", "--log-every", "10", "--ckpt-every", "1000", "--warmup-steps", "5",
        "--threads", "1", "--eval-batches", "4"]
LR_ONLY = {"train.lr": {"low": 1e-3, "high": 3e-2, "log": True}, "model.latent_dim": None, "model.hidden_dim": None,
           "model.widths": None, "model.res_blocks": None, "train.batch_size": None}


@pytest.fixture
def space_file(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(LR_ONLY))
    return path


def trials_of(folder: Path, storage: str | None = None, name: str | None = None):
    import optuna

    from genlab.tune.study import open_storage, read_settings, storage_url

    settings = read_settings(folder)  # open_storage: the reader may race the worker creating the tables
    url = storage or storage_url(settings, folder)
    return optuna.load_study(study_name=name or settings.study,
                             storage=open_storage(url, settings.heartbeat)).get_trials(deepcopy=False)


def test_study_beats_default_and_trains_the_winner(tmp_path, space_file, capsys):
    study = tmp_path / "study"
    assert main(["tune", "vae", "--data", "digits", "--trials", "5", "--out", str(study), "--space", str(space_file),
                 "--max-steps", "30", "--pruner", "none", *TINY]) == 0
    trials = trials_of(study)
    assert trials[0].user_attrs["baseline"] and trials[0].params["train.lr"] == pytest.approx(1e-3)
    baseline, best = trials[0].values[0], min(t.values[0] for t in trials if t.values)
    assert len(trials) == 5 and best < baseline - 0.5, f"best {best} vs default {baseline}"
    for t in trials:  # every trial is a normal run folder
        assert (study / "trials" / f"{t.number:04d}" / "model" / "model.safetensors").exists()
    page = (study / "report.html").read_text()
    for section in ("Best trials", "Why the best trial wins", "Parameter importances", "Optimisation history",
                    "Parallel coordinates", "All trials"):
        assert section in page
    assert "http" not in page.split("<body>")[1] and (study / "figures" / "history_val-loss.png").stat().st_size > 1000

    winner = min((t for t in trials if t.values), key=lambda t: t.values[0])
    run = tmp_path / "winner"
    assert main(["train", "vae", "--from-study", str(study), "--out", str(run), "--progress", "false"]) == 0
    record = yaml.safe_load((run / "config.yaml").read_text())
    assert record["train"]["lr"] == pytest.approx(winner.params["train.lr"]) and record["train"]["max_steps"] == 30
    assert record["model"]["widths"] == [4, 8] and record["train"]["progress"] is False


def test_pruning_stops_a_diverging_trial(tmp_path):
    import optuna

    from genlab.tune import resume, tune
    from genlab.tune.study import load_study

    study = tmp_path / "study"
    train = {"max_steps": 60, "batch_size": 32, "val_every": 10, "val_batches": 2, "log_every": 10,
             "ckpt_every": 1000, "warmup_steps": 0, "threads": 1, "progress": False}
    tune("vae", "digits", study, trials=3, space={**LR_ONLY, "train.lr": {"low": 2e-3, "high": 4e-3}},
         model={"widths": [4, 8], "hidden_dim": 16, "latent_dim": 3}, train=train, startup_trials=2, eval_batches=4)
    load_study(study).enqueue_trial({"train.lr": 50.0})  # far outside the range: this trial diverges
    resume(study, trials=4)
    trials = trials_of(study)
    assert [t.state for t in trials[:3]] == [optuna.trial.TrialState.COMPLETE] * 3
    diverging = trials[3]
    assert diverging.params["train.lr"] == 50.0 and diverging.state == optuna.trial.TrialState.PRUNED
    steps = [r["step"] for r in map(json.loads, (study / "trials" / "0003" / "metrics.jsonl").read_text().splitlines())]
    assert max(steps) < 60, "pruned before its last step"
    assert diverging.user_attrs["pruned"]
    from genlab.tune import write_report

    assert "pruned" in write_report(study).read_text()


def _worker(args: list[str], log: Path) -> subprocess.Popen:
    code = "import sys, torch; torch.set_num_threads(1); from genlab.cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.Popen([sys.executable, "-c", code, *args], stdout=log.open("w"), stderr=subprocess.STDOUT,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_killed_worker_resumes_without_losing_a_trial(tmp_path, space_file):
    import optuna
    from optuna.trial import TrialState

    study = tmp_path / "study"
    worker = _worker(["tune", "vae", "--data", "digits", "--trials", "5", "--out", str(study), "--space",
                      str(space_file), "--max-steps", "150", "--pruner", "none", *TINY], tmp_path / "worker.log")
    deadline = time.time() + 600  # seconds: generous for a loaded machine; it takes ~20 s on an idle one
    try:
        while time.time() < deadline:
            time.sleep(0.3)
            assert worker.poll() is None, (tmp_path / "worker.log").read_text()[-3000:]
            if not (study / "study.db").exists():
                continue
            try:
                trials = trials_of(study)
            except (KeyError, optuna.exceptions.StorageInternalError):
                continue
            complete = [t for t in trials if t.state == TrialState.COMPLETE]
            running = [t for t in trials if t.state == TrialState.RUNNING and "worker" in t.user_attrs]
            if len(complete) >= 2 and running:
                worker.send_signal(signal.SIGKILL)  # mid-trial: no chance to clean up
                break
        worker.wait(30)
    finally:
        if worker.poll() is None:
            worker.kill()
    before = {t.number: t.values for t in trials_of(study) if t.state == TrialState.COMPLETE}
    killed = [t for t in trials_of(study) if t.state == TrialState.RUNNING]
    assert len(before) >= 2 and len(killed) == 1

    assert main(["tune", "--resume", str(study)]) == 0
    after = trials_of(study)
    assert {t.number: t.values for t in after if t.number in before} == before, "completed trials are kept as they were"
    assert next(t for t in after if t.number == killed[0].number).state == TrialState.FAIL
    retry = [t for t in after if t.system_attrs.get("failed_trial") == killed[0].number]
    assert len(retry) == 1 and retry[0].params == killed[0].params and retry[0].state == TrialState.COMPLETE
    assert sum(t.state == TrialState.COMPLETE for t in after) == 5


@pytest.fixture
def postgres():
    """A throwaway PostgreSQL server on 127.0.0.1 (genlab.tune.pgserver); yields its URL."""
    from genlab.tune.pgserver import local_postgres, unavailable

    reason = unavailable()
    if reason:
        pytest.skip(f"no local PostgreSQL server: {reason}")
    with local_postgres() as url:
        yield url


def test_two_workers_share_one_postgres_study(tmp_path, space_file, postgres):
    from optuna.trial import TrialState

    common = ["tune", "vae", "--data", "digits", "--trials", "6", "--space", str(space_file), "--storage", postgres,
              "--study", "shared", "--max-steps", "40", "--pruner", "none", *TINY]
    workers = [_worker([*common, "--out", str(tmp_path / name)], tmp_path / f"{name}.log") for name in ("a", "b")]
    for worker, name in zip(workers, ("a", "b")):
        assert worker.wait(900) == 0, (tmp_path / f"{name}.log").read_text()[-3000:]
    trials = trials_of(tmp_path / "a", storage=postgres, name="shared")
    finished = [t for t in trials if t.state == TrialState.COMPLETE]
    assert 6 <= len(finished) <= 7  # a worker that checked the count just as the other started one may add one
    pids = {t.user_attrs["worker"]["pid"] for t in finished}
    assert pids == {w.pid for w in workers}, "both workers ran trials of the one study"
    assert len({t.number for t in trials}) == len(trials)
    for t in finished:  # each worker's trials are run folders in its own --out
        owner = "a" if t.user_attrs["worker"]["pid"] == workers[0].pid else "b"
        assert (tmp_path / owner / t.user_attrs["run"] / "model" / "config.json").exists()


def test_bad_input_is_a_clear_error(tmp_path, capsys):
    from genlab.tune import tune

    base = ["tune", "vae", "--data", "digits", "--out", str(tmp_path / "s")]
    assert main([*base, "--objective", "val-loss", "--objective", "fid"]) == 2
    err = capsys.readouterr().err
    assert "unknown objective fid" in err and "samples-per-s" in err
    (tmp_path / "bad.yaml").write_text("model.latent_dimension: {low: 2, high: 8}\n")
    assert main([*base, "--space", str(tmp_path / "bad.yaml")]) == 2
    err = capsys.readouterr().err
    assert "no field 'latent_dimension'" in err and "latent_dim" in err
    (tmp_path / "bad2.yaml").write_text("train.lr: {low: 1.0e-2, high: 1.0e-3}\n")
    assert main([*base, "--space", str(tmp_path / "bad2.yaml")]) == 2
    assert "must be below high" in capsys.readouterr().err
    assert main([*base, "--storage", "not a url"]) == 2
    assert "not a database URL" in capsys.readouterr().err
    assert main([*base, "--storage", "nosuchdb://u@h/db"]) == 2
    assert "no database driver" in capsys.readouterr().err
    assert main(["tune", "--resume", str(tmp_path)]) == 2
    assert "not a genlab study folder" in capsys.readouterr().err
    assert main(["tune", "gpt", "--data", "digits", "--out", str(tmp_path / "g")]) == 2
    assert "trains on text data, but digits is image" in capsys.readouterr().err
    (tmp_path / "text.txt").write_text("to be or not to be, that is the question\n" * 200)
    assert main(["tune", "gpt", "--data", str(tmp_path / "text.txt"), "--objective", "fd-genlab", "--out",
                 str(tmp_path / "g")]) == 2
    assert "does not sample images" in capsys.readouterr().err and not (tmp_path / "g").exists()
    assert main(["tune", "gan", "--data", "digits", "--objective", "val-loss", "--out", str(tmp_path / "gan")]) == 2
    assert "use --objective fd-genlab" in capsys.readouterr().err  # a GAN's validation loss is its discriminator's
    with pytest.raises(ConfigError, match="neither a model nor a train field"):
        tune("vae", "digits", tmp_path / "t", space={"lr": {"low": 1e-3, "high": 1e-2}})
    with pytest.raises(GenlabError, match="cannot open the study storage"):
        tune("vae", "digits", tmp_path / "u", storage=f"sqlite:///{tmp_path}/no/such/dir/x.db", trials=1)


def test_repeated_objectives_are_collected(capsys):
    from genlab.cli import tune_parser

    parsed = tune_parser("vae").parse_args(["--objective", "val-loss", "--objective=samples-per-s"])
    assert parsed.objective == ["val-loss", "samples-per-s"]


def test_multi_objective_study_reports_a_pareto_front(tmp_path, space_file):
    from genlab.tune import write_report

    study = tmp_path / "multi"
    assert main(["tune", "vae", "--data", "digits", "--trials", "3", "--out", str(study), "--space", str(space_file),
                 "--objective", "val-loss", "--objective", "samples-per-s", "--eval-samples", "200",
                 "--max-steps", "20", *TINY]) == 0
    trials = trials_of(study)
    assert all(len(t.values) == 2 and t.values[1] > 0 for t in trials)
    page = write_report(study).read_text()
    assert "Pareto front" in page and (study / "figures" / "pareto.png").exists()


def test_each_table_kind_searches_its_own_fields_and_the_copula_has_none(tmp_path, capsys):
    from genlab.config import from_dict
    from genlab.engine.recipes import recipe_for
    from genlab.models.tabular.model import TabularConfig
    from genlab.tune.space import build_space

    recipe = recipe_for("tabular")
    for kind in ("tvae", "gpt", "ddpm", "ctgan"):
        space = recipe.search_space_for(from_dict(TabularConfig, {"kind": kind}))
        build_space(TabularConfig, space)  # every field exists and every range is valid
        assert ("model.latent_dim" in space) == (kind in ("tvae", "ctgan"))  # gpt and ddpm have no latent code
    (tmp_path / "t.csv").write_text("a,b\n" + "".join(f"{i},{i % 3}\n" for i in range(50)))
    assert main(["tune", "tabular", "--data", str(tmp_path / "t.csv"), "--model.kind", "copula", "--trials", "2",
                 "--out", str(tmp_path / "study")]) == 2
    assert "nothing to tune" in capsys.readouterr().err


def test_a_trial_on_two_devices_trains_in_its_own_processes_and_reports_to_its_study(tmp_path):
    """--devices 2 --strategy ddp: each trial trains in two processes of its own (genlab.tune.trial), the first
    reporting the validation loss to the trial through the study's storage; a trial the pruner stops stops in
    both processes, and the tuning process measures the ones that finish."""
    import optuna

    from genlab.files import load_torch_file
    from genlab.tune import resume, tune
    from genlab.tune.study import load_study

    study = tmp_path / "study"
    train = {"max_steps": 40, "batch_size": 32, "val_every": 10, "val_batches": 2, "log_every": 10,
             "ckpt_every": 1000, "warmup_steps": 0, "threads": 1, "progress": False, "devices": 2, "strategy": "ddp",
             "accelerator": "cpu"}
    tune("vae", "digits", study, trials=1, space={**LR_ONLY, "train.lr": {"low": 2e-3, "high": 4e-3}},
         model={"widths": [4, 8], "hidden_dim": 16, "latent_dim": 3}, train=train, startup_trials=1, eval_batches=4)
    load_study(study).enqueue_trial({"train.lr": 1e-7})  # learns nothing: worse than trial 0 at every report
    resume(study, trials=2)
    first, slow = trials_of(study)
    assert first.state == optuna.trial.TrialState.COMPLETE and first.values[0] > 0
    assert sorted(first.intermediate_values) == [10, 20, 30, 40], "the training processes reported every validation"
    rng = load_torch_file(study / "trials" / "0000" / "checkpoints" / "last.ckpt")["callbacks"]["RNGState"]
    assert len(rng["ranks"]) == 2, "the trial trained in two processes"
    assert json.loads((study / "trials" / "0000" / "outcome.json").read_text()) == {}
    assert slow.state == optuna.trial.TrialState.PRUNED and "worse than the pruner's threshold" in slow.user_attrs[
        "pruned"]
    log = (study / "trials" / "0001" / "metrics.jsonl").read_text().splitlines()
    steps = [json.loads(line)["step"] for line in log]
    assert max(steps) < 39, "both processes stopped when the first was told to prune"
