"""The GPT's one-token decoding path, kept apart from its definition (gpt.py).

`GPT.forward(ids, cache)` is the reference for any number of new tokens; a prefill runs it. A
generated token needs one position, where the cost of a step is per-operation overhead rather
than arithmetic, so it has two faster paths that compute the same:

- `decode_torch`: the step in few, 2-D torch operations against a snapshot of the weights
  transposed to (in, out) (`DecodeWeights`), for any batch, device and dtype;
- `NativeDecoder`: for one sequence in float32 on a CPU, the whole step as one call into
  genlab/native/gpt_decode.c, whose model description is the named structure `NativeModel`.

`new_cache` builds the KV cache and picks the path; `decode_step` takes one step on it. The
tests hold all three together.
"""

from __future__ import annotations

import ctypes
import dataclasses
import weakref
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from genlab.models.lm.generation import ONE_THREAD_FLOPS
from genlab.models.lm.lora import LoRALinear

if TYPE_CHECKING:
    from genlab.models.lm.gpt import GPT

# The compiled decoder runs on one thread: it serves models small enough that torch, too, decodes
# them on one (a token costs about 2 x parameters FLOPs).
NATIVE_MAX_PARAMETERS = ONE_THREAD_FLOPS / 2


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
        self.weights: DecodeWeights | None = None  # the one-token path's weight snapshot (new_cache)
        self.native: NativeDecoder | None = None  # the compiled one-token path, for one sequence (new_cache)
        self.token = torch.zeros(1, dtype=torch.long, device=device)  # GPT.step's id, refilled at each token

    def row(self, b: int) -> KVCache:
        """Row b of this cache as a cache of one sequence (views of the same memory, empty): a prefill into it
        fills that row of a batch whose sequences sit at different positions (`decode_rows`)."""
        one = KVCache.__new__(KVCache)
        one.k, one.v = [k[b : b + 1] for k in self.k], [v[b : b + 1] for v in self.v]
        one.k3 = one.v3 = None
        one.pos, one.weights, one.native, one.token = 0, self.weights, None, self.token
        return one

    def move(self, source: int, target: int) -> None:
        """Copy row `source`'s keys and values over row `target` (a batch closing the gap a finished sequence
        left)."""
        for k, v in zip(self.k, self.v, strict=True):
            k[target].copy_(k[source])
            v[target].copy_(v[source])


@dataclasses.dataclass
class DecodeWeights:
    """A GPT's matrices for one-token decoding, transposed to (in, out) and contiguous: a one-row product
    against that layout (BLAS's gemv) runs about twice as fast as against nn.Linear's (out, in).
    LoRA adapters are merged in."""

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


_snapshots: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


@torch.no_grad()
def decode_weights(model: GPT) -> DecodeWeights:
    """The snapshot for one-token decoding, rebuilt only when a parameter changed (in-place updates bump a
    tensor's version; new parameter objects change the ids): a sliding window re-prefills every half
    context, and re-transposing the weights each time is a measurable share of generation."""
    stamp = tuple((id(p), p._version) for p in model.parameters())
    held = _snapshots.get(model)
    if held is not None and held[0] == stamp and held[1].head.device == model.wte.weight.device:
        return held[1]

    def t(linear: nn.Linear) -> torch.Tensor:
        weight = linear.merged_weight() if isinstance(linear, LoRALinear) else linear.weight
        return weight.detach().t().contiguous()

    blocks = [(b.norm1.weight.detach(), t(b.attn.qkv), t(b.attn.proj), b.norm2.weight.detach(), t(b.mlp.fc),
               t(b.mlp.proj))
              for b in model.blocks]
    length = model.config.block_size
    masks = torch.full((length, length), float("-inf"), device=model.wte.weight.device).triu(1)
    rope = model.wpe is None
    weights = DecodeWeights(blocks, model.norm.weight.detach(), t(model.head), position_maps(model),
                            masks.view(length, 1, length, 1), model.embedding_weight().detach(),
                            None if rope else model.wpe.weight.detach(),
                            model.cos[:, 0, 0].contiguous() if rope else None,
                            model.sin[:, 0, 0].contiguous() if rope else None)
    _snapshots[model] = (stamp, weights)
    return weights


def position_maps(model: GPT) -> torch.Tensor:
    """RoPE at each position as one (hs, hs) matrix, R[j, j] = cos_j and R[(j + hs/2) % hs, j] =
    signed sin_j (so x @ R == apply_rope(x)); q's also carries 1/sqrt(hs). One small product then
    rotates and scales q and k of a token; learned positions need the scale only."""
    c = model.config
    hs = c.n_embd // c.n_head
    eye = torch.eye(hs, device=model.cos.device)
    if model.wpe is None:
        cos, sin = model.cos[:, 0, 0], model.sin[:, 0, 0]  # (T, hs)
        maps = torch.diag_embed(cos) + eye.roll(hs // 2, dims=0) * sin[:, None, :]
    else:
        maps = eye.expand(c.block_size, hs, hs)
    return torch.stack([maps * hs**-0.5, maps], dim=1).contiguous()


def new_cache(model: GPT, batch: int = 1) -> KVCache:
    """An empty KV cache for `batch` sequences, with the weight snapshot and, where it applies, the C kernel."""
    c, weight = model.config, model.wte.weight
    cache = KVCache(c.n_layer, batch, c.n_head, c.block_size, c.n_embd // c.n_head, weight.device, weight.dtype)
    cache.weights = decode_weights(model)
    if model.num_parameters() <= NATIVE_MAX_PARAMETERS and NativeDecoder.usable(cache.weights, batch):
        lib = native_library()
        if lib is not None:
            cache.native = NativeDecoder(lib, c, cache.weights, cache)
    return cache


def decode_step(model: GPT, tokens: torch.Tensor, cache: KVCache) -> torch.Tensor:
    """(B,) ids continuing the cached tokens -> (B, V) next-token logits: the C kernel for one sequence where
    it compiled, else `decode_torch`."""
    if cache.native is not None and len(tokens) == 1:
        return cache.native(int(tokens[0]), cache)[None]
    return decode_torch(model, tokens, cache)


def decode_torch(model: GPT, tokens: torch.Tensor, cache: KVCache) -> torch.Tensor:
    """`forward(tokens[:, None], cache)` written for one position: 2-D products against the snapshot's
    transposed weights, RoPE and q's scale as one small product, single-query attention as two products over
    the whole cache buffer (the positions not yet written masked to -inf in the first, a fused add: cheaper
    than slicing the buffer), and torch's built-ins and tensor methods rather than the functional wrappers,
    slice syntax and module attribute look-ups (each a few microseconds of Python)."""
    from genlab.models.lm.gpt import softcap

    c, pos, w = model.config, cache.pos, cache.weights
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
    return softcap(torch.mm(torch.layer_norm(x, (C,), w.norm), w.head), c.logit_softcap)


def decode_rows(model: GPT, tokens: torch.Tensor, positions: torch.Tensor, cache: KVCache) -> torch.Tensor:
    """`decode_torch` for rows 0..B-1 of a batch cache whose sequences sit at different positions (continuous
    batching: genlab.serve.batching): row b's token goes to position positions[b] of cache row b and attends to
    that row's first positions[b] + 1 entries. (B,) ids and positions -> (B, V) next-token logits; the caller
    advances the positions."""
    from genlab.models.lm.gpt import softcap

    c, w = model.config, cache.weights
    B, C, nh, hs, T = len(tokens), c.n_embd, c.n_head, c.n_embd // c.n_head, c.block_size
    if int(positions.max()) >= T:
        raise ValueError(f"{int(positions.max()) + 1} tokens exceed the context of {T}")
    rows = torch.arange(B, device=tokens.device)
    x = torch.embedding(w.wte, tokens)  # (B, C)
    if w.wpe is not None:
        x = x + w.wpe[positions]
    qk_map = w.qk_maps[positions]  # (B, 2, hs, hs): each row's RoPE, q's scale
    mask = w.masks[positions].expand(B, nh, T, 1).reshape(B * nh, T, 1)  # -inf past each row's position
    relu2 = c.activation == "relu2"
    for k_all, v_all, (norm1, qkv_w, proj_w, norm2, fc_w, out_w) in zip(cache.k, cache.v, w.blocks, strict=True):
        k, v = k_all[:B], v_all[:B]  # the batch's rows (B, nh, T, hs): contiguous views
        qkv = torch.mm(torch.layer_norm(x, (C,), norm1), qkv_w).view(B, 3, nh, hs)
        qk = qkv.narrow(1, 0, 2)
        if c.qk_norm:
            qk = torch.layer_norm(qk, (hs,))
        qk = torch.matmul(qk, qk_map)  # (B, 2, nh, hs)
        k[rows, :, positions] = qk.select(1, 1)
        v[rows, :, positions] = qkv.select(1, 2)
        scores = torch.baddbmm(mask, k.view(B * nh, T, hs), qk.select(1, 0).reshape(B * nh, hs, 1))
        y = torch.bmm(scores.softmax(1).transpose(1, 2), v.view(B * nh, T, hs))  # (B nh, 1, hs)
        x = torch.addmm(x, y.view(B, C), proj_w)
        h = torch.mm(torch.layer_norm(x, (C,), norm2), fc_w)
        h = torch.relu(h).square() if relu2 else F.gelu(h, approximate="tanh")
        x = torch.addmm(x, h, out_w)
    return softcap(torch.mm(torch.layer_norm(x, (C,), w.norm), w.head), c.logit_softcap)


# -- the compiled path --------------------------------------------------------------------------


def _pointer(t: torch.Tensor | None) -> ctypes.c_void_p:
    """A tensor's memory as a C pointer (NULL for None)."""
    return ctypes.c_void_p(t.data_ptr() if t is not None else None)


class NativeModel(ctypes.Structure):
    """`gpt_model` of genlab/native/gpt_decode.c, field for field: sizes, options, weight and cache addresses."""

    _fields_ = [(name, ctypes.c_int) for name in ("n_layer", "n_embd", "n_head", "hidden", "context", "vocab",
                                                   "qk_norm", "activation")] + [
        ("eps", ctypes.c_float), ("softcap", ctypes.c_float),
        *[(name, ctypes.c_void_p) for name in ("wte", "wpe", "rope_cos", "rope_sin", "blocks", "caches", "norm_f",
                                               "head", "scratch")]]


class NativeDecoder:
    """One-token decoding of one sequence as a single call into genlab/native/gpt_decode.c (the arithmetic of
    `decode_torch`): at CPU sizes a torch step is ~80 calls of a few microseconds each, which is most of a
    token's cost. It reads the snapshot's weights and writes the cache's keys and values in place."""

    def __init__(self, lib, config, weights: DecodeWeights, cache: KVCache):
        c = config
        matrices = [t for block in weights.blocks for t in block]
        buffers = [t for pair in zip(cache.k, cache.v) for t in pair]
        hidden = c.mlp_ratio * c.n_embd
        self.vocab, self.context = c.vocab_size, c.block_size
        self.scratch = torch.empty(lib.gpt_decode_scratch(c.n_embd, hidden, c.block_size))
        self.block_pointers = (ctypes.c_void_p * len(matrices))(*[t.data_ptr() for t in matrices])
        self.cache_pointers = (ctypes.c_void_p * len(buffers))(*[t.data_ptr() for t in buffers])
        self.keep = (weights, cache.k, cache.v)  # the memory the pointers address
        self.model = NativeModel(
            n_layer=c.n_layer, n_embd=c.n_embd, n_head=c.n_head, hidden=hidden, context=c.block_size,
            vocab=c.vocab_size, qk_norm=int(c.qk_norm), activation=0 if c.activation == "relu2" else 1,
            eps=1e-5, softcap=c.logit_softcap, wte=_pointer(weights.wte), wpe=_pointer(weights.wpe),
            rope_cos=_pointer(weights.rope_cos), rope_sin=_pointer(weights.rope_sin),
            blocks=ctypes.cast(self.block_pointers, ctypes.c_void_p), caches=ctypes.cast(self.cache_pointers,
                                                                                         ctypes.c_void_p),
            norm_f=_pointer(weights.norm), head=_pointer(weights.head), scratch=_pointer(self.scratch))
        self.model_pointer = ctypes.byref(self.model)
        self.fn = lib.gpt_decode_step

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
        if self.fn(self.model_pointer, token, cache.pos, _pointer(logits)):
            raise ValueError(f"{cache.pos + 1} tokens exceed the context of {self.context}")
        cache.pos += 1
        return logits


def native_library():
    """genlab/native/gpt_decode.c, compiled and typed; None where it cannot be built (genlab.native)."""
    from genlab import native

    lib = native.library("gpt_decode")
    if lib is not None and not getattr(lib, "genlab_typed", False):
        lib.gpt_decode_scratch.argtypes = [ctypes.c_int] * 3
        lib.gpt_decode_scratch.restype = ctypes.c_int
        lib.gpt_decode_step.argtypes = [ctypes.POINTER(NativeModel), ctypes.c_int, ctypes.c_int, ctypes.c_void_p]
        lib.gpt_decode_step.restype = ctypes.c_int
        lib.genlab_typed = True
    return lib
