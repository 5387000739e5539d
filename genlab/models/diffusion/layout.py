"""Layouts: where the objects a prompt names go, planned from the prompt, and the denoiser grounded on them.

A U-Net that attends to a prompt's tokens learns slowly which attribute belongs to which object and where the
objects go: on the shapes world it drew single objects right (96%) but put two or three objects in the relation
asked no more often than chance (bench/results/shapes_t2i_long.json). Generation in two stages, as in LayoutGPT
(Feng et al., NeurIPS 2023) and LLM-grounded diffusion (Lian et al., TMLR 2024), splits the problem: a planner
samples a layout, the box of each object the prompt names in the order it names them, and the denoiser is
grounded on it, by grounding tokens (GLIGEN, Li et al., CVPR 2023: an object's embedding plus its box's Fourier
features, attended to with the prompt's tokens) and by a map that paints each object's embedding inside its box
at every resolution of the U-Net (a spatial condition, as SpaText and ControlNet add one).

A layout is a tensor (B, K, 4): for each of K slots (present, x, y, r), the centre and half-side of the object's
box as fractions of the image; absent slots are zero and come after the present ones.

The planner has its own prompt transformer (the denoiser's is trained for drawing, not for placing); K slot queries
attend to its token states, so that slot k learns to find the k-th object the prompt names; boxes are then drawn
slot by slot, each given the boxes before it (a relation links neighbours): presence (Bernoulli), half-side (a
categorical over `radii` bins) and centre given the half-side (a categorical over a `grid` x `grid` grid of
cells). It trains by cross-entropy on the data's boxes, given the true earlier boxes (teacher forcing).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from genlab.models.diffusion.unet import PromptEncoder


class BoxEmbedding(nn.Module):
    """(..., 4) slots (present, x, y, r) -> (..., width): Fourier features of the box (as GLIGEN embeds its boxes)
    through an MLP, zero for an absent slot."""

    def __init__(self, width: int, frequencies: int = 8):
        super().__init__()
        self.register_buffer("scales", 2 ** torch.arange(frequencies) * math.pi, persistent=False)
        self.mlp = nn.Sequential(nn.Linear(3 * 2 * frequencies, width), nn.SiLU(), nn.Linear(width, width))

    def forward(self, layout: torch.Tensor) -> torch.Tensor:
        angles = layout[..., 1:, None] * self.scales  # (..., 3, F)
        features = torch.cat([angles.sin(), angles.cos()], -1).flatten(-2)
        return self.mlp(features) * layout[..., :1]


class SlotQueries(nn.Module):
    """K learned queries attending to a prompt's token states: slot k's embedding of the k-th object named. The
    values may be other than the states (`values`: the Grounding's words)."""

    def __init__(self, width: int, slots: int, head_dim: int = 32):
        super().__init__()
        self.queries = nn.Parameter(torch.randn(slots, width) * 0.02)
        self.attend = nn.MultiheadAttention(width, max(1, width // head_dim), batch_first=True)
        self.norm = nn.LayerNorm(width)

    def forward(self, states: torch.Tensor, mask: torch.Tensor, values: torch.Tensor | None = None) -> torch.Tensor:
        queries = self.queries.expand(len(states), -1, -1)
        values = states if values is None else values
        out, _ = self.attend(queries, states, values, key_padding_mask=~mask, need_weights=False)
        return self.norm(queries + out)


def rasterise(layout: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(B, K, 4) layout -> (B, K, height, width) coverage of each present slot's box, anti-aliased: a pixel's
    share of its area inside the box along each axis, multiplied."""
    ys = (torch.arange(height, device=layout.device, dtype=layout.dtype) + 0.5) / height
    xs = (torch.arange(width, device=layout.device, dtype=layout.dtype) + 0.5) / width
    present, x, y, r = (layout[..., i, None] for i in range(4))
    inside_x = ((r - (xs - x).abs()) * width + 0.5).clamp(0, 1)  # (B, K, width)
    inside_y = ((r - (ys - y).abs()) * height + 0.5).clamp(0, 1)
    return inside_y[..., :, None] * inside_x[..., None, :] * present[..., None]


class Grounding(nn.Module):
    """The denoiser's side: each slot's embedding plus its box -> grounding tokens (B, K, width) and their mask
    (present slots); `map` paints them into their boxes.

    A slot's queries find its words through the denoiser's prompt states (which know where each object's words
    are), but what they take is a mix of the words' own frozen embeddings (a linear map of them), not of the states:
    "a red circle" is then about the sum of "red" and "circle" even when no training caption paired them, where a
    mix of contextual states would be a point the network never saw (held-out colours fell to 57% that way)."""

    def __init__(self, width: int, slots: int, d_in: int):
        super().__init__()
        self.slots = SlotQueries(width, slots)
        self.words = nn.Linear(d_in, width)
        self.box = BoxEmbedding(width)

    def forward(self, states: torch.Tensor, mask: torch.Tensor, pieces: torch.Tensor, layout: torch.Tensor):
        tokens = self.slots(states, mask, self.words(pieces)) + self.box(layout)
        return tokens, layout[..., 0] > 0

    @staticmethod
    def map(tokens: torch.Tensor, layout: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """(B, width, height, width): each pixel the sum of the tokens of the boxes that cover it."""
        return torch.einsum("bkhw,bkc->bchw", rasterise(layout, height, width), tokens)


class LayoutPlanner(nn.Module):
    """Prompt pieces (B, L, d_in) -> layouts: `loss` against the data's, `sample` new ones."""

    def __init__(self, d_in: int, width: int, layers: int, length: int, slots: int, grid: int = 16,
                 radii: int = 16, max_radius: float = 0.5):
        super().__init__()
        self.slots, self.grid, self.radii, self.max_radius = slots, grid, radii, max_radius
        self.prompt = PromptEncoder(d_in, width, layers, length)
        self.queries = SlotQueries(width, slots)
        self.box = BoxEmbedding(width)
        self.trunk = nn.Sequential(nn.LayerNorm(3 * width), nn.Linear(3 * width, 2 * width), nn.GELU(),
                                   nn.Linear(2 * width, width))
        self.present = nn.Linear(width, 1)
        self.radius = nn.Linear(width, radii)
        self.radius_embed = nn.Embedding(radii, width)
        self.centre = nn.Sequential(nn.GELU(), nn.Linear(width, grid * grid))

    def _features(self, slots: torch.Tensor, layout: torch.Tensor) -> torch.Tensor:
        """Each slot's features given the boxes before it: its own embedding, the box just before it, and the
        mean of the boxes before that one."""
        boxes = self.box(layout)  # (B, K, w)
        previous = F.pad(boxes, (0, 0, 1, 0))[:, :-1]
        count = (torch.arange(boxes.shape[1], device=boxes.device) - 1).clamp_min(1)  # boxes before the previous
        earlier = F.pad(boxes.cumsum(1), (0, 0, 2, 0))[:, :-2] / count[:, None]
        return self.trunk(torch.cat([slots, previous, earlier], -1))

    def _bins(self, layout: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Each slot's half-side bin and centre cell."""
        radius = (layout[..., 3] / self.max_radius * self.radii).long().clamp(0, self.radii - 1)
        x, y = ((layout[..., i] * self.grid).long().clamp(0, self.grid - 1) for i in (1, 2))
        return radius, y * self.grid + x

    def loss(self, pieces: torch.Tensor, layout: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of the data's layouts (nats per slot): presence of every slot, the half-side and centre of
        the present ones."""
        states, mask, _ = self.prompt(pieces)
        h = self._features(self.queries(states, mask), layout)
        present = layout[..., 0] > 0
        loss = F.binary_cross_entropy_with_logits(self.present(h).squeeze(-1), present.float())
        if present.any():
            radius, cell = self._bins(layout)
            h, radius, cell = h[present], radius[present], cell[present]
            loss = loss + F.cross_entropy(self.radius(h), radius)
            loss = loss + F.cross_entropy(self.centre(h + self.radius_embed(radius)), cell)
        return loss

    @torch.no_grad()
    def sample(self, pieces: torch.Tensor, gap: float = -math.inf, temperature: float = 1.0,
               generator: torch.Generator | list[torch.Generator] | None = None, tries: int = 32) -> torch.Tensor:
        """Layouts (B, K, 4) for prompt pieces: slot by slot, presence, half-side, then centre; a centre whose box
        comes closer than `gap` to an earlier box of its layout is drawn again (up to `tries` times) when the
        training layouts never did (`gap` is their least gap; -inf lets boxes overlap). The first slot is always
        present: a prompt names something. `generator`: one, or one per row."""
        states, mask, _ = self.prompt(pieces)
        slots = self.queries(states, mask)
        n, k = len(pieces), self.slots
        layout = torch.zeros(n, k, 4, device=pieces.device)
        alive = torch.ones(n, dtype=torch.bool, device=pieces.device)

        def draw(logits: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
            """A category per row; with one generator per row, only `rows` draw (the others get 0), so that what
            a row draws depends on its own generator alone."""
            probs = (logits / temperature).softmax(-1).cpu()
            if isinstance(generator, list):
                wanted = rows.tolist() if rows is not None else [True] * n
                picked = [torch.multinomial(p, 1, generator=g) if w else torch.zeros(1, dtype=torch.long)
                          for p, g, w in zip(probs, generator, wanted, strict=True)]
                return torch.cat(picked).to(logits.device)
            return torch.multinomial(probs, 1, generator=generator).squeeze(-1).to(logits.device)

        def uniform() -> torch.Tensor:
            if isinstance(generator, list):
                return torch.cat([torch.rand(1, generator=g) for g in generator])
            return torch.rand(n, generator=generator)

        for i in range(k):
            h = self._features(slots, layout)[:, i]
            p = self.present(h).squeeze(-1).sigmoid().cpu()
            here = (uniform() < p).to(alive.device) | (i == 0)
            alive = alive & here
            radius = draw(self.radius(h))
            r = (radius.float() + 0.5) / self.radii * self.max_radius
            centre_logits = self.centre(h + self.radius_embed(radius))
            redraw = torch.ones(n, dtype=torch.bool, device=pieces.device)
            x = y = torch.zeros(n, device=pieces.device)
            for _ in range(tries):
                cell = draw(centre_logits, redraw)
                new_x = ((cell % self.grid).float() + 0.5) / self.grid
                new_y = ((cell // self.grid).float() + 0.5) / self.grid
                x, y = torch.where(redraw, new_x, x), torch.where(redraw, new_y, y)
                apart = torch.ones(n, dtype=torch.bool, device=pieces.device)
                for j in range(i):
                    before = layout[:, j]
                    clearance = torch.maximum((x - before[:, 1]).abs(), (y - before[:, 2]).abs()) - r - before[:, 3]
                    apart &= (before[:, 0] == 0) | (clearance >= gap)
                redraw = ~apart
                if not redraw.any():
                    break
            layout[:, i] = torch.stack([alive.float(), x, y, r], -1) * alive[:, None]
        return layout


def layout_tensor(layouts: list[list[tuple[float, float, float]]], slots: int) -> torch.Tensor:
    """(N, slots, 4) layouts from N lists of (x, y, r) boxes, each at most `slots` long: present boxes first."""
    out = torch.zeros(len(layouts), slots, 4)
    rows = [(i, k, 1.0, *box) for i, boxes in enumerate(layouts) for k, box in enumerate(boxes)]
    if rows:
        table = torch.tensor(rows)
        out[table[:, 0].long(), table[:, 1].long()] = table[:, 2:]
    return out


def least_gap(layouts: torch.Tensor) -> float:
    """The least clearance between two boxes of one layout, over (N, K, 4) layouts (the Chebyshev distance of
    their centres less both half-sides; negative when boxes overlap); +inf when no layout has two boxes."""
    present = layouts[..., 0] > 0
    dx = (layouts[:, :, None, 1] - layouts[:, None, :, 1]).abs()
    dy = (layouts[:, :, None, 2] - layouts[:, None, :, 2]).abs()
    clearance = torch.maximum(dx, dy) - layouts[:, :, None, 3] - layouts[:, None, :, 3]
    pair = present[:, :, None] & present[:, None, :] & ~torch.eye(layouts.shape[1], dtype=torch.bool)
    return float(clearance[pair].min()) if pair.any() else math.inf
