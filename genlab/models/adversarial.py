"""What adversarial families share (gan, pix2pix): the losses, the gradient penalty, spectral norm, DiffAugment.

Losses take the discriminator's raw outputs: hinge (Lim & Ye 2017; Miyato et al. 2018, eq. 16-17),
the non-saturating loss (Goodfellow et al. 2014, sec. 3) and WGAN-GP (Gulrajani et al. 2017).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

LossKind = Literal["hinge", "non-saturating", "wgan-gp"]
AUGMENTATIONS = ("color", "translation", "cutout")

# -- losses ---------------------------------------------------------------------------------


def discriminator_loss(kind: str, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """The discriminator's (critic's) loss from its raw outputs on real and generated images; lower is better for it.

    hinge:          E[max(0, 1 - D(x))] + E[max(0, 1 + D(G(z)))]
    non-saturating: E[softplus(-D(x))] + E[softplus(D(G(z)))]  (binary cross-entropy on logits)
    wgan-gp:        E[D(G(z))] - E[D(x)]  (the gradient penalty is added by the caller)
    """
    if kind == "hinge":
        return F.relu(1 - real).mean() + F.relu(1 + fake).mean()
    if kind == "non-saturating":
        return F.softplus(-real).mean() + F.softplus(fake).mean()
    if kind == "wgan-gp":
        return fake.mean() - real.mean()
    raise ValueError(f"unknown GAN loss {kind!r}")


def generator_loss(kind: str, fake: torch.Tensor) -> torch.Tensor:
    """The generator's loss from the discriminator's outputs on its images: -E[D(G(z))] for hinge and
    WGAN, E[softplus(-D(G(z)))] = -E[log sigmoid D(G(z))] for the non-saturating loss."""
    if kind == "non-saturating":
        return F.softplus(-fake).mean()
    if kind in ("hinge", "wgan-gp"):
        return -fake.mean()
    raise ValueError(f"unknown GAN loss {kind!r}")


def gradient_penalty(critic, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """WGAN-GP's E[(|grad D(x_hat)|_2 - 1)^2] at x_hat on random lines between real and fake (Gulrajani et al. 2017,
    eq. 3)."""
    eps = torch.rand(len(real), *([1] * (real.ndim - 1)), device=real.device)
    x_hat = (eps * real + (1 - eps) * fake).requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(x_hat).sum(), x_hat, create_graph=True)
    return (grad.flatten(1).norm(dim=1) - 1).pow(2).mean()


# -- parts ----------------------------------------------------------------------------------


def spectral(module: nn.Module, enabled: bool) -> nn.Module:
    """The module with its weight divided by its largest singular value (one power iteration per training forward)."""
    return nn.utils.parametrizations.spectral_norm(module) if enabled else module


def diff_augment(x: torch.Tensor, policy: tuple[str, ...]) -> torch.Tensor:
    """Differentiable augmentation of images in [-1, 1] (Zhao et al. 2020), applied alike to real and fake
    images before the discriminator, so that it cannot memorise a small training set."""
    b = len(x)
    if "color" in policy:  # brightness, saturation and contrast, each drawn per image
        x = x + (torch.rand(b, 1, 1, 1, device=x.device) - 0.5)
        mean = x.mean(dim=1, keepdim=True)
        x = (x - mean) * (torch.rand(b, 1, 1, 1, device=x.device) * 2) + mean
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        x = (x - mean) * (torch.rand(b, 1, 1, 1, device=x.device) + 0.5) + mean
    if "translation" in policy:  # shift by up to 1/8 of the size, zero padding
        h, w = x.shape[-2:]
        sy, sx = max(1, h // 8), max(1, w // 8)
        padded = F.pad(x, (sx, sx, sy, sy))
        dy = torch.randint(0, 2 * sy + 1, (b, 1, 1), device=x.device)
        dx = torch.randint(0, 2 * sx + 1, (b, 1, 1), device=x.device)
        rows = (dy + torch.arange(h, device=x.device)[None, :, None]).expand(b, h, w)  # (B, H, W)
        cols = (dx + torch.arange(w, device=x.device)[None, None, :]).expand(b, h, w)
        x = padded[torch.arange(b, device=x.device)[:, None, None], :, rows, cols].permute(0, 3, 1, 2)
    if "cutout" in policy:  # blank a square of half the size at a random place
        h, w = x.shape[-2:]
        ch, cw = max(1, h // 2), max(1, w // 2)
        cy = torch.randint(0, h + 1 - ch, (b, 1, 1), device=x.device)
        cx = torch.randint(0, w + 1 - cw, (b, 1, 1), device=x.device)
        ys = torch.arange(h, device=x.device)[None, :, None]
        xs = torch.arange(w, device=x.device)[None, None, :]
        inside = (ys >= cy) & (ys < cy + ch) & (xs >= cx) & (xs < cx + cw)  # (B, H, W)
        x = x * (~inside)[:, None].to(x.dtype)
    return x


def to_signed(images: torch.Tensor) -> torch.Tensor:
    """uint8 images -> float in [-1, 1], the range of the generator's tanh."""
    return images.float() / 127.5 - 1
