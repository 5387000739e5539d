"""A decoder-only transformer language model (GPT; Radford et al. 2018, 2019), sized for a CPU.

Pre-norm blocks (LayerNorm -> causal self-attention -> residual, LayerNorm -> MLP ->
residual; LayerNorm without bias rather than RMSNorm: its fused CPU kernel is 5-9x faster) over token embeddings, with rotary positions (RoPE, Su et al. 2021) or
learned ones, a final norm, and the output head tied to the token embedding (Press &
Wolf 2017). Attention goes through the fused `scaled_dot_product_attention`. For
generation a KV cache holds each layer's keys and values, so a new token costs one
token's worth of compute; `genlab.generation` slides the window when the context fills. At that
size a step is bound by per-operation overhead rather than arithmetic, so `GPT.decode` writes the
one-token step with few, 2-D operations (see there).

Training follows the recent small-model speedruns where they measurably help on a CPU:
Muon for the hidden matrices and AdamW for embeddings and gains (`genlab.optim`),
ReLU^2 in the MLP, a QK-norm before attention, zero-initialised output projections, and
warm-up + cosine decay (`train_defaults`).
"""

from __future__ import annotations

import ctypes
import dataclasses
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from genlab.config import validate
from genlab.errors import ConfigError
from genlab.generation import ONE_THREAD_FLOPS
from genlab.models.lm import LanguageModel, TextConfig


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

    `bernoulli_` spends a Mersenne-Twister draw and a float compare per element (6 ns); here NumPy's SFC64
    fills the bytes 8 at a time (0.3 ns a byte), seeded by one draw from torch's generator, so
    torch.manual_seed and a resumed run's restored RNG state decide the masks as they do any dropout's.
    For 1.6 M elements it took 2.1 ms against nn.Dropout's 12.7."""
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


class KVCache:
    """Each layer's keys and values for one batch of sequences, preallocated to the context length."""

    def __init__(self, n_layer: int, batch: int, n_head: int, length: int, head_dim: int, device, dtype):
        shape = (batch, n_head, length, head_dim)
        # zeros, not empty: one-token decoding attends over the whole buffer with the unwritten positions'
        # weights exactly 0, and 0 x (uninitialised NaN) would be NaN
        self.k = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(n_layer)]
        self.v = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(n_layer)]
        # the same memory as (batch x heads, length, head_dim), for batched products in one-token decoding
        self.k3 = [k.view(batch * n_head, length, head_dim) for k in self.k]
        self.v3 = [v.view(batch * n_head, length, head_dim) for v in self.v]
        self.pos = 0  # tokens held
        self.weights: DecodeWeights | None = None  # the one-token path's weight snapshot (GPT.new_cache)
        self.native: NativeDecoder | None = None  # the compiled one-token path, for one sequence (GPT.new_cache)
        self.token = torch.zeros(1, dtype=torch.long, device=device)  # GPT.step's id, refilled at each token


@dataclasses.dataclass
class DecodeWeights:
    """A GPT's matrices for one-token decoding, transposed to (in, out) and contiguous: a one-row product
    against that layout (BLAS's gemv) runs about twice as fast as against nn.Linear's (out, in).
    LoRA adapters are merged in. A snapshot for one generation: `GPT.new_cache` takes it."""

    blocks: list[tuple[torch.Tensor, ...]]  # per block: norm1, qkv, proj, norm2, fc, mlp proj
    norm: torch.Tensor
    head: torch.Tensor
    qk_maps: torch.Tensor  # (block_size, 2, hs, hs): per position, RoPE as a matrix, times SDPA's scale for q
    # (block_size, 1, block_size, 1): row p is 0 at the positions a query at p sees and -inf past it, so that
    # attention runs over the whole cache buffer (a slice of it costs more than the masked add)
    masks: torch.Tensor
    wte: torch.Tensor  # the token embedding, and the learned positions' (or None): held here because module
    wpe: torch.Tensor | None  # attribute look-ups cost microseconds each at every token
    rope_cos: torch.Tensor | None  # (block_size, hs) RoPE tables as apply_rope takes them, for the C kernel
    rope_sin: torch.Tensor | None


# The compiled decoder runs on one thread: it serves models small enough that torch, too, decodes
# them on one (a token costs about 2 x parameters FLOPs).
NATIVE_MAX_PARAMETERS = ONE_THREAD_FLOPS / 2


class NativeDecoder:
    """`GPT.decode` for one sequence as a single call into genlab/native/gpt_decode.c (the same
    arithmetic): at CPU sizes a torch step is ~80 calls of a few microseconds each, which is most of a
    token's cost. Built by `GPT.new_cache` when the kernel compiled on this machine (genlab.native);
    it reads the snapshot's weights and writes the cache's keys and values in place."""

    def __init__(self, lib, config: GPTConfig, weights: DecodeWeights, cache: KVCache):
        c, pointer = config, ctypes_pointer
        matrices = [t for block in weights.blocks for t in block]
        buffers = [t for pair in zip(cache.k, cache.v) for t in pair]
        self.keep = (weights, cache.k, cache.v)  # the memory the pointers below address
        self.vocab, self.context, hidden = c.vocab_size, c.block_size, c.mlp_ratio * c.n_embd
        self.scratch = torch.empty(lib.gpt_decode_scratch(c.n_embd, hidden, c.block_size))
        self.fn = lib.gpt_decode_step
        self.args = (ctypes.c_int(c.n_layer), ctypes.c_int(c.n_embd), ctypes.c_int(c.n_head), ctypes.c_int(hidden),
                     ctypes.c_int(c.block_size), ctypes.c_int(c.vocab_size), ctypes.c_int(int(c.qk_norm)),
                     ctypes.c_int(0 if c.activation == "relu2" else 1), ctypes.c_float(1e-5),
                     ctypes.c_float(c.logit_softcap), pointer(weights.wte), pointer(weights.wpe),
                     pointer(weights.rope_cos), pointer(weights.rope_sin),
                     (ctypes.c_void_p * len(matrices))(*[t.data_ptr() for t in matrices]),
                     (ctypes.c_void_p * len(buffers))(*[t.data_ptr() for t in buffers]),
                     pointer(weights.norm), pointer(weights.head), pointer(self.scratch))

    @staticmethod
    def usable(weights: DecodeWeights, batch: int) -> bool:
        tensors = [weights.wte, weights.norm, weights.head, *(t for block in weights.blocks for t in block)]
        return batch == 1 and all(t.device.type == "cpu" and t.dtype == torch.float32 and t.is_contiguous()
                                  for t in tensors)

    def __call__(self, token: int, cache: KVCache) -> torch.Tensor:
        """(V,) next-token logits after `token` at the cache's position; advances the cache."""
        if not 0 <= token < self.vocab:
            raise ValueError(f"token id {token} is outside the vocabulary of {self.vocab}")
        logits = torch.empty(self.vocab)  # a new tensor each token: callers may keep the last one
        if self.fn(token, cache.pos, *self.args, ctypes_pointer(logits)):
            raise ValueError(f"{cache.pos + 1} tokens exceed the context of {self.context}")
        cache.pos += 1
        return logits


def ctypes_pointer(t: torch.Tensor | None) -> ctypes.c_void_p:
    """A tensor's memory as a C pointer (NULL for None)."""
    return ctypes.c_void_p(t.data_ptr() if t is not None else None)


def native_library():
    """genlab/native/gpt_decode.c, compiled and typed; None where it cannot be built (genlab.native)."""
    from genlab import native

    lib = native.library("gpt_decode")
    if lib is not None and not getattr(lib, "genlab_typed", False):
        i, f, p = ctypes.c_int, ctypes.c_float, ctypes.c_void_p
        lib.gpt_decode_scratch.argtypes, lib.gpt_decode_scratch.restype = [i, i, i], i
        lib.gpt_decode_step.argtypes = [i] * 10 + [f, f] + [p] * 10
        lib.gpt_decode_step.restype = i
        lib.genlab_typed = True
    return lib


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
            # CPU flash attention is 2x slower in bf16 than in fp32, forward and backward (14.8 against 7.4 ms a
            # layer at 16 x 128 tokens, 4 heads of 48): under bf16 autocast the attention alone runs in fp32
            with torch.autocast("cpu", enabled=False):
                y = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), is_causal=causal, dropout_p=dropout_p)
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
    block_size: int = 128  # context length
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    mlp_ratio: int = 4
    activation: Literal["relu2", "gelu"] = "relu2"
    positions: Literal["rope", "learned"] = "rope"
    qk_norm: bool = True
    tie_weights: bool = True
    # > 0: logits = cap * tanh(logits / cap) (Gemma 2; modded-nanoGPT). Off: at the benchmark's 90.9 s budget a cap
    # of 30 gave 1.701 nats/char against 1.688 without (and an untied head 1.693)
    logit_softcap: float = 0.0
    dropout: float = 0.0  # on the embedding and on each block's two residual branches
    # on the attention weights too (nanoGPT's recipe): on a CPU it costs the fused attention kernel (the
    # weights must be materialised): 0.161 against 0.137 s a step of the 4 x 192 benchmark model in bf16
    attn_dropout: float = 0.0
    optimizer: Literal["muon", "adamw"] = "muon"  # muon: Muon for hidden matrices, AdamW for the rest
    muon_lr_ratio: float = 10.0  # Muon's LR as a multiple of --lr (its updates have unit spectral norm)
    # > 0: LoRA adapters on every attention and MLP matrix and on the head tied to the token embedding (which
    # then takes the same low-rank update), base weights frozen (fine-tuning)
    lora_rank: int = 0
    lora_alpha: float = 16.0
    lora_embeddings: bool = False  # with lora_rank: the token embedding, head and norms' gains train whole (LoRA+)

    def __post_init__(self):
        validate(self)
        if self.n_embd % self.n_head or (self.n_embd // self.n_head) % 2:
            raise ConfigError(f"n_embd = {self.n_embd} must split into {self.n_head} heads of even size",
                              "e.g. --model.n-embd 128 --model.n-head 4")
        if self.block_size < 2 or self.n_layer < 1:
            raise ConfigError("block_size must be >= 2 and n_layer >= 1")


class GPT(LanguageModel):
    """Decoder-only transformer; char-level by default, --tokenizer bpe --vocab-size 4096 for larger corpora."""

    family = "gpt"
    Config = GPTConfig
    # precision auto: bf16 autocast where this CPU multiplies bf16 fast (genlab.hardware), fp32 elsewhere
    train_defaults = {**LanguageModel.train_defaults, "lr": 3e-3, "warmup_steps": 100, "betas": (0.9, 0.95),
                      "precision": "auto"}
    # At a fixed wall-clock the trade is size against steps: the learning rates, warm-up, batch, depth
    # and width decide how far training gets. Ranges are centred on the defaults; dropout is left out
    # (short budgets underfit; add it with --space for long runs).
    search_space = {"train.lr": {"low": 1.5e-3, "high": 6e-3, "log": True},
                    "train.batch_size": {"choices": [16, 32, 64]},
                    "train.warmup_steps": {"low": 0, "high": 150, "step": 25},
                    "model.n_layer": {"low": 3, "high": 5},
                    "model.n_embd": {"choices": [96, 128, 192]},
                    "model.muon_lr_ratio": {"low": 5.0, "high": 20.0, "log": True}}

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
            from genlab.finetune import add_lora

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
        return self._cap(self.head(self.norm(x)))

    def embed(self, idx: torch.Tensor) -> torch.Tensor:
        """Token embeddings. With a LoRA adapter on the head tied to the embedding (plain LoRA fine-tuning),
        the embedding takes the same low-rank update: E + s B A is one matrix, read at both ends."""
        x = self.wte(idx)
        adapter = self._tied_adapter()
        if adapter is not None:
            x = x + F.embedding(idx, adapter.lora_B) @ adapter.lora_A * adapter.scale
        return x

    def _tied_adapter(self) -> nn.Module | None:
        """The head when it is a LoRA adapter (genlab.finetune.LoRALinear) over the token embedding's weight."""
        head = self.head
        return head if hasattr(head, "lora_B") and head.weight is self.wte.weight else None

    def _cap(self, logits: torch.Tensor) -> torch.Tensor:
        cap = self.config.logit_softcap
        return torch.tanh(logits / cap) * cap if cap > 0 else logits

    def logits(self, idx: torch.Tensor) -> torch.Tensor:
        return self(idx)

    def new_cache(self, batch: int = 1) -> KVCache:
        c, weight = self.config, self.wte.weight
        cache = KVCache(c.n_layer, batch, c.n_head, c.block_size, c.n_embd // c.n_head, weight.device, weight.dtype)
        cache.weights = self._decode_weights()
        if self.num_parameters() <= NATIVE_MAX_PARAMETERS and NativeDecoder.usable(cache.weights, batch):
            lib = native_library()
            if lib is not None:
                cache.native = NativeDecoder(lib, c, cache.weights, cache)
        return cache

    @torch.no_grad()
    def _decode_weights(self) -> DecodeWeights:
        """The snapshot for `decode`, rebuilt only when a parameter changed (in-place updates bump a
        tensor's version; new parameter objects change the ids): a sliding window re-prefills every
        half context, and re-transposing each time cost ~5% of generation."""
        stamp = tuple((id(p), p._version) for p in self.parameters())
        held = getattr(self, "_decode_snapshot", None)
        if held is not None and held[0] == stamp and held[1].head.device == self.wte.weight.device:
            return held[1]

        def t(linear: nn.Linear) -> torch.Tensor:
            weight = linear.merged_weight() if hasattr(linear, "merged_weight") else linear.weight
            return weight.detach().t().contiguous()

        blocks = [(b.norm1.weight.detach(), t(b.attn.qkv), t(b.attn.proj), b.norm2.weight.detach(), t(b.mlp.fc),
                   t(b.mlp.proj))
                  for b in self.blocks]
        length = self.config.block_size
        masks = torch.full((length, length), float("-inf"), device=self.wte.weight.device).triu(1)
        rope = self.wpe is None
        weights = DecodeWeights(blocks, self.norm.weight.detach(), t(self.head), self._position_maps(),
                                masks.view(length, 1, length, 1), self.embedding_weight().detach(),
                                None if rope else self.wpe.weight.detach(),
                                self.cos[:, 0, 0].contiguous() if rope else None,
                                self.sin[:, 0, 0].contiguous() if rope else None)
        self._decode_snapshot = (stamp, weights)
        return weights

    def embedding_weight(self) -> torch.Tensor:
        """The token embedding as `embed` reads it: with a LoRA adapter on the tied head, merged."""
        adapter = self._tied_adapter()
        return adapter.merged_weight() if adapter is not None else self.wte.weight

    def _position_maps(self) -> torch.Tensor:
        """RoPE at each position as one (hs, hs) matrix, R[j, j] = cos_j and R[(j + hs/2) % hs, j] =
        signed sin_j (so x @ R == apply_rope(x)); q's also carries 1/sqrt(hs). One small product then
        rotates and scales q and k of a token; learned positions need the scale only."""
        c = self.config
        hs = c.n_embd // c.n_head
        eye = torch.eye(hs, device=self.cos.device)
        if self.wpe is None:
            cos, sin = self.cos[:, 0, 0], self.sin[:, 0, 0]  # (T, hs)
            maps = torch.diag_embed(cos) + eye.roll(hs // 2, dims=0) * sin[:, None, :]
        else:
            maps = eye.expand(c.block_size, hs, hs)
        return torch.stack([maps * hs**-0.5, maps], dim=1).contiguous()

    def decode(self, tokens: torch.Tensor, cache: KVCache) -> torch.Tensor:
        """(B,) ids continuing the cached tokens -> (B, V) next-token logits. The same computation as
        `forward(tokens[:, None], cache)`, written for one position, where per-operation cost is most
        of a step: 2-D products against the cache's transposed weights, RoPE and q's scale as one small
        product, single-query attention as two over the whole cache buffer (the positions not yet
        written masked to -inf in the first, a fused add: cheaper than slicing the buffer), and torch's
        built-ins and tensor methods rather than the functional wrappers, slice syntax and module
        attribute look-ups (each a few microseconds of Python). For one sequence on a CPU, where the
        kernel compiled, the whole step is instead one call into C (`NativeDecoder`)."""
        if cache.native is not None and len(tokens) == 1:
            return cache.native(int(tokens[0]), cache)[None]
        return self.decode_torch(tokens, cache)

    def decode_torch(self, tokens: torch.Tensor, cache: KVCache) -> torch.Tensor:
        """`decode` in torch operations: any batch, device and dtype (the compiled path's reference)."""
        c, pos, w = self.config, cache.pos, cache.weights
        if pos >= c.block_size:
            raise ValueError(f"{pos + 1} tokens exceed the context of {c.block_size}")
        B, C, nh, hs = len(tokens), c.n_embd, c.n_head, c.n_embd // c.n_head
        x = torch.embedding(w.wte, tokens)  # (B, C)
        if w.wpe is not None:
            x = x + w.wpe[pos]
        qk_map, mask = w.qk_maps[pos], w.masks[pos]  # (2, hs, hs), (1, T, 1)
        relu2 = c.activation == "relu2"
        for k, v, k3, v3, (norm1, qkv_w, proj_w, norm2, fc_w, out_w) in zip(cache.k, cache.v, cache.k3, cache.v3,
                                                                             w.blocks, strict=True):
            qkv = torch.mm(torch.layer_norm(x, (C,), norm1), qkv_w).view(B, 3, nh, hs)
            qk = qkv.narrow(1, 0, 2)
            if c.qk_norm:
                qk = torch.layer_norm(qk, (hs,))
            qk = torch.bmm(qk.view(2, nh, hs), qk_map) if B == 1 else torch.matmul(qk, qk_map)
            qk = qk.view(B, 2, nh, hs)  # RoPE'd, and q scaled
            k.select(2, pos).copy_(qk.select(1, 1))
            v.select(2, pos).copy_(qkv.select(1, 2))
            scores = torch.baddbmm(mask, k3, qk.select(1, 0).reshape(B * nh, hs, 1))  # (B nh, T, 1), -inf past pos
            y = torch.bmm(scores.softmax(1).transpose(1, 2), v3)  # (B nh, 1, hs)
            x = torch.addmm(x, y.view(B, C), proj_w)  # x + y W
            h = torch.mm(torch.layer_norm(x, (C,), norm2), fc_w)
            h = torch.relu(h).square() if relu2 else F.gelu(h, approximate="tanh")
            x = torch.addmm(x, h, out_w)
        cache.pos = pos + 1
        return self._cap(torch.mm(torch.layer_norm(x, (C,), w.norm), w.head))

    def prefill(self, ids: torch.Tensor) -> tuple[torch.Tensor, KVCache]:
        cache = self.new_cache(len(ids))
        return self(ids, cache)[0, -1], cache

    def step(self, token: int, cache: KVCache) -> tuple[torch.Tensor, KVCache]:
        if cache.native is not None:
            return cache.native(token, cache), cache
        # the cache's (1,) id buffer, refilled: torch.tensor([token]) costs ~20 us a token
        return self.decode_torch(cache.token.fill_(token), cache)[0], cache

    def optimizers(self, train) -> list[torch.optim.Optimizer]:
        """Muon for the blocks' matrices, AdamW (decoupled weight decay) for embeddings, head and gains;
        or AdamW for all, decaying matrices only. Frozen parameters (LoRA's base) are left out."""
        from genlab.optim import MuonAdamW

        params = [(n, p) for n, p in self.named_parameters() if p.requires_grad]
        hidden = [p for n, p in params if n.startswith("blocks.") and p.ndim == 2]
        if self.config.optimizer == "muon" and not self.config.lora_rank:
            other = [p for n, p in params if not (n.startswith("blocks.") and p.ndim == 2)]
            groups = [{"params": hidden, "use_muon": True, "lr": train.lr * self.config.muon_lr_ratio,
                       "weight_decay": train.weight_decay},
                      {"params": other, "lr": train.lr, "betas": train.betas, "weight_decay": 0.0}]
            return [MuonAdamW([g for g in groups if g["params"]])]
        decay = [p for n, p in params if p.ndim >= 2]
        rest = [p for n, p in params if p.ndim < 2]
        groups = [{"params": decay, "weight_decay": train.weight_decay}, {"params": rest, "weight_decay": 0.0}]
        return [torch.optim.AdamW([g for g in groups if g["params"]], lr=train.lr, betas=train.betas)]
