"""A table as a matrix of floats and back: the encoding the table families learn (Xu et al. 2019, CTGAN).

Each column becomes one or more spans of the matrix:

- a numeric (or datetime, as seconds, sampled at the coarsest of day, hour, minute or second that
  fits every training value) column by **mode-specific normalisation**: a variational
  Gaussian mixture (scikit-learn's BayesianGaussianMixture, at most 10 components, those above
  0.5% of the weight kept) is fitted to it, a value is given a mode drawn from its posterior over
  the components, and it is written as that mode one-hot (a `softmax` span) and the scalar
  (x - mu_k) / (4 sigma_k), clipped to (-1, 1) (a `tanh` span of width 1). A column with missing
  cells gets a third, 2-wide `softmax` span, present or missing.
- a categorical column as a one-hot `softmax` span over its categories, with one more slot for
  missing when the training part has missing cells.
- an id column as nothing: samples get new keys.

Decoding takes the most likely slot of each softmax span and inverts the scalar in the chosen mode,
clips to the range seen, rounds integer columns, and writes dtypes, categories and datetime formats
back as the input had them. The layout is plain JSON (config.json holds it): no pickles.
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from typing import Any

import numpy as np

MAX_MODES = 10
MODE_WEIGHT = 0.005  # components below this share of the weight are dropped (CTGAN's threshold)
FIT_ROWS = 20_000  # rows the mixture of a column is fitted on at most (a seeded subsample beyond)


@dataclasses.dataclass
class Span:
    """One block of the encoded matrix: `tanh` (width 1, a scalar in (-1, 1)) or `softmax` (a one-hot)."""

    column: str
    role: str  # "value" | "mode" | "missing" | "category"
    start: int
    width: int
    activation: str  # "tanh" | "softmax"


class TableLayout:
    """The fitted encoding of a table's columns; `spans` lists the matrix's blocks in order."""

    def __init__(self, spec: dict[str, Any]):
        self.spec = spec
        self.spans: list[Span] = []
        width = 0
        for col in spec["columns"]:
            for role, size, activation in _blocks(col):
                self.spans.append(Span(col["name"], role, width, size, activation))
                width += size
        self.width = width
        self.span_of = {(s.column, s.role): s for s in self.spans}  # (column, role) -> its span

    # -- construction and persistence ---------------------------------------------------------

    @classmethod
    def fit(cls, table: Any, seed: int = 0, mixtures: bool = True, tokens: bool = False) -> TableLayout:
        """Fit the encoding to a `genlab.data.TableData`'s training part; `mixtures=False` keeps the columns' facts
        without the numeric columns' mixtures (a model that needs no matrix, as the copula); `tokens=True` adds
        each numeric column's token intervals (tokens.py, the gpt kind's encoding)."""
        from genlab.data.tables import column_numbers
        from genlab.models.tabular.tokens import fit_numeric_tokens

        rng = np.random.default_rng(seed)
        columns = []
        for c in table.columns:
            col = c.to_dict()
            if c.kind in ("numeric", "datetime"):
                x = column_numbers(table.train[c.name], c)
                if mixtures:
                    col["modes"] = _fit_modes(x[~np.isnan(x)], rng)
                if tokens:
                    col["tokens"] = fit_numeric_tokens(x[~np.isnan(x)])
                col["has_missing"] = bool(np.isnan(x).any())
                if c.kind == "datetime":  # samples are rounded to the coarsest unit every value is a whole number of
                    present = x[~np.isnan(x)]
                    col["resolution"] = next((u for u in (86400, 3600, 60) if np.all(np.mod(present, u) == 0)), 1)
            elif c.kind == "categorical":
                col["has_missing"] = c.missing > 0
            columns.append(col)
        return cls({"columns": columns, "columns_order": [c.name for c in table.columns]})

    def to_json(self) -> str:
        return json.dumps(self.spec, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> TableLayout:
        return cls(json.loads(text))

    @property
    def columns(self) -> list[dict[str, Any]]:
        return self.spec["columns"]

    def column_obj(self, name: str):
        """A column as genlab.data.tables.Column (what to_seconds and from_seconds take)."""
        from genlab.data.tables import Column

        return Column.from_dict(self.column(name))

    def column(self, name: str) -> dict[str, Any]:
        for col in self.columns:
            if col["name"] == name:
                return col
        raise KeyError(name)

    # -- encoding -----------------------------------------------------------------------------

    def encode(self, frame: Any, seed: int = 0, clip: bool = True) -> np.ndarray:
        """(N, width) float32: each row of `frame` in the layout (modes drawn from their posteriors, seeded).
        `clip=False` leaves the scalars unclipped, so that a value outside every mode stays far out (anomaly
        scores); training and sampling clip them to (-1, 1)."""
        from genlab.data.tables import column_numbers

        rng = np.random.default_rng(seed)
        out = np.zeros((len(frame), self.width), dtype=np.float32)
        spans = self.span_of
        for col in self.columns:
            name, kind = col["name"], col["kind"]
            if kind in ("numeric", "datetime"):
                x = column_numbers(frame[name], self.column_obj(name))
                missing = np.isnan(x)
                means, stds, weights = (np.array(col["modes"][k]) for k in ("means", "stds", "weights"))
                filled = np.where(missing, means[np.argmax(weights)], x)
                # posterior over the modes, then a mode drawn from it for each value (the most likely when scoring)
                logp = (np.log(weights)[None] - np.log(stds)[None]
                        - 0.5 * ((filled[:, None] - means[None]) / stds[None]) ** 2)
                p = np.exp(logp - logp.max(1, keepdims=True))
                p /= p.sum(1, keepdims=True)
                mode = (p.cumsum(1) > rng.random((len(x), 1))).argmax(1) if clip else p.argmax(1)
                scalar = (filled - means[mode]) / (4 * stds[mode])
                if clip:
                    scalar = np.clip(scalar, -0.99, 0.99)
                value, modes = spans[(name, "value")], spans[(name, "mode")]
                out[:, value.start] = scalar
                out[np.arange(len(x)), modes.start + mode] = 1
                if col["has_missing"]:
                    flag = spans[(name, "missing")]
                    out[np.arange(len(x)), flag.start + missing.astype(int)] = 1
            elif kind == "categorical":
                slots = category_slots(frame[name], col)
                out[np.arange(len(slots)), spans[(name, "category")].start + slots] = 1
        return out

    # -- decoding -----------------------------------------------------------------------------

    def decode(self, matrix: np.ndarray) -> Any:
        """A DataFrame from (N, width) rows in the layout (softmax spans by their largest slot)."""
        spans = self.span_of
        values: dict[str, np.ndarray] = {}
        for col in self.columns:
            name, kind = col["name"], col["kind"]
            if kind in ("numeric", "datetime"):
                value, modes = spans[(name, "value")], spans[(name, "mode")]
                means, stds = np.array(col["modes"]["means"]), np.array(col["modes"]["stds"])
                mode = matrix[:, modes.start : modes.start + modes.width].argmax(1)
                x = np.clip(matrix[:, value.start], -1, 1) * 4 * stds[mode] + means[mode]
                if col["has_missing"]:
                    flag = spans[(name, "missing")]
                    x = np.where(matrix[:, flag.start + 1] > matrix[:, flag.start], np.nan, x)
                values[name] = x
            elif kind == "categorical":
                span = spans[(name, "category")]
                values[name] = matrix[:, span.start : span.start + span.width].argmax(1)
        return self.frame(values, len(matrix))

    def frame(self, values: dict[str, np.ndarray], n: int) -> Any:
        """The DataFrame of sampled columns: numbers (NaN: missing) clipped to the range seen, rounded to integers or
        to the datetime resolution, category slots (the last: missing) as categories, new keys for ids, and every
        column in the input's order and dtype."""
        import pandas as pd

        from genlab.data.tables import from_seconds

        data = {}
        for col in self.columns:
            name, kind = col["name"], col["kind"]
            if kind in ("numeric", "datetime"):
                x = np.clip(values[name], col["minimum"], col["maximum"])
                if kind == "datetime":
                    data[name] = from_seconds(np.round(x / col["resolution"]) * col["resolution"],
                                              self.column_obj(name))
                else:
                    data[name] = _numeric_series(np.round(x) if col.get("integer") else x, col)
            elif kind == "categorical":
                cats = list(col["categories"]) + [None]
                data[name] = _restore_dtype(pd.Series([cats[i] for i in values[name]], dtype=object), col)
            else:  # id: new keys
                data[name] = _new_ids(n, col)
        return pd.DataFrame({name: data[name] for name in self.spec["columns_order"]})


def _blocks(col: dict[str, Any]) -> list[tuple[str, int, str]]:
    kind = col["kind"]
    if kind in ("numeric", "datetime") and "modes" not in col:
        return []  # a layout without mixtures (TableLayout.fit(mixtures=False)) has no matrix
    if kind in ("numeric", "datetime"):
        blocks = [("value", 1, "tanh"), ("mode", len(col["modes"]["means"]), "softmax")]
        return blocks + ([("missing", 2, "softmax")] if col["has_missing"] else [])
    if kind == "categorical":
        return [("category", len(col["categories"]) + (1 if col["has_missing"] else 0), "softmax")]
    return []


def _fit_modes(x: np.ndarray, rng: np.random.Generator) -> dict[str, list[float]]:
    """The components of a column's variational Gaussian mixture: means, standard deviations, weights."""
    from sklearn.mixture import BayesianGaussianMixture

    distinct = np.unique(x)
    if len(distinct) <= 1:
        return {"means": [float(distinct[0]) if len(distinct) else 0.0], "stds": [1.0], "weights": [1.0]}
    if len(x) > FIT_ROWS:
        x = rng.choice(x, FIT_ROWS, replace=False)
    scale = float(np.std(x)) or 1.0
    mixture = BayesianGaussianMixture(n_components=min(MAX_MODES, len(distinct)),
                                      weight_concentration_prior_type="dirichlet_process",
                                      weight_concentration_prior=0.001, max_iter=100, n_init=1,
                                      random_state=int(rng.integers(2**31)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning: 100 iterations are what CTGAN runs as well
        mixture.fit(x[:, None] / scale)
    keep = mixture.weights_ > MODE_WEIGHT
    if not keep.any():
        keep[np.argmax(mixture.weights_)] = True
    means = mixture.means_[keep, 0] * scale
    stds = np.sqrt(mixture.covariances_[keep].reshape(-1)) * scale
    # a component narrower than the data's resolution would make every value a mode of its own
    stds = np.maximum(stds, 1e-3 * scale)
    weights = mixture.weights_[keep] / mixture.weights_[keep].sum()
    return {"means": means.tolist(), "stds": stds.tolist(), "weights": weights.tolist()}



def category_slots(values: Any, col: dict[str, Any]) -> np.ndarray:
    """A categorical column's cells as slots of its categories (missing: the slot after them, or the commonest
    category's where training had no missing cells); a category never seen is refused."""
    index = {_key(v): i for i, v in enumerate(col["categories"])}
    slots = np.array([index.get(_key(v), -1) if not is_missing(v) else len(col["categories"])
                      for v in values.tolist()], dtype=np.int64)
    unknown = slots == -1
    if unknown.any():
        from genlab.errors import DataError

        bad = values.to_numpy()[unknown][0]
        raise DataError(f"column {col['name']!r} holds {bad!r}, a category the model never saw",
                        f"the model knows {len(col['categories'])} values: "
                        f"{', '.join(map(str, col['categories'][:10]))}")
    if not col["has_missing"]:
        slots = np.where(slots == len(col["categories"]), 0, slots)
    return slots


def is_missing(v: Any) -> bool:
    """Whether one cell is missing (None or NaN)."""
    return v is None or (isinstance(v, float) and np.isnan(v))


def _key(v: Any) -> Any:
    """Categories compare as Python values: numpy scalars and their Python equals are one category."""
    return v.item() if hasattr(v, "item") else v


def _numeric_series(x: np.ndarray, col: dict[str, Any]):
    import pandas as pd

    dtype = col["dtype"]
    if dtype.startswith(("int", "Int", "uint")):
        if np.isnan(x).any():
            return pd.Series(x).astype("Int64")
        return pd.Series(x.astype(np.int64)).astype(dtype)
    return pd.Series(x.astype(np.float64))


def _restore_dtype(series: Any, col: dict[str, Any]):
    dtype = col["dtype"]
    if dtype == "bool" and not series.isna().any():
        return series.astype(bool)
    if dtype.startswith(("int", "uint")) and not series.isna().any():
        return series.astype(dtype)
    if dtype.startswith("float"):
        return series.astype(float)
    return series


def _new_ids(n: int, col: dict[str, Any]):
    import pandas as pd

    if col["dtype"].startswith(("int", "uint")):
        return pd.Series(np.arange(1, n + 1, dtype=np.int64))
    return pd.Series([f"{col['name']}-{i:07d}" for i in range(1, n + 1)], dtype=object)
