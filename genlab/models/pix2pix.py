"""pix2pix (Isola et al. 2017): image-to-image translation with a U-Net generator and a PatchGAN discriminator.

The pairs come from any image dataset through a task transform (`genlab.data.paired`): edge-map
sketches -> images, or images reduced `scale` times -> full size (super-resolution). The generator
sees the condition at full size (the sketch, or the bicubic upscaling of the low-resolution image)
and emits the image in [-1, 1]; its skip connections carry the input's detail straight to the
output. The discriminator scores overlapping patches of (condition, image) pairs. The generator's
loss is the adversarial term plus lambda x L1 to the target (eq. 4, lambda = 100): L1 gets the
low frequencies right, the discriminator the sharp detail. The GAN machinery (losses, spectral
norm, EMA, TTUR optimisers) is the GAN family's.

A translation model makes nothing from noise (`samples_images = False`); it `translate`s conditions.
`eval_metrics` reports PSNR and SSIM on the test split (against bicubic upscaling, the floor, for
super-resolution) and FD-genlab of the translated test images.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from itertools import pairwise
from pathlib import Path
from typing import Literal

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import nn

from genlab.config import validate
from genlab.data.paired import low_resolution_size, task_input, upscale
from genlab.errors import ConfigError, DataError
from genlab.models.base import GenerativeModel
from genlab.models.gan import (
    LossKind,
    discriminator_loss,
    ema_decay,
    ema_update,
    generator_loss,
    gradient_penalty,
    spectral,
    two_player_optimizers,
)

# -- image-quality metrics --------------------------------------------------------------------


def psnr(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB per image, 10 log10(1 / MSE), for images in [0, 1]; (B,)."""
    mse = (x - y).pow(2).flatten(1).mean(dim=1)
    return 10 * torch.log10(1 / mse.clamp_min(1e-10))


def ssim(x: torch.Tensor, y: torch.Tensor, window: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Structural similarity per image (Wang et al. 2004, eq. 13) for images in [0, 1]; (B,).

    Gaussian window of `window` (shrunk to fit small images) and sigma 1.5, constants
    C1 = (0.01)^2 and C2 = (0.03)^2, averaged over the valid positions and the channels.
    """
    window = min(window, *(s - (s + 1) % 2 for s in x.shape[-2:]))  # odd and no larger than the image
    g = torch.exp(-((torch.arange(window, dtype=x.dtype, device=x.device) - window // 2) ** 2) / (2 * sigma**2))
    g = g / g.sum()
    kernel = (g[:, None] * g[None, :]).expand(x.shape[1], 1, window, window)

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, kernel, groups=x.shape[1])

    mu_x, mu_y = blur(x), blur(y)
    var_x, var_y = blur(x * x) - mu_x**2, blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return s.flatten(1).mean(dim=1)


# -- networks ---------------------------------------------------------------------------------


def norm(channels: int) -> nn.GroupNorm:
    """Group norm: the same output in training and evaluation, whatever the batch."""
    return nn.GroupNorm(math.gcd(8, channels), channels)


class UNet(nn.Module):
    """(B, in, H, W) -> (B, out, H, W) in [-1, 1]: stride-2 encoder stages, transposed-convolution decoder stages,
    each fed the encoder's features of its resolution (Ronneberger et al. 2015)."""

    def __init__(self, in_channels: int, out_channels: int, widths: tuple[int, ...]):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, widths[0], 3, padding=1), nn.LeakyReLU(0.2))
        self.down = nn.ModuleList(nn.Sequential(nn.Conv2d(a, b, 4, stride=2, padding=1), norm(b), nn.LeakyReLU(0.2))
                                  for a, b in pairwise(widths))
        self.middle = nn.Sequential(nn.Conv2d(widths[-1], widths[-1], 3, padding=1), norm(widths[-1]), nn.ReLU())
        self.up = nn.ModuleList(nn.ConvTranspose2d(b, a, 4, stride=2, padding=1) for a, b in pairwise(widths))
        # After each upsampling, a 3x3 convolution fuses it with the skip; the full-resolution one emits the image
        # directly (no many-channel convolution at full resolution: the costly part on a CPU).
        self.fuse = nn.ModuleList(
            nn.Conv2d(2 * a, out_channels, 3, padding=1) if i == 0
            else nn.Sequential(nn.Conv2d(2 * a, a, 3, padding=1), norm(a), nn.ReLU())
            for i, a in enumerate(widths[:-1]))
        self.multiple = 2 ** (len(widths) - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        m = self.multiple
        x = F.pad(x, (0, -w % m, 0, -h % m), mode="replicate")  # every stride-2 stage divides evenly
        skips = [self.stem(x)]
        for down in self.down:
            skips.append(down(skips[-1]))
        out = self.middle(skips.pop())
        for i in reversed(range(len(self.up))):
            out = self.fuse[i](torch.cat([self.up[i](out), skips[i]], dim=1))
        return torch.tanh(out[..., :h, :w])


class PatchDiscriminator(nn.Module):
    """(condition, image) pairs (B, in + C, H, W) -> a map of raw scores, one per overlapping patch (Isola et al., sec. 3.2.2)."""

    def __init__(self, in_channels: int, widths: tuple[int, ...], spectral_norm: bool):
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        for i, width in enumerate(widths):
            conv = nn.Conv2d(channels, width, 4, stride=2, padding=1) if i < len(widths) - 1 else nn.Conv2d(channels, width, 3, padding=1)
            layers += [spectral(conv, spectral_norm), nn.LeakyReLU(0.2)]
            channels = width
        layers.append(spectral(nn.Conv2d(channels, 1, 3, padding=1), spectral_norm))
        self.net = nn.Sequential(*layers)

    def forward(self, condition: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([condition, image], dim=1))


# -- config and model -------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Pix2PixConfig:
    channels: int = 1
    image_size: tuple[int, int] = (28, 28)  # (H, W) of the targets; filled from the data
    task: Literal["sketch", "superres"] = "sketch"  # (--task is short for --model.task)
    scale: int = 4  # superres: the low-resolution input is H/scale x W/scale (--scale)
    sketch_threshold: float = 0.25  # sketch: edge strength, as a fraction of each image's strongest edge
    widths: tuple[int, ...] = (32, 64, 128)  # U-Net channels per resolution, fine to coarse
    d_widths: tuple[int, ...] = (32, 64, 128)  # PatchGAN: stride-2 stages, then a 3x3 convolution
    loss: LossKind = "hinge"
    spectral_norm: bool = True
    l1_weight: float = 100.0  # lambda of pix2pix eq. 4
    gp_weight: float = 10.0
    d_lr_ratio: float = 1.0
    ema_decay: float = 0.999

    def __post_init__(self):
        validate(self)
        if len(self.widths) < 2 or not self.d_widths:
            raise ConfigError("widths needs at least two entries and d_widths one", "e.g. --model.widths [32,64,128]")
        if self.task == "superres":
            low_resolution_size(self.image_size, self.scale)
        if not 0 <= self.ema_decay < 1:
            raise ConfigError("ema_decay must be in [0, 1)", "e.g. --model.ema-decay 0.999")


class Pix2Pix(GenerativeModel):
    """Image-to-image translation: --task sketch (edge maps -> images) or --task superres --scale 4."""

    family = "pix2pix"
    Config = Pix2PixConfig
    manual_optimization = True
    samples_images = False
    monitor = "val/l1"
    cli_shortcuts = {"task": "model.task", "scale": "model.scale"}
    train_defaults = {"lr": 2e-4, "betas": (0.5, 0.999), "batch_size": 128, "max_steps": 3000, "warmup_steps": 0,
                      "grad_clip": 10.0, "val_every": 500, "val_batches": 4, "sample_every": 500}
    search_space = {"train.lr": {"low": 5e-5, "high": 1e-3, "log": True},
                    "model.l1_weight": {"low": 10.0, "high": 300.0, "log": True},
                    "model.d_lr_ratio": {"low": 0.5, "high": 4.0, "log": True},
                    "model.widths": {"choices": [[16, 32, 64], [32, 64, 128]]}}

    def __init__(self, config: Pix2PixConfig):
        super().__init__(config)
        c = config
        self.generator = UNet(self.input_shape[0], c.channels, c.widths)
        self.discriminator = PatchDiscriminator(self.input_shape[0] + c.channels, c.d_widths, c.spectral_norm)
        self.generator_ema = copy.deepcopy(self.generator).requires_grad_(False)
        self.global_step = 0

    @classmethod
    def config_for_data(cls, config: Pix2PixConfig, data) -> Pix2PixConfig:
        c, h, w = data.shape
        return dataclasses.replace(config, channels=c, image_size=(h, w))

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of what `translate` takes: a one-channel sketch, or the low-resolution image."""
        c = self.config
        if c.task == "sketch":
            return (1, *c.image_size)
        return (c.channels, *low_resolution_size(c.image_size, c.scale))

    def callbacks(self, data, train) -> list[pl.Callback]:
        return [TranslationPreview(data, train.sample_every)]

    # -- data domain -------------------------------------------------------------------------

    def make_input(self, images: torch.Tensor) -> torch.Tensor:
        """Target images (uint8, or float in [0, 1]) -> the condition the task gives: a sketch or a low-resolution image."""
        x = images.float() / 255 if images.dtype == torch.uint8 else images
        return task_input(x, self.config.task, self.config.scale, self.config.sketch_threshold)

    def lift(self, condition: torch.Tensor) -> torch.Tensor:
        """A condition in [0, 1] -> the network's full-size input in [-1, 1] (bicubic upscaling for superres)."""
        if self.config.task == "superres":
            condition = upscale(condition, self.config.image_size)
        return condition * 2 - 1

    def _check(self, condition: torch.Tensor) -> None:
        if tuple(condition.shape[1:]) != self.input_shape:
            raise ConfigError(f"this {self.config.task} model takes inputs of shape {self.input_shape} (C, H, W), "
                              f"got {tuple(condition.shape[1:])}", "pass images of that size")

    # -- training ----------------------------------------------------------------------------

    def optimizers(self, train) -> list[torch.optim.Optimizer]:
        return two_player_optimizers(self.generator, self.discriminator, train, self.config.d_lr_ratio)

    def train_step(self, batch, step) -> dict[str, torch.Tensor]:
        """A discriminator step on (condition, real) against (condition, translated), then the generator's
        adversarial + lambda L1 step, then the EMA update."""
        c = self.config
        images, _ = batch
        target = images.float() / 255
        x, real = self.lift(self.make_input(target)), target * 2 - 1
        fake = self.generator(x)
        d_real, d_fake = self.discriminator(torch.cat([x, x]), torch.cat([real, fake.detach()])).chunk(2)
        d_loss = discriminator_loss(c.loss, d_real, d_fake)
        out = {"d_loss": d_loss.detach(), "d_real": d_real.mean().detach(), "d_fake": d_fake.mean().detach()}
        if c.loss == "wgan-gp":
            penalty = gradient_penalty(lambda t: self.discriminator(x, t), real, fake.detach())
            d_loss = d_loss + c.gp_weight * penalty
            out["gradient_penalty"] = penalty.detach()
        step(d_loss, 1)

        self.discriminator.requires_grad_(False)
        adversarial = generator_loss(c.loss, self.discriminator(x, fake))
        l1 = (fake - real).abs().mean()
        g_loss = adversarial + c.l1_weight * l1
        step(g_loss, 0)
        self.discriminator.requires_grad_(True)
        ema_update(self.generator_ema, self.generator, ema_decay(c.ema_decay, self.global_step))
        return {"loss": g_loss.detach(), "l1": l1.detach(), "adversarial": adversarial.detach(), **out}

    @torch.no_grad()
    def validation_metrics(self, batch) -> dict[str, torch.Tensor]:
        """L1 and PSNR of the EMA generator's translations of held-out images (L1 picks best.ckpt)."""
        images, _ = batch
        target = images.float() / 255
        out = self.translate(self.make_input(target))
        return {"loss": (out - target).abs().mean() * 2, "l1": (out - target).abs().mean() * 2,  # in [-1, 1] units
                "psnr_db": psnr(out, target).mean()}

    # -- using the model ---------------------------------------------------------------------

    @torch.no_grad()
    def translate(self, condition: torch.Tensor, chunk: int = 500) -> torch.Tensor:
        """Conditions (B, *input_shape) in [0, 1] (a sketch, or a low-resolution image) -> images (B, C, H, W) in [0, 1]."""
        self._check(condition)
        device = next(self.parameters()).device
        out = [self.generator_ema(self.lift(condition[i : i + chunk].to(device).float()))
               for i in range(0, len(condition), chunk)]
        return (torch.cat(out) + 1) / 2

    def train(self, mode: bool = True) -> Pix2Pix:
        super().train(mode)
        self.generator_ema.eval()
        return self

    def report_figures(self, data, generator: torch.Generator) -> list[tuple[torch.Tensor, int, str]]:
        """Test inputs, translations and targets, one row each."""
        grid, n = translation_grid(self, data.test_x[:16])
        return [(grid, n, f"{self.config.task}: inputs (top), translations (middle), test images (bottom)")]

    @torch.no_grad()
    def eval_metrics(self, data, n: int, seed: int, progress: bool) -> dict[str, float]:
        """On the first n test images: PSNR (dB) and SSIM of the translations (and, for superres, of bicubic
        upscaling, the floor), and FD-genlab, precision/recall and class accuracy of the translations."""
        from genlab.metrics.images import sample_metrics
        from genlab.metrics.reference import reference_classifier

        target = torch.from_numpy(data.test_x[:n]).float() / 255
        condition = self.make_input(target)
        out = self.translate(condition).cpu()
        metrics = {"psnr_db": psnr(out, target).mean().item(), "ssim": ssim(out, target).mean().item()}
        if self.config.task == "superres":
            bicubic = upscale(condition, self.config.image_size)
            metrics |= {"bicubic_psnr_db": psnr(bicubic, target).mean().item(),
                        "bicubic_ssim": ssim(bicubic, target).mean().item()}
            metrics["psnr_gain_db"] = metrics["psnr_db"] - metrics["bicubic_psnr_db"]
        try:
            reference = reference_classifier(data, progress=progress)
        except DataError:
            return metrics  # unlabelled data: no feature space for FD-genlab
        labels = torch.from_numpy(data.test_y[:n])
        keep = ["fd_genlab", "kid_genlab", "precision", "recall", "density", "coverage", "class_accuracy"]
        measured = sample_metrics(reference, data.test_x[:n], out, requested=labels if (labels >= 0).all() else None,
                                  seed=seed)
        metrics |= {k: measured[k] for k in keep if k in measured}
        if self.config.task == "superres":
            metrics["bicubic_fd_genlab"] = sample_metrics(reference, data.test_x[:n], bicubic, seed=seed)["fd_genlab"]
        return metrics


def translation_grid(model: Pix2Pix, images) -> tuple[torch.Tensor, int]:
    """uint8 target images -> (rows of inputs shown at full size, translations, targets; images per row)."""
    target = torch.as_tensor(images).float() / 255
    condition = model.make_input(target)
    shown = upscale(condition, model.config.image_size) if model.config.task == "superres" else condition
    if shown.shape[1] != target.shape[1]:
        shown = shown.expand(-1, target.shape[1], -1, -1)  # a one-channel sketch beside colour images
    return torch.cat([shown, model.translate(condition).cpu(), target]), len(target)


class TranslationPreview(pl.Callback):
    """samples/step_N.png every `every` steps and at the end: validation inputs, translations and targets."""

    def __init__(self, data, every: int):
        from genlab.data.loader import split_validation

        self.images = split_validation(data)[1][0][:16]
        self.every = every

    def write(self, trainer, model: Pix2Pix) -> None:
        from genlab.report import save_grid

        if trainer.global_rank != 0 or len(self.images) == 0:
            return
        grid, n = translation_grid(model, self.images)
        save_grid(grid, Path(trainer.default_root_dir) / "samples" / f"step_{trainer.global_step:07d}.png", nrow=n)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step % self.every == 0 and pl_module.nonfinite is None:
            self.write(trainer, pl_module.model)

    def on_train_end(self, trainer, pl_module):
        if pl_module.nonfinite is None:
            self.write(trainer, pl_module.model)
