"""The denoising U-Net of the diffusion family (Ho et al. 2020; Dhariwal & Nichol 2021).

A time embedding (sinusoidal, then an MLP) plus an optional condition embedding (a
class, or a sentence embedding of a prompt) drives every residual block by FiLM: the
block's second GroupNorm is followed by `(1 + scale) * h + shift` from that embedding
("scale-shift norm" of the improved DDPM). Self-attention runs at the low
resolutions only, where it is cheap. Down-sampling is a stride-2 convolution and
up-sampling nearest-neighbour + 3x3 convolution; skips are concatenated.

Prompts of tokens (`context_dim` > 0): the frozen word-piece embeddings of a prompt pass through a small
transformer trained with the U-Net (`PromptEncoder`), and every attention level attends to its token states
after attending to itself (cross-attention, as the latent diffusion U-Net does: Rombach et al., CVPR 2022); their
masked mean joins the time embedding, as a pooled condition would. Cross-attention is what lets a prompt say
where things go and which attribute belongs to which object, which one pooled vector blurs.

A layout (`layout_slots` > 0; genlab.models.diffusion.layout): the boxes of the objects the prompt names ground the
network, as grounding tokens attended to with the prompt's tokens and as a map of them added at the input of every
level on the way down (zero-initialised, so that a U-Net starts as it would without).

`patch` > 1 folds each patch x patch square of pixels into channels before the first convolution and unfolds
the output the same way (space-to-depth, the invertible first downsampling of Hoogeboom, Heek and Salimans,
"simple diffusion", ICML 2023): the full-resolution levels, where a CPU spends most of its time, run at
1/patch^2 of the pixels. Sizes that patch does not divide are padded (replicating the edge) and cropped back.

CPU speed: most of the cost of a U-Net is the convolutions at full resolution, so
`blocks` can put fewer residual blocks there and more at the coarse levels, where
parameters are cheap; the whole network runs channels-last, which is what oneDNN's
convolutions and PyTorch's GroupNorm kernels are fastest with on a CPU.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10_000.0) -> torch.Tensor:
    """Sinusoidal embeddings of (possibly fractional) timesteps, (B,) -> (B, dim) (Vaswani et al. 2017)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def group_norm(channels: int) -> nn.GroupNorm:
    """Up to 32 groups (Wu & He 2018) of at least 4 channels each; the group count divides the width."""
    groups = next(g for g in range(min(32, max(1, channels // 4)), 0, -1) if channels % g == 0)
    return nn.GroupNorm(groups, channels, eps=1e-6)


class ResBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, emb_dim: int, dropout: float):
        super().__init__()
        self.norm1 = group_norm(c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.emb = nn.Linear(emb_dim, 2 * c_out)
        self.norm2 = group_norm(c_out)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)  # each block starts as the identity (Goyal et al. 2017)
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.emb(emb)[:, :, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        h = self.conv2(self.dropout(F.silu(h)))
        return self.skip(x) + h


class Attention(nn.Module):
    """Multi-head self-attention over the pixels of a feature map, with a residual connection."""

    def __init__(self, channels: int, head_dim: int = 32):
        super().__init__()
        self.heads = max(1, channels // head_dim)
        self.norm = group_norm(channels)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.proj = nn.Linear(channels, channels)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        tokens = self.norm(x).permute(0, 2, 3, 1).reshape(b, h * w, c)  # a view when x is channels-last
        q, k, v = self.qkv(tokens).view(b, h * w, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, h * w, c)
        out = self.proj(out).view(b, h, w, c).permute(0, 3, 1, 2)
        return x + out


class CrossAttention(nn.Module):
    """Multi-head attention from the pixels of a feature map to a prompt's token states, with a residual
    connection; padding tokens are masked out."""

    def __init__(self, channels: int, context_dim: int, head_dim: int = 32):
        super().__init__()
        self.heads = max(1, channels // head_dim)
        self.norm = group_norm(channels)
        self.q = nn.Linear(channels, channels)
        self.kv = nn.Linear(context_dim, 2 * channels)
        self.proj = nn.Linear(channels, channels)
        nn.init.zeros_(self.proj.weight)  # starts as the identity, as every block here does
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor, context: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        d = c // self.heads
        q = self.q(self.norm(x).permute(0, 2, 3, 1).reshape(b, h * w, c)).view(b, h * w, self.heads, d)
        k, v = self.kv(context).view(b, context.shape[1], 2, self.heads, d).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q.transpose(1, 2), k, v, attn_mask=mask[:, None, None, :])
        out = self.proj(out.transpose(1, 2).reshape(b, h * w, c)).view(b, h, w, c).permute(0, 3, 1, 2)
        return x + out


class PromptEncoder(nn.Module):
    """Frozen word-piece embeddings (B, L, d_in), zero at padding -> token states (B, L, width), the mask of real
    tokens (B, L) and their masked mean (B, width): a projection, learned positions and `layers` pre-norm
    transformer encoder layers, trained with the denoiser."""

    def __init__(self, d_in: int, width: int, layers: int, length: int, head_dim: int = 32):
        super().__init__()
        self.proj = nn.Linear(d_in, width)
        self.position = nn.Parameter(torch.randn(length, width) * 0.02)
        layer = nn.TransformerEncoderLayer(width, max(1, width // head_dim), 4 * width, dropout=0.0,
                                           activation="gelu", batch_first=True, norm_first=True)
        self.layers = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)

    def forward(self, pieces: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mask = pieces.abs().amax(-1) > 0
        h = self.proj(pieces) + self.position[: pieces.shape[1]]
        h = self.norm(self.layers(h, src_key_padding_mask=~mask))
        pooled = (h * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp_min(1)
        return h, mask, pooled


class Level(nn.Module):
    """The residual blocks (and attention, and cross-attention to a prompt) of one resolution on one side of
    the U."""

    def __init__(self, c_ins: list[int], c_out: int, emb_dim: int, dropout: float, attention: bool,
                 context_dim: int = 0):
        super().__init__()
        self.blocks = nn.ModuleList(ResBlock(c, c_out, emb_dim, dropout) for c in c_ins)
        self.attns = nn.ModuleList(Attention(c_out) if attention else nn.Identity() for _ in c_ins)
        if attention and context_dim:  # absent otherwise, so that models without prompts keep their weights' names
            self.crosses = nn.ModuleList(CrossAttention(c_out, context_dim) for _ in c_ins)

    def attend(self, i: int, h: torch.Tensor, context: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
        h = self.attns[i](h)
        if context is not None and hasattr(self, "crosses"):
            h = self.crosses[i](h, *context)
        return h


class UNet(nn.Module):
    """eps/v/x0 prediction network: (x_t, t, condition embedding) -> a tensor shaped like x_t.

    widths: channels per resolution level, fine to coarse; blocks: residual blocks per level on
    the way down (the way up has one more, as in the DDPM U-Net); attention: which levels attend.
    cond_dim: the size of a pooled condition vector; or, with `prompt` (d_in, width, layers, length), the
    condition is a prompt's frozen word-piece embeddings (B, L, d_in) and the attention levels attend to them;
    with `layout_slots` too, the condition is (pieces, layout (B, layout_slots, 4)); `objects_only`: the network
    sees the prompt through its objects' grounding tokens alone (the sentence's states only find each object's words).
    """

    def __init__(self, channels: int, widths: tuple[int, ...], blocks: tuple[int, ...], attention: tuple[bool, ...],
                 dropout: float = 0.0, cond_dim: int = 0, patch: int = 1,
                 prompt: tuple[int, int, int, int] | None = None, layout_slots: int = 0, objects_only: bool = False):
        super().__init__()
        self.prompt = PromptEncoder(*prompt) if prompt else None
        context_dim = prompt[1] if prompt else 0
        if layout_slots:
            from genlab.models.diffusion.layout import Grounding

            self.grounding = Grounding(context_dim, layout_slots, prompt[0])
            # the map into each level's input: the stem's width, then each level's
            self.layout_in = nn.ModuleList(nn.Conv2d(context_dim, c, 1) for c in (widths[0], *widths[:-1]))
            for conv in self.layout_in:
                nn.init.zeros_(conv.weight)
                nn.init.zeros_(conv.bias)
            # objects only: a learned token always attended to, so that a layout with no objects (the null condition
            # of guidance) still gives attention a key
            self.blank = nn.Parameter(torch.randn(1, 1, context_dim) * 0.02) if objects_only else None
        cond_dim = context_dim or cond_dim
        self.patch = patch
        channels *= patch * patch
        if not len(widths) == len(blocks) == len(attention):
            raise ValueError("widths, blocks and attention need one entry per level")
        emb_dim = 4 * widths[0]
        self.time_dim = widths[0]
        self.time_mlp = nn.Sequential(nn.Linear(widths[0], emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.cond_proj = (
            nn.Sequential(nn.Linear(cond_dim, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
            if cond_dim
            else None
        )
        self.stem = nn.Conv2d(channels, widths[0], 3, padding=1)

        self.down, self.downsample = nn.ModuleList(), nn.ModuleList()
        skips, c = [widths[0]], widths[0]
        for i, (w, n, attn) in enumerate(zip(widths, blocks, attention)):
            ins = [c] + [w] * (n - 1)
            self.down.append(Level(ins, w, emb_dim, dropout, attn, context_dim))
            skips += [w] * n
            c = w
            last = i == len(widths) - 1
            self.downsample.append(nn.Identity() if last else nn.Conv2d(c, c, 3, stride=2, padding=1))
            if not last:
                skips.append(c)
        self.mid = nn.ModuleList([ResBlock(c, c, emb_dim, dropout), Attention(c), ResBlock(c, c, emb_dim, dropout)])
        if context_dim:
            self.mid_cross = CrossAttention(c, context_dim)

        self.up, self.upsample = nn.ModuleList(), nn.ModuleList()
        for i in reversed(range(len(widths))):
            w, n, attn = widths[i], blocks[i], attention[i]
            ins = []
            for _ in range(n + 1):
                ins.append(c + skips.pop())
                c = w
            self.up.append(Level(ins, w, emb_dim, dropout, attn, context_dim))
            self.upsample.append(nn.Conv2d(c, c, 3, padding=1) if i > 0 else nn.Identity())
        self.out_norm = group_norm(c)
        self.out = nn.Conv2d(c, channels, 3, padding=1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)
        self.to(memory_format=torch.channels_last)

    def embed(self, t: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        emb = self.time_mlp(timestep_embedding(t, self.time_dim))
        if self.cond_proj is not None and cond is not None:
            emb = emb + self.cond_proj(cond)
        return F.silu(emb)  # every block's FiLM projection sees the activated embedding

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond=None) -> torch.Tensor:
        context, layout, grounded = None, None, None
        if isinstance(cond, tuple):
            cond, layout = cond
        if self.prompt is not None and cond is not None:
            pieces = cond
            states, mask, cond = self.prompt(pieces)
            context = (states, mask)
            if layout is not None:
                tokens, present = self.grounding(states, mask, pieces, layout)
                grounded = (tokens, layout)
                if self.blank is not None:  # the objects alone: attended to, and their mean drives FiLM
                    context = (torch.cat([self.blank.expand(len(tokens), -1, -1), tokens], 1),
                               F.pad(present, (1, 0), value=True))
                    cond = (tokens * present[..., None]).sum(1) / present.sum(1, keepdim=True).clamp_min(1)
                else:
                    context = (torch.cat([states, tokens], 1), torch.cat([mask, present], 1))
        emb = self.embed(t, cond)
        size = x.shape[-2:]
        if self.patch > 1:
            x = F.pad(x, (0, -size[1] % self.patch, 0, -size[0] % self.patch), mode="replicate")
            x = F.pixel_unshuffle(x, self.patch)
        h = self.stem(x.contiguous(memory_format=torch.channels_last))
        hs = [h]
        for j, (level, down) in enumerate(zip(self.down, self.downsample)):
            if grounded is not None:
                painted = self.grounding.map(*grounded, *h.shape[-2:])
                h = h + self.layout_in[j](painted.contiguous(memory_format=torch.channels_last))
            for i, block in enumerate(level.blocks):
                h = level.attend(i, block(h, emb), context)
                hs.append(h)
            if not isinstance(down, nn.Identity):
                h = down(h)
                hs.append(h)
        h = self.mid[1](self.mid[0](h, emb))
        if context is not None:
            h = self.mid_cross(h, *context)
        h = self.mid[2](h, emb)
        for level, up in zip(self.up, self.upsample):
            for i, block in enumerate(level.blocks):
                h = level.attend(i, block(torch.cat([h, hs.pop()], dim=1), emb), context)
            if not isinstance(up, nn.Identity):
                target = hs[-1].shape[-2:]  # odd sizes (7 -> 14 -> 28 works; 7 -> 4 -> 7 needs the exact size)
                h = up(F.interpolate(h, size=target, mode="nearest"))
        out = self.out(F.silu(self.out_norm(h)))
        if self.patch > 1:
            out = F.pixel_shuffle(out, self.patch)[..., : size[0], : size[1]]
        return out
