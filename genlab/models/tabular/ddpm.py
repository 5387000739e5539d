"""TabDDPM: denoising diffusion over a table's encoded rows (Kotelnikov, Baranchuk, Rubachev and Babenko,
"TabDDPM: Modelling Tabular Data with Diffusion Models", ICML 2023).

On genlab's layout (layout.py) the two kinds of span get the two kinds of noise:

- a `tanh` span (a scalar in a mode's frame, times 4 so that it spreads about as a standard normal) is
  diffused by Gaussian noise, x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps (Ho et al. 2020), and the
  network predicts eps;
- a `softmax` span (a mode, a category, missing or not; K slots) by multinomial diffusion (Hoogeboom,
  Nielsen, Jaini, Forré and Welling, "Argmax Flows and Multinomial Diffusion", NeurIPS 2021):
  q(x_t | x_{t-1}) = Cat((1 - beta_t) x_{t-1} + beta_t / K), so q(x_t | x_0) = Cat(abar_t x_0 + (1 - abar_t) / K),
  and the network predicts the logits of x_0; the posterior q(x_{t-1} | x_t, x_0) with the predicted x_0 in
  place of the true one is the reverse step.

One MLP sees the whole noisy row and the timestep (TabDDPM's MLPDiffusion: the row projected, a sinusoidal
embedding of t added, ReLU layers). The loss is the squared error of eps plus, per softmax span, the KL of the
true posterior from the predicted one (at t = 0 the negative log-likelihood of x_0), the spans' terms averaged
as in the reference code. Both kinds share one cosine schedule (Nichol & Dhariwal 2021).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from genlab.models.diffusion.schedule import NoiseSchedule
from genlab.models.tabular.layout import Span

SCALE = 4.0  # the layout's scalars are (x - mu) / (4 sigma): times 4 they are about standard normal in their mode


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal features of integer timesteps (B,) -> (B, dim), as in the Transformer and DDPM."""
    half = dim // 2
    freqs = torch.exp(-math.log(10_000) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    angles = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=1)


class MLPDenoiser(nn.Module):
    def __init__(self, width: int, hidden: int, depth: int, dim_t: int = 128):
        super().__init__()
        self.dim_t = dim_t
        self.project = nn.Linear(width, dim_t)
        self.time = nn.Sequential(nn.Linear(dim_t, dim_t), nn.SiLU(), nn.Linear(dim_t, dim_t))
        layers: list[nn.Module] = []
        for a, b in zip([dim_t] + [hidden] * (depth - 1), [hidden] * depth, strict=True):
            layers += [nn.Linear(a, b), nn.ReLU()]
        self.body = nn.Sequential(*layers, nn.Linear(hidden, width))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.body(self.project(x) + self.time(timestep_embedding(t, self.dim_t)))


class TabDDPM(nn.Module):
    def __init__(self, spans: list[Span], width: int, hidden: int = 512, depth: int = 2, timesteps: int = 100):
        super().__init__()
        self.width, self.timesteps = width, timesteps
        self.net = MLPDenoiser(width, hidden, depth)
        self.schedule = NoiseSchedule("cosine", timesteps)
        alpha_bar = self.schedule.alpha_bar
        alpha = torch.cat([alpha_bar[:1], alpha_bar[1:] / alpha_bar[:-1]])
        # per-step alpha_t and alpha_bar_{t-1} (1 at t = 0: the posterior of the "step" before 0 is x_0 itself)
        self.register_buffer("alpha", alpha.float(), persistent=False)
        self.register_buffer("alpha_bar", alpha_bar.float(), persistent=False)
        self.register_buffer("alpha_bar_prev", torch.cat([torch.ones(1, dtype=torch.float64),
                                                          alpha_bar[:-1]]).float(), persistent=False)
        self.register_buffer("scalar", torch.tensor([s.start for s in spans if s.activation == "tanh"],
                                                    dtype=torch.long), persistent=False)
        self.blocks = [(s.start, s.width) for s in spans if s.activation == "softmax"]

    # -- multinomial diffusion --------------------------------------------------------------------

    def _posterior(self, x_t: torch.Tensor, x0: torch.Tensor, t: torch.Tensor, k: int) -> torch.Tensor:
        """q(x_{t-1} | x_t, x_0) (B, K) for one-hot x_t and x_0 given as probabilities (B, K):
        proportional to [alpha_t x_t + (1 - alpha_t) / K] * [abar_{t-1} x_0 + (1 - abar_{t-1}) / K]."""
        a, ab_prev = self.alpha[t][:, None], self.alpha_bar_prev[t][:, None]
        p = (a * x_t + (1 - a) / k) * (ab_prev * x0 + (1 - ab_prev) / k)
        return p / p.sum(1, keepdim=True)

    def _noised(self, x: torch.Tensor, t: torch.Tensor,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(x_t, eps): the scalars as sqrt(abar_t) SCALE x_0 + sqrt(1 - abar_t) eps, each softmax span a one-hot draw
        of Cat(abar_t x_0 + (1 - abar_t) / K)."""
        n, i = len(x), self.scalar
        ab = self.alpha_bar[t][:, None]
        noisy = x.clone()
        noise = torch.randn(n, len(i), generator=generator, device=x.device)
        if len(i):
            noisy[:, i] = ab.sqrt() * SCALE * x[:, i] + (1 - ab).sqrt() * noise
        for start, k in self.blocks:
            probs = ab * x[:, start : start + k] + (1 - ab) / k
            draw = torch.multinomial(probs, 1, generator=generator)[:, 0]
            noisy[:, start : start + k] = F.one_hot(draw, k).float()
        return noisy, noise

    def _multinomial_terms(self, x: torch.Tensor, noisy: torch.Tensor, out: torch.Tensor,
                           t: torch.Tensor) -> list[torch.Tensor]:
        """Per softmax span, each row's KL(q(x_{t-1} | x_t, x_0) || p(x_{t-1} | x_t)), (B,); at t = 0 the true
        posterior is x_0 itself and the KL is the negative log-likelihood of x_0."""
        terms = []
        for start, k in self.blocks:
            x0, x_t = x[:, start : start + k], noisy[:, start : start + k]
            predicted = self._posterior(x_t, F.softmax(out[:, start : start + k], 1), t, k).clamp_min(1e-30).log()
            true = self._posterior(x_t, x0, t, k)
            kl = (true * (true.clamp_min(1e-30).log() - predicted)).sum(1)
            terms.append(torch.where(t == 0, -(x0 * predicted).sum(1), kl))
        return terms

    # -- training ----------------------------------------------------------------------------------

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        t = torch.randint(0, self.timesteps, (len(x),), device=x.device)
        noisy, noise = self._noised(x, t)
        out = self.net(noisy, t)
        gaussian = F.mse_loss(out[:, self.scalar], noise) if len(self.scalar) else x.new_zeros(())
        multinomial = sum((term.mean() for term in self._multinomial_terms(x, noisy, out, t)), x.new_zeros(()))
        multinomial = multinomial / max(1, len(self.blocks))
        return {"loss": gaussian + multinomial, "gaussian": gaussian, "multinomial": multinomial}

    # -- likelihood ------------------------------------------------------------------------------

    @torch.no_grad()
    def nll_per_row(self, x: torch.Tensor, steps: int = 25) -> torch.Tensor:
        """The negative variational bound of each row (B,) in nats, an anomaly score: the bound's terms for the steps
        t -> t-1, Gaussian w_t ||eps - eps_hat||^2 with w_t = (SNR(t-1) / SNR(t) - 1) / 2 (Ho et al. 2020 eq. 12 in
        Kingma et al. 2021's SNR form) and multinomial KL(q(x_{t-1} | x_t, x_0) || p(x_{t-1} | x_t)) (at t = 0 the
        categories' negative log-likelihood), estimated on every (T / steps)-th step times the stride, with noise
        fixed by a seed so that a row always gets the same score."""
        n, i = len(x), self.scalar
        generator = torch.Generator(device=x.device).manual_seed(0)
        snr = self.alpha_bar / (1 - self.alpha_bar)
        stride = max(1, self.timesteps // steps)
        total = x.new_zeros(n)
        for step in range(0, self.timesteps, stride):
            t = torch.full((n,), step, device=x.device, dtype=torch.long)
            noisy, noise = self._noised(x, t, generator)
            out = self.net(noisy, t)
            if step and len(i):
                total += stride * 0.5 * (snr[step - 1] / snr[step] - 1) * (out[:, i] - noise).pow(2).sum(1)
            for term in self._multinomial_terms(x, noisy, out, t):
                total += (stride if step else 1) * term
        return total

    # -- sampling ----------------------------------------------------------------------------------

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None,
               allowed: dict[int, torch.Tensor] | None = None) -> torch.Tensor:
        """(n, width) rows in the layout: ancestral sampling from pure noise (uniform categories) over every step.

        `allowed` (a softmax span's start -> (K,) bool) confines those spans to the slots it allows: the start and
        every reverse step's posterior are restricted to them and renormalised, so the other spans are denoised
        knowing the conditioned ones (conditioning by constraining the reverse chain, as inpainting does)."""
        allowed = allowed or {}
        device = self.alpha.device
        x = torch.zeros(n, self.width, device=device)
        i = self.scalar
        if len(i):
            x[:, i] = torch.randn(n, len(i), generator=generator, device=device)
        for start, k in self.blocks:
            uniform = allowed.get(start, torch.ones(k, dtype=torch.bool)).float().to(device).expand(n, k)
            x[:, start : start + k] = F.one_hot(torch.multinomial(uniform, 1, generator=generator)[:, 0], k).float()
        for step in reversed(range(self.timesteps)):
            t = torch.full((n,), step, device=device, dtype=torch.long)
            out = self.net(x, t)
            if len(i):
                a, ab, ab_prev = self.alpha[step], self.alpha_bar[step], self.alpha_bar_prev[step]
                x0 = ((x[:, i] - (1 - ab).sqrt() * out[:, i]) / ab.sqrt()).clamp(-SCALE, SCALE)
                mean = (ab_prev.sqrt() * (1 - a) * x0 + a.sqrt() * (1 - ab_prev) * x[:, i]) / (1 - ab)
                if step:
                    variance = (1 - a) * (1 - ab_prev) / (1 - ab)
                    mean = mean + variance.sqrt() * torch.randn(n, len(i), generator=generator, device=device)
                x[:, i] = mean
            for start, k in self.blocks:
                p = self._posterior(x[:, start : start + k], F.softmax(out[:, start : start + k], 1), t, k)
                if start in allowed:
                    p = p * allowed[start].to(device)
                    p = p + (p.sum(1, keepdim=True) == 0) * allowed[start].to(device)  # all mass on banned slots
                x[:, start : start + k] = F.one_hot(torch.multinomial(p, 1, generator=generator)[:, 0], k).float()
        if len(i):
            x[:, i] = (x[:, i] / SCALE).clamp(-1, 1)
        return x
