"""TVAE: a variational autoencoder over a table's encoded rows (Xu, Skoularidou, Cuesta-Infante and
Veeramachaneni, "Modeling Tabular Data using Conditional GAN", NeurIPS 2019, section 4.3).

The decoder's output per span of the layout (genlab.models.tabular.layout) is a distribution:

- a `tanh` span (a scalar in a mode's frame) is Gaussian with mean tanh(out) and a learned standard
  deviation per column, held in [0.01, 1] (the reference code clamps the parameter after each step;
  here the value used is clamped, which needs no hook in the training loop);
- a `softmax` span (a mode, a category, missing or not) is categorical over its slots.

The loss is the negative ELBO with the reconstruction weighted by `loss_factor` (2 in the reference
implementation), per row. Sampling decodes prior draws into draws of each span's distribution.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from genlab.models.tabular.layout import Span


def mlp(sizes: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for a, b in zip(sizes[:-2], sizes[1:-1], strict=True):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(sizes[-2], sizes[-1]))


class TVAE(nn.Module):
    def __init__(self, spans: list[Span], width: int, latent_dim: int = 128, hidden: int = 128, depth: int = 2,
                 loss_factor: float = 2.0):
        super().__init__()
        self.spans, self.latent_dim, self.loss_factor = spans, latent_dim, loss_factor
        self.encoder = mlp([width] + [hidden] * depth + [2 * latent_dim])
        self.decoder = mlp([latent_dim] + [hidden] * depth + [width])
        self.sigma = nn.Parameter(torch.full((width,), 0.1))
        self.register_buffer("scalar", torch.tensor([s.start for s in spans if s.activation == "tanh"]),
                             persistent=False)

    def reconstruction(self, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Negative log-likelihood of rows `x` under the decoder's output `out`, per row (B,)."""
        nll = x.new_zeros(len(x))
        if len(self.scalar):
            i = self.scalar
            sigma = self.sigma[i].clamp(0.01, 1.0)
            nll = nll + (((x[:, i] - torch.tanh(out[:, i])) ** 2) / (2 * sigma**2) + torch.log(sigma)).sum(1)
        for s in self.spans:
            if s.activation == "softmax":
                block = slice(s.start, s.start + s.width)
                nll = nll + F.cross_entropy(out[:, block], x[:, block].argmax(1), reduction="none")
        return nll

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        mu, logvar = self.encoder(x).chunk(2, dim=1)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        recon = self.reconstruction(self.decoder(z), x).mean()
        kl = (-0.5 * (1 + logvar - mu**2 - logvar.exp()).sum(1)).mean()
        return {"loss": self.loss_factor * recon + kl, "reconstruction": recon, "kl": kl}

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """(n, width) rows in the layout drawn from p(x | z), z from the prior: each softmax span a draw from its
        categorical (the reference code takes the most likely slot instead, which over-represents the commonest
        category wherever the decoder is unsure), each scalar with its learned noise."""
        device = self.sigma.device
        z = torch.randn(n, self.latent_dim, generator=generator, device=device)
        out = self.decoder(z)
        for s in self.spans:
            if s.activation == "softmax":  # Gumbel-max: argmax(logits + Gumbel noise) is a categorical draw
                block = slice(s.start, s.start + s.width)
                u = torch.rand(n, s.width, generator=generator, device=device).clamp_(1e-12, 1 - 1e-7)
                out[:, block] = F.one_hot((out[:, block] - torch.log(-torch.log(u))).argmax(1), s.width).float()
        if len(self.scalar):
            i = self.scalar
            noise = torch.randn(n, len(i), generator=generator, device=device)
            out[:, i] = torch.tanh(out[:, i]) + noise * self.sigma[i].clamp(0.01, 1.0)
        return out

    @torch.no_grad()
    def elbo_per_row(self, x: torch.Tensor) -> torch.Tensor:
        """The negative ELBO of each row (B,) at the encoder's mean: an anomaly score."""
        mu, logvar = self.encoder(x).chunk(2, dim=1)
        kl = -0.5 * (1 + logvar - mu**2 - logvar.exp()).sum(1)
        return self.reconstruction(self.decoder(mu), x) + kl
