"""genlab's chat template: conversations as token ids, the loss mask on the assistant's turns, packing.

A conversation is rendered as each message in turn, `<|ROLE|> content<|end|>`, with four special
tokens appended after the base tokenizer's vocabulary (so the base ids keep their meaning and the
pre-trained embeddings their rows; the new rows start at the mean embedding, Hewitt 2021). A reply
is generated after `<|assistant|>` and ends at `<|end|>`. Message text is encoded by the base
tokenizer only, so no user text can spell a special token (no template injection). Content follows
its role token after one space, as a word follows another in running text: a byte-level BPE then
spells a reply's first word with the token pre-training used for it mid-sentence (" Berlin", not
"Berlin"), as answers follow "Answer:" in Allen-Zhu & Li's QA format; the space is not part of the reply.

The loss is taken on the assistant's content and its closing `<|end|>`; system and user tokens,
and the role tokens, are context only (the masking of InstructGPT's SFT and of Alpaca). Training
examples are packed whole into windows of `block_size + 1` tokens, in order, a new window begun
when the next example does not fit, the rest padded (masked out). An example longer than a window
keeps its first `block_size + 1` tokens. At inference a conversation longer than the context keeps
its system message and its latest turns that fit, with room left for the reply (`prompt_ids`).
docs/chat.md shows all of this with an example.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from genlab.errors import ConfigError, UnsafeFileError
from genlab.files import atomic_write

TEMPLATE_FILE = "chat_template.json"
TEMPLATE_NAME = "genlab-chat-1"
SPECIAL_TOKENS = ("<|system|>", "<|user|>", "<|assistant|>", "<|end|>")
ROLE_TOKEN = {"system": "<|system|>", "user": "<|user|>", "assistant": "<|assistant|>"}
END = "<|end|>"


class ChatTokenizer:
    """A base tokenizer (char or BPE) with the chat template's special tokens after its vocabulary."""

    def __init__(self, base, specials: tuple[str, ...] = SPECIAL_TOKENS):
        if tuple(specials) != SPECIAL_TOKENS:
            raise UnsafeFileError(f"this model's chat tokens {list(specials)} are not {TEMPLATE_NAME}'s",
                                  "use a genlab version that wrote this model")
        self.base, self.specials = base, tuple(specials)
        self.offset = base.vocab_size
        self.special_ids = {token: self.offset + i for i, token in enumerate(self.specials)}
        self.end_id = self.special_ids[END]

    kind = property(lambda self: self.base.kind)
    hash = property(lambda self: self.base.hash)
    vocab_size = property(lambda self: self.offset + len(self.specials))

    def unknown(self, text: str) -> list[str]:
        return self.base.unknown(text)

    def encode(self, text: str, strict: bool = False) -> list[int]:
        return self.base.encode(text, strict=strict)

    def encode_with_dropout(self, text: str, dropout: float, copies: int, seed: int):
        return self.base.encode_with_dropout(text, dropout, copies, seed)

    def decode(self, ids) -> str:
        """Text of the base ids; special tokens decode to nothing (they are structure, not text)."""
        return self.base.decode([i for i in ids if i < self.offset])

    def save(self, folder: Path) -> None:
        self.base.save(folder)
        atomic_write(Path(folder) / TEMPLATE_FILE, json.dumps({
            "name": TEMPLATE_NAME, "special_tokens": list(self.specials), "first_special_id": self.offset,
            "message": "{role_token} {content}<|end|>", "generation_prompt": "<|assistant|>",
            "loss": "assistant content and its <|end|>"}, indent=1))


def check_template(folder: Path, specials: tuple[str, ...]) -> None:
    """A chat model's folder must hold the template its config names; a missing or foreign one is refused."""
    path = Path(folder) / TEMPLATE_FILE
    try:
        meta = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        raise UnsafeFileError(f"{path} is missing or not JSON, and this model was instruction-tuned with it",
                              "use the chat_template.json that came with the weights") from None
    if meta.get("name") != TEMPLATE_NAME or tuple(meta.get("special_tokens", ())) != tuple(specials):
        raise UnsafeFileError(f"{path} is not {TEMPLATE_NAME} with tokens {list(specials)}",
                              "use the chat_template.json that came with the weights")


SEPARATOR = " "  # between a role token and the content (see the module docstring)


def render(tokenizer: ChatTokenizer, messages: list[dict[str, str]]) -> tuple[list[int], list[bool]]:
    """Token ids of a conversation and, per id, whether the loss is taken on it (as a target)."""
    ids, mask = [], []
    for message in messages:
        content = tokenizer.encode(SEPARATOR + message["content"])
        learn = message["role"] == "assistant"
        ids += [tokenizer.special_ids[ROLE_TOKEN[message["role"]]], *content, tokenizer.end_id]
        mask += [False] + [learn] * (len(content) + 1)
    return ids, mask


def prompt_ids(tokenizer: ChatTokenizer, messages: list[dict[str, str]], context: int | None,
               max_new_tokens: int) -> list[int]:
    """The ids a reply is generated after: the conversation, then `<|assistant|>`.

    When they and the reply would outgrow the context, the oldest turns after the system message go
    first, whole; if the last message alone is still too long, its start is cut. The reply is given
    room for min(max_new_tokens, context // 2) tokens (generation slides its window past that)."""
    if messages and messages[-1]["role"] == "assistant":
        raise ConfigError("the last message is the assistant's; a reply follows a user (or system) message",
                          "end the messages with the user's turn")
    turns = [render(tokenizer, [m])[0] for m in messages]
    head = tokenizer.special_ids[ROLE_TOKEN["assistant"]]
    if not context:
        return [i for t in turns for i in t] + [head]
    budget = context - min(max_new_tokens, context // 2) - 1
    system = turns[:1] if messages and messages[0]["role"] == "system" else []
    rest = turns[len(system):]
    while len(rest) > 1 and sum(map(len, system + rest)) > budget:
        rest.pop(0)
    ids = [i for t in system + rest for i in t]
    if len(ids) > budget:  # one message longer than the budget: keep the end of it
        ids = ids[len(ids) - max(1, budget):]
    return ids + [head]


class ReplyDecoder:
    """A reply's ids in, its text pieces out: a StreamDecoder that drops the separator before the content."""

    def __init__(self, tokenizer: ChatTokenizer):
        from genlab.data.tokenizers import StreamDecoder

        self.decoder, self.started = StreamDecoder(tokenizer), False

    def push(self, token: int) -> str:
        text = self.decoder.push(token)
        if text and not self.started:
            self.started = True
            text = text.removeprefix(SEPARATOR)
        return text


def pack(examples: list[tuple[list[int], list[bool]]], window: int, pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Examples packed whole into windows of `window` ids, in order; (N, window) ids and their loss mask.

    An example goes into the current window when it fits, else it starts the next one; windows are
    padded with `pad`, masked out. An example longer than a window keeps its first `window` ids."""
    windows, masks, ids, mask = [], [], [], []
    for example_ids, example_mask in examples:
        example_ids, example_mask = example_ids[:window], example_mask[:window]
        if len(ids) + len(example_ids) > window:
            windows.append(ids + [pad] * (window - len(ids)))
            masks.append(mask + [False] * (window - len(mask)))
            ids, mask = [], []
        ids, mask = ids + example_ids, mask + example_mask
    if ids:
        windows.append(ids + [pad] * (window - len(ids)))
        masks.append(mask + [False] * (window - len(mask)))
    return torch.tensor(windows, dtype=torch.long), torch.tensor(masks, dtype=torch.bool)


def grow_vocabulary(state: dict[str, torch.Tensor], names: list[str], new: int) -> dict[str, torch.Tensor]:
    """A copy of `state` whose vocabulary tensors `names` (token embedding, head, its bias) have `new` rows,
    each added row the mean of the old ones: a new token starts as an average token, so the model's
    outputs barely move before it learns it (Hewitt 2021, "Initializing new word embeddings")."""
    grown = dict(state)
    for name in names:
        tensor = state[name]
        if tensor.shape[0] < new:
            mean = tensor.float().mean(0, keepdim=True).to(tensor.dtype)
            grown[name] = torch.cat([tensor, mean.expand(new - tensor.shape[0], *tensor.shape[1:])])
    return grown
