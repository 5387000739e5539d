"""The tabular family: synthetic rows of a table, through the layout (layout.py) that turns rows into
floats and back.

`kind` picks the model: `tvae` (tvae.py), `ddpm` (ddpm.py) or `ctgan` (ctgan.py, a two-player game: the engine
runs `train_step`), networks trained on the encoded rows; `gpt` (gpt.py), a transformer over the rows as tokens
(tokens.py); or `copula` (copula.py), a Gaussian copula fitted in closed form (`fit_closed_form`: no training
steps). The layout is fitted to the training table when the model
is built (`config_for_data`) and kept in the config as JSON, so a model folder is its config and its weights.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, ClassVar, Literal

import torch

from genlab.config import validate
from genlab.errors import ConfigError
from genlab.models.base import AnomalyScorer, GenerativeModel, TableSampler, TwoPlayerGame
from genlab.models.tabular.conditions import Conditions
from genlab.models.tabular.copula import GaussianCopula
from genlab.models.tabular.ctgan import CTGAN, category_counts
from genlab.models.tabular.ddpm import TabDDPM
from genlab.models.tabular.gpt import TabularGPT
from genlab.models.tabular.layout import TableLayout, category_slots
from genlab.models.tabular.tokens import decode_numbers, encode_numbers, log_volume, vocabulary
from genlab.models.tabular.tvae import TVAE

MAX_DRAWS_PER_ROW = 1_000  # conditional sampling gives up past this many draws per row asked for ...
MIN_DRAWS = 200_000  # ... or this many in all, whichever is more


@dataclasses.dataclass(frozen=True)
class TabularConfig:
    FROM_DATA: ClassVar[tuple[str, ...]] = ("layout",)

    kind: Literal["tvae", "ddpm", "ctgan", "gpt", "copula"] = "tvae"
    """tvae (a variational autoencoder over the encoded rows, Xu et al. 2019), ddpm (Gaussian and multinomial
    diffusion over them, TabDDPM, Kotelnikov et al. 2023), ctgan (a conditional GAN over them with packing and
    training-by-sampling, Xu et al. 2019; it trains with CTGAN's own defaults: lr 2e-4, betas 0.5 0.9, weight
    decay 1e-6, no gradient clipping, unless given), gpt (a transformer over each row's columns as tokens, the
    chain rule in the table's column order) or copula (a Gaussian copula with the columns' own marginals, fitted
    in closed form)"""
    latent_dim: int = 128
    """size of the latent code"""
    hidden: int | None = None
    """units of each hidden layer (the encoder's and decoder's, the denoiser's, or the generator's and critic's;
    gpt: the residual width, a multiple of 32); default 128 for tvae and gpt, 512 for ddpm (a wider denoiser
    learned faster per second on UCI Adult: docs/tables.md), 256 for ctgan (the reference's)"""
    depth: int = 2
    """hidden layers of the encoder and of the decoder (gpt: transformer blocks)"""
    dropout: float = 0.0
    """gpt: dropout on the embeddings and on each block's residual branches"""
    loss_factor: float = 2.0
    """tvae: weight of the reconstruction term against the KL term (TVAE's reference value)"""
    timesteps: int = 100
    """ddpm: diffusion steps, in training and in sampling"""
    pac: int = 10
    """ctgan: rows the critic judges together (PacGAN); the batch size must be a multiple of it"""
    layout: str = ""
    """the columns and their encoding, as JSON (from the data)"""

    def __post_init__(self):
        validate(self)
        if self.hidden is None:  # the kind's own width, written into the saved config
            object.__setattr__(self, "hidden", {"ddpm": 512, "ctgan": 256}.get(self.kind, 128))
        for name in ("latent_dim", "hidden", "depth", "timesteps", "pac"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} = {getattr(self, name)} must be >= 1", f"e.g. --model.{name} 128")
        if self.kind == "gpt" and self.hidden % 32:
            raise ConfigError(f"hidden = {self.hidden}: the gpt kind's width must be a multiple of 32 (its heads' "
                              "size)", "e.g. --model.hidden 128")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"dropout = {self.dropout} must be in [0, 1)", "e.g. --model.dropout 0.1")


class Tabular(GenerativeModel, TableSampler, AnomalyScorer, TwoPlayerGame):
    family = "tabular"
    Config = TabularConfig
    data_kind: ClassVar[str] = "table"

    def __init__(self, config: TabularConfig):
        super().__init__(config)
        if not config.layout:
            raise ConfigError("a tabular model needs the layout of its table",
                              "train it with genlab train tabular --data TABLE")
        self.layout = TableLayout.from_json(config.layout)
        if config.kind == "copula":
            self.net = GaussianCopula(self.layout.columns)
        elif config.kind == "ddpm":
            self.net = TabDDPM(self.layout.spans, self.layout.width, config.hidden, config.depth, config.timesteps)
        elif config.kind == "gpt":
            self.modelled = [c for c in self.layout.columns if c["kind"] != "id"]
            self.net = TabularGPT([vocabulary(c) for c in self.modelled], config.hidden, config.depth,
                                  config.dropout)
        elif config.kind == "ctgan":
            self.net = CTGAN(self.layout.spans, self.layout.width, category_counts(self.layout), config.latent_dim,
                             config.hidden, config.depth, config.pac)
        else:
            self.net = TVAE(self.layout.spans, self.layout.width, config.latent_dim, config.hidden, config.depth,
                            config.loss_factor)

    @classmethod
    def config_for_data(cls, config: TabularConfig, data: Any) -> TabularConfig:
        if config.layout:  # fine-tuning keeps the encoding it was trained with
            return config
        layout = TableLayout.fit(data, mixtures=config.kind not in ("copula", "gpt"), tokens=config.kind == "gpt")
        return dataclasses.replace(config, layout=layout.to_json())

    def encode_rows(self, frame: Any, seed: int = 0, clip: bool = True) -> torch.Tensor:
        """A DataFrame of the training table's columns as (N, width) floats in the layout (gpt: (N, columns) token
        indices)."""
        self._require_columns(frame)
        if self.config.kind == "gpt":
            return torch.from_numpy(self._tokens(frame)[0])
        return torch.from_numpy(self.layout.encode(frame, seed=seed, clip=clip))

    def _tokens(self, frame: Any) -> tuple[Any, Any]:
        """gpt: (N, C) int64 tokens of the modelled columns, and (N,) the log volume of the numbers' tokens
        (tokens.py: bin widths and tails, nats) that makes their NLL a density."""
        import numpy as np

        numbers = self._numbers(frame)
        tokens = np.zeros((len(frame), len(self.modelled)), dtype=np.int64)
        volume = np.zeros(len(frame))
        for j, col in enumerate(self.modelled):
            if col["kind"] == "categorical":
                tokens[:, j] = category_slots(frame[col["name"]], col)
            else:
                x = numbers[col["name"]]
                tokens[:, j], distance = encode_numbers(x, col)
                volume += log_volume(x, tokens[:, j], distance, col)
        return tokens, volume

    def _require_columns(self, frame: Any) -> None:
        missing = [c["name"] for c in self.layout.columns if c["name"] not in frame.columns]
        if missing:
            raise ConfigError(f"the rows lack the columns {', '.join(missing)}",
                              "pass rows with every column of the table the model was trained on")

    @torch.no_grad()
    def anomaly_score(self, examples: Any, labels: Any = None, score: str = "density") -> torch.Tensor:
        """How unlikely each row is (a DataFrame of the training table's columns), in bits per modelled column,
        (B,). tvae: the negative ELBO, the most likely mode of each value, scalars unclipped so that a value
        outside every mode scores high; ddpm: the negative variational bound (ddpm.py), scalars unclipped as well;
        copula: the negative log density (copula.py); gpt: the negative log density (tokens.py: a value beyond the
        range seen pays a Laplace tail). `score="tail"` (copula): the tail probabilities of its marginals instead,
        COPOD's score (GaussianCopula.tail_nats)."""
        if score not in ("density", "tail"):
            raise ConfigError(f"score {score!r} is not one of density, tail", "e.g. --score tail")
        if score == "tail" and self.config.kind != "copula":
            raise ConfigError(f"a {self.config.kind} model scores by its density; the tail score is the copula's",
                              "train a copula (--model.kind copula) for --score tail, or leave --score out")
        self.eval()
        if self.config.kind == "ctgan":  # not in bits: minus the critic's score, each row packed with itself (ctgan.py)
            return self.net.critic_score(self.encode_rows(examples, clip=False))
        columns = sum(1 for c in self.layout.columns if c["kind"] != "id")
        if self.config.kind == "copula":
            self._require_columns(examples)
            measure = self.net.tail_nats if score == "tail" else lambda *a: -self.net.log_density(*a)
            nats = torch.from_numpy(measure(examples, self._numbers(examples))).float()
        elif self.config.kind == "gpt":
            self._require_columns(examples)
            tokens, volume = self._tokens(examples)
            nats = torch.cat([self.net.nll_per_row(part) for part in torch.from_numpy(tokens).split(4096)])
            nats = nats.double() + torch.from_numpy(volume)
        elif self.config.kind == "ddpm":
            rows = self.encode_rows(examples, clip=False)
            nats = torch.cat([self.net.nll_per_row(part) for part in rows.split(4096)])
        else:
            nats = self.net.elbo_per_row(self.encode_rows(examples, clip=False))
        return (nats / (max(1, columns) * math.log(2))).float()

    def _numbers(self, frame: Any) -> dict[str, Any]:
        """Each numeric or datetime column of `frame` as floats (datetimes as seconds), NaN where missing."""
        from genlab.data.tables import column_numbers

        return {c["name"]: column_numbers(frame[c["name"]], self.layout.column_obj(c["name"]))
                for c in self.layout.columns if c["kind"] in ("numeric", "datetime")}

    def fit_closed_form(self, data: Any, seed: int = 0) -> bool:
        if self.config.kind != "copula":
            return False
        self.net.fit(data.train, self._numbers(data.train), seed=seed)
        return True

    def loss(self, batch: Any, step: int | None = None) -> dict[str, torch.Tensor]:
        return self.net(batch[0])  # ctgan: the critic's distance on held-out rows (validation; it trains by train_step)

    def is_game(self) -> bool:
        return self.config.kind == "ctgan"

    def players(self) -> tuple[torch.nn.Module, torch.nn.Module]:
        return self.net.generator, self.net.discriminator

    def train_step(self, batch: Any, update, step: int) -> dict[str, torch.Tensor]:
        """ctgan: batches of training-by-sampling (real rows, the generator's and the real rows' conditions)."""
        return self.net.train_step(batch, update)

    @torch.no_grad()
    def sample_rows(self, n: int, *, generator: torch.Generator | None = None,
                    where: str | dict[str, Any] | Conditions | None = None) -> Any:
        """n rows as a DataFrame; with `where` ("sex=Female,age>40", or {"sex": "Female"}: conditions.py) every row
        meets the conditions. The copula draws them exactly from its conditional distribution; ddpm denoises
        with the conditioned categories (and the modes that can hold a conditioned range) fixed; ctgan sets its
        conditional vector to a conditioned column's permitted categories (ctgan.py); every kind then
        checks each row and draws again for those that miss (the only mechanism tvae has: rejection sampling),
        and gives up with an error when the model almost never makes such rows. `self.acceptance` is the share of
        drawn rows that met the conditions."""
        if n < 1:
            raise ConfigError(f"n = {n} rows: at least one is needed", "e.g. --n 1000")
        conditions = where if isinstance(where, Conditions) else Conditions.parse(where, self.layout)
        was_training = self.training
        self.eval()
        try:
            if not conditions:
                self.acceptance = 1.0
                return self._draw(n, generator, conditions)
            return self._draw_meeting(n, generator, conditions)
        finally:
            self.train(was_training)

    def _draw(self, n: int, generator: torch.Generator | None, conditions: Conditions) -> Any:
        if self.config.kind == "copula":
            return self.layout.frame(self.net.sample(n, generator, conditions.allowed), n)
        if self.config.kind == "gpt":
            return self._draw_tokens(n, generator)
        extra = {"allowed": self._allowed_slots(conditions)} if self.config.kind in ("ddpm", "ctgan") and conditions \
            else {}
        rows = [self.net.sample(min(4096, n - i), generator, **extra) for i in range(0, n, 4096)]
        return self.layout.decode(torch.cat(rows).cpu().numpy())

    def _draw_tokens(self, n: int, generator: torch.Generator | None) -> Any:
        """gpt: rows of tokens, each number drawn uniformly inside its token's interval."""
        tokens = torch.cat([self.net.sample(min(4096, n - i), generator) for i in range(0, n, 4096)]).cpu().numpy()
        u = torch.rand(n, len(self.modelled), generator=generator, dtype=torch.float64).numpy()
        values = {}
        for j, col in enumerate(self.modelled):
            t = tokens[:, j]
            values[col["name"]] = t if col["kind"] == "categorical" else decode_numbers(t, col, u[:, j])
        return self.layout.frame(values, n)

    def _draw_meeting(self, n: int, generator: torch.Generator | None, conditions: Conditions) -> Any:
        """Draw until n rows meet the conditions, each batch sized by the acceptance so far."""
        import pandas as pd

        kept: list[Any] = []
        met = drawn = 0
        limit = max(MAX_DRAWS_PER_ROW * n, MIN_DRAWS)
        while met < n:
            if drawn >= limit:
                raise ConfigError(f"only {met:,} of {drawn:,} rows this {self.config.kind} model drew met --where "
                                  f"{conditions}: it almost never makes such rows",
                                  "loosen the conditions, or train a copula (--model.kind copula), which draws "
                                  "from its conditional distribution exactly")
            rate = met / drawn if met else (1.0 if not drawn else 1.0 / MAX_DRAWS_PER_ROW)
            batch = int(min(max((n - met) / rate * 1.1, 64), 65_536, limit - drawn))
            frame = self._draw(max(batch, 1), generator, conditions)
            ok = conditions.mask(frame)
            kept.append(frame[ok])
            met, drawn = met + int(ok.sum()), drawn + len(frame)
        self.acceptance = met / drawn
        return pd.concat(kept, ignore_index=True).head(n)

    def _allowed_slots(self, conditions: Conditions) -> dict[int, torch.Tensor]:
        """softmax span start -> (K,) bool for the ddpm's constrained sampling: a conditioned category's slots; for a
        conditioned number, the modes whose reach (mean +- 4 sd, as the layout's scalars are clipped to +-1) meets
        the allowed range, and "present" in its missing span."""
        masks = {}
        for name, a in conditions.allowed.items():
            col, spans = self.layout.column(name), self.layout.span_of
            if col["kind"] == "categorical":
                span = spans[(name, "category")]
                masks[span.start] = torch.tensor([i in a.slots for i in range(span.width)])
                continue
            means, stds = (torch.tensor(col["modes"][k], dtype=torch.float64) for k in ("means", "stds"))
            low, high = a.reach(col)
            reach = (means + 4 * stds >= low) & (means - 4 * stds <= high)
            if reach.any():
                masks[spans[(name, "mode")].start] = reach
            if col["has_missing"]:
                masks[spans[(name, "missing")].start] = torch.tensor([True, False])
        return masks
