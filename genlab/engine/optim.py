"""Muon (Jordan et al. 2024) for hidden weight matrices, with AdamW for everything else, as one optimiser.

Muon takes SGD-momentum's update of a matrix and replaces it by the nearest
semi-orthogonal matrix (its polar factor U V^T), computed with a few Newton-Schulz
iterations; every direction of the update then moves at the same rate. It is what the
modded-nanoGPT speedruns train hidden matrices with; embeddings, the output head and
gains stay with AdamW. One optimiser object with two kinds of parameter groups keeps the
engine's single-optimiser path (one LR schedule, one checkpointed state).
"""

from __future__ import annotations

from collections import defaultdict

import torch

from genlab.hardware import bf16_is_fast


def orthogonalize(g: torch.Tensor, steps: int = 5, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Approximately U V^T of g = U S V^T (or of each matrix of a stack) by the quintic Newton-Schulz
    iteration of Muon's reference code, computed in `dtype`.

    The coefficients (3.4445, -4.7750, 2.0315) push singular values into roughly [0.7, 1.2]
    within 5 steps, which trains as well as the exact polar factor at a fraction of its cost.
    The reference iterates in bf16: the result only has to be roughly orthogonal.
    """
    a, b, c = 3.4445, -4.7750, 2.0315
    x = g.to(dtype)
    tall = x.size(-2) > x.size(-1)
    if tall:  # iterate on the wide orientation: X X^T is then the smaller Gram matrix
        x = x.mT
    x = x / (x.norm(dim=(-2, -1), keepdim=True) + 1e-7)
    for _ in range(steps):
        gram = x @ x.mT
        x = a * x + (b * gram + c * gram @ gram) @ x
    return (x.mT if tall else x).to(g.dtype)


def newton_schulz_dtype(device: torch.device) -> torch.dtype:
    """bf16 where it multiplies fast (a GPU that supports it; a CPU that `bf16_is_fast`), else fp32."""
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    return torch.bfloat16 if device.type == "cpu" and bf16_is_fast() else torch.float32


class MuonAdamW(torch.optim.Optimizer):
    """Parameter groups with `use_muon=True` (2-D matrices) step with Muon, the others with AdamW.

    Muon groups: lr, momentum, weight_decay (decoupled), nesterov. AdamW groups: lr, betas,
    eps, weight_decay (decoupled). An LR scheduler scales every group's lr alike.
    """

    def __init__(self, groups: list[dict]):
        for group in groups:
            if group.get("use_muon"):
                group.setdefault("momentum", 0.95)
                group.setdefault("nesterov", True)
                if any(p.ndim != 2 for p in group["params"]):
                    raise ValueError("Muon groups take 2-D weight matrices only")
            else:
                group["use_muon"] = False
                group.setdefault("betas", (0.9, 0.95))
                group.setdefault("eps", 1e-8)
            group.setdefault("weight_decay", 0.0)
        super().__init__(groups, {})

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            if group["use_muon"]:
                self._muon_step(group)
            else:
                self._adamw_step(group)
        return loss

    def _muon_step(self, group: dict) -> None:
        """Momentum, then the orthogonalised update; matrices of one shape go through Newton-Schulz as one
        stack (a batched product per iteration instead of one small product per matrix), in bf16 where
        this CPU multiplies bf16 fast (genlab.hardware)."""
        lr, wd, momentum = group["lr"], group["weight_decay"], group["momentum"]
        by_shape: dict[tuple, list] = defaultdict(list)
        for p in group["params"]:
            if p.grad is None:
                continue
            state = self.state[p]
            if not state:
                state["momentum"] = torch.zeros_like(p)
            buf = state["momentum"]
            buf.lerp_(p.grad, 1 - momentum)
            by_shape[(p.shape, p.dtype, p.device)].append((p, p.grad.lerp(buf, momentum) if group["nesterov"] else buf))
        for (shape, _, device), items in by_shape.items():
            updates = orthogonalize(torch.stack([u for _, u in items]), dtype=newton_schulz_dtype(device))
            # scale so that the update's RMS does not depend on the matrix's aspect ratio
            scale = max(1.0, shape[-2] / shape[-1]) ** 0.5
            for (p, _), update in zip(items, updates):
                p.mul_(1 - lr * wd).add_(update, alpha=-lr * scale)

    def _adamw_step(self, group: dict) -> None:
        lr, wd = group["lr"], group["weight_decay"]
        beta1, beta2 = group["betas"]
        for p in group["params"]:
            if p.grad is None:
                continue
            state = self.state[p]
            if not state:
                state["step"] = torch.zeros((), dtype=torch.float32)
                state["exp_avg"] = torch.zeros_like(p)
                state["exp_avg_sq"] = torch.zeros_like(p)
            state["step"] += 1
            step = float(state["step"])
            state["exp_avg"].lerp_(p.grad, 1 - beta1)
            state["exp_avg_sq"].mul_(beta2).addcmul_(p.grad, p.grad, value=1 - beta2)
            denom = (state["exp_avg_sq"] / (1 - beta2**step)).sqrt_().add_(group["eps"])
            p.mul_(1 - lr * wd).addcdiv_(state["exp_avg"], denom, value=-lr / (1 - beta1**step))
