"""A Gaussian copula over a table's columns, fitted in closed form.

Sklar's theorem splits a joint distribution into its marginals and a copula; here the copula is
Gaussian (as in SDV's GaussianCopulaSynthesizer) and the marginals are the training columns' own:

- a numeric (or datetime) column by its empirical quantile function, kept as `QUANTILES` quantiles
  (a table of the distribution, not of the rows); a column with missing cells also gets a
  present/missing dimension;
- a categorical column by intervals of [0, 1], one per category, as wide as its frequency.

Fitting maps each training value to a uniform u within its interval of the empirical CDF (ties and
categories drawn uniformly inside their interval), to z = Phi^-1(u), and takes the correlation of
the z. Sampling draws z ~ N(0, R), maps u = Phi(z) back through each marginal, and writes the table
through the layout's decoder conventions (ranges, integer rounding, dtypes).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from genlab.models.tabular.layout import is_missing

QUANTILES = 1001
EPS = 1e-6


def _normal_icdf(u: np.ndarray) -> np.ndarray:
    from scipy.special import ndtri

    return ndtri(np.clip(u, EPS, 1 - EPS))


def _normal_cdf(z: np.ndarray) -> np.ndarray:
    from scipy.special import ndtr

    return ndtr(z)


class GaussianCopula(nn.Module):
    def __init__(self, columns: list[dict[str, Any]]):
        super().__init__()
        self.columns = [c for c in columns if c["kind"] != "id"]
        # dimensions: (column name, role) with role "value" or "missing"; categorical columns have one "value"
        self.dims = []
        for c in self.columns:
            self.dims.append((c["name"], "value"))
            if c["kind"] in ("numeric", "datetime") and c.get("has_missing"):
                self.dims.append((c["name"], "missing"))
        numeric = [c["name"] for c in self.columns if c["kind"] in ("numeric", "datetime")]
        self.numeric_index = {name: i for i, name in enumerate(numeric)}
        self.register_buffer("quantiles", torch.zeros(len(numeric), QUANTILES, dtype=torch.float64))
        self.register_buffer("missing_rate", torch.zeros(len(numeric), dtype=torch.float64))
        self.register_buffer("correlation", torch.eye(len(self.dims), dtype=torch.float64))

    def _category_edges(self, c: dict[str, Any]) -> np.ndarray:
        """Cumulative frequencies of the categories (missing last, when seen): the intervals of [0, 1]."""
        counts = np.array(c["counts"] + ([c.get("missing", 0)] if c.get("has_missing") else []), dtype=float)
        return np.concatenate([[0.0], np.cumsum(counts / counts.sum())])

    def fit(self, frame: Any, values: dict[str, np.ndarray], seed: int = 0) -> None:
        """Fit from the training frame; `values` holds each numeric column as floats (datetimes as seconds)."""
        rng = np.random.default_rng(seed)
        n = len(frame)
        z = np.empty((n, len(self.dims)))
        for j, (name, role) in enumerate(self.dims):
            c = next(col for col in self.columns if col["name"] == name)
            if c["kind"] == "categorical":
                edges = self._category_edges(c)
                index = {v: i for i, v in enumerate(c["categories"])}
                missing_slot = len(c["categories"])
                slot = np.array([missing_slot if is_missing(v) else index.get(v, 0) for v in frame[name].tolist()])
                slot = np.minimum(slot, len(edges) - 2)
                u = edges[slot] + rng.random(n) * (edges[slot + 1] - edges[slot])
            elif role == "missing":
                x = values[name]
                rate = float(np.isnan(x).mean())
                self.missing_rate[self.numeric_index[name]] = rate
                u = np.where(np.isnan(x), 1 - rate + rng.random(n) * rate, rng.random(n) * (1 - rate))
            else:
                x = values[name]
                present = np.sort(x[~np.isnan(x)])
                self.quantiles[self.numeric_index[name]] = torch.from_numpy(
                    np.quantile(present, np.linspace(0, 1, QUANTILES)))
                low = np.searchsorted(present, x, side="left") / len(present)
                high = np.searchsorted(present, x, side="right") / len(present)
                u = low + rng.random(n) * (high - low)  # ties spread over their share of the CDF
                u = np.where(np.isnan(x), rng.random(n), u)  # missing: independent of the rest
            z[:, j] = _normal_icdf(u)
        correlation = np.corrcoef(z, rowvar=False) if len(self.dims) > 1 else np.ones((1, 1))
        correlation = np.nan_to_num(correlation, nan=0.0)
        np.fill_diagonal(correlation, 1.0)
        self.correlation.copy_(torch.from_numpy(correlation))

    def sample(self, n: int, generator: torch.Generator | None = None) -> dict[str, np.ndarray]:
        """n draws: per column, floats (numeric, NaN where missing) or category slots (the last: missing)."""
        correlation = self.correlation.numpy()
        # the nearest positive-definite matrix by eigenvalue clipping, for a stable square root
        w, v = np.linalg.eigh(correlation)
        root = v * np.sqrt(np.clip(w, 1e-9, None))
        noise = torch.randn(n, len(self.dims), generator=generator, dtype=torch.float64).numpy()
        u = _normal_cdf(noise @ root.T)
        out: dict[str, np.ndarray] = {}
        for j, (name, role) in enumerate(self.dims):
            c = next(col for col in self.columns if col["name"] == name)
            if c["kind"] == "categorical":
                edges = self._category_edges(c)
                out[name] = np.clip(np.searchsorted(edges, u[:, j], side="right") - 1, 0, len(edges) - 2)
            elif role == "value":
                q = self.quantiles[self.numeric_index[name]].numpy()
                out[name] = np.interp(u[:, j], np.linspace(0, 1, QUANTILES), q)
            else:
                rate = float(self.missing_rate[self.numeric_index[name]])
                out[name] = np.where(u[:, j] > 1 - rate, np.nan, out[name])
        return out

