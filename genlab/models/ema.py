"""Exponential moving averages of weights: what the GAN, pix2pix and diffusion families sample from.

Averaging the weights of the last few thousand steps gives smoother, better samples than the last
weights (Yazici et al. 2019 for GANs; Ho et al. 2020, sec. 4, for diffusion).
"""

from __future__ import annotations

import torch
from torch import nn


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
