"""Smoke tests of the scale benchmarks (bench/stream_text.py, stream_images.py) at tiny settings: a file of their
own, so that the test runner can spread the slow smoke tests over the cores."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_streamed_text_benchmark_prepares_trains_and_measures_both_paths(tmp_path):
    out = tmp_path / "stream.json"
    # the in-memory baseline's path (bench/first_step.py on a data folder) is the image benchmark's test's too
    subprocess.run([sys.executable, str(ROOT / "bench" / "stream_text.py"), "--corpus-gb", "0.004", "--baseline-mb",
                    "0", "--steps", "2", "--tokenizers", "char", "--work", str(tmp_path), "--out", str(out)],
                   check=True, capture_output=True, timeout=300)
    results = json.loads(out.read_text())
    assert results["corpus"]["bytes"] >= 0.004 * 2**30 and results["prepare_char"]["tokens"]["train"] > 10**6
    assert 0 < results["train_char"]["first_step_seconds"] < results["train_char"]["seconds"]
    assert 100 < results["train_char"]["peak_tree_pss_mb"] <= results["train_char"]["peak_tree_rss_mb"] < 4096


def test_the_image_shards_benchmark_prepares_trains_and_measures_both_paths(tmp_path):
    out = tmp_path / "images.json"
    subprocess.run([sys.executable, str(ROOT / "bench" / "stream_images.py"), "--files", "160", "--size", "16",
                    "--steps", "2", "--work", str(tmp_path), "--out", str(out)], check=True, capture_output=True,
                   timeout=300)
    results = json.loads(out.read_text())
    assert results["folder"]["files"] == 160 and results["prepare"]["counts"] == {"train": 144, "test": 16}
    assert results["prepare"]["shape"] == [3, 16, 16]
    for part in ("shards", "in_memory"):
        assert 0 < results[part]["first_step_seconds"] < results[part]["seconds"], part
        assert 100 < results[part]["peak_tree_pss_mb"] <= results[part]["peak_tree_rss_mb"], part
