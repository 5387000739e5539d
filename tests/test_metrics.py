"""The metrics can fail: each test shows a metric separating good samples from bad ones.

Images use the 8x8 `digits` data and a tiny reference classifier trained once per module
under a temporary $GENLAB_HOME (a few seconds). Golden tests check the formulas against
direct implementations.
"""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import scipy.linalg
import torch
from scipy.ndimage import gaussian_filter

from genlab.data import load_data
from genlab.metrics.images import (
    class_accuracy,
    fd_genlab,
    frechet_distance,
    image_metrics,
    kid_genlab,
    mmd2_unbiased,
    polynomial_kernel,
    prdc,
    sample_metrics,
)
from genlab.metrics.reference import ReferenceConfig, reference_classifier, reference_dir
from genlab.metrics.text import NgramIndex, distinct_n, memorisation, repetition_rate, text_metrics

TINY = ReferenceConfig(widths=(16, 32, 64), feature_dim=128, min_steps=200)


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        path = tmp_path_factory.mktemp("genlab-home")
        mp.setenv("GENLAB_HOME", str(path))
        yield path


@pytest.fixture(scope="module")
def digits(home):
    return load_data("digits")


@pytest.fixture(scope="module")
def reference(digits):
    return reference_classifier(digits, TINY, progress=False)


@pytest.fixture(scope="module")
def features(reference, digits):
    return reference.features(digits.train_x), reference.features(digits.test_x)


def _float(images: np.ndarray) -> np.ndarray:
    return images.astype(np.float32) / 255


def _sample(pool: np.ndarray, n: int, seed: int) -> np.ndarray:
    """A stand-in generator: draws images from a pool with replacement, plus faint noise so none repeats exactly."""
    rng = np.random.default_rng(seed)
    x = _float(pool[rng.integers(0, len(pool), n)])
    return np.clip(x + rng.normal(0, 0.02, x.shape).astype(np.float32), 0, 1)


# ---------------------------------------------------------------------------------------------
# reference classifier


def test_reference_classifier_is_accurate_cached_and_invalidated(home, digits, reference):
    assert reference.trained and reference.accuracy > 0.9
    folder = reference_dir(digits)
    assert folder.parent == home / "reference" and digits.content_hash() in folder.name
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["content_hash"] == digits.content_hash() and meta["test_accuracy"] == reference.accuracy

    again = reference_classifier(digits, TINY, progress=False)
    assert not again.trained  # read from the cache, not trained
    torch.testing.assert_close(again.features(digits.test_x), reference.features(digits.test_x))

    changed = dataclasses.replace(digits, train_x=digits.train_x[100:], train_y=digits.train_y[100:])
    assert changed.content_hash() != digits.content_hash()
    retrained = reference_classifier(changed, TINY, progress=False)
    assert retrained.trained and retrained.folder != folder and (folder / "meta.json").exists()

    # A pickle where the safetensors file should be is never loaded: the cache is rebuilt instead.
    (retrained.folder / "model.safetensors").write_bytes(b"\x80\x04\x95" + b"\x00" * 64)
    assert reference_classifier(changed, TINY, progress=False).trained


def test_features_take_uint8_or_unit_floats_and_refuse_bad_input(reference, digits):
    x = digits.test_x[:50]
    torch.testing.assert_close(reference.features(x), reference.features(_float(x)))
    probs = reference.predict_proba(x)
    assert probs.shape == (50, 10) and torch.allclose(probs.sum(1), torch.ones(50))
    assert reference.features(x[:, 0]).shape == (50, TINY.feature_dim)  # (N, H, W) grayscale
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        reference.features(_float(x) * 2 - 1)
    with pytest.raises(ValueError, match="do not match"):
        reference.features(np.zeros((4, 3, 8, 8), np.uint8))


# ---------------------------------------------------------------------------------------------
# Frechet distance


def test_frechet_distance_matches_scipy_sqrtm():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(200, 16)), rng.normal(size=(300, 16)) @ rng.normal(size=(16, 16)) + 0.3
    mu1, s1, mu2, s2 = a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False)
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2) - 2 * np.trace(scipy.linalg.sqrtm(s1 @ s2).real)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-8)
    assert frechet_distance(mu1, s1, mu1, s1) == pytest.approx(0, abs=1e-8)


def test_fd_separates_real_from_noise(reference, digits, features):
    train, test = features
    noise = reference.features(np.random.default_rng(0).random(digits.test_x.shape, dtype=np.float32))
    real_vs_real, real_vs_noise = fd_genlab(train, test), fd_genlab(test, noise)
    assert real_vs_noise > 20 * real_vs_real


@pytest.mark.parametrize("corruption", ["blur", "noise"])
def test_fd_grows_with_corruption_strength(reference, digits, features, corruption):
    train, _ = features
    clean = _float(digits.test_x)
    rng = np.random.default_rng(0)
    levels = [0.0, 0.5, 1.0, 1.5, 2.5] if corruption == "blur" else [0.0, 0.05, 0.1, 0.2, 0.4]
    distances = []
    for level in levels:
        if corruption == "blur":
            images = gaussian_filter(clean, sigma=(0, 0, level, level))
        else:
            images = np.clip(clean + rng.normal(0, level, clean.shape), 0, 1).astype(np.float32)
        distances.append(fd_genlab(train, reference.features(images)))
    assert all(a < b for a, b in zip(distances, distances[1:])), distances
    assert distances[-1] > 5 * distances[0]


# ---------------------------------------------------------------------------------------------
# kernel distance


def test_mmd2_unbiased_matches_the_definition():
    rng = torch.Generator().manual_seed(0)
    x, y = torch.randn(6, 3, generator=rng, dtype=torch.float64), torch.randn(5, 3, generator=rng, dtype=torch.float64)
    k = lambda a, b: float((a @ b / 3 + 1) ** 3)
    xx = sum(k(x[i], x[j]) for i in range(6) for j in range(6) if i != j) / (6 * 5)
    yy = sum(k(y[i], y[j]) for i in range(5) for j in range(5) if i != j) / (5 * 4)
    xy = sum(k(x[i], y[j]) for i in range(6) for j in range(5)) / (6 * 5)
    assert mmd2_unbiased(x, y) == pytest.approx(xx + yy - 2 * xy, rel=1e-10)
    assert polynomial_kernel(x, y).shape == (6, 5)


def test_kid_is_unbiased_for_one_distribution_and_positive_for_two():
    # Many independent pairs from the same Gaussian: the unbiased estimates average to 0 within
    # their standard error, while a shifted Gaussian gives clearly positive values.
    rng = torch.Generator().manual_seed(0)
    same = [mmd2_unbiased(torch.randn(100, 16, generator=rng, dtype=torch.float64),
                          torch.randn(100, 16, generator=rng, dtype=torch.float64)) for _ in range(40)]
    shifted = [mmd2_unbiased(torch.randn(100, 16, generator=rng, dtype=torch.float64),
                             torch.randn(100, 16, generator=rng, dtype=torch.float64) + 0.5) for _ in range(10)]
    standard_error = np.std(same) / math.sqrt(len(same))
    assert abs(np.mean(same)) < 3 * standard_error
    assert min(same) < 0 < max(same)  # unbiased: single estimates fall on both sides of 0
    assert min(shifted) > np.mean(same) + 10 * standard_error


def test_kid_on_digits_is_near_zero_for_real_and_large_for_noise(reference, digits, features):
    train, test = features
    halves = torch.randperm(len(train), generator=torch.Generator().manual_seed(0)).chunk(2)
    same_mean, same_std = kid_genlab(train[halves[0]], train[halves[1]], subsets=20, subset_size=300)
    noise = reference.features(np.random.default_rng(1).random(digits.test_x.shape, dtype=np.float32))
    noise_mean, _ = kid_genlab(test, noise, subsets=20, subset_size=300)
    assert abs(same_mean) < 2 * same_std + 1e-3
    assert noise_mean > 100 * max(abs(same_mean), same_std)


# ---------------------------------------------------------------------------------------------
# precision, recall, density, coverage and the classifier metrics


def _prdc_by_definition(real: np.ndarray, fake: np.ndarray, k: int) -> dict[str, float]:
    d_rr = np.linalg.norm(real[:, None] - real[None], axis=2)
    d_ff = np.linalg.norm(fake[:, None] - fake[None], axis=2)
    d_fr = np.linalg.norm(fake[:, None] - real[None], axis=2)  # (M, N)
    r_real, r_fake = np.sort(d_rr, axis=1)[:, k], np.sort(d_ff, axis=1)[:, k]
    return {
        "precision": np.mean([(d_fr[j] <= r_real).any() for j in range(len(fake))]),
        "recall": np.mean([(d_fr[:, i] <= r_fake).any() for i in range(len(real))]),
        "density": (d_fr <= r_real[None]).sum() / (k * len(fake)),
        "coverage": np.mean(d_fr.min(axis=0) <= r_real),
    }


def test_prdc_matches_the_definition_across_chunks():
    rng = np.random.default_rng(0)
    real, fake = rng.normal(size=(60, 4)), rng.normal(size=(45, 4)) * 1.3 + 0.4
    expected = _prdc_by_definition(real, fake, k=3)
    got = prdc(torch.from_numpy(real), torch.from_numpy(fake), k=3, chunk=7)
    assert got == pytest.approx(expected, abs=1e-6)


def test_collapsed_generator_fails_recall_coverage_and_class_histogram(reference, digits):
    # Both "generators" draw real test images; the collapsed one only from classes 0 and 1.
    two_classes = digits.test_x[np.isin(digits.test_y, [0, 1])]
    options = {"kid_subsets": 10, "kid_subset_size": 200}
    honest = sample_metrics(reference, digits.train_x, _sample(digits.test_x, 360, seed=0), **options)
    collapsed = sample_metrics(reference, digits.train_x, _sample(two_classes, 360, seed=1), **options)

    assert honest["recall"] > 0.6 and collapsed["recall"] < honest["recall"] / 2
    assert collapsed["coverage"] < honest["coverage"] / 2
    assert collapsed["precision"] > 0.7  # the samples are real images: precision alone cannot see collapse
    assert collapsed["class_fraction/0"] + collapsed["class_fraction/1"] > 0.95
    assert max(honest[f"class_fraction/{c}"] for c in digits.classes) < 0.2
    assert collapsed["class_histogram_tv"] > 0.6 > 0.1 > honest["class_histogram_tv"]
    assert collapsed["classifier_score"] < 2.5 < 7 < honest["classifier_score"]
    assert collapsed["fd_genlab"] > 5 * honest["fd_genlab"] and collapsed["kid_genlab"] > honest["kid_genlab"]
    assert honest["reference_accuracy"] == reference.accuracy and honest["fake_examples"] == 360


def test_class_accuracy_follows_the_requested_class(reference, digits, features):
    probs = reference.predict_proba(digits.test_x)
    labels = torch.from_numpy(digits.test_y)
    assert class_accuracy(probs, labels) == pytest.approx(reference.accuracy)
    assert class_accuracy(probs, (labels + 1) % 10) < 0.05
    _, test = features
    metrics = image_metrics(test, test, probs, requested=(labels + 1) % 10, kid_subsets=2, kid_subset_size=50)
    assert metrics["class_accuracy"] < 0.05 and metrics["fd_genlab"] == pytest.approx(0, abs=1e-6)


# ---------------------------------------------------------------------------------------------
# text


TRAIN = ("it was the best of times it was the worst of times it was the age of wisdom "
         "it was the age of foolishness it was the epoch of belief")


def test_distinct_n_and_repetition_on_hand_made_texts():
    assert distinct_n(["a b a b"], 1) == 0.5
    assert distinct_n(["a b a b"], 2) == pytest.approx(2 / 3)  # ab, ba, ab
    assert distinct_n(["a b a b"], 3) == 1.0
    assert distinct_n(["a b", "a b"], 2) == 0.5  # pooled over texts
    assert distinct_n(["a"], 2) == 0.0
    assert distinct_n(["abab"], 2, unit="char") == pytest.approx(2 / 3)
    assert repetition_rate(["a b a b"], 2) == pytest.approx(1 / 3)
    assert repetition_rate(["a a a a a"], 1) == pytest.approx(0.8)
    assert repetition_rate(["a a", "a b", "short"], 1) == pytest.approx((0.5 + 0 + 0) / 3)
    assert repetition_rate(["x"], 2) == 0.0  # no text long enough


def test_memorisation_finds_copies_and_only_copies():
    copied = "the worst of times it was the age of wisdom it was"  # 12 consecutive training words
    novel = "a cat sat on the mat and then it was time again"  # 12 words, none of its 8-grams in TRAIN
    mixed = "the worst of times it was the age zebra quartz lemon pickle"  # 8 copied words, then 4 new
    assert memorisation([copied], TRAIN)["memorised_ngrams"] == 1.0
    assert memorisation([novel], TRAIN)["memorised_ngrams"] == 0.0
    assert memorisation([mixed], TRAIN)["memorised_ngrams"] == pytest.approx(1 / 5)  # 1 of 5 8-grams
    assert memorisation([copied, novel], TRAIN) == {"memorised_ngrams": pytest.approx(5 / 10),
                                                    "memorised_texts": 0.5}
    index = NgramIndex(TRAIN, n=20, unit="char")
    assert memorisation([TRAIN[17:60]], index)["memorised_ngrams"] == 1.0
    assert memorisation([TRAIN[17:60][::-1]], index)["memorised_ngrams"] == 0.0
    assert memorisation(["too short"], TRAIN) == {"memorised_ngrams": 0.0, "memorised_texts": 0.0}


def test_text_metrics_collects_everything():
    metrics = text_metrics(["a b a b", "the worst of times it was the age of"], TRAIN)
    assert metrics["distinct_1"] == pytest.approx(9 / 13) and metrics["memorisation_n"] == 8
    assert metrics["memorised_texts"] == 0.5 and metrics["repetition_4"] == 0.0
    assert text_metrics(["abcabc"], "xyz", unit="char", memorisation_n=3)["memorised_ngrams"] == 0.0


def test_anomaly_metrics_agree_with_scikit_learn_including_ties():
    from sklearn.metrics import average_precision_score, roc_auc_score

    from genlab.metrics.anomaly import at_threshold, auroc, average_precision

    rng = np.random.default_rng(0)
    checked = 0
    for i in range(200):
        n = int(rng.integers(2, 60))
        truth = rng.random(n) < rng.random()
        if truth.all() or not truth.any():
            continue
        scores = rng.integers(0, 5, n).astype(float) if i % 2 else rng.normal(size=n)  # ties in every other case
        assert auroc(scores, truth) == pytest.approx(roc_auc_score(truth, scores), abs=1e-12)
        assert average_precision(scores, truth) == pytest.approx(average_precision_score(truth, scores), abs=1e-12)
        checked += 1
    assert checked > 150
    rates = at_threshold(np.array([0.1, 0.5, 0.9, 0.2]), np.array([0, 0, 1, 1]), 0.3)
    assert rates == {"false_alarm_rate": 0.5, "detection_rate": 0.5}
    with pytest.raises(ValueError, match="both normal examples and anomalies"):
        auroc(np.ones(3), np.zeros(3))
