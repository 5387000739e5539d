"""Variational autoencoder (Kingma & Welling 2014) with a convolutional encoder and decoder.

The encoder maps an image to q(z|x) = N(mu, diag(sigma^2)); the decoder maps z to
the parameters of p(x|z): Bernoulli logits for binary images (dynamically
binarised by default, as in the IWAE paper) or a discretised logistic per pixel
(PixelCNN++) for 8-bit images, so that the likelihood is a real probability
mass and bits/dim mean something. Training maximises the ELBO with an optional
beta (beta-VAE) and a KL warm-up; `log_likelihood` is the importance-weighted
bound of Burda et al. (2016) with k samples, which tightens towards log p(x) as k
grows. An example's anomaly score is that bound in bits per dimension, or for dynamically binarised
images the bits beyond the binarisation's own entropy (`VAE.anomaly_score`).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from genlab.errors import ConfigError
from genlab.models.base import (
    AnomalyScorer,
    ConditionalImageConfig,
    ImageLikelihood,
    ImageModel,
    ImageSampler,
    Reconstructor,
    SampleOptions,
    check_count,
    class_labels,
)


def discretized_logistic_log_prob(x: torch.Tensor, mean: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
    """log P(x) per pixel for 8-bit values scaled to [-1, 1], one logistic per pixel (PixelCNN++ eq. 2).

    Each of the 256 values owns a bin of width 2/255; the end bins take the tails.
    """
    centered = x - mean
    inv_scale = torch.exp(-log_scale)
    plus_in = inv_scale * (centered + 1 / 255)
    min_in = inv_scale * (centered - 1 / 255)
    log_cdf_plus = plus_in - F.softplus(plus_in)  # log sigmoid(plus_in), for the lowest bin
    log_one_minus_cdf_min = -F.softplus(min_in)  # log (1 - sigmoid(min_in)), for the highest bin
    cdf_delta = torch.sigmoid(plus_in) - torch.sigmoid(min_in)
    mid_in = inv_scale * centered
    log_pdf_mid = (
        mid_in - log_scale - 2 * F.softplus(mid_in) - math.log(127.5)
    )  # density x bin width, when delta underflows
    inner = torch.where(cdf_delta > 1e-5, torch.log(cdf_delta.clamp_min(1e-12)), log_pdf_mid)
    return torch.where(x < -0.999, log_cdf_plus, torch.where(x > 0.999, log_one_minus_cdf_min, inner))


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, sigma^2) || N(0, I)) summed over latent dims (Kingma & Welling, appendix B)."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(-1)


def log_normal(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    return (-0.5 * (math.log(2 * math.pi) + logvar + (z - mu).pow(2) / logvar.exp())).sum(-1)


MIXTURE_IMAGES = 20_000  # training images the codes' mixture is fitted to at most (a seeded subsample beyond)


class ResBlock(nn.Module):
    """Two 3x3 convolutions with a skip; keeps shape."""

    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(nn.SiLU(), nn.Conv2d(channels, channels, 3, padding=1),
                                  nn.SiLU(), nn.Conv2d(channels, channels, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


@dataclasses.dataclass(frozen=True)
class VAEConfig(ConditionalImageConfig):
    latent_dim: int = 32
    """size of the latent code z"""
    widths: tuple[int, ...] = (32, 64)
    """channels of each stride-2 convolution stage"""
    res_blocks: int = 0
    """residual blocks per stage"""
    hidden_dim: int = 256
    """fully connected layer between the convolutions and z (0: none)"""
    likelihood: Literal["bernoulli", "logistic"] = "bernoulli"
    """p(x|z): Bernoulli over binarised pixels, or a discretised logistic over 8-bit values"""
    binarize: Literal["dynamic", "threshold"] = "dynamic"
    """bernoulli: how 8-bit pixels become {0, 1} (dynamic: drawn with the pixel's intensity, as in IWAE)"""
    beta: float = 1.0
    """weight of the KL term (beta-VAE when > 1)"""
    kl_warmup_steps: int = 0
    """beta ramps linearly from 0 over these steps"""
    latent_mixture: int = 10
    """components of a Gaussian mixture fitted after training to the training images' posterior means (ex-post
    density estimation, Ghosh et al. 2020), which the anomaly score reads a code's density from (0: none)"""

    def __post_init__(self):
        super().__post_init__()
        if self.latent_dim < 1 or not self.widths:
            raise ConfigError(
                "latent_dim must be >= 1 and widths non-empty",
                "e.g. --model.latent-dim 32 --model.widths [32,64]",
            )
        if self.beta < 0 or self.kl_warmup_steps < 0 or self.latent_mixture < 0:
            raise ConfigError("beta, kl_warmup_steps and latent_mixture must be >= 0",
                              "e.g. --model.beta 1 --model.kl-warmup-steps 0 --model.latent-mixture 10")

    @property
    def padded_size(self) -> tuple[int, int]:
        """Input size rounded up so that every stride-2 stage divides evenly."""
        m = 2 ** len(self.widths)
        return tuple(-(-s // m) * m for s in self.image_size)


class VAE(ImageModel, ImageSampler, Reconstructor, ImageLikelihood, AnomalyScorer):
    """A convolutional VAE: Bernoulli or discretised-logistic likelihood, beta and KL warm-up, class-conditional
    with --model.condition class; IWAE likelihood bounds and anomaly scores."""

    family = "vae"
    Config = VAEConfig
    OPTIONAL_TENSORS = ("mixture_weights", "mixture_means", "mixture_scale_tril")  # folders from before the mixture

    def __init__(self, config: VAEConfig):
        super().__init__(config)
        c = config
        n_cond = c.num_classes if c.condition == "class" else 0
        ph, pw = c.padded_size
        self.bottom = (c.widths[-1], ph >> len(c.widths), pw >> len(c.widths))
        flat = math.prod(self.bottom)

        def mlp(sizes: list[int]) -> list[nn.Module]:
            layers: list[nn.Module] = []
            for a, b in zip(sizes[:-1], sizes[1:]):
                layers += [nn.Linear(a, b), nn.SiLU()]
            return layers[:-1]  # no activation on the last layer

        hidden = [c.hidden_dim] if c.hidden_dim else []
        layers: list[nn.Module] = []
        in_ch = c.channels
        for width in c.widths:
            layers += [nn.Conv2d(in_ch, width, 4, stride=2, padding=1), *[ResBlock(width) for _ in range(c.res_blocks)],
                       nn.SiLU()]
            in_ch = width
        self.encoder_conv = nn.Sequential(*layers, nn.Flatten())
        self.encoder_fc = nn.Sequential(*mlp([flat + n_cond, *hidden, 2 * c.latent_dim]))

        # The decoder mirrors the encoder; its last transposed convolution emits the likelihood
        # parameters directly, so no layer runs at full resolution with many channels (the costly part on a CPU).
        self.decoder_fc = nn.Sequential(*mlp([c.latent_dim + n_cond, *hidden, flat]), nn.SiLU())
        out_channels = c.channels if c.likelihood == "bernoulli" else 2 * c.channels
        layers = []
        widths = list(reversed(c.widths))
        for i, (width, out) in enumerate(zip(widths, [*widths[1:], out_channels])):
            layers += [
                *[ResBlock(width) for _ in range(c.res_blocks)],
                nn.ConvTranspose2d(width, out, 4, stride=2, padding=1),
            ]
            if i < len(widths) - 1:
                layers.append(nn.SiLU())
        self.decoder_conv = nn.Sequential(*layers)
        if c.latent_mixture:  # fitted after training (fit_after_training); all-zero weights: not fitted
            K, d = c.latent_mixture, c.latent_dim
            self.register_buffer("mixture_weights", torch.zeros(K))
            self.register_buffer("mixture_means", torch.zeros(K, d))
            self.register_buffer("mixture_scale_tril", torch.eye(d).repeat(K, 1, 1))

    # -- data domain -------------------------------------------------------------------------

    def prepare(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """uint8 images -> the values the likelihood is over: {0,1} for bernoulli, [-1,1] for logistic."""
        x = x.float() / 255
        if self.config.likelihood == "logistic":
            return x * 2 - 1
        if self.config.binarize == "threshold":
            return (x > 0.5).float()
        return torch.bernoulli(x, generator=generator)

    def _one_hot(self, labels, n: int) -> torch.Tensor | None:
        """Class labels (names, indices or a tensor) as one-hot rows (n, K); None for an unconditional model."""
        if self.config.condition != "class":
            return None
        if labels is None:
            raise ConfigError("this VAE is class-conditional: give the images' labels", "pass labels (--label CLASS)")
        indices = class_labels(self.config, labels, n)
        return F.one_hot(indices.to(self.encoder_fc[0].weight.device), self.config.num_classes).float()

    # -- networks ----------------------------------------------------------------------------

    def posterior(self, x: torch.Tensor, onehot: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """q(z|x): (B, C, H, W) in the data domain -> mu, logvar, each (B, latent_dim)."""
        ph, pw = self.config.padded_size
        h, w = x.shape[-2:]
        x = F.pad(x, (0, pw - w, 0, ph - h))
        features = self.encoder_conv(x)
        if onehot is not None:
            features = torch.cat([features, onehot], 1)
        mu, logvar = self.encoder_fc(features).chunk(2, dim=-1)
        return mu, logvar.clamp(-12, 8)

    def decode(self, z: torch.Tensor, onehot: torch.Tensor | None = None) -> torch.Tensor:
        """p(x|z): (B, latent_dim) -> likelihood parameters (B, C or 2C, H, W)."""
        if onehot is not None:
            z = torch.cat([z, onehot], 1)
        out = self.decoder_conv(self.decoder_fc(z).view(-1, *self.bottom))
        h, w = self.config.image_size
        return out[..., :h, :w]

    def log_px(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        """log p(x|z) summed over pixels, (B,)."""
        if self.config.likelihood == "bernoulli":
            return -F.binary_cross_entropy_with_logits(params, x, reduction="none").flatten(1).sum(-1)
        mean, log_scale = params.chunk(2, dim=1)
        return discretized_logistic_log_prob(x, mean, log_scale.clamp_min(-7.0)).flatten(1).sum(-1)

    def mean_image(self, params: torch.Tensor) -> torch.Tensor:
        """The decoder's expected image in [0, 1]."""
        if self.config.likelihood == "bernoulli":
            return torch.sigmoid(params)
        return ((params.chunk(2, dim=1)[0].clamp(-1, 1)) + 1) / 2

    # -- training ----------------------------------------------------------------------------

    def loss(self, batch, step: int | None = None) -> dict[str, torch.Tensor]:
        """The negative ELBO, with beta x KL (ramped from 0 over kl_warmup_steps when `step` is given)."""
        images, labels = batch
        x = self.prepare(images)
        onehot = self._one_hot(labels, len(x))
        mu, logvar = self.posterior(x, onehot)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()  # reparameterisation trick
        rec = -self.log_px(x, self.decode(z, onehot))
        kl = gaussian_kl(mu, logvar)
        warmup = self.config.kl_warmup_steps
        warm = min(1.0, (step + 1) / warmup) if warmup and step is not None else 1.0
        elbo = -(rec + kl)
        loss = (rec + self.config.beta * warm * kl).mean()
        dims = x[0].numel()
        return {"loss": loss, "elbo_nats": elbo.mean(), "rec_nats": rec.mean(), "kl_nats": kl.mean(),
                "bits_per_dim": -elbo.mean() / (dims * math.log(2))}

    # -- using the model ---------------------------------------------------------------------

    @torch.no_grad()
    def sample(self, n: int, *, labels=None, prompt=None, generator: torch.Generator | None = None,
               options: SampleOptions | None = None) -> torch.Tensor:
        """n images in [0, 1], (n, C, H, W): decoder means at z ~ N(0, temperature^2 I)."""
        check_count(n)
        if prompt is not None:
            raise ConfigError("a VAE takes no prompt", "drop --prompt; a class-conditional VAE takes --label")
        options = options or SampleOptions()
        device = next(self.parameters()).device
        z = torch.randn(n, self.config.latent_dim, generator=generator, device=device) * options.temperature
        indices = class_labels(self.config, labels, n)  # None for an unconditional model, which refuses labels
        onehot = self._one_hot(indices, n) if indices is not None else None
        return self.mean_image(self.decode(z, onehot))

    @torch.no_grad()
    def encode(self, images: torch.Tensor, labels=None) -> torch.Tensor:
        """uint8 images -> their posterior means (B, latent_dim)."""
        self.check_images(images)
        x = self.prepare(images, generator=torch.Generator().manual_seed(0))
        return self.posterior(x, self._one_hot(labels, len(x)))[0]

    @torch.no_grad()
    def reconstruct(self, images: torch.Tensor, labels=None) -> torch.Tensor:
        """uint8 images -> their reconstructions in [0, 1] through the posterior mean."""
        onehot = self._one_hot(labels, len(images))
        return self.mean_image(self.decode(self.encode(images, labels), onehot))

    @torch.no_grad()
    def interpolate(self, a: torch.Tensor, b: torch.Tensor, steps: int = 9, labels=None) -> torch.Tensor:
        """Decode points on the straight line between the posterior means of two uint8 images.

        With an odd `steps`, the middle image is the latent midpoint of the two.
        """
        if steps < 2:
            raise ConfigError(f"steps = {steps}: a line needs both ends", "pass --steps 2 or more (9 is usual)")
        pair = torch.stack([a, b])
        onehot = self._one_hot(labels, 2)
        mu = self.encode(pair, labels)
        t = torch.linspace(0, 1, steps, device=mu.device)[:, None]
        z = (1 - t) * mu[0] + t * mu[1]
        if onehot is not None:
            onehot = (1 - t) * onehot[0] + t * onehot[1]
        return self.mean_image(self.decode(z, onehot))

    @torch.no_grad()
    def log_likelihood(
        self,
        images: torch.Tensor,
        labels=None,
        *,
        k: int = 200,
        generator: torch.Generator | None = None,
        data_generator: torch.Generator | None = None,
        chunk: int = 8192,
    ) -> dict[str, torch.Tensor]:
        """Per-example IWAE bound log p(x) >= log mean_k p(x, z_k) / q(z_k|x), and the ELBO (k=1 term), in nats.

        `images` are uint8. Binarisation draws from `data_generator` (default `generator`), posterior
        samples from `generator`: with separate generators every model sees the same binary test set.
        """
        self.check_images(images)
        if k < 1:
            raise ConfigError(f"k = {k} importance samples", "pass --k 1 or more (200 is the protocol's default)")
        x = self.prepare(images, generator=data_generator or generator)
        onehot = self._one_hot(labels, len(x))
        mu, logvar = self.posterior(x, onehot)
        b, d = mu.shape
        per_chunk = max(1, chunk // b)
        log_w, log_px_first = [], None
        for start in range(0, k, per_chunk):
            kk = min(per_chunk, k - start)
            eps = torch.randn(kk, b, d, generator=generator, device=mu.device)
            z = mu + eps * (0.5 * logvar).exp()  # (kk, B, D)
            cond = onehot.repeat(kk, 1) if onehot is not None else None
            params = self.decode(z.reshape(kk * b, d), cond)
            lpx = self.log_px(x.repeat(kk, 1, 1, 1), params).view(kk, b)
            lpz = (-0.5 * (math.log(2 * math.pi) + z.pow(2))).sum(-1)
            lqz = log_normal(z, mu, logvar)
            log_w.append(lpx + lpz - lqz)
            if log_px_first is None:
                log_px_first = lpx[0]
        log_w = torch.cat(log_w)
        iwae = torch.logsumexp(log_w, 0) - math.log(k)
        elbo = log_px_first - gaussian_kl(mu, logvar)
        return {"log_likelihood": iwae, "elbo": elbo}

    @torch.no_grad()
    def anomaly_score(self, examples: torch.Tensor, labels=None, k: int = 64) -> torch.Tensor:
        """Bits per pixel channel of each uint8 image, (B,), with fixed random numbers; higher is stranger.

        A logistic or threshold-binarised model: -log p(x), the IWAE bound with k samples. A model of dynamically
        binarised images: the bits its binarisations b ~ Bernoulli(x / 255) cost beyond their own randomness,
        E_b[-log p(b)] - H(b) = KL(Bernoulli(x / 255) || p(b)), bounded above by the ELBO's expectation over b,
        which is exact in b: sum_i KL(Bernoulli(x_i) || Bernoulli(decoder_i)) averaged over k posterior samples
        z ~ q(z | x), plus KL(q || p(z)). -log p(b) itself is dominated by H(b), the coin flips of the grey
        pixels: a likelihood ratio against the binarisation removes that complexity term (as Serra et al. 2020
        and Ren et al. 2019 remove a background model's) and the noise of drawing b (docs/anomaly.md has the
        figures). A class-conditional model without `labels` scores the marginal over its classes, uniform prior:
        -log (1/K) sum_y p(x | y)."""
        self.check_images(examples)
        if self.config.likelihood == "bernoulli" and self.config.binarize == "dynamic":
            bound = self._excess_bits_nats
        else:
            def bound(examples, y, k):
                return -self.log_likelihood(examples, y, k=k, generator=torch.Generator().manual_seed(0),
                                            data_generator=torch.Generator().manual_seed(1))["log_likelihood"]

        if labels is None and self.config.condition == "class":
            K = self.config.num_classes
            per_class = torch.stack([bound(examples, torch.full((len(examples),), y, dtype=torch.long), k)
                                     for y in range(K)])
            nats = -(torch.logsumexp(-per_class, 0) - math.log(K))
        else:
            nats = bound(examples, labels, k)
        return nats / (examples[0].numel() * math.log(2))

    def _excess_bits_nats(self, examples: torch.Tensor, labels, k: int) -> torch.Tensor:
        """E_b[-ELBO(b)] - H(b) in nats, (B,), for b ~ Bernoulli(x): the posterior is q(z | x) for every b (any q
        gives a bound), so the expectation over b is the cross-entropy with the grey levels as targets. The
        posterior samples come from one seed each example, so a score does not depend on its batch.

        With the mixture fitted after training (`fit_after_training`), the score is instead the two-stage model's
        (Ghosh et al. 2020: a deterministic code, its density from a mixture fitted to the training codes): the
        excess bits of the reconstruction at the posterior mean plus the code's NLL under the mixture. The prior
        N(0, I) is not where a trained encoder puts its codes (the aggregate posterior has holes and directions
        it never uses); the mixture is, so a code in a region the training images never reached costs what it
        should (docs/anomaly.md has the figures)."""
        if k < 1:
            raise ConfigError(f"k = {k} posterior samples", "pass k 1 or more")
        x = (examples.float() / 255).to(self.encoder_fc[0].weight.device)
        onehot = self._one_hot(labels, len(x))
        mu, logvar = self.posterior(x, onehot)
        entropy = F.binary_cross_entropy(x, x, reduction="none").flatten(1).sum(1)  # H(Bernoulli(x)) summed
        if self.has_mixture():
            params = self.decode(mu, onehot)
            cross = F.binary_cross_entropy_with_logits(params, x, reduction="none").flatten(1).sum(1)
            return cross - entropy - self.code_log_density(mu)
        noise = torch.randn(k, 1, mu.shape[1], generator=torch.Generator().manual_seed(0)).to(mu)  # shared by all
        cross = torch.zeros(len(x), device=x.device)
        for eps in noise:
            params = self.decode(mu + eps * (0.5 * logvar).exp(), onehot)
            cross += F.binary_cross_entropy_with_logits(params, x, reduction="none").flatten(1).sum(1) / k
        return cross - entropy + gaussian_kl(mu, logvar)

    # -- the codes' mixture (ex-post density estimation) ---------------------------------------

    def has_mixture(self) -> bool:
        return self.config.latent_mixture > 0 and bool(self.mixture_weights.sum() > 0)

    def code_log_density(self, z: torch.Tensor) -> torch.Tensor:
        """log p(z) (B,) under the mixture fitted to the training codes."""
        components = torch.distributions.MultivariateNormal(self.mixture_means, scale_tril=self.mixture_scale_tril)
        return torch.logsumexp(components.log_prob(z[:, None]) + self.mixture_weights.clamp_min(1e-30).log(), 1)

    @torch.no_grad()
    def fit_after_training(self, data: Any, seed: int = 0) -> None:
        """Fit `latent_mixture` full-covariance Gaussians (scikit-learn's EM, seeded) to the posterior means of up
        to `MIXTURE_IMAGES` training images, each encoded as the anomaly score encodes it (grey levels for a
        dynamically binarised model, which its score reads; the likelihood's inputs otherwise). Codes a diverged
        network made (not finite, or collapsed onto a few points EM cannot fit) leave the mixture unfitted: the
        score then reads the prior."""
        if not self.config.latent_mixture or getattr(data, "train_x", None) is None or len(data.train_x) < 2:
            return
        from sklearn.mixture import GaussianMixture

        rng = np.random.default_rng(seed)
        pick = np.sort(rng.choice(len(data.train_x), min(MIXTURE_IMAGES, len(data.train_x)), replace=False))
        was_training = self.training
        self.eval()
        device = self.encoder_fc[0].weight.device
        codes = []
        for start in range(0, len(pick), 500):
            index = pick[start : start + 500]
            images = torch.from_numpy(data.train_x[index])
            x = images.float() / 255 if self.config.binarize == "dynamic" and self.config.likelihood == "bernoulli" \
                else self.prepare(images, torch.Generator().manual_seed(seed))
            labels = torch.from_numpy(data.train_y[index]) if self.config.condition == "class" else None
            codes.append(self.posterior(x.to(device), self._one_hot(labels, len(x)))[0].double().cpu())
        self.train(was_training)
        codes = torch.cat(codes).numpy()
        K = min(self.config.latent_mixture, len(np.unique(codes.round(6), axis=0)))
        if not np.isfinite(codes).all() or K < 1:
            return  # a diverged network: the score keeps the prior
        try:
            mixture = GaussianMixture(K, covariance_type="full", reg_covar=1e-4, random_state=seed).fit(codes)
        except (ValueError, np.linalg.LinAlgError):  # collapsed codes (a diverged run): the score keeps the prior
            return
        weights = np.zeros(self.config.latent_mixture)
        weights[:K] = mixture.weights_
        means = np.zeros((self.config.latent_mixture, codes.shape[1]))
        means[:K] = mixture.means_
        trils = np.repeat(np.eye(codes.shape[1])[None], self.config.latent_mixture, 0)
        trils[:K] = np.linalg.cholesky(mixture.covariances_)
        for name, value in (("mixture_weights", weights), ("mixture_means", means), ("mixture_scale_tril", trils)):
            getattr(self, name).copy_(torch.from_numpy(value))
