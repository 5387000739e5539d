"""The tabular family: the layout's round trip, TVAE training and sampling through the CLI, the table metrics."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

import genlab
from genlab.cli import main
from genlab.data.tables import load_table
from genlab.errors import ConfigError, DataError
from genlab.metrics import tables as tm
from genlab.models.tabular.layout import TableLayout


def people(n: int = 600, seed: int = 0) -> pd.DataFrame:
    """A small table with the kinds genlab models, where income depends on age and job."""
    rng = np.random.default_rng(seed)
    age = rng.integers(18, 80, n)
    job = rng.choice(["clerk", "nurse", "pilot"], n, p=[0.5, 0.3, 0.2])
    income = np.round(20_000 + 600 * age + np.where(job == "pilot", 40_000, 0) + rng.normal(0, 3000, n), 2)
    frame = pd.DataFrame({"id": np.arange(n), "age": age, "job": job, "income": income,
                          "joined": pd.to_datetime("2015-01-01") + pd.to_timedelta(rng.integers(0, 3000, n), "D"),
                          "rich": np.where(income > 60_000, "yes", "no")})
    frame["joined"] = frame["joined"].dt.strftime("%Y-%m-%d")
    frame.loc[rng.choice(n, 30, replace=False), "job"] = None
    return frame


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    path = tmp_path_factory.mktemp("t") / "people.csv"
    people().to_csv(path, index=False)
    return path


def test_the_layout_round_trips_categories_missing_values_and_ranges(table):
    data = load_table(table)
    layout = TableLayout.fit(data)
    matrix = layout.encode(data.train)
    assert matrix.shape == (len(data.train), layout.width) and np.isfinite(matrix).all()
    back = layout.decode(matrix)
    assert list(back.columns) == list(data.train.columns)
    assert (back["job"].isna() == data.train["job"].isna()).all()
    assert (back["job"].dropna() == data.train["job"].dropna()).all() and (back["rich"] == data.train["rich"]).all()
    assert back["age"].dtype == np.int64 and back["age"].between(18, 79).all()
    assert np.abs(back["age"] - data.train["age"]).max() <= 1  # the scalar is kept in float32
    assert np.abs(back["income"] - data.train["income"]).max() < 1.0
    assert (back["joined"] == data.train["joined"]).mean() > 0.99 and back["id"].is_unique
    again = TableLayout.from_json(layout.to_json())
    np.testing.assert_array_equal(again.encode(data.train), matrix)
    unseen = data.train.head(3).copy()
    unseen.loc[0, "job"] = "astronaut"
    with pytest.raises(DataError, match="'astronaut', a category the model never saw"):
        layout.encode(unseen)


def test_tvae_trains_samples_and_keeps_the_columns(table, tmp_path, capsys):
    run = tmp_path / "run"
    genlab.train("tabular", str(table), run, model={"hidden": 64, "latent_dim": 16}, max_steps=150, batch_size=100,
                 progress=False, threads=1)
    model = genlab.load(run)
    rows = model.sample_rows(400, generator=torch.Generator().manual_seed(0))
    data = load_table(table)
    assert list(rows.columns) == list(data.train.columns) and len(rows) == 400
    assert set(rows["job"].dropna()) <= {"clerk", "nurse", "pilot"} and rows["job"].isna().any()
    assert rows["age"].between(18, 79).all() and rows["age"].dtype == np.int64
    report = tm.quality(data.test, rows, data.columns)
    assert 0.6 < report["quality"] <= 1 and set(report["per_column"]) == {"age", "job", "income", "joined", "rich"}
    assert main(["sample", str(run), "--n", "50", "--out", str(tmp_path / "s.csv"), "--seed", "3"]) == 0
    written = pd.read_csv(tmp_path / "s.csv")
    assert len(written) == 50 and list(written.columns) == list(data.train.columns)
    assert main(["sample", str(run), "--n", "50", "--out", str(tmp_path / "s2.csv"), "--seed", "3"]) == 0
    assert (tmp_path / "s.csv").read_text() == (tmp_path / "s2.csv").read_text()  # the seed fixes the rows
    assert main(["sample", str(run), "--n", "0", "--out", str(tmp_path / "x.csv")]) == 2
    assert "at least one is needed" in capsys.readouterr().err
    assert main(["sample", str(run), "--out", str(tmp_path / "x.png")]) == 2
    assert "writes .csv or .parquet" in capsys.readouterr().err


def test_quality_scores_are_one_for_the_same_table_and_fall_for_a_broken_one(table):
    data = load_table(table)
    same = tm.quality(data.train, data.train, data.columns)
    assert same["quality"] == pytest.approx(1.0)
    broken = data.train.copy()
    broken["income"] = np.random.default_rng(0).permutation(broken["income"].to_numpy())  # pairs broken, shapes kept
    report = tm.quality(data.train, broken, data.columns)
    assert report["column_shapes"] == pytest.approx(1.0) and report["per_pair"]["age ~ income"] < 0.8
    shifted = data.train.assign(age=data.train["age"] + 30)
    assert tm.quality(data.train, shifted, data.columns)["per_column"]["age"] < 0.6


def test_utility_c2st_and_privacy_tell_real_from_noise(table):
    data = load_table(table)
    real = tm.tstr(data.train, data.test, data.columns, "rich")
    noise = data.train.copy()
    for c in ("age", "income"):
        noise[c] = np.random.default_rng(1).permutation(noise[c].to_numpy())
    fake = tm.tstr(noise, data.test, data.columns, "rich")
    assert real["auc"] > 0.95 and fake["auc"] < real["auc"] - 0.2
    assert tm.c2st(data.train.iloc[:240], data.train.iloc[240:], data.columns) < 0.65
    assert tm.c2st(data.train, noise.assign(age=noise["age"] * 2), data.columns) > 0.9
    copies = tm.privacy(data.train, data.test, data.train, data.columns)
    assert copies["exact_copies_synthetic"] == 1.0 and copies["dcr_synthetic_median"] == 0.0
    fresh = tm.privacy(data.train, data.test, data.test, data.columns)
    assert fresh["exact_copies_synthetic"] == fresh["exact_copies_holdout"] < 0.05


def test_a_table_model_refuses_image_verbs_with_the_verb_it_can_do(table, tmp_path, capsys):
    run = tmp_path / "run"
    genlab.train("tabular", str(table), run, model={"hidden": 16, "latent_dim": 4}, max_steps=5, batch_size=50,
                 progress=False, threads=1)
    assert main(["reconstruct", str(run)]) == 2
    err = capsys.readouterr().err
    assert "cannot" in err and f"genlab sample {run}" in err
    with pytest.raises(ConfigError, match="at least one"):
        genlab.load(run).sample_rows(0)


def test_tabddpm_multinomial_posterior_is_bayes_rule_over_the_transition_matrices():
    from genlab.models.tabular.ddpm import TabDDPM
    from genlab.models.tabular.layout import Span

    k = 5
    net = TabDDPM([Span("c", "category", 0, k, "softmax")], k, hidden=8, depth=1, timesteps=20)
    alpha = net.alpha.double()

    def step(t):  # Q_t = alpha_t I + (1 - alpha_t) / K: keep the category or draw one uniformly
        return alpha[t] * torch.eye(k, dtype=torch.float64) + (1 - alpha[t]) / k

    cumulative = torch.eye(k, dtype=torch.float64)
    for t in range(20):
        previous = cumulative  # q(x_{t-1} | x_0) as a matrix (the identity before the first step)
        cumulative = cumulative @ step(t)
        ab = net.alpha_bar.double()[t]  # the closed form of q(x_t | x_0) is the product of the steps
        assert torch.allclose(cumulative, ab * torch.eye(k, dtype=torch.float64) + (1 - ab) / k, atol=1e-5)
        for x0 in range(k):
            for xt in range(k):
                bayes = previous[x0] * step(t)[:, xt]  # q(x_{t-1} = j | x_0) q(x_t | x_{t-1} = j)
                got = net._posterior(torch.eye(k)[[xt]], torch.eye(k)[[x0]], torch.tensor([t]), k)[0]
                assert torch.allclose(got.double(), bayes / bayes.sum(), atol=1e-5), (t, x0, xt)


def test_tabddpm_trains_samples_and_keeps_the_columns(table, tmp_path):
    run = tmp_path / "ddpm"
    genlab.train("tabular", str(table), run, model={"kind": "ddpm", "hidden": 64, "timesteps": 20}, max_steps=300,
                 batch_size=100, lr=3e-3, progress=False, threads=1)
    model = genlab.load(run)
    assert model.config.hidden == 64 and genlab.load(run).config.kind == "ddpm"
    data = load_table(table)
    rows = model.sample_rows(600, generator=torch.Generator().manual_seed(0))
    assert list(rows.columns) == list(data.train.columns) and rows["age"].dtype == np.int64
    assert set(rows["job"].dropna()) <= {"clerk", "nurse", "pilot"} and rows["job"].isna().any()
    report = tm.quality(data.train, rows, data.columns)
    assert report["column_shapes"] > 0.9, report  # 0.95 here; untrained (one step) it is 0.76
    again = model.sample_rows(20, generator=torch.Generator().manual_seed(4))
    assert again.equals(model.sample_rows(20, generator=torch.Generator().manual_seed(4)))


def test_ctgan_trains_as_a_game_samples_the_columns_and_survives_save_and_load(table, tmp_path):
    run = tmp_path / "ctgan"
    genlab.train("tabular", str(table), run, model={"kind": "ctgan", "hidden": 32, "latent_dim": 8}, max_steps=40,
                 batch_size=50, val_every=20, log_every=10, progress=False, threads=1)
    train = yaml.safe_load((run / "config.yaml").read_text())["train"]
    assert train["lr"] == 2e-4 and list(train["betas"]) == [0.5, 0.9] and train["grad_clip"] == 0  # CTGAN's own
    logged = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    trained = [m for m in logged if "train/gradient_penalty" in m]  # both players stepped: a game, not one loss
    assert trained and all(np.isfinite([m["train/loss"], m["train/g_loss"], m["train/cond_loss"]]).all()
                           for m in trained)
    assert np.isfinite([m["val/loss"] for m in logged if "val/loss" in m]).all() and trained[-1]["step"] >= 39
    model = genlab.load(run)
    assert model.config.kind == "ctgan" and model.config.pac == 10
    data = load_table(table)
    rows = model.sample_rows(300, generator=torch.Generator().manual_seed(0))
    assert list(rows.columns) == list(data.train.columns) and len(rows) == 300
    assert rows["age"].dtype == np.int64 and rows["age"].between(18, 79).all() and rows["id"].is_unique
    assert set(rows["job"].dropna()) <= {"clerk", "nurse", "pilot"} and set(rows["rich"]) <= {"yes", "no"}
    joined = pd.to_datetime(data.train["joined"])
    assert pd.to_datetime(rows["joined"]).between(joined.min(), joined.max()).all()
    model.save_pretrained(tmp_path / "again")
    again = genlab.load(tmp_path / "again")
    one = again.sample_rows(40, generator=torch.Generator().manual_seed(7))
    assert one.equals(model.sample_rows(40, generator=torch.Generator().manual_seed(7)))
    assert not one.equals(model.sample_rows(40, generator=torch.Generator().manual_seed(8)))
    pilots = model.sample_rows(20, where="job=pilot", generator=torch.Generator().manual_seed(0))
    assert len(pilots) == 20 and (pilots["job"] == "pilot").all()
    scores = again.anomaly_score(data.test)  # minus the critic's score, each row packed with itself
    assert scores.shape == (len(data.test),) and torch.isfinite(scores).all() and scores.std() > 0


def test_ctgan_refuses_a_batch_size_that_is_not_a_multiple_of_pac(table, tmp_path):
    with pytest.raises(ConfigError, match=r"batch size 64 is not a multiple of pac = 10") as error:
        genlab.train("tabular", str(table), tmp_path / "run", model={"kind": "ctgan", "hidden": 8}, max_steps=2,
                     batch_size=64, progress=False, threads=1)
    assert "--batch-size 70 (or 60)" in error.value.fix
    with pytest.raises(ConfigError, match="pac = 0 must be >= 1"):
        genlab.train("tabular", str(table), tmp_path / "run2", model={"kind": "ctgan", "pac": 0}, progress=False)


def test_ctgan_conditions_train_by_log_frequency_and_sample_by_frequency():
    from genlab.models.tabular.ctgan import CTGAN, ConditionSampler
    from genlab.models.tabular.layout import Span

    counts = np.array([9000, 900, 90, 10])  # a skewed column beside an even one and a numeric scalar
    spans = [Span("x", "value", 0, 1, "tanh"), Span("skewed", "category", 1, 4, "softmax"),
             Span("even", "category", 5, 2, "softmax")]
    rng = np.random.default_rng(0)
    skewed = np.repeat(np.arange(4), counts)
    rows = np.zeros((len(skewed), 7), dtype=np.float32)
    rows[:, 0] = skewed / 4  # the scalar tells the category a real row came from
    rows[np.arange(len(rows)), 1 + skewed] = 1
    rows[np.arange(len(rows)), 5 + rng.integers(0, 2, len(rows))] = 1
    sampler = ConditionSampler(spans, torch.from_numpy(rows))
    real, fake_slots, real_slots = sampler.batch(200_000, np.random.default_rng(1))
    fake_slots, real_slots = fake_slots.numpy(), real_slots.numpy()
    assert abs((fake_slots >= 4).mean() - 0.5) < 0.01  # the column: uniformly
    log_share = np.log1p(counts) / np.log1p(counts).sum()
    drawn = np.bincount(fake_slots[fake_slots < 4], minlength=4) / (fake_slots < 4).sum()
    np.testing.assert_allclose(drawn, log_share, atol=0.005)  # rarest: 0.11, where its frequency is 0.001
    assert np.array_equal(np.sort(fake_slots), np.sort(real_slots)) and not np.array_equal(fake_slots, real_slots)
    on_skewed = real_slots < 4  # each real row holds the category of its condition
    assert np.array_equal(real[on_skewed, 1:5].argmax(1).numpy(), real_slots[on_skewed])
    np.testing.assert_allclose(real[on_skewed, 0].numpy(), real_slots[on_skewed] / 4)
    assert np.array_equal(real[~on_skewed, 5:7].argmax(1).numpy(), real_slots[~on_skewed] - 4)

    net = CTGAN(spans, 7, [counts.tolist(), [1, 3]], latent_dim=4, hidden=8, depth=1)
    slots = net.conditions(200_000, torch.Generator().manual_seed(0)).numpy()
    assert abs((slots >= 4).mean() - 0.5) < 0.01
    sampled = np.bincount(slots[slots < 4], minlength=4) / (slots < 4).sum()
    np.testing.assert_allclose(sampled, counts / counts.sum(), atol=0.005)  # the data's frequencies, not logs
    np.testing.assert_allclose((slots == 5).sum() / (slots >= 4).sum(), 0.75, atol=0.01)
    allowed = {1: torch.tensor([False, True, True, False])}  # --where skewed=b|c: every row conditioned on it
    slots = net.conditions(100_000, torch.Generator().manual_seed(1), allowed).numpy()
    assert set(slots) == {1, 2} and abs((slots == 1).mean() - 900 / 990) < 0.01


def test_the_copula_is_fitted_in_closed_form_and_keeps_marginals_and_correlation(table, tmp_path):
    run = tmp_path / "copula"
    genlab.train("tabular", str(table), run, model={"kind": "copula"}, progress=False, threads=1)
    assert not (run / "checkpoints").exists() and (run / "model" / "model.safetensors").exists()
    model = genlab.load(run)
    assert model.num_parameters() == 0  # what it learned is in buffers: quantiles, missing rates, correlation
    data = load_table(table)
    rows = model.sample_rows(3000, generator=torch.Generator().manual_seed(0))
    assert list(rows.columns) == list(data.train.columns) and rows["age"].dtype == np.int64
    report = tm.quality(data.train, rows, data.columns)
    assert report["column_shapes"] > 0.95  # the columns' own marginals
    real_r = np.corrcoef(data.train["age"], data.train["income"])[0, 1]
    assert abs(np.corrcoef(rows["age"], rows["income"])[0, 1] - real_r) < 0.1
    assert abs(rows["job"].isna().mean() - data.train["job"].isna().mean()) < 0.03
    again = genlab.load(run).sample_rows(50, generator=torch.Generator().manual_seed(5))
    assert again.equals(model.sample_rows(50, generator=torch.Generator().manual_seed(5)))


def test_detect_flags_rows_outside_the_table_and_sets_its_threshold_without_labels(table, tmp_path, capsys):
    run = tmp_path / "run"
    genlab.train("tabular", str(table), run, model={"hidden": 64, "latent_dim": 8}, max_steps=200, batch_size=100,
                 progress=False, threads=1)
    rows = load_table(table).test.copy()
    rows.loc[0, "age"], rows.loc[1, "income"] = 400, -1e7  # far outside every value seen
    rows.to_csv(tmp_path / "new.csv", index=False)
    assert main(["detect", str(run), "--data", str(tmp_path / "new.csv"), "--out", str(tmp_path / "s.csv"),
                 "--percentile", "95"]) == 0
    assert "expected false alarms 5%" in capsys.readouterr().out
    scores = pd.read_csv(tmp_path / "s.csv")
    assert len(scores) == len(rows) and scores["anomalous"].iloc[:2].all()
    assert scores["score"].iloc[:2].min() > scores["score"].iloc[2:].max()
    assert scores["anomalous"].iloc[2:].mean() < 0.25  # normal rows: about the 5% asked for
    unseen = rows.head(3).assign(job="astronaut")
    unseen.to_csv(tmp_path / "bad.csv", index=False)
    assert main(["detect", str(run), "--data", str(tmp_path / "bad.csv")]) == 2
    assert "a category the model never saw" in capsys.readouterr().err


def test_copula_scores_rows_by_their_negative_log_density(table, tmp_path):
    run = tmp_path / "run"
    genlab.train("tabular", str(table), run, model={"kind": "copula"}, progress=False)
    model = genlab.load(run)
    rows = load_table(table).test.copy()
    rows.loc[0, "age"], rows.loc[1, "income"] = 400, -1e7  # far outside every value seen
    rows.loc[2, "job"] = "astronaut"  # a category never seen: scored, not refused
    scores = model.anomaly_score(rows).numpy()
    assert np.isfinite(scores).all() and scores[:3].min() > scores[3:].max()
    further = rows.head(1).assign(age=4000)  # further out scores higher: the tails decay
    assert model.anomaly_score(further).item() > scores[0]


def test_numeric_tokens_keep_point_masses_and_cut_the_rest_into_bins_of_equal_count():
    from genlab.models.tabular.tokens import decode_numbers, encode_numbers, fit_numeric_tokens, log_volume

    rng = np.random.default_rng(0)
    x = np.where(rng.random(20_000) < 0.6, 0.0, rng.lognormal(8, 1, 20_000))  # capital gains: mostly 0
    col = {"tokens": fit_numeric_tokens(x, max_tokens=32), "has_missing": True}
    lo, hi = np.array(col["tokens"]["lo"]), np.array(col["tokens"]["hi"])
    assert len(lo) == 32 and lo[0] == hi[0] == 0.0 and (lo[1:] < hi[1:]).all()
    token, distance = encode_numbers(np.r_[x, np.nan, -5.0, 1e9], col)
    assert (token[:20_000][x == 0] == 0).all() and token[20_000] == 32  # the point mass; the missing slot
    inside = (lo[token[:20_000]] <= x) & (x <= hi[token[:20_000]])
    assert inside.all() and (distance[:20_001] == 0).all() and distance[-2] == 5.0 and distance[-1] > 0
    counts = np.bincount(token[:20_000][x > 0], minlength=32)[1:]
    assert counts.min() > 0.8 * counts.mean() and counts.max() < 1.2 * counts.mean()  # equal-count bins
    back = decode_numbers(token, col, rng.random(len(token)))
    drawn, held = back[:20_000], token[:20_000]
    assert np.isnan(back[20_000]) and ((lo[held] <= drawn) & (drawn <= hi[held])).all()
    volume = log_volume(np.r_[x[:3], 1e9], token[[0, 1, 2, -1]], distance[[0, 1, 2, -1]], col)
    assert volume[-1] > 1e3 and np.isfinite(volume).all()  # far beyond the range: the tail
    few = fit_numeric_tokens(np.array([3.0, 1.0, 3.0, 2.0]))
    assert few == {"lo": [1.0, 2.0, 3.0], "hi": [1.0, 2.0, 3.0]}  # few distinct values: each its own token


def test_the_table_gpt_is_a_normalised_causal_chain_over_the_columns():
    from genlab.models.tabular.gpt import TabularGPT

    torch.manual_seed(0)
    net = TabularGPT([3, 2, 4], width=32, depth=2).eval()
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.1)  # away from the identity start
        every = torch.cartesian_prod(torch.arange(3), torch.arange(2), torch.arange(4))
        total = torch.exp(-net.nll_per_row(every)).sum()
        assert abs(total.item() - 1.0) < 1e-5  # p sums to 1 over all 24 rows
        logits = net.logits(every[:1])
        changed = every[:1].clone()
        changed[0, 1] = 1  # the second column's value reaches the third's logits only
        other = net.logits(changed)
        torch.testing.assert_close(logits[0, :2], other[0, :2])
        assert not torch.allclose(logits[0, 2], other[0, 2])
        draws = net.sample(20_000, generator=torch.Generator().manual_seed(1))
        p_first = torch.softmax(net.logits(every[:1])[0, 0, :3], 0)
        seen = torch.bincount(draws[:, 0], minlength=3) / 20_000
        assert (seen - p_first).abs().max() < 0.015  # ancestral draws follow the model's own conditionals
        assert p_first.max() < 0.9  # (a distribution worth checking)
        pair = draws[:, 0] * 2 + draws[:, 1]
        p_pair = torch.exp(-net.nll_per_row(every)).view(3, 2, 4).sum(2).flatten()  # the joint, third summed out
        assert (torch.bincount(pair, minlength=6) / 20_000 - p_pair).abs().max() < 0.015


def test_the_gpt_kind_trains_samples_the_columns_and_scores_rows_outside_the_table(table, tmp_path):
    run = tmp_path / "gpt"
    genlab.train("tabular", str(table), run, model={"kind": "gpt", "hidden": 64}, max_steps=150, batch_size=100,
                 lr=3e-3, progress=False, threads=1)
    model = genlab.load(run)
    assert model.config.kind == "gpt" and model.config.hidden == 64
    data = load_table(table)
    rows = model.sample_rows(600, generator=torch.Generator().manual_seed(0))
    assert list(rows.columns) == list(data.train.columns) and rows["age"].dtype == np.int64
    assert set(rows["job"].dropna()) <= {"clerk", "nurse", "pilot"} and rows["job"].isna().any()
    assert rows["age"].between(18, 79).all() and rows["id"].is_unique
    report = tm.quality(data.train, rows, data.columns)
    assert report["quality"] > 0.85, report
    pilots = rows[rows["job"] == "pilot"]["income"].mean() - rows[rows["job"] == "clerk"]["income"].mean()
    assert pilots > 25_000  # the link between columns is learned (40,000 in the data)
    again = model.sample_rows(30, generator=torch.Generator().manual_seed(3))
    assert again.equals(genlab.load(run).sample_rows(30, generator=torch.Generator().manual_seed(3)))
    test = data.test.copy()
    test.loc[0, "age"], test.loc[1, "income"] = 400, -1e7
    scores = model.anomaly_score(test).numpy()
    assert np.isfinite(scores).all() and scores[:2].min() > scores[2:].max()
    further = test.head(1).assign(age=4000)
    assert model.anomaly_score(further).item() > scores[0]
    shuffled = test.iloc[2:].copy()
    shuffled["income"] = shuffled["income"].sample(frac=1, random_state=0).to_numpy()  # links broken
    assert np.median(model.anomaly_score(shuffled).numpy()) > np.median(scores[2:])
    with pytest.raises(ConfigError, match="multiple of 32"):
        genlab.train("tabular", str(table), tmp_path / "bad", model={"kind": "gpt", "hidden": 40}, progress=False)
