"""How well anomaly scores separate anomalies from normal examples, given the truth (1: anomaly).

- AUROC: the probability that a random anomaly scores above a random normal example, ties counting one half
  (the Mann-Whitney U statistic over n_anomalous x n_normal; Hanley & McNeil 1982), from the ranks of the scores.
- Average precision: the mean, over the anomalies, of the precision among the examples scoring at least as high
  as each (the area under the precision-recall curve as a step function; scikit-learn's definition, tied scores
  taken together).
- At a threshold: the false-alarm rate (normal examples flagged) and the detection rate (anomalies flagged).

The tests check these against scikit-learn's roc_auc_score and average_precision_score.
"""

from __future__ import annotations

import numpy as np


def _checked(scores: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scores, truth = np.asarray(scores, dtype=float), np.asarray(truth).astype(bool)
    if scores.shape != truth.shape or scores.ndim != 1:
        raise ValueError(f"scores {scores.shape} and truth {truth.shape} must be one value per example")
    if truth.all() or not truth.any():
        raise ValueError("the truth must hold both normal examples and anomalies")
    if not np.isfinite(scores).all():
        raise ValueError("scores must be finite")
    return scores, truth


def _ranks(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n of x, ties given their mean rank."""
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x))
    ranks[order] = np.arange(1, len(x) + 1)
    values, first, counts = np.unique(x[order], return_index=True, return_counts=True)
    mean = first + (counts + 1) / 2  # mean rank of each run of equal values
    return mean[np.searchsorted(values, x)]


def auroc(scores: np.ndarray, truth: np.ndarray) -> float:
    scores, truth = _checked(scores, truth)
    n_pos, n_neg = int(truth.sum()), int((~truth).sum())
    u = _ranks(scores)[truth].sum() - n_pos * (n_pos + 1) / 2
    return float(u / (n_pos * n_neg))


def average_precision(scores: np.ndarray, truth: np.ndarray) -> float:
    scores, truth = _checked(scores, truth)
    order = np.argsort(-scores, kind="mergesort")
    s, t = scores[order], truth[order]
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]  # the last index of each run of tied scores
    hits = np.cumsum(t)[last]
    precision = hits / (last + 1)
    recall_gain = np.diff(np.r_[0, hits]) / truth.sum()
    return float((precision * recall_gain).sum())


def at_threshold(scores: np.ndarray, truth: np.ndarray, threshold: float) -> dict[str, float]:
    """The share of normal examples scoring above `threshold` (false alarms) and of anomalies (detections)."""
    scores, truth = _checked(scores, truth)
    flagged = scores > threshold
    return {"false_alarm_rate": float(flagged[~truth].mean()), "detection_rate": float(flagged[truth].mean())}


def summary(scores: np.ndarray, truth: np.ndarray, threshold: float) -> dict[str, float]:
    """AUROC, average precision and the rates at the threshold, with the counts."""
    return {"auroc": auroc(scores, truth), "average_precision": average_precision(scores, truth),
            **at_threshold(scores, truth, threshold), "normal": int((~np.asarray(truth, bool)).sum()),
            "anomalous": int(np.asarray(truth, bool).sum())}
