"""What the language-model families (`gpt`, `rnn`) share: tokenizer, data windows, loss, generation, evaluation.

A family subclasses `LanguageModel` and its config subclasses `TextConfig`; it implements
`logits(idx)` for training and `prefill`/`step` for generation (see `genlab.generation`).
The tokenizer is part of the model: a char model carries its alphabet in the config,
a BPE model names its `tokenizer.json` by hash and reads it from the model folder.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F

from genlab.errors import ConfigError, DataError, UnsafeFileError
from genlab.models.base import GenerativeModel
from genlab.tokenizers import (
    TOKENIZER_FILE,
    CharTokenizer,
    Tokenizer,
    fit_tokenizer,
    load_tokenizer,
    recall,
    refuse_unknown,
)


@dataclasses.dataclass(frozen=True)
class TextConfig:
    """The tokenizer fields of every language-model config (filled from the data by `config_for_data`)."""

    tokenizer: Literal["char", "bpe"] = "char"
    vocab_size: int = 0  # bpe: the vocabulary to learn (0: 4096); after fitting, the actual size
    chars: str = ""  # char: the alphabet (id 0 is reserved for unknown characters)
    tokenizer_hash: str = ""  # bpe: which tokenizer.json the weights belong to
    block_size: int = 256  # tokens per training window (a GPT's context length)
    # bpe: train on `bpe_copies` segmentations of the text drawn with BPE-dropout at this rate (validation and
    # evaluation keep the one deterministic encoding). A regulariser for many passes over a small corpus:
    # 0.1 took the 6-minute 4 x 192 tiny-shakespeare model from 1.686 to 1.636 nats/char (copies drawn by
    # Hugging Face's dropout in that probe; this sampler skips a little more often at the same rate)
    bpe_dropout: float = 0.0
    bpe_copies: int = 16


def tokenizer_of(config: TextConfig) -> Tokenizer | None:
    """The config's tokenizer when it can be had without files: a char alphabet, or a BPE fitted/loaded earlier."""
    if config.tokenizer == "char" and config.chars:
        return CharTokenizer(config.chars)
    if config.tokenizer == "bpe" and config.tokenizer_hash:
        return recall(config.tokenizer_hash)
    return None


class LanguageModel(GenerativeModel):
    data_kind = "text"
    # The training recipe both language models share; each family overrides what differs (lr, warm-up, betas).
    train_defaults: ClassVar[dict[str, Any]] = {
        "batch_size": 32, "max_steps": 3000, "schedule": "cosine", "min_lr_ratio": 0.0, "weight_decay": 0.0,
        "grad_clip": 1.0, "val_every": 500, "val_batches": 20, "sample_every": 1000, "log_every": 50}
    samples_images = False
    eval_samples: ClassVar[int] = 64  # `genlab eval` generates this many texts for the text metrics by default
    eval_sample_tokens: ClassVar[int] = 256
    cli_shortcuts: ClassVar[dict[str, str]] = {"tokenizer": "model.tokenizer", "vocab_size": "model.vocab_size"}
    context_size: int | None = None  # tokens one forward pass may see (None: unbounded)

    def __init__(self, config: TextConfig):
        super().__init__(config)
        self.tokenizer = tokenizer_of(config)

    # -- data --------------------------------------------------------------------------------

    @classmethod
    def config_for_data(cls, config: TextConfig, data: Any) -> TextConfig:
        """Fit the tokenizer on the training text, unless the config already names one (fine-tuning):
        then every character of the data must encode, or this is a `DataError` listing those that do not."""
        known = tokenizer_of(config)
        if known is not None:
            refuse_unknown(known.unknown(data.train + data.test))
            return config
        if config.tokenizer == "bpe" and config.tokenizer_hash:
            raise DataError("this config names a BPE tokenizer that is not loaded",
                            "fine-tune from the model folder (genlab finetune RUN) so its tokenizer.json is read")
        # A char alphabet comes from the whole corpus, as nanoGPT builds it; BPE merges from the training split only.
        text = data.train + data.test if config.tokenizer == "char" else data.train
        tokenizer = fit_tokenizer(config.tokenizer, text, config.vocab_size or 4096)
        if config.tokenizer == "char":
            return dataclasses.replace(config, vocab_size=tokenizer.vocab_size, chars=tokenizer.chars)
        return dataclasses.replace(config, vocab_size=tokenizer.vocab_size, tokenizer_hash=tokenizer.hash)

    def encode(self, text: str, strict: bool = False) -> torch.Tensor:
        return torch.tensor(self._tokenizer().encode(text, strict=strict), dtype=torch.long)

    def make_loaders(self, data: Any, train: Any, position):
        """Windows of block_size + 1 tokens: random ones for training, the held-out tail for validation."""
        from genlab.data.loader import text_loaders, window_loaders

        c = self.config
        if not 0 <= c.bpe_dropout < 1 or c.bpe_copies < 1:
            raise ConfigError(f"bpe_dropout = {c.bpe_dropout} and bpe_copies = {c.bpe_copies}: the rate must be in [0, 1) "
                              "and the copies at least 1", "e.g. --model.bpe-dropout 0.1 --model.bpe-copies 16")
        if c.bpe_dropout and c.tokenizer != "bpe":
            raise ConfigError(f"bpe_dropout = {c.bpe_dropout} needs a BPE tokenizer; this model's is {c.tokenizer!r}",
                              "add --tokenizer bpe, or leave --model.bpe-dropout at 0")
        holdout = train.holdout
        if not c.bpe_dropout:
            return text_loaders(self.encode(data.train), c.block_size, train.batch_size, train.seed, position, holdout)
        # the held-out tail is cut at a line in the text (the copies differ in length), encoded the one way
        text = data.train
        cut = len(text)
        if holdout > 0:
            cut = text.rfind("\n", 0, int(len(text) * (1 - holdout))) + 1 or int(len(text) * (1 - holdout))
        copies = self._tokenizer().encode_with_dropout(text[:cut], c.bpe_dropout, c.bpe_copies, seed=train.seed)
        return window_loaders(torch.from_numpy(np.concatenate(copies)), self.encode(text[cut:]) if holdout > 0 else None,
                              c.block_size, train.batch_size, train.seed, position)

    def _tokenizer(self) -> Tokenizer:
        if self.tokenizer is None:
            raise ConfigError(f"this {self.family} model has no tokenizer attached",
                              "load it with genlab.load(folder), which reads its tokenizer.json")
        return self.tokenizer

    # -- training ----------------------------------------------------------------------------

    def logits(self, idx: torch.Tensor) -> torch.Tensor:
        """(B, T) token ids -> (B, T, V) next-token logits (teacher forcing)."""
        raise NotImplementedError

    def loss(self, batch) -> dict[str, torch.Tensor]:
        (windows,) = batch
        x, y = windows[:, :-1], windows[:, 1:]  # (B, T) inputs and their next tokens
        logits = self.logits(x)
        return {"loss": F.cross_entropy(logits.flatten(0, 1).float(), y.flatten())}

    # -- generation --------------------------------------------------------------------------

    def prefill(self, ids: torch.Tensor) -> tuple[torch.Tensor, Any]:
        raise NotImplementedError

    def step(self, token: int, state: Any) -> tuple[torch.Tensor, Any]:
        raise NotImplementedError

    def start_ids(self) -> list[int]:
        """Where an empty prompt starts: a newline when the tokenizer knows one, else the first token."""
        tokenizer = self._tokenizer()
        return tokenizer.encode("\n") if not tokenizer.unknown("\n") else [1]

    def never_generate(self) -> list[int]:
        """Token ids sampling must not produce: the char tokenizer's unknown id (it stands for no character)."""
        return [0] if isinstance(self.tokenizer, CharTokenizer) else []

    def generate(self, prompt: str = "", max_new_tokens: int = 200, temperature: float = 1.0,
                 top_k: int | None = None, top_p: float | None = None, repetition_penalty: float = 1.0,
                 stop: str | list[str] | None = None, seed: int | None = None,
                 generator: torch.Generator | None = None, use_cache: bool = True):
        """Continue `prompt`: an iterator of text pieces, yielded as they are produced.

        Args:
            prompt: the text to continue (characters the tokenizer does not know become its unknown token).
            max_new_tokens: at most this many new tokens (bounded by genlab.generation.MAX_NEW_TOKENS).
            temperature: 0 is greedy; below 1 sharpens the distribution, above 1 flattens it.
            top_k: sample among the k most likely tokens only.
            top_p: sample among the smallest set of tokens holding this much probability (nucleus).
            repetition_penalty: > 1 makes tokens already in the text less likely (CTRL's penalty).
            stop: a string or list of strings that end the text (not included in it).
            seed: makes the output reproducible.
        """
        from genlab.generation import generate

        return generate(self, prompt, max_new_tokens, temperature, top_k, top_p, repetition_penalty, stop, seed,
                        generator, use_cache)

    def preview(self, generator: torch.Generator) -> str:
        return "".join(self.generate(max_new_tokens=300, temperature=0.8, generator=generator))

    # -- likelihood and evaluation -----------------------------------------------------------

    @torch.no_grad()
    def token_nll(self, ids: torch.Tensor, batch_size: int = 32) -> tuple[float, int]:
        """Summed negative log-likelihood (nats) of ids[1:] and how many tokens that is. Windows of
        block_size + 1 overlapping by one token, so each token is predicted once from the start of its window."""
        block = self.config.block_size
        total, count = 0.0, 0
        starts = list(range(0, len(ids) - 1, block))
        for i in range(0, len(starts), batch_size):
            group = [ids[s : s + block + 1] for s in starts[i : i + batch_size]]
            full = [w for w in group if len(w) == block + 1]
            parts = ([torch.stack(full)] if full else []) + [w[None] for w in group if len(w) != block + 1]
            for windows in parts:
                logits = self.logits(windows[:, :-1])
                total += float(F.cross_entropy(logits.flatten(0, 1).float(), windows[:, 1:].flatten(), reduction="sum"))
                count += windows[:, 1:].numel()
        return total, count

    @torch.no_grad()
    def log_likelihood(self, text: str) -> dict[str, float]:
        """Negative log-likelihood of a text: nats per token, bits per character and perplexity."""
        was_training = self.training
        self.eval()
        ids = self.encode(text).to(next(self.parameters()).device)
        if len(ids) < 2:
            raise DataError("the text is too short to score (fewer than 2 tokens)")
        total, count = self.token_nll(ids)
        self.train(was_training)
        chars = len(self._tokenizer().decode(ids[1:].tolist()))
        nats = total / count
        return {"nats_per_token": nats, "bits_per_char": total / max(1, chars) / math.log(2),
                "perplexity": math.exp(nats), "tokens": float(count)}

    def eval_metrics(self, data: Any, n: int, seed: int, progress: bool) -> dict[str, float]:
        """Test-split likelihood, and the text metrics of n generated texts (memorisation against the training text)."""
        from tqdm.auto import tqdm

        from genlab.metrics.text import text_metrics

        metrics = self.log_likelihood(data.test)
        texts = ["".join(self.generate(max_new_tokens=self.eval_sample_tokens, seed=seed + i))
                 for i in tqdm(range(n), desc="generating", disable=not progress)]
        return metrics | text_metrics(texts, data.train)

    # -- persistence -------------------------------------------------------------------------

    def save_assets(self, folder) -> None:
        if self.tokenizer is not None:
            self.tokenizer.save(folder)

    def load_assets(self, folder) -> None:
        if self.config.tokenizer != "bpe":
            return
        tokenizer = load_tokenizer(folder)
        if tokenizer.hash != self.config.tokenizer_hash:
            raise UnsafeFileError(f"{folder}/{TOKENIZER_FILE} is not the tokenizer these weights were trained with "
                                  f"(hash {tokenizer.hash}, config says {self.config.tokenizer_hash})",
                                  "use the tokenizer.json that came with the weights")
        self.tokenizer = tokenizer
