"""A GPT over a table's rows: the chain rule over the columns, p(row) = prod_c p(x_c | x_<c), each column one
token of its own vocabulary (tokens.py), the columns in the table's order.

Autoregressive transformers over a row's fields are how GReaT (Borisov et al., ICLR 2023, a language model
over "column is value" text) and REaLTabFormer (Solatorio and Dupriez 2023) make tables; here each column's
values are the vocabulary itself, so a row is as many tokens as it has columns and nothing is spelt. The
network is genlab's GPT block (genlab.models.lm.gpt: pre-norm, QK-normalised attention, ReLU^2 MLP), with a
learned start vector and a learned embedding per column position in place of RoPE (a column's place is its
identity, not a distance). Position c reads column c-1's token and predicts column c: one output layer over
every column's vocabulary, the other columns' slots masked out, so a column's distribution is a softmax over
its own values alone.

The loss is the exact NLL of the tokens, so the model's likelihood of a row (with tokens.py's bin widths) is a
density, not a bound: the anomaly score needs no sampling. Sampling draws the columns in order with a KV
cache, one position per column.
"""

from __future__ import annotations

from types import SimpleNamespace

import torch
import torch.nn.functional as F
from torch import nn

from genlab.models.lm.decode import KVCache
from genlab.models.lm.gpt import Block

HEAD_DIM = 32


class TabularGPT(nn.Module):
    def __init__(self, vocab: list[int], width: int = 128, depth: int = 3, dropout: float = 0.0):
        super().__init__()
        if width % HEAD_DIM:
            raise ValueError(f"width {width} must be a multiple of {HEAD_DIM}")
        self.vocab, self.width, self.heads = vocab, width, width // HEAD_DIM
        starts = torch.tensor([0] + vocab[:-1]).cumsum(0)
        self.register_buffer("offset", starts, persistent=False)  # column c's tokens are rows offset[c]: ...
        block = SimpleNamespace(n_embd=width, n_head=self.heads, qk_norm=True, attn_dropout=0.0, mlp_ratio=4,
                                activation="relu2", dropout=dropout)
        self.token = nn.Embedding(sum(vocab), width)
        self.start = nn.Parameter(torch.zeros(width))
        self.position = nn.Parameter(torch.randn(len(vocab), width) * 0.02)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(block) for _ in range(depth))
        self.norm = nn.LayerNorm(width, bias=False)
        self.head = nn.Linear(width, sum(vocab))
        mask = torch.full((len(vocab), sum(vocab)), float("-inf"))
        for c, (s, v) in enumerate(zip(starts.tolist(), vocab, strict=True)):
            mask[c, s : s + v] = 0.0
        self.register_buffer("mask", mask, persistent=False)
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, std=0.02)
        nn.init.zeros_(self.head.bias)
        for b in self.blocks:  # residual branches start as the identity, as genlab's GPT
            nn.init.zeros_(b.attn.proj.weight)
            nn.init.zeros_(b.mlp.proj.weight)

    def logits(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, C) tokens (each column's own index) -> (B, C, V) logits, column c's from the columns before it;
        slots of other columns are -inf."""
        B = len(tokens)
        previous = self.token(tokens[:, :-1] + self.offset[:-1])  # (B, C-1, W)
        x = torch.cat([self.start.expand(B, 1, -1), previous], 1) + self.position
        x = self.drop(x)
        for block in self.blocks:
            x = block(x, None, None)
        return self.head(self.norm(x)) + self.mask

    def nll_per_row(self, tokens: torch.Tensor) -> torch.Tensor:
        """-log p(tokens) of each row (B,), in nats."""
        logits = self.logits(tokens)
        return F.cross_entropy(logits.transpose(1, 2), tokens + self.offset, reduction="none").sum(1)

    def forward(self, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
        nll = self.nll_per_row(tokens)
        return {"loss": nll.mean() / len(self.vocab), "nats_per_row": nll.mean()}

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None, temperature: float = 1.0) -> torch.Tensor:
        """(n, C) tokens drawn column by column (ancestral sampling), each position computed once (KV cache)."""
        device = self.start.device
        cache = KVCache(len(self.blocks), n, self.heads, len(self.vocab), HEAD_DIM, device, self.start.dtype)
        out = torch.empty(n, len(self.vocab), dtype=torch.long, device=device)
        x = (self.start + self.position[0]).expand(n, 1, -1)
        for c, (s, v) in enumerate(zip(self.offset.tolist(), self.vocab, strict=True)):
            for i, block in enumerate(self.blocks):
                x = block(x, None, None, cache, i)
            cache.pos += 1
            logits = F.linear(self.norm(x[:, -1]), self.head.weight[s : s + v], self.head.bias[s : s + v])
            probs = torch.softmax(logits / temperature, dim=-1)
            out[:, c] = torch.multinomial(probs, 1, generator=generator)[:, 0]
            if c + 1 < len(self.vocab):
                x = (self.token(out[:, c] + s) + self.position[c + 1])[:, None]
        return out
