"""Benchmark: genlab's table families against SDV's synthesizers on UCI Adult (issue 21), side by side.

    python bench/tables.py                                      # the real run -> bench/results/tables.json
    python bench/tables.py --sdv tvae --sdv-epochs 2 --rows 3000 --out /tmp/tables_smoke.json   # smoke test
    python bench/tables.py --sdv "" --rows 1500 --budget 5 --out /tmp/t.json   # genlab alone (tests/test_bench.py)

The same data for everyone: Adult's official split from `genlab.data.load_data("adult")` (32,561
training rows, 16,281 test rows, missing cells kept). Each synthesizer is fitted on the training rows
and asked for as many synthetic rows; everything is scored by the same code, genlab.metrics.tables:

- quality: SDMetrics' quality report (column shapes and column pair trends), as genlab computes it;
  `sdmetrics`' own QualityReport is run on the same tables as a check of that implementation;
- utility: train on synthetic, test on the real test rows (TSTR), HistGradientBoosting predicting
  `income`; the same classifier trained on the real training rows is the ceiling;
- C2ST AUC (0.5: real and synthetic cannot be told apart) and privacy (distance to the closest
  training record against the real test rows', exact copies).

SDV (`pip install sdv`, the benchmark's own requirement, not genlab's) runs first: TVAE for
`--sdv-epochs` epochs, GaussianCopula, CTGAN for `--ctgan-epochs`. genlab's TVAE, TabDDPM and GPT then each get the
wall clock SDV's TVAE fit took, and genlab's CTGAN the one SDV's CTGAN took: a one-step genlab run measures what
is not training (loading, the layout's mixtures, start-up, saving), and the rest is `--max-time`, so the whole
`genlab.train` call takes about as long as SDV's `fit`. One process, one after the other, on this machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import genlab  # noqa: E402
from genlab.data import load_data  # noqa: E402
from genlab.metrics import tables as tm  # noqa: E402

TARGET = "income"


def score(name: str, synthetic, data, seconds: float, extra: dict | None = None, check_sdmetrics: bool = True) -> dict:
    quality = tm.quality(data.test, synthetic, data.columns)
    out = {"fit_seconds": round(seconds, 1), "quality": round(quality["quality"], 4),
           "column_shapes": round(quality["column_shapes"], 4),
           "column_pair_trends": round(quality["column_pair_trends"], 4),
           "per_column": {k: round(v, 4) for k, v in quality["per_column"].items()},
           "tstr": {k: round(v, 4) for k, v in tm.tstr(synthetic, data.test, data.columns, TARGET).items()},
           "c2st_auc": round(tm.c2st(data.test, synthetic, data.columns), 4),
           "privacy": {k: round(v, 4) for k, v in tm.privacy(data.train, data.test, synthetic, data.columns).items()},
           **(extra or {})}
    if check_sdmetrics:
        out["sdmetrics_quality"] = sdmetrics_quality(data.test, synthetic, data)
    check = (out.get("sdmetrics_quality") or {}).get("quality")
    print(f"{name}: {seconds:.0f} s, quality {out['quality']:.3f} (sdmetrics {check}), "
          f"TSTR AUC {out['tstr']['auc']:.3f}, C2ST {out['c2st_auc']:.3f}", flush=True)
    return out


def sdmetrics_quality(real, synthetic, data) -> dict | None:
    """sdmetrics' own QualityReport on the same tables (real: the test rows), as a check of genlab's."""
    try:
        from sdmetrics.reports.single_table import QualityReport
    except ImportError:
        return None
    metadata = {"columns": {}}
    for c in data.columns:
        if c.kind == "id":
            metadata["columns"][c.name] = {"sdtype": "id"}
        elif c.kind == "datetime":
            metadata["columns"][c.name] = {"sdtype": "datetime", "datetime_format": c.datetime_format}
        else:
            metadata["columns"][c.name] = {"sdtype": "numerical" if c.kind == "numeric" else "categorical"}
    report = QualityReport()
    report.generate(real, synthetic[real.columns], metadata, verbose=False)
    properties = report.get_properties()
    return {"quality": round(float(report.get_score()), 4),
            **{row["Property"]: round(float(row["Score"]), 4) for _, row in properties.iterrows()},
            "column_shapes_per_column": {row["Column"]: round(float(row["Score"]), 4)
                                         for _, row in report.get_details("Column Shapes").iterrows()}}


def sdv_metadata(data):
    from sdv.metadata import Metadata

    return Metadata.detect_from_dataframes({"adult": data.train})


def run_sdv(kind: str, data, args) -> tuple[object, float]:
    from sdv.single_table import CTGANSynthesizer, GaussianCopulaSynthesizer, TVAESynthesizer

    metadata = sdv_metadata(data)
    if kind == "tvae":
        synthesizer = TVAESynthesizer(metadata, epochs=args.sdv_epochs, enable_gpu=False)
    elif kind == "ctgan":
        synthesizer = CTGANSynthesizer(metadata, epochs=args.ctgan_epochs, enable_gpu=False)
    else:
        synthesizer = GaussianCopulaSynthesizer(metadata)
    start = time.perf_counter()
    synthesizer.fit({"adult": data.train})  # SDV 2 takes and returns {table name: DataFrame}
    seconds = time.perf_counter() - start
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    return synthesizer.sample(num_rows=len(data.train))["adult"], seconds


def run_genlab(kind: str, data_spec: str, data, seconds: float, args) -> tuple[object, float, dict]:
    """genlab's `kind` trained so that its whole `genlab.train` call (data, layout fit, start-up, training, saving)
    takes `seconds`: a one-step run measures what is not training, and the rest is the training budget."""
    def train(folder: Path, **budget) -> float:
        start = time.perf_counter()
        train_options = {**json.loads(args.kind_train).get(kind, {}), **json.loads(args.genlab_train)}
        genlab.train("tabular", data_spec, folder, model={"kind": kind, **json.loads(args.genlab_model)},
                     progress=False, seed=args.seed, threads=args.threads, **budget, **train_options)
        return time.perf_counter() - start

    run = Path(tempfile.mkdtemp(prefix=f"genlab-tables-{kind}-"))
    if kind == "copula":  # fitted in closed form: no budget to give
        fixed = took = train(run)
    else:
        fixed = train(Path(tempfile.mkdtemp(prefix=f"genlab-tables-{kind}-fixed-")), max_steps=1)
        took = train(run, max_time=f"{max(1, int(seconds - fixed))}s", max_steps=10**7)
    model = genlab.load(run)
    start = time.perf_counter()
    rows = model.sample_rows(len(data.train), generator=torch.Generator().manual_seed(args.seed))
    sample_seconds = time.perf_counter() - start
    log = run / "metrics.jsonl"
    steps = max((json.loads(line).get("step", 0) for line in log.read_text().splitlines()), default=0) \
        if log.exists() else 0
    return rows, took, {"steps": steps, "parameters": model.num_parameters(), "run": str(run),
                        "fixed_seconds": round(fixed, 1), "sample_seconds": round(sample_seconds, 1),
                        "training_budget_seconds": max(1, int(seconds - fixed))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sdv", default="tvae,copula,ctgan", help="SDV synthesizers to run")
    parser.add_argument("--sdv-epochs", type=int, default=30, help="SDV TVAE's epochs (the issue's measurement)")
    parser.add_argument("--ctgan-epochs", type=int, default=10)
    parser.add_argument("--genlab", default="tvae,ddpm,ctgan,gpt,copula",
                        help="genlab kinds: tvae, ddpm and gpt train for SDV's TVAE's fit time, ctgan for SDV's "
                             "CTGAN's, copula is fitted in closed form")
    parser.add_argument("--kind-train", default='{"ddpm": {"lr": 3e-3, "batch_size": 1024}}',
                        help="JSON: training overrides per genlab kind (docs/tables.md says how they were chosen)")
    parser.add_argument("--genlab-model", default="{}", help="JSON overrides of the genlab model config")
    parser.add_argument("--genlab-train", default="{}", help="JSON overrides of genlab's training config")
    parser.add_argument("--rows", type=int, default=None, help="use only this many training rows (smoke tests)")
    parser.add_argument("--budget", type=float, default=None,
                        help="genlab's seconds when SDV's TVAE does not run (default: its fit time, else 60)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "tables.json"))
    args = parser.parse_args()
    if args.threads:  # SDV's torch too, so that both sides get the same cores
        torch.set_num_threads(args.threads)

    data = load_data("adult")
    data_spec = "adult"
    if args.rows:  # a smaller training table, written as a folder with the same test rows
        folder = Path(tempfile.mkdtemp(prefix="adult-small-"))
        data.train.iloc[: args.rows].to_csv(folder / "train.csv", index=False)
        data.test.to_csv(folder / "test.csv", index=False)
        data_spec = str(folder)
        data = load_data(data_spec)
    results = {"machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                           "torch": torch.__version__},
               "command": "python bench/tables.py " + " ".join(sys.argv[1:]),
               "data": {"train_rows": len(data.train), "test_rows": len(data.test), "target": TARGET},
               "real": score("real training rows", data.train, data, 0.0)}
    try:
        results["sdv_version"] = version("sdv")
    except Exception:
        results["sdv_version"] = None
    sdv_seconds = {}
    for kind in filter(None, args.sdv.split(",")):
        rows, seconds = run_sdv(kind, data, args)
        results[f"sdv_{kind}"] = score(f"SDV {kind}", rows, data, seconds)
        sdv_seconds[kind] = seconds
    for kind in args.genlab.split(","):
        # each kind at its anchor's wall clock: ctgan at SDV's CTGAN's, the others at SDV's TVAE's
        budget = sdv_seconds.get(kind if kind == "ctgan" else "tvae") or sdv_seconds.get("tvae") or args.budget or 60.0
        rows, seconds, extra = run_genlab(kind, data_spec, data, budget, args)
        results[f"genlab_{kind}"] = score(f"genlab {kind}", rows, data, seconds, {**extra, "budget_seconds":
                                                                                   round(budget, 1)})
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
