"""Conditions on a table's columns for conditional sampling: `genlab sample RUN --where "sex=Female,age>40"`.

A condition names a column, an operator and a value:

- a categorical column takes `=` and `!=` (several values with `|`: `race=White|Black`); the values are
  matched to the categories the model knows by their text, so `sex=Female` and `flag=True` both work;
- a numeric or datetime column takes `=`, `!=`, `<`, `<=`, `>`, `>=` (datetimes as the table writes them).

Conditions on one column intersect, so `age>=30,age<40` is a range. What a condition allows is kept as a set of
category slots or as an interval of the decoded value; `mask` tells which rows of a sampled frame meet every
condition, the test that conditional sampling's results must pass. A condition no row of the training data
could meet (a category never seen, a range outside the values seen) is refused with the values that exist.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import re
from typing import Any

import numpy as np

from genlab.errors import ConfigError

_CONDITION = re.compile(r"^\s*(?P<column>.+?)\s*(?P<op><=|>=|!=|=|<|>)\s*(?P<value>.*?)\s*$")


@dataclasses.dataclass
class Allowed:
    """What the conditions allow of one column: category slots (categorical) or an interval with excluded points
    (numeric and datetime, in the model's numbers: datetimes as seconds)."""

    column: str
    slots: set[int] | None = None
    low: float = -math.inf
    high: float = math.inf
    low_open: bool = False
    high_open: bool = False
    excluded: set[float] = dataclasses.field(default_factory=set)
    text: list[str] = dataclasses.field(default_factory=list)  # the conditions as written, for messages

    def admits(self, x: np.ndarray) -> np.ndarray:
        """Which of the numbers `x` (NaN: missing, never admitted) lie in the interval and off the excluded points."""
        with np.errstate(invalid="ignore"):
            ok = (x > self.low) if self.low_open else (x >= self.low)
            ok &= (x < self.high) if self.high_open else (x <= self.high)
        for v in self.excluded:
            ok &= x != v
        return ok & ~np.isnan(x)

    def closed(self, col: dict[str, Any]) -> tuple[float, float]:
        """The closed range [first, last] of values a sample can take, within the column's range seen; for an
        integer column the first and last whole numbers admitted (`age>40` is 41..max). Empty when first > last."""
        low, high = max(self.low, col["minimum"]), min(self.high, col["maximum"])
        if not col.get("integer"):
            return low, high
        shut_low = self.low_open and low == self.low and low == math.floor(low)  # age>40 excludes 40 itself
        shut_high = self.high_open and high == self.high and high == math.ceil(high)
        first = math.floor(low) + 1 if shut_low else math.ceil(low)
        last = math.ceil(high) - 1 if shut_high else math.floor(high)
        return float(first), float(last)

    def reach(self, col: dict[str, Any]) -> tuple[float, float]:
        """The continuous values that decode into `closed`'s range: samples of an integer column are rounded, so
        [first - 1/2, last + 1/2] for one, [first, last] for the others."""
        first, last = self.closed(col)
        half = 0.5 if col.get("integer") else 0.0
        return first - half, last + half


class Conditions:
    """Parsed, checked conditions on the columns of a layout (genlab.models.tabular.layout.TableLayout)."""

    def __init__(self, allowed: dict[str, Allowed], layout: Any):
        self.allowed, self.layout = allowed, layout

    def __bool__(self) -> bool:
        return bool(self.allowed)

    def __str__(self) -> str:
        return ",".join(t for a in self.allowed.values() for t in a.text)

    @classmethod
    def parse(cls, where: str | dict[str, Any] | None, layout: Any) -> Conditions:
        """From `"sex=Female,age>40"` (comma-separated; quote a value that holds a comma) or `{"sex": "Female"}`
        (equalities; a list of values for several)."""
        if not where:
            return cls({}, layout)
        if isinstance(where, dict):
            items = [(str(k), "=", "|".join(map(str, v)) if isinstance(v, list | tuple) else str(v))
                     for k, v in where.items()]
        else:
            items = []
            for part in next(csv.reader([where], skipinitialspace=True)):
                if not part.strip():
                    continue
                m = _CONDITION.match(part)
                if not m:
                    raise ConfigError(f"--where {part!r} is not a condition",
                                      "write COLUMN OP VALUE with OP one of = != < <= > >=, e.g. age>40")
                items.append((m["column"], m["op"], m["value"]))
        allowed: dict[str, Allowed] = {}
        for column, op, value in items:
            try:
                col = layout.column(column)
            except KeyError:
                names = [c["name"] for c in layout.columns if c["kind"] != "id"]
                raise ConfigError(f"--where names {column!r}, not a column of this model's table",
                                  f"the columns are {', '.join(names)}") from None
            a = allowed.setdefault(column, Allowed(column))
            a.text.append(f"{column}{op}{value}")
            if col["kind"] == "categorical":
                _category(a, col, op, value)
            elif col["kind"] in ("numeric", "datetime"):
                _number(a, col, op, value, layout)
            else:
                raise ConfigError(f"--where {column}{op}{value}: {column!r} is an id column, which samples make anew",
                                  "condition on the other columns")
        for a in allowed.values():
            _check_possible(a, layout.column(a.column))
        return cls(allowed, layout)

    def mask(self, frame: Any) -> np.ndarray:
        """(N,) bool: the rows of a decoded frame that meet every condition."""
        from genlab.data.tables import column_numbers

        ok = np.ones(len(frame), dtype=bool)
        for name, a in self.allowed.items():
            col = self.layout.column(name)
            if a.slots is not None:
                index = {str(c): i for i, c in enumerate(col["categories"])}
                slots = np.array([index.get(str(v), -1) for v in frame[name].tolist()])
                ok &= np.isin(slots, sorted(a.slots))
            else:
                ok &= a.admits(column_numbers(frame[name], self.layout.column_obj(name)))
        return ok


def _category(a: Allowed, col: dict[str, Any], op: str, value: str) -> None:
    names = [str(c) for c in col["categories"]]
    if op not in ("=", "!="):
        raise ConfigError(f"--where {a.column}{op}{value}: {a.column!r} is categorical and takes = or !=",
                          f"e.g. {a.column}={names[0]}")
    slots = set()
    for v in value.split("|"):
        if v not in names:
            shown = ", ".join(names[:20]) + (", ..." if len(names) > 20 else "")
            raise ConfigError(f"--where {a.column}{op}{value}: {v!r} is not a category of {a.column!r} in the "
                              "training data, so no sample can have it", f"the categories are {shown}")
        slots.add(names.index(v))
    everything = set(range(len(names)))
    chosen = slots if op == "=" else everything - slots
    a.slots = chosen if a.slots is None else a.slots & chosen


def _number(a: Allowed, col: dict[str, Any], op: str, value: str, layout: Any) -> None:
    x = _parse_number(a.column, col, value, layout)
    if op == "=":
        _raise_low(a, x, False)
        _lower_high(a, x, False)
    elif op == "!=":
        a.excluded.add(x)
    elif op in (">", ">="):
        _raise_low(a, x, op == ">")
    else:
        _lower_high(a, x, op == "<")


def _raise_low(a: Allowed, x: float, open_: bool) -> None:
    if x > a.low or (x == a.low and open_):
        a.low, a.low_open = x, open_


def _lower_high(a: Allowed, x: float, open_: bool) -> None:
    if x < a.high or (x == a.high and open_):
        a.high, a.high_open = x, open_


def _parse_number(column: str, col: dict[str, Any], value: str, layout: Any) -> float:
    if col["kind"] == "datetime":
        import pandas as pd

        from genlab.data.tables import column_numbers

        try:
            x = float(column_numbers(pd.Series([value]), layout.column_obj(column))[0])
        except (ValueError, TypeError):
            x = math.nan
        if math.isnan(x):
            raise ConfigError(f"--where {column}: {value!r} is not a date or time",
                              f"write it as the table does ({col.get('datetime_format') or 'ISO: 2020-01-31'})")
        return x
    try:
        x = float(value)
    except ValueError:
        raise ConfigError(f"--where {column}: {value!r} is not a number", f"e.g. {column}>{col['minimum']:g}") from None
    if math.isnan(x):
        raise ConfigError(f"--where {column}: NaN is not a value to compare with", f"e.g. {column}>{col['minimum']:g}")
    return x


def _check_possible(a: Allowed, col: dict[str, Any]) -> None:
    """Refuse conditions no sample can meet: samples keep to the training data's categories and value range, and
    integer columns to whole numbers."""
    if a.slots is not None:
        if not a.slots:
            raise ConfigError(f"--where {','.join(a.text)}: no category of {a.column!r} meets these together",
                              "loosen the conditions on this column")
        return
    first, last = a.closed(col)
    if col.get("integer"):
        # one whole number in range off the excluded points is enough: try as many as there are exclusions, plus one
        empty = first > last or all(float(v) in a.excluded
                                    for v in range(int(first), min(int(last), int(first) + len(a.excluded)) + 1))
    else:
        strict = (a.low_open and first == a.low) or (a.high_open and last == a.high)
        empty = first > last or (first == last and (strict or first in a.excluded))
    if empty:
        raise ConfigError(f"--where {','.join(a.text)}: impossible, since {a.column!r} ranges over "
                          f"{col['minimum']:g}..{col['maximum']:g}"
                          f"{' in whole numbers' if col.get('integer') else ''} in the training data",
                          "ask for values within that range")
