"""Noise schedules and samplers of the diffusion family, kept apart from any network.

A schedule fixes alpha_bar(t) for the discrete training timesteps t = 0 .. T-1; the forward
process is x_t = sqrt(alpha_bar) x_0 + sqrt(1 - alpha_bar) eps. A network predicts eps
(Ho et al. 2020) or v = sqrt(alpha_bar) eps - sqrt(1 - alpha_bar) x_0 (Salimans & Ho 2022);
`NoiseSchedule.denoise` turns either into (x_0, eps) estimates, which is all a sampler needs.

Samplers walk a decreasing sequence of timesteps and end on the clean image:

- `ddpm`: ancestral sampling from the posterior q(x_s | x_t, x_0) (Ho et al. 2020, eq. 7), on
  any sub-sequence of timesteps (the strided form of Nichol & Dhariwal 2021);
- `ddim`: Song et al. 2021, eq. 12, with `eta` from 0 (deterministic) to 1 (as noisy as DDPM);
- `dpm++`: DPM-Solver++(2M) (Lu et al. 2022), the second-order multistep solver of the
  diffusion ODE in data prediction, which needs 10-25 steps for what DDIM does in 100+.

Every sampler takes a `denoiser(x, t) -> (x0, eps)`, so classifier-free guidance, clipping and
inpainting live outside the samplers and compose with all of them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Literal

import torch

Denoiser = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
SAMPLERS = ("ddpm", "ddim", "dpm++")


class NoiseSchedule:
    """alpha_bar over T discrete timesteps: `linear` betas (Ho et al. 2020) or `cosine` (Nichol & Dhariwal 2021)."""

    def __init__(self, kind: Literal["linear", "cosine"] = "linear", timesteps: int = 1000,
                 prediction: Literal["eps", "v"] = "eps"):
        self.kind, self.timesteps, self.prediction = kind, timesteps, prediction
        if kind == "linear":
            scale = 1000 / timesteps  # keeps the total noise of the 1000-step schedule for other T
            betas = torch.linspace(scale * 1e-4, scale * 0.02, timesteps, dtype=torch.float64)
            alpha_bar = torch.cumprod(1 - betas, 0)
        elif kind == "cosine":
            s = 0.008
            f = (
                torch.cos(
                    (torch.arange(timesteps + 1, dtype=torch.float64) / timesteps + s) / (1 + s) * math.pi / 2
                )
                ** 2
            )
            betas = (1 - f[1:] / f[:-1]).clamp(max=0.999)
            alpha_bar = torch.cumprod(1 - betas, 0)
        else:
            raise ValueError(f"unknown schedule {kind!r}")
        self.betas = betas
        self.alpha_bar = alpha_bar  # float64: the samplers' algebra is done in double, the network in float

    def _ab(self, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """alpha_bar at integer timesteps t (B,), broadcastable against `like` (B, C, H, W)."""
        return self.alpha_bar.to(like.device)[t.long()].to(like.dtype).view(-1, *([1] * (like.dim() - 1)))

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        ab = self._ab(t, x0)
        return ab.sqrt() * x0 + (1 - ab).sqrt() * noise

    def target(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """What the network learns to output at (x_t, t)."""
        if self.prediction == "eps":
            return noise
        ab = self._ab(t, x0)
        return ab.sqrt() * noise - (1 - ab).sqrt() * x0

    def snr(self, t: torch.Tensor) -> torch.Tensor:
        ab = self.alpha_bar.to(t.device)[t.long()]
        return (ab / (1 - ab)).float()

    def denoise(
        self, x: torch.Tensor, t: torch.Tensor, output: torch.Tensor, clip: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(x0, eps) estimates from a network output at (x_t, t); with `clip`, x0 is clamped to the data
        range [-1, 1] and eps recomputed to match it, which keeps guided or early samples in range."""
        ab = self._ab(t, x)
        if self.prediction == "eps":
            eps = output
            x0 = (x - (1 - ab).sqrt() * eps) / ab.sqrt()
        else:
            x0 = ab.sqrt() * x - (1 - ab).sqrt() * output
            eps = (1 - ab).sqrt() * x + ab.sqrt() * output
        if clip:
            x0 = x0.clamp(-1, 1)
            eps = (x - ab.sqrt() * x0) / (1 - ab).sqrt()
        return x0, eps

    def log_snr(self) -> torch.Tensor:
        """lambda(t) = log(alpha / sigma) = 0.5 log(alpha_bar / (1 - alpha_bar)), decreasing in t."""
        return 0.5 * torch.log(self.alpha_bar / (1 - self.alpha_bar))

    def timesteps_for(self, steps: int, start: int | None = None) -> list[int]:
        """About `steps` timesteps from `start` (default T-1) down to 0, evenly spaced in log-SNR.

        Uniform log-SNR steps are what DPM-Solver recommends for low-resolution images; with the exact
        denoiser of Gaussian data they also make DDIM more accurate than uniform-in-t ("trailing")
        spacing (tests/test_diffusion.py). Rounded to integer timesteps; where several round to the
        same step near t = 0, they are spread over neighbouring steps.
        """
        start = self.timesteps - 1 if start is None else start
        if not 1 <= steps <= start + 1:
            raise ValueError(f"steps must be in 1 .. {start + 1}, got {steps}")
        if steps == 1:
            return [start]
        lam = self.log_snr()
        targets = torch.linspace(float(lam[start]), float(lam[0]), steps, dtype=torch.float64)
        ts = torch.searchsorted(-lam, -targets).clamp(0, start).tolist()  # -lam increases with t
        ts[0], ts[-1] = start, 0
        for i in range(steps - 2, 0, -1):  # near t = 0 several targets round to one step: keep them distinct
            ts[i] = max(ts[i], ts[i + 1] + 1)
        if ts[1] >= start:  # almost every timestep asked for: plain uniform spacing
            return [int(round(start - i * start / (steps - 1))) for i in range(steps)]
        return ts


def _progress(items: Iterable, enabled: bool, desc: str):
    if not enabled:
        return items
    from tqdm.auto import tqdm

    return tqdm(items, desc=desc, leave=False)


@torch.no_grad()
def sample_loop(schedule: NoiseSchedule, denoiser: Denoiser, x: torch.Tensor, timesteps: list[int],
                sampler: str = "ddim", eta: float = 0.0, generator: torch.Generator | None = None,
                progress: bool = False, t_end: int = -1) -> torch.Tensor:
    """Run `sampler` from x at timesteps[0] through `timesteps` (decreasing) to a clean sample, or to
    the noisier state at `t_end` when it is >= 0 (one step at a time, for inpainting's resampling)."""
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; use one of {', '.join(SAMPLERS)}")
    ab_all = schedule.alpha_bar
    previous_x0, previous_h = None, None
    for i in _progress(range(len(timesteps)), progress, sampler):
        t = timesteps[i]
        t_next = timesteps[i + 1] if i + 1 < len(timesteps) else t_end
        ab = float(ab_all[t])
        ab_next = float(ab_all[t_next]) if t_next >= 0 else 1.0
        x0, eps = denoiser(x, torch.full((len(x),), t, device=x.device, dtype=torch.long))
        if sampler == "ddim" or (sampler == "ddpm" and t_next < 0):
            sigma = 0.0
            if sampler == "ddim" and eta > 0 and t_next >= 0:
                sigma = eta * math.sqrt((1 - ab_next) / (1 - ab) * (1 - ab / ab_next))
            x = math.sqrt(ab_next) * x0 + math.sqrt(max(1 - ab_next - sigma**2, 0.0)) * eps
            if sigma > 0:
                x = x + sigma * torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        elif sampler == "ddpm":
            beta = 1 - ab / ab_next  # the effective beta of the (possibly strided) step t -> t_next
            mean = (math.sqrt(ab_next) * beta / (1 - ab)) * x0 + (math.sqrt(1 - beta) * (1 - ab_next) / (1 - ab)) * x
            std = math.sqrt(beta * (1 - ab_next) / (1 - ab))
            x = mean + std * torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        else:  # dpm++ 2M, in lambda = log(alpha / sigma) with alpha = sqrt(ab), sigma = sqrt(1 - ab)
            if t_next < 0:
                x = x0  # the last step lands on sigma = 0: first order there, as in Lu et al.'s "lower order final"
            else:
                lam, lam_next = 0.5 * math.log(ab / (1 - ab)), 0.5 * math.log(ab_next / (1 - ab_next))
                h = lam_next - lam
                d = x0
                if previous_x0 is not None:
                    r = previous_h / h
                    d = (1 + 1 / (2 * r)) * x0 - (1 / (2 * r)) * previous_x0
                x = math.sqrt((1 - ab_next) / (1 - ab)) * x - math.sqrt(ab_next) * math.expm1(-h) * d
                previous_h = h
            previous_x0 = x0
    return x
