"""Conversations for instruction tuning: JSONL in the shapes users already have.

Each line is one example, in any of:

- OpenAI's chat shape: `{"messages": [{"role": "system" | "user" | "assistant", "content": "..."}, ...]}`;
- a prompt and its completion: `{"prompt": "...", "completion": "..."}`;
- Alpaca's: `{"instruction": "...", "input": "...", "output": "..."}` (`input` may be empty or absent;
  when given it follows the instruction after a blank line, as Alpaca's own template puts it).

Every example becomes a list of messages; a conversation must hold at least one assistant turn
(the turns the loss is taken on) and may start with one system message. A malformed line is
reported with its line number, all of them at once, so that one pass fixes the file.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from genlab.data.base import DataReport
from genlab.errors import DataError

ROLES = ("system", "user", "assistant")
CHAT_SUFFIXES = (".jsonl",)
MAX_REPORTED = 10  # malformed lines named in one error

Message = dict[str, str]


@dataclasses.dataclass
class ChatData:
    """Conversations split into training and held-out ones (the last `test_fraction`, as text is split)."""

    name: str
    train: list[list[Message]]
    test: list[list[Message]]
    report: DataReport

    kind = "chat"


def check_messages(messages: object) -> list[Message]:
    """A list of {"role", "content"} dicts in a usable order, or ValueError saying what is wrong.

    Roles are system, user and assistant; a system message may only come first; contents are strings.
    Extra keys (OpenAI's `name`) are accepted and dropped."""
    if not isinstance(messages, list) or not messages:
        raise ValueError("`messages` must be a non-empty list")
    out = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or "role" not in message or "content" not in message:
            raise ValueError(f"message {i} must be an object with `role` and `content`")
        role, content = message["role"], message["content"]
        if role not in ROLES:
            raise ValueError(f"message {i} has role {role!r}; roles are {', '.join(ROLES)}")
        if not isinstance(content, str):
            raise ValueError(f"message {i}'s content must be a string")
        if role == "system" and i:
            raise ValueError(f"message {i} is a system message; only the first message may be one")
        out.append({"role": role, "content": content})
    return out


def to_messages(example: object) -> list[Message]:
    """One JSONL example in any accepted shape -> its messages (ValueError naming what is wrong)."""
    if not isinstance(example, dict):
        raise ValueError("each line must be a JSON object")
    if "messages" in example:
        messages = check_messages(example["messages"])
    elif "prompt" in example and "completion" in example:
        prompt, completion = example["prompt"], example["completion"]
        if not isinstance(prompt, str) or not isinstance(completion, str):
            raise ValueError("`prompt` and `completion` must be strings")
        messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": completion}]
    elif "instruction" in example and "output" in example:
        instruction, extra, output = example["instruction"], example.get("input") or "", example["output"]
        if not all(isinstance(v, str) for v in (instruction, extra, output)):
            raise ValueError("`instruction`, `input` and `output` must be strings")
        user = f"{instruction}\n\n{extra}" if extra else instruction
        messages = [{"role": "user", "content": user}, {"role": "assistant", "content": output}]
    else:
        raise ValueError("expected `messages`, `prompt` + `completion`, or `instruction` + `output` "
                         f"(got keys {', '.join(sorted(example)) or 'none'})")
    if not any(m["role"] == "assistant" and m["content"] for m in messages):
        raise ValueError("the example has no non-empty assistant turn to learn from")
    return messages


def read_conversations(path: Path) -> list[list[Message]]:
    """Every example of a JSONL file; blank lines are skipped, malformed ones refused by line number."""
    conversations, errors = [], []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as error:
        raise DataError(f"{path} is not UTF-8 ({error.reason} at byte {error.start})", "save it as UTF-8") from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            conversations.append(to_messages(json.loads(line)))
        except json.JSONDecodeError as error:
            errors.append(f"line {number}: not JSON ({error.msg} at column {error.colno})")
        except ValueError as error:
            errors.append(f"line {number}: {error}")
    if errors:
        shown = "; ".join(errors[:MAX_REPORTED]) + (f"; and {len(errors) - MAX_REPORTED} more"
                                                     if len(errors) > MAX_REPORTED else "")
        raise DataError(f"{path} has {len(errors)} malformed line(s): {shown}",
                        "fix or remove them (each line is one JSON example; docs/chat.md shows the shapes)")
    if not conversations:
        raise DataError(f"{path} holds no examples", "write one JSON example per line (docs/chat.md)")
    return conversations


def load_chat(path: Path, test_fraction: float = 0.1, name: str | None = None) -> ChatData:
    """A JSONL file of conversations; the last `test_fraction` of them (at least one) are held out."""
    path = Path(path).resolve()
    conversations = read_conversations(path)
    n_test = max(1, int(len(conversations) * test_fraction)) if len(conversations) > 1 else 0
    train, test = conversations[: len(conversations) - n_test], conversations[len(conversations) - n_test :]
    report = DataReport(name or path.stem, "chat", str(path), "path")
    turns = sum(len(c) for c in conversations)
    report.counts = {"conversations": len(conversations), "train conversations": len(train),
                     "test conversations": len(test), "messages": turns,
                     "assistant characters": sum(len(m["content"]) for c in conversations for m in c
                                                 if m["role"] == "assistant")}
    return ChatData(report.name, train, test, report)


def conversation_text(conversations: list[list[Message]]) -> str:
    """Every message's content, one per line: the text a tokenizer is fitted on or checked against."""
    return "\n".join(m["content"] for c in conversations for m in c)
