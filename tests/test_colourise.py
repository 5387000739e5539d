"""Colourisation (pix2pix in Lab): the sRGB <-> Lab conversion against scikit-image's, the colouriser's shapes and
its lightness kept exactly, a tiny model trained and used through the CLI on a colour folder, and grey data
refused."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from genlab.data.colour import chroma, delta_e, grey, lab_to_rgb, lightness, rgb_to_lab
from genlab.data.shapes import PALETTE, make_shapes
from genlab.errors import ConfigError, DataError
from genlab.models.pix2pix import Pix2Pix, Pix2PixConfig

TINY = {"widths": (4, 8), "d_widths": (4, 8), "channels": 3, "image_size": (8, 8), "task": "colourise"}
TRAIN = ["--batch-size", "16", "--val-every", "4", "--val-batches", "1", "--ckpt-every", "4", "--log-every", "2",
         "--sample-every", "4", "--progress", "false", "--threads", "1", "--max-steps", "6"]


def _colours() -> torch.Tensor:
    """(1, 3, 20, 20): random colours, the shapes palette, black, white and greys, as float64."""
    x = torch.rand(1, 3, 20, 20, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x[0, :, 0, : len(PALETTE)] = torch.tensor(list(PALETTE.values()), dtype=torch.float64).T / 255
    x[0, :, 1, :5] = torch.tensor([0.0, 1.0, 0.5, 0.02, 0.9], dtype=torch.float64)  # greys, one on the linear toe
    return x


def test_lab_matches_scikit_image_and_round_trips():
    skimage = pytest.importorskip("skimage.color")
    x = _colours()
    pixels = x[0].permute(1, 2, 0).numpy()
    lab = rgb_to_lab(x)
    assert torch.allclose(lab[0].permute(1, 2, 0), torch.from_numpy(skimage.rgb2lab(pixels)), atol=0.01)
    assert torch.allclose(lab_to_rgb(lab), x, atol=1e-9)  # every sRGB colour is in the gamut: no chroma is lost
    assert np.allclose(skimage.lab2rgb(lab[0].permute(1, 2, 0).numpy()), pixels, atol=1e-3)  # white: D65 to 4 digits
    assert lab[0, 0, 0, 0].item() == pytest.approx(53.24, abs=0.01)  # red's L, as every Lab table has it
    assert lab[0, 1:, 1, :5].abs().max() < 1e-9  # R = G = B is neutral: a = b = 0
    g = grey(x)
    assert torch.allclose(lightness(g), lab[:, :1], atol=1e-3)  # the grey image keeps the lightness ...
    assert chroma(g.expand(-1, 3, -1, -1)).max() < 1e-9  # ... and no colour
    assert delta_e(x, x).max() == 0 and delta_e(x[..., :1, :1], 1 - x[..., :1, :1]).item() > 10
    # out of the gamut: chroma is reduced at constant L and hue until the colour fits
    vivid = torch.tensor([50.0, 120.0, -120.0], dtype=torch.float64).view(1, 3, 1, 1)
    fitted = lab_to_rgb(vivid)
    assert 0 <= fitted.min() and fitted.max() <= 1 and fitted.max() > 0.999  # at the gamut's surface
    back = rgb_to_lab(fitted).flatten()
    assert back[0].item() == pytest.approx(50, abs=1e-3) and back[1].item() == pytest.approx(-back[2].item(), abs=1e-3)


def test_a_colouriser_sees_lightness_emits_ab_and_keeps_l():
    torch.manual_seed(0)
    model = Pix2Pix(Pix2PixConfig(**TINY))
    images = torch.randint(0, 256, (5, 3, 8, 8), dtype=torch.uint8)
    condition = model.make_input(images)
    assert condition.shape == (5, *model.input_shape) == (5, 1, 8, 8)
    assert model.generator.fuse[0].out_channels == 2  # ab only
    with torch.no_grad():  # an untrained net: make its ab big, so the gamut mapping has work to do
        model.generator_ema.fuse[0].bias.fill_(3.0)
    out = model.translate(condition)
    assert out.shape == (5, 3, 8, 8) and 0 <= out.min() and out.max() <= 1
    assert torch.allclose(rgb_to_lab(out)[:, :1], lightness(condition), atol=0.05)  # L given, L kept
    assert chroma(out).mean() > 20  # in colour
    optimizers = [torch.optim.Adam(player.parameters(), 1e-3) for player in model.players()]

    def update(loss, index):  # the engine's update, minus clipping
        optimizers[index].zero_grad(set_to_none=True)
        loss.backward()
        optimizers[index].step()

    losses = model.train_step((images, torch.zeros(5)), update, 0)
    assert torch.isfinite(losses["loss"]) and losses["l1"] > 0
    with pytest.raises(ConfigError, match="colour"):
        Pix2Pix(Pix2PixConfig(**{**TINY, "channels": 1}))


def test_a_colouriser_trains_and_translates_through_the_cli(tmp_path, capsys):
    from genlab import load
    from genlab.cli import main

    data = make_shapes(tmp_path / "shapes", 40, size=32)
    run = tmp_path / "run"
    assert main(["train", "pix2pix", "--data", str(data), "--out", str(run), "--model.task", "colourise",
                 "--model.widths", "[8,16]", "--model.d-widths", "[8,16]", *TRAIN]) == 0
    model = load(run)
    assert model.config.task == "colourise" and model.input_shape == (1, 32, 32)
    assert main(["translate", str(run), "--image", "test:0,test:1", "--out", str(tmp_path / "t.png")]) == 0
    assert Image.open(tmp_path / "t.png").size[1] > 3 * 32  # the grey inputs, their colourings, the originals
    photo = np.asarray(Image.open(data / "test" / "000036.png").convert("L"))
    Image.fromarray(photo).save(tmp_path / "grey.png")  # a grey photo, as a user would bring
    assert main(["translate", str(run / "model"), "--image", str(tmp_path / "grey.png"), "--out",
                 str(tmp_path / "f.png")]) == 0
    condition = torch.from_numpy(photo)[None, None].float() / 255
    out = model.translate(condition)
    assert out.shape == (1, 3, 32, 32)
    assert torch.allclose(rgb_to_lab(out)[:, :1], lightness(condition), atol=0.05)


def test_grey_data_is_refused(tmp_path, capsys):
    from genlab.cli import main

    folder = tmp_path / "grey"  # grey photos saved as RGB: three channels, no colour
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(12):
        Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8)).convert("RGB").save(folder / f"{i}.png")
    for data in ("digits", str(folder)):
        assert main(["train", "pix2pix", "--data", data, "--out", str(tmp_path / "run"), "--model.task",
                     "colourise", *TRAIN]) == 2
        err = capsys.readouterr().err
        assert "is grey" in err and "colour (RGB) pictures" in err
    from genlab.data.paired import check_colour

    with pytest.raises(DataError, match="0.00% of its pixels"):
        check_colour(np.repeat(rng.integers(0, 256, (4, 1, 8, 8), dtype=np.uint8), 3, axis=1), "greys")
