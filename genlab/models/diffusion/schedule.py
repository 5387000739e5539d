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

    def vlb_grid(self, steps: int, max_log_snr: float | None = None) -> tuple[list[int], torch.Tensor]:
        """A fixed grid of about `steps` timesteps for estimating the variational bound's denoising terms, and
        each one's weight: (timesteps, weights (K,) float64).

        With the posterior variance as the reverse process's, the bound's term for the step t -> t-1 is
        KL(q(x_{t-1} | x_t, x_0) || p(x_{t-1} | x_t)) = w_t E||eps - eps_hat(x_t, t)||^2 with
        w_t = (SNR(t-1) / SNR(t) - 1) / 2 (Ho et al. 2020 eq. 12 in the SNR form of Kingma et al. 2021,
        eq. 13 with ||x - x_hat||^2 = ||eps - eps_hat||^2 / SNR(t)). w_t is half the step in log-SNR, so the
        sum over t = 1 .. T-1 is half the integral of the eps error over log-SNR (their eq. 18): the grid
        cuts log-SNR into `steps` equal intervals, takes in each the timestep nearest its middle, and weighs
        it by the summed w_t of every timestep in the interval (an interval near t = 0 may hold none, so there
        can be fewer than `steps`). Exact where the error is constant within an interval; `steps` = T - 1 takes
        every timestep with its own weight: the whole sum. `max_log_snr`: only the terms of the timesteps whose
        log SNR is below it (the grid spans those).
        """
        if not 1 <= steps <= self.timesteps - 1:
            raise ValueError(f"steps must be in 1 .. {self.timesteps - 1}, got {steps}")
        snr = self.alpha_bar / (1 - self.alpha_bar)
        weights = 0.5 * (snr[:-1] / snr[1:] - 1)  # w_t for t = 1 .. T-1
        lam = torch.log(snr[1:])
        if max_log_snr is None and steps == self.timesteps - 1:
            return list(range(steps, 0, -1)), weights.flip(0)
        top = float(lam[0]) if max_log_snr is None else min(float(max_log_snr), float(lam[0]))
        if top <= float(lam[-1]):
            raise ValueError(f"no timestep has a log SNR below {max_log_snr} (the lowest is {float(lam[-1]):.2f})")
        edges = torch.linspace(float(lam[-1]), top, steps + 1, dtype=torch.float64)
        block = torch.bucketize(lam, edges[1:-1])  # which interval each timestep falls in
        block[lam > top] = steps  # above the span: in no interval
        timesteps, totals = [], []
        for k in range(steps):
            members = torch.nonzero(block == k).flatten()
            if len(members):  # near t = 0 an interval may hold no integer timestep
                middle = (edges[k] + edges[k + 1]) / 2
                timesteps.append(int(members[(lam[members] - middle).abs().argmin()]) + 1)
                totals.append(weights[members].sum())
        return timesteps, torch.stack(totals)

    def prior_kl(self, x0: torch.Tensor) -> torch.Tensor:
        """KL(q(x_T | x_0) || N(0, I)) summed over dimensions, (B,): the bound's prior term (Ho et al. eq. 5's L_T)."""
        ab = float(self.alpha_bar[-1])
        return 0.5 * (ab * x0.pow(2) - ab - math.log(1 - ab)).flatten(1).sum(1)

    def decoder_log_scale(self) -> float:
        """log sigma of the decoder p(x_0 | x_1): the posterior's standard deviation at the first step, as
        improved DDPM's code clips it (Nichol & Dhariwal 2021), since the step to x_0 has none."""
        ab0, ab1 = float(self.alpha_bar[0]), float(self.alpha_bar[1])
        return 0.5 * math.log((1 - ab1 / ab0) * (1 - ab0) / (1 - ab1))

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


def discretized_gaussian_log_prob(x: torch.Tensor, mean: torch.Tensor, log_scale: float) -> torch.Tensor:
    """log P(x) per pixel for 8-bit values scaled to [-1, 1] under N(mean, scale^2) binned at width 2/255, the end
    bins taking the tails: the decoder of Ho et al. 2020, eq. 13. Where a bin's mass underflows, the density at
    its centre times its width stands in for it."""
    scale = math.exp(log_scale)
    centered = x - mean
    upper, lower = (centered + 1 / 255) / scale, (centered - 1 / 255) / scale
    # the mass of a bin above the mean as a difference of upper tails, which keeps its precision
    above = lower > 0
    mass = torch.where(above, torch.special.ndtr(-lower) - torch.special.ndtr(-upper),
                       torch.special.ndtr(upper) - torch.special.ndtr(lower))
    log_density = -0.5 * (centered / scale).pow(2) - log_scale - 0.5 * math.log(2 * math.pi) + math.log(2 / 255)
    inner = torch.where(mass > 1e-12, torch.log(mass.clamp_min(1e-12)), log_density)
    return torch.where(x < -0.999, torch.special.log_ndtr(upper),
                       torch.where(x > 0.999, torch.special.log_ndtr(-lower), inner))


def _progress(items: Iterable, enabled: bool, desc: str):
    if not enabled:
        return items
    from tqdm.auto import tqdm

    return tqdm(items, desc=desc, leave=False)


Generators = torch.Generator | list[torch.Generator] | None


def randn(shape: tuple[int, ...], generator: Generators, device=None, dtype=torch.float32) -> torch.Tensor:
    """Standard normal draws of `shape`; with a list of generators, one per row (as diffusers takes them), row i
    from generator i, so that a row is the same whatever rows are drawn beside it."""
    if isinstance(generator, list):
        if len(generator) != shape[0]:
            raise ValueError(f"{len(generator)} generators for {shape[0]} rows")
        return torch.cat([torch.randn((1, *shape[1:]), generator=g, dtype=dtype).to(device) for g in generator])
    return torch.randn(shape, generator=generator, device=device, dtype=dtype)


@torch.no_grad()
def sample_loop(schedule: NoiseSchedule, denoiser: Denoiser, x: torch.Tensor, timesteps: list[int],
                sampler: str = "ddim", eta: float = 0.0, generator: Generators = None,
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
                x = x + sigma * randn(x.shape, generator, x.device, x.dtype)
        elif sampler == "ddpm":
            beta = 1 - ab / ab_next  # the effective beta of the (possibly strided) step t -> t_next
            mean = (math.sqrt(ab_next) * beta / (1 - ab)) * x0 + (math.sqrt(1 - beta) * (1 - ab_next) / (1 - ab)) * x
            std = math.sqrt(beta * (1 - ab_next) / (1 - ab))
            x = mean + std * randn(x.shape, generator, x.device, x.dtype)
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
