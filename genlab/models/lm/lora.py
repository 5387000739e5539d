"""LoRA (Hu et al. 2021): low-rank adapters over a frozen transformer, and their merge back into plain weights.

A pre-trained weight W stays frozen and the model learns W + (alpha / r) B A with A (r, in) and
B (out, r); B starts at zero, so training starts from exactly the base model. Adapters sit on every
attention and MLP matrix of a GPT's blocks and on its output head, which a GPT ties to its token
embedding: one low-rank update then moves both (`GPT.embed` reads it), so a target whose words
differ from the base's can shift the vocabulary's statistics too. For export the product is merged
into W (`merge_lora`), which gives a plain model of the base's config, as fast as the base.
"""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F
from torch import nn

from genlab.errors import ConfigError


class LoRALinear(nn.Linear):
    """A frozen nn.Linear plus a trainable low-rank update; its state-dict keys extend the base's
    (`weight`, then `lora_A`, `lora_B`), so base weights load into it unchanged."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float):
        nn.Module.__init__(self)
        self.in_features, self.out_features = base.in_features, base.out_features
        self.weight, self.bias = base.weight, base.bias
        self.lora_A = nn.Parameter(torch.empty(rank, base.in_features, device=base.weight.device))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, rank, device=base.weight.device))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))  # as nn.Linear initialises, and the LoRA paper
        self.scale = alpha / rank

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias) + F.linear(F.linear(x, self.lora_A), self.lora_B) * self.scale

    def merged_weight(self) -> torch.Tensor:
        return self.weight + self.scale * self.lora_B @ self.lora_A


def add_lora(model: nn.Module, rank: int, alpha: float, embeddings: bool = False) -> nn.Module:
    """Replace every nn.Linear inside `model.blocks`, and the output head, with a LoRALinear; freeze everything
    but the adapters. A head tied to the token embedding shares its update with it, so the vocabulary's
    statistics can move too (PEFT's LoRA on `embed_tokens` and `lm_head`, as one matrix). With `embeddings`,
    the token embedding, the head and the norms' gains train whole instead (LongLoRA's LoRA+, Chen et al.
    2024, sec. 3.2, for a target whose token statistics differ from the base's)."""
    if rank < 1:
        raise ConfigError(f"LoRA rank {rank} must be >= 1", "e.g. --rank 8")
    if "lora_rank" not in {f.name for f in dataclasses.fields(model.config)}:  # the configs that declare adapters
        raise ConfigError(f"the {model.family} family has no adapter layers", "fine-tune it with --method full")
    targets = [(parent, name, child) for parent in model.blocks.modules()
               for name, child in parent.named_children() if type(child) is nn.Linear]
    for parent, name, child in targets:
        setattr(parent, name, LoRALinear(child, rank, alpha))
    head = model.head
    if not embeddings and type(head) is nn.Linear:
        # the output head too; tied to the token embedding, its adapter updates both (GPT.embed reads it)
        model.head = LoRALinear(head, rank, alpha)
    for pname, p in model.named_parameters():
        p.requires_grad_(pname.endswith(("lora_A", "lora_B"))
                         or embeddings and (pname.startswith(("wte.", "head.")) or ".norm" in f".{pname}"))
    return model


def merge_lora(model: nn.Module) -> nn.Module:
    """A new model of the same family without adapters, whose weights are W + (alpha / r) B A."""
    state = {}
    for name, module in model.named_modules():
        if isinstance(module, LoRALinear):
            state[f"{name}.weight"] = module.merged_weight().detach()
    if "head.weight" in state and model.config.tie_weights:
        state["wte.weight"] = state["head.weight"]  # one tied matrix: both names must load the merged one
    config = dataclasses.replace(model.config, lora_rank=0, lora_embeddings=False)
    merged = type(model)(config)
    base_state = {k: v for k, v in model.state_dict().items() if not k.endswith(("lora_A", "lora_B"))}
    merged.load_state_dict(base_state | state)
    merged.tokenizer = model.tokenizer
    return merged.to(next(model.parameters()).device).eval()
