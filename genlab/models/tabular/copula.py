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
SPAN = 100  # quantile steps a numeric column's density is read over (a tenth of the distribution)
GIBBS_SWEEPS = 20  # conditional sampling: sweeps over the conditioned dimensions (one is exact for one column)


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

    def _category_terms(self, c: dict[str, Any], cells: Any) -> tuple[np.ndarray, np.ndarray]:
        """Each cell's log frequency (a category never seen: half of one row's) and the middle of its interval
        of [0, 1] (one never seen: 0.5, z = 0)."""
        edges = self._category_edges(c)
        index = {v: i for i, v in enumerate(c["categories"])}
        slots = np.array([len(c["categories"]) if is_missing(v) else index.get(v, -1) for v in cells.tolist()])
        known = (slots >= 0) & (slots < len(edges) - 1)
        s = np.where(known, slots, 0)
        p = np.where(known, edges[s + 1] - edges[s], 0.5 / max(1, sum(c["counts"])))
        return np.log(np.maximum(p, 1e-12)), np.where(known, (edges[s] + edges[s + 1]) / 2, 0.5)

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

    def sample(self, n: int, generator: torch.Generator | None = None,
               allowed: dict[str, Any] | None = None) -> dict[str, np.ndarray]:
        """n draws: per column, floats (numeric, NaN where missing) or category slots (the last: missing).

        `allowed` (column -> genlab.models.tabular.conditions.Allowed) conditions the draw exactly: each conditioned
        column's z is confined to the z-interval(s) its condition maps to through its marginal, so z is drawn from
        N(0, R) truncated to that box (Gibbs sampling over the conditioned dimensions, `GIBBS_SWEEPS` sweeps, each
        coordinate from its truncated normal given the others), and the other dimensions from the Gaussian
        conditional given those (the usual Schur complement)."""
        correlation = self.correlation.numpy()
        # the nearest positive-definite matrix by eigenvalue clipping, for a stable square root
        w, v = np.linalg.eigh(correlation)
        correlation = (v * np.clip(w, 1e-9, None)) @ v.T
        bounds = self._z_bounds(allowed or {})
        z = np.empty((n, len(self.dims)))
        fixed, free = sorted(bounds), [j for j in range(len(self.dims)) if j not in bounds]
        if fixed:
            z[:, fixed] = _truncated_gaussian(correlation[np.ix_(fixed, fixed)], [bounds[j] for j in fixed], n,
                                              generator)
        if free:
            rff = correlation[np.ix_(free, free)]
            mean = np.zeros((n, len(free)))
            if fixed:
                gain = np.linalg.solve(correlation[np.ix_(fixed, fixed)], correlation[np.ix_(fixed, free)])
                mean, rff = z[:, fixed] @ gain, rff - correlation[np.ix_(free, fixed)] @ gain
            w, v = np.linalg.eigh(rff)
            root = v * np.sqrt(np.clip(w, 0, None))
            noise = torch.randn(n, len(free), generator=generator, dtype=torch.float64).numpy()
            z[:, free] = mean + noise @ root.T
        u = _normal_cdf(z)
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

    def _z_bounds(self, allowed: dict[str, Any]) -> dict[int, np.ndarray]:
        """dimension -> (k, 2) z-intervals that the conditions on its column allow."""
        bounds = {}
        for j, (name, role) in enumerate(self.dims):
            if name not in allowed:
                continue
            a, c = allowed[name], next(col for col in self.columns if col["name"] == name)
            if c["kind"] == "categorical":
                edges = self._category_edges(c)
                u = [(edges[s], edges[s + 1]) for s in sorted(a.slots) if s < len(edges) - 1]
            elif role == "missing":  # a conditioned value is present
                u = [(0.0, 1.0 - float(self.missing_rate[self.numeric_index[name]]))]
            else:
                interval = _u_interval(self.quantiles[self.numeric_index[name]].numpy(), *a.reach(c))
                u = [interval] if interval else []
            if not u:
                from genlab.errors import ConfigError

                raise ConfigError(f"--where {','.join(a.text)}: the model gives no probability to such values of "
                                  f"{name!r}", "ask for values the training data holds more of")
            bounds[j] = _normal_icdf(np.array(u, dtype=float))
        return bounds

    def log_density(self, frame: Any, values: dict[str, np.ndarray]) -> np.ndarray:
        """log p(row) (N,) in nats: the marginals' log densities plus the Gaussian copula's, log c(z) =
        -1/2 z^T (R^-1 - I) z - 1/2 log det R. A numeric column's density is read off its quantile table over
        `SPAN` quantile steps (a k-nearest-neighbour estimate, steadier than adjacent quantiles), with Laplace
        tails beyond the range seen (scale: the interquartile range / 1.349), so that a value outside every
        training value scores lower the further out it lies; a category by its frequency (one never seen: half
        of one row's). A missing cell counts by the column's missing rate."""
        n = len(frame)
        grid = np.linspace(0, 1, QUANTILES)
        z = np.zeros((n, len(self.dims)))
        logf = np.zeros(n)
        for j, (name, role) in enumerate(self.dims):
            c = next(col for col in self.columns if col["name"] == name)
            if c["kind"] == "categorical":
                log_p, middle = self._category_terms(c, frame[name])
                logf += log_p
                z[:, j] = _normal_icdf(middle)
            elif role == "missing":
                rate = float(self.missing_rate[self.numeric_index[name]])
                gone = np.isnan(values[name])
                logf += np.where(gone, np.log(max(rate, 1e-12)), np.log(max(1 - rate, 1e-12)))
                z[:, j] = _normal_icdf(np.where(gone, 1 - rate / 2, (1 - rate) / 2))
            else:
                x = values[name]
                q = self.quantiles[self.numeric_index[name]].numpy()
                present = ~np.isnan(x)
                xs = np.where(present, x, q[QUANTILES // 2])
                u = np.interp(xs, q, grid)
                k = np.clip(np.round(u * (QUANTILES - 1)).astype(int), SPAN // 2, QUANTILES - 1 - SPAN // 2)
                scale = max((q[3 * QUANTILES // 4] - q[QUANTILES // 4]) / 1.349, (q[-1] - q[0]) / QUANTILES, 1e-12)
                width = np.maximum(q[k + SPAN // 2] - q[k - SPAN // 2], scale / 100)
                density = (SPAN / (QUANTILES - 1)) / width
                beyond = np.maximum(q[0] - xs, 0) + np.maximum(xs - q[-1], 0)
                logf += np.where(present, np.log(density) - beyond / scale, 0.0)
                z[:, j] = np.where(present, _normal_icdf(u), 0.0)
        correlation = self.correlation.numpy()
        w, v = np.linalg.eigh(correlation)
        w = np.clip(w, 1e-6, None)
        precision = (v / w) @ v.T
        copula = -0.5 * np.einsum("ni,ij,nj->n", z, precision - np.eye(len(w)), z) - 0.5 * np.log(w).sum()
        return logf + copula


    def tail_nats(self, frame: Any, values: dict[str, np.ndarray]) -> np.ndarray:
        """-log of each value's tail probability under its marginal, summed over the columns (N,), in nats: COPOD's
        score (Li, Zhao, Botta, Ionescu and Hu, "COPOD: Copula-Based Outlier Detection", ICDM 2020) read off this
        model's own marginals. A numeric column counts the tail on the side its distribution leans to (the right
        when its mean, the quantile table's average, exceeds its median; else the left): -log(1 - F(x)) or
        -log F(x), F kept within half a quantile step of 0 and 1 inside the range seen and decaying as the density's
        Laplace tails beyond it (`log_density`); a category, -log of its frequency (one never seen: half of one
        row's); a missing cell, -log of the missing rate. Where the density asks "how rare is a value like this",
        the tail asks "how extreme": a row far out in many columns at once scores high even when the copula's
        correlation says its columns agree (docs/anomaly.md has the figures)."""
        n = len(frame)
        grid = np.linspace(0, 1, QUANTILES)
        floor = 0.5 / (QUANTILES - 1)
        nats = np.zeros(n)
        for name, role in self.dims:
            c = next(col for col in self.columns if col["name"] == name)
            if c["kind"] == "categorical":
                nats -= self._category_terms(c, frame[name])[0]
            elif role == "missing":
                rate = float(self.missing_rate[self.numeric_index[name]])
                gone = np.isnan(values[name])
                nats -= np.where(gone, np.log(max(rate, 1e-12)), np.log(max(1 - rate, 1e-12)))
            else:
                x = values[name]
                q = self.quantiles[self.numeric_index[name]].numpy()
                present = ~np.isnan(x)
                xs = np.where(present, x, q[QUANTILES // 2])
                scale = max((q[3 * QUANTILES // 4] - q[QUANTILES // 4]) / 1.349, (q[-1] - q[0]) / QUANTILES, 1e-12)
                u = np.clip(np.interp(xs, q, grid), floor, 1 - floor)
                right = q.mean() > q[QUANTILES // 2]
                tail = 1 - u if right else u
                beyond = np.maximum(xs - q[-1], 0) if right else np.maximum(q[0] - xs, 0)
                nats += np.where(present, -np.log(tail) + beyond / scale, 0.0)
        return nats


def _u_interval(q: np.ndarray, low: float, high: float) -> tuple[float, float] | None:
    """The u in [0, 1] whose values x = interp(u, grid, q) (the quantile function) lie in [low, high], or None."""
    grid = np.linspace(0, 1, len(q))

    def at(i: int, x: float) -> float:  # u where the segment q[i - 1] -> q[i] (q[i - 1] < q[i]) passes x
        return grid[i - 1] + (x - q[i - 1]) / (q[i] - q[i - 1]) * (grid[i] - grid[i - 1])

    i, k = int(np.searchsorted(q, low, "left")), int(np.searchsorted(q, high, "right"))
    if i == len(q) or k == 0:
        return None
    u_low = 0.0 if i == 0 else at(i, low)
    u_high = 1.0 if k == len(q) else at(k, high)
    return (u_low, u_high) if u_high >= u_low else None


def _truncated_gaussian(correlation: np.ndarray, bounds: list[np.ndarray], n: int,
                        generator: torch.Generator | None) -> np.ndarray:
    """(n, d) draws of z ~ N(0, correlation) confined to a union of intervals per coordinate (bounds[i]: (k, 2)):
    Gibbs sampling, each coordinate by the inverse CDF of its truncated conditional normal given the others."""
    d = len(bounds)
    precision = np.linalg.inv(correlation)
    z = np.zeros((n, d))
    for sweep in range(GIBBS_SWEEPS if d > 1 else 1):
        for i in range(d):
            if sweep == 0:  # start from each coordinate's own truncated marginal
                mean, sd = np.zeros(n), 1.0
            else:
                mean = -(z @ precision[i] - precision[i, i] * z[:, i]) / precision[i, i]
                sd = 1.0 / np.sqrt(precision[i, i])
            z[:, i] = _truncated_normal(mean, sd, bounds[i], generator)
    return z


def _truncated_normal(mean: np.ndarray, sd: float, bounds: np.ndarray, generator: torch.Generator | None) -> np.ndarray:
    """One draw per row of N(mean, sd^2) restricted to the union of the intervals `bounds` (k, 2): an interval
    chosen by its probability, then the inverse CDF inside it. Where every interval lies so far in the tail that
    its probability underflows, the nearest end is taken."""
    pick, draw = torch.rand(2, len(mean), generator=generator, dtype=torch.float64).numpy()
    a = _normal_cdf((bounds[None, :, 0] - mean[:, None]) / sd)
    b = _normal_cdf((bounds[None, :, 1] - mean[:, None]) / sd)
    mass = np.maximum(b - a, 0.0)
    total = mass.sum(1)
    k = np.minimum((np.cumsum(mass, 1) < (pick * total)[:, None]).sum(1), len(bounds) - 1)
    rows = np.arange(len(mean))
    lo, hi = a[rows, k], b[rows, k]
    from scipy.special import ndtri

    z = mean + sd * ndtri(np.clip(lo + draw * (hi - lo), 1e-300, 1 - 1e-16))
    nearest = np.argmin(np.abs(bounds.mean(1)[None] - mean[:, None]), 1)
    k = np.where(total > 0, k, nearest)
    return np.clip(np.where(np.isfinite(z), z, mean), bounds[k, 0], bounds[k, 1])
