"""A decoder-only transformer language model (GPT; Radford et al. 2018, 2019), sized for a CPU.

Pre-norm blocks (LayerNorm -> causal self-attention -> residual, LayerNorm -> MLP -> residual)
over token embeddings, with rotary positions (RoPE, Su et al. 2021) or learned ones, a final
norm, and the output head tied to the token embedding (Press & Wolf 2017). LayerNorm has no bias
and stands where RMSNorm would: its fused CPU kernel is several times faster (docs/lm.md).
Attention goes through the fused `scaled_dot_product_attention`. For generation a KV cache holds
each layer's keys and values, so a new token costs one token's worth of compute; the one-token
step has its own faster paths in decode.py, and generation.py slides the window when the context
fills.

The architecture follows the recent small-model speedruns where they measurably help on a CPU:
ReLU^2 in the MLP, a QK-norm before attention and zero-initialised output projections; training
(Muon for the hidden matrices, warm-up + cosine decay) is the GPT recipe's (genlab/engine/recipes.py).
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from genlab.errors import ConfigError
from genlab.models.lm.base import LanguageModel, TextConfig
from genlab.models.lm.decode import KVCache, decode_rows, decode_torch, new_cache
from genlab.models.lm.lora import LoRALinear, add_lora


def rope_tables(length: int, head_dim: int, base: float = 10_000.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Per position, cos and signed sin of position * frequency, each (length, head_dim), laid out for
    `apply_rope` (RoFormer eq. 34, GPT-NeoX's half-split pairs): cos(a), cos(a) and -sin(a), sin(a)."""
    freqs = base ** (-torch.arange(0, head_dim, 2).float() / head_dim)
    angles = torch.arange(length).float()[:, None] * freqs[None]
    return angles.cos().repeat(1, 2), torch.cat([-angles.sin(), angles.sin()], dim=1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate the pairs (x_i, x_{i+hs/2}) of the last dim by position-dependent angles: x * cos plus the
    halves swapped times the signed sin (three kernels); the tables broadcast against x's leading dims."""
    return torch.addcmul(x * cos, x.roll(x.shape[-1] // 2, dims=-1), sin)


def dropout(module: nn.Dropout, x: torch.Tensor) -> torch.Tensor:
    """Dropout with `module`'s rate when it is training; otherwise x, without a call (one-token decoding is
    bound by per-operation overhead). On a CPU the mask comes from random bytes (`byte_dropout`)."""
    if not (module.training and module.p > 0):
        return x
    return byte_dropout(x, module.p) if x.device.type == "cpu" else module(x)


def byte_dropout(x: torch.Tensor, p: float) -> torch.Tensor:
    """Inverted dropout on a CPU tensor whose mask is one random byte an element: an element is kept when its
    byte is at least round(256 p), so the rate is p to the nearest 1/256 (0.1 -> 0.1016), and kept ones are
    scaled by 256 / (256 - round(256 p)).

    `bernoulli_` spends a Mersenne-Twister draw and a float compare per element; here NumPy's SFC64 fills
    the bytes 8 at a time, seeded by one draw from torch's generator, so torch.manual_seed and a resumed
    run's restored RNG state decide the masks as they do any dropout's (docs/lm.md has the timings)."""
    cut = round(256 * p)
    if cut >= 256:
        return torch.zeros_like(x)
    n = x.numel()
    seed = int(torch.randint(0, 2**62, ()))
    words = np.random.SFC64(seed).random_raw(-(-n // 8))
    bytes_ = torch.from_numpy(words.view(np.uint8)[:n]).view(x.shape)
    # bytes b >= cut are kept: (b - cut + 1) clamped to [0, 1] is the 0/1 mask, computed in x's dtype
    mask = bytes_.to(x.dtype).sub_(cut - 1).clamp_(0, 1).mul_(256 / (256 - cut))
    return x * mask


class Attention(nn.Module):
    def __init__(self, c: GPTConfig):
        super().__init__()
        self.n_head, self.head_dim = c.n_head, c.n_embd // c.n_head
        self.qkv = nn.Linear(c.n_embd, 3 * c.n_embd, bias=False)
        self.proj = nn.Linear(c.n_embd, c.n_embd, bias=False)
        self.qk_norm = c.qk_norm
        self.dropout = c.attn_dropout

    def forward(self, x: torch.Tensor, cos: torch.Tensor | None, sin: torch.Tensor | None,
                cache: KVCache | None = None, layer: int = 0) -> torch.Tensor:
        B, T, C = x.shape
        qkv = self.qkv(x).view(B, T, 3, self.n_head, self.head_dim)
        qk, v = qkv[:, :, :2], qkv[:, :, 2]  # (B, T, 2, nh, hs), (B, T, nh, hs)
        if self.qk_norm:  # normalising q and k bounds the attention logits, which allows a higher LR
            qk = F.layer_norm(qk, (self.head_dim,))
        if cos is not None:
            qk = apply_rope(qk, cos, sin)  # tables (T, 1, 1, hs): over q/k and heads
        q, k = qk.transpose(1, 3).unbind(2)  # each (B, nh, T, hs)
        v = v.transpose(1, 2)
        causal = T > 1
        if cache is not None:
            if cache.pos and T > 1:
                raise ValueError("the KV cache takes a prefill only when empty")
            end = cache.pos + T
            cache.k[layer][:, :, cache.pos : end] = k
            cache.v[layer][:, :, cache.pos : end] = v
            k, v = cache.k[layer][:, :, :end], cache.v[layer][:, :, :end]
        dropout_p = self.dropout if self.training else 0.0
        if x.device.type == "cpu" and torch.is_autocast_enabled("cpu"):
            # CPU flash attention is slower in bf16 than in fp32, forward and backward (docs/lm.md): under bf16
            # autocast the attention alone runs in fp32
            with torch.autocast("cpu", enabled=False):
                y = F.scaled_dot_product_attention(
                    q.float(), k.float(), v.float(), is_causal=causal, dropout_p=dropout_p
                )
        else:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=causal, dropout_p=dropout_p)
        return self.proj(y.transpose(1, 2).reshape(B, T, C))  # (B, nh, T, hs) -> (B, T, C)


class MLP(nn.Module):
    def __init__(self, c: GPTConfig):
        super().__init__()
        self.fc = nn.Linear(c.n_embd, c.mlp_ratio * c.n_embd, bias=False)
        self.proj = nn.Linear(c.mlp_ratio * c.n_embd, c.n_embd, bias=False)
        self.activation = c.activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc(x)
        h = F.relu(h).square() if self.activation == "relu2" else F.gelu(h, approximate="tanh")
        return self.proj(h)


class Block(nn.Module):
    def __init__(self, c: GPTConfig):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(c.n_embd, bias=False), nn.LayerNorm(c.n_embd, bias=False)
        self.attn, self.mlp = Attention(c), MLP(c)
        self.drop = nn.Dropout(c.dropout)

    def forward(self, x, cos, sin, cache=None, layer=0):
        x = x + dropout(self.drop, self.attn(self.norm1(x), cos, sin, cache, layer))
        return x + dropout(self.drop, self.mlp(self.norm2(x)))


@dataclasses.dataclass(frozen=True)
class GPTConfig(TextConfig):
    block_size: int = 128
    """context length: tokens one forward pass sees"""
    n_layer: int = 4
    """transformer blocks"""
    n_head: int = 4
    """attention heads per block"""
    n_embd: int = 128
    """width of the residual stream"""
    mlp_ratio: int = 4
    """MLP hidden units per residual width"""
    activation: Literal["relu2", "gelu"] = "relu2"
    """MLP activation: ReLU squared (modded-nanoGPT) or GELU"""
    positions: Literal["rope", "learned"] = "rope"
    """rotary position embeddings, or learned absolute ones"""
    qk_norm: bool = True
    """normalise queries and keys per head before attention, which bounds the attention logits"""
    tie_weights: bool = True
    """the output head shares the token embedding's matrix"""
    logit_softcap: float = 0.0
    """> 0: logits = cap * tanh(logits / cap) (Gemma 2; modded-nanoGPT); off by default (docs/lm.md)"""
    dropout: float = 0.0
    """dropout on the embedding and on each block's two residual branches"""
    attn_dropout: float = 0.0
    """dropout on the attention weights too (nanoGPT's recipe); on a CPU it costs the fused attention kernel"""
    optimizer: Literal["muon", "adamw"] = "muon"
    """muon: Muon for the blocks' matrices, AdamW for the rest; adamw: AdamW for all"""
    muon_lr_ratio: float = 10.0
    """Muon's learning rate as a multiple of --lr (its updates have unit spectral norm)"""
    lora_rank: int = 0
    """> 0: LoRA adapters of this rank on every attention and MLP matrix and on the head tied to the token
    embedding, base weights frozen (fine-tuning; genlab finetune sets it)"""
    lora_alpha: float = 16.0
    """LoRA's scale numerator: the update is (alpha / rank) B A"""
    lora_embeddings: bool = False
    """with lora_rank: the token embedding, head and norms' gains train whole (LoRA+)"""

    def __post_init__(self):
        super().__post_init__()
        if self.n_embd % self.n_head or (self.n_embd // self.n_head) % 2:
            raise ConfigError(f"n_embd = {self.n_embd} must split into {self.n_head} heads of even size",
                              "e.g. --model.n-embd 128 --model.n-head 4")
        if self.n_layer < 1 or self.mlp_ratio < 1:
            raise ConfigError("n_layer and mlp_ratio must be >= 1", "e.g. --model.n-layer 4 --model.mlp-ratio 4")
        if not 0 <= self.dropout < 1 or not 0 <= self.attn_dropout < 1:
            raise ConfigError("dropout and attn_dropout must be in [0, 1)", "e.g. --model.dropout 0.1")
        if self.lora_rank < 0:
            raise ConfigError(f"lora_rank = {self.lora_rank} must be >= 0", "e.g. genlab finetune --rank 8")


def softcap(logits: torch.Tensor, cap: float) -> torch.Tensor:
    return torch.tanh(logits / cap) * cap if cap > 0 else logits


class GPT(LanguageModel):
    """Decoder-only transformer; char-level by default, --model.tokenizer bpe for larger corpora."""

    family = "gpt"
    Config = GPTConfig
    VOCABULARY_TENSORS = ("wte.weight", "head.weight")

    def __init__(self, config: GPTConfig):
        super().__init__(config)
        c = config
        self.context_size = c.block_size
        self.wte = nn.Embedding(max(c.vocab_size, 1), c.n_embd)
        self.wpe = nn.Embedding(c.block_size, c.n_embd) if c.positions == "learned" else None
        self.drop = nn.Dropout(c.dropout)
        self.blocks = nn.ModuleList(Block(c) for _ in range(c.n_layer))
        self.norm = nn.LayerNorm(c.n_embd, bias=False)
        self.head = nn.Linear(c.n_embd, max(c.vocab_size, 1), bias=False)
        if c.tie_weights:
            self.head.weight = self.wte.weight
        cos, sin = rope_tables(c.block_size, c.n_embd // c.n_head)  # shaped (T, 1, 1, hs) for (B, T, 2, nh, hs)
        self.register_buffer("cos", cos[:, None, None], persistent=False)
        self.register_buffer("sin", sin[:, None, None], persistent=False)
        self.apply(self._init)
        for block in self.blocks:  # residual branches start as the identity (modded-nanoGPT)
            nn.init.zeros_(block.attn.proj.weight)
            nn.init.zeros_(block.mlp.proj.weight)
        if c.lora_rank:
            add_lora(self, c.lora_rank, c.lora_alpha, c.lora_embeddings)

    @staticmethod
    def _init(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)

    def forward(self, idx: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        """(B, T) ids -> (B, T, V) logits; with a cache, the tokens continue those it holds."""
        B, T = idx.shape
        start = cache.pos if cache is not None else 0
        if start + T > self.config.block_size:
            raise ValueError(f"{start + T} tokens exceed the context of {self.config.block_size}")
        x = self.embed(idx)
        if self.wpe is not None:
            x = x + self.wpe.weight[start : start + T]
            cos = sin = None
        else:
            cos, sin = self.cos[start : start + T], self.sin[start : start + T]
        x = dropout(self.drop, x)
        for i, block in enumerate(self.blocks):
            x = block(x, cos, sin, cache, i)
        if cache is not None:
            cache.pos += T
            x = x[:, -1:]  # generation needs only the last position's logits
        return softcap(self.head(self.norm(x)), self.config.logit_softcap)

    def embed(self, idx: torch.Tensor) -> torch.Tensor:
        """Token embeddings. With a LoRA adapter on the head tied to the embedding (plain LoRA fine-tuning),
        the embedding takes the same low-rank update: E + s B A is one matrix, read at both ends."""
        x = self.wte(idx)
        adapter = self._tied_adapter()
        if adapter is not None:
            x = x + F.embedding(idx, adapter.lora_B) @ adapter.lora_A * adapter.scale
        return x

    def _tied_adapter(self) -> LoRALinear | None:
        """The head when it is a LoRA adapter over the token embedding's weight."""
        head = self.head
        return head if isinstance(head, LoRALinear) and head.weight is self.wte.weight else None

    def logits(self, idx: torch.Tensor) -> torch.Tensor:
        return self(idx)

    def embedding_weight(self) -> torch.Tensor:
        """The token embedding as `embed` reads it: with a LoRA adapter on the tied head, merged."""
        adapter = self._tied_adapter()
        return adapter.merged_weight() if adapter is not None else self.wte.weight

    def new_cache(self, batch: int = 1) -> KVCache:
        return new_cache(self, batch)

    def prefill(self, ids: torch.Tensor) -> tuple[torch.Tensor, KVCache]:
        cache = self.new_cache(len(ids))
        return self(ids, cache)[0, -1], cache

    def step_rows(self, tokens: torch.Tensor, positions: torch.Tensor, cache: KVCache) -> torch.Tensor:
        """One token for each of rows 0..B-1 of a batch cache, each row at its own position (continuous
        batching): (B,) ids and positions -> (B, V) logits."""
        return decode_rows(self, tokens, positions, cache)

    def step(self, token: int, cache: KVCache) -> tuple[torch.Tensor, KVCache]:
        if cache.native is not None:
            return cache.native(token, cache), cache
        # the cache's (1,) id buffer, refilled: torch.tensor([token]) costs tens of microseconds a token
        return decode_torch(self, cache.token.fill_(token), cache)[0], cache
