"""Video metrics: frame-prediction error, motion statistics and class keeping.

- `prediction_errors`: the frame-prediction scores of OpenSTL's benchmark (Tan et al., NeurIPS 2023 Datasets and
  Benchmarks), whose convention for MSE and MAE is the per-frame *sum* over pixels in [0, 1], averaged over clips
  and frames (Moving MNIST's ConvLSTM: MSE 29.8, SSIM 0.929 in their table), beside the per-pixel mean, SSIM and
  PSNR per frame (genlab.metrics.images).
- `motion`: how clips move, from each frame's intensity-weighted centroid: its speed (pixels per frame) and the
  size of its acceleration (pixels per frame squared), whose distributions over real and generated clips are
  compared by the 1-Wasserstein distance (`motion_distance`). A still clip has speed 0; a clip whose items
  jump about has large accelerations; bouncing items have constant speeds and rare, large accelerations.
- `class_keeping`: for clips classified frame by frame, the share of frames in their clip's majority class and,
  for class-conditional clips, the share in the class asked for.
"""

from __future__ import annotations

import numpy as np
import torch

from genlab.errors import ConfigError
from genlab.metrics.images import psnr, ssim


def as_clips(clips) -> torch.Tensor:
    """Clips (B, T, C, H, W) as floats in [0, 1] (uint8 are divided by 255)."""
    clips = torch.as_tensor(np.asarray(clips) if not isinstance(clips, torch.Tensor) else clips)
    if clips.dim() != 5:
        raise ConfigError(f"clips of shape {tuple(clips.shape)}", "give (B, T, C, H, W) arrays")
    return clips.float() / 255 if clips.dtype == torch.uint8 else clips.float()


def prediction_errors(pred, true) -> dict[str, float]:
    """Scores of predicted frames against the true ones, both (B, T, C, H, W) in [0, 1] or uint8."""
    pred, true = as_clips(pred), as_clips(true)
    if pred.shape != true.shape:
        raise ConfigError(f"predictions {tuple(pred.shape)} against truth {tuple(true.shape)}", "give equal shapes")
    error = (pred - true).flatten(2)
    flat_pred, flat_true = pred.flatten(0, 1), true.flatten(0, 1)
    return {"mse_per_frame": float(error.pow(2).sum(2).mean()),  # OpenSTL's MSE
            "mae_per_frame": float(error.abs().sum(2).mean()),
            "mse": float(error.pow(2).mean()),
            "ssim": float(ssim(flat_pred, flat_true).mean()),
            "psnr": float(psnr(flat_pred, flat_true).mean())}


def linear_blend(given, factor: int) -> torch.Tensor:
    """Clips (B, m, C, H, W) at `factor` times their frame rate, (B, (m - 1) * factor + 1, C, H, W) in [0, 1], each
    new frame the linear blend of the two given frames around it: the floor frame interpolation must beat."""
    given = as_clips(given)
    weights = (torch.arange(factor).float() / factor).view(1, 1, factor, 1, 1, 1)
    between = (1 - weights) * given[:, :-1, None] + weights * given[:, 1:, None]  # (B, m - 1, factor, C, H, W)
    return torch.cat([between.flatten(1, 2), given[:, -1:]], 1)


def interpolation_psnr(made, truth, factor: int) -> float:
    """PSNR (dB) of the frames of clips made at `factor` times a rate (B, T, C, H, W) that were not given (those
    off every factor-th place), against the true frames, averaged over frames."""
    made, truth = as_clips(made), as_clips(truth)
    hidden = torch.arange(made.shape[1]) % factor != 0
    return float(psnr(made[:, hidden].flatten(0, 1), truth[:, hidden].flatten(0, 1)).mean())


def centroids(clips) -> np.ndarray:
    """The intensity-weighted centre (x, y) of every frame of clips (B, T, C, H, W): (B, T, 2) pixels from the
    top-left corner, pixel i covering [i, i + 1) (the item tracks' convention); the canvas centre for a black
    frame."""
    clips = as_clips(clips).mean(2)  # (B, T, H, W)
    h, w = clips.shape[-2:]
    mass = clips.sum((-2, -1))
    safe = mass.clamp_min(1e-8)
    x = (clips.sum(-2) * (torch.arange(w) + 0.5)).sum(-1) / safe
    y = (clips.sum(-1) * (torch.arange(h) + 0.5)).sum(-1) / safe
    out = torch.stack([x, y], -1)
    return torch.where(mass[..., None] > 1e-8, out, torch.tensor([w / 2, h / 2])).numpy()


def motion(clips) -> dict[str, np.ndarray]:
    """Each frame step's centroid speed (B * (T-1),) and each inner frame's acceleration size (B * (T-2),)."""
    c = centroids(clips)
    velocity = np.diff(c, axis=1)
    return {"speed": np.linalg.norm(velocity, axis=-1).ravel(),
            "acceleration": np.linalg.norm(np.diff(velocity, axis=1), axis=-1).ravel()}


def motion_distance(generated, real) -> dict[str, float]:
    """The 1-Wasserstein distance between generated and real clips' distributions of centroid speed and of
    acceleration size (pixels per frame, per frame squared), with each side's mean."""
    from scipy.stats import wasserstein_distance

    g, r = motion(generated), motion(real)
    out = {}
    for key in ("speed", "acceleration"):
        out[f"{key}_w1"] = float(wasserstein_distance(g[key], r[key]))
        out[f"{key}_mean"] = float(g[key].mean())
        out[f"{key}_mean_real"] = float(r[key].mean())
    return out


def class_keeping(frame_classes: np.ndarray, asked: np.ndarray | None = None) -> dict[str, float]:
    """frame_classes (B, T): each frame's predicted class. The share of frames in their clip's majority class
    (`agreement`), of clips whose every frame agrees, and with `asked` (B,), of frames in the class asked for."""
    frame_classes = np.asarray(frame_classes)
    majority = np.array([np.bincount(row).argmax() for row in frame_classes])
    same = frame_classes == majority[:, None]
    out = {"agreement": float(same.mean()), "clips_all_agree": float(same.all(1).mean())}
    if asked is not None:
        out["asked_class"] = float((frame_classes == np.asarray(asked)[:, None]).mean())
    return out
