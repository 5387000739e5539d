"""`genlab eval RUN`: every metric that applies to a run's family, metrics.json, and a report a person reads.

What applies is read off the model, not a list of families:

- a model with `log_likelihood` (VAE) gets the importance-weighted test NLL, ELBO and bits/dim;
- an image model that samples from nothing gets n samples, timed (samples/s), scored against
  the test split in the reference classifier's feature space (FD-genlab, KID-genlab,
  precision/recall/density/coverage, classifier score, class histogram; class accuracy for
  class-conditional samples), and, given an Inception weights file, standard FID/KID/IS;
- a family's own `eval_metrics` adds what only it can measure (text likelihood and text
  metrics for language models, PSNR/SSIM for image translation).

The protocol is fixed by its defaults (n=10,000 samples, seed 0, all test images, k=200),
so two runs evaluated with defaults compare; metrics.json records every setting used.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from genlab.errors import GenlabError

REFERENCE_NOTE = ("FD-genlab and KID-genlab use the formulas of FID and KID on the features of genlab's "
                  "reference classifier for this dataset, not Inception-v3: compare them between genlab runs "
                  "on the same data, never with published FID/KID values.")


def train_seconds(history: list[dict[str, float]]) -> float | None:
    """Training wall-clock over all sessions of a run, from metrics.jsonl's per-session clock.

    Each session's logger restarts its clock at 0, so a drop in `time` starts a new session.
    """
    total, last = 0.0, None
    for record in history:
        t = record.get("time")
        if t is None:
            continue
        if last is not None and t < last:
            total += last
        last = t
    return None if last is None else round(total + last, 1)


def generate_images(model, n: int, seed: int, labels: torch.Tensor | None = None, batch_size: int = 500,
                    progress: bool = True) -> tuple[torch.Tensor, float]:
    """n samples as uint8 (n, C, H, W) and the seconds it took, from one generator seeded by `seed`."""
    generator = torch.Generator().manual_seed(seed)
    model.sample(2, labels=None if labels is None else labels[:2], generator=torch.Generator().manual_seed(seed))  # warm-up
    chunks = []
    start = time.perf_counter()
    for i in tqdm(range(0, n, batch_size), desc=f"sampling {n}", disable=not progress, leave=False):
        size = min(batch_size, n - i)
        batch_labels = None if labels is None else labels[i : i + size]
        images = model.sample(size, labels=batch_labels, generator=generator)
        chunks.append((images.clamp(0, 1) * 255).round().to(torch.uint8))
    return torch.cat(chunks), time.perf_counter() - start


def _real_split(data) -> tuple[np.ndarray, np.ndarray, str]:
    if len(data.test_x):
        return data.test_x, data.test_y, "test"
    return data.train_x, data.train_y, "train (the data has no test split)"


def image_quality(model, data, n: int, seed: int, progress: bool = True,
                  inception_weights: str | None = None) -> tuple[dict[str, Any], torch.Tensor, torch.Tensor | None]:
    """Sample-quality metrics of n samples against the real test images; returns (metrics, samples, labels)."""
    from genlab.metrics.images import sample_metrics
    from genlab.metrics.reference import reference_classifier

    conditional = getattr(model.config, "condition", "none") in ("class", "text")  # text: class captions
    requested = torch.arange(n) % model.config.num_classes if conditional else None
    samples, seconds = generate_images(model, n, seed, requested, progress=progress)
    metrics: dict[str, Any] = {"samples_per_s": n / seconds, "sample_seconds": round(seconds, 2)}
    real_x, real_y, split = _real_split(data)
    real_x = real_x[:n]
    metrics["real_split"] = split
    if not data.classes or (real_y >= 0).sum() == 0:
        metrics["sample_metrics_skipped"] = "unlabelled data: no reference classifier can be trained"
        return metrics, samples, requested
    reference = reference_classifier(data, progress=progress)
    metrics |= sample_metrics(reference, real_x, samples, requested=requested)
    if inception_weights:
        from genlab.metrics.inception import inception_metrics

        metrics |= inception_metrics(real_x, samples, inception_weights, progress=progress)
    return metrics, samples, requested


def evaluate(run: str, n: int | None = None, seed: int = 0, k: int = 200, max_examples: int | None = None,
             inception_weights: str | None = None, batch_size: int = 100, progress: bool = True) -> dict:
    """Evaluate a run: every metric that applies to its family; writes metrics.json and report.html into it.

    Args:
        run: the run folder (runs/NAME).
        n: samples to generate and score (default 10,000; a family that samples slowly may use fewer).
        seed: seed of every random number drawn, so the figures are reproducible.
        k: importance samples per test image for likelihood bounds (more is tighter and slower).
        max_examples: use only the first N test examples for likelihoods (default: the whole test split).
        inception_weights: a pt_inception-2015-12-05 weights file: adds standard Inception FID/KID/IS.
        batch_size: test examples per batch for likelihoods.
        progress: show progress bars.
    """
    from genlab.data import load_data
    from genlab.engine import read_metrics, read_run_config
    from genlab.metrics import image_log_likelihood
    from genlab.persist import load

    run_path = Path(run)
    record = read_run_config(run_path)
    model = load(run_path / "model").eval()
    data = load_data(record["data"])
    n = n or getattr(model, "eval_samples", 10_000)
    if n < 10:
        raise GenlabError(f"--n {n} is too few samples to measure anything", "use --n 1000 or more (default 10000)")
    torch.manual_seed(seed)
    history = read_metrics(run_path)
    metrics: dict[str, Any] = {"run": run_path.name, "family": model.family, "data": record["data"],
                               "parameters": model.num_parameters(), "train_steps": None,
                               "train_seconds": train_seconds(history), "seed": seed}
    if history:
        metrics["train_steps"] = int(max(r.get("step") or 0 for r in history)) + 1

    conditional = getattr(model.config, "condition", "none") == "class"
    if hasattr(model, "log_likelihood") and data.kind == "image":
        images = torch.from_numpy(data.test_x[:max_examples])
        labels = torch.from_numpy(data.test_y[:max_examples]) if conditional else None
        metrics |= image_log_likelihood(model, images, labels, k=k, seed=seed, batch_size=batch_size,
                                        progress=progress)
    samples = requested = None
    if data.kind == "image" and getattr(model, "samples_images", True):
        quality, samples, requested = image_quality(model, data, n, seed, progress, inception_weights)
        metrics |= quality
    if hasattr(model, "eval_metrics"):
        metrics |= model.eval_metrics(data, n=n, seed=seed, progress=progress)
    metrics = {key: _plain(value) for key, value in metrics.items()}

    from genlab.report import save_grid

    if samples is not None:
        save_grid(samples[:64], run_path / "eval_samples.png", nrow=8, scale=2)
    (run_path / "metrics.json").write_text(json.dumps(metrics, indent=1))
    page = write_report(run_path, model, record, data, metrics, samples, requested, history, seed)
    metrics["report"] = str(page)
    return metrics


def _plain(value: Any) -> Any:
    """JSON-ready: numpy and torch scalars become Python numbers, NaN becomes None."""
    if isinstance(value, (np.generic, torch.Tensor)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


# ---------------------------------------------------------------------------------------------
# the report


def metric_rows(metrics: dict[str, Any]) -> list[dict[str, Any]]:
    """Metric, value, better and meaning for every reported number with a glossary entry."""
    from genlab.metrics import GLOSSARY

    rows = []
    for key, value in metrics.items():
        info = GLOSSARY.get(key)
        if info is None or value is None:
            continue
        rows.append({"metric": key, "value": value, "better": info.better or "", "meaning": info.meaning})
    return rows


def write_report(run_path: Path, model, record: dict, data, metrics: dict[str, Any], samples: torch.Tensor | None,
                 requested: torch.Tensor | None, history: list[dict[str, float]], seed: int) -> Path:
    from genlab.report import curve_figures, figure_html, grid_image, png_data_uri, table_html, write_page

    sections = [("Metrics", table_html(metric_rows(metrics)) + _protocol_note(metrics))]
    figures = []
    if samples is not None:
        figures.append(figure_html(png_data_uri(grid_image(samples[:64], nrow=8, scale=3)),
                                   f"the first 64 of {len(samples):,} evaluated samples"
                                   + (" (class i mod K)" if requested is not None else "")))
        histogram = {k.split("/", 1)[1]: v for k, v in metrics.items() if k.startswith("class_fraction/")}
        if histogram:
            from genlab.report import bar_chart

            figures.append(figure_html(png_data_uri(bar_chart(histogram, "reference classifier's class mix of samples")),
                                       "predicted classes of the samples: a collapsed model piles into a few"))
    generator = torch.Generator().manual_seed(seed)
    for images, nrow, caption in model.report_figures(data, generator):
        figures.append(figure_html(png_data_uri(grid_image(images, nrow=nrow, scale=3)), caption))
    texts = [model.preview(torch.Generator().manual_seed(seed + i)) for i in range(3)] if data.kind == "text" else []
    texts = [t for t in texts if isinstance(t, str)]
    if figures:
        sections.append(("Samples", "".join(figures)))
    if texts:
        import html

        sections.append(("Samples", "".join(f"<pre>{html.escape(t)}</pre>" for t in texts)))
    sections.append(("Training curves", curve_figures(history)))
    sections.append(("Data", f"<pre>{data.report.summary()}</pre>"))
    sections.append(("Model config", f"<pre>{json.dumps(record['model'], indent=1)}</pre>"
                                     f"<p class='note'>command: <code>{record.get('command', '')}</code></p>"))
    title = f"genlab {model.family} on {record['data']}: {run_path.name}"
    return write_page(run_path / "report.html", title, sections)


def _protocol_note(metrics: dict[str, Any]) -> str:
    notes = []
    if "nll_nats" in metrics:
        notes.append(f"Likelihoods: importance-weighted bound with k={metrics.get('iwae_k')} over "
                     f"{metrics.get('examples'):,} test images.")
    if "fd_genlab" in metrics:
        notes.append(f"Sample metrics: {metrics['fake_examples']:,} samples (seed {metrics['seed']}) against "
                     f"{metrics['real_examples']:,} real {metrics.get('real_split', 'test')} images; the reference "
                     f"classifier's test accuracy is {metrics['reference_accuracy']:.1%}. {REFERENCE_NOTE}")
    if "sample_metrics_skipped" in metrics:
        notes.append(f"No sample metrics: {metrics['sample_metrics_skipped']}.")
    return "".join(f"<p class='note'>{note}</p>" for note in notes)
