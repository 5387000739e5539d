"""Benchmark: anomaly detection from genlab's generative models against PyOD's detectors (issue 21), side by side.

    python bench/anomaly.py --threads 1                       # both parts -> bench/results/anomaly.json
    python bench/anomaly.py --parts wbc --trials 2 --steps 50 --out /tmp/anomaly_smoke.json   # smoke test
    python bench/anomaly.py --parts fmnist --classes 0 --seconds 5 --test-images 200 --out /tmp/fmnist_smoke.json

`wbc`: ODDS-WBC rebuilt from scikit-learn's breast-cancer table (the ODDS recipe: the 357 benign rows
and 21 malignant ones drawn at random, 30 numeric features). Each of `--trials` trials draws its own 21
malignant rows and a stratified 60/40 split with the trial's seed; every detector is fitted on the
training 60% without labels (anomalies included, as in ODDS) and scores the other 40%, ROC AUC against
the labels. PyOD (`pip install pyod`, the benchmark's requirement, not genlab's) fits on the features
standardised with the training part's mean and deviation, as its benchmark does; genlab trains its
tabular model on the raw table, as a user would (its layout does its own normalisation).

`fmnist`: one-class Fashion-MNIST. For each class of `--classes`, genlab's image families (`--families`, vae
and diffusion) train on that class's training images alone (written once as a folder of PNGs under `--work`,
which genlab's folder loader reads as a user's data: it keeps 90% for training), each for `--seconds` of
wall clock, and score the test images (all 10,000, or a class-stratified `--test-images`) with their
`anomaly_score`; AUROC with the class as normal and the other nine as anomalies. PyOD's AutoEncoder, VAE (each
`--pyod-epochs` epochs), KNN and IForest fit on the same training images, flattened and scaled to [0, 1], and
score the same test images. The diffusion bound costs 2 x `--diffusion-steps` + 2 network passes an image, so
that family scores a stratified `--diffusion-test-images` of them, and every detector's AUROC on that subset is
recorded beside (`on_the_diffusion_subset`). `genlab_diffusion_png` subtracts each image's PNG length in bits
per pixel from the diffusion bound (Serra et al. 2020's input-complexity correction, a likelihood ratio against a
universal compressor), `genlab_diffusion_coarse` keeps the bound's terms below `--diffusion-max-log-snr` (the
global shape; `Diffusion.anomaly_score(max_log_snr=)`); the VAE's score removes its own complexity term
(`VAE.anomaly_score`).
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
from typing import Any

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
    from pyod.models.copod import COPOD
    from pyod.models.ecod import ECOD
    from pyod.models.hbos import HBOS
    from pyod.models.iforest import IForest
    from pyod.models.knn import KNN
    from pyod.models.vae import VAE

    return {"VAE": lambda: VAE(epoch_num=30, verbose=0, random_state=seed),
            "IForest": lambda: IForest(random_state=seed), "HBOS": lambda: HBOS(), "KNN": lambda: KNN(),
            "COPOD": lambda: COPOD(), "ECOD": lambda: ECOD()}


def genlab_scores(kind: str, train, test, args, seed: int) -> np.ndarray:
    """Train a tabular model of `kind` ("copula:tail": a copula scored by its tail probabilities) on the rows."""
    kind, _, score = kind.partition(":")
    with tempfile.TemporaryDirectory(prefix="genlab-anomaly-") as folder:
        table = Path(folder) / "train.csv"
        train.to_csv(table, index=False)
        model = {"kind": kind, **json.loads(args.genlab_model)}
        genlab.train("tabular", str(table), Path(folder) / "run", model=model, max_steps=args.steps,
                     batch_size=args.batch_size, progress=False, seed=seed, threads=args.threads, holdout=0)
        return genlab.load(Path(folder) / "run").anomaly_score(test, **({"score": score} if score else {})).numpy()


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
            name = f"genlab_{kind.replace(':', '_')}"
            seconds[name] = seconds.get(name, 0) + time.perf_counter() - start
            aucs.setdefault(name, []).append(roc_auc_score(labels, score))
        print(f"wbc trial {trial}: " + ", ".join(f"{k} {v[-1]:.3f}" for k, v in aucs.items()), flush=True)
    return {name: {"mean_auroc": round(statistics.mean(v), 4), "std": round(statistics.pstdev(v), 4),
                   "per_trial": [round(a, 4) for a in v], "seconds": round(seconds[name], 1)}
            for name, v in aucs.items()}


# -- fmnist: one-class Fashion-MNIST ------------------------------------------------------------

FMNIST_MODELS = {  # small models that train many epochs of one class in a minute on 2 cores and score 10,000 fast
    "vae": {"latent_dim": 16},  # 16 rather than the default 32: +0.003-0.005 AUROC on sandal, bag and pullover
    "diffusion": {"widths": (16, 32, 32), "blocks": (1, 1, 1), "attention": (False, False, True)},
}
FMNIST_TRAINING = {  # a few hundred steps: the learning rate must reach its peak and decay within them
    "vae": {"warmup_steps": 20},
    "diffusion": {"lr": 2e-3, "batch_size": 64, "warmup_steps": 20},
}


def class_folder(images: np.ndarray, folder: Path) -> Path:
    """The images (N, 1, H, W) as PNG files in `folder`, written once: the data a user would point genlab at."""
    from PIL import Image

    if not (folder / "done").exists():
        folder.mkdir(parents=True, exist_ok=True)
        for i, image in enumerate(images):
            Image.fromarray(image[0]).save(folder / f"{i:05d}.png")
        (folder / "done").write_text(str(len(images)))
    return folder


def png_bits(images: np.ndarray) -> np.ndarray:
    """Each image's length as a PNG at the highest compression, in bits per pixel: the complexity L(x) of
    Serra et al. 2020 (ICLR), "Input complexity and out-of-distribution detection", with PNG as the compressor."""
    import io

    from PIL import Image

    out = []
    for image in images:
        buffer = io.BytesIO()
        Image.fromarray(image[0]).save(buffer, format="PNG", optimize=True, compress_level=9)
        out.append(8 * buffer.tell() / image.size)
    return np.array(out)


def stratified(labels: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """Indices of n test images, as many of each class (all of them when n covers the split)."""
    if n >= len(labels):
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    return np.sort(np.concatenate([rng.choice(np.flatnonzero(labels == c), n // len(classes), replace=False)
                                   for c in classes]))


def genlab_image_scores(family: str, folder: Path, run: Path, test: np.ndarray, args) -> dict[str, Any]:
    """Train `family` on the folder for --seconds, then score the test images; scores, seconds, steps."""
    import torch

    from genlab.files import load_torch_file

    start = time.perf_counter()
    model = {**FMNIST_MODELS[family], **json.loads(getattr(args, f"{family}_model"))}
    options = {**FMNIST_TRAINING[family], **json.loads(getattr(args, f"{family}_train"))}
    genlab.train(family, str(folder), run, model=model, max_time=args.seconds, max_steps=10**7, holdout=0,
                 sample_every=10**9, progress=False, seed=0, threads=args.threads, **options)
    trained = time.perf_counter()
    loaded = genlab.load(run / "model")
    options = {"vae": {"k": args.vae_k}, "diffusion": {"steps": args.diffusion_steps}}[family]
    images = torch.from_numpy(test)
    scores = np.concatenate([loaded.anomaly_score(images[i : i + 500], **options).numpy()
                             for i in range(0, len(images), 500)])
    extra = {}
    if family == "diffusion":  # the bound's coarse terms alone: the same model, the noise levels below the threshold
        extra["coarse"] = np.concatenate([
            loaded.anomaly_score(images[i : i + 500], **options, max_log_snr=args.diffusion_max_log_snr).numpy()
            for i in range(0, len(images), 500)])
    steps = int(load_torch_file(run / "checkpoints" / "last.ckpt")["global_step"])
    record = json.loads((run / "data_report.json").read_text())
    return {"scores": scores, **extra, "train_seconds": trained - start, "score_seconds": time.perf_counter() - trained,
            "steps": steps, "train_images": record["counts"]["train"], "parameters": loaded.num_parameters()}


def pyod_image_detectors(args, seed: int) -> dict:
    from pyod.models.auto_encoder import AutoEncoder
    from pyod.models.iforest import IForest
    from pyod.models.knn import KNN
    from pyod.models.vae import VAE

    return {"AutoEncoder": lambda: AutoEncoder(epoch_num=args.pyod_epochs, verbose=0, random_state=seed),
            "VAE": lambda: VAE(epoch_num=args.pyod_epochs, verbose=0, random_state=seed),
            "KNN": lambda: KNN(), "IForest": lambda: IForest(random_state=seed)}


def part_fmnist(args) -> dict:
    import torch
    from sklearn.metrics import roc_auc_score

    from genlab.data import load_data

    if args.threads:
        torch.set_num_threads(args.threads)
    data = load_data("fashion-mnist")
    keep = stratified(data.test_y, args.test_images)
    test_x, test_y = data.test_x[keep], data.test_y[keep]
    test_flat = test_x.reshape(len(test_x), -1) / 255
    complexity = png_bits(test_x)
    classes = [int(c) for c in args.classes.split(",")] if args.classes else list(range(len(data.classes)))
    families = [f for f in args.families.split(",") if f]
    pyod = [d for d in args.pyod.split(",") if d]
    if pyod:
        try:
            detectors = pyod_image_detectors(args, 0)
        except ImportError:
            print("PyOD is not installed: its detectors are skipped (pip install pyod)", flush=True)
            pyod = []
    work = Path(args.work or tempfile.mkdtemp(prefix="genlab-fmnist-"))
    load_at_start = os.getloadavg()
    aucs: dict[str, dict[str, float]] = {}
    seconds: dict[str, float] = {}
    details: dict[str, dict] = {}

    def record(name: str, cls: int, score: np.ndarray, spent: float, where: np.ndarray | None = None) -> None:
        labels = test_y if where is None else test_y[where]
        aucs.setdefault(name, {})[data.classes[cls]] = roc_auc_score(labels != cls, score)
        seconds[name] = seconds.get(name, 0) + spent
        if where is None:  # every detector on the diffusion family's subset too, to read its figure against
            aucs.setdefault(f"{name}@subset", {})[data.classes[cls]] = roc_auc_score(labels[subset] != cls,
                                                                                     score[subset])

    # the diffusion bound costs 2 x steps + 2 network passes an image: on 2 CPU cores it scores a stratified subset
    subset = np.isin(np.arange(len(test_x)), stratified(test_y, args.diffusion_test_images))
    for cls in classes:
        train = data.train_x[data.train_y == cls][: args.train_images]
        folder = class_folder(train, work / f"class{cls}-{len(train)}")
        for family in families:
            where = subset if family == "diffusion" else None
            out = genlab_image_scores(family, folder, work / f"class{cls}-{family}",
                                      test_x if where is None else test_x[where], args)
            spent = out["train_seconds"] + out["score_seconds"]
            record(f"genlab_{family}", cls, out["scores"], spent, where)
            if family == "diffusion":  # the VAE's score has its complexity term removed already
                record(f"genlab_{family}_png", cls, out["scores"] - complexity[where], spent, where)
                record(f"genlab_{family}_coarse", cls, out["coarse"], spent, where)
            np.save(work / f"class{cls}-{family}-scores.npy", out["scores"])
            details.setdefault(f"genlab_{family}", {})[data.classes[cls]] = {
                k: round(v, 1) if isinstance(v, float) else v for k, v in out.items() if k not in ("scores", "coarse")}
        flat = train.reshape(len(train), -1) / 255
        for name in pyod:
            start = time.perf_counter()
            detector = detectors[name]()
            detector.fit(flat)
            record(f"pyod_{name}", cls, detector.decision_function(test_flat), time.perf_counter() - start)
        print(f"fmnist class {cls} ({data.classes[cls]}): "
              + ", ".join(f"{k} {v[data.classes[cls]]:.3f}" for k, v in aucs.items() if "@" not in k), flush=True)
    return {
        "test_images": len(test_x), "diffusion_test_images": int(subset.sum()),
        "classes": [data.classes[c] for c in classes], "seconds_per_genlab_model": args.seconds,
        "pyod_epochs": args.pyod_epochs, "vae_k": args.vae_k, "diffusion_steps": args.diffusion_steps,
        "diffusion_max_log_snr": args.diffusion_max_log_snr,
        "genlab_models": {f: {**FMNIST_MODELS[f], **json.loads(getattr(args, f"{f}_model"))} for f in families},
        "genlab_training": {f: {**FMNIST_TRAINING[f], **json.loads(getattr(args, f"{f}_train"))} for f in families},
        "threads": torch.get_num_threads(), "torch_version": torch.__version__,
        "load_average": {"start": [round(v, 2) for v in load_at_start],  # the machine is shared: how busy it was
                         "end": [round(v, 2) for v in os.getloadavg()]},
        "detectors": {name: {"mean_auroc": round(statistics.mean(v.values()), 4),
                             "per_class": {k: round(a, 4) for k, a in v.items()}, "seconds": round(seconds[name], 1)}
                      for name, v in aucs.items() if "@" not in name},
        "on_the_diffusion_subset": {name.split("@")[0]: {"mean_auroc": round(statistics.mean(v.values()), 4),
                                                         "per_class": {k: round(a, 4) for k, a in v.items()}}
                                    for name, v in aucs.items() if "@" in name},
        "genlab_runs": details,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parts", default="wbc,fmnist", help="wbc, fmnist or both")
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--genlab", default="copula:tail,copula,tvae,gpt",
                        help="wbc: genlab tabular kinds to score with (KIND:tail scores by tail probabilities)")
    parser.add_argument("--genlab-model", default='{"hidden": 64, "latent_dim": 8}')
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--classes", default="", help="fmnist: the normal classes, e.g. 0,3 (default all ten)")
    parser.add_argument("--seconds", type=float, default=60, help="fmnist: training wall clock per genlab model")
    parser.add_argument("--families", default="vae,diffusion", help="fmnist: genlab families to score with")
    parser.add_argument("--vae-model", default="{}", help="fmnist: VAE config overrides (JSON)")
    parser.add_argument("--diffusion-model", default="{}", help="fmnist: diffusion config overrides (JSON)")
    parser.add_argument("--vae-train", default="{}", help="fmnist: the VAE's training overrides (JSON)")
    parser.add_argument("--diffusion-train", default="{}", help="fmnist: the diffusion model's training overrides")
    parser.add_argument("--vae-k", type=int, default=8, help="fmnist: the VAE's importance samples per image")
    parser.add_argument("--diffusion-steps", type=int, default=4, help="fmnist: the diffusion bound's timesteps")
    parser.add_argument("--diffusion-max-log-snr", type=float, default=0.0,
                        help="fmnist: genlab_diffusion_coarse keeps the bound's terms below this log SNR")
    parser.add_argument("--pyod", default="AutoEncoder,VAE,KNN,IForest", help="fmnist: PyOD detectors ('' for none)")
    parser.add_argument("--pyod-epochs", type=int, default=20, help="fmnist: epochs of PyOD's AutoEncoder and VAE")
    parser.add_argument("--test-images", type=int, default=10000, help="fmnist: class-stratified test images")
    parser.add_argument("--diffusion-test-images", type=int, default=1000,
                        help="fmnist: the stratified part of those the diffusion family scores (all: 10000)")
    parser.add_argument("--train-images", type=int, default=None, help="fmnist: at most this many per class")
    parser.add_argument("--work", default=None, help="fmnist: keep the class folders, runs and scores here")
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
    for part, run in (("wbc", part_wbc), ("fmnist", part_fmnist)):
        if part in args.parts.split(","):
            started = time.perf_counter()
            measured = run(args)  # the detectors' figures, or a dict holding them under "detectors" with more
            results[part] = {"command": "python bench/anomaly.py " + " ".join(sys.argv[1:]),
                             "part_seconds": round(time.perf_counter() - started, 1),
                             **(measured if "detectors" in measured else {"detectors": measured})}
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(results, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
