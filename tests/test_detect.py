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


def test_the_copula_scores_by_tail_probabilities_with_score_tail(run, tmp_path, capsys):
    model = genlab.load(run / "run")
    rows = load_table(run / "people.csv").test.copy()
    q = model.net.quantiles[model.net.numeric_index["income"]].numpy()
    rows.loc[0, "income"] = q[-1]  # the largest income seen: far in income's long right tail
    rows.loc[1, "income"] = q[-1] * 2  # beyond it: further still
    tail = model.anomaly_score(rows, score="tail").numpy()
    assert np.isfinite(tail).all() and tail[1] > tail[0] > np.percentile(tail[2:], 90)
    # by hand: -log of the upper tail for income (its mean exceeds its median), the others' the same way
    income = model.anomaly_score(rows.head(1), score="tail").item()
    others = model.anomaly_score(rows.head(1).assign(income=float(np.median(q))), score="tail").item()
    columns = 5  # age, job, income, joined, rich (the id is not modelled)
    assert (income - others) * columns * np.log(2) == pytest.approx(-np.log(0.5 / 1000) + np.log(0.5), rel=1e-3)
    assert not np.allclose(tail, model.anomaly_score(rows).numpy())  # not the density
    rows.to_csv(tmp_path / "rows.csv", index=False)
    assert main(["detect", str(run / "run"), "--data", str(tmp_path / "rows.csv"), "--score", "tail",
                 "--out", str(tmp_path / "s.csv")]) == 0
    np.testing.assert_allclose(pd.read_csv(tmp_path / "s.csv")["score"], tail, rtol=1e-4)
    with pytest.raises(genlab.errors.ConfigError, match="not one of density, tail"):
        model.anomaly_score(rows, score="depth")
    genlab.train("tabular", str(run / "people.csv"), tmp_path / "tvae", model={"hidden": 32, "latent_dim": 4},
                 max_steps=5, progress=False, threads=1)
    assert main(["detect", str(tmp_path / "tvae"), "--data", str(tmp_path / "rows.csv"), "--score", "tail"]) == 2
    assert "the tail score is the copula's" in capsys.readouterr().err


def test_diffusion_options_are_refused_for_other_families(run, tmp_path, capsys):
    load_table(run / "people.csv").test.to_csv(tmp_path / "rows.csv", index=False)
    assert main(["detect", str(run / "run"), "--data", str(tmp_path / "rows.csv"), "--max-log-snr", "0"]) == 2
    assert "--max-log-snr applies to diffusion models" in capsys.readouterr().err
