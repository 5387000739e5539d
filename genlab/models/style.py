"""Neural style transfer on EfficientNet-Lite0 features: Gatys optimisation, and the `style` family (AdaIN).

A photo takes on the look of a style image (a painting, a texture) when, in the feature space of a
network trained on natural images, its activations keep the photo's layout at one depth while their
second-order statistics at several depths match the style image's.

- `Gatys`: Gatys, Ecker and Bethge, "Image Style Transfer Using Convolutional Neural Networks", CVPR 2016.
  The output's pixels are optimised (L-BFGS or Adam, a fixed number of steps) to match the content
  image's features at one depth (eq. 1) and the style image's Gram matrices at several (eq. 3-5). It has
  no weights: an API function (`gatys`) and a verb (`genlab style`), not a family.
- `AdaINStylizer`, the `style` family: Huang and Belongie, "Arbitrary Style Transfer in Real-time with
  Adaptive Instance Normalization", ICCV 2017. A frozen encoder, AdaIN (the content features' channel means
  and standard deviations replaced by the style's, eq. 8), and a decoder trained to turn that target back
  into pixels whose features match it (content loss, eq. 12) and whose feature statistics at several depths
  match the style's (style loss, eq. 13). One forward pass per image, for any style image (`Stylizer`).
  `genlab train style --data PHOTOS --model.styles STYLES` trains it through the engine (the recipe in
  genlab/engine/recipes.py draws the (content, style) crop pairs); the model folder holds the decoder only.

Both read genlab.metrics.features' EfficientNet-Lite0 (VGG-19's weights are on no package index). Its
stages end in residual sums of linear bottlenecks, whose activations are peaky (low entropy); Wang, Li and
Vasconcelos, "Rethinking and Improving the Robustness of Image Style Transfer", CVPR 2021, show that the
statistics of such features stylise poorly, and that a softmax transform of the activations (SWAG)
restores their entropy and with it the stylisation. `swag` takes the softmax over channels at each
position, at a temperature in units of the layer's standard deviation (Lite0's shallow stages reach
+-80, where a unit temperature would give one-hot vectors), before Gram matrices or means and deviations
are taken; the content loss and AdaIN read the raw features. `temperature=0` turns SWAG off.

Images cross this module as floats in [0, 1] (or uint8), (B, 3, H, W).
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from genlab.config import validate
from genlab.errors import ConfigError, DataError
from genlab.metrics.features import CHANNELS, STRIDES, check_layers, efficientnet_features
from genlab.models.base import GenerativeModel, Stylizer

STYLE_LAYERS = ("stem", "stage1", "stage2", "stage3", "stage4")  # the stem (ReLU6) carries colour best


# -- statistics -----------------------------------------------------------------------------------


def swag(features: torch.Tensor, temperature: float, scale: torch.Tensor | float = 1.0) -> torch.Tensor:
    """Wang et al.'s softmax transform over channels, (B, C, H, W) -> (B, C, H, W), at `temperature` x `scale`
    (the layer's standard deviation); times C so that the values average 1 and Gram entries stay O(1)."""
    if temperature <= 0:
        return features
    return features.shape[1] * torch.softmax(features / (temperature * scale), dim=1)


def gram(features: torch.Tensor) -> torch.Tensor:
    """Gram matrices (B, C, C) of features (B, C, H, W), averaged over positions (Gatys eq. 3)."""
    b, c, h, w = features.shape
    flat = features.reshape(b, c, h * w)
    return flat @ flat.transpose(1, 2) / (h * w)


def mean_std(features: torch.Tensor, eps: float = 1e-5) -> tuple[torch.Tensor, torch.Tensor]:
    """Each channel's mean and standard deviation over positions, each (B, C, 1, 1)."""
    mean = features.mean(dim=(2, 3), keepdim=True)
    return mean, (features.var(dim=(2, 3), keepdim=True, unbiased=False) + eps).sqrt()


def colour_directions(count: int, seed: int = 0) -> torch.Tensor:
    """(3, 3 + count) unit directions in RGB: the three channels, then `count` drawn uniformly on the sphere (fixed by
    `seed`: L-BFGS needs one objective throughout)."""
    drawn = torch.randn(3, count, generator=torch.Generator().manual_seed(seed))
    return torch.cat([torch.eye(3), drawn / drawn.norm(dim=0, keepdim=True)], 1)


def sorted_projections(values: torch.Tensor, directions: torch.Tensor) -> torch.Tensor:
    """Values (B, C, N) projected on `directions` (C, K) and sorted along each: (B, K, N)."""
    return torch.sort(directions.T @ values, dim=-1).values


def sliced_wasserstein(x: torch.Tensor, target: torch.Tensor, directions: torch.Tensor) -> torch.Tensor:
    """Squared sliced 2-Wasserstein distance between the values of x (B, C, N) and a target given by its
    `sorted_projections` (1, K, M) on the same `directions` (C, K; a fixed target is projected and sorted once):
    each projection's sorted values, the target's resampled to N when M differs, compared by mean squared error (the
    1-D optimal transport along a line is the sorted order). Heitz et al., "A Sliced Wasserstein Loss for Neural
    Texture Synthesis", CVPR 2021. (B,)."""
    px = sorted_projections(x, directions)
    if target.shape[-1] != px.shape[-1]:
        target = F.interpolate(target, size=px.shape[-1], mode="linear", align_corners=True)
    return (px - target).pow(2).mean(dim=(1, 2))


def adain(content: torch.Tensor, style: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Huang and Belongie eq. 8: the content features normalised per channel, then given the style's channel means
    and deviations. (B, C, H, W) and (B, C, h, w) -> (B, C, H, W)."""
    c_mean, c_std = mean_std(content, eps)
    s_mean, s_std = mean_std(style, eps)
    return (content - c_mean) / c_std * s_std + s_mean


def as_rgb(images: torch.Tensor, what: str) -> torch.Tensor:
    """A batch (B, 3, H, W) or one image (3, H, W) as float in [0, 1] (uint8 is divided by 255); anything else is a
    ConfigError naming the fix."""
    if images.dim() == 3:
        images = images[None]
    if images.dim() != 4 or images.shape[1] != 3:
        raise ConfigError(f"the {what} image has shape {tuple(images.shape)}; style transfer takes RGB images "
                          "(B, 3, H, W)", "convert grey or RGBA images to RGB (genlab's verbs do)")
    if min(images.shape[-2:]) < 16:
        raise ConfigError(f"the {what} image is {images.shape[-2]}x{images.shape[-1]}: too small for the features",
                          "give images of at least 16x16 (32x32 or more stylises better)")
    return images.float() / 255 if images.dtype == torch.uint8 else images.float().clamp(0, 1)


# -- Gatys: optimise the pixels -------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class GatysOptions:
    """How Gatys optimisation stylises: the layers, the weights and the optimiser."""

    steps: int = 150
    """optimiser steps (L-BFGS: function evaluations)"""
    content_layer: str = "stage3"
    """the depth whose features keep the content image's layout"""
    style_layers: tuple[str, ...] = STYLE_LAYERS
    """the depths whose Gram matrices carry the style"""
    style_weight: float = 100.0
    """style against content: both losses are relative squared errors, so 1 weighs them alike"""
    temperature: float = 1.0
    """SWAG's softmax temperature in units of each layer's standard deviation (0: raw features, no softmax)"""
    colour_weight: float = 20000.0
    """the sliced Wasserstein distance of the output's pixel colours to the style's (relative to the style's colour
    variance): the whole colour distribution, which Gram matrices of features softmax-transformed over channels
    leave loose (Risser et al. 2017 add histogram losses to Gatys's for the same reason). Its gradient per pixel
    is far smaller than the Gram terms' (hence the weight); 20,000 was the best of 0, 2,000 and 20,000 on two
    pairs outside the benchmark's (docs/style-transfer.md)"""
    tv_weight: float = 1.0
    """total variation of the pixels: damps the high-frequency noise pixel optimisation leaves (Mahendran and
    Vedaldi 2015; Johnson et al. 2016)"""
    optimizer: Literal["lbfgs", "adam"] = "lbfgs"
    """L-BFGS, as Gatys et al., or Adam"""
    lr: float = 0.02
    """Adam's step on pixels in [0, 1] (L-BFGS takes unit steps)"""
    init: Literal["content", "noise"] = "content"
    """where the output starts: the content image (keeps it more faithfully) or noise"""

    def __post_init__(self):
        validate(self)
        check_layers((self.content_layer, *self.style_layers))
        if min(self.steps, self.style_weight, self.temperature, self.tv_weight, self.colour_weight) < 0 \
                or self.lr <= 0:
            raise ConfigError("steps, style_weight, temperature, colour_weight and tv_weight must be >= 0 and lr > 0",
                              "e.g. steps=150, style_weight=100, temperature=1, colour_weight=20000, tv_weight=1, "
                              "lr=0.02")


class Gatys:
    """The Gatys objective for one content and one style image; `run` optimises an output image against it."""

    def __init__(self, content: torch.Tensor, style: torch.Tensor, options: GatysOptions | None = None):
        self.options = o = options or GatysOptions()
        self.content, style = as_rgb(content, "content"), as_rgb(style, "style")
        if self.content.shape[0] != 1 or style.shape[0] != 1:
            raise ConfigError("Gatys optimisation stylises one content image with one style image",
                              "call it once per pair")
        self.net = efficientnet_features("lite0", str(self.content.device))
        with torch.no_grad():
            self.target = self.net(self.content, (o.content_layer,))[o.content_layer]
            feats = self.net(style, o.style_layers)
            # SWAG's temperature scale per layer is the style's: one fixed transform for the target and the output
            self.scales = {name: f.std() for name, f in feats.items()}
            self.grams = {name: gram(swag(f, o.temperature, self.scales[name])) for name, f in feats.items()}
            self.directions = colour_directions(32)
            self.colours = sorted_projections(style.flatten(2), self.directions)  # (1, K, pixels)
            self.colour_scale = self.colours.var(-1).mean() + 1e-6
            # total variation relative to the content's own, as the other losses are relative
            self.tv_scale = self.content.diff(dim=-1).abs().mean() + self.content.diff(dim=-2).abs().mean() + 1e-3

    def losses(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """Content, style and total loss of `image` (1, 3, H, W) in [0, 1]: relative squared errors, so that
        the style weight means the same at any temperature and layer."""
        o = self.options
        feats = self.net(image, (o.content_layer, *o.style_layers))
        content = F.mse_loss(feats[o.content_layer], self.target) / self.target.pow(2).mean()
        style = sum(F.mse_loss(gram(swag(feats[name], o.temperature, self.scales[name])), g) / g.pow(2).mean()
                    for name, g in self.grams.items()) / len(self.grams)
        tv = (image.diff(dim=-1).abs().mean() + image.diff(dim=-2).abs().mean()) / self.tv_scale
        colour = sliced_wasserstein(image.flatten(2), self.colours, self.directions)[0] / self.colour_scale
        return {"content": content, "style": style, "colour": colour, "tv": tv,
                "loss": content + o.style_weight * style + o.colour_weight * colour + o.tv_weight * tv}

    def run(self, steps: int | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
        """The stylised image (1, 3, H, W) in [0, 1] after `steps` (default the options') optimiser steps."""
        o = self.options
        steps = o.steps if steps is None else steps
        start = self.content if o.init == "content" else torch.rand(self.content.shape, generator=generator)
        image = start.clone().requires_grad_(True)
        if o.optimizer == "adam":
            optimizer = torch.optim.Adam([image], lr=o.lr)
            for _ in range(steps):
                optimizer.zero_grad(set_to_none=True)
                self.losses(image)["loss"].backward()
                optimizer.step()
                with torch.no_grad():
                    image.clamp_(0, 1)
            return image.detach()
        if steps == 0:
            return image.detach()
        # L-BFGS counts function evaluations; one `step` call runs up to max_iter of them. The pixels are clamped
        # to [0, 1] inside the objective (a projection L-BFGS does not know about would break its line search).
        optimizer = torch.optim.LBFGS([image], lr=1.0, max_iter=steps, max_eval=steps, history_size=20,
                                      tolerance_grad=0.0, tolerance_change=0.0, line_search_fn="strong_wolfe")

        def closure() -> torch.Tensor:
            optimizer.zero_grad(set_to_none=True)
            loss = self.losses(image.clamp(0, 1))["loss"]
            loss.backward()
            return loss

        optimizer.step(closure)
        return image.detach().clamp(0, 1)


def gatys(content: torch.Tensor, style: torch.Tensor, options: GatysOptions | None = None,
          generator: torch.Generator | None = None) -> torch.Tensor:
    """Stylise one content image with one style image by Gatys optimisation: (1, 3, H, W) in [0, 1]."""
    return Gatys(content, style, options).run(generator=generator)


# -- image files and scale ------------------------------------------------------------------------


def image_files(path: str | Path, what: str) -> list[Path]:
    """One image file, or the image files under a folder (genlab.data.images.IMAGE_SUFFIXES), sorted; a missing
    path or a folder without images is a DataError naming the fix."""
    from genlab.data.images import IMAGE_SUFFIXES

    path = Path(path).expanduser()
    if not path.exists():
        raise DataError(f"the {what} path {path} does not exist", f"pass a {what} image file or a folder of them")
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES) \
        if path.is_dir() else [path]
    if not files:
        raise DataError(f"{path} holds no image files ({', '.join(sorted(IMAGE_SUFFIXES))})",
                        f"put PNG or JPEG {what} images in it")
    return files


def read_images(path: str | Path, what: str) -> list[np.ndarray]:
    """The RGB images (uint8 (3, H, W)) of one image file or of the image files under a folder (grey and RGBA
    ones converted), each at its own size: style images are brought to a scale, never to one shape."""
    from genlab.data.images import load_image

    return [load_image(file, channels=3) for file in image_files(path, what)]


def resize_short_side(image: np.ndarray | torch.Tensor, side: int, what: str = "content") -> torch.Tensor:
    """One image (3, H, W) or (1, 3, H, W), uint8 or [0, 1], as float (1, 3, h, w) in [0, 1] whose short side is
    `side`: features are read at a scale, so content, style and training crops are brought to the same one."""
    x = as_rgb(image if isinstance(image, torch.Tensor) else torch.from_numpy(np.array(image)), what)  # a copy
    scale = side / min(x.shape[-2:])
    size = (max(side, round(x.shape[-2] * scale)), max(side, round(x.shape[-1] * scale)))
    return F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False).clamp(0, 1)


# -- AdaIN: the style family -------------------------------------------------------------------------


def decoder_widths(depth: str) -> tuple[int, ...]:
    """The default decoder widths for an encoder depth: 32 channels at full size, twice as many at each halving up
    to 128 (stage3: (128, 64, 32))."""
    levels = int(math.log2(STRIDES[depth]))
    return tuple(min(128, 32 * 2 ** (levels - 1 - i)) for i in range(levels))


@dataclasses.dataclass(frozen=True)
class StyleConfig:
    """A feed-forward AdaIN model: where its style images are, the encoder depth, the decoder's widths, the training
    crops and the losses' weights."""

    FROM_DATA: ClassVar[tuple[str, ...]] = ()  # the content photos decide nothing: crops are taken at a scale

    styles: str = ""
    """a folder of style images (paintings, textures), or one image, to train on; any style stylises afterwards"""
    depth: Literal["stage2", "stage3", "stage4"] = "stage3"
    """the encoder depth where AdaIN mixes content and style (stage3: 40 channels at 1/8 of the size)"""
    widths: tuple[int, ...] = (128, 64, 32)
    """decoder channels after each 2x upsampling, one per halving of the encoder (stage2: 2, stage3: 3, stage4: 4)"""
    style_layers: tuple[str, ...] = STYLE_LAYERS
    """the depths whose SWAG statistics (means and deviations) the style loss matches"""
    style_weight: float = 3.0
    """style loss against content loss"""
    temperature: float = 1.0
    """SWAG's softmax temperature in units of each layer's standard deviation (0: raw features)"""
    short_side: int = 256
    """the scale training reads images at: each content and style image's short side, in pixels, before cropping
    (stylise at about this scale: genlab style --size)"""
    crop: int = 128
    """the side of the square training crops, in pixels at that scale"""

    def __post_init__(self):
        validate(self)
        check_layers(self.style_layers)
        levels = int(math.log2(STRIDES[self.depth]))
        if len(self.widths) != levels or min(self.widths) < 1:
            raise ConfigError(f"widths {self.widths}: depth {self.depth} halves the image {levels} times, so the "
                              f"decoder needs {levels} positive widths",
                              f"e.g. --model.widths '{list(decoder_widths(self.depth))}' ({self.depth}'s default)")
        if self.style_weight < 0 or self.temperature < 0:
            raise ConfigError("style_weight and temperature must be >= 0", "e.g. style_weight=3, temperature=1")
        if not 16 <= self.crop <= self.short_side:
            raise ConfigError(f"crop {self.crop} and short_side {self.short_side}: crops must be at least 16 pixels "
                              "(the features' smallest input) and fit in the short side",
                              "e.g. --model.crop 128 --model.short_side 256")


def _conv(cin: int, cout: int) -> nn.Conv2d:
    # reflection padding, as AdaIN's decoder: zero padding leaves dark borders on stylised images
    return nn.Conv2d(cin, cout, 3, padding=1, padding_mode="reflect")


class AdaINStylizer(GenerativeModel, Stylizer):
    """Huang and Belongie's feed-forward style transfer on EfficientNet-Lite0: any content, any style, one pass."""

    family = "style"
    Config = StyleConfig
    data_kind: ClassVar[str] = "image"  # the content photos; the style images are the config's `styles`

    def __init__(self, config: StyleConfig):
        super().__init__(config)
        c = config
        layers: list[nn.Module] = [_conv(CHANNELS[c.depth], c.widths[0]), nn.ReLU()]
        width = c.widths[0]
        for w in c.widths:  # the encoder's halvings mirrored: upsample, then two convolutions
            layers += [nn.Upsample(scale_factor=2, mode="nearest"), _conv(width, w), nn.ReLU(), _conv(w, w), nn.ReLU()]
            width = w
        layers.append(_conv(width, 3))  # pixels in [0, 1], unbounded while training (clamped when stylising)
        self.decoder = nn.Sequential(*layers)

    @classmethod
    def config_for_data(cls, config: StyleConfig, data: Any) -> StyleConfig:
        """The config with its style folder checked and made absolute (a resumed run may start elsewhere); sound
        and a missing style folder are refused before any step."""
        if getattr(data, "sound", ""):
            raise ConfigError(f"{data.name} is sound: style transfer restyles photos",
                              "pass a folder of photos as --data")
        if not config.styles:
            raise ConfigError("the style family learns from style images, and --model.styles is not set",
                              "pass --model.styles FOLDER: paintings or textures (a folder of images, or one image)")
        image_files(config.styles, "style")  # refuses a missing path or a folder without images now, not mid-run
        return dataclasses.replace(config, styles=str(Path(config.styles).expanduser().resolve()))

    @property
    def encoder(self):
        # the pip package's frozen network, shared and kept out of this model's weights (and of .train())
        return efficientnet_features("lite0", str(self.decoder[0].weight.device))

    def decode(self, target: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        # "same" padding rounds each halving up, so the decoder's output covers the image: crop it to `size`
        return self.decoder(target)[..., : size[0], : size[1]]

    def forward(self, content: torch.Tensor, style: torch.Tensor, alpha: float = 1.0) -> torch.Tensor:
        """Unclamped stylised images (B, 3, H, W) of content (B, 3, H, W) and style (B or 1, 3, h, w) in [0, 1];
        `alpha` in [0, 1] blends the AdaIN target with the content's own features (Huang and Belongie eq. 14)."""
        depth = self.config.depth
        f_content = self.encoder(content, (depth,))[depth]
        target = adain(f_content, self.encoder(style, (depth,))[depth])
        target = alpha * target + (1 - alpha) * f_content
        return self.decode(target, content.shape[-2:])

    @torch.no_grad()
    def stylize(self, content: torch.Tensor, style: torch.Tensor, alpha: float = 1.0) -> torch.Tensor:
        """Content (B, 3, H, W) in the style of `style` (one image, or one per content image): floats in [0, 1] or
        uint8 in; floats in [0, 1] out, the content's size."""
        if not 0 <= alpha <= 1:
            raise ConfigError(f"alpha = {alpha} must be in [0, 1]", "1 is full style, 0 the content as it is")
        device = self.decoder[0].weight.device
        content, style = as_rgb(content, "content").to(device), as_rgb(style, "style").to(device)
        if style.shape[0] not in (1, content.shape[0]):
            raise ConfigError(f"{style.shape[0]} style images for {content.shape[0]} content images",
                              "give one style image, or one per content image")
        return self(content, style, alpha).clamp(0, 1)  # one style image is encoded once, its statistics broadcast

    def loss(self, batch: Any, step: int | None = None) -> dict[str, torch.Tensor]:
        """Huang and Belongie's training objective on a batch of (content, style) crop pairs, each (B, 3, H, W) in
        [0, 1] or uint8: the decoded image's features against the AdaIN target (eq. 12) plus the style weight times
        the squared differences of SWAG-transformed channel means and deviations across the style layers (eq. 13),
        each relative to the style's own, so that every layer counts alike."""
        content, style = as_rgb(batch[0], "content"), as_rgb(batch[1], "style")
        c = self.config
        depth = c.depth
        with torch.no_grad():
            style_feats = self.encoder(style, (depth, *c.style_layers))
            target = adain(self.encoder(content, (depth,))[depth], style_feats[depth])
            style_feats = {name: style_feats[name] for name in c.style_layers}
            scales = {n: f.std(dim=(1, 2, 3), keepdim=True) for n, f in style_feats.items()}  # per image
            style_stats = {n: mean_std(swag(f, c.temperature, scales[n])) for n, f in style_feats.items()}
        out = self.decode(target, content.shape[-2:])
        feats = self.encoder(out, (depth, *c.style_layers))
        content_loss = F.mse_loss(feats[depth], target) / target.pow(2).mean()
        style_loss = out.new_zeros(())
        for name, (s_mean, s_std) in style_stats.items():
            mean, std = mean_std(swag(feats[name], c.temperature, scales[name]))
            norm = (s_mean.pow(2) + s_std.pow(2)).mean()
            style_loss = style_loss + (F.mse_loss(mean, s_mean) + F.mse_loss(std, s_std)) / norm
        style_loss = style_loss / len(style_stats)
        return {"loss": content_loss + c.style_weight * style_loss, "content": content_loss, "style": style_loss}


__all__ = ["AdaINStylizer", "Gatys", "GatysOptions", "StyleConfig", "adain", "colour_directions", "decoder_widths",
           "gatys", "gram", "image_files", "mean_std", "read_images", "resize_short_side", "sliced_wasserstein",
           "sorted_projections", "swag"]
