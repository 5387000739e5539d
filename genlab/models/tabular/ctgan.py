"""CTGAN: a conditional GAN over a table's encoded rows (Xu, Skoularidou, Cuesta-Infante and Veeramachaneni,
"Modeling Tabular Data using Conditional GAN", NeurIPS 2019, section 4).

- **Generator**: noise z and the conditional vector through residual blocks, each Linear + BatchNorm + ReLU
  whose output is concatenated to its input (section 4.4: h1 = h0 (+) ReLU(BN(FC(h0)))), then one linear layer
  to the layout's width; per span of the layout (layout.py) tanh for a scalar and Gumbel-softmax (tau 0.2) for a
  one-hot (a mode, a category, missing or not).
- **Critic** (the paper's discriminator): PacGAN packing (Lin et al. 2018), `pac` rows and their conditional
  vectors judged together as one input, so that it can see a generator that covers few modes; LeakyReLU(0.2)
  and dropout 0.5 after each hidden layer; the WGAN-GP loss (Gulrajani et al. 2017), the penalty taken per
  pack (genlab.models.adversarial.gradient_penalty on the packed inputs: one interpolation weight and one
  gradient norm per pack, as the packed critic is one function of the pack).
- **Conditional vector and training-by-sampling** (section 4.3): a discrete column (a categorical column's
  span; the modes of numeric columns are not conditioned, as in the paper) is picked uniformly, one of its
  categories with probability proportional to log(1 + count), and the conditional vector is that category
  one-hot over all discrete columns' categories. The real rows the critic sees are drawn from those holding
  the same categories (the batch's conditions in another order), and the generator's cross-entropy on the
  conditioned span is added to its loss, so that it learns to honour the condition. Sampling draws the column
  uniformly and the category with its empirical frequency (the counts the layout keeps), so that the rows
  follow the data's distribution; a softmax span of a sample decodes to its largest slot, which for a
  Gumbel-softmax draw is a draw from the generator's categorical.

Defaults are the reference's: a 128-d noise, two blocks of 256 in each network, Adam at 2e-4 with betas
(0.5, 0.9) and weight decay 1e-6 for both players, batches of 500, pac 10 (genlab.engine.recipes).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from genlab.errors import ConfigError
from genlab.models.adversarial import gradient_penalty
from genlab.models.tabular.layout import Span

TAU = 0.2  # Gumbel-softmax temperature of the generator's one-hot spans
GP_WEIGHT = 10.0  # WGAN-GP's lambda


def discrete_spans(spans: list[Span]) -> list[Span]:
    """The spans the conditional vector covers: one per categorical column (its categories, and missing)."""
    return [s for s in spans if s.role == "category"]


def category_counts(layout: Any) -> list[list[int]]:
    """How often each slot of each discrete span occurs in the training table (the layout keeps the counts);
    what sampling draws the conditional vector from."""
    out = []
    for s in discrete_spans(layout.spans):
        col = layout.column(s.column)
        counts = list(col.get("counts", [])) + ([col.get("missing", 0)] if col.get("has_missing") else [])
        out.append(counts if len(counts) == s.width and sum(counts) > 0 else [1] * s.width)
    return out


def check_pac(batch_size: int, pac: int) -> None:
    if batch_size % pac:
        below, above = batch_size // pac * pac, (batch_size // pac + 1) * pac
        raise ConfigError(f"batch size {batch_size} is not a multiple of pac = {pac}: the critic judges {pac} rows "
                          "together (PacGAN)",
                          f"pass --batch-size {above}" + (f" (or {below})" if below else "")
                          + f", or a --model.pac that divides {batch_size}")


def gumbel(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """Standard Gumbel noise, -log(-log(u))."""
    u = torch.rand(shape, generator=generator, device=device).clamp_(1e-10, 1 - 1e-7)
    return -torch.log(-torch.log(u))


def _cumulative(weights: list[np.ndarray]) -> np.ndarray:
    """(D, K) cumulative probabilities of D categoricals padded to K slots: slot k of row d is drawn for u in
    [cum[d, k-1], cum[d, k]); the padding is 2, beyond any u."""
    k = max((len(w) for w in weights), default=1)
    cum = np.full((len(weights), k), 2.0)
    for d, w in enumerate(weights):
        cum[d, : len(w)] = np.cumsum(w / w.sum())
        cum[d, np.flatnonzero(w)[-1] : len(w)] = 1.0  # no rounding gap at the top, and never an empty slot
    return cum


def _padded(spans: list[Span], width: int) -> torch.Tensor:
    """(S, K) the columns of each span, padded to the widest with `width` (a -inf column appended to the output)."""
    k = max((s.width for s in spans), default=1)
    return torch.tensor([list(range(s.start, s.start + s.width)) + [width] * (k - s.width) for s in spans],
                        dtype=torch.long).reshape(len(spans), k)


class ConditionSampler:
    """Training-by-sampling over encoded rows (N, width): conditional vectors and the real rows that match them."""

    def __init__(self, spans: list[Span], rows: torch.Tensor):
        self.rows = rows
        discrete = discrete_spans(spans)
        self.offsets = np.cumsum([0] + [s.width for s in discrete])  # where each span's slots start in the vector
        codes = [rows[:, s.start : s.start + s.width].argmax(1).numpy() for s in discrete]  # (N,) per span
        counts = [np.bincount(c, minlength=s.width) for c, s in zip(codes, discrete, strict=True)]
        self.log_cum = _cumulative([np.log1p(c) for c in counts])
        # rows grouped by the slot they hold: the rows of slot g are by_slot[start[g] : start[g] + count[g]]
        self.by_slot = np.concatenate([np.argsort(c, kind="stable") for c in codes]) if codes else np.zeros(0, int)
        self.count = np.concatenate(counts) if counts else np.zeros(0, int)
        self.start = np.concatenate([d * len(rows) + np.cumsum(c) - c for d, c in enumerate(counts)]) \
            if counts else np.zeros(0, int)

    def conditions(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """n slots of the conditional vector (n,): a discrete span uniformly, a category by log frequency."""
        if len(self.log_cum) == 0:
            return np.full(n, -1)
        span = rng.integers(len(self.log_cum), size=n)
        category = (self.log_cum[span] > rng.random((n, 1))).argmax(1)
        return self.offsets[span] + category

    def batch(self, n: int, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(real rows (n, width), the generator's slots (n,), the real rows' slots (n,)): the real rows hold the
        same conditions as the generator's, in another order (as the reference shuffles them)."""
        fake = self.conditions(n, rng)
        if fake[0] < 0:  # no discrete column: real rows uniformly
            slots = torch.from_numpy(fake)
            return self.rows[torch.from_numpy(rng.integers(len(self.rows), size=n))], slots, slots
        real = fake[rng.permutation(n)]
        index = self.by_slot[self.start[real] + (rng.random(n) * self.count[real]).astype(int)]
        return self.rows[torch.from_numpy(index)], torch.from_numpy(fake), torch.from_numpy(real)


class Residual(nn.Module):
    """CTGAN's generator block: ReLU(BN(FC(x))) concatenated to x."""

    def __init__(self, i: int, o: int):
        super().__init__()
        self.fc, self.bn = nn.Linear(i, o), nn.BatchNorm1d(o)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([F.relu(self.bn(self.fc(x))), x], dim=1)


class CTGAN(nn.Module):
    def __init__(self, spans: list[Span], width: int, counts: list[list[int]], latent_dim: int = 128,
                 hidden: int = 256, depth: int = 2, pac: int = 10):
        super().__init__()
        self.spans, self.latent_dim, self.pac = spans, latent_dim, pac
        discrete = discrete_spans(spans)
        self.cond_width = cond = sum(s.width for s in discrete)
        blocks: list[nn.Module] = []
        for i in range(depth):
            blocks.append(Residual(latent_dim + cond + i * hidden, hidden))
        self.generator = nn.Sequential(*blocks, nn.Linear(latent_dim + cond + depth * hidden, width))
        layers: list[nn.Module] = []
        for a in [pac * (width + cond)] + [hidden] * (depth - 1):
            layers += [nn.Linear(a, hidden), nn.LeakyReLU(0.2), nn.Dropout(0.5)]
        self.discriminator = nn.Sequential(*layers, nn.Linear(hidden, 1))
        # derived from the config (not saved): the columns of each discrete span padded to the widest (the padding
        # points at a -inf column appended to the output), each slot of the conditional vector's discrete span, where
        # each span starts in the vector, and the slots' training frequencies (what sampling draws conditions from)
        self.register_buffer("discrete_index", _padded(discrete, width), persistent=False)
        span_of_slot = [d for d, s in enumerate(discrete) for _ in range(s.width)]
        self.register_buffer("slot_span", torch.tensor(span_of_slot, dtype=torch.long), persistent=False)
        offsets = np.cumsum([0] + [s.width for s in discrete])[:-1]
        self.register_buffer("span_offset", torch.tensor(offsets, dtype=torch.long), persistent=False)
        self.discrete = discrete
        frequency = torch.zeros(len(discrete), max((s.width for s in discrete), default=1))
        for d, c in enumerate(counts):
            frequency[d, : len(c)] = torch.tensor(c, dtype=torch.float) / sum(c)
        self.register_buffer("frequency", frequency, persistent=False)

    # -- the pieces -------------------------------------------------------------------------------

    def condition(self, slots: torch.Tensor) -> torch.Tensor:
        """The conditional vectors (B, cond_width) of slots (B,) (empty without discrete columns)."""
        if not self.cond_width:
            return torch.zeros(len(slots), 0, device=slots.device)
        return F.one_hot(slots, self.cond_width).float()

    def activate(self, out: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """The generator's raw output (B, width) as a row: tanh scalars, Gumbel-softmax one-hot spans."""
        parts = []
        for s in self.spans:
            block = out[:, s.start : s.start + s.width]
            if s.activation == "tanh":
                parts.append(torch.tanh(block))
            else:
                noise = gumbel(tuple(block.shape), generator, out.device)
                parts.append(F.softmax((block + noise) / TAU, dim=1))
        return torch.cat(parts, dim=1)

    def generate(self, slots: torch.Tensor, generator: torch.Generator | None = None) -> tuple[torch.Tensor, ...]:
        """(raw output, rows, conditional vectors) of len(slots) generated rows under their conditions."""
        cond = self.condition(slots)
        z = torch.randn(len(slots), self.latent_dim, generator=generator, device=slots.device)
        out = self.generator(torch.cat([z, cond], dim=1))
        return out, self.activate(out, generator), cond

    def pack(self, x: torch.Tensor) -> torch.Tensor:
        """Rows with their conditional vectors (B, width + cond) -> packs (B / pac, pac (width + cond))."""
        if len(x) % self.pac:
            check_pac(len(x), self.pac)
        return x.reshape(len(x) // self.pac, -1)

    def critic(self, x: torch.Tensor) -> torch.Tensor:
        """The critic's score of each pack (B / pac,) of rows with their conditional vectors (B, width + cond)."""
        return self.discriminator(self.pack(x)).squeeze(1)

    def condition_loss(self, out: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
        """The generator's cross-entropy on each row's conditioned span (raw output `out`), averaged over rows."""
        if not self.cond_width:
            return out.new_zeros(())
        span = self.slot_span[slots]
        padded = torch.cat([out, out.new_full((len(out), 1), float("-inf"))], dim=1)
        logits = padded.gather(1, self.discrete_index[span])  # (B, K): each row's conditioned span, -inf padding
        return F.cross_entropy(logits.float(), slots - self.span_offset[span])

    # -- training --------------------------------------------------------------------------------

    def train_step(self, batch: tuple[torch.Tensor, ...], update) -> dict[str, torch.Tensor]:
        """One critic update on real rows against generated ones under the same conditions, then one generator
        update against the updated critic (the same generated rows, as genlab's image GAN)."""
        real, fake_slots, real_slots = batch
        out, fake, cond = self.generate(fake_slots)
        real_in = torch.cat([real, self.condition(real_slots)], dim=1)
        fake_in = torch.cat([fake, cond], dim=1)  # kept with its graph for the generator's update
        d_real, d_fake = self.critic(torch.cat([real_in, fake_in.detach()])).chunk(2)  # one pass: whole packs each
        penalty = gradient_penalty(self.discriminator, self.pack(real_in), self.pack(fake_in.detach()))
        d_loss = d_fake.mean() - d_real.mean()
        update(d_loss + GP_WEIGHT * penalty, 1)

        self.discriminator.requires_grad_(False)  # the generator's update needs no weight gradients of D
        adversarial = -self.critic(fake_in).mean()
        cond_loss = self.condition_loss(out, fake_slots)
        update(adversarial + cond_loss, 0)
        self.discriminator.requires_grad_(True)
        # "loss" (progress bar) is the critic's: minus its estimate of the Wasserstein distance
        return {"loss": d_loss.detach(), "g_loss": adversarial.detach(), "cond_loss": cond_loss.detach(),
                "gradient_penalty": penalty.detach(), "d_real": d_real.mean().detach(),
                "d_fake": d_fake.mean().detach()}

    def own_slots(self, x: torch.Tensor, span: torch.Tensor) -> torch.Tensor:
        """The slot of the conditional vector each row (B, width) holds in its discrete span `span` (B,)."""
        slots = torch.empty(len(x), dtype=torch.long, device=x.device)
        for d, s in enumerate(self.discrete):
            rows = span == d
            slots[rows] = x[rows, s.start : s.start + s.width].argmax(1) + self.span_offset[d]
        return slots

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Held-out rows (B, width) against as many generated rows under the same conditions (each row's own
        category in a discrete column picked uniformly): the critic's estimate of the Wasserstein distance (`loss`,
        lower is closer) and the generator's cross-entropy on the conditions. What validation logs; training
        goes through `train_step`. A batch that is not a multiple of pac is filled up with its first rows."""
        x = x[torch.arange(-(-len(x) // self.pac) * self.pac, device=x.device) % len(x)]
        if self.cond_width:
            slots = self.own_slots(x, torch.randint(len(self.discrete), (len(x),), device=x.device))
        else:
            slots = torch.zeros(len(x), dtype=torch.long, device=x.device)
        out, fake, cond = self.generate(slots)
        distance = self.critic(torch.cat([x, cond], dim=1)).mean() - self.critic(torch.cat([fake, cond], dim=1)).mean()
        return {"loss": distance, "cond_loss": self.condition_loss(out, slots)}

    # -- using the model ---------------------------------------------------------------------------

    def conditions(self, n: int, generator: torch.Generator | None = None,
                   allowed: dict[int, torch.Tensor] | None = None) -> torch.Tensor:
        """n slots of the conditional vector (n,) with the training table's frequencies: a discrete column
        uniformly, its category by its count (not its log: sampling follows the data). `allowed` (a span's start ->
        (K,) bool, what `--where` permits) conditions every row on the first discrete column it restricts, its
        permitted categories by their counts: the generator's conditional, which rejection then filters."""
        device = self.frequency.device
        if not self.cond_width:
            return torch.zeros(n, dtype=torch.long, device=device)
        restricted = [d for d, s in enumerate(self.discrete) if s.start in (allowed or {})]
        if restricted:
            d = restricted[0]
            mask = torch.zeros(self.frequency.shape[1], device=device)
            mask[: self.discrete[d].width] = allowed[self.discrete[d].start].to(device).float()
            weights = self.frequency[d] * mask
            weights = (weights if weights.sum() > 0 else mask).expand(n, -1)
            span = torch.full((n,), d, dtype=torch.long, device=device)
        else:
            span = torch.randint(len(self.discrete), (n,), generator=generator, device=device)
            weights = self.frequency[span]
        return self.span_offset[span] + torch.multinomial(weights, 1, generator=generator).squeeze(1)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None,
               allowed: dict[int, torch.Tensor] | None = None) -> torch.Tensor:
        """(n, width) rows in the layout, each generated under a condition drawn by `conditions`."""
        return self.generate(self.conditions(n, generator, allowed), generator)[1]

    @torch.no_grad()
    def critic_score(self, x: torch.Tensor) -> torch.Tensor:
        """Minus the critic's score of each row (B,) of encoded rows (B, width): a GAN's anomaly score, higher
        for rows the critic finds less real. The critic judges packs of `pac` rows, so each row is packed with
        itself (repeated pac times), and scored under each discrete column's condition set to its own category,
        the scores averaged over those columns."""
        if len(x) > 4096:  # the packed copies are pac times the rows: a bounded batch at a time
            return torch.cat([self.critic_score(part) for part in x.split(4096)])
        scores = []
        for d in range(max(1, len(self.discrete))):
            slots = self.own_slots(x, torch.full((len(x),), d, device=x.device)) if self.cond_width \
                else torch.zeros(len(x), dtype=torch.long, device=x.device)
            row = torch.cat([x, self.condition(slots)], dim=1)
            scores.append(-self.discriminator(row.repeat(1, self.pac)).squeeze(1))  # (B, pac (width + cond))
        return torch.stack(scores).mean(0)
