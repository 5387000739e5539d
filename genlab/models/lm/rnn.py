"""A recurrent language model: a multi-layer LSTM over token embeddings (Hochreiter & Schmidhuber 1997).

In the style of Merity et al. (2018, AWD-LSTM) and char-rnn: embedding dropout (whole
rows of the embedding matrix dropped, so a token is absent everywhere in a batch),
dropout between layers and before the head, and the output head tied to the embedding
(a projection bridges the hidden size to the embedding size when they differ).

Training windows of `block_size` tokens are unrolled with truncated backpropagation
through time: the hidden state flows through the whole window, gradients only through
chunks of `bptt` steps. Likelihood evaluation carries the state across the whole text,
which is how a recurrent model is meant to be read. The recurrent state is all a
generation step needs, so generation has no context limit.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

from genlab.errors import ConfigError
from genlab.models.lm.base import LanguageModel, TextConfig

State = tuple[torch.Tensor, torch.Tensor]  # (h, c), each (n_layer, B, hidden)


@dataclasses.dataclass(frozen=True)
class RNNConfig(TextConfig):
    block_size: int = 128
    """tokens per training window"""
    bptt: int = 64
    """gradient truncation inside a window (the state still flows through it all)"""
    n_layer: int = 2
    """LSTM layers"""
    n_embd: int = 256
    """token embedding size"""
    hidden: int = 256
    """LSTM hidden units per layer"""
    dropout: float = 0.0
    """dropout between LSTM layers and before the head"""
    embed_dropout: float = 0.0
    """drops whole rows of the embedding matrix (AWD-LSTM)"""
    tie_weights: bool = True
    """the output head shares the token embedding's matrix (through a projection when the sizes differ)"""

    def __post_init__(self):
        super().__post_init__()
        if self.bptt < 1 or self.n_layer < 1 or self.hidden < 1 or self.n_embd < 1:
            raise ConfigError(
                "bptt, n_layer, n_embd and hidden must be >= 1", "e.g. --model.n-layer 2 --model.hidden 256"
            )
        if not 0 <= self.dropout < 1 or not 0 <= self.embed_dropout < 1:
            raise ConfigError("dropout and embed_dropout must be in [0, 1)", "e.g. --model.dropout 0.1")


class RNN(LanguageModel):
    """Multi-layer LSTM language model; char-level by default."""

    family = "rnn"
    Config = RNNConfig
    VOCABULARY_TENSORS = ("embed.weight", "head.weight", "head.bias")

    def __init__(self, config: RNNConfig):
        super().__init__(config)
        c = config
        vocab = max(c.vocab_size, 1)
        self.embed = nn.Embedding(vocab, c.n_embd)
        self.lstm = nn.LSTM(
            c.n_embd, c.hidden, c.n_layer, batch_first=True, dropout=c.dropout if c.n_layer > 1 else 0.0
        )
        self.drop = nn.Dropout(c.dropout)
        self.bridge = nn.Linear(c.hidden, c.n_embd, bias=False) if c.tie_weights and c.hidden != c.n_embd else None
        self.head = nn.Linear(c.n_embd if self.bridge is not None else c.hidden, vocab)
        if c.tie_weights:
            self.head.weight = self.embed.weight
        nn.init.normal_(self.embed.weight, std=0.02)
        nn.init.zeros_(self.head.bias)

    def _embed(self, idx: torch.Tensor) -> torch.Tensor:
        p = self.config.embed_dropout
        if not (self.training and p):
            return self.embed(idx)
        keep = torch.empty(self.embed.num_embeddings, 1, device=idx.device).bernoulli_(1 - p) / (1 - p)
        return F.embedding(idx, self.embed.weight * keep)

    def forward(self, idx: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        """(B, T) ids -> (B, T, V) logits and the state after the last token."""
        out, state = self.lstm(self._embed(idx), state)
        out = self.drop(out)
        if self.bridge is not None:
            out = self.bridge(out)
        return self.head(out), state

    def logits(self, idx: torch.Tensor) -> torch.Tensor:
        """Teacher-forced logits with truncated BPTT: the state is detached every `bptt` steps."""
        state, outs = None, []
        for start in range(0, idx.shape[1], self.config.bptt):
            if state is not None:
                state = (state[0].detach(), state[1].detach())
            logits, state = self(idx[:, start : start + self.config.bptt], state)
            outs.append(logits)
        return torch.cat(outs, 1)

    def prefill(self, ids: torch.Tensor) -> tuple[torch.Tensor, State]:
        logits, state = self(ids)
        return logits[0, -1], state

    def step(self, token: int, state: State) -> tuple[torch.Tensor, State]:
        logits, state = self(torch.tensor([[token]], device=self.embed.weight.device), state)
        return logits[0, -1], state

    @torch.no_grad()
    def token_nll(self, ids: torch.Tensor, batch_size: int = 32) -> tuple[float, int]:
        """Summed NLL of ids[1:], reading the text as `batch_size` contiguous streams whose state carries over."""
        n = (len(ids) - 1) // batch_size
        if n == 0:
            batch_size, n = 1, len(ids) - 1
        x = ids[: n * batch_size].view(batch_size, n)  # (B, n): stream b is ids[b*n : (b+1)*n]
        y = ids[1 : n * batch_size + 1].view(batch_size, n)
        total, state = 0.0, None
        for start in range(0, n, self.config.block_size):
            logits, state = self(x[:, start : start + self.config.block_size], state)
            total += float(
                F.cross_entropy(
                    logits.flatten(0, 1).float(),
                    y[:, start : start + self.config.block_size].flatten(),
                    reduction="sum",
                )
            )
        count = n * batch_size
        rest = ids[n * batch_size :]  # the few tokens past the last full stream
        if len(rest) > 1:
            logits, _ = self(rest[None, :-1])
            total += float(F.cross_entropy(logits[0].float(), rest[1:], reduction="sum"))
            count += len(rest) - 1
        return total, count
