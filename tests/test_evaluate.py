"""`genlab eval`, `genlab compare` and `genlab reference` end to end on digits, and the report in a real browser."""

from __future__ import annotations

import json
import os
import pickle
import shutil
from pathlib import Path

import pytest
import torch

import genlab
from genlab.cli import main
from genlab.engine.runs import train_seconds
from genlab.errors import GenlabError, UnsafeFileError
from genlab.evaluation.compare import compare, rank
from genlab.evaluation.evaluate import evaluate
from genlab.metrics import GLOSSARY
from genlab.metrics.inception import load_inception_state

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


@pytest.fixture(scope="module")
def runs(tmp_path_factory, genlab_home):
    """Two short runs on digits: an unconditional VAE and a class-conditional one, each evaluated."""
    from tests.conftest import TINY_TRAIN, TINY_VAE

    root = tmp_path_factory.mktemp("runs")
    train = {**TINY_TRAIN, "max_steps": 60, "lr": 3e-3}
    plain = genlab.train("vae", "digits", root / "plain", model=TINY_VAE, **train)
    conditional = genlab.train("vae", "digits", root / "cond", model={**TINY_VAE, "condition": "class"}, **train)
    metrics = {run.name: evaluate(str(run), n=300, k=4, max_examples=200, progress=False)
               for run in (plain, conditional)}
    return plain, conditional, metrics


def test_eval_writes_every_metric_that_applies(runs):
    plain, conditional, metrics = runs
    for run in (plain, conditional):
        saved = json.loads((run / "metrics.json").read_text())
        for key in (
            "nll_nats", "bits_per_dim", "fd_genlab", "kid_genlab", "precision", "recall", "density",
            "coverage", "classifier_score", "samples_per_s", "parameters", "train_seconds",
            "reference_accuracy",
        ):
            assert saved[key] is not None and saved[key] == saved[key], key
        assert saved["fake_examples"] == 300 and saved["real_examples"] == 300 and saved["iwae_k"] == 4
        assert abs(sum(v for k, v in saved.items() if k.startswith("class_fraction/")) - 1) < 1e-9
        assert saved["nll_nats"] > 0 and saved["fd_genlab"] > 0 and 0 <= saved["recall"] <= 1
        page = (run / "report.html").read_text()
        assert "fd_genlab" in page and "reference classifier" in page and "data:image/png;base64," in page
        assert "http://" not in page and "https://" not in page  # self-contained
    assert "class_accuracy" in metrics["cond"] and "class_accuracy" not in metrics["plain"]


def test_eval_is_reproducible_under_a_seed(runs):
    plain, _, metrics = runs
    again = evaluate(str(plain), n=300, k=4, max_examples=200, progress=False)
    for key in ("nll_nats", "fd_genlab", "kid_genlab", "precision", "recall"):
        assert again[key] == metrics["plain"][key], key


def test_compare_ranks_and_recommends(runs, tmp_path):
    plain, conditional, _ = runs
    result = compare([str(plain), str(conditional)], out=str(tmp_path / "cmp.html"), progress=False)
    metrics = {run.name: json.loads((run / "metrics.json").read_text()) for run in (plain, conditional)}
    for key, ranks in result["ranks"].items():
        values = {run: metrics[run][key] for run in ranks if metrics[run].get(key) is not None}
        best = max(values, key=values.get) if GLOSSARY[key].better == "higher" else min(values, key=values.get)
        assert ranks[best] == 1, key
    assert {"quality", "diversity", "likelihood", "speed"} <= set(result["recommendations"])
    page = (tmp_path / "cmp.html").read_text()
    assert "Recommendation" in page and "plain" in page and "cond" in page
    assert json.loads((tmp_path / "cmp.json").read_text())["runs"] == ["plain", "cond"]


def test_compare_needs_two_runs_and_metrics(runs, tmp_path):
    plain, _, _ = runs
    with pytest.raises(GenlabError, match="at least two"):
        compare([str(plain)])
    bare = tmp_path / "bare"
    shutil.copytree(plain, bare)
    (bare / "metrics.json").unlink()
    with pytest.raises(GenlabError, match="no metrics.json"):
        compare([str(plain), str(bare)], out=str(tmp_path / "c.html"), evaluate_missing=False)


def test_rank_handles_ties_direction_and_missing():
    assert rank([3.0, 1.0, 2.0, None], "lower") == [3, 1, 2, None]
    assert rank([3.0, 1.0, 3.0], "higher") == [1, 3, 1]


def test_train_seconds_adds_up_resumed_sessions():
    history = [{"time": 1.0}, {"time": 5.0}, {"time": 0.5}, {"time": 3.0}, {"step": 3}]
    assert train_seconds(history) == 8.0
    assert train_seconds([]) is None


def test_reference_and_compare_cli(runs, capsys, tmp_path):
    plain, conditional, _ = runs
    assert main(["reference", "digits"]) == 0
    out = capsys.readouterr().out
    assert "(cached)" in out and "test accuracy" in out
    assert main(["compare", str(plain), str(conditional), "--out", str(tmp_path / "c.html")]) == 0
    out = capsys.readouterr().out
    assert "for sample quality" in out and (tmp_path / "c.html").exists()
    text = tmp_path / "poem.txt"
    text.write_text("not an image dataset\n" * 50)
    assert main(["reference", str(text)]) == 2
    assert "reference classifiers are for images" in capsys.readouterr().err


def test_inception_weights_file_is_checked_before_use(tmp_path):
    with pytest.raises(GenlabError, match="does not exist"):
        load_inception_state(tmp_path / "missing.pth")

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    evil = tmp_path / "evil.pth"
    evil.write_bytes(pickle.dumps({"w": Payload()}))
    with pytest.raises(UnsafeFileError):
        load_inception_state(evil)
    torch.save({"w": torch.ones(2)}, tmp_path / "ok.pth")
    assert torch.equal(load_inception_state(tmp_path / "ok.pth")["w"], torch.ones(2))
    assert not (tmp_path / "pwned").exists()


def test_report_renders_offline_in_chromium(runs):
    """Open report.html in headless Chromium with every network request refused; all images must load."""
    playwright = pytest.importorskip("playwright.sync_api", reason="pip install playwright (make test installs it)")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("no chromium binary: apt-get install chromium (make test installs it where apt works)")
    plain, _, _ = runs
    requests = []
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run"])
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.on("request", lambda r: requests.append(r.url))
        page.route("http*://**/*", lambda route: route.abort())
        page.goto((plain / "report.html").resolve().as_uri())
        images = page.eval_on_selector_all("img", "els => els.map(e => [e.complete, e.naturalWidth])")
        headings = page.eval_on_selector_all("h2", "els => els.map(e => e.textContent)")
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "report.png"), full_page=True)
        browser.close()
    assert images and all(done and width > 0 for done, width in images), images
    assert {"Metrics", "Samples", "Training curves", "Data"} <= set(headings)
    assert not [u for u in requests if u.startswith("http")], requests
