"""pix2pix (Isola et al. 2017): image-to-image translation with a U-Net generator and a PatchGAN discriminator.

The pairs come from any image dataset through a task transform (`genlab.data.paired`): edge-map
sketches -> images, images reduced `scale` times -> full size (super-resolution), or grey images ->
colour. The generator sees the condition at full size (the sketch, or the bicubic upscaling of the
low-resolution image) and emits the image in [-1, 1]; its skip connections carry the input's detail
straight to the output. The discriminator scores overlapping patches of (condition, image) pairs. The
generator's loss is the adversarial term plus lambda x L1 to the target (eq. 4, lambda = 100): L1 gets
the low frequencies right, the discriminator the sharp detail. The adversarial parts (losses,
spectral norm) are genlab.models.adversarial's, the EMA genlab.models.ema's.

A colouriser works in CIE Lab, as Isola et al.'s colourisation results and Zhang et al. 2016 do: the
generator sees the lightness L and emits only the colour channels ab (the discriminator scores (L, ab)
pairs), and the translation is L with the predicted ab, so it keeps the grey image's lightness exactly
and the losses judge colour alone. L1 alone regresses to the mean of the plausible colours, which is
greyish where colour is ambiguous (Zhang et al.'s point); the adversarial term pushes towards one
plausible, saturated colour instead.

A translation model makes nothing from noise: it is a `Translator`, not an `ImageSampler`.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from itertools import pairwise
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from genlab.data.colour import AB_RANGE, lab_to_rgb, lightness, rgb_to_lab
from genlab.data.paired import check_colour, low_resolution_size, task_input, upscale
from genlab.errors import ConfigError
from genlab.metrics.images import psnr
from genlab.models.adversarial import LossKind, discriminator_loss, generator_loss, gradient_penalty, spectral
from genlab.models.base import ImageConfig, ImageModel, Translator, TwoPlayerGame
from genlab.models.ema import ema_decay, ema_update


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
    """(condition, image) pairs (B, in + C, H, W) -> a map of raw scores, one per overlapping patch
    (Isola et al. 2017, sec. 3.2.2)."""

    def __init__(self, in_channels: int, widths: tuple[int, ...], spectral_norm: bool):
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        for i, width in enumerate(widths):
            conv = (
                nn.Conv2d(channels, width, 4, stride=2, padding=1)
                if i < len(widths) - 1
                else nn.Conv2d(channels, width, 3, padding=1)
            )
            layers += [spectral(conv, spectral_norm), nn.LeakyReLU(0.2)]
            channels = width
        layers.append(spectral(nn.Conv2d(channels, 1, 3, padding=1), spectral_norm))
        self.net = nn.Sequential(*layers)

    def forward(self, condition: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([condition, image], dim=1))


@dataclasses.dataclass(frozen=True)
class Pix2PixConfig(ImageConfig):
    task: Literal["sketch", "superres", "colourise"] = "sketch"
    """what the model translates from: an edge-map sketch, a low-resolution image, or a grey image (to colour)"""
    scale: int = 4
    """superres: the low-resolution input is H/scale x W/scale"""
    sketch_threshold: float = 0.25
    """sketch: edge strength, as a fraction of each image's strongest edge"""
    widths: tuple[int, ...] = (32, 64, 128)
    """U-Net channels per resolution, fine to coarse"""
    d_widths: tuple[int, ...] = (32, 64, 128)
    """PatchGAN discriminator: channels of each stride-2 stage, then of a 3x3 convolution"""
    loss: LossKind = "hinge"
    """adversarial loss"""
    spectral_norm: bool = True
    """spectral norm on every discriminator weight (Miyato et al. 2018)"""
    l1_weight: float = 100.0
    """lambda of pix2pix eq. 4: the weight of L1 to the target beside the adversarial loss"""
    gp_weight: float = 10.0
    """WGAN-GP's lambda"""
    d_lr_ratio: float = 1.0
    """the discriminator's learning rate is this x --lr"""
    ema_decay: float = 0.999
    """translations come from this moving average of the generator's weights (0: the generator itself)"""

    def __post_init__(self):
        super().__post_init__()
        if len(self.widths) < 2 or not self.d_widths:
            raise ConfigError("widths needs at least two entries and d_widths one", "e.g. --model.widths [32,64,128]")
        if self.task == "superres":
            low_resolution_size(self.image_size, self.scale)
        if not 0 <= self.ema_decay < 1:
            raise ConfigError("ema_decay must be in [0, 1)", "e.g. --model.ema-decay 0.999")


class Pix2Pix(ImageModel, TwoPlayerGame, Translator):
    """Image-to-image translation: --model.task sketch (edge maps -> images), --model.task superres with
    --model.scale 4, or --model.task colourise (grey -> colour, trained on colour images)."""

    family = "pix2pix"
    Config = Pix2PixConfig

    def __init__(self, config: Pix2PixConfig):
        super().__init__(config)
        c = config
        if c.task == "colourise" and c.channels != 3:
            raise ConfigError(f"a colouriser makes colour (3-channel) images, not {c.channels}-channel ones",
                              "train it on colour images (--model.channels comes from the data)")
        out = 2 if c.task == "colourise" else c.channels  # a colouriser emits Lab's ab; L is its input
        self.generator = UNet(self.input_shape[0], out, c.widths)
        self.discriminator = PatchDiscriminator(self.input_shape[0] + out, c.d_widths, c.spectral_norm)
        self.generator_ema = copy.deepcopy(self.generator).requires_grad_(False)

    @classmethod
    def config_for_data(cls, config: Pix2PixConfig, data) -> Pix2PixConfig:
        """The image shape from the data; a colouriser refuses grey data, which has no colour to learn."""
        if config.task == "colourise":
            check_colour(data.train_x, data.name)
        return super().config_for_data(config, data)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of what `translate` takes: a one-channel sketch or grey image, or the low-resolution image."""
        c = self.config
        if c.task in ("sketch", "colourise"):
            return (1, *c.image_size)
        return (c.channels, *low_resolution_size(c.image_size, c.scale))

    def train(self, mode: bool = True) -> Pix2Pix:
        super().train(mode)
        self.generator_ema.eval()
        return self

    # -- data domain -------------------------------------------------------------------------

    def make_input(self, images: torch.Tensor) -> torch.Tensor:
        """Target images (uint8, or float in [0, 1]) -> the condition its task gives: a sketch, a low-res
        image or the grey image."""
        x = images.float() / 255 if images.dtype == torch.uint8 else images
        self.check_images(x, "target images")
        return task_input(x, self.config.task, self.config.scale, self.config.sketch_threshold)

    def prepare_condition(self, conditions: torch.Tensor) -> tuple[torch.Tensor, str | None]:
        """A sketch drawn light on dark is inverted: the model learnt dark strokes on light paper."""
        if self.config.task == "sketch" and conditions.median() < 0.5:
            return 1 - conditions, "the sketches look light-on-dark; inverted them to dark strokes on white"
        return conditions, None

    def lift(self, condition: torch.Tensor) -> torch.Tensor:
        """A condition in [0, 1] -> the network's full-size input in [-1, 1] (bicubic upscaling for superres; the
        lightness L / 50 - 1 of a grey image for colourise)."""
        if self.config.task == "colourise":
            return lightness(condition) / 50 - 1
        if self.config.task == "superres":
            condition = upscale(condition, self.config.image_size)
        return condition * 2 - 1

    def target(self, images: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1] -> what the generator learns to emit, in [-1, 1]: the image, or a colouriser's
        ab / 110."""
        if self.config.task == "colourise":
            return rgb_to_lab(images)[:, 1:] / AB_RANGE
        return images * 2 - 1

    def image(self, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """The network's input `x` and output `out` -> images in [0, 1]: for a colouriser, the input's L with the
        predicted ab, brought into the sRGB gamut by reducing chroma (genlab.data.colour.lab_to_rgb), so L is kept."""
        if self.config.task == "colourise":
            return lab_to_rgb(torch.cat([(x + 1) * 50, out * AB_RANGE], dim=1))
        return (out + 1) / 2

    # -- training ----------------------------------------------------------------------------

    def players(self) -> tuple[nn.Module, nn.Module]:
        return self.generator, self.discriminator

    def train_step(self, batch, update, step: int) -> dict[str, torch.Tensor]:
        """A discriminator update on (condition, real) against (condition, translated), then the generator's
        adversarial + lambda L1 update, then the EMA update."""
        c = self.config
        images, _ = batch
        target = images.float() / 255
        x, real = self.lift(self.make_input(target)), self.target(target)
        fake = self.generator(x)
        d_real, d_fake = self.discriminator(torch.cat([x, x]), torch.cat([real, fake.detach()])).chunk(2)
        d_loss = discriminator_loss(c.loss, d_real, d_fake)
        out = {"d_loss": d_loss.detach(), "d_real": d_real.mean().detach(), "d_fake": d_fake.mean().detach()}
        if c.loss == "wgan-gp":
            penalty = gradient_penalty(lambda t: self.discriminator(x, t), real, fake.detach())
            d_loss = d_loss + c.gp_weight * penalty
            out["gradient_penalty"] = penalty.detach()
        update(d_loss, 1)

        self.discriminator.requires_grad_(False)
        adversarial = generator_loss(c.loss, self.discriminator(x, fake))
        l1 = (fake - real).abs().mean()
        g_loss = adversarial + c.l1_weight * l1
        update(g_loss, 0)
        self.discriminator.requires_grad_(True)
        ema_update(self.generator_ema, self.generator, ema_decay(c.ema_decay, step))
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
    def translate(self, conditions: torch.Tensor, chunk: int = 500) -> torch.Tensor:
        """Conditions (B, *input_shape) in [0, 1] (a sketch, a low-resolution image, or a grey image) ->
        images (B, C, H, W) in [0, 1]."""
        if conditions.dim() != 4 or tuple(conditions.shape[1:]) != self.input_shape:
            raise ConfigError(
                f"this {self.config.task} model takes inputs of shape (B, {', '.join(map(str, self.input_shape))}), "
                f"got {tuple(conditions.shape)}",
                "pass images of that size (genlab translate resizes files)",
            )
        device = next(self.parameters()).device
        out = []
        for i in range(0, len(conditions), chunk):
            x = self.lift(conditions[i : i + chunk].to(device).float())
            out.append(self.image(x, self.generator_ema(x)))
        return torch.cat(out)
