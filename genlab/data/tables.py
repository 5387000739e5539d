"""Tables: a CSV, TSV or Parquet file read into a pandas DataFrame, every column given a kind.

Kinds, inferred and overridable by a schema file (YAML, `column: kind` or `column: {kind: ...}`):

- `numeric`: numbers; `integer` when every value is whole, with the range seen, so samples keep
  both;
- `categorical`: strings, booleans, or what the schema names so (numeric codes, say); the categories
  are kept with their counts, most frequent first;
- `datetime`: strings that parse as dates (modelled as seconds since the epoch, written back in
  the input's format);
- `id`: a key, one value per row, named like one (`id`, `*_id`, `uuid`, `key`) or a string column
  with no value twice: not modelled; samples get new keys.

Missing values are read as such (empty cells, `NA`, `null`, `?` and the other markers pandas
knows) and stay missing: the models learn where they occur. A file is split into a training and
a held-out part by a seeded shuffle (`holdout` of the rows); a folder holding `train.*` and
`test.*` keeps its own split.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any, Literal

import numpy as np

from genlab.data.base import DataReport
from genlab.errors import DataError

TABLE_SUFFIXES = (".csv", ".tsv", ".parquet")
KINDS = ("numeric", "categorical", "datetime", "id")
# what a cell means when it means "unknown", besides pandas' own markers ("", "NA", "null", "NaN", ...)
EXTRA_NA = ("?", "-", "--", "n/a", "none", "None", "missing")
ID_NAME = re.compile(r"^(id|uuid|guid|key)$|(_id|_uuid|_key)$|^id_", re.IGNORECASE)


@dataclasses.dataclass
class Column:
    """What genlab knows of one column: its kind and what a sample of it must keep."""

    name: str
    kind: Literal["numeric", "categorical", "datetime", "id"]
    dtype: str  # pandas dtype of the input, restored in samples
    missing: int = 0  # missing cells in the training part
    integer: bool = False  # numeric: every value whole
    minimum: float | None = None  # numeric and datetime (seconds): the range seen
    maximum: float | None = None
    categories: list[Any] = dataclasses.field(default_factory=list)  # categorical: most frequent first
    counts: list[int] = dataclasses.field(default_factory=list)  # categorical: how often each occurs
    datetime_format: str | None = None  # datetime: how the input wrote them

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if not (v is None or v is False or v == [])}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Column:
        """A Column from `to_dict`'s output; keys that are not fields (a model's additions) are left out."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def describe(self) -> str:
        missing = f", {self.missing:,} missing" if self.missing else ""
        if self.kind == "numeric":
            kind = "integer" if self.integer else "numeric"
            return f"{kind} in [{_number(self.minimum)}, {_number(self.maximum)}]{missing}"
        if self.kind == "categorical":
            shown = ", ".join(f"{c} ({n:,})" for c, n in zip(self.categories[:6], self.counts[:6], strict=False))
            more = f" and {len(self.categories) - 6} more" if len(self.categories) > 6 else ""
            return f"categorical, {len(self.categories)} values: {shown}{more}{missing}"
        if self.kind == "datetime":
            return f"datetime ({self.datetime_format or 'ISO'}){missing}"
        return "id (not modelled; samples get new keys)"


def _number(x: float | None) -> str:
    return "?" if x is None else f"{x:,.6g}"


@dataclasses.dataclass
class TableData:
    """A table as training and held-out DataFrames with the columns' kinds."""

    name: str
    train: Any  # pandas.DataFrame
    test: Any
    columns: list[Column]
    report: DataReport

    kind = "table"

    def column(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        raise DataError(f"the table has no column {name!r}", f"use one of {', '.join(c.name for c in self.columns)}")


def read_table(path: Path) -> Any:
    """One file as a DataFrame, missing markers read as missing, surrounding spaces dropped."""
    import pandas as pd

    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            frame = pd.read_parquet(path)
        else:
            frame = pd.read_csv(path, sep="\t" if suffix == ".tsv" else ",", skipinitialspace=True,
                                na_values=list(EXTRA_NA), keep_default_na=True, low_memory=False)
    except (ValueError, OSError, pd.errors.ParserError, UnicodeDecodeError) as error:
        raise DataError(f"{path} could not be read as a table: {str(error).strip()[:300]}",
                        "pass a CSV with a header row, a TSV, or a Parquet file") from None
    if frame.empty or len(frame.columns) == 0:
        raise DataError(f"{path} holds no rows", "pass a table with a header row and at least one row")
    unnamed = [c for c in frame.columns if str(c).startswith("Unnamed: ")]
    if unnamed and len(unnamed) == len(frame.columns):
        raise DataError(f"{path} has no header row", "add a first row naming the columns")
    for column in frame.columns:  # strings: strip the spaces a CSV writer puts after commas
        if frame[column].dtype == object:
            frame[column] = frame[column].map(lambda v: v.strip() if isinstance(v, str) else v)
    return frame


def read_schema(path: Path) -> dict[str, dict[str, Any]]:
    """A schema file as {column: {"kind": ...}}; a clear error for anything else."""
    import yaml

    try:
        raw = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as error:
        raise DataError(f"the schema {path} could not be read: {error}",
                        "write it as YAML: one line `column: kind` per column to override") from None
    if not isinstance(raw, dict):
        raise DataError(f"the schema {path} is not a mapping of columns", "write `column: kind` lines")
    out = {}
    for name, spec in raw.items():
        spec = {"kind": spec} if isinstance(spec, str) else spec
        if not isinstance(spec, dict) or spec.get("kind") not in KINDS:
            given = spec.get("kind") if isinstance(spec, dict) else spec
            raise DataError(f"the schema gives column {name!r} the kind {given!r}", f"use one of {', '.join(KINDS)}")
        out[str(name)] = spec
    return out


def _looks_like_dates(values: Any) -> str | None:
    """The format of a string column whose values parse as dates (95% or more), else None."""
    import warnings

    import pandas as pd

    sample = values.dropna().astype(str)
    if len(sample) == 0 or not sample.str.contains(r"\d", regex=True).all():
        return None
    sample = sample.iloc[:2000]
    for fmt in ("%Y-%m-%d", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S", "%d/%m/%Y", "%m/%d/%Y", "%Y/%m/%d",
                "%d.%m.%Y", "%Y-%m-%d %H:%M"):
        parsed = pd.to_datetime(sample, format=fmt, errors="coerce")
        if parsed.notna().mean() >= 0.95:
            return fmt
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        parsed = pd.to_datetime(sample, errors="coerce", format="mixed")
    return "mixed" if parsed.notna().mean() >= 0.95 and not sample.str.fullmatch(r"-?\d+(\.\d+)?").any() else None


def infer_column(name: str, values: Any, override: dict[str, Any] | None = None) -> Column:
    """The kind of one column (`override`: the schema's entry) and the facts samples must keep."""
    import pandas as pd

    kind = (override or {}).get("kind")
    present = values.dropna()
    dtype = str(values.dtype)
    fmt = None
    if kind is None:
        if pd.api.types.is_bool_dtype(values):
            kind = "categorical"
        elif ID_NAME.search(str(name)) and present.is_unique and len(present) == len(values):
            kind = "id"
        elif pd.api.types.is_numeric_dtype(values):
            kind = "numeric"
        elif pd.api.types.is_datetime64_any_dtype(values):
            kind = "datetime"
        elif (fmt := _looks_like_dates(values)) is not None:
            kind = "datetime"
        elif len(present) > 20 and present.is_unique:
            kind = "id"
        else:
            kind = "categorical"
    column = Column(name=str(name), kind=kind, dtype=dtype, missing=int(values.isna().sum()))
    if kind == "numeric":
        numbers = pd.to_numeric(present, errors="coerce")
        if numbers.isna().any():
            bad = present[numbers.isna()].iloc[0]
            raise DataError(f"column {name!r} is declared numeric but holds {bad!r}",
                            "fix the cell, or declare the column categorical in the schema")
        column.integer = bool(np.all(np.mod(numbers.to_numpy(dtype=float), 1) == 0))
        column.minimum, column.maximum = float(numbers.min()), float(numbers.max())
    elif kind == "categorical":
        counts = present.value_counts(sort=True)
        column.categories = [_plain(v) for v in counts.index]
        column.counts = [int(n) for n in counts.to_numpy()]
    elif kind == "datetime":
        column.datetime_format = fmt if fmt not in (None, "mixed") else None
        seconds = to_seconds(values, column)
        if seconds.notna().sum() == 0:
            raise DataError(f"column {name!r} is declared datetime but no value parses as a date",
                            "declare it categorical in the schema")
        column.minimum, column.maximum = float(seconds.min()), float(seconds.max())
    return column


def _plain(v: Any) -> Any:
    """numpy scalars as Python ones, for JSON."""
    return v.item() if hasattr(v, "item") else v


def to_seconds(values: Any, column: Column) -> Any:
    """A datetime column as float seconds since the epoch (missing stays NaN)."""
    import warnings

    import pandas as pd

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if pd.api.types.is_datetime64_any_dtype(values):
            parsed = values
        else:
            parsed = pd.to_datetime(values, format=column.datetime_format or "mixed", errors="coerce")
    seconds = (parsed - pd.Timestamp("1970-01-01")) / pd.Timedelta(seconds=1)
    return seconds.astype(float)


def column_numbers(values: Any, column: Column) -> np.ndarray:
    """A numeric or datetime column as float64 (datetimes in seconds since the epoch, missing as NaN)."""
    return (to_seconds(values, column) if column.kind == "datetime" else values.astype(float)).to_numpy(dtype=float)


def from_seconds(seconds: np.ndarray, column: Column) -> Any:
    """Float seconds back to the column's form: datetimes, or strings in its input format."""
    import pandas as pd

    parsed = pd.to_datetime(pd.Series(seconds), unit="s", errors="coerce")
    if column.dtype.startswith("datetime"):
        return parsed
    fmt = column.datetime_format or "%Y-%m-%d %H:%M:%S"
    return parsed.dt.strftime(fmt).where(parsed.notna(), None)


def load_table(path: str | Path, schema: str | Path | None = None, holdout: float = 0.2, seed: int = 0) -> TableData:
    """A table file (or a folder with train.* and test.*) as TableData, its columns' kinds inferred or taken from
    `schema`; a file is split by a seeded shuffle into 1 - holdout for training and holdout held out."""
    path = Path(path).expanduser()
    if path.is_dir():
        parts = {stem: [p for p in path.iterdir() if p.stem == stem and p.suffix.lower() in TABLE_SUFFIXES]
                 for stem in ("train", "test")}
        if not all(parts.values()):
            raise DataError(f"{path} is a folder without train and test tables",
                            "pass one table file, or a folder holding train.csv and test.csv")
        train, test = read_table(parts["train"][0]), read_table(parts["test"][0])
        if list(train.columns) != list(test.columns):
            raise DataError(f"{parts['train'][0].name} and {parts['test'][0].name} have different columns",
                            "give both the same header row")
        split = f"{parts['train'][0].name} / {parts['test'][0].name}"
    else:
        if not 0 < holdout < 1:
            raise DataError(f"holdout = {holdout} must be between 0 and 1", "e.g. 0.2 keeps a fifth of rows apart")
        frame = read_table(path)
        if len(frame) < 10:
            raise DataError(f"{path} has {len(frame)} rows", "a table needs at least 10 rows to train on")
        order = np.random.default_rng(seed).permutation(len(frame))
        cut = len(frame) - max(1, int(round(len(frame) * holdout)))
        train = frame.iloc[order[:cut]].reset_index(drop=True)
        test = frame.iloc[order[cut:]].reset_index(drop=True)
        split = f"seeded shuffle (seed {seed}), {holdout:.0%} held out"
    return table_from_frames(path.stem, train, test, schema, source=str(path), split=split)


def table_from_frames(name: str, train: Any, test: Any, schema: str | Path | None = None, source: str = "",
                      split: str = "", resolved_from: str = "path") -> TableData:
    """TableData from a training and a held-out DataFrame: the columns' kinds inferred on the training part
    (or taken from `schema`), and the report `genlab data check` prints."""
    overrides = read_schema(Path(schema)) if schema else {}
    unknown = sorted(set(overrides) - {str(c) for c in train.columns})
    if unknown:
        raise DataError(f"the schema names columns the table lacks: {', '.join(unknown)}",
                        f"the columns are {', '.join(map(str, train.columns))}")
    empty = [str(name) for name in train.columns if train[name].isna().all()]
    if empty:
        raise DataError(f"columns with no values at all: {', '.join(empty)}", "drop them or fill them")
    columns = [infer_column(str(name), train[name], overrides.get(str(name))) for name in train.columns]
    report = DataReport(name=name, kind="table", source=source, resolved_from=resolved_from,
                        counts={"train": len(train), "test": len(test)}, shape=[len(train), len(columns)])
    duplicates = int(train.duplicated().sum())
    report.notes.append(f"split: {split}")
    report.notes += [f"column {c.name}: {c.describe()}" for c in columns]
    if duplicates:
        report.notes.append(f"{duplicates:,} training rows repeat an earlier row exactly")
    return TableData(name=name, train=train, test=test, columns=columns, report=report)
