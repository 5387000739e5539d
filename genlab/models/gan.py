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
DiffAugment for small data (Zhao et al. 2020). Both players step in `train_step`, a two-player
game the engine runs with one optimiser each; it clips gradients and refuses non-finite losses.
A GAN has no likelihood: its anomaly score is its discriminator's, the negative raw critic output.
Why the defaults are what they are, with the measurements: docs/gan.md.
"""

from __future__ import annotations

import copy
import dataclasses
import math

import torch
import torch.nn.functional as F
from torch import nn

from genlab.errors import ConfigError
from genlab.models.adversarial import (
    AUGMENTATIONS,
    LossKind,
    diff_augment,
    discriminator_loss,
    generator_loss,
    gradient_penalty,
    spectral,
    to_signed,
)
from genlab.models.base import (
    AnomalyScorer,
    ConditionalImageConfig,
    ImageModel,
    ImageSampler,
    SampleOptions,
    TwoPlayerGame,
    check_count,
    class_labels,
)
from genlab.models.ema import ema_decay, ema_update


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
        # learned the classes slowly (docs/gan.md, the conditional model)
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
            # thousands of features that makes the projection term dwarf the head's, which swamps the real/fake
            # score from the first step when no spectral norm rescales it (docs/gan.md, the conditional model)
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


@dataclasses.dataclass(frozen=True)
class GANConfig(ConditionalImageConfig):
    latent_dim: int = 128
    """size of the noise vector z"""
    g_widths: tuple[int, ...] = (256, 128)
    """generator: input channels of each stride-2 stage, coarse to fine"""
    d_widths: tuple[int, ...] = (64, 128, 256)
    """discriminator: channels of each stride-2 stage, then of a 3x3 convolution"""
    loss: LossKind = "hinge"
    """adversarial loss"""
    d_batch_norm: bool = True
    """batch norm in the discriminator, reals and fakes normalised apart (DCGAN), so that it sees a batch's
    statistics and tells a generator that covers few modes; not with wgan-gp, whose per-sample gradient penalty it
    would break (Gulrajani et al. 2017, sec. 4). docs/gan.md compares it with spectral norm"""
    spectral_norm: bool = False
    """spectral norm on every discriminator weight (Miyato et al. 2018)"""
    minibatch_std: int = 0
    """> 0: the discriminator sees the feature deviation across groups of this many samples (ProGAN)"""
    class_std: bool = True
    """conditional models: the discriminator sees each sample's feature deviation within its class, without which a
    class-conditional generator ignored z within a class (docs/gan.md, the conditional model)"""
    aux_weight: float = 1.0
    """conditional models: > 0 adds an auxiliary classifier trained on real images to the discriminator, and this
    weight x its cross-entropy on generated images to the generator's loss (AC-GAN's class term)"""
    gp_weight: float = 10.0
    """WGAN-GP's lambda"""
    d_steps: int = 1
    """discriminator updates per generator update"""
    d_lr_ratio: float = 2.0
    """the discriminator's learning rate is this x --lr (TTUR)"""
    ema_decay: float = 0.999
    """samples come from this moving average of the generator's weights (0: the generator itself)"""
    diffaugment: tuple[str, ...] = ()
    """DiffAugment policies for small datasets: any of color, translation, cutout"""
    monitor_samples: int = 2000
    """samples per collapse check at each validation pass (0: no monitoring)"""
    collapse_recall: float = 0.1
    """warn when the collapse monitor's recall falls below this"""

    def __post_init__(self):
        super().__post_init__()
        if self.latent_dim < 1 or not self.g_widths or not self.d_widths:
            raise ConfigError("latent_dim must be >= 1 and g_widths, d_widths non-empty",
                              "e.g. --model.g-widths [256,128] --model.d-widths [64,128,256]")
        unknown = sorted(set(self.diffaugment) - set(AUGMENTATIONS))
        if unknown:
            raise ConfigError(
                f"unknown DiffAugment policy {', '.join(unknown)}", f"use any of {', '.join(AUGMENTATIONS)}"
            )
        if self.d_steps < 1 or not 0 <= self.ema_decay < 1:
            raise ConfigError(
                "d_steps must be >= 1 and ema_decay in [0, 1)",
                "e.g. --model.d-steps 1 --model.ema-decay 0.999",
            )
        if self.monitor_samples < 0:
            raise ConfigError(f"monitor_samples = {self.monitor_samples} must be >= 0", "0 turns the monitor off")


class GAN(ImageModel, TwoPlayerGame, ImageSampler, AnomalyScorer):
    """A DCGAN-style GAN: a batch-normed discriminator, hinge loss, TTUR and an EMA generator (--model.condition
    class: conditional batch norm in G; projection, class deviation and an auxiliary classifier in D;
    --model.loss non-saturating|wgan-gp); anomaly scores from its discriminator."""

    family = "gan"
    Config = GANConfig

    def __init__(self, config: GANConfig):
        super().__init__(config)
        self.generator = Generator(config)
        self.discriminator = Discriminator(config)
        self.generator_ema = copy.deepcopy(self.generator).requires_grad_(False)

    def train(self, mode: bool = True) -> GAN:
        super().train(mode)
        self.generator_ema.eval()  # it only samples: its batch norm uses the (averaged) running statistics
        return self

    # -- training ----------------------------------------------------------------------------

    def players(self) -> tuple[nn.Module, nn.Module]:
        return self.generator, self.discriminator

    def _labels(self, labels: torch.Tensor) -> torch.Tensor | None:
        return labels.long() if self.config.condition == "class" else None

    def _critic(self, x: torch.Tensor, y: torch.Tensor | None, with_classes: bool = False):
        return self.discriminator(diff_augment(x, self.config.diffaugment), y, with_classes)

    def train_step(self, batch, update, step: int) -> dict[str, torch.Tensor]:
        """Discriminator update(s) on real and generated images, then a generator update, then the EMA update."""
        c = self.config
        images, labels = batch
        real, y = to_signed(images), self._labels(labels)
        z = torch.randn(len(real), c.latent_dim, device=real.device)
        fake = self.generator(z, y)  # kept with its graph for the generator's update
        for i in range(c.d_steps):
            if i < c.d_steps - 1:  # earlier discriminator updates see fresh samples
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
            update(d_loss, 1)

        self.discriminator.requires_grad_(False)  # the generator's update needs no weight gradients of D
        score, classes = self._critic(fake, y, True)
        g_loss = total = generator_loss(c.loss, score)
        if classes is not None:
            aux = F.cross_entropy(classes, y)
            out["g_class_loss"] = aux.detach()
            total = g_loss + c.aux_weight * aux
        update(total, 0)
        self.discriminator.requires_grad_(True)
        ema_update(self.generator_ema, self.generator, ema_decay(c.ema_decay, step))
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

    # -- using the model ---------------------------------------------------------------------

    @torch.no_grad()
    def sample(self, n: int, *, labels=None, prompt=None, generator: torch.Generator | None = None,
               options: SampleOptions | None = None, chunk: int = 500) -> torch.Tensor:
        """n images in [0, 1], (n, C, H, W), from the EMA generator at z ~ N(0, temperature^2 I).

        `labels` (conditional models): a class name or index for all, one per image, or None to cycle
        through the classes. A temperature below 1 trades variety for fidelity (the truncation trick).
        """
        check_count(n)
        if prompt is not None:
            raise ConfigError("a GAN takes no prompt", "drop --prompt; a class-conditional GAN takes --label")
        options = options or SampleOptions()
        device = next(self.parameters()).device
        labels = class_labels(self.config, labels, n)
        z = torch.randn(n, self.config.latent_dim, generator=generator, device=device) * options.temperature
        out = []
        for i in range(0, n, chunk):
            y = labels[i : i + chunk].to(device) if labels is not None else None
            out.append(self.generator_ema(z[i : i + chunk], y))
        return (torch.cat(out) + 1) / 2

    @torch.no_grad()
    def anomaly_score(self, examples: torch.Tensor, labels=None) -> torch.Tensor:
        """The discriminator's verdict on uint8 images (B, C, H, W) as an anomaly score, (B,): its raw output,
        negated, so that what it calls fake scores high.

        Not bits per dimension, and not a likelihood: a GAN has none. This is the critic's score in its own
        units (hinge, logit or Wasserstein critic, as trained), comparable between images scored by one model
        only, and it judges "unlike the reals it was shown" only as far as the generator taught it to: an image
        nothing like the generator's output may still pass. The discriminator runs in evaluation mode (batch norm
        with its running statistics, so each image's score is its own), without DiffAugment. Where it reads a
        batch's statistics (--model.minibatch-std, a conditional model's class deviation) those are of the
        scored batch, which then should be large. A class-conditional model scores the projection
        discriminator's output for `labels`, or without them the log-mean-exp of its outputs over the classes
        (the marginal under a uniform prior, reading each output as a log density ratio, as the non-saturating
        loss trains it)."""
        self.check_images(examples)
        c, d = self.config, self.discriminator
        x = to_signed(examples.to(next(d.parameters()).device))
        training = d.training
        d.eval()
        try:
            if c.condition != "class":
                class_labels(c, labels, len(x))  # refuses labels with a clear error
                out = d(x)
            elif labels is not None:
                out = d(x, class_labels(c, labels, len(x)).to(x.device))
            else:
                per_class = torch.stack([d(x, torch.full((len(x),), y, device=x.device, dtype=torch.long))
                                         for y in range(c.num_classes)])  # (K, B)
                out = torch.logsumexp(per_class, 0) - math.log(c.num_classes)
        finally:
            d.train(training)
        return -out
