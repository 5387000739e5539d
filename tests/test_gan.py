"""GANs and pix2pix: loss signs and gradients, WGAN-GP's penalty, spectral norm, label routing, translation
shapes, the task transforms, collapse warnings, and both families end to end through the CLI on digits."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from genlab.config import TrainConfig
from genlab.data.paired import downscale, sketch, upscale
from genlab.engine.callbacks import collapse_warning
from genlab.engine.recipes import recipe_for
from genlab.errors import ConfigError
from genlab.metrics.images import psnr, ssim
from genlab.models.adversarial import diff_augment, discriminator_loss, generator_loss, gradient_penalty
from genlab.models.base import class_labels
from genlab.models.gan import GAN, Discriminator, GANConfig, class_stddev, minibatch_stddev
from genlab.models.pix2pix import Pix2Pix, Pix2PixConfig

TINY_GAN = {"g_widths": (8, 4), "d_widths": (4, 8), "latent_dim": 4, "image_size": (8, 8)}
CLASSES = {"condition": "class", "num_classes": 3, "class_names": ("cat", "dog", "owl")}
LOSSES = ["hinge", "non-saturating", "wgan-gp"]


def _engine_step(model):
    """What the engine's update does, minus clipping: zero, backward, step the optimiser `index`."""
    optimizers = recipe_for(model.family).optimizers(model, TrainConfig(lr=1e-3))

    def step(loss, index):
        optimizers[index].zero_grad(set_to_none=True)
        loss.backward()
        optimizers[index].step()

    return step


@pytest.mark.parametrize("kind", LOSSES)
def test_losses_have_the_right_sign_and_gradient_direction(kind):
    real = torch.tensor([0.3, -0.2], requires_grad=True)
    fake = torch.tensor([0.1, -0.4], requires_grad=True)
    discriminator_loss(kind, real, fake).backward()
    assert (real.grad < 0).all(), "D lowers its loss by scoring real images higher"
    assert (fake.grad > 0).all(), "D lowers its loss by scoring fakes lower"
    fake_g = torch.tensor([0.1, -0.4], requires_grad=True)
    generator_loss(kind, fake_g).backward()
    assert (fake_g.grad < 0).all(), "G lowers its loss by making D score its images higher"
    right, wrong = torch.tensor([2.0]), torch.tensor([-2.0])
    assert discriminator_loss(kind, right, wrong) < discriminator_loss(kind, wrong, right)
    assert generator_loss(kind, right) < generator_loss(kind, wrong)


def test_hinge_is_zero_with_no_gradient_once_the_margins_hold():
    real = torch.tensor([1.5, 1.0], requires_grad=True)
    fake = torch.tensor([-1.2, -3.0], requires_grad=True)
    loss = discriminator_loss("hinge", real, fake)
    loss.backward()
    assert loss.item() == 0 and not real.grad.any() and not fake.grad.any()
    assert discriminator_loss("hinge", torch.zeros(4), torch.zeros(4)).item() == pytest.approx(2.0)  # chance
    assert discriminator_loss("non-saturating", torch.zeros(4), torch.zeros(4)).item() == pytest.approx(2 * np.log(2))


def test_wgan_gp_penalty_is_zero_for_a_1_lipschitz_critic():
    torch.manual_seed(0)
    w = torch.randn(1, 3, 4, 4)
    real, fake = torch.randn(16, 3, 4, 4), torch.randn(16, 3, 4, 4)
    unit = w / w.norm()  # D(x) = <w, x> with |w| = 1: its gradient has norm 1 everywhere
    assert gradient_penalty(lambda x: (x * unit).flatten(1).sum(1), real, fake).item() == pytest.approx(0, abs=1e-10)
    steep = 3 * unit  # gradient norm 3 everywhere: penalty (3 - 1)^2
    assert gradient_penalty(lambda x: (x * steep).flatten(1).sum(1), real, fake).item() == pytest.approx(4.0, rel=1e-5)


def test_spectral_norm_keeps_the_top_singular_value_near_one():
    torch.manual_seed(0)
    d = Discriminator(GANConfig(**TINY_GAN, **CLASSES, spectral_norm=True, d_batch_norm=False)).train()
    layers = [m for m in d.modules() if hasattr(m, "parametrizations")]
    assert len(layers) == 4  # 2 convolutions, the head and the projection embedding
    with torch.no_grad():
        for m in layers:
            m.parametrizations.weight.original.mul_(10)  # the raw weights are far from norm 1
        for _ in range(20):  # power iterations run one per training forward
            d(torch.randn(8, 1, 8, 8), torch.randint(0, 3, (8,)))
    for m in layers:
        raw = torch.linalg.matrix_norm(m.parametrizations.weight.original.flatten(1), ord=2)
        sigma = torch.linalg.matrix_norm(m.weight.flatten(1), ord=2)
        assert raw > 2 and sigma.item() == pytest.approx(1.0, abs=0.05), type(m).__name__


def test_a_conditional_sample_of_label_k_is_routed_to_class_ks_embedding():
    torch.manual_seed(0)
    model = GAN(GANConfig(**TINY_GAN, **CLASSES)).eval()
    labels = torch.tensor([1, 1, 0, 2, 1, 2])

    def draw():
        return model.sample(6, labels=labels, generator=torch.Generator().manual_seed(3))

    before = draw()
    assert torch.equal(class_labels(model.config, ["dog", "dog", "cat", "owl", 1, "2"], 6), labels)
    with torch.no_grad():
        for m in model.generator_ema.modules():
            if isinstance(m, torch.nn.Embedding):
                m.weight[1] += 0.5  # class "dog" only
    after = draw()
    changed = (after - before).flatten(1).abs().amax(1) > 1e-4
    assert changed.tolist() == (labels == 1).tolist()
    # The discriminator's projection term likewise reads only the requested class's embedding (without
    # spectral norm here, which divides every row by the matrix's norm and so couples them).
    d, x = Discriminator(GANConfig(**TINY_GAN, **CLASSES, spectral_norm=False)).eval(), torch.randn(3, 1, 8, 8)
    scores = d(x, torch.tensor([0, 1, 2]))
    with torch.no_grad():
        d.embed.weight[2] += 1.0
    changed = (d(x, torch.tensor([0, 1, 2])) - scores).abs() > 1e-6
    assert changed.tolist() == [False, False, True]


def test_train_step_moves_both_players_and_the_ema():
    torch.manual_seed(0)
    model = GAN(GANConfig(**TINY_GAN, ema_decay=0.5, diffaugment=("color", "translation", "cutout")))
    g0, d0, e0 = (torch.nn.utils.parameters_to_vector(m.parameters()).clone()
                  for m in (model.generator, model.discriminator, model.generator_ema))
    batch = (torch.randint(0, 256, (16, 1, 8, 8), dtype=torch.uint8), torch.zeros(16, dtype=torch.long))
    out = model.train_step(batch, _engine_step(model), 1000)  # past the EMA warm-up: decay 0.5
    g1, d1, e1 = (torch.nn.utils.parameters_to_vector(m.parameters())
                  for m in (model.generator, model.discriminator, model.generator_ema))
    assert not torch.equal(g0, g1) and not torch.equal(d0, d1)
    assert torch.allclose(e1, 0.5 * e0 + 0.5 * g1, atol=1e-6)
    assert {"loss", "d_loss", "g_loss", "d_real", "d_fake"} <= set(out) and all(torch.isfinite(v) for v in out.values())
    assert not any(p.requires_grad for p in model.generator_ema.parameters())


def test_minibatch_stddev_measures_each_group_alone():
    """A group of identical samples gets a zero deviation channel, a varied one a positive one, and groups
    of consecutive samples keep a batch of reals and a batch of fakes apart."""
    same = torch.randn(1, 3, 4, 4).expand(4, 3, 4, 4)
    varied = torch.randn(4, 3, 4, 4)
    out = minibatch_stddev(torch.cat([same, varied]), 4)
    assert out.shape == (8, 4, 4, 4)
    assert torch.equal(out[:, :3], torch.cat([same, varied]))
    assert out[:4, 3].abs().max() < 1e-3  # sqrt(1e-8) = 1e-4 for a group with no deviation
    expected = varied.var(dim=0, unbiased=False).add(1e-8).sqrt().mean()
    torch.testing.assert_close(out[4:, 3], expected.expand(4, 4, 4))
    assert minibatch_stddev(torch.randn(6, 2, 3, 3), 4).shape == (6, 3, 3, 3)  # 6 = 3 groups of 2
    d = Discriminator(GANConfig(**TINY_GAN, minibatch_std=2))
    assert d(torch.randn(4, 1, 8, 8)).shape == (4,)


def test_class_stddev_measures_each_class_alone_wherever_its_samples_are():
    """Samples of a class scattered through the batch share one deviation: ~0 for a class of identical
    images however varied the other classes are, the population deviation for a varied class, 0 for a
    class seen once; and a conditional discriminator reads it."""
    same, varied = torch.randn(1, 3, 4, 4).expand(3, 3, 4, 4), torch.randn(3, 3, 4, 4)
    x = torch.cat([same[:1], varied[:1], same[1:2], varied[1:], same[2:], torch.randn(1, 3, 4, 4)])
    y = torch.tensor([0, 1, 0, 1, 1, 0, 2])
    out = class_stddev(x, y, 3)
    assert out.shape == (7, 4, 4, 4) and torch.equal(out[:, :3], x)
    assert out[y == 0, 3].abs().max() < 1e-3  # sqrt(1e-8) for a class with no deviation
    expected = varied.var(dim=0, unbiased=False).add(1e-8).sqrt().mean()
    torch.testing.assert_close(out[y == 1, 3], expected.expand(3, 4, 4))
    assert out[6, 3].abs().max() < 1e-3
    d = Discriminator(GANConfig(**TINY_GAN, **CLASSES))
    assert d.class_std == 3 and d(torch.randn(4, 1, 8, 8), torch.tensor([0, 1, 2, 0])).shape == (4,)
    assert Discriminator(GANConfig(**TINY_GAN, **CLASSES, class_std=False)).class_std == 0


def test_the_auxiliary_classifier_learns_from_reals_and_guides_the_generator():
    """aux_weight > 0 (the default): the discriminator's classifier trains on the real batch's labels and the
    generator's step carries its cross-entropy on the fakes; off, neither exists."""
    model = GAN(GANConfig(**TINY_GAN, **CLASSES, aux_weight=1.0))
    before = model.discriminator.classifier.weight.detach().clone()
    out = model.train_step((torch.rand(6, 1, 8, 8), torch.tensor([0, 1, 2, 0, 1, 2])), _engine_step(model), 0)
    assert torch.isfinite(out["d_class_loss"]) and torch.isfinite(out["g_class_loss"])
    assert not torch.equal(before, model.discriminator.classifier.weight)
    plain = GAN(GANConfig(**TINY_GAN, **CLASSES, aux_weight=0.0))
    assert plain.discriminator.classifier is None
    assert "g_class_loss" not in plain.train_step((torch.rand(6, 1, 8, 8), torch.tensor([0, 1, 2, 0, 1, 2])),
                                                  _engine_step(plain), 0)


def test_the_generator_starts_unsaturated():
    """With PyTorch's default init the tanh saturates on ~30% of pixels at step 0 and the generator cannot learn."""
    torch.manual_seed(0)
    images = GAN(GANConfig()).generator(torch.randn(64, 128))
    assert (images.abs() > 0.99).float().mean() < 0.01 and 0.05 < images.std() < 0.6


def test_diffaugment_keeps_shape_and_gradients():
    x = torch.rand(4, 3, 8, 8, requires_grad=True)
    y = diff_augment(x * 2 - 1, ("color", "translation", "cutout"))
    y.sum().backward()
    assert y.shape == x.shape and x.grad is not None and x.grad.abs().sum() > 0


@pytest.mark.parametrize("task,channels,size,scale", [("sketch", 1, (28, 28), 4), ("superres", 1, (28, 28), 4),
                                                      ("superres", 3, (8, 8), 2), ("sketch", 3, (15, 13), 4)])
def test_pix2pix_shapes_for_each_task(task, channels, size, scale):
    torch.manual_seed(0)
    model = Pix2Pix(Pix2PixConfig(channels=channels, image_size=size, task=task, scale=scale, widths=(4, 8, 8),
                                  d_widths=(4, 8)))
    images = torch.randint(0, 256, (5, channels, *size), dtype=torch.uint8)
    condition = model.make_input(images)
    expected = (1, *size) if task == "sketch" else (channels, size[0] // scale, size[1] // scale)
    assert condition.shape == (5, *expected) == (5, *model.input_shape)
    out = model.translate(condition)
    assert out.shape == (5, channels, *size) and 0 <= out.min() and out.max() <= 1
    assert model.discriminator(model.lift(condition), out * 2 - 1).shape[:2] == (5, 1)
    losses = model.train_step((images, torch.zeros(5)), _engine_step(model), 0)
    assert torch.isfinite(losses["loss"]) and losses["l1"] > 0
    with pytest.raises(Exception, match="takes inputs of shape"):
        model.translate(torch.rand(2, channels + 1, 3, 3))


def test_task_transforms_and_image_metrics():
    square = torch.zeros(1, 1, 12, 12)
    square[..., 3:9, 3:9] = 1
    strokes = sketch(square)
    assert strokes.shape == (1, 1, 12, 12) and set(strokes.unique().tolist()) == {0.0, 1.0}
    assert strokes[..., 0, :].all() and strokes[..., 6, 6] == 1  # paper away from the edge, even inside the square
    assert not strokes[..., 3, 3:9].any()  # a stroke along the square's border
    assert sketch(torch.full((1, 3, 8, 8), 0.4)).all()  # a flat image has no strokes
    low = downscale(square, 3)
    assert low.shape == (1, 1, 4, 4) and low[..., 1:3, 1:3].eq(1).all() and low.sum() == square.sum() / 9
    assert torch.allclose(upscale(torch.full((2, 3, 2, 2), 0.3), (8, 8)), torch.tensor(0.3))
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    assert psnr(x, (x + 0.1)).tolist() == pytest.approx([20.0, 20.0], abs=1e-3)  # MSE 0.01
    assert ssim(x, x).tolist() == pytest.approx([1.0, 1.0]) and (ssim(x, x.flip(-1)) < 0.5).all()


def test_collapse_warning_names_recall_and_missing_classes():
    names = ("a", "b", "c", "d")
    real = np.full(4, 0.25)
    assert collapse_warning(0.6, np.array([0.3, 0.2, 0.25, 0.25]), real, names, 0.1) is None
    message = collapse_warning(0.02, np.array([0.97, 0.01, 0.02, 0.0]), real, names, 0.1)
    assert "recall 0.020" in message and "b, c, d" in message


# -- end to end through the CLI on digits ---------------------------------------------------------

TINY_TRAIN = ["--batch-size", "32", "--val-every", "6", "--val-batches", "2", "--ckpt-every", "6", "--log-every", "3",
              "--sample-every", "6", "--progress", "false", "--threads", "1", "--max-steps", "12"]


def _records(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_conditional_gan_trains_monitors_and_samples_by_label(tmp_path, capsys):
    from genlab.cli import main
    from genlab.files import load_torch_file as load_checkpoint

    run = tmp_path / "cgan"
    assert main(["train", "gan", "--data", "digits", "--out", str(run), "--model.condition", "class",
                 "--model.g-widths", "[16,8]", "--model.d-widths", "[8,16]", "--model.latent-dim", "8",
                 "--model.monitor-samples", "100", *TINY_TRAIN]) == 0
    assert load_checkpoint(run / "checkpoints" / "last.ckpt")["global_step"] == 12  # one step per batch, both players
    records = _records(run)
    assert any("train/g_loss" in r and "train/d_loss" in r for r in records)
    monitored = [r for r in records if "monitor/recall" in r]
    assert len(monitored) == 2 and all(0 <= r["monitor/recall"] <= 1 for r in monitored)
    assert sum(r["monitor/class_fraction/3"] for r in monitored) >= 0 and "monitor/class_accuracy" in monitored[0]
    assert (run / "checkpoints" / "best.ckpt").exists()  # picked by the monitor's FD-genlab
    for folder, name in [(run, "a.png"), (run / "model", "b.png")]:
        assert main(["sample", str(folder), "--label", "3", "--n", "8", "--seed", "5", "--out", str(tmp_path / name),
                    ]) == 0
    a, b = (np.asarray(Image.open(tmp_path / n)) for n in ("a.png", "b.png"))
    assert np.array_equal(a, b) and a.std() > 0
    assert main(["sample", str(run), "--label", "eleven"]) == 2
    assert "use one of 0, 1, 2" in capsys.readouterr().err


def test_pix2pix_superres_trains_translates_and_evaluates(tmp_path, capsys):
    from genlab import load
    from genlab.cli import main
    from genlab.data import load_data
    from genlab.evaluation.evaluate import translation_metrics

    run = tmp_path / "sr"
    assert main(["train", "pix2pix", "--data", "digits", "--out", str(run), "--model.task", "superres",
                 "--model.scale", "2", "--model.widths", "[8,16]", "--model.d-widths", "[8,16]", *TINY_TRAIN]) == 0
    model = load(run)
    assert model.config.task == "superres" and model.config.scale == 2 and model.input_shape == (1, 4, 4)
    assert any("val/psnr_db" in r for r in _records(run)) and any((run / "samples").glob("step_*.png"))
    assert main(["translate", str(run), "--image", "test:0,test:7", "--out", str(tmp_path / "t.png")]) == 0
    assert Image.open(tmp_path / "t.png").size[1] > 3 * 8  # inputs, translations and targets: three rows
    Image.fromarray(np.full((4, 4), 120, np.uint8)).save(tmp_path / "low.png")
    assert main(["translate", str(run / "model"), "--image", str(tmp_path / "low.png"), "--out",
                 str(tmp_path / "f.png")]) == 0
    assert main(["sample", str(run)]) == 2 and "genlab translate" in capsys.readouterr().err
    metrics = translation_metrics(model, load_data("digits"), n=60, seed=0, progress=False)
    assert {
        "psnr_db", "ssim", "bicubic_psnr_db", "psnr_gain_db", "fd_genlab", "recall", "class_accuracy",
    } <= set(metrics)
    assert all(np.isfinite(v) for v in metrics.values()) and 5 < metrics["bicubic_psnr_db"] < 40


def test_a_resumed_gan_run_equals_an_uninterrupted_one(tmp_path):
    """Two optimisers, two schedulers, the EMA and batch-norm statistics all survive a resume exactly."""
    from safetensors.torch import load_file

    from genlab.cli import main

    tiny = [
        "--data", "digits", "--model.g-widths", "[16,8]", "--model.d-widths", "[8,16]",
        "--model.monitor-samples", "0",
        *TINY_TRAIN[:-2],
    ]
    assert main(["train", "gan", *tiny, "--out", str(tmp_path / "whole"), "--max-steps", "10"]) == 0
    assert main(["train", "gan", *tiny, "--out", str(tmp_path / "split"), "--max-steps", "5"]) == 0
    assert main(["train", "gan", "--resume", str(tmp_path / "split"), "--max-steps", "10"]) == 0
    whole, split = (load_file(tmp_path / name / "model" / "model.safetensors") for name in ("whole", "split"))
    assert whole.keys() == split.keys() and all(torch.equal(whole[k], split[k]) for k in whole)


# -- anomaly scores: the discriminator's ----------------------------------------------------------


def test_a_trained_discriminator_scores_inverted_and_noise_images_above_the_data(tmp_path, one_thread):
    import genlab
    from genlab.data import load_data

    run = genlab.train("gan", "digits", tmp_path / "gan", model={"g_widths": (32, 16), "d_widths": (16, 32),
                                                                  "latent_dim": 16, "monitor_samples": 0},
                       max_steps=200, batch_size=32, val_every=10**6, sample_every=10**6, progress=False, threads=1)
    model = genlab.load(run / "model")
    data = torch.from_numpy(load_data("digits").test_x[:120])
    scores = model.anomaly_score(data)
    assert scores.shape == (120,) and torch.isfinite(scores).all()
    torch.testing.assert_close(model.anomaly_score(data[40:50]), scores[40:50])  # each image's score is its own
    noise = torch.randint(0, 256, (60, 1, 8, 8), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    for name, strange in (("inverted", 255 - data[:60]), ("noise", noise)):
        above = (model.anomaly_score(strange)[None, :] > scores[:, None]).float().mean().item()  # AUROC
        assert above > 0.95, (name, above)


def test_a_conditional_discriminator_scores_the_label_or_the_marginal_over_classes():
    torch.manual_seed(0)
    model = GAN(GANConfig(**TINY_GAN, **CLASSES, channels=1)).eval()
    images = torch.randint(0, 256, (6, 1, 8, 8), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    x = images.float() / 127.5 - 1
    per_class = torch.stack([model.discriminator(x, torch.full((6,), k)) for k in range(3)])
    torch.testing.assert_close(model.anomaly_score(images, labels="dog"), -per_class[1])
    torch.testing.assert_close(model.anomaly_score(images), -(torch.logsumexp(per_class, 0) - np.log(3)))
    model.train()
    model.anomaly_score(images)
    assert model.discriminator.training  # the mode it was in is given back
    with pytest.raises(ConfigError, match="unconditional"):
        GAN(GANConfig(**TINY_GAN, channels=1)).anomaly_score(images, labels=[0] * 6)
