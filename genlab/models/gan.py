"""Generative adversarial networks (Goodfellow et al. 2014), stable by default and watched for collapse.

Generator: the DCGAN layout (Radford et al. 2016): a linear layer to a small feature map, then
stride-2 transposed convolutions with batch norm and ReLU, tanh output in [-1, 1]. A class-
conditional generator looks up the batch-norm scale and shift per class (conditional batch norm,
de Vries et al. 2017, as used with the projection discriminator).
Discriminator: stride-2 convolutions with batch norm and LeakyReLU (DCGAN), reals and fakes
normalised apart, so that it sees each batch's statistics and can tell a generator that covers few
modes; or spectral norm on every weight (Miyato et al. 2018), and a minibatch-deviation feature
(Karras et al. 2018). A linear head; a class-conditional one adds the projection term
<embed(y), phi(x)> (Miyato & Koyama 2018, eq. 3), sees each sample's feature deviation within its
class (so that a generator ignoring z within a class is told apart), and has an auxiliary classifier
trained on reals whose cross-entropy on the fakes the generator also minimises (Odena et al. 2017).

Training defaults: hinge loss (Lim & Ye 2017; Miyato et al. 2018, eq. 16-17), a discriminator
learning rate above the generator's (two time-scale update rule, Heusel et al. 2017), and samples
from an exponential moving average of the generator's weights (Yazici et al. 2019). Also:
the non-saturating loss (Goodfellow et al. 2014, sec. 3), WGAN-GP (Gulrajani et al. 2017) and
DiffAugment for small data (Zhao et al. 2020). Both players step in `train_step` under Lightning
manual optimisation; the engine clips gradients and refuses non-finite losses.

Collapse monitoring: at every validation pass `CollapseMonitor` samples from the EMA generator and
logs recall, FD-genlab and the reference classifier's class histogram (`monitor/...` in
metrics.jsonl), and warns when recall falls or classes vanish from the samples.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import sys
from typing import Literal

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import nn

from genlab.config import validate
from genlab.errors import ConfigError, DataError
from genlab.models.base import GenerativeModel

LossKind = Literal["hinge", "non-saturating", "wgan-gp"]
AUGMENTATIONS = ("color", "translation", "cutout")

# -- losses (shared with pix2pix) -------------------------------------------------------------


def discriminator_loss(kind: str, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """The discriminator's (critic's) loss from its raw outputs on real and generated images; lower is better for it.

    hinge:          E[max(0, 1 - D(x))] + E[max(0, 1 + D(G(z)))]
    non-saturating: E[softplus(-D(x))] + E[softplus(D(G(z)))]  (binary cross-entropy on logits)
    wgan-gp:        E[D(G(z))] - E[D(x)]  (the gradient penalty is added by the caller)
    """
    if kind == "hinge":
        return F.relu(1 - real).mean() + F.relu(1 + fake).mean()
    if kind == "non-saturating":
        return F.softplus(-real).mean() + F.softplus(fake).mean()
    if kind == "wgan-gp":
        return fake.mean() - real.mean()
    raise ValueError(f"unknown GAN loss {kind!r}")


def generator_loss(kind: str, fake: torch.Tensor) -> torch.Tensor:
    """The generator's loss from the discriminator's outputs on its images: -E[D(G(z))] for hinge and
    WGAN, E[softplus(-D(G(z)))] = -E[log sigmoid D(G(z))] for the non-saturating loss."""
    if kind == "non-saturating":
        return F.softplus(-fake).mean()
    if kind in ("hinge", "wgan-gp"):
        return -fake.mean()
    raise ValueError(f"unknown GAN loss {kind!r}")


def gradient_penalty(critic, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """WGAN-GP's E[(|grad D(x_hat)|_2 - 1)^2] at x_hat on random lines between real and fake (Gulrajani et al. 2017, eq. 3)."""
    eps = torch.rand(len(real), *([1] * (real.ndim - 1)), device=real.device)
    x_hat = (eps * real + (1 - eps) * fake).requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(x_hat).sum(), x_hat, create_graph=True)
    return (grad.flatten(1).norm(dim=1) - 1).pow(2).mean()


# -- training helpers (shared with pix2pix) ---------------------------------------------------


def spectral(module: nn.Module, enabled: bool) -> nn.Module:
    """The module with its weight divided by its largest singular value (one power iteration per training forward)."""
    return nn.utils.parametrizations.spectral_norm(module) if enabled else module


def diff_augment(x: torch.Tensor, policy: tuple[str, ...]) -> torch.Tensor:
    """Differentiable augmentation of images in [-1, 1] (Zhao et al. 2020), applied alike to real and fake
    images before the discriminator, so that it cannot memorise a small training set."""
    b = len(x)
    if "color" in policy:  # brightness, saturation and contrast, each drawn per image
        x = x + (torch.rand(b, 1, 1, 1, device=x.device) - 0.5)
        mean = x.mean(dim=1, keepdim=True)
        x = (x - mean) * (torch.rand(b, 1, 1, 1, device=x.device) * 2) + mean
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        x = (x - mean) * (torch.rand(b, 1, 1, 1, device=x.device) + 0.5) + mean
    if "translation" in policy:  # shift by up to 1/8 of the size, zero padding
        h, w = x.shape[-2:]
        sy, sx = max(1, h // 8), max(1, w // 8)
        padded = F.pad(x, (sx, sx, sy, sy))
        dy = torch.randint(0, 2 * sy + 1, (b, 1, 1), device=x.device)
        dx = torch.randint(0, 2 * sx + 1, (b, 1, 1), device=x.device)
        rows = (dy + torch.arange(h, device=x.device)[None, :, None]).expand(b, h, w)  # (B, H, W)
        cols = (dx + torch.arange(w, device=x.device)[None, None, :]).expand(b, h, w)
        x = padded[torch.arange(b, device=x.device)[:, None, None], :, rows, cols].permute(0, 3, 1, 2)
    if "cutout" in policy:  # blank a square of half the size at a random place
        h, w = x.shape[-2:]
        ch, cw = max(1, h // 2), max(1, w // 2)
        cy = torch.randint(0, h + 1 - ch, (b, 1, 1), device=x.device)
        cx = torch.randint(0, w + 1 - cw, (b, 1, 1), device=x.device)
        ys = torch.arange(h, device=x.device)[None, :, None]
        xs = torch.arange(w, device=x.device)[None, None, :]
        inside = (ys >= cy) & (ys < cy + ch) & (xs >= cx) & (xs < cx + cw)  # (B, H, W)
        x = x * (~inside)[:, None].to(x.dtype)
    return x


@torch.no_grad()
def ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """ema <- decay * ema + (1 - decay) * model, for weights and floating-point buffers (batch-norm statistics)."""
    for e, m in zip(ema.parameters(), model.parameters(), strict=True):
        e.lerp_(m, 1 - decay)
    for e, m in zip(ema.buffers(), model.buffers(), strict=True):
        if e.dtype.is_floating_point:
            e.lerp_(m, 1 - decay)
        else:
            e.copy_(m)


def ema_decay(target: float, step: int) -> float:
    """A decay that ramps up to `target`, so that the average forgets the random initial weights early on
    (the num_updates rule of TensorFlow's ExponentialMovingAverage)."""
    return min(target, (1 + step) / (10 + step))


def two_player_optimizers(generator: nn.Module, discriminator: nn.Module, train, d_lr_ratio: float):
    """[generator's, discriminator's] Adam; the discriminator's learning rate is `d_lr_ratio` x the generator's (TTUR)."""
    def adam(module: nn.Module, lr: float) -> torch.optim.Optimizer:
        return torch.optim.AdamW(module.parameters(), lr=lr, betas=tuple(train.betas), weight_decay=train.weight_decay)

    return [adam(generator, train.lr), adam(discriminator, train.lr * d_lr_ratio)]


def to_signed(images: torch.Tensor) -> torch.Tensor:
    """uint8 images -> float in [-1, 1], the range of the generator's tanh."""
    return images.float() / 127.5 - 1


# -- networks ---------------------------------------------------------------------------------


def minibatch_stddev(x: torch.Tensor, group: int) -> torch.Tensor:
    """x (B, C, H, W) with one more channel: the standard deviation of the features across a group of
    `group` consecutive samples, averaged over features and positions (ProGAN, Karras et al. 2018,
    sec. 3). The discriminator then sees how varied a batch is, so a generator that covers few modes
    is told apart. Groups are consecutive samples, so a batch of reals followed by fakes never mixes
    them when the half-batch divides by the group; a batch the group does not divide falls back to the
    largest group size that does."""
    b, c, h, w = x.shape
    g = next(size for size in range(min(group, b), 0, -1) if b % size == 0)
    std = x.view(b // g, g, c, h, w).var(dim=1, unbiased=False).add(1e-8).sqrt().mean(dim=(1, 2, 3))  # (B / g,)
    return torch.cat([x, std.repeat_interleave(g).view(b, 1, 1, 1).expand(b, 1, h, w)], dim=1)


def class_stddev(x: torch.Tensor, y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """x (B, C, H, W) with one more channel: for each sample, the standard deviation of the features across
    the batch's samples of its class, averaged over features and positions. The class-conditional form of
    the minibatch deviation: a batch of many classes is varied even when each class is a single image, so
    the deviation that tells collapse apart is the one within a class (0 for a class seen once)."""
    b, c, h, w = x.shape
    onehot = F.one_hot(y, num_classes).to(x.dtype)  # (B, K)
    count = onehot.sum(0).clamp_min(1)[:, None]  # (K, 1)
    flat = x.reshape(b, -1)
    mean = onehot.t() @ flat / count  # (K, CHW)
    var = (onehot.t() @ flat.square() / count - mean.square()).clamp_min(0)
    std = (var + 1e-8).sqrt().mean(dim=1)  # (K,)
    return torch.cat([x, std[y].view(b, 1, 1, 1).expand(b, 1, h, w)], dim=1)


class ConditionalBatchNorm2d(nn.Module):
    """Batch norm with a learned scale and shift, per class when `num_classes` > 0 (de Vries et al. 2017)."""

    def __init__(self, channels: int, num_classes: int = 0):
        super().__init__()
        self.norm = nn.BatchNorm2d(channels, affine=num_classes == 0)
        self.embed = nn.Embedding(num_classes, 2 * channels) if num_classes else None
        if self.embed is not None:
            nn.init.ones_(self.embed.weight[:, :channels])
            nn.init.zeros_(self.embed.weight[:, channels:])

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        x = self.norm(x)
        if self.embed is None:
            return x
        gamma, beta = self.embed(y).chunk(2, dim=1)  # (B, C) each
        return x * gamma[:, :, None, None] + beta[:, :, None, None]


class Generator(nn.Module):
    """z (B, latent_dim) [+ classes (B,)] -> images (B, C, H, W) in [-1, 1]."""

    def __init__(self, c: GANConfig):
        super().__init__()
        k = c.num_classes if c.condition == "class" else 0
        ups = len(c.g_widths)
        self.bottom = (c.g_widths[0], *(-(-s // 2**ups) for s in c.image_size))  # (C0, H0, W0), rounded up
        # a conditional generator also reads its class at the input, as a learned N(0, I)-initialised vector the
        # size of z beside it (Mirza & Osindero 2014; BigGAN's shared embedding): conditional batch norm alone
        # learned the classes slowly (reference-classifier accuracy 15% at 500 steps)
        self.label_embed = nn.Embedding(k, c.latent_dim) if k else None
        self.fc = nn.Linear(c.latent_dim * (2 if k else 1), math.prod(self.bottom))
        self.norms = nn.ModuleList(ConditionalBatchNorm2d(w, k) for w in c.g_widths)
        outs = [*c.g_widths[1:], c.channels]
        self.ups = nn.ModuleList(nn.ConvTranspose2d(w, o, 4, stride=2, padding=1, bias=i == ups - 1)
                                 for i, (w, o) in enumerate(zip(c.g_widths, outs, strict=True)))
        self.image_size = tuple(c.image_size)
        # DCGAN's init, N(0, 0.02). PyTorch's default for a transposed convolution takes its fan-in from the
        # output channels (16 for a 4x4 kernel to one channel): weights up to 0.25 saturate the tanh from the
        # first step, its gradient vanishes and the discriminator wins at once.
        for m in [self.fc, *self.ups]:
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        if self.label_embed is not None:
            z = torch.cat([z, self.label_embed(y)], dim=1)
        h = self.fc(z).view(-1, *self.bottom)
        for norm, up in zip(self.norms, self.ups, strict=True):
            h = up(F.relu(norm(h, y)))  # each stage doubles H and W
        return torch.tanh(h[..., : self.image_size[0], : self.image_size[1]])


class Discriminator(nn.Module):
    """images (B, C, H, W) in [-1, 1] [+ classes (B,)] -> raw scores (B,); higher means "real"."""

    def __init__(self, c: GANConfig):
        super().__init__()
        layers: list[nn.Module] = []
        channels, (h, w) = c.channels, c.image_size
        self.batch_norm = c.d_batch_norm and c.loss != "wgan-gp"
        for i, width in enumerate(c.d_widths[:-1]):  # stride-2 stages
            layers.append(spectral(nn.Conv2d(channels, width, 4, stride=2, padding=1), c.spectral_norm))
            if self.batch_norm and i > 0:  # DCGAN: batch norm after every convolution but the first
                layers.append(nn.BatchNorm2d(width))
            layers.append(nn.LeakyReLU(0.2))
            channels, h, w = width, h // 2, w // 2
        self.downsample = nn.Sequential(*layers)
        self.minibatch_std = c.minibatch_std
        self.class_std = c.num_classes if c.condition == "class" and c.class_std else 0
        # then one 3x3 convolution at the lowest resolution (seeing the deviation features, if on)
        extra = (c.minibatch_std > 0) + (self.class_std > 0)
        self.top = nn.Sequential(spectral(nn.Conv2d(channels + extra, c.d_widths[-1], 3, padding=1),
                                          c.spectral_norm),
                                 *([nn.BatchNorm2d(c.d_widths[-1])] if self.batch_norm else []), nn.LeakyReLU(0.2),
                                 nn.Flatten())
        channels = c.d_widths[-1]
        dim = channels * h * w
        self.head = spectral(nn.Linear(dim, 1), c.spectral_norm)
        k = c.num_classes if c.condition == "class" else 0
        self.embed = nn.Embedding(k, dim) if k else None
        if self.embed is not None:
            # the head's scale (nn.Linear's default bound, 1 / sqrt(dim)) rather than nn.Embedding's N(0, 1): over
            # 12,544 features that would make the projection term ~100x the head's, which swamps the real/fake score
            # from the first step when no spectral norm rescales it (class accuracy 29% at 1,000 steps)
            nn.init.uniform_(self.embed.weight, -dim**-0.5, dim**-0.5)
            self.embed = spectral(self.embed, c.spectral_norm)
        # an auxiliary classifier on the same features (AC-GAN, Odena et al. 2017), trained on reals only
        self.classifier = nn.Linear(dim, k) if k and c.aux_weight > 0 else None

    def features(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        h = self.downsample(x)
        if self.minibatch_std:
            h = minibatch_stddev(h, self.minibatch_std)
        if self.class_std:
            h = class_stddev(h, y, self.class_std)
        return self.top(h)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None, with_classes: bool = False):
        """Scores (B,); with_classes: (scores, the auxiliary classifier's logits (B, K) or None)."""
        phi = self.features(x, y)  # (B, D)
        out = self.head(phi).squeeze(1)
        if self.embed is not None:
            out = out + (self.embed(y) * phi).sum(dim=1)  # projection: <embed(y), phi(x)>
        if with_classes:
            return out, self.classifier(phi) if self.classifier is not None else None
        return out


# -- config and model -------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class GANConfig:
    channels: int = 1
    image_size: tuple[int, int] = (28, 28)  # (H, W); filled from the data
    latent_dim: int = 128
    g_widths: tuple[int, ...] = (256, 128)  # input channels of each stride-2 generator stage, coarse to fine
    d_widths: tuple[int, ...] = (64, 128, 256)  # discriminator: stride-2 stages, then a 3x3 convolution
    loss: LossKind = "hinge"
    # The discriminator's normalisation. Batch norm (DCGAN), with reals and fakes normalised apart, lets it see
    # a batch's statistics, and so a generator that covers few modes: at 800 steps on Fashion-MNIST it gave
    # FD-genlab 170 and recall 0.42 where spectral norm gave 224 and 0.23 (docs/gan.md). Not with wgan-gp,
    # whose per-sample gradient penalty batch norm would break (Gulrajani et al. 2017, sec. 4).
    d_batch_norm: bool = True
    spectral_norm: bool = False  # on every discriminator weight (Miyato et al. 2018)
    minibatch_std: int = 0  # > 0: the discriminator sees the feature deviation across groups of this many samples
    # conditional models: the discriminator also sees each sample's feature deviation across the batch's samples
    # of its class. Without it the generator ignored z within a class: recall 0.004 at 90% class accuracy after
    # 1,000 steps, as a batch of many classes looks varied to a batch-normed discriminator however each class is.
    class_std: bool = True
    # conditional models: > 0 adds an auxiliary classifier to the discriminator, trained on real images, and the
    # generator's loss gains this weight x its cross-entropy on the generated ones (AC-GAN's class term). After
    # 5 epochs the reference classifier agreed with the requested class on 93.7% of samples with it, 87.0%
    # without, and FD-genlab was 27.3 against 31.3 (recall 0.69 both)
    aux_weight: float = 1.0
    gp_weight: float = 10.0  # WGAN-GP's lambda
    d_steps: int = 1  # discriminator updates per generator update
    d_lr_ratio: float = 2.0  # the discriminator's learning rate is this x --lr (TTUR)
    ema_decay: float = 0.999  # samples come from this moving average of the generator's weights (0: the generator)
    diffaugment: tuple[str, ...] = ()  # any of color, translation, cutout: for small datasets
    condition: Literal["none", "class"] = "none"
    num_classes: int = 0
    class_names: tuple[str, ...] = ()
    monitor_samples: int = 2000  # samples per collapse check at each validation pass (0: no monitoring)
    collapse_recall: float = 0.1  # warn when the monitor's recall falls below this

    def __post_init__(self):
        validate(self)
        if self.latent_dim < 1 or not self.g_widths or not self.d_widths:
            raise ConfigError("latent_dim must be >= 1 and g_widths, d_widths non-empty",
                              "e.g. --model.g-widths [256,128] --model.d-widths [64,128,256]")
        unknown = sorted(set(self.diffaugment) - set(AUGMENTATIONS))
        if unknown:
            raise ConfigError(f"unknown DiffAugment policy {', '.join(unknown)}", f"use any of {', '.join(AUGMENTATIONS)}")
        if self.d_steps < 1 or not 0 <= self.ema_decay < 1:
            raise ConfigError("d_steps must be >= 1 and ema_decay in [0, 1)", "e.g. --model.d-steps 1 --model.ema-decay 0.999")
        if self.condition == "class" and self.num_classes == 1:  # 0: not filled from the data yet
            raise ConfigError("condition='class' needs at least 2 classes", "or use --model.condition none")


class GAN(GenerativeModel):
    """A DCGAN-style GAN: a batch-normed discriminator, hinge loss, TTUR and an EMA generator (--model.condition
    class: conditional batch norm in G; projection, class deviation and an auxiliary classifier in D;
    --model.loss non-saturating|wgan-gp)."""

    family = "gan"
    Config = GANConfig
    manual_optimization = True
    monitor = "monitor/fd_genlab"  # best.ckpt: the lowest FD-genlab of the collapse monitor's samples
    train_defaults = {"lr": 2e-4, "betas": (0.5, 0.999), "batch_size": 128, "max_steps": 3000, "warmup_steps": 0,
                      "grad_clip": 10.0, "val_every": 500, "val_batches": 4, "sample_every": 500}
    search_space = {"train.lr": {"low": 5e-5, "high": 1e-3, "log": True},
                    "train.batch_size": {"choices": [64, 128]},
                    "model.d_lr_ratio": {"low": 0.5, "high": 4.0, "log": True},
                    "model.latent_dim": {"choices": [64, 128]},
                    "model.ema_decay": {"choices": [0.99, 0.999]},
                    "model.loss": {"choices": ["hinge", "non-saturating"]}}

    def __init__(self, config: GANConfig):
        super().__init__(config)
        self.generator = Generator(config)
        self.discriminator = Discriminator(config)
        self.generator_ema = copy.deepcopy(self.generator).requires_grad_(False)
        self.global_step = 0  # set by the engine; drives the EMA warm-up

    @classmethod
    def config_for_data(cls, config: GANConfig, data) -> GANConfig:
        if config.condition == "class" and len(data.classes) < 2:
            raise ConfigError("condition='class' needs labelled data with at least 2 classes",
                              "use a dataset with labels (a folder with class subfolders) or --model.condition none")
        c, h, w = data.shape
        return dataclasses.replace(config, channels=c, image_size=(h, w), num_classes=len(data.classes),
                                   class_names=tuple(data.classes))

    def train(self, mode: bool = True) -> GAN:
        super().train(mode)
        self.generator_ema.eval()  # it only samples: its batch norm uses the (averaged) running statistics
        return self

    def callbacks(self, data, train) -> list[pl.Callback]:
        return [CollapseMonitor(data, self.config.monitor_samples, self.config.collapse_recall, train.seed,
                                train.progress)] if self.config.monitor_samples else []

    # -- training ----------------------------------------------------------------------------

    def optimizers(self, train) -> list[torch.optim.Optimizer]:
        return two_player_optimizers(self.generator, self.discriminator, train, self.config.d_lr_ratio)

    def _labels(self, labels: torch.Tensor) -> torch.Tensor | None:
        return labels.long() if self.config.condition == "class" else None

    def _critic(self, x: torch.Tensor, y: torch.Tensor | None, with_classes: bool = False):
        return self.discriminator(diff_augment(x, self.config.diffaugment), y, with_classes)

    def train_step(self, batch, step) -> dict[str, torch.Tensor]:
        """Discriminator step(s) on real and generated images, then a generator step, then the EMA update."""
        c = self.config
        images, labels = batch
        real, y = to_signed(images), self._labels(labels)
        z = torch.randn(len(real), c.latent_dim, device=real.device)
        fake = self.generator(z, y)  # kept with its graph for the generator's step
        for i in range(c.d_steps):
            if i < c.d_steps - 1:  # earlier discriminator steps see fresh samples
                with torch.no_grad():
                    d_fake_input = self.generator(torch.randn_like(z), y)
            else:
                d_fake_input = fake.detach()
            if self.discriminator.batch_norm or self.discriminator.class_std:  # each batch seen apart, as DCGAN trains
                # (batch norm's statistics and the class deviation would otherwise mix reals and fakes)
                (d_real, classes), d_fake = self._critic(real, y, True), self._critic(d_fake_input, y)
            else:
                both_y = torch.cat([y, y]) if y is not None else None
                scores, classes = self._critic(torch.cat([real, d_fake_input]), both_y, True)  # one forward for both
                d_real, d_fake = scores.chunk(2)
                classes = classes[: len(real)] if classes is not None else None
            d_loss = discriminator_loss(c.loss, d_real, d_fake)
            out = {"d_loss": d_loss.detach(), "d_real": d_real.mean().detach(), "d_fake": d_fake.mean().detach()}
            if classes is not None:
                aux = F.cross_entropy(classes, y)
                d_loss = d_loss + aux
                out["d_class_loss"] = aux.detach()
            if c.loss == "wgan-gp":
                penalty = gradient_penalty(lambda x: self.discriminator(x, y), real, d_fake_input)
                d_loss = d_loss + c.gp_weight * penalty
                out["gradient_penalty"] = penalty.detach()
            step(d_loss, 1)

        self.discriminator.requires_grad_(False)  # the generator's step needs no weight gradients of D
        score, classes = self._critic(fake, y, True)
        g_loss = total = generator_loss(c.loss, score)
        if classes is not None:
            aux = F.cross_entropy(classes, y)
            out["g_class_loss"] = aux.detach()
            total = g_loss + c.aux_weight * aux
        step(total, 0)
        self.discriminator.requires_grad_(True)
        ema_update(self.generator_ema, self.generator, ema_decay(c.ema_decay, self.global_step))
        # "loss" (progress bar) is the discriminator's: for hinge 2 at chance, 0 when it separates perfectly.
        return {"loss": out["d_loss"], "g_loss": g_loss.detach(), **out}

    @torch.no_grad()
    def validation_metrics(self, batch) -> dict[str, torch.Tensor]:
        """The discriminator on held-out real images against EMA samples: d_real drifting above its
        training value while d_fake does not is the sign of a discriminator that memorises."""
        images, labels = batch
        real, y = to_signed(images), self._labels(labels)
        fake = self.generator_ema(torch.randn(len(real), self.config.latent_dim, device=real.device), y)
        d_real, d_fake = self.discriminator(real, y), self.discriminator(fake, y)
        return {"loss": discriminator_loss(self.config.loss, d_real, d_fake),
                "g_loss": generator_loss(self.config.loss, d_fake), "d_real": d_real.mean(), "d_fake": d_fake.mean()}

    def preview(self, generator: torch.Generator) -> torch.Tensor:
        return self.sample(64, generator=generator)

    # -- using the model ---------------------------------------------------------------------

    @torch.no_grad()
    def sample(self, n: int, labels=None, generator: torch.Generator | None = None, temperature: float = 1.0,
               chunk: int = 500) -> torch.Tensor:
        """n images in [0, 1], (n, C, H, W), from the EMA generator at z ~ N(0, temperature^2 I).

        `labels` (conditional models): a class name or index for all, one per image, or None to cycle
        through the classes. A temperature below 1 trades variety for fidelity (the truncation trick).
        """
        device = next(self.parameters()).device
        labels = self.resolve_labels(labels, n)
        z = torch.randn(n, self.config.latent_dim, generator=generator, device=device) * temperature
        out = []
        for i in range(0, n, chunk):
            y = labels[i : i + chunk].to(device) if labels is not None else None
            out.append(self.generator_ema(z[i : i + chunk], y))
        return (torch.cat(out) + 1) / 2 if out else torch.zeros(0, self.config.channels, *self.config.image_size)

    def report_figures(self, data, generator: torch.Generator) -> list[tuple[torch.Tensor, int, str]]:
        """Conditional models: one row of samples per class."""
        if self.config.condition != "class":
            return []
        k = self.config.num_classes
        labels = torch.arange(k).repeat_interleave(10)
        return [(self.sample(len(labels), labels=labels, generator=generator), 10,
                 "one row per class: " + ", ".join(self.config.class_names))]


# -- collapse monitoring ----------------------------------------------------------------------


def collapse_warning(recall: float, fractions, real_fractions, names, recall_floor: float) -> str | None:
    """What looks collapsed, or None: recall below the floor, or classes whose share of the samples is under
    a fifth of their share of real images (the reference classifier's predicted-class histograms)."""
    problems = []
    if recall < recall_floor:
        problems.append(f"recall {recall:.3f} < {recall_floor:g}: the samples cover little of the data")
    missing = [name for name, f, r in zip(names, fractions, real_fractions, strict=True) if r > 0 and f < 0.2 * r]
    if missing:
        problems.append(f"classes nearly absent from the samples: {', '.join(missing)}")
    return "; ".join(problems) or None


class CollapseMonitor(pl.Callback):
    """At each validation pass: samples from the EMA generator measured against the held-out validation images in
    the reference classifier's feature space (recall, precision, FD-genlab, class histogram), logged as monitor/...,
    with a warning when they look collapsed. Draws its noise from its own generator: training randomness is untouched."""

    def __init__(self, data, samples: int, recall_floor: float, seed: int, progress: bool):
        self.data, self.samples, self.recall_floor, self.seed, self.progress = data, samples, recall_floor, seed, progress
        self.reference = None
        self.real: tuple[torch.Tensor, torch.Tensor] | None = None  # features and class probabilities
        self.warnings: list[str] = []

    def on_fit_start(self, trainer, pl_module):
        from genlab.data.loader import split_validation
        from genlab.metrics.reference import reference_classifier

        try:
            self.reference = reference_classifier(self.data, progress=self.progress)
        except DataError as error:
            print(f"collapse monitor off: {error}", file=sys.stderr)
            return
        val_images = split_validation(self.data)[1][0]
        self.real = self.reference.embed(val_images[: self.samples])

    @torch.no_grad()
    def on_validation_epoch_end(self, trainer, pl_module):
        from genlab.metrics.images import class_accuracy, class_histogram, fd_genlab, prdc

        if self.reference is None or trainer.sanity_checking or len(self.real[0]) <= 5:
            return
        model = pl_module.model
        labels = model.resolve_labels(None, self.samples)
        generator = torch.Generator(next(model.parameters()).device).manual_seed(self.seed)  # the same z at every check
        fake = model.sample(self.samples, labels=labels, generator=generator)
        features, probs = self.reference.embed(fake.cpu())
        real_features, real_probs = self.real
        metrics = {f"monitor/{k}": v for k, v in prdc(real_features, features).items()}
        metrics["monitor/fd_genlab"] = fd_genlab(real_features, features)
        fractions, real_fractions = class_histogram(probs), class_histogram(real_probs)
        metrics["monitor/class_histogram_tv"] = float(abs(fractions - real_fractions).sum() / 2)
        metrics |= {f"monitor/class_fraction/{name}": float(f) for name, f in zip(self.reference.classes, fractions, strict=True)}
        if labels is not None:
            metrics["monitor/class_accuracy"] = class_accuracy(probs, labels)
        pl_module.log_dict(metrics)
        warning = collapse_warning(metrics["monitor/recall"], fractions, real_fractions, self.reference.classes,
                                   self.recall_floor)
        if warning:
            message = f"possible mode collapse at step {trainer.global_step}: {warning}"
            self.warnings.append(message)
            print(f"warning: {message}", file=sys.stderr)
