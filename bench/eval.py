"""Benchmark: does genlab's evaluation layer measure what it claims, and how fast?

On Fashion-MNIST it records, in bench/results/eval.json:

1. the reference classifier's test accuracy (bar: >= 92%) and training time;
2. a sanity table: FD-genlab, KID-genlab and precision/recall/density/coverage for
   "generators" whose quality is known: the training images themselves (as good as it
   gets), the same images blurred or noised at growing strengths (monotonically worse),
   uniform noise (as bad as it gets), and a collapsed generator that only knows two classes
   (good precision, poor recall and coverage, a lopsided class histogram);
3. the time of one full metric pass over 10,000 real and 10,000 generated 28x28 images
   (features, FD, KID, PRDC, class histogram; bar: < 120 s), with its parts.

The real set is the 10,000 test images; every "generator" draws 10,000 images from the
training split, which the classifier was trained on, exactly as generated samples would be
compared with the test split.

    GENLAB_HOME=/tmp/genlab-home python bench/eval.py                      # -> bench/results/eval.json
    python bench/eval.py --n 2000 --out /tmp/eval_small.json               # quicker look
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch
from scipy.ndimage import gaussian_filter

from genlab.data import load_data
from genlab.metrics.images import sample_metrics
from genlab.metrics.reference import reference_classifier

KEYS = ["fd_genlab", "kid_genlab", "precision", "recall", "density", "coverage", "classifier_score",
        "class_histogram_tv"]


def blur(images: np.ndarray, sigma: float) -> np.ndarray:
    x = images.astype(np.float32) / 255
    return np.clip(gaussian_filter(x, sigma=(0, 0, sigma, sigma)), 0, 1)


def noise(images: np.ndarray, std: float, rng: np.random.Generator) -> np.ndarray:
    x = images.astype(np.float32) / 255
    return np.clip(x + rng.normal(0, std, x.shape).astype(np.float32), 0, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="fashion-mnist")
    parser.add_argument("--n", type=int, default=10_000, help="real and generated images per comparison")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="bench/results/eval.json")
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    data = load_data(args.data)
    start = time.time()
    reference = reference_classifier(data)
    reference_seconds = time.time() - start
    real = data.test_x[: args.n]
    pool = data.train_x[rng.permutation(len(data.train_x))[: args.n]]

    # 3. the timed pass, on the cleanest comparison
    timed_start = time.time()
    clean = sample_metrics(reference, real, pool)
    timed = {
        "total_seconds": round(time.time() - timed_start, 2),
        "feature_seconds": round(clean["feature_seconds"], 2),
        "metric_seconds": round(clean["metric_seconds"], 2),
        "real_examples": len(real),
        "fake_examples": len(pool),
    }
    print(f"full metric pass over {len(real):,} + {len(pool):,} images: {timed['total_seconds']:.1f} s")

    # 2. the sanity table
    rows = [{"generator": "training images (real)", **{k: clean[k] for k in KEYS}}]
    cases = [(f"blur sigma={s}", blur(pool, s)) for s in (0.5, 1.0, 1.5, 2.0)]
    cases += [(f"gaussian noise std={s}", noise(pool, s, rng)) for s in (0.05, 0.1, 0.2, 0.4)]
    cases.append(("uniform noise", rng.random(pool.shape, dtype=np.float32)))
    two = np.flatnonzero(np.isin(data.train_y, [0, 1]))  # T-shirt/top and Trouser only
    cases.append(("collapsed: two classes only", data.train_x[rng.choice(two, args.n)]))
    for name, images in cases:
        m = sample_metrics(reference, real, images)
        rows.append({"generator": name, **{k: m[k] for k in KEYS}})
        print(f"{name:<30} " + "  ".join(f"{k} {m[k]:.4g}" for k in KEYS))

    fd = {r["generator"]: r["fd_genlab"] for r in rows}
    checks = {
        "reference_accuracy_at_least_92": reference.accuracy >= 0.92,
        "fd_monotone_in_blur": all(
            a < b
            for a, b in zip(
                [fd["training images (real)"]] + [fd[f"blur sigma={s}"] for s in (0.5, 1.0, 1.5)],
                [fd[f"blur sigma={s}"] for s in (0.5, 1.0, 1.5, 2.0)],
            )
        ),
        "fd_monotone_in_noise": all(
            a < b
            for a, b in zip(
                [fd["training images (real)"]] + [fd[f"gaussian noise std={s}"] for s in (0.05, 0.1, 0.2)],
                [fd[f"gaussian noise std={s}"] for s in (0.05, 0.1, 0.2, 0.4)],
            )
        ),
        "noise_fd_over_100x_real": fd["uniform noise"] > 100 * fd["training images (real)"],
        "collapse_recall_below_half_of_real": rows[-1]["recall"] < 0.5 * rows[0]["recall"],
        "metric_pass_under_120_s": timed["total_seconds"] < 120,
    }
    result = {
        "machine": {
            "cores": len(os.sched_getaffinity(0)),
            "torch_threads": torch.get_num_threads(),
            "platform": platform.platform(),
            "torch_version": torch.__version__,
        },
        "data": args.data,
        "reference_classifier": {
            "test_accuracy": reference.accuracy,
            "test_examples": reference.meta["test_examples"],
            "train_seconds": reference.meta["train_seconds"],
            "epochs": reference.meta["epochs"],
            "feature_dim": reference.feature_dim,
            "trained_in_this_run": reference.trained,
            "seconds_in_this_run": round(reference_seconds, 1),
            "config": reference.meta["config"],
        },
        "timing_10k": timed,
        "sanity": rows,
        "checks": checks,
        "command": f"python bench/eval.py --n {args.n} --seed {args.seed}",
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(json.dumps(checks, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
