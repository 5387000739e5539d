"""`genlab tune --report STUDY`: report.html (offline, images inline) and its figures as PNG files in figures/.

Sections: the best trials (the Pareto front for several objectives), why the best trial beats the
default config (trial 0), parameter importances, the optimisation history, the pruning curves, parallel
coordinates, the Pareto front, the search space and every trial.
"""

from __future__ import annotations

import html
import math
from pathlib import Path
from typing import Any

from genlab.evaluation.report import _png, _pyplot, figure_html, format_value, png_data_uri, table_html, write_page
from genlab.tune.space import decode
from genlab.tune.study import OBJECTIVES, counts, load_study, read_settings, safe_url, storage_url


def _finite(values) -> bool:
    return values is not None and all(v is not None and math.isfinite(v) for v in values)


def trial_row(trial, objectives: tuple[str, ...]) -> dict[str, Any]:
    row: dict[str, Any] = {"trial": trial.number, "state": trial.state.name.lower()}
    for i, name in enumerate(objectives):
        row[name] = trial.values[i] if trial.values else ""
    row["last reported step"] = trial.last_step if trial.last_step is not None else ""
    row["train s"] = trial.user_attrs.get("train_seconds", "")
    for key, value in trial.params.items():
        row[key] = decode(value)
    if trial.user_attrs.get("baseline"):
        row["note"] = "default config"
    if trial.user_attrs.get("pruned"):
        row["note"] = trial.user_attrs["pruned"]
    if trial.user_attrs.get("error"):
        row["note"] = trial.user_attrs["error"]
    return row


def history_figure(trials, objective: str, direction: str) -> bytes:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    complete = [t for t in trials if t.state.name == "COMPLETE" and _finite(t.values)]
    xs, ys = [t.number for t in complete], [t.values[0] for t in complete]
    ax.scatter(xs, ys, color="#4a78b0", label="complete", zorder=3)
    pruned = [t for t in trials if t.state.name == "PRUNED" and t.intermediate_values]
    if pruned:
        ax.scatter([t.number for t in pruned], [t.intermediate_values[t.last_step] for t in pruned], marker="x",
                   color="#c0392b", label="pruned (last reported value)", zorder=3)
    best, line = math.inf if direction == "minimize" else -math.inf, []
    for y in ys:
        best = min(best, y) if direction == "minimize" else max(best, y)
        line.append(best)
    ax.step(xs, line, where="post", color="#27ae60", label="best so far")
    _decorate(ax, "trial", objective, "optimisation history")
    return _png(fig)


def _decorate(ax, xlabel: str, ylabel: str, title: str) -> None:
    """The axis labels, title, grid and legend every line plot of the report has."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


def intermediate_figure(trials, metric: str) -> bytes | None:
    shown = [t for t in trials if len(t.intermediate_values) > 0]
    if not shown:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    for t in shown:
        steps = sorted(t.intermediate_values)
        pruned = t.state.name == "PRUNED"
        ax.plot(steps, [t.intermediate_values[s] for s in steps], color="#c0392b" if pruned else "#4a78b0",
                alpha=0.8, marker="." if len(steps) < 20 else None, label=None)
    ax.plot([], [], color="#4a78b0", label="ran to the end")
    ax.plot([], [], color="#c0392b", label="pruned")
    _decorate(ax, "step", metric, "intermediate values the pruner saw")
    return _png(fig)


def parallel_figure(trials, objective: str) -> bytes | None:
    """Parallel coordinates: one line per complete trial through its (normalised) parameters and objective."""
    complete = [t for t in trials if t.state.name == "COMPLETE" and _finite(t.values)]
    names = sorted({k for t in complete for k in t.params})
    if len(complete) < 2 or not names:
        return None
    plt = _pyplot()
    axes_names = [*names, objective]
    columns = []
    for name in names:
        raw = [t.params.get(name) for t in complete]
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in raw):
            use_log = min(raw) > 0 and max(raw) / min(raw) > 20
            columns.append([math.log10(v) if use_log else float(v) for v in raw])
        else:
            levels = sorted({str(v) for v in raw})
            columns.append([float(levels.index(str(v))) for v in raw])
    values = [t.values[0] for t in complete]
    columns.append(values)
    normalised = []
    for column in columns:
        lo, hi = min(column), max(column)
        normalised.append([(v - lo) / (hi - lo) if hi > lo else 0.5 for v in column])
    fig, ax = plt.subplots(figsize=(max(6.5, 1.3 * len(axes_names)), 3.8))
    cmap = plt.get_cmap("viridis_r")
    lo, hi = min(values), max(values)
    for i in range(len(complete)):
        colour = cmap((values[i] - lo) / (hi - lo) if hi > lo else 0.5)
        ax.plot(range(len(axes_names)), [col[i] for col in normalised], color=colour, alpha=0.8)
    ax.set_xticks(range(len(axes_names)), axes_names, rotation=20, fontsize=8)
    ax.set_yticks([])
    for x in range(len(axes_names)):
        ax.axvline(x, color="#999", lw=0.6)
    ax.set_title(f"parallel coordinates (each axis scaled to its range; colour: {objective})", fontsize=10)
    return _png(fig)


def pareto_figure(study, objectives: tuple[str, ...]) -> bytes:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 4))
    complete = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE" and _finite(t.values)]
    front = {t.number for t in study.best_trials}
    for on_front, colour, label in ((False, "#aaa", "dominated"), (True, "#c0392b", "Pareto front")):
        chosen = [t for t in complete if (t.number in front) == on_front]
        ax.scatter([t.values[0] for t in chosen], [t.values[1] for t in chosen], color=colour, label=label, zorder=3)
        for t in chosen:
            ax.annotate(
                str(t.number),
                (t.values[0], t.values[1]),
                fontsize=7,
                xytext=(3, 3),
                textcoords="offset points",
            )
    x, y = (f"{name} ({OBJECTIVES[name].direction})" for name in objectives[:2])
    _decorate(ax, x, y, "Pareto front")
    return _png(fig)


def importances(study, index: int = 0) -> dict[str, float]:
    import optuna

    try:
        return optuna.importance.get_param_importances(study, target=lambda t: t.values[index])
    except (RuntimeError, ValueError, ZeroDivisionError):
        return {}  # too few complete trials, or no parameter varied


def explain_win(study, objectives: tuple[str, ...], weights: dict[str, float], folder: Path) -> str:
    """Why the best trial beats the default config: the objective gain, the parameters that differ
    (ordered by importance) and both validation curves."""
    from genlab.engine.runs import read_metrics

    trials = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE" and _finite(t.values)]
    baseline = next((t for t in trials if t.user_attrs.get("baseline")), None)
    if baseline is None or not trials:
        return "<p class='note'>the default config (trial 0) has not completed, so there is nothing to compare with</p>"
    sign = 1 if OBJECTIVES[objectives[0]].direction == "minimize" else -1
    best = min(trials, key=lambda t: sign * t.values[0])
    name = objectives[0]
    if best.number == baseline.number:
        return f"<p>No trial beat the default config on {name} ({baseline.values[0]:.4g}): keep the defaults.</p>"
    gain = baseline.values[0] - best.values[0]
    relative = abs(gain) / abs(baseline.values[0]) if baseline.values[0] else math.nan
    rows = []
    for key in sorted(best.params, key=lambda k: -weights.get(k, 0.0)):
        a, b = decode(baseline.params.get(key)), decode(best.params.get(key))
        if a == b:
            continue
        change = f"x{b / a:.3g}" if isinstance(a, (int, float)) and isinstance(b, (int, float)) and a else ""
        rows.append({"parameter": key, "default": a, "best": b, "change": change,
                     "importance": weights.get(key, "")})
    lines = [f"<p>Trial {best.number} reaches {name} = {best.values[0]:.4g} against {baseline.values[0]:.4g} for the "
             f"default config (trial {baseline.number}): {abs(gain):.4g} {'lower' if sign > 0 else 'higher'} "
             f"({relative:.1%}), trained under the same per-trial budget.</p>"]
    if rows:
        top = rows[0]
        lines.append(f"<p>The parameters it changed, most important first (importance: the share of the variation of "
                     f"{name} across trials that the parameter explains). The largest lever is "
                     f"<code>{html.escape(top['parameter'])}</code>: {html.escape(format_value(top['default']))} → "
                     f"{html.escape(format_value(top['best']))}.</p>")
        lines.append(table_html(rows))
    curves = []
    for trial, label in ((baseline, "default"), (best, f"best (trial {best.number})")):
        records = [r for r in read_metrics(folder / trial.user_attrs.get("run", "")) if "val/loss" in r]
        if records:
            curves.append((label, [r["step"] for r in records], [r["val/loss"] for r in records]))
    if curves:
        plt = _pyplot()
        fig, ax = plt.subplots(figsize=(6.5, 3.4))
        for label, xs, ys in curves:
            ax.plot(xs, ys, marker=".", label=label)
        _decorate(ax, "step", "val/loss", "validation loss during training: default vs best")
        png = _png(fig)
        (folder / "figures").mkdir(exist_ok=True)
        (folder / "figures" / "default_vs_best.png").write_bytes(png)
        lines.append(figure_html(png_data_uri(png), "validation loss of the default config and of the best trial"))
    return "".join(lines)


def write_report(folder: str | Path) -> Path:
    """Write report.html and figures/*.png for a study folder; returns the page."""
    from genlab.evaluation.report import bar_chart

    folder = Path(folder)
    settings = read_settings(folder)
    study = load_study(folder, settings)
    objectives = settings.objectives
    trials = study.get_trials(deepcopy=False)
    figures_dir = folder / "figures"
    figures_dir.mkdir(exist_ok=True)

    def figure(png: bytes | None, name: str, caption: str) -> str:
        if png is None:
            return ""
        (figures_dir / f"{name}.png").write_bytes(png)
        return figure_html(png_data_uri(png), caption)

    c = counts(study)
    summary = {"family": settings.family, "data": settings.data, "objectives": ", ".join(
        f"{o} ({OBJECTIVES[o].direction})" for o in objectives), "storage": safe_url(storage_url(settings, folder)),
        "study": settings.study, "pruner": settings.pruner if len(objectives) == 1 else "none (several objectives)",
        "trial budget": settings.trial_budget or "-", "session budget": settings.budget or "-",
        **{f"trials {k}": v for k, v in c.items() if v}}
    sections = [("Study", table_html([{"": k, "value": v} for k, v in summary.items()])
                 + "".join(f"<p class='note'>{o}: {OBJECTIVES[o].meaning}.</p>" for o in objectives))]

    complete = [t for t in trials if t.state.name == "COMPLETE" and _finite(t.values)]
    if len(objectives) == 1:
        sign = 1 if OBJECTIVES[objectives[0]].direction == "minimize" else -1
        best = sorted(complete, key=lambda t: sign * t.values[0])[:10]
        sections.append(("Best trials", table_html([trial_row(t, objectives) for t in best], {objectives[0]: 0})
                         + f"<p class='note'>train the best: <code>genlab train {settings.family} --from-study "
                           f"{html.escape(str(folder))}</code></p>"))
    else:
        front = sorted(study.best_trials, key=lambda t: t.values[0]) if complete else []
        sections.append(("Best trials (Pareto front)", table_html([trial_row(t, objectives) for t in front])
                         + "<p class='note'>no trial on the front is better on every objective than another; pick "
                           "one with <code>genlab train FAMILY --from-study STUDY --trial N</code></p>"))

    weights = importances(study) if complete else {}
    sections.append(("Why the best trial wins", explain_win(study, objectives, weights, folder)))
    if weights:
        sections.append(("Parameter importances", figure(bar_chart(weights, f"importance for {objectives[0]} (fANOVA)"),
                                                         "importances", "share of the objective's variation each "
                                                         "parameter explains (fANOVA over complete trials)")))
    parts = []
    for i, name in enumerate(objectives):
        if complete:
            parts.append(figure(history_figure(trials if i == 0 else complete, name, OBJECTIVES[name].direction),
                                f"history_{name}", f"{name} per trial and the best so far"))
    parts.append(figure(intermediate_figure(trials, "val/loss" if objectives[0] == "val-loss" else objectives[0]),
                        "intermediate", "what the pruner compared: each trial's validation metric over steps"))
    sections.append(("Optimisation history", "".join(parts) or "<p class='note'>no trial completed yet</p>"))
    parallel = parallel_figure(trials, objectives[0])
    if parallel:
        sections.append(("Parallel coordinates", figure(parallel, "parallel_coordinates",
                                                        "each line a complete trial; good trials share a path")))
    if len(objectives) >= 2 and len(complete) >= 1:
        sections.append(("Pareto front", figure(pareto_figure(study, objectives), "pareto",
                                                "complete trials; red ones are Pareto-optimal")))
    from genlab.models import get_family
    from genlab.tune.space import build_space

    space = build_space(get_family(settings.family).Config, settings.space)
    sections.append(("Search space", table_html([{"field": p.name, "range": p.describe()} for p in space])))
    sections.append(("All trials", table_html([trial_row(t, objectives) for t in trials])
                     + "<p class='note'>every trial is a genlab run folder: "
                       f"<code>{html.escape(str(folder))}/trials/NNNN</code></p>"))
    return write_page(
        folder / "report.html", f"genlab tune {settings.family} on {settings.data}: {folder.name}", sections
    )
