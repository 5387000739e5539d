"""Benchmark: `genlab tune` (issue 7) -> bench/results/tune.json.

    python bench/tune.py                       # the real run (~15 + ~5 minutes on a quiet 2-core machine)
    python bench/tune.py --quick --out /tmp/tune_quick.json    # smoke test of both parts in about 2 minutes

Parts (`--parts`, comma separated):

- `gpt`: a `--study-minutes` (15) study of the GPT on tiny-shakespeare, each trial trained for
  `--trial-seconds` (90) of wall-clock with the default search space (`GPT.search_space`), the median
  pruner on the validation loss, all cores. Trial 0 of every study is the family's default config under
  the same per-trial budget: it is the anchor, measured in the same run. The bar: the best trial's
  validation loss (the whole validation split, 5% of the text) beats the default's. The study's
  report.html explains the win (the parameters that changed, ordered by importance, and both curves).
- `workers`: a throwaway PostgreSQL server on loopback (genlab.tune.pgserver); the same study of
  `--worker-trials` (8) fixed-cost VAE trials on digits (only the learning rate is searched, so every trial
  costs the same) run by one worker, then by two workers at once, one torch thread each. The bar: two
  workers finish the same number of trials in <= 60% of one worker's wall-clock, process start included.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import genlab  # noqa: E402
from genlab.tune import write_report  # noqa: E402
from genlab.tune.pgserver import local_postgres  # noqa: E402
from genlab.tune.report import importances  # noqa: E402
from genlab.tune.space import decode  # noqa: E402
from genlab.tune.study import load_study, read_settings  # noqa: E402

WORK = ROOT / "bench" / ".work" / "tune"
WORKER_CODE = "import sys; from genlab.cli import main; sys.exit(main(sys.argv[1:]))"


def machine() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    return {"cores": len(os.sched_getaffinity(0)), "cpu": cpu, "torch": torch.__version__,
            "python": platform.python_version(), "genlab": genlab.__version__}


def genlab_cli(args: list[str], log: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"} if "--threads" in args and args[args.index("--threads") + 1] == "1" \
        else dict(os.environ)
    return subprocess.Popen([sys.executable, "-c", WORKER_CODE, *args], stdout=log.open("w"), stderr=subprocess.STDOUT,
                            env=env, cwd=ROOT)


def wait_all(workers: list[subprocess.Popen], logs: list[Path]) -> None:
    for worker, log in zip(workers, logs):
        if worker.wait() != 0:
            raise SystemExit(f"a worker failed; its log {log} ends with:\n{log.read_text()[-3000:]}")


def gpt_part(args) -> dict:
    folder = WORK / "gpt-study"
    shutil.rmtree(folder, ignore_errors=True)
    folder.parent.mkdir(parents=True, exist_ok=True)
    command = ["tune", "gpt", "--data", "tiny-shakespeare", "--out", str(folder), "--trials", "1000",
               "--budget", f"{args.study_minutes}m", "--trial-budget", f"{args.trial_seconds}s",
               "--threads", str(args.threads), "--val-every", str(args.val_every), "--val-batches", "10",
               "--sample-every", "1000000", "--ckpt-every", "1000000", "--eval-batches", "100"]
    if args.quick:
        command += ["--model.n-layer", "2", "--model.n-embd", "64", "--space", str(WORK / "quick_space.yaml")]
        (WORK / "quick_space.yaml").write_text(yaml.safe_dump(
            {"model.n_layer": None, "model.n_embd": None, "train.batch_size": None}))
    print("gpt study:", "genlab " + shlex.join(command), flush=True)
    start = time.time()
    wait_all([genlab_cli(command, WORK / "gpt-study.log")], [WORK / "gpt-study.log"])
    seconds = time.time() - start
    page = write_report(folder)
    study = load_study(folder, read_settings(folder))
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.values]
    baseline = next(t for t in complete if t.user_attrs.get("baseline"))
    best = min(complete, key=lambda t: t.values[0])
    weights = importances(study)
    changed = {
        k: {
            "default": decode(baseline.params.get(k)),
            "best": decode(v),
            "importance": round(weights.get(k, 0), 3),
        }
        for k, v in best.params.items()
        if v != baseline.params.get(k)
    }
    return {
        "genlab": {
            "val_loss": round(best.values[0], 4),
            "best_trial": best.number,
            "best_params": {k: decode(v) for k, v in best.params.items()},
            "changed_params": changed,
            "trials": {
                s: sum(t.state.name.lower() == s for t in trials) for s in ("complete", "pruned", "fail")
            },
            "study_seconds": round(seconds, 1),
            "report": str(page.relative_to(ROOT)),
        },
        "anchor": {
            "name": "genlab GPT default config (trial 0 of the same study, same per-trial budget)",
            "val_loss": round(baseline.values[0], 4),
        },
        "bar": {
            "best_beats_default": best.values[0] < baseline.values[0],
            "val_loss_gain": round(baseline.values[0] - best.values[0], 4),
        },
        "budget": {
            "study_minutes": args.study_minutes,
            "trial_seconds": args.trial_seconds,
            "threads": args.threads,
        },
    }


def workers_part(args) -> dict:
    space = WORK / "lr_space.yaml"
    WORK.mkdir(parents=True, exist_ok=True)
    space.write_text(yaml.safe_dump({"train.lr": {"low": 3e-4, "high": 3e-2, "log": True}, "model.latent_dim": None,
                                     "model.hidden_dim": None, "model.widths": None, "model.res_blocks": None,
                                     "train.batch_size": None}))
    steps = 30 if args.quick else args.worker_steps
    timings = {}
    with local_postgres() as url:
        for n_workers in (1, 2):
            name = f"workers-{n_workers}"
            common = ["tune", "vae", "--data", "digits", "--storage", url, "--study", name, "--trials",
                      str(args.worker_trials), "--space", str(space), "--max-steps", str(steps), "--pruner", "none",
                      "--threads", "1", "--val-every", "100000", "--sample-every", "1000000", "--ckpt-every", "1000000",
                      "--eval-batches", "4"]
            logs = [WORK / f"{name}-{i}.log" for i in range(n_workers)]
            folders = [WORK / f"{name}-{i}" for i in range(n_workers)]
            for f in folders:
                shutil.rmtree(f, ignore_errors=True)
            print(f"{n_workers} worker(s):", "genlab " + shlex.join([*common, "--out", "..."]), flush=True)
            start = time.time()
            wait_all([genlab_cli([*common, "--out", str(f)], log) for f, log in zip(folders, logs)], logs)
            timings[n_workers] = time.time() - start
            import optuna

            finished = [t for t in optuna.load_study(study_name=name, storage=url).get_trials(deepcopy=False)
                        if t.state.name == "COMPLETE"]
            timings[f"trials_{n_workers}"] = len(finished)
            timings[f"worker_pids_{n_workers}"] = len({t.user_attrs["worker"]["pid"] for t in finished})
    ratio = timings[2] / timings[1]
    return {
        "genlab": {"two_workers_seconds": round(timings[2], 1), "two_workers_trials": timings["trials_2"],
                   "workers_that_ran_trials": timings["worker_pids_2"], "ratio_to_one_worker": round(ratio, 3)},
        "anchor": {"name": "the same study run by one worker", "one_worker_seconds": round(timings[1], 1),
                   "one_worker_trials": timings["trials_1"]},
        "bar": {"ratio_at_most_0.6": ratio <= 0.6},
        "budget": {"trials": args.worker_trials, "steps_per_trial": steps, "threads_per_worker": 1,
                   "storage": "PostgreSQL on 127.0.0.1 (throwaway cluster)"},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parts", default="gpt,workers")
    parser.add_argument("--study-minutes", type=float, default=15)
    parser.add_argument("--trial-seconds", type=float, default=90)
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--val-every", type=int, default=100, help="GPT trials: steps between pruning checks")
    parser.add_argument("--worker-trials", type=int, default=8)
    parser.add_argument("--worker-steps", type=int, default=400)
    parser.add_argument("--quick", action="store_true", help="a smoke test: a tiny budget, far too small for the bars")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "tune.json"))
    args = parser.parse_args()
    if args.quick:
        args.study_minutes, args.trial_seconds, args.worker_trials, args.val_every = 1.0, 12, 4, 20
    os.environ.setdefault("GENLAB_DATA_DIRS", str(ROOT.parent / "shared" / "data"))
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    result: dict = {"machine": machine(), "budget": {}, "genlab": {}, "anchor": {}, "bars": {},
                    "command": "python " + shlex.join(["bench/tune.py", *sys.argv[1:]]), "quick": args.quick}
    for name, part in (("gpt", gpt_part), ("workers", workers_part)):
        if name in parts:
            out = part(args)
            for key in ("genlab", "anchor", "budget"):
                result[key][name] = out[key]
            result["bars"][name] = out["bar"]
            print(json.dumps({name: out}, indent=1), flush=True)
    out = Path(args.out)
    if out.exists() and set(parts) != {"gpt", "workers"}:  # a part re-run: keep the other part's figures
        previous = json.loads(out.read_text())
        for key in ("genlab", "anchor", "budget", "bars"):
            result[key] = {**previous.get(key, {}), **result[key]}
        result["commands"] = {**previous.get("commands", {}), **{p: result["command"] for p in parts}}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
