"""`genlab eval RUN`: the metrics that apply to a run's family, metrics.json and a report a person reads."""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch


def _sampling_speed(model, n: int = 256, seed: int = 0) -> float:
    generator = torch.Generator().manual_seed(seed)
    model.sample(8, generator=generator)  # warm-up
    start = time.perf_counter()
    model.sample(n, generator=generator)
    return n / (time.perf_counter() - start)


def _interpolation_pairs(classes: tuple[str, ...]) -> list[tuple[str, str]]:
    preferred = [("Sneaker", "Ankle boot"), ("T-shirt/top", "Dress"), ("Sandal", "Bag")]
    pairs = [p for p in preferred if p[0] in classes and p[1] in classes]
    return pairs or ([(classes[0], classes[1])] if len(classes) >= 2 else [])


def evaluate(run: str, k: int = 200, max_examples: int | None = None, seed: int = 0, batch_size: int = 100,
             progress: bool = True) -> dict:
    """Evaluate a run on its test split; write metrics.json and report.html into the run folder.

    Args:
        run: the run folder (runs/NAME).
        k: importance samples per test image for the likelihood bound (more is tighter and slower).
        max_examples: evaluate on the first N test images only (default: the whole test split).
        seed: seed of every random number drawn, so the figures are reproducible.
        batch_size: test images per batch.
        progress: show progress bars.
    """
    from genlab.data import load_data
    from genlab.engine import read_metrics, read_run_config
    from genlab.metrics import image_log_likelihood
    from genlab.persist import load
    from genlab.report import figure_html, grid_image, plot_curves, png_data_uri, table_html, write_page

    run_path = Path(run)
    record = read_run_config(run_path)
    model = load(run_path / "model")
    data = load_data(record["data"])
    images = torch.from_numpy(data.test_x[:max_examples])
    labels = torch.from_numpy(data.test_y[:max_examples]) if model.config.condition == "class" else None

    metrics: dict[str, float | int | str] = {"family": model.family, "data": record["data"],
                                             "parameters": model.num_parameters()}
    if hasattr(model, "log_likelihood"):
        metrics.update(image_log_likelihood(model, images, labels, k=k, seed=seed, batch_size=batch_size,
                                            progress=progress))
    metrics["samples_per_s"] = _sampling_speed(model, seed=seed)
    history = read_metrics(run_path)
    if history:
        metrics["train_steps"] = int(max(r["step"] or 0 for r in history)) + 1
    (run_path / "metrics.json").write_text(json.dumps(metrics, indent=1))

    generator = torch.Generator().manual_seed(seed)
    cond_labels = torch.arange(64) % model.config.num_classes if model.config.condition == "class" else None
    figures = [figure_html(png_data_uri(grid_image(model.sample(64, labels=cond_labels, generator=generator), nrow=8, scale=3)),
                           "64 samples (decoder means)")]
    x = torch.from_numpy(data.test_x[:16])
    rec_labels = torch.from_numpy(data.test_y[:16]) if model.config.condition == "class" else None
    pair = torch.cat([x.float() / 255, model.reconstruct(x, rec_labels)])
    figures.append(figure_html(png_data_uri(grid_image(pair, nrow=16, scale=3)),
                               "test images (top) and their reconstructions (bottom)"))
    for a, b in _interpolation_pairs(data.classes):
        ia = int((torch.from_numpy(data.test_y) == data.classes.index(a)).nonzero()[0])
        ib = int((torch.from_numpy(data.test_y) == data.classes.index(b)).nonzero()[0])
        lab = [data.classes.index(a), data.classes.index(b)] if model.config.condition == "class" else None
        line = model.interpolate(torch.from_numpy(data.test_x[ia]), torch.from_numpy(data.test_x[ib]), 9, lab)
        figures.append(figure_html(png_data_uri(grid_image(line, nrow=9, scale=3)),
                                   f"{a} to {b}: the middle image is the latent midpoint"))

    sections = [("Metrics", table_html([{k: v for k, v in metrics.items()}])
                 + "<p class='note'>nll_nats: test negative log-likelihood, importance-weighted bound with "
                   f"k={k} (lower is better); elbo_nats: the evidence lower bound; bits_per_dim: nll / "
                   "(pixels x ln 2). Binarised data: bits are over binary pixels.</p>"),
                ("Samples, reconstructions, interpolations", "".join(figures))]
    curves = [plot_curves(history, keys, title) for keys, title in [
        (["train/loss", "val/loss"], "loss (nats per image)"),
        (["train/rec_nats", "train/kl_nats"], "reconstruction and KL terms")]]
    sections.append(("Training curves", "".join(figure_html(png_data_uri(c), "curves") for c in curves if c)
                     or "<p class='note'>no training metrics logged</p>"))
    sections.append(("Data", f"<pre>{data.report.summary()}</pre>"))
    sections.append(("Model config", f"<pre>{json.dumps(record['model'], indent=1)}</pre>"
                                     f"<p class='note'>command: <code>{record.get('command', '')}</code></p>"))
    page = write_page(run_path / "report.html", f"genlab {model.family} on {record['data']}: {run_path.name}", sections)
    metrics["report"] = str(page)
    return metrics
