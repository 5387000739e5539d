"""Muon (Jordan et al. 2024) for hidden weight matrices, with AdamW for everything else, as one optimiser.

Muon takes SGD-momentum's update of a matrix and replaces it by the nearest
semi-orthogonal matrix (its polar factor U V^T), computed with a few Newton-Schulz
iterations; every direction of the update then moves at the same rate. It is what the
modded-nanoGPT speedruns train hidden matrices with; embeddings, the output head and
gains stay with AdamW. One optimiser object with two kinds of parameter groups keeps the
engine's single-optimiser path (one LR schedule, one checkpointed state).
"""

from __future__ import annotations

import torch


def orthogonalize(g: torch.Tensor, steps: int = 5) -> torch.Tensor:
    """Approximately U V^T of g = U S V^T by the quintic Newton-Schulz iteration of Muon's reference code.

    The coefficients (3.4445, -4.7750, 2.0315) push singular values into roughly [0.7, 1.2]
    within 5 steps, which trains as well as the exact polar factor at a fraction of its cost.
    """
    a, b, c = 3.4445, -4.7750, 2.0315
    x = g.float()
    tall = x.size(-2) > x.size(-1)
    if tall:  # iterate on the wide orientation: X X^T is then the smaller Gram matrix
        x = x.mT
    x = x / (x.norm(dim=(-2, -1), keepdim=True) + 1e-7)
    for _ in range(steps):
        gram = x @ x.mT
        x = a * x + (b * gram + c * gram @ gram) @ x
    return (x.mT if tall else x).to(g.dtype)


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
            lr, wd = group["lr"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if group["use_muon"]:
                    if not state:
                        state["momentum"] = torch.zeros_like(p)
                    buf = state["momentum"]
                    buf.lerp_(p.grad, 1 - group["momentum"])
                    update = p.grad.lerp(buf, group["momentum"]) if group["nesterov"] else buf
                    # scale so that the update's RMS does not depend on the matrix's aspect ratio
                    update = orthogonalize(update) * max(1.0, p.size(-2) / p.size(-1)) ** 0.5
                    p.mul_(1 - lr * wd).add_(update, alpha=-lr)
                else:
                    if not state:
                        state["step"] = torch.zeros((), dtype=torch.float32)
                        state["exp_avg"] = torch.zeros_like(p)
                        state["exp_avg_sq"] = torch.zeros_like(p)
                    state["step"] += 1
                    beta1, beta2 = group["betas"]
                    step = float(state["step"])
                    state["exp_avg"].lerp_(p.grad, 1 - beta1)
                    state["exp_avg_sq"].mul_(beta2).addcmul_(p.grad, p.grad, value=1 - beta2)
                    denom = (state["exp_avg_sq"] / (1 - beta2**step)).sqrt_().add_(group["eps"])
                    p.mul_(1 - lr * wd).addcdiv_(state["exp_avg"], denom, value=-lr / (1 - beta1**step))
        return loss
