"""`genlab compare RUN...`: several runs side by side, ranked per metric, with a recommendation per goal.

Model selection means choosing a family for a purpose: the sharpest samples, the widest
coverage of the data, the best likelihood (for anomaly scores or compression), the fastest
sampler, the smallest model. Each metric in `genlab.metrics.GLOSSARY` serves one goal; a
run's score for a goal is its mean rank over that goal's metrics, and the recommendation
names the best run for each goal with the figures behind it. Runs are only comparable on
the same data under the same protocol, so a mismatch is stated at the top of the page.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from genlab.errors import GenlabError
from genlab.evaluation.report import format_value
from genlab.files import atomic_write
from genlab.metrics import GLOSSARY

GOALS = {
    "quality": "sample quality (samples that look like the data)",
    "diversity": "diversity (the data's variety covered, no collapse or copying)",
    "likelihood": "likelihood (density estimates: anomaly scores, compression)",
    "speed": "sampling speed",
    "size": "model size",
}


def load_metrics(run: Path, evaluate_missing: bool, progress: bool) -> dict[str, Any]:
    path = run / "metrics.json"
    if not path.exists():
        if not evaluate_missing:
            raise GenlabError(f"{run} has no metrics.json", f"run genlab eval {run} first, or drop --no-evaluate")
        from genlab.evaluation.evaluate import evaluate

        print(f"{run} has no metrics.json: evaluating it with the default protocol")
        evaluate(str(run), progress=progress)
    return json.loads(path.read_text())


def rank(values: list[float | None], better: str) -> list[int | None]:
    """Competition ranks: 1 for the best value, ties share a rank and the next rank is skipped; None where
    a run has no value."""
    present = [v for v in values if v is not None]
    return [None if v is None else 1 + sum(1 for p in present if (p > v if better == "higher" else p < v))
            for v in values]


def compare_metrics(named: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Ranks per metric and the best run per goal, from each run's metrics.json content."""
    names = list(named)
    metrics = [
        key
        for key, info in GLOSSARY.items()
        if info.better and any(named[n].get(key) is not None for n in names)
    ]
    ranks = {key: dict(zip(names, rank([named[n].get(key) for n in names], GLOSSARY[key].better))) for key in metrics}
    recommendations = {}
    for goal in GOALS:
        keys = [k for k in metrics if GLOSSARY[k].goal == goal and sum(r is not None for r in ranks[k].values()) >= 2]
        if not keys:
            continue
        scores = {}
        for name in names:
            own = [ranks[k][name] for k in keys if ranks[k][name] is not None]
            if own:
                scores[name] = sum(own) / len(own)
        best = min(scores, key=scores.get)
        evidence = ", ".join(f"{k} {format_value(named[best][k])}" for k in keys if named[best].get(k) is not None)
        recommendations[goal] = {"run": best, "family": named[best].get("family"), "mean_rank": scores[best],
                                 "metrics": keys, "evidence": evidence}
    datasets = sorted({str(m.get("data")) for m in named.values()})
    seeds = sorted({str(m.get("seed")) for m in named.values()})
    warnings = []
    if len(datasets) > 1:
        warnings.append(
            f"the runs were trained on different data ({', '.join(datasets)}): their metrics do not compare"
        )
    if len(seeds) > 1:
        warnings.append(f"the runs were evaluated with different seeds ({', '.join(seeds)})")
    samples = {m.get("fake_examples") for m in named.values() if m.get("fake_examples")}
    if len(samples) > 1:
        warnings.append(f"sample metrics used different sample counts ({', '.join(map(str, sorted(samples)))}): "
                        "FD and KID depend on it; re-evaluate with the same --n")
    return {"runs": names, "ranks": ranks, "recommendations": recommendations, "warnings": warnings}


def compare(runs: list[str], out: str = "compare.html", evaluate_missing: bool = True, progress: bool = True) -> dict:
    """Compare evaluated runs in one table and page: ranks per metric and a recommendation per goal.

    Args:
        runs: two or more run folders.
        out: the HTML page to write; a JSON twin is written beside it.
        evaluate_missing: evaluate runs that have no metrics.json yet, with the default protocol.
        progress: show progress bars.
    """
    from genlab.engine.runs import read_metrics
    from genlab.evaluation.report import figure_html, plot_curves, png_data_uri, table_html, write_page

    if len(runs) < 2:
        raise GenlabError("compare needs at least two runs", "genlab compare runs/A runs/B")
    paths = [Path(r) for r in runs]
    labels = _unique_labels(paths)
    named = {label: load_metrics(path, evaluate_missing, progress) for label, path in zip(labels, paths)}
    result = compare_metrics(named)

    columns = ["family", "data", *[k for k in GLOSSARY if any(m.get(k) is not None for m in named.values())]]
    rows = [{"run": label, **{c: named[label].get(c, "") for c in columns}} for label in labels]
    highlight = {k: next(i for i, label in enumerate(labels) if result["ranks"][k][label] == 1)
                 for k in result["ranks"] if any(r == 1 for r in result["ranks"][k].values())}
    rank_rows = [{"run": label, **{k: result["ranks"][k][label] or "" for k in result["ranks"]}} for label in labels]

    sections = []
    if result["warnings"]:
        sections.append(("Read this first", "".join(f"<p><b>{html.escape(w)}</b></p>" for w in result["warnings"])))
    recommend = "".join(
        f"<li><b>For {html.escape(GOALS[goal])}: {html.escape(r['run'])}</b> ({html.escape(str(r['family']))}); "
        f"{html.escape(r['evidence'])}</li>"
        for goal, r in result["recommendations"].items()
    )
    sections.append(("Recommendation", f"<ul>{recommend}</ul><p class='note'>Each goal's winner has the best mean rank "
                                       "over that goal's metrics (1 = best).</p>" if recommend else
                     "<p class='note'>no metric is shared by two runs</p>"))
    sections.append(("Metrics", table_html(rows, highlight)))
    sections.append(("Ranks (1 = best)", table_html(rank_rows)))
    glossary = [{"metric": k, "better": GLOSSARY[k].better or "", "goal": GLOSSARY[k].goal or "",
                 "meaning": GLOSSARY[k].meaning} for k in columns if k in GLOSSARY]
    sections.append(("What the metrics mean", table_html(glossary)))
    figures = []
    for label, path in zip(labels, paths):
        if (path / "eval_samples.png").exists():
            figures.append(figure_html(png_data_uri(path / "eval_samples.png"), f"{label}: evaluated samples"))
    if figures:
        sections.append(("Samples", "".join(figures)))
    curves = []
    for label, path in zip(labels, paths):
        png = plot_curves(read_metrics(path), ["train/loss", "val/loss"], f"{label} ({named[label].get('family')})")
        if png:
            curves.append(figure_html(png_data_uri(png), f"{label}: its own training objective"))
    if curves:
        sections.append(("Training curves", "".join(curves)))
    page = write_page(Path(out), f"genlab compare: {', '.join(labels)}", sections)
    result["table"] = rows
    atomic_write(Path(out).with_suffix(".json"), json.dumps(result, indent=1))
    result["page"] = str(page)
    return result


def _unique_labels(paths: list[Path]) -> list[str]:
    """Run folder names, with parents added where two runs share a name."""
    labels = [p.name for p in paths]
    if len(set(labels)) < len(labels):
        labels = [str(p) for p in paths]
    return labels


def print_table(result: dict) -> None:
    rows = result["table"]
    keys = [k for k in rows[0] if k not in ("data",)]
    widths = {k: max(len(k), *(len(format_value(r.get(k, ""))) for r in rows)) for k in keys}
    print("  ".join(f"{k:<{widths[k]}}" for k in keys))
    for r in rows:
        print("  ".join(f"{format_value(r.get(k, '')):<{widths[k]}}" for k in keys))
    for w in result["warnings"]:
        print(f"warning: {w}")
    for goal, r in result["recommendations"].items():
        print(f"for {GOALS[goal]}: {r['run']} ({r['family']}): {r['evidence']}")
    print(f"page: {result['page']}")
