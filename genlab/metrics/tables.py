"""How good a synthetic table is: shape and pair-trend fidelity, utility and privacy.

Fidelity follows SDMetrics' quality report definitions (DataCebo, `sdmetrics`), reimplemented here
so that genlab needs no SDV: the bench checks the numbers against the library.

- column shapes: per column, KSComplement (1 - the two-sample Kolmogorov-Smirnov statistic) for
  numeric and datetime columns, TVComplement (1 - the total variation distance of the category
  frequencies, missing counted as a category) for categorical ones;
- column pair trends: per pair, CorrelationSimilarity (1 - |r_real - r_synthetic| / 2, Pearson) for two
  numeric columns, ContingencySimilarity (1 - the total variation distance of the normalised
  contingency tables) when a categorical column is involved, a numeric one cut into 10 equal-width
  bins of its own table's range (as sdmetrics' report does, so that the figures compare with its);
- the quality score: the mean of the column-shape average and the pair-trend average over the pairs
  the real data relates (|r| > 0.5, Cramer's V > 0.3: sdmetrics 0.32's report thresholds).

Utility: train on synthetic, test on real (TSTR; Esteban et al. 2017) with scikit-learn's
HistGradientBoostingClassifier, against the same classifier trained on the real training rows.
A classifier two-sample test (C2ST; Lopez-Paz & Oquab 2017): the ROC AUC of a classifier telling
real from synthetic rows on held-out halves (0.5: indistinguishable). Privacy: each synthetic row's
distance to its closest real training record (DCR) against the same distance from real held-out
rows, and the share of synthetic rows that copy a training row exactly.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np

from genlab.data.tables import column_numbers

NUMERIC = ("numeric", "datetime")


def _categories(series: Any) -> Any:
    """A column (or a frame of them) as strings, missing as "<missing>": a category like any other."""
    return series.astype(object).where(series.notna(), "<missing>").astype(str)


def ks_complement(real: np.ndarray, synthetic: np.ndarray) -> float:
    """1 - the largest gap between the two empirical CDFs (missing values dropped)."""
    real, synthetic = np.sort(real[~np.isnan(real)]), np.sort(synthetic[~np.isnan(synthetic)])
    if len(real) == 0 or len(synthetic) == 0:
        return 0.0
    grid = np.concatenate([real, synthetic])
    gap = np.abs(np.searchsorted(real, grid, side="right") / len(real)
                 - np.searchsorted(synthetic, grid, side="right") / len(synthetic))
    return float(1 - gap.max())


def tv_complement(real: Any, synthetic: Any) -> float:
    """1 - the total variation distance between the category frequencies."""
    p = _categories(real).value_counts(normalize=True)
    q = _categories(synthetic).value_counts(normalize=True)
    keys = p.index.union(q.index)
    return float(1 - 0.5 * np.abs(p.reindex(keys, fill_value=0) - q.reindex(keys, fill_value=0)).sum())


def column_shapes(real: Any, synthetic: Any, columns: list[Any]) -> dict[str, float]:
    out = {}
    for c in columns:
        if c.kind in NUMERIC:
            out[c.name] = ks_complement(column_numbers(real[c.name], c), column_numbers(synthetic[c.name], c))
        elif c.kind == "categorical":
            out[c.name] = tv_complement(real[c.name], synthetic[c.name])
    return out


def _binned(series: Any, column: Any) -> Any:
    """A column as categories for a contingency table: numbers by `np.digitize` into 10 equal-width bins over
    this table's own range (as sdmetrics' report bins each table: the figures stay comparable with its)."""
    import pandas as pd

    if column.kind not in NUMERIC:
        return _categories(series)
    x = column_numbers(series, column)
    present = x[~np.isnan(x)]
    edges = np.histogram_bin_edges(present) if len(present) else np.linspace(0, 1, 11)
    return pd.Series(np.digitize(x, edges)).astype(str)


# sdmetrics' quality report averages only the pairs the real data relates: |Pearson r| above 0.5, or Cramer's V
# above 0.3 (sdmetrics.reports.utils, DEFAULT_REAL_CORRELATION_THRESHOLD and _ASSOCIATION_THRESHOLD)
REAL_CORRELATION_THRESHOLD = 0.5
REAL_ASSOCIATION_THRESHOLD = 0.3


def column_pair_trends(real: Any, synthetic: Any, columns: list[Any]) -> dict[str, dict[str, float | bool]]:
    """Every pair's score, with the real data's correlation or association and whether it counts in the average."""
    from scipy.stats.contingency import association

    modelled = [c for c in columns if c.kind in NUMERIC or c.kind == "categorical"]
    out = {}
    for a, b in itertools.combinations(modelled, 2):
        if a.kind in NUMERIC and b.kind in NUMERIC:
            r = []
            for frame in (real, synthetic):
                x, y = column_numbers(frame[a.name], a), column_numbers(frame[b.name], b)
                keep = ~(np.isnan(x) | np.isnan(y))
                x, y = x[keep], y[keep]
                r.append(0.0 if len(x) < 2 or x.std() == 0 or y.std() == 0 else float(np.corrcoef(x, y)[0, 1]))
            out[f"{a.name} ~ {b.name}"] = {"score": 1 - abs(r[0] - r[1]) / 2, "real": r[0],
                                           "counted": abs(r[0]) > REAL_CORRELATION_THRESHOLD}
        else:
            tables, cells = [], None
            for frame in (real, synthetic):
                x, y = _binned(frame[a.name], a).to_numpy(), _binned(frame[b.name], b).to_numpy()
                tables.append(_frequencies(x + "\x00" + y))
                if cells is None:  # the real table's counts, for Cramer's V
                    import pandas as pd

                    cells = pd.crosstab(x, y).to_numpy()
            keys = tables[0].index.union(tables[1].index)
            tv = 0.5 * np.abs(tables[0].reindex(keys, fill_value=0) - tables[1].reindex(keys, fill_value=0)).sum()
            v = float(association(cells, method="cramer")) if min(cells.shape) >= 2 else 0.0
            out[f"{a.name} ~ {b.name}"] = {"score": float(1 - tv), "real": v,
                                           "counted": v > REAL_ASSOCIATION_THRESHOLD}
    return out


def _frequencies(values: np.ndarray) -> Any:
    import pandas as pd

    return pd.Series(values).value_counts(normalize=True)


def quality(real: Any, synthetic: Any, columns: list[Any]) -> dict[str, Any]:
    """SDMetrics' quality score: the mean of the column-shape average and the column-pair-trend average over the
    pairs the real data relates (`column_pair_trends_all`: over every pair)."""
    shapes = column_shapes(real, synthetic, columns)
    pairs = column_pair_trends(real, synthetic, columns)
    shape_score = float(np.mean(list(shapes.values()))) if shapes else float("nan")
    counted = [p["score"] for p in pairs.values() if p["counted"]]
    every = [p["score"] for p in pairs.values()]
    pair_score = float(np.mean(counted)) if counted else float(np.mean(every)) if every else shape_score
    return {"quality": (shape_score + pair_score) / 2, "column_shapes": shape_score, "column_pair_trends": pair_score,
            "column_pair_trends_all": float(np.mean(every)) if every else shape_score, "per_column": shapes,
            "per_pair": {k: p["score"] for k, p in pairs.items()},
            "counted_pairs": [k for k, p in pairs.items() if p["counted"]]}


# -- utility and privacy ------------------------------------------------------------------------


def features(frames: list[Any], columns: list[Any], drop: tuple[str, ...] = ()) -> list[np.ndarray]:
    """The frames as one numeric matrix each for scikit-learn: numbers as they are (missing as NaN, which
    HistGradientBoosting takes), categories as integer codes shared by all frames."""
    import pandas as pd

    used = [c for c in columns if c.name not in drop and (c.kind in NUMERIC or c.kind == "categorical")]
    out = [np.empty((len(f), len(used))) for f in frames]
    for j, c in enumerate(used):
        if c.kind in NUMERIC:
            for m, f in zip(out, frames, strict=True):
                m[:, j] = column_numbers(f[c.name], c)
        else:
            codes = {v: i for i, v in enumerate(pd.unique(pd.concat([_categories(f[c.name]) for f in frames])))}
            for m, f in zip(out, frames, strict=True):
                m[:, j] = _categories(f[c.name]).map(codes).to_numpy(dtype=float)
    return out


def tstr(train: Any, test: Any, columns: list[Any], target: str, seed: int = 0) -> dict[str, float]:
    """A HistGradientBoostingClassifier fitted on `train` (synthetic or real rows) predicting `target`,
    scored on the real `test` rows: accuracy, macro F1 and ROC AUC (one-vs-rest for more than two classes)."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.metrics import accuracy_score, f1_score, roc_auc_score

    used = [c for c in columns if c.name != target and (c.kind in NUMERIC or c.kind == "categorical")]
    cats = [i for i, c in enumerate(used) if c.kind == "categorical"]
    x_train, x_test = features([train, test], columns, drop=(target,))
    y_train, y_test = _categories(train[target]).to_numpy(), _categories(test[target]).to_numpy()
    classes = np.unique(y_train)
    if len(classes) < 2:
        return {"accuracy": float("nan"), "f1": float("nan"), "auc": float("nan"), "classes_seen": len(classes)}
    model = HistGradientBoostingClassifier(categorical_features=cats or None, random_state=seed)
    model.fit(x_train, y_train)
    predicted = model.predict(x_test)
    proba = model.predict_proba(x_test)
    known = np.isin(y_test, model.classes_)
    if len(model.classes_) == 2:
        auc = roc_auc_score(y_test[known] == model.classes_[1], proba[known, 1])
    else:
        auc = roc_auc_score(y_test[known], proba[known], multi_class="ovr", labels=model.classes_)
    return {"accuracy": float(accuracy_score(y_test, predicted)),
            "f1": float(f1_score(y_test, predicted, average="macro")), "auc": float(auc)}


def c2st(real: Any, synthetic: Any, columns: list[Any], seed: int = 0) -> float:
    """ROC AUC of a classifier telling real from synthetic rows, fitted on half of each and scored on the other
    half (0.5: it cannot tell them apart; 1: it always can)."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.metrics import roc_auc_score

    n = min(len(real), len(synthetic))
    rng = np.random.default_rng(seed)
    real = real.iloc[rng.permutation(len(real))[:n]]
    synthetic = synthetic.iloc[rng.permutation(len(synthetic))[:n]]
    x_real, x_syn = features([real, synthetic], columns)
    half = n // 2
    x_fit = np.concatenate([x_real[:half], x_syn[:half]])
    y_fit = np.r_[np.zeros(half), np.ones(half)]
    x_test = np.concatenate([x_real[half:], x_syn[half:]])
    y_test = np.r_[np.zeros(n - half), np.ones(n - half)]
    used = [c for c in columns if c.kind in NUMERIC or c.kind == "categorical"]
    cats = [i for i, c in enumerate(used) if c.kind == "categorical"]
    model = HistGradientBoostingClassifier(categorical_features=cats or None, random_state=seed).fit(x_fit, y_fit)
    return float(roc_auc_score(y_test, model.predict_proba(x_test)[:, 1]))


def privacy(train: Any, holdout: Any, synthetic: Any, columns: list[Any], max_rows: int = 5000,
            seed: int = 0) -> dict[str, float]:
    """Distances to the closest training record (DCR) of synthetic rows and of real held-out rows (numbers
    scaled by the training range, categories 0 or 1 apart, Gower-like), their medians and 5th percentiles,
    and the share of rows that are exact copies of a training row (synthetic and, for comparison, held out)."""
    rng = np.random.default_rng(seed)
    used = [c for c in columns if c.kind in NUMERIC or c.kind == "categorical"]

    def copies(frame: Any) -> float:
        names = [c.name for c in used]
        seen = set(map(tuple, _categories(train[names]).to_numpy()))
        return float(np.mean([tuple(r) in seen for r in _categories(frame[names]).to_numpy()]))

    def sample(frame: Any) -> Any:
        return frame.iloc[rng.permutation(len(frame))[:max_rows]]

    reference = sample(train)
    x_ref, x_hold, x_syn = features([reference, sample(holdout), sample(synthetic)], columns)
    numeric = np.array([c.kind in NUMERIC for c in used])
    lo, hi = np.nanmin(x_ref[:, numeric], 0), np.nanmax(x_ref[:, numeric], 0)
    scale = np.where(hi > lo, hi - lo, 1.0)

    def dcr(x: np.ndarray) -> np.ndarray:
        out = np.empty(len(x))
        for i in range(0, len(x), 256):
            block = x[i : i + 256]
            num = np.abs(block[:, None, numeric] - x_ref[None, :, numeric]) / scale
            num = np.where(np.isnan(num), 1.0, num).sum(2)
            cat = (block[:, None, ~numeric] != x_ref[None, :, ~numeric]).sum(2)
            out[i : i + 256] = (num + cat).min(1) / len(used)
        return out

    d_syn, d_hold = dcr(x_syn), dcr(x_hold)
    return {"dcr_synthetic_median": float(np.median(d_syn)), "dcr_holdout_median": float(np.median(d_hold)),
            "dcr_synthetic_p5": float(np.percentile(d_syn, 5)), "dcr_holdout_p5": float(np.percentile(d_hold, 5)),
            "exact_copies_synthetic": copies(synthetic), "exact_copies_holdout": copies(holdout)}

