"""Reference classifiers: the feature space in which genlab measures image samples.

Inception-v3 features (what FID uses) are trained on ImageNet photographs and say
little about 28x28 clothing or 8x8 digits; the classifier-based alternative, used
for MNIST-like data since Salimans et al. 2016 and the GAN-comparison study of
Lucic et al. 2018, is a small classifier trained on the dataset itself. genlab trains
one per dataset, once, and caches it under

    $GENLAB_HOME/reference/<dataset>-<content hash>/model.safetensors + meta.json

so every run on the same data is measured with the same features. The content hash
keys the folder (new pixels or labels mean a new classifier); meta.json records the
config, the test accuracy and the training time, and is written last, so a folder
without it is an interrupted training. Weights load through safetensors only.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from torch import nn
from tqdm.auto import tqdm

from genlab.config import from_dict, to_dict
from genlab.data.base import ImageData
from genlab.errors import ConfigError, DataError, GenlabError
from genlab.files import atomic_write, genlab_home, refuse_pickle

log = logging.getLogger(__name__)

WEIGHTS_FILE, META_FILE = "model.safetensors", "meta.json"
FORMAT_VERSION = 1


# ---------------------------------------------------------------------------------------------
# helpers


def as_unit_float(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Images as float32 in [0, 1]: uint8 is divided by 255, floats are taken to be in [0, 1] already.

    Generated samples may overshoot [0, 1] a little and are clamped, as saving them as PNG
    would; a minimum below -0.5 means the caller passed [-1, 1] images, which is an error.
    """
    x = torch.as_tensor(images)
    if x.dtype == torch.uint8:
        return x.float().div_(255)
    if not x.is_floating_point():
        raise TypeError(f"images must be uint8 or float in [0, 1], not {x.dtype}")
    x = x.float()
    if x.numel() and x.min().item() < -0.5:
        raise ValueError("float images must lie in [0, 1], these go below -0.5; map [-1, 1] images with (x + 1) / 2")
    return x.clamp(0, 1)


def random_shift(x: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Translate each image by its own random (dy, dx) in [-max_shift, max_shift], zero-filling the border."""
    if max_shift == 0:
        return x
    b, c, h, w = x.shape
    padded = F.pad(x, (max_shift,) * 4)  # (B, C, H + 2s, W + 2s)
    dy, dx = torch.randint(0, 2 * max_shift + 1, (2, b, 1), generator=generator)
    rows = (dy + torch.arange(h))[:, None, :, None]  # (B, 1, H, 1)
    cols = (dx + torch.arange(w))[:, None, None, :]  # (B, 1, 1, W)
    return padded[torch.arange(b)[:, None, None, None], torch.arange(c)[None, :, None, None], rows, cols]


def reference_dir(data: ImageData) -> Path:
    """Where the reference classifier of `data` is cached: one folder per dataset name and content."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", data.name).strip("-.") or "images"
    return genlab_home() / "reference" / f"{slug}-{data.content_hash()}"


# ---------------------------------------------------------------------------------------------
# network


@dataclasses.dataclass(frozen=True)
class ReferenceConfig:
    """How the reference classifier is built and trained; stored in meta.json and part of the cache check."""

    widths: tuple[int, ...] = (32, 64, 128)  # channels per conv block; each block halves H and W while >= 4
    feature_dim: int = 256  # the penultimate layer: the feature space of fd_genlab, kid_genlab, PRDC
    dropout: float = 0.3
    epochs: int = 8
    min_steps: int = 500  # small datasets (digits) run more epochs to reach at least this many updates
    batch_size: int = 128
    lr: float = 3e-3  # peak of the one-cycle schedule
    weight_decay: float = 1e-4
    max_shift: int = 1  # random translation augmentation, in pixels
    # "stride": each halving is a stride-2 conv, cheaper on a CPU than a full-resolution conv and a
    # max-pool, and as accurate (docs/evaluation.md compares the two)
    downsample: str = "stride"
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.widths or min(self.widths) < 1 or self.feature_dim < 1:
            raise ConfigError(f"ReferenceConfig needs positive widths and feature_dim, got {self.widths}, "
                              f"{self.feature_dim}", "use e.g. widths=(32, 64, 128), feature_dim=256")
        if self.epochs < 1 or self.batch_size < 1 or self.min_steps < 0 or self.max_shift < 0:
            raise ConfigError("ReferenceConfig epochs and batch_size must be >= 1, min_steps and max_shift >= 0")
        if self.downsample not in ("maxpool", "stride"):
            raise ConfigError(f"ReferenceConfig.downsample = {self.downsample!r}", "use 'stride' or 'maxpool'")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"ReferenceConfig.dropout = {self.dropout} must be in [0, 1)")


class ReferenceNet(nn.Module):
    """conv3x3-BN-ReLU(-maxpool) blocks -> linear feature layer (ReLU) -> dropout -> class head."""

    def __init__(self, in_channels: int, image_size: tuple[int, int], num_classes: int, config: ReferenceConfig):
        super().__init__()
        layers: list[nn.Module] = []
        channels, (h, w) = in_channels, image_size
        for width in config.widths:
            halve = min(h, w) >= 4  # keep at least 2x2 positions, so 8x8 digits go 8 -> 4 -> 2 -> 2
            stride = 2 if halve and config.downsample == "stride" else 1
            layers += [
                nn.Conv2d(channels, width, 3, stride=stride, padding=1, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(),
            ]
            if halve and config.downsample == "maxpool":
                layers.append(nn.MaxPool2d(2))
            if halve:
                h, w = ((h + 1) // 2, (w + 1) // 2) if stride == 2 else (h // 2, w // 2)  # conv rounds up, pooling down
            channels = width
        self.conv = nn.Sequential(*layers)
        self.feature = nn.Sequential(nn.Flatten(), nn.Linear(channels * h * w, config.feature_dim), nn.ReLU())
        self.head = nn.Sequential(nn.Dropout(config.dropout), nn.Linear(config.feature_dim, num_classes))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) in [0, 1] -> (B, feature_dim) non-negative penultimate activations."""
        # channels_last is the layout oneDNN's CPU convolutions are fastest with (docs/evaluation.md)
        return self.feature(self.conv((x * 2 - 1).contiguous(memory_format=torch.channels_last)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


# ---------------------------------------------------------------------------------------------
# the classifier a caller holds


class ReferenceClassifier:
    """A trained reference network with its classes, test accuracy and cache folder.

    `trained` is True when this object came from training, False when it was read from the cache.
    """

    def __init__(self, net: ReferenceNet, classes: tuple[str, ...], meta: dict[str, Any], folder: Path,
                 trained: bool):
        self.net = net.to(memory_format=torch.channels_last).eval()
        self.classes = classes
        self.meta = meta
        self.folder = folder
        self.trained = trained
        self.shape: tuple[int, int, int] = tuple(meta["shape"])

    @property
    def accuracy(self) -> float:
        """Top-1 accuracy on the dataset's test split (NaN when it has no labelled test images)."""
        value = self.meta["test_accuracy"]
        return math.nan if value is None else float(value)

    @property
    def feature_dim(self) -> int:
        return self.net.feature[1].out_features

    def _batches(self, images: np.ndarray | torch.Tensor, batch_size: int) -> Iterator[torch.Tensor]:
        if images.ndim == 3 and self.shape[0] == 1:
            images = images[:, None]  # (N, H, W) grayscale -> (N, 1, H, W)
        if tuple(images.shape[1:]) != self.shape:
            raise ValueError(f"images of shape {tuple(images.shape[1:])} do not match the reference classifier's "
                             f"{self.shape} (channels, height, width)")
        for start in range(0, len(images), batch_size):
            yield as_unit_float(images[start : start + batch_size])

    @torch.no_grad()
    def embed(self, images: np.ndarray | torch.Tensor, batch_size: int = 1000) -> tuple[torch.Tensor, torch.Tensor]:
        """Features (N, D) and class probabilities (N, K) of uint8 or [0, 1] float images, in one pass."""
        features, probs = [], []
        for x in self._batches(images, batch_size):
            f = self.net.features(x)
            features.append(f)
            probs.append(self.net.head(f).softmax(dim=1))
        if not features:
            return torch.zeros(0, self.feature_dim), torch.zeros(0, len(self.classes))
        return torch.cat(features), torch.cat(probs)

    def features(self, images: np.ndarray | torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
        """Penultimate-layer features (N, D), float32, of uint8 or [0, 1] float images."""
        return self.embed(images, batch_size)[0]

    def predict_proba(self, images: np.ndarray | torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
        """Class probabilities p(y | x), (N, K), of uint8 or [0, 1] float images."""
        return self.embed(images, batch_size)[1]


# ---------------------------------------------------------------------------------------------
# train or reuse


def reference_classifier(data: ImageData, config: ReferenceConfig | None = None, progress: bool = True,
                         retrain: bool = False) -> ReferenceClassifier:
    """The reference classifier of `data`: read from the cache when one matches, else trained and cached.

    A cached classifier is reused only when its content hash and config match; otherwise
    (or with `retrain=True`, or when the cache is unreadable) it is trained again, which
    takes a few minutes for Fashion-MNIST on a 2-core CPU and seconds for digits.
    """
    config = config or ReferenceConfig()
    folder = reference_dir(data)
    if not retrain:
        cached = _load(folder, data, config, progress)
        if cached is not None:
            return cached
    net, meta = _train(data, config, progress)
    weights = {k: v.contiguous() for k, v in net.state_dict().items()}  # channels_last is not contiguous
    atomic_write(folder / WEIGHTS_FILE, save_safetensors(weights, metadata={"format": str(FORMAT_VERSION)}))
    atomic_write(folder / META_FILE, json.dumps(meta, indent=1))  # last: marks the folder complete
    reference = ReferenceClassifier(net, tuple(data.classes), meta, folder, trained=True)
    log.info("reference classifier for %s: test accuracy %.2f%%, trained in %.0f s, cached in %s", data.name,
             100 * reference.accuracy, meta["train_seconds"], folder)
    return reference


def _load(folder: Path, data: ImageData, config: ReferenceConfig, progress: bool) -> ReferenceClassifier | None:
    """The cached classifier, or None when there is none, it is stale, or it cannot be read."""
    if not (folder / META_FILE).exists():
        return None
    try:
        meta = json.loads((folder / META_FILE).read_text())
        stale = (meta.get("format") != FORMAT_VERSION or meta.get("content_hash") != data.content_hash()
                 or meta.get("config") != to_dict(config))
        if stale:
            return None
        net = ReferenceNet(meta["shape"][0], tuple(meta["shape"][1:]), len(meta["classes"]),
                           from_dict(ReferenceConfig, meta["config"]))
        refuse_pickle(folder / WEIGHTS_FILE)  # never handed to a pickle loader
        net.load_state_dict(load_safetensors((folder / WEIGHTS_FILE).read_bytes()), strict=True)
    except (OSError, ValueError, KeyError, TypeError, RuntimeError, SafetensorError, GenlabError) as error:
        log.warning("reference classifier cache %s is unreadable (%s); training it again", folder, str(error)[:200])
        return None
    return ReferenceClassifier(net, tuple(meta["classes"]), meta, folder, trained=False)


def _labelled(x: np.ndarray, y: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    keep = y >= 0  # -1 marks unlabelled images
    return torch.from_numpy(np.ascontiguousarray(x[keep])), torch.from_numpy(y[keep].astype(np.int64))


@torch.no_grad()
def _accuracy(net: ReferenceNet, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1000) -> float | None:
    if len(x) == 0:
        return None
    net.eval()
    correct = sum((net(as_unit_float(x[i : i + batch_size])).argmax(1) == y[i : i + batch_size]).sum().item()
                  for i in range(0, len(x), batch_size))
    return correct / len(x)


def _train(data: ImageData, config: ReferenceConfig, progress: bool) -> tuple[ReferenceNet, dict[str, Any]]:
    """Train with AdamW and a one-cycle learning rate (Smith & Topin 2019), fp32, on torch's threads
    (default: all cores)."""
    train_x, train_y = _labelled(data.train_x, data.train_y)
    test_x, test_y = _labelled(data.test_x, data.test_y)
    num_classes = len(data.classes)
    if num_classes < 2 or len(train_y.unique()) < 2:
        raise DataError(f"{data.name} needs at least two labelled classes to train its reference classifier",
                        "put the images in one subfolder per class")
    steps_per_epoch = math.ceil(len(train_x) / config.batch_size)
    epochs = max(config.epochs, math.ceil(config.min_steps / steps_per_epoch))
    start = time.time()
    # Fork the global RNG so dropout and init are seeded here without disturbing the caller's stream.
    with torch.random.fork_rng():
        torch.manual_seed(config.seed)
        generator = torch.Generator().manual_seed(config.seed)
        net = ReferenceNet(train_x.shape[1], tuple(train_x.shape[2:]), num_classes, config)
        net = net.to(memory_format=torch.channels_last)
        optimizer = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, config.lr, total_steps=epochs * steps_per_epoch)
        log.info("training the reference classifier for %s: %d epochs over %s images of shape %s", data.name, epochs,
                 f"{len(train_x):,}", tuple(train_x.shape[1:]))
        bar = tqdm(total=epochs * steps_per_epoch, desc="reference classifier", disable=not progress)
        for _ in range(epochs):
            net.train()
            order = torch.randperm(len(train_x), generator=generator)
            for i in range(0, len(order), config.batch_size):
                index = order[i : i + config.batch_size]
                x = random_shift(as_unit_float(train_x[index]), config.max_shift, generator)
                loss = F.cross_entropy(net(x), train_y[index])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
                bar.update()
                bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
        bar.close()
        train_seconds = time.time() - start
        accuracy = _accuracy(net, test_x, test_y)
        threads = torch.get_num_threads()
    meta = {
        "format": FORMAT_VERSION,
        "dataset": data.name,
        "content_hash": data.content_hash(),
        "classes": list(data.classes),
        "shape": list(train_x.shape[1:]),
        "test_accuracy": accuracy,
        "test_examples": len(test_x),
        "train_examples": len(train_x),
        "epochs": epochs,
        "train_seconds": round(train_seconds, 2),
        "torch_threads": threads,
        "torch_version": torch.__version__,
        "config": to_dict(config),
    }
    return net.eval(), meta
