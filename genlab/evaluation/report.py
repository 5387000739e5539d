"""Pictures and pages: image grids (PNG), training curves and table charts (matplotlib), the report.html page."""

from __future__ import annotations

import base64
import html
import io
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from genlab.files import atomic_path, atomic_write


def grid_image(images: torch.Tensor, nrow: int | None = None, pad: int = 2, scale: int = 1) -> Image.Image:
    """(N, C, H, W) floats in [0, 1] or uint8 -> one PIL image, `nrow` images per row."""
    images = images.detach().cpu()
    if images.dtype != torch.uint8:
        images = (images.clamp(0, 1) * 255).round().to(torch.uint8)
    n, c, h, w = images.shape
    nrow = nrow or math.ceil(math.sqrt(n))
    rows = math.ceil(n / nrow)
    canvas = np.full((c, rows * (h + pad) + pad, nrow * (w + pad) + pad), 255, dtype=np.uint8)
    for i, image in enumerate(images.numpy()):
        r, col = divmod(i, nrow)
        canvas[
            :,
            pad + r * (h + pad) : pad + r * (h + pad) + h,
            pad + col * (w + pad) : pad + col * (w + pad) + w,
        ] = image
    picture = Image.fromarray(canvas[0] if c == 1 else canvas.transpose(1, 2, 0))
    if scale > 1:
        picture = picture.resize((picture.width * scale, picture.height * scale), Image.Resampling.NEAREST)
    return picture


def save_grid(images: torch.Tensor, path: str | Path, nrow: int | None = None, scale: int | None = None) -> Path:
    """Write a PNG grid; small images are enlarged (nearest neighbour) to about 84 px unless `scale` is given."""
    path = Path(path)
    if scale is None:
        scale = max(1, round(84 / max(images.shape[-2:])))
    with atomic_path(path) as tmp:
        grid_image(images, nrow, scale=scale).save(tmp, format="PNG")
    return path


def translation_grid(model, images) -> tuple[torch.Tensor, int]:
    """uint8 target images -> (rows of the conditions shown at full size, their translations, the targets;
    images per row) for a `Translator`."""
    from genlab.data.paired import upscale

    target = torch.as_tensor(images).float() / 255
    condition = model.make_input(target)
    shown = condition
    if shown.shape[-2:] != target.shape[-2:]:
        shown = upscale(condition, tuple(target.shape[-2:]))  # a low-resolution input, at the targets' size
    if shown.shape[1] != target.shape[1]:
        shown = shown.expand(-1, target.shape[1], -1, -1)  # a one-channel sketch beside colour images
    return torch.cat([shown, model.translate(condition).cpu(), target]), len(target)


def png_data_uri(source: Image.Image | str | Path | bytes) -> str:
    """A PNG as a data: URI, so the page needs no other file and no network."""
    if isinstance(source, Image.Image):
        buffer = io.BytesIO()
        source.save(buffer, format="PNG")
        data = buffer.getvalue()
    elif isinstance(source, bytes):
        data = source
    else:
        data = Path(source).read_bytes()
    return "data:image/png;base64," + base64.b64encode(data).decode()


def plot_curves(records: list[dict[str, float]], keys: list[str], title: str, per_row: int = 3) -> bytes | None:
    """Logged metrics against step as PNG bytes, one panel per metric name with its train and val
    lines together (`train/loss` and `val/loss` share a panel); None when none of `keys` was logged."""
    plt = _pyplot()
    panels: dict[str, dict[str, list[tuple[float, float]]]] = {}
    for key in keys:
        points = [(r["step"], r[key]) for r in records if r.get(key) is not None and r.get("step") is not None]
        if points:
            panels.setdefault(key.rsplit("/", 1)[-1], {})[key] = points
    if not panels:
        return None
    cols = min(per_row, len(panels))
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.0 * rows), squeeze=False)
    for ax, (name, lines) in zip(axes.flat, panels.items()):
        for key, points in lines.items():
            steps, values = zip(*points)
            ax.plot(steps, values, lw=1.2, marker="." if len(points) < 30 else None, label=key.split("/")[0])
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if len(lines) > 1:
            ax.legend(fontsize=8)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    fig.suptitle(title, fontsize=11)
    return _png(fig)


def _png(fig) -> bytes:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    return buffer.getvalue()


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def bar_chart(values: dict[str, float], title: str) -> bytes:
    """A horizontal bar chart of named fractions, as PNG bytes."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 0.28 * len(values) + 1))
    names = list(values)
    ax.barh(names[::-1], [values[k] for k in names][::-1], color="#4a78b0")
    ax.set_xlim(0, max(1.0 / max(len(values), 1) * 2, max(values.values(), default=0) * 1.1))
    ax.set_title(title, fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    return _png(fig)


def pair_heatmap(pairs: dict[str, float], title: str) -> bytes:
    """A symmetric matrix of the "a ~ b" pair scores, as PNG bytes."""
    plt = _pyplot()
    names = list(dict.fromkeys(n for key in pairs for n in key.split(" ~ ")))
    index = {n: i for i, n in enumerate(names)}
    matrix = np.full((len(names), len(names)), np.nan)
    for key, value in pairs.items():
        a, b = key.split(" ~ ")
        matrix[index[a], index[b]] = matrix[index[b], index[a]] = value
    fig, ax = plt.subplots(figsize=(0.45 * len(names) + 2, 0.45 * len(names) + 1.5))
    shown = ax.imshow(matrix, vmin=0, vmax=1, cmap="viridis")
    ax.set_xticks(range(len(names)), names, rotation=90, fontsize=7)
    ax.set_yticks(range(len(names)), names, fontsize=7)
    fig.colorbar(shown, ax=ax, fraction=0.046)
    ax.set_title(title, fontsize=10)
    return _png(fig)


def score_histograms(normal: np.ndarray, anomalous: np.ndarray, threshold: float, title: str) -> bytes:
    """Histograms of the scores of normal and of anomalous examples on shared bins, the threshold drawn, as PNG."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.2))
    both = np.concatenate([normal, anomalous])
    low, high = np.percentile(both, [0.5, 99.5])
    bins = np.linspace(low, high if high > low else low + 1, 50)
    for values, name, color in ((normal, "normal", "#4a78b0"), (anomalous, "anomalous", "#c8553d")):
        ax.hist(np.clip(values, bins[0], bins[-1]), bins=bins, alpha=0.6, density=True, color=color,
                label=f"{name} ({len(values):,})")
    ax.axvline(threshold, color="black", linestyle="--", linewidth=1, label="threshold")
    ax.set_xlabel("score (higher: more anomalous)")
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=10)
    return _png(fig)


def table_histograms(real: Any, synthetic: Any, columns: list[Any], per_row: int = 4) -> bytes:
    """Each modelled column's distribution, real against synthetic: histograms over the real range for numbers,
    frequencies of the 12 commonest categories for the others, as PNG bytes."""
    from genlab.data.tables import column_numbers

    plt = _pyplot()
    shown = [c for c in columns if c.kind != "id"]
    rows = -(-len(shown) // per_row)
    fig, axes = plt.subplots(rows, per_row, figsize=(3.2 * per_row, 2.4 * rows), squeeze=False)
    for ax, c in zip(axes.flat, shown, strict=False):
        if c.kind == "categorical":
            top = [str(v) for v in c.categories[:12]]
            for frame, colour, offset in ((real, "#999999", -0.2), (synthetic, "#4a78b0", 0.2)):
                freq = frame[c.name].astype(str).value_counts(normalize=True)
                ax.bar(np.arange(len(top)) + offset, [freq.get(v, 0) for v in top], width=0.4, color=colour)
            ax.set_xticks(range(len(top)), top, rotation=60, fontsize=6, ha="right")
        else:
            x, y = (column_numbers(frame[c.name], c) for frame in (real, synthetic))
            x, y = x[~np.isnan(x)], y[~np.isnan(y)]
            edges = np.histogram_bin_edges(x, bins=30)
            ax.hist(x, bins=edges, density=True, color="#999999", alpha=0.7)
            ax.hist(y, bins=edges, density=True, histtype="step", color="#4a78b0", linewidth=1.5)
            ax.tick_params(labelsize=6)
        ax.set_title(c.name, fontsize=8)
    for ax in list(axes.flat)[len(shown):]:
        ax.axis("off")
    fig.tight_layout()
    return _png(fig)


def curve_figures(history: list[dict[str, float]]) -> str:
    """Every logged train/val metric as one figure of panels (loss first, learning rate last), as HTML."""
    keys = list(dict.fromkeys(k for r in history for k in r if k.startswith(("train/", "val/"))))
    keys.sort(key=lambda k: (k.rsplit("/", 1)[-1] != "loss", k.endswith("/lr"), k.rsplit("/", 1)[-1], k))
    png = plot_curves(history, keys, "training curves")
    return figure_html(png_data_uri(png), "train (per step, logged every log_every steps) and validation") if png \
        else "<p class='note'>no training metrics logged</p>"


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1100px; color: #222; padding: 0 1rem; }}
h1 {{ font-size: 1.5rem; }} h2 {{ font-size: 1.15rem; margin-top: 2rem; border-bottom: 1px solid #ddd; }}
table {{ border-collapse: collapse; margin: .5rem 0; }}
td, th {{ border: 1px solid #ccc; padding: .3rem .6rem; text-align: left; font-variant-numeric: tabular-nums; }}
th {{ background: #f4f4f4; }} .best {{ font-weight: bold; background: #eaf6ea; }}
img {{ image-rendering: pixelated; max-width: 100%; }} figure {{ display: inline-block; margin: .5rem 1rem .5rem 0; }}
figcaption {{ font-size: .85rem; color: #555; }} pre {{ background: #f7f7f7; padding: .6rem; overflow-x: auto; }}
.note {{ color: #555; font-size: .9rem; }}
</style></head><body>
<h1>{title}</h1>
{body}
</body></html>
"""


def format_value(value: object) -> str:
    """How a metric value is written in tables: floats to 4 significant digits, the rest as is."""
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def table_html(rows: list[dict[str, object]], highlight: dict[str, int] | None = None) -> str:
    """An HTML table from dicts sharing keys; `highlight` marks one row index per column as best."""
    if not rows:
        return "<p class='note'>nothing to show</p>"
    keys = list(dict.fromkeys(k for row in rows for k in row))
    head = "".join(f"<th>{html.escape(str(k))}</th>" for k in keys)
    body = []
    for i, row in enumerate(rows):
        cells = []
        for k in keys:
            value = row.get(k, "")
            text = format_value(value)
            cls = " class='best'" if highlight and highlight.get(k) == i else ""
            cells.append(f"<td{cls}>{html.escape(text)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def figure_html(uri: str, caption: str, width: int | None = None) -> str:
    style = f" style='width:{width}px'" if width else ""
    caption = html.escape(caption)
    return f"<figure><img src='{uri}'{style} alt='{caption}'><figcaption>{caption}</figcaption></figure>"


def write_page(path: str | Path, title: str, sections: list[tuple[str, str]]) -> Path:
    """A self-contained page: every image inline, no script, no network."""
    body = "\n".join(f"<h2>{html.escape(heading)}</h2>\n{content}" for heading, content in sections)
    return atomic_write(path, PAGE.format(title=html.escape(title), body=body))
