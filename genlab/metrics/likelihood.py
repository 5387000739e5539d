"""Likelihood on held-out data, in nats per example and bits per dimension."""

from __future__ import annotations

import math
import time

import torch
from tqdm.auto import tqdm


def bits_per_dim(nats_per_example: float, dims: int) -> float:
    """Convert nats per example into bits per dimension (pixel channel, character, ...)."""
    return nats_per_example / (dims * math.log(2))


@torch.no_grad()
def image_log_likelihood(model, images: torch.Tensor, labels: torch.Tensor | None = None, k: int = 200,
                         seed: int = 0, batch_size: int = 100, progress: bool = True) -> dict[str, float]:
    """Mean test negative log-likelihood (importance-weighted bound, k samples) and ELBO of uint8 images.

    The random numbers (binarisation, posterior samples) come from one generator seeded by `seed`,
    so the figure is reproducible; `k` samples per image make the bound tight (Burda et al. 2016).
    """
    model.eval()
    generator = torch.Generator().manual_seed(seed)
    # A stream of its own for the data (binarisation), so the binary test set is the same for
    # every model evaluated with this seed, whatever its latent size or k.
    data_generator = torch.Generator().manual_seed(seed + 1)
    total_ll, total_elbo, n = 0.0, 0.0, len(images)
    start = time.time()
    for i in tqdm(range(0, n, batch_size), desc=f"IWAE k={k}", disable=not progress, leave=False):
        y = labels[i : i + batch_size] if labels is not None else None
        out = model.log_likelihood(
            images[i : i + batch_size], y, k=k, generator=generator, data_generator=data_generator
        )
        total_ll += out["log_likelihood"].double().sum().item()
        total_elbo += out["elbo"].double().sum().item()
    dims = images[0].numel()
    nll = -total_ll / n
    return {"nll_nats": nll, "elbo_nats": total_elbo / n, "bits_per_dim": bits_per_dim(nll, dims),
            "iwae_k": k, "examples": n, "eval_seconds": time.time() - start}
