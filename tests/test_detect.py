"""genlab detect measured on labelled data: known normal examples in --data, known anomalies in --anomalies."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

import genlab
from genlab.cli import main
from genlab.data.tables import load_table
from tests.test_tabular import people


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("detect")
    people(1500).to_csv(folder / "people.csv", index=False)
    genlab.train("tabular", str(folder / "people.csv"), folder / "run", model={"kind": "copula"}, progress=False)
    return folder


def test_detect_measures_the_detector_on_known_anomalies(run, tmp_path, capsys):
    normal = load_table(run / "people.csv").test
    normal.to_csv(tmp_path / "normal.csv", index=False)
    odd = normal.head(40).copy()
    odd["income"] = odd["income"] * 3 + 150_000  # far richer than anyone of their age and job
    odd.to_csv(tmp_path / "odd.csv", index=False)
    out = tmp_path / "scores.csv"
    assert main(["detect", str(run / "run"), "--data", str(tmp_path / "normal.csv"), "--anomalies",
                 str(tmp_path / "odd.csv"), "--out", str(out), "--percentile", "95"]) == 0
    printed = capsys.readouterr().out
    scores = pd.read_csv(out)
    assert len(scores) == len(normal) + 40 and scores["truth"].sum() == 40
    auc = float(re.search(r"AUROC (\S+),", printed).group(1))
    assert auc == pytest.approx(roc_auc_score(scores["truth"], scores["score"]), abs=1e-4) and auc > 0.95
    assert "of anomalies detected" in printed
    page = (tmp_path / "scores.html").read_text()
    assert "average_precision" in page and page.count("<img") == 1


def test_a_report_without_known_anomalies_is_refused(run, tmp_path, capsys):
    load_table(run / "people.csv").test.to_csv(tmp_path / "normal.csv", index=False)
    assert main(["detect", str(run / "run"), "--data", str(tmp_path / "normal.csv"), "--report", "r.html"]) == 2
    assert "needs --anomalies" in capsys.readouterr().err


def test_the_tabular_ddpm_scores_rows_by_its_variational_bound(run, tmp_path):
    genlab.train("tabular", str(run / "people.csv"), tmp_path / "ddpm", model={"kind": "ddpm", "hidden": 64},
                 max_steps=200, batch_size=200, progress=False, threads=1)
    model = genlab.load(tmp_path / "ddpm")
    rows = load_table(run / "people.csv").test.copy()
    rows.loc[0, "age"], rows.loc[1, "income"] = 400, -1e7  # far outside every value seen
    scores = model.anomaly_score(rows).numpy()
    assert scores[:2].min() > scores[2:].max()
    np.testing.assert_array_equal(scores, model.anomaly_score(rows).numpy())  # fixed noise: the same score again
