"""Conditional sampling of table models (genlab sample RUN --where ...): the conditions' parsing and refusals, the
copula's exact conditional draw, and the other kinds' constrained and rejection sampling."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

import genlab
from genlab.cli import main
from genlab.errors import ConfigError
from genlab.models.tabular.conditions import Conditions
from tests.test_tabular import people


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("conditions")
    people(1500).to_csv(folder / "people.csv", index=False)
    made = {}
    for kind in ("copula", "tvae", "ddpm", "gpt"):
        made[kind] = folder / kind
        genlab.train("tabular", str(folder / "people.csv"), made[kind], model={"kind": kind, "hidden": 64},
                     max_steps=150, batch_size=200, progress=False, threads=1)
    return made


def draw(run, n, where, seed=0):
    model = genlab.load(run)
    return model, model.sample_rows(n, generator=torch.Generator().manual_seed(seed), where=where)


@pytest.mark.parametrize("where, says", [
    ("height>3", "'height', not a column"),
    ("job=astronaut", "'astronaut' is not a category of 'job'"),
    ("job<pilot", "categorical and takes = or !="),
    ("age>200", "impossible, since 'age' ranges over 18..79 in whole numbers"),
    ("age>50,age<40", "impossible"),
    ("age>78.5,age<79", "impossible"),  # no whole number in between
    ("job=pilot,job=nurse", "no category of 'job' meets these together"),
    ("age>old", "'old' is not a number"),
    ("joined>someday", "'someday' is not a date or time"),
    ("id=3", "id column"),
    ("age", "is not a condition"),
])
def test_impossible_or_malformed_conditions_are_refused_with_the_fix(runs, where, says):
    model = genlab.load(runs["copula"])
    with pytest.raises(ConfigError, match=says):
        Conditions.parse(where, model.layout)


def test_conditions_parse_ranges_sets_and_dicts(runs):
    layout = genlab.load(runs["copula"]).layout
    c = Conditions.parse("age>=30, age<40, job!=clerk, joined>=2016-01-01", layout)
    a = c.allowed["age"]
    assert (a.low, a.high, a.low_open, a.high_open) == (30, 40, False, True)
    jobs = layout.column("job")["categories"]
    assert {jobs[s] for s in c.allowed["job"].slots} == {"nurse", "pilot"}
    frame = pd.DataFrame({"age": [30, 40, 35, 35], "job": ["nurse", "pilot", "clerk", None],
                          "joined": ["2016-01-01", "2017-01-01", "2017-01-01", "2017-01-01"]})
    assert c.mask(frame).tolist() == [True, False, False, False]
    d = Conditions.parse({"job": ["pilot", "nurse"], "rich": "yes"}, layout)
    assert {jobs[s] for s in d.allowed["job"].slots} == {"nurse", "pilot"} and str(d) == "job=pilot|nurse,rich=yes"


def test_the_copula_draws_from_its_exact_conditional(runs):
    """The conditional draw must match the model's own joint filtered by the condition (what rejection sampling
    from it would give), not merely meet the condition: with two conditioned columns this checks the Gibbs step."""
    model, rows = draw(runs["copula"], 4000, "job=pilot,age>=55")
    assert model.acceptance == 1.0 and len(rows) == 4000
    assert (rows["job"] == "pilot").all() and (rows["age"] >= 55).all()
    joint = model.sample_rows(200_000, generator=torch.Generator().manual_seed(1))
    kept = joint[(joint["job"] == "pilot") & (joint["age"] >= 55)]
    assert len(kept) > 2000
    for column in ("income", "age"):
        gap = abs(rows[column].mean() - kept[column].mean())
        assert gap < 4 * kept[column].std() / np.sqrt(len(rows)) + 1e-9, column
    assert abs((rows["rich"] == "yes").mean() - (kept["rich"] == "yes").mean()) < 0.04


def test_every_kind_meets_the_conditions(runs):
    for kind in ("tvae", "ddpm", "gpt"):
        model, rows = draw(runs[kind], 60, "job=pilot,income>50000")
        assert len(rows) == 60 and (rows["job"] == "pilot").all() and (rows["income"] > 50000).all()
        assert 0 < model.acceptance < 1
    again = draw(runs["tvae"], 60, "job=pilot,income>50000")[1]
    assert again.drop(columns="id").equals(draw(runs["tvae"], 60, "job=pilot,income>50000")[1].drop(columns="id"))


def test_a_condition_the_model_never_meets_is_an_error_not_a_hang(runs):
    with pytest.raises(ConfigError, match="almost never makes such rows"):
        draw(runs["tvae"], 5, "income=52345.678")  # a point of a continuous column


def test_sample_where_from_the_command_line(runs, tmp_path, capsys):
    out = tmp_path / "rows.csv"
    assert main(["sample", str(runs["copula"]), "--n", "50", "--where", "rich=yes,age<30", "--out", str(out)]) == 0
    assert "each meeting rich=yes,age<30 (100.0% of the rows drawn did)" in capsys.readouterr().out
    rows = pd.read_csv(out)
    assert len(rows) == 50 and (rows["rich"] == "yes").all() and (rows["age"] < 30).all()
    assert main(["sample", str(runs["copula"]), "--where", "age>500"]) == 2
    assert "impossible" in capsys.readouterr().err
