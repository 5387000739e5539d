"""Variational autoencoder (Kingma & Welling 2014) with a convolutional encoder and decoder.

The encoder maps an image to q(z|x) = N(mu, diag(sigma^2)); the decoder maps z to
the parameters of p(x|z): Bernoulli logits for binary images (dynamically
binarised by default, as in the IWAE paper) or a discretised logistic per pixel
(PixelCNN++) for 8-bit images, so that the likelihood is a real probability
mass and bits/dim mean something. Training maximises the ELBO with an optional
beta (beta-VAE) and a KL warm-up; `log_likelihood` is the importance-weighted
bound of Burda et al. (2016) with k samples, which tightens towards log p(x) as k
grows.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from genlab.config import validate
from genlab.errors import ConfigError
from genlab.models.base import GenerativeModel


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
    log_pdf_mid = mid_in - log_scale - 2 * F.softplus(mid_in) - math.log(127.5)  # density x bin width, when delta underflows
    inner = torch.where(cdf_delta > 1e-5, torch.log(cdf_delta.clamp_min(1e-12)), log_pdf_mid)
    return torch.where(x < -0.999, log_cdf_plus, torch.where(x > 0.999, log_one_minus_cdf_min, inner))


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, sigma^2) || N(0, I)) summed over latent dims (Kingma & Welling, appendix B)."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(-1)


def log_normal(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    return (-0.5 * (math.log(2 * math.pi) + logvar + (z - mu).pow(2) / logvar.exp())).sum(-1)


class ResBlock(nn.Module):
    """Two 3x3 convolutions with a skip; keeps shape."""

    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(nn.SiLU(), nn.Conv2d(channels, channels, 3, padding=1),
                                  nn.SiLU(), nn.Conv2d(channels, channels, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


@dataclasses.dataclass(frozen=True)
class VAEConfig:
    channels: int = 1
    image_size: tuple[int, int] = (28, 28)  # (H, W); filled from the data
    latent_dim: int = 32
    widths: tuple[int, ...] = (32, 64)  # channels of each stride-2 stage
    res_blocks: int = 0  # residual blocks per stage
    hidden_dim: int = 256  # fully connected layer between the convolutions and z (0: none)
    likelihood: Literal["bernoulli", "logistic"] = "bernoulli"
    binarize: Literal["dynamic", "threshold"] = "dynamic"  # how 8-bit pixels become {0,1} for bernoulli
    beta: float = 1.0  # weight of the KL term (beta-VAE when > 1)
    kl_warmup_steps: int = 0  # beta ramps linearly from 0 over these steps
    condition: Literal["none", "class"] = "none"
    num_classes: int = 0
    class_names: tuple[str, ...] = ()

    def __post_init__(self):
        validate(self)
        if self.latent_dim < 1 or not self.widths:
            raise ConfigError("latent_dim must be >= 1 and widths non-empty", "e.g. --model.latent-dim 32 --model.widths [32,64]")

    @property
    def padded_size(self) -> tuple[int, int]:
        """Input size rounded up so that every stride-2 stage divides evenly."""
        m = 2 ** len(self.widths)
        return tuple(-(-s // m) * m for s in self.image_size)


class VAE(GenerativeModel):
    family = "vae"
    Config = VAEConfig
    train_defaults = {"lr": 1e-3, "batch_size": 128, "max_steps": 3000}
    search_space = {"train.lr": {"low": 1e-4, "high": 1e-2, "log": True},
                    "train.batch_size": {"choices": [32, 64, 128]},
                    "model.latent_dim": {"low": 4, "high": 64, "log": True},
                    "model.hidden_dim": {"choices": [0, 128, 256, 512]},
                    "model.widths": {"choices": [[16, 32], [32, 64], [64, 128]]},
                    "model.res_blocks": {"low": 0, "high": 2}}

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
            layers += [*[ResBlock(width) for _ in range(c.res_blocks)], nn.ConvTranspose2d(width, out, 4, stride=2, padding=1)]
            if i < len(widths) - 1:
                layers.append(nn.SiLU())
        self.decoder_conv = nn.Sequential(*layers)
        self.global_step = 0  # set by the engine; drives the KL warm-up

    @classmethod
    def config_for_data(cls, config: VAEConfig, data) -> VAEConfig:
        c, h, w = data.shape
        if config.condition == "class" and len(data.classes) < 2:
            raise ConfigError(f"condition='class' needs labelled data with at least 2 classes; {data.name} has "
                              f"{len(data.classes)}", "use data with labels (a folder with class subfolders) "
                              "or --model.condition none")
        return dataclasses.replace(config, channels=c, image_size=(h, w), num_classes=len(data.classes),
                                   class_names=tuple(data.classes))

    # -- data domain -------------------------------------------------------------------------

    def prepare(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """uint8 images -> the values the likelihood is over: {0,1} for bernoulli, [-1,1] for logistic."""
        x = x.float() / 255
        if self.config.likelihood == "logistic":
            return x * 2 - 1
        if self.config.binarize == "threshold":
            return (x > 0.5).float()
        return torch.bernoulli(x, generator=generator)

    def _one_hot(self, labels: torch.Tensor | None, n: int) -> torch.Tensor | None:
        if self.config.condition != "class":
            return None
        if labels is None:
            raise ValueError("this VAE is class-conditional: pass labels")
        return F.one_hot(labels.long().view(-1), self.config.num_classes).float().expand(n, -1)

    # -- networks ----------------------------------------------------------------------------

    def encode(self, x: torch.Tensor, onehot: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, C, H, W) in the data domain -> mu, logvar, each (B, latent_dim)."""
        ph, pw = self.config.padded_size
        h, w = x.shape[-2:]
        x = F.pad(x, (0, pw - w, 0, ph - h))
        features = self.encoder_conv(x)
        if onehot is not None:
            features = torch.cat([features, onehot], 1)
        mu, logvar = self.encoder_fc(features).chunk(2, dim=-1)
        return mu, logvar.clamp(-12, 8)

    def decode(self, z: torch.Tensor, onehot: torch.Tensor | None = None) -> torch.Tensor:
        """(B, latent_dim) -> likelihood parameters (B, C or 2C, H, W)."""
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

    def loss(self, batch) -> dict[str, torch.Tensor]:
        images, labels = batch
        x = self.prepare(images)
        onehot = self._one_hot(labels, len(x))
        mu, logvar = self.encode(x, onehot)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()  # reparameterisation trick
        rec = -self.log_px(x, self.decode(z, onehot))
        kl = gaussian_kl(mu, logvar)
        warm = min(1.0, (self.global_step + 1) / self.config.kl_warmup_steps) if self.config.kl_warmup_steps else 1.0
        elbo = -(rec + kl)
        loss = (rec + self.config.beta * warm * kl).mean()
        dims = x[0].numel()
        return {"loss": loss, "elbo_nats": elbo.mean(), "rec_nats": rec.mean(), "kl_nats": kl.mean(),
                "bits_per_dim": -elbo.mean() / (dims * math.log(2))}

    def preview(self, generator: torch.Generator) -> torch.Tensor:
        labels = torch.arange(64) % self.config.num_classes if self.config.condition == "class" else None
        return self.sample(64, labels=labels, generator=generator)

    def report_figures(self, data, generator: torch.Generator) -> list[tuple[torch.Tensor, int, str]]:
        """Test images over their reconstructions, and latent walks between classes."""
        labels = torch.from_numpy(data.test_y) if self.config.condition == "class" else None
        x = torch.from_numpy(data.test_x[:16])
        figures = [(torch.cat([x.float() / 255, self.reconstruct(x, None if labels is None else labels[:16])]), 16,
                    "test images (top) and their reconstructions (bottom)")]
        preferred = [("Sneaker", "Ankle boot"), ("T-shirt/top", "Dress"), ("Sandal", "Bag")]
        pairs = [p for p in preferred if set(p) <= set(data.classes)]
        if not pairs and len(data.classes) >= 2:
            pairs = [tuple(data.classes[:2])]
        test_y = torch.from_numpy(data.test_y)
        for a, b in pairs:
            ia, ib = (int((test_y == data.classes.index(c)).nonzero()[0]) for c in (a, b))
            pair_labels = [int(test_y[ia]), int(test_y[ib])] if labels is not None else None
            line = self.interpolate(torch.from_numpy(data.test_x[ia]), torch.from_numpy(data.test_x[ib]), 9, pair_labels)
            figures.append((line, 9, f"{a} to {b}: the middle image is the latent midpoint"))
        return figures

    # -- using the model ---------------------------------------------------------------------

    @torch.no_grad()
    def sample(self, n: int, labels=None, generator: torch.Generator | None = None,
               temperature: float = 1.0) -> torch.Tensor:
        """n images in [0, 1], (n, C, H, W): decoder means at z ~ N(0, temperature^2 I)."""
        device = next(self.parameters()).device
        z = torch.randn(n, self.config.latent_dim, generator=generator, device=device) * temperature
        labels = self.resolve_labels(labels, n)
        onehot = self._one_hot(labels.to(device), n) if labels is not None else None
        return self.mean_image(self.decode(z, onehot))

    @torch.no_grad()
    def reconstruct(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """uint8 images -> their reconstructions in [0, 1] through the posterior mean."""
        x = self.prepare(images, generator=torch.Generator().manual_seed(0))
        onehot = self._one_hot(labels, len(x))
        mu, _ = self.encode(x, onehot)
        return self.mean_image(self.decode(mu, onehot))

    @torch.no_grad()
    def interpolate(self, a: torch.Tensor, b: torch.Tensor, steps: int = 9, labels=None) -> torch.Tensor:
        """Decode points on the straight line between the posterior means of two uint8 images.

        With an odd `steps`, the middle image is the latent midpoint of the two.
        """
        x = self.prepare(torch.stack([a, b]), generator=torch.Generator().manual_seed(0))
        onehot = None
        if self.config.condition == "class":
            onehot = self._one_hot(self.resolve_labels(labels, 2), 2)
        mu, _ = self.encode(x, onehot)
        t = torch.linspace(0, 1, steps, device=mu.device)[:, None]
        z = (1 - t) * mu[0] + t * mu[1]
        if onehot is not None:
            onehot = (1 - t) * onehot[0] + t * onehot[1]
        return self.mean_image(self.decode(z, onehot))

    @torch.no_grad()
    def log_likelihood(self, images: torch.Tensor, labels: torch.Tensor | None = None, k: int = 200,
                       generator: torch.Generator | None = None, chunk: int = 8192,
                       data_generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Per-example IWAE bound log p(x) >= log mean_k p(x, z_k) / q(z_k|x), and the ELBO (k=1 term), in nats.

        `images` are uint8. Binarisation draws from `data_generator` (default `generator`), posterior
        samples from `generator`: with separate generators every model sees the same binary test set.
        """
        x = self.prepare(images, generator=data_generator or generator)
        onehot = self._one_hot(labels, len(x))
        mu, logvar = self.encode(x, onehot)
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
