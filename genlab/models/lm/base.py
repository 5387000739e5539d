"""What the language-model families (`gpt`, `rnn`) share: tokenizer, loss, generation, likelihood.

A family subclasses `LanguageModel` and its config subclasses `TextConfig`; it implements
`logits(idx)` for training and `prefill`/`step` for generation (see `generation.py`).
The tokenizer is part of the model: a char model carries its alphabet in the config,
a BPE model names its `tokenizer.json` by hash and reads it from the model folder.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F

from genlab.config import validate
from genlab.data.tokenizers import (
    TOKENIZER_FILE,
    CharTokenizer,
    Tokenizer,
    fit_tokenizer,
    load_tokenizer,
    recall,
    refuse_unknown,
)
from genlab.errors import ConfigError, DataError, UnsafeFileError
from genlab.models.base import AnomalyScorer, Chat, GenerativeModel, TextGenerator, TextLikelihood
from genlab.models.lm.chat import (
    SPECIAL_TOKENS,
    ChatTokenizer,
    ReplyDecoder,
    check_template,
    pack,
    prompt_ids,
    render,
)


@dataclasses.dataclass(frozen=True)
class TextConfig:
    """The tokenizer fields of every language-model config (the vocabulary is filled from the data)."""

    FROM_DATA: ClassVar[tuple[str, ...]] = ("vocab_size", "chars", "tokenizer_hash", "chat_tokens")

    tokenizer: Literal["char", "bpe"] = "char"
    """char: one token per character; bpe: byte-level BPE learnt on the training text"""
    bpe_vocab_size: int = 4096
    """bpe: the vocabulary to learn (256 byte tokens plus merges)"""
    vocab_size: int = 0
    """the tokenizer's vocabulary (from the data)"""
    chars: str = ""
    """char: the alphabet, id 0 reserved for unknown characters (from the data)"""
    tokenizer_hash: str = ""
    """bpe: which tokenizer.json the weights belong to (from the data)"""
    block_size: int = 256
    """tokens per training window (a GPT's context length)"""
    bpe_dropout: float = 0.0
    """bpe: train on `bpe_copies` segmentations of the text drawn with BPE-dropout at this rate, a regulariser for
    many passes over a small corpus (validation and evaluation keep the one deterministic encoding; docs/lm.md)"""
    bpe_copies: int = 16
    """bpe-dropout: how many segmentations of the training text to draw"""
    chat_tokens: tuple[str, ...] = ()
    """the chat template's special tokens, after the base vocabulary (from conversation data; docs/chat.md)"""

    def __post_init__(self):
        validate(self)
        if self.block_size < 2:
            raise ConfigError(f"block_size = {self.block_size} must be at least 2", "e.g. --model.block-size 128")
        if self.bpe_vocab_size < 257:
            raise ConfigError(f"bpe_vocab_size = {self.bpe_vocab_size}: a byte-level BPE needs more than the 256 byte "
                              "tokens", "e.g. --model.bpe-vocab-size 1024")
        if not 0 <= self.bpe_dropout < 1 or self.bpe_copies < 1:
            raise ConfigError(
                f"bpe_dropout = {self.bpe_dropout} and bpe_copies = {self.bpe_copies}: the rate must be "
                "in [0, 1) and the copies at least 1",
                "e.g. --model.bpe-dropout 0.1 --model.bpe-copies 16",
            )
        if self.bpe_dropout and self.tokenizer != "bpe":
            raise ConfigError(
                f"bpe_dropout = {self.bpe_dropout} needs a BPE tokenizer; this model's is {self.tokenizer!r}",
                "add --model.tokenizer bpe, or leave --model.bpe-dropout at 0",
            )


def tokenizer_of(config: TextConfig) -> Tokenizer | ChatTokenizer | None:
    """The config's tokenizer when it can be had without files: a char alphabet, or a BPE fitted/loaded earlier;
    with the chat template's tokens after it when the config has them."""
    base = None
    if config.tokenizer == "char" and config.chars:
        base = CharTokenizer(config.chars)
    if config.tokenizer == "bpe" and config.tokenizer_hash:
        base = recall(config.tokenizer_hash)
    return with_chat(base, config)


def with_chat(base: Tokenizer | None, config: TextConfig) -> Tokenizer | ChatTokenizer | None:
    return ChatTokenizer(base, config.chat_tokens) if base is not None and config.chat_tokens else base


def add_chat_tokens(config: TextConfig, base_vocab: int) -> TextConfig:
    """The config with the chat template's tokens after a base vocabulary of `base_vocab` ids."""
    if config.chat_tokens:
        return config
    return dataclasses.replace(config, chat_tokens=SPECIAL_TOKENS, vocab_size=base_vocab + len(SPECIAL_TOKENS))


class LanguageModel(GenerativeModel, TextGenerator, TextLikelihood, AnomalyScorer, Chat):
    data_kind = "text"
    also_trains_on = ("chat", "tokens")  # conversations (genlab.data.chat); text prepared on disk (genlab.data.tokens)
    VOCABULARY_TENSORS: ClassVar[tuple[str, ...]] = ()  # state-dict entries with one row per token
    eval_texts: ClassVar[int] = 64  # texts `genlab eval` generates for the text metrics by default
    eval_text_tokens: ClassVar[int] = 256
    context_size: int | None = None  # tokens one forward pass may see (None: unbounded)

    def __init__(self, config: TextConfig):
        super().__init__(config)
        self.tokenizer = tokenizer_of(config)

    # -- data --------------------------------------------------------------------------------

    @classmethod
    def config_for_data(cls, config: TextConfig, data: Any) -> TextConfig:
        """Fit the tokenizer on the training text, unless the config already names one (fine-tuning):
        then every character of the data must encode, or this is a `DataError` listing those that do not.
        Conversation data (kind "chat") adds the chat template's tokens after the vocabulary."""
        if data.kind == "tokens":
            return cls._config_for_tokens(config, data)
        chat = data.kind == "chat"
        if chat:
            from genlab.data.chat import conversation_text

            train, test = conversation_text(data.train), conversation_text(data.test)
        else:
            train, test = data.train, data.test
        known = tokenizer_of(config)
        if known is not None:
            refuse_unknown(known.unknown(train + test))
            return add_chat_tokens(config, known.vocab_size) if chat else config
        if config.tokenizer == "bpe" and config.tokenizer_hash:
            raise DataError("this config names a BPE tokenizer that is not loaded",
                            "fine-tune from the model folder (genlab finetune RUN) so its tokenizer.json is read")
        # A char alphabet comes from the whole corpus, as nanoGPT builds it; BPE merges from the training split only.
        text = train + test if config.tokenizer == "char" else train
        tokenizer = fit_tokenizer(config.tokenizer, text, config.bpe_vocab_size)
        if config.tokenizer == "char":
            config = dataclasses.replace(config, vocab_size=tokenizer.vocab_size, chars=tokenizer.chars)
        else:
            config = dataclasses.replace(config, vocab_size=tokenizer.vocab_size, tokenizer_hash=tokenizer.hash)
        return add_chat_tokens(config, tokenizer.vocab_size) if chat else config

    @classmethod
    def _config_for_tokens(cls, config: TextConfig, data: Any) -> TextConfig:
        """Text prepared into token files brings its tokenizer: the model takes it, and a model that already has
        one (fine-tuning) must have the same."""
        made = data.tokenizer
        known = tokenizer_of(config)
        if (known is not None and known.hash != made.hash
                or config.tokenizer_hash and config.tokenizer_hash != made.hash):
            raise DataError(f"{data.name} was prepared with another tokenizer than this model's",
                            "prepare the text again with the model's tokenizer.json, or train a new model")
        if config.bpe_dropout:
            raise ConfigError("BPE-dropout needs the text, and prepared token files hold ids",
                              "leave --model.bpe-dropout at 0, or train on the text file itself")
        if made.kind == "char":
            return dataclasses.replace(config, tokenizer="char", vocab_size=made.vocab_size, chars=made.chars)
        return dataclasses.replace(config, tokenizer="bpe", vocab_size=made.vocab_size, tokenizer_hash=made.hash)

    def encode(self, text: str, strict: bool = False) -> torch.Tensor:
        return torch.tensor(self.require_tokenizer().encode(text, strict=strict), dtype=torch.long)

    def require_tokenizer(self) -> Tokenizer | ChatTokenizer:
        if self.tokenizer is None:
            raise ConfigError(f"this {self.family} model has no tokenizer attached",
                              "load it with genlab.load(folder), which reads its tokenizer.json")
        return self.tokenizer

    @property
    def has_chat_template(self) -> bool:
        return bool(self.config.chat_tokens)

    def require_chat(self) -> ChatTokenizer:
        """The chat tokenizer, or a ConfigError saying how to make a chat model from this one."""
        tokenizer = self.require_tokenizer()
        if not isinstance(tokenizer, ChatTokenizer):
            raise ConfigError(f"this {self.family} model has no chat template: it was trained on plain text",
                              "instruction-tune it first: genlab finetune RUN --data conversations.jsonl "
                              "(docs/chat.md), or use completions")
        return tokenizer

    # -- training ----------------------------------------------------------------------------

    def logits(self, idx: torch.Tensor) -> torch.Tensor:
        """(B, T) token ids -> (B, T, V) next-token logits (teacher forcing)."""
        raise NotImplementedError

    def loss(self, batch, step: int | None = None) -> dict[str, torch.Tensor]:
        """Mean next-token cross-entropy of (windows,), or, for conversations, of (windows, mask) over the
        targets the mask marks (the assistant's tokens; genlab.models.lm.chat)."""
        windows, *mask = batch
        x, y = windows[:, :-1], windows[:, 1:]  # (B, T) inputs and their next tokens
        logits = self.logits(x).flatten(0, 1).float()
        if not mask:
            return {"loss": F.cross_entropy(logits, y.flatten())}
        weights = mask[0][:, 1:].flatten().to(logits.dtype)
        nll = F.cross_entropy(logits, y.flatten(), reduction="none")
        return {"loss": (nll * weights).sum() / weights.sum().clamp_min(1.0)}

    # -- generation --------------------------------------------------------------------------

    def prefill(self, ids: torch.Tensor) -> tuple[torch.Tensor, Any]:
        raise NotImplementedError

    def step(self, token: int, state: Any) -> tuple[torch.Tensor, Any]:
        raise NotImplementedError

    def start_ids(self) -> list[int]:
        """Where an empty prompt starts: a newline when the tokenizer knows one, else the first token."""
        tokenizer = self.require_tokenizer()
        return tokenizer.encode("\n") if not tokenizer.unknown("\n") else [1]

    def never_generate(self) -> list[int]:
        """Token ids sampling must not produce: the char tokenizer's unknown id (it stands for no character)."""
        return [0] if self.tokenizer is not None and self.tokenizer.kind == "char" else []

    def generate(self, prompt: str = "", max_new_tokens: int = 200, temperature: float = 1.0,
                 top_k: int | None = None, top_p: float | None = None, repetition_penalty: float = 1.0,
                 stop: str | list[str] | None = None, seed: int | None = None) -> Iterator[str]:
        """Continue `prompt`: an iterator of text pieces, yielded as they are produced.

        Args:
            prompt: the text to continue (characters the tokenizer does not know become its unknown token).
            max_new_tokens: at most this many new tokens (bounded by generation.MAX_NEW_TOKENS).
            temperature: 0 is greedy; below 1 sharpens the distribution, above 1 flattens it.
            top_k: sample among the k most likely tokens only.
            top_p: sample among the smallest set of tokens holding this much probability (nucleus).
            repetition_penalty: > 1 makes tokens already in the text less likely (CTRL's penalty).
            stop: a string or list of strings that end the text (not included in it).
            seed: makes the output reproducible (default: torch's global generator).
        """
        from genlab.models.lm.generation import generate

        return generate(self, prompt, max_new_tokens, temperature, top_k, top_p, repetition_penalty, stop, seed)

    def chat(self, messages: list[dict[str, str]], max_new_tokens: int = 200, temperature: float = 1.0,
             top_k: int | None = None, top_p: float | None = None, repetition_penalty: float = 1.0,
             stop: str | list[str] | None = None, seed: int | None = None) -> Iterator[str]:
        """The assistant's reply to `messages` ([{"role": "system" | "user" | "assistant", "content": ...}]),
        as an iterator of text pieces; it ends at the template's end token, a stop string or max_new_tokens.
        The options are `generate`'s; a conversation longer than the context keeps its latest turns
        (docs/chat.md)."""
        from genlab.data.chat import check_messages
        from genlab.models.lm.generation import generate

        tokenizer = self.require_chat()
        try:
            messages = check_messages(messages)
        except ValueError as error:
            raise ConfigError(f"the messages are not a conversation: {error}",
                              'pass [{"role": "user", "content": "..."}, ...]') from None
        ids = prompt_ids(tokenizer, messages, self.context_size, max_new_tokens)
        return generate(self, "", max_new_tokens, temperature, top_k, top_p, repetition_penalty, stop, seed,
                        ids=ids, end=[tokenizer.end_id], decoder=ReplyDecoder(tokenizer))

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
    def _nll_of(self, text: str) -> tuple[float, int, int]:
        """(summed NLL in nats, tokens scored, characters scored) of a text, in evaluation mode."""
        was_training = self.training
        self.eval()
        try:
            ids = self.encode(text).to(next(self.parameters()).device)
            if len(ids) < 2:
                raise DataError(f"the text {text[:40]!r} is too short to score (fewer than 2 tokens)",
                                "score a longer text")
            total, count = self.token_nll(ids)
        finally:
            self.train(was_training)
        return total, count, len(self.require_tokenizer().decode(ids[1:].tolist()))

    def log_likelihood(self, text: str) -> dict[str, float]:
        """Negative log-likelihood of a text: nats per token, bits per character and perplexity."""
        total, count, chars = self._nll_of(text)
        nats = total / count
        return {"nats_per_token": nats, "bits_per_char": total / max(1, chars) / math.log(2),
                "perplexity": math.exp(nats), "tokens": float(count)}

    @torch.no_grad()
    def chat_loss(self, conversations: list[list[dict[str, str]]], batch_size: int = 32) -> dict[str, float]:
        """Mean negative log-likelihood (nats) of the assistant's tokens of `conversations` in the chat
        template, each conversation packed and cut as training packs them (genlab.models.lm.chat)."""
        tokenizer = self.require_chat()
        windows, masks = pack([render(tokenizer, c) for c in conversations], self.config.block_size + 1,
                              tokenizer.end_id)
        was_training = self.training
        self.eval()
        total, count = 0.0, 0
        try:
            for i in range(0, len(windows), batch_size):
                w, m = windows[i : i + batch_size], masks[i : i + batch_size, 1:]
                nll = F.cross_entropy(self.logits(w[:, :-1]).flatten(0, 1).float(), w[:, 1:].flatten(),
                                      reduction="none")
                total += float(nll[m.flatten()].sum())
                count += int(m.sum())
        finally:
            self.train(was_training)
        if not count:
            raise DataError("these conversations have no assistant token to score", "pass conversations with replies")
        return {"nats_per_token": total / count, "tokens": float(count)}

    def anomaly_score(self, examples: list[str], labels: Any = None) -> torch.Tensor:
        """-log p(text) in bits per character of each text (each scored from its own start), (B,)."""
        if isinstance(examples, str):
            raise ConfigError("anomaly_score takes a list of texts", "wrap a single text in a list")
        scores = []
        for text in examples:
            total, _, chars = self._nll_of(text)
            scores.append(total / max(1, chars) / math.log(2))
        return torch.tensor(scores)

    # -- persistence -------------------------------------------------------------------------

    def save_assets(self, folder) -> None:
        if self.tokenizer is not None:
            self.tokenizer.save(folder)

    def load_assets(self, folder) -> None:
        if self.config.chat_tokens:
            check_template(folder, self.config.chat_tokens)
        if self.config.tokenizer != "bpe":
            return
        tokenizer = load_tokenizer(folder)
        if tokenizer.hash != self.config.tokenizer_hash:
            raise UnsafeFileError(f"{folder}/{TOKENIZER_FILE} is not the tokenizer these weights were trained with "
                                  f"(hash {tokenizer.hash}, config says {self.config.tokenizer_hash})",
                                  "use the tokenizer.json that came with the weights")
        self.tokenizer = with_chat(tokenizer, self.config)
