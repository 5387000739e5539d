"""The VAE's maths: likelihoods normalise, the KL is right, the IWAE bound is tighter than the ELBO."""

from __future__ import annotations

import math

import pytest
import torch

from genlab.errors import ConfigError
from genlab.models.base import class_labels
from genlab.models.vae import VAE, VAEConfig, discretized_logistic_log_prob, gaussian_kl


def test_discretized_logistic_sums_to_one_over_256_values():
    values = torch.arange(256).float() / 127.5 - 1
    for mean, log_scale in [(0.0, -2.0), (0.7, -4.0), (-1.0, 0.5), (0.2, -7.0)]:
        logp = discretized_logistic_log_prob(values, torch.tensor(mean), torch.tensor(log_scale))
        assert torch.logsumexp(logp, 0).exp().item() == pytest.approx(1.0, abs=2e-3)


def test_gaussian_kl_matches_torch_distributions():
    mu, logvar = torch.randn(5, 3), torch.randn(5, 3)
    q = torch.distributions.Normal(mu, (0.5 * logvar).exp())
    p = torch.distributions.Normal(torch.zeros(3), torch.ones(3))
    expected = torch.distributions.kl_divergence(q, p).sum(-1)
    assert torch.allclose(gaussian_kl(mu, logvar), expected, atol=1e-5)


@pytest.mark.parametrize("channels,size,likelihood,condition", [
    (1, (8, 8), "bernoulli", "none"), (1, (28, 28), "bernoulli", "class"),
    (3, (15, 13), "logistic", "none"), (3, (32, 32), "logistic", "class")])
def test_shapes_for_any_image_size(channels, size, likelihood, condition):
    config = VAEConfig(channels=channels, image_size=size, widths=(4, 8), hidden_dim=16, latent_dim=3,
                       likelihood=likelihood, condition=condition, num_classes=4, class_names=("a", "b", "c", "d"))
    model = VAE(config)
    images = torch.randint(0, 256, (5, channels, *size), dtype=torch.uint8)
    labels = torch.arange(5) % 4
    out = model.loss((images, labels))
    assert out["loss"].shape == () and torch.isfinite(out["loss"])
    assert model.sample(4, labels="b" if condition == "class" else None).shape == (4, channels, *size)
    assert model.reconstruct(images, labels if condition == "class" else None).shape == (5, channels, *size)
    lab = [0, 1] if condition == "class" else None
    assert model.interpolate(images[0], images[1], 5, lab).shape == (5, channels, *size)


def test_iwae_bound_is_at_least_the_elbo_and_tightens_with_k():
    torch.manual_seed(0)
    model = VAE(VAEConfig(image_size=(8, 8), widths=(4, 8), hidden_dim=16, latent_dim=3)).eval()
    images = torch.randint(0, 256, (64, 1, 8, 8), dtype=torch.uint8)

    def mean_ll(k):
        out = model.log_likelihood(images, k=k, generator=torch.Generator().manual_seed(0))
        return out["log_likelihood"].mean().item(), out["elbo"].mean().item()

    ll1, elbo = mean_ll(1)
    ll50, _ = mean_ll(50)
    assert ll50 >= elbo - 1e-4 and ll50 > ll1
    assert ll50 < 0 and math.isfinite(ll50)


def test_class_names_are_checked():
    model = VAE(VAEConfig(image_size=(8, 8), widths=(4,), hidden_dim=8, latent_dim=2, condition="class",
                          num_classes=2, class_names=("cake", "pie")))
    assert class_labels(model.config, "pie", 3).tolist() == [1, 1, 1]
    with pytest.raises(ConfigError, match="cake, pie"):
        class_labels(model.config, "bread", 1)
    with pytest.raises(ConfigError, match="cake, pie"):
        model.sample(2, labels="bread")
    with pytest.raises(ConfigError, match="likelihood"):
        VAEConfig(likelihood="gaussian-ish")


def test_a_binarised_models_anomaly_score_is_its_excess_over_the_binarisations_entropy():
    torch.manual_seed(0)
    model = VAE(VAEConfig(image_size=(8, 8), widths=(4, 8), hidden_dim=16, latent_dim=3)).eval()
    images = torch.randint(0, 256, (6, 1, 8, 8), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    images[0] = 0  # a black image: its binarisation is certain, H(b) = 0
    scores = model.anomaly_score(images, k=3)
    assert (scores >= 0).all()  # a divergence: sum_i KL(Bernoulli(x_i) || decoder_i) + KL(q || p) >= 0
    torch.testing.assert_close(model.anomaly_score(images[2:5], k=3), scores[2:5])  # each image's own score
    # the closed form over b against drawing b: E_b[-log p(b | z)] - H(b), the same z and posterior q(z | x)
    x = images.float() / 255
    mu, logvar = model.posterior(x)
    z = mu + torch.randn(3, 1, 3, generator=torch.Generator().manual_seed(0)) * (0.5 * logvar).exp()
    b = torch.bernoulli(x.expand(20000, -1, -1, -1, -1), generator=torch.Generator().manual_seed(1))  # (N, B, ...)
    with torch.no_grad():
        log_px = torch.stack([torch.stack([model.log_px(b[:, i], model.decode(zj[i : i + 1]).expand(20000, -1, -1, -1))
                                           for i in range(6)], 1) for zj in z]).mean(0)  # (N, B)
        entropy = -(x * x.clamp_min(1e-12).log() + (1 - x) * (1 - x).clamp_min(1e-12).log()).flatten(1).sum(1)
        drawn = (-log_px.mean(0) - entropy + gaussian_kl(mu, logvar)) / (64 * math.log(2))
    torch.testing.assert_close(scores, drawn, atol=0.01, rtol=0)
    # a model of 8-bit values scores -log p(x), the IWAE bound
    logistic = VAE(VAEConfig(image_size=(8, 8), widths=(4, 8), hidden_dim=16, latent_dim=3, likelihood="logistic"))
    bound = logistic.log_likelihood(images, k=5, generator=torch.Generator().manual_seed(0))["log_likelihood"]
    torch.testing.assert_close(logistic.eval().anomaly_score(images, k=5), -bound / (64 * math.log(2)))


def test_the_codes_mixture_is_fitted_after_training_and_the_score_reads_the_codes_density(tmp_path):
    from types import SimpleNamespace

    import numpy as np
    import torch.nn.functional as F
    from safetensors.torch import load_file, save_file
    from sklearn.mixture import GaussianMixture

    import genlab

    torch.manual_seed(0)
    model = VAE(VAEConfig(image_size=(8, 8), widths=(4, 8), hidden_dim=16, latent_dim=3, latent_mixture=4)).eval()
    rng = np.random.default_rng(0)
    bright = rng.random(300) < 0.5  # two kinds of images: the codes fall in two clumps
    images = np.where(bright[:, None, None, None], rng.integers(150, 256, (300, 1, 8, 8)),
                      rng.integers(0, 60, (300, 1, 8, 8))).astype(np.uint8)
    assert not model.has_mixture()  # before fitting: the N(0, I) prior's score
    model.fit_after_training(SimpleNamespace(train_x=images, train_y=np.zeros(300, int)), seed=3)
    assert model.has_mixture()
    x = torch.from_numpy(images).float() / 255
    with torch.no_grad():
        mu, _ = model.posterior(x)
    reference = GaussianMixture(4, covariance_type="full", reg_covar=1e-4, random_state=3).fit(mu.double().numpy())
    ours = model.code_log_density(mu.double()).numpy()
    np.testing.assert_allclose(ours, reference.score_samples(mu.double().numpy()), rtol=1e-5)
    test = torch.from_numpy(images[:5])
    with torch.no_grad():
        params = model.decode(mu[:5])
        excess = (F.binary_cross_entropy_with_logits(params, x[:5], reduction="none").flatten(1).sum(1)
                  - F.binary_cross_entropy(x[:5], x[:5], reduction="none").flatten(1).sum(1))
        expected = (excess - model.code_log_density(mu[:5])) / (64 * math.log(2))
    torch.testing.assert_close(model.anomaly_score(test), expected, rtol=1e-4, atol=1e-4)
    # a folder written before the mixture existed loads, and scores with the prior
    folder = model.save_pretrained(tmp_path / "m")
    weights = load_file(folder / "model.safetensors")
    save_file({k: v for k, v in weights.items() if not k.startswith("mixture_")}, folder / "model.safetensors")
    old = genlab.load(folder)
    assert not old.has_mixture() and torch.isfinite(old.anomaly_score(test)).all()
    assert not hasattr(VAE(VAEConfig(image_size=(8, 8), widths=(4,), latent_mixture=0)), "mixture_weights")


def test_collapsed_codes_leave_the_mixture_unfitted_instead_of_failing():
    from types import SimpleNamespace

    import numpy as np

    model = VAE(VAEConfig(image_size=(8, 8), widths=(4, 8), hidden_dim=16, latent_dim=3, latent_mixture=4)).eval()
    with torch.no_grad():
        for p in model.encoder_fc.parameters():
            p.zero_()  # every image gets the same code, as a diverged run's encoder gives
    images = np.random.default_rng(0).integers(0, 256, (50, 1, 8, 8)).astype(np.uint8)
    model.fit_after_training(SimpleNamespace(train_x=images, train_y=np.zeros(50, int)))
    assert model.has_mixture()  # one distinct code: a single component, fitted
    with torch.no_grad():
        model.encoder_fc[-1].bias.fill_(float("nan"))
    fresh = VAE(VAEConfig(image_size=(8, 8), widths=(4, 8), hidden_dim=16, latent_dim=3, latent_mixture=4)).eval()
    fresh.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("mixture_")}, strict=False)
    fresh.fit_after_training(SimpleNamespace(train_x=images, train_y=np.zeros(50, int)))
    assert not fresh.has_mixture()  # codes that are not finite: the prior stays
