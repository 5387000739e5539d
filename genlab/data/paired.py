"""Paired data for image-to-image translation, made from any image dataset by a task transform.

Every image of a dataset becomes a (condition, target) pair on the fly, so no second copy of
the data is stored and any image folder works:

- sketch: an edge map drawn as dark strokes on white, like a pencil sketch (what DeepFaceDrawing
  starts from): the Sobel gradient magnitude of the grey image, thresholded at a fraction of
  its per-image maximum. A user's own drawing (dark lines on light paper) looks the same.
- superres: the image reduced `scale` times by area averaging (each low-resolution pixel is the
  mean of the block it covers, as a camera sensor integrates light). `upscale` (bicubic) brings
  it back to full size: the input of the translation network and the floor it must beat.
- colourise: the grey image of the same CIE lightness (`genlab.data.colour.grey`: the sRGB encoding of the
  luminance), which is what a black-and-white photo keeps; the model restores the colour (a, b in Lab) and
  the grey image itself, with a = b = 0, is the floor it must beat.

All functions take and return float images in [0, 1], shaped (B, C, H, W).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from genlab.data.colour import chroma, grey
from genlab.errors import ConfigError, DataError

TASKS = ("sketch", "superres", "colourise")

# Sobel kernels (x: left minus right, y: top minus bottom), normalised so a 0 -> 1 step edge has magnitude 1.
_SOBEL_X = torch.tensor([[1.0, 0.0, -1.0], [2.0, 0.0, -2.0], [1.0, 0.0, -1.0]]) / 4
_SOBEL = torch.stack([_SOBEL_X, _SOBEL_X.T])[:, None]  # (2, 1, 3, 3)


def sketch(images: torch.Tensor, threshold: float = 0.25, min_contrast: float = 0.05) -> torch.Tensor:
    """(B, C, H, W) -> (B, 1, H, W) in {0, 1}: 0 (a stroke) where the gradient magnitude of the grey image
    exceeds `threshold` x its largest value in that image, 1 (paper) elsewhere. Images flatter than
    `min_contrast` get no strokes rather than amplified noise."""
    grey = images.mean(dim=1, keepdim=True)
    grad = F.conv2d(F.pad(grey, (1, 1, 1, 1), mode="replicate"), _SOBEL.to(images))  # (B, 2, H, W)
    magnitude = grad.pow(2).sum(dim=1, keepdim=True).sqrt()
    peak = magnitude.amax(dim=(2, 3), keepdim=True).clamp_min(min_contrast)
    return (magnitude <= threshold * peak).to(images.dtype)


def low_resolution_size(size: tuple[int, int], scale: int) -> tuple[int, int]:
    h, w = size
    if scale < 1 or h // scale < 1 or w // scale < 1:
        raise ConfigError(
            f"cannot reduce {h}x{w} images {scale} times", "use --model.scale between 1 and the image size"
        )
    return h // scale, w // scale


def downscale(images: torch.Tensor, scale: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, H // scale, W // scale) by area averaging (anti-aliased, no ringing)."""
    return F.interpolate(images, size=low_resolution_size(images.shape[-2:], scale), mode="area")


def upscale(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bicubic interpolation to `size` (H, W), clamped to [0, 1]: the super-resolution baseline.

    torch's bicubic kernel (a = -0.75, as OpenCV) with align_corners=False; PIL's (a = -0.5) differs
    by a fraction of a dB in PSNR."""
    return F.interpolate(images, size=tuple(size), mode="bicubic", align_corners=False).clamp(0, 1)


def task_input(images: torch.Tensor, task: str, scale: int = 4, threshold: float = 0.25) -> torch.Tensor:
    """The condition a translation model gets for target `images`: a sketch, a low-resolution image or the grey
    image."""
    if task == "sketch":
        return sketch(images, threshold)
    if task == "superres":
        return downscale(images, scale)
    if task == "colourise":
        if images.shape[1] != 3:
            raise DataError(f"colourising learns from colour images; these have {images.shape[1]} channel(s)",
                            "train on colour (RGB) images")
        return grey(images)
    raise ConfigError(f"unknown translation task {task!r}", f"use one of {', '.join(TASKS)}")


def check_colour(images: np.ndarray, name: str, least: float = 0.01, visible: float = 5.0, sample: int = 512) -> None:
    """Refuse images with no colour to learn: uint8 (N, C, H, W) with one channel, or whose pixels have a chroma
    above `visible` (C*ab; a difference of 5 is plain to see) in fewer than `least` of them (grey photos saved as
    RGB, whose JPEG noise leaves a chroma of 1 or 2), judged on `sample` images spread over the set."""
    fix = "colourising learns from colour images: train on a folder of colour (RGB) pictures"
    if images.shape[1] != 3:
        raise DataError(f"{name} is grey ({images.shape[1]} channel); there is no colour to learn", fix)
    picked = images[np.linspace(0, len(images) - 1, min(sample, len(images))).round().astype(int)]
    share = (chroma(torch.from_numpy(picked).float() / 255) > visible).float().mean().item()
    if share < least:
        raise DataError(f"{name} is grey: {share:.2%} of its pixels show a colour (a chroma above {visible:g})", fix)
