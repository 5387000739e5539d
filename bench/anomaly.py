"""Benchmark: anomaly detection from genlab's generative models against PyOD's detectors (issue 21), side by side.

    python bench/anomaly.py                                   # the real run -> bench/results/anomaly.json
    python bench/anomaly.py --trials 2 --steps 50 --out /tmp/anomaly_smoke.json   # smoke test

`wbc`: ODDS-WBC rebuilt from scikit-learn's breast-cancer table (the ODDS recipe: the 357 benign rows
and 21 malignant ones drawn at random, 30 numeric features). Each of `--trials` trials draws its own 21
malignant rows and a stratified 60/40 split with the trial's seed; every detector is fitted on the
training 60% without labels (anomalies included, as in ODDS) and scores the other 40%, ROC AUC against
the labels. PyOD (`pip install pyod`, the benchmark's requirement, not genlab's) fits on the features
standardised with the training part's mean and deviation, as its benchmark does; genlab trains its
tabular model on the raw table, as a user would (its layout does its own normalisation).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import genlab  # noqa: E402


def wbc(trial: int):
    """(train frame, train labels, test frame, test labels) of one ODDS-WBC trial; 1 marks malignant."""
    import pandas as pd
    from sklearn.datasets import load_breast_cancer
    from sklearn.model_selection import train_test_split

    raw = load_breast_cancer()
    x, y = raw.data, 1 - raw.target  # scikit-learn's target is 1 for benign
    rng = np.random.default_rng(trial)
    keep = np.concatenate([np.flatnonzero(y == 0), rng.choice(np.flatnonzero(y == 1), 21, replace=False)])
    names = [n.replace(" ", "_") for n in raw.feature_names]
    frame = pd.DataFrame(x[keep], columns=names)
    labels = y[keep]
    a, b, la, lb = train_test_split(frame, labels, test_size=0.4, stratify=labels, random_state=trial)
    return a.reset_index(drop=True), la, b.reset_index(drop=True), lb


def pyod_detectors(seed: int) -> dict:
    from pyod.models.hbos import HBOS
    from pyod.models.iforest import IForest
    from pyod.models.knn import KNN
    from pyod.models.vae import VAE

    return {"VAE": lambda: VAE(epoch_num=30, verbose=0, random_state=seed),
            "IForest": lambda: IForest(random_state=seed), "HBOS": lambda: HBOS(), "KNN": lambda: KNN()}


def genlab_scores(kind: str, train, test, args, seed: int) -> np.ndarray:
    with tempfile.TemporaryDirectory(prefix="genlab-anomaly-") as folder:
        table = Path(folder) / "train.csv"
        train.to_csv(table, index=False)
        model = {"kind": kind, **json.loads(args.genlab_model)}
        genlab.train("tabular", str(table), Path(folder) / "run", model=model, max_steps=args.steps,
                     batch_size=args.batch_size, progress=False, seed=seed, threads=args.threads, holdout=0)
        return genlab.load(Path(folder) / "run").anomaly_score(test).numpy()


def part_wbc(args) -> dict:
    from sklearn.metrics import roc_auc_score

    aucs: dict[str, list[float]] = {}
    seconds: dict[str, float] = {}
    for trial in range(args.trials):
        train, _, test, labels = wbc(trial)
        mean, std = train.to_numpy().mean(0), train.to_numpy().std(0) + 1e-12
        for name, make in pyod_detectors(trial).items():
            start = time.perf_counter()
            detector = make()
            detector.fit((train.to_numpy() - mean) / std)
            score = detector.decision_function((test.to_numpy() - mean) / std)
            seconds[f"pyod_{name}"] = seconds.get(f"pyod_{name}", 0) + time.perf_counter() - start
            aucs.setdefault(f"pyod_{name}", []).append(roc_auc_score(labels, score))
        for kind in args.genlab.split(","):
            start = time.perf_counter()
            score = genlab_scores(kind, train, test, args, trial)
            seconds[f"genlab_{kind}"] = seconds.get(f"genlab_{kind}", 0) + time.perf_counter() - start
            aucs.setdefault(f"genlab_{kind}", []).append(roc_auc_score(labels, score))
        print(f"wbc trial {trial}: " + ", ".join(f"{k} {v[-1]:.3f}" for k, v in aucs.items()), flush=True)
    return {name: {"mean_auroc": round(statistics.mean(v), 4), "std": round(statistics.pstdev(v), 4),
                   "per_trial": [round(a, 4) for a in v], "seconds": round(seconds[name], 1)}
            for name, v in aucs.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parts", default="wbc")
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--genlab", default="tvae", help="genlab tabular kinds to score with")
    parser.add_argument("--genlab-model", default='{"hidden": 64, "latent_dim": 8}')
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "anomaly.json"))
    args = parser.parse_args()
    out = Path(args.out)
    results = json.loads(out.read_text()) if out.exists() else {}
    results["machine"] = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()}
    try:
        from importlib.metadata import version

        results["pyod_version"] = version("pyod")
    except Exception:
        results["pyod_version"] = None
    for part, run in (("wbc", part_wbc),):
        if part in args.parts.split(","):
            started = time.perf_counter()
            results[part] = run(args)
            results[part] = {"command": "python bench/anomaly.py " + " ".join(sys.argv[1:]),
                             "part_seconds": round(time.perf_counter() - started, 1), "detectors": results[part]}
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(results, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
