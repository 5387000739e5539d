"""Instruction tuning and chat: conversation data, the chat template, masked loss and packing, `genlab finetune
--method sft`, `genlab chat`, `model.chat`, and /v1/chat/completions through the official `openai` client on a real
server, and the page's chat view in Chromium.

One tiny character GPT is pre-trained on text and instruction-tuned on "say WORD" -> "WORD" in capitals (the three
JSONL shapes mixed) for the end-to-end tests: small enough for seconds, trained enough to answer exactly.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import genlab
from genlab.cli import main
from genlab.data import load_data
from genlab.data.chat import load_chat, to_messages
from genlab.data.tokenizers import CharTokenizer
from genlab.errors import ConfigError, DataError
from genlab.models.lm.chat import SPECIAL_TOKENS, ChatTokenizer, grow_vocabulary, pack, prompt_ids, render
from genlab.models.lm.gpt import GPT, GPTConfig

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
ALPHABET = "abcdefghijklmnopqrstuvwxyz"
TEXT = ("First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n\n"
        f"{ALPHABET} {ALPHABET.upper()} <|end|>\n") * 30
WORDS = ("alpha", "beta", "gamma", "delta", "omega", "sigma")
TINY = {"block_size": 32, "n_layer": 2, "n_head": 2, "n_embd": 48}


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _examples() -> list[dict]:
    """The three accepted shapes in turn, each word many times."""
    out = []
    for i in range(120):
        word = WORDS[i % len(WORDS)]
        shape = (i // len(WORDS)) % 3
        if shape == 0:
            out.append({"messages": [{"role": "user", "content": f"say {word}"},
                                     {"role": "assistant", "content": word.upper()}]})
        elif shape == 1:
            out.append({"prompt": f"say {word}", "completion": word.upper()})
        else:
            out.append({"instruction": "say", "input": word, "output": word.upper()})
    return out


def _write_jsonl(path, examples) -> str:
    path.write_text("".join(json.dumps(e) + "\n" for e in examples))
    return str(path)


def _chat_tokenizer() -> ChatTokenizer:
    return ChatTokenizer(CharTokenizer.fit(TEXT))


# -- data ----------------------------------------------------------------------------------------

def test_the_three_jsonl_shapes_become_messages(tmp_path):
    assert to_messages({"instruction": "Translate", "input": "chat", "output": "cat"}) == [
        {"role": "user", "content": "Translate\n\nchat"}, {"role": "assistant", "content": "cat"}]
    assert to_messages({"instruction": "Greet", "output": "hi"})[0] == {"role": "user", "content": "Greet"}
    assert to_messages({"prompt": "a", "completion": "b"})[1] == {"role": "assistant", "content": "b"}
    named = {"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "u", "name": "ann"},
                          {"role": "assistant", "content": "a"}]}
    assert to_messages(named)[1] == {"role": "user", "content": "u"}  # OpenAI's extra keys are dropped
    path = tmp_path / "qa.jsonl"
    path.write_text("\n".join(json.dumps(e) for e in _examples()[:20]) + "\n\n")  # a trailing blank line is fine
    data = load_data(str(path))
    assert data.kind == "chat" and len(data.train) == 18 and len(data.test) == 2
    assert data.report.counts["conversations"] == 20 and data.report.counts["messages"] == 40


def test_malformed_lines_are_reported_by_number_all_at_once(tmp_path):
    good = json.dumps({"prompt": "a", "completion": "b"})
    lines = [good, "{not json", good, json.dumps({"messages": [{"role": "robot", "content": "x"}]}),
             json.dumps({"messages": [{"role": "user", "content": "q"}]}), json.dumps({"text": "x"}),
             json.dumps({"messages": [{"role": "user", "content": "q"}, {"role": "system", "content": "s"},
                                      {"role": "assistant", "content": "a"}]}), "[1, 2]"]
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError) as caught:
        load_chat(path)
    message = str(caught.value)
    assert "6 malformed line(s)" in message
    for words in ("line 2: not JSON", "line 4: message 0 has role 'robot'", "line 5: the example has no non-empty "
                  "assistant turn", "line 6: expected `messages`", "line 7: message 1 is a system message",
                  "line 8: each line must be a JSON object"):
        assert words in message, message
    assert "line 1" not in message and "line 3" not in message and "docs/chat.md" in caught.value.fix
    (tmp_path / "empty.jsonl").write_text("\n\n")
    with pytest.raises(DataError, match="holds no examples"):
        load_chat(tmp_path / "empty.jsonl")


# -- the template --------------------------------------------------------------------------------

def test_render_masks_all_but_the_assistants_turns_and_user_text_cannot_spell_a_special_token():
    tokenizer = _chat_tokenizer()
    ids, mask = render(tokenizer, [{"role": "system", "content": "be brief"}, {"role": "user", "content": "<|end|>"},
                                   {"role": "assistant", "content": "ok"}])
    special = tokenizer.special_ids
    system = [special["<|system|>"], *tokenizer.encode(" be brief"), tokenizer.end_id]  # content after one space
    user = [special["<|user|>"], *tokenizer.encode(" <|end|>"), tokenizer.end_id]
    assistant = [special["<|assistant|>"], *tokenizer.encode(" ok"), tokenizer.end_id]
    assert ids == system + user + assistant
    assert mask == [False] * (len(system) + len(user) + 1) + [True] * 4  # " ", "o", "k" and <|end|>
    assert sum(i >= tokenizer.offset for i in user) == 2  # the typed "<|end|>" is seven characters, not the token
    assert tokenizer.vocab_size == tokenizer.offset + len(SPECIAL_TOKENS)
    assert tokenizer.decode(ids) == " be brief <|end|> ok"  # the structure decodes to nothing


def test_prompt_ids_keep_the_system_message_and_the_latest_whole_turns():
    tokenizer = _chat_tokenizer()
    turns = [{"role": "system", "content": "sys"}] + [{"role": role, "content": f"{role} turn {ALPHABET[i]}"}
                                                      for i in range(6) for role in ("user", "assistant")][:-1]
    whole = prompt_ids(tokenizer, turns, None, 10)
    assert whole[-1] == tokenizer.special_ids["<|assistant|>"] and len(whole) == sum(
        len(render(tokenizer, [m])[0]) for m in turns) + 1
    cut = prompt_ids(tokenizer, turns, 64, 100)  # the reply gets min(100, 64 // 2) = 32 tokens of room
    assert len(cut) <= 64 - 32
    text = tokenizer.decode(cut)
    assert text.startswith(" sys") and text.endswith("user turn f") and "turn a" not in text
    kept = [m for m in turns[1:] if m["content"] in text]
    assert kept == turns[len(turns) - len(kept):]  # the latest turns, each whole
    long = prompt_ids(tokenizer, [{"role": "user", "content": "x" * 500}], 64, 10)
    assert len(long) == 64 - 10 and tokenizer.decode(long) == "x" * (64 - 10 - 2)  # its end kept, then <|end|>
    with pytest.raises(ConfigError, match="the last message is the assistant's"):
        prompt_ids(tokenizer, turns + [{"role": "assistant", "content": "x"}], 64, 10)


def test_packing_keeps_examples_whole_in_order_and_masks_the_padding():
    examples = [([1, 2, 3], [False, True, True]), ([4, 5], [False, True]), ([6, 7, 8, 9], [False, False, True, True]),
                (list(range(10, 20)), [True] * 10)]
    windows, masks = pack(examples, 6, pad=0)
    assert windows.tolist() == [[1, 2, 3, 4, 5, 0], [6, 7, 8, 9, 0, 0], [10, 11, 12, 13, 14, 15]]
    assert masks.tolist() == [[False, True, True, False, True, False], [False, False, True, True, False, False],
                              [True] * 6]  # the long example keeps its first window


def _chat_gpt(seed: int = 0) -> GPT:
    tokenizer = _chat_tokenizer()
    torch.manual_seed(seed)
    model = GPT(GPTConfig(chars=tokenizer.base.chars, vocab_size=tokenizer.vocab_size, chat_tokens=SPECIAL_TOKENS,
                          **TINY))
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.3) if p.ndim == 2 else None
    return model.eval()


def test_the_loss_is_cross_entropy_over_the_masked_targets_only():
    model = _chat_gpt()
    tokenizer = model.require_chat()
    conversations = [to_messages({"prompt": f"say {w}", "completion": w.upper()}) for w in WORDS]
    windows, masks = pack([render(tokenizer, c) for c in conversations], TINY["block_size"] + 1, tokenizer.end_id)
    loss = model.loss((windows, masks))["loss"]
    logits = model.logits(windows[:, :-1])
    targets, keep = windows[:, 1:], masks[:, 1:]
    expected = F.cross_entropy(logits[keep], targets[keep])
    assert torch.allclose(loss, expected, atol=1e-5), (loss, expected)
    unmasked = F.cross_entropy(logits.flatten(0, 1), targets.flatten())
    assert abs(float(unmasked - expected)) > 1e-3  # the mask changes the loss
    assert abs(model.chat_loss(conversations)["nats_per_token"] - float(expected)) < 1e-4
    assert model.chat_loss(conversations)["tokens"] == int(keep.sum())


def test_grown_vocabulary_rows_are_the_mean_and_the_base_tokens_logits_do_not_move():
    tokenizer = _chat_tokenizer()
    torch.manual_seed(0)
    base = GPT(GPTConfig(chars=tokenizer.base.chars, vocab_size=tokenizer.offset, **TINY)).eval()
    state = base.state_dict()
    grown = grow_vocabulary(state, list(GPT.VOCABULARY_TENSORS), tokenizer.vocab_size)
    assert set(grown) == set(state)
    for name in GPT.VOCABULARY_TENSORS:
        old, new = state[name], grown[name]
        assert new.shape[0] == tokenizer.vocab_size and torch.equal(new[: old.shape[0]], old)
        assert torch.allclose(new[old.shape[0]:], old.mean(0).expand(len(SPECIAL_TOKENS), -1))
    chat = GPT(GPTConfig(chars=tokenizer.base.chars, vocab_size=tokenizer.vocab_size, chat_tokens=SPECIAL_TOKENS,
                         **TINY)).eval()
    chat.load_state_dict(grown)
    ids = torch.tensor([tokenizer.encode("All:\nSpeak")])
    assert torch.allclose(chat.logits(ids)[..., : tokenizer.offset], base.logits(ids), atol=1e-5)


# -- end to end: pre-train, instruction-tune, chat -------------------------------------------------

@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A pre-trained tiny GPT (`base`) and its instruction-tuned copy (`chat`), through the CLI."""
    root = tmp_path_factory.mktemp("chat")
    text = root / "text.txt"
    text.write_text(TEXT)
    qa = _write_jsonl(root / "qa.jsonl", _examples())
    flags = [f"--model.{k.replace('_', '-')}={v}" for k, v in TINY.items()]
    common = ["--progress", "false", "--threads", "1"]
    assert main(["train", "gpt", "--data", str(text), "--out", str(root / "base"), "--max-steps", "20",
                 "--warmup-steps", "5", "--val-every", "20", "--batch-size", "16", *flags, *common]) == 0
    assert main(["finetune", str(root / "base"), "--data", qa, "--method", "sft", "--out", str(root / "chat"),
                 "--max-steps", "100", "--lr", "3e-3", "--batch-size", "16", "--warmup-steps", "10", *common]) == 0
    return {"root": root, "base": root / "base", "chat": root / "chat", "qa": qa, "text": text}


def test_sft_adds_the_template_and_the_model_answers_exactly(runs):
    report = json.loads((runs["chat"] / "finetune.json").read_text())
    assert report["method"] == "sft" and report["chat"]
    assert report["target_loss_after"] < 0.3 * report["target_loss_before"], report
    template = json.loads((runs["chat"] / "model" / "chat_template.json").read_text())
    assert template["special_tokens"] == list(SPECIAL_TOKENS)
    model = genlab.load(runs["chat"])
    assert model.has_chat_template and model.config.vocab_size == genlab.load(runs["base"]).config.vocab_size + 4
    for word in WORDS:
        pieces = list(model.chat([{"role": "user", "content": f"say {word}"}], temperature=0, max_new_tokens=20))
        assert "".join(pieces) == word.upper()  # ended by <|end|>, which is not in the text
    two_turns = [{"role": "user", "content": "say beta"}, {"role": "assistant", "content": "BETA"},
                 {"role": "user", "content": "say omega"}]
    assert "".join(model.chat(two_turns, temperature=0)) == "OMEGA"
    with pytest.raises(ConfigError, match="not a conversation"):
        model.chat([{"role": "narrator", "content": "x"}])
    with pytest.raises(ConfigError, match="no chat template"):
        genlab.load(runs["base"]).chat([{"role": "user", "content": "hi"}])


def test_chat_verb_scripted_and_interactive(runs, capsys, monkeypatch):
    assert main(["chat", str(runs["chat"]), "--message", "say gamma", "--message", "say delta",
                 "--temperature", "0"]) == 0
    assert capsys.readouterr().out.splitlines() == ["> say gamma", "GAMMA", "> say delta", "DELTA"]
    typed = iter(["say sigma", "/reset", "say alpha", ""])
    monkeypatch.setattr("builtins.input", lambda prompt="": next(typed))
    assert main(["chat", str(runs["chat"]), "--temperature", "0"]) == 0
    out = capsys.readouterr().out
    assert "SIGMA\n" in out and "ALPHA\n" in out and "/reset starts afresh" in out


def test_chat_errors_name_the_fix(runs, capsys, tmp_path):
    assert main(["chat", str(runs["base"]), "--message", "hi"]) == 2
    err = capsys.readouterr().err
    assert "no chat template" in err and "genlab finetune" in err and "Traceback" not in err
    assert main(["finetune", str(runs["base"]), "--data", str(runs["text"]), "--method", "sft",
                 "--out", str(tmp_path / "x"), "--progress", "false"]) == 2
    assert "plain text" in capsys.readouterr().err
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "a", "completion": "b"}) + "\n{oops\n")
    assert main(["finetune", str(runs["base"]), "--data", str(bad), "--method", "sft", "--out", str(tmp_path / "y"),
                 "--progress", "false"]) == 2
    err = capsys.readouterr().err
    assert "line 2: not JSON" in err and "Traceback" not in err
    assert not (tmp_path / "y").exists() or not (tmp_path / "y" / "model").exists()
    unknown = tmp_path / "greek.jsonl"
    unknown.write_text(json.dumps({"prompt": "say λ", "completion": "Λ"}) + "\n")
    assert main(["finetune", str(runs["base"]), "--data", str(unknown), "--method", "sft",
                 "--out", str(tmp_path / "z"), "--progress", "false"]) == 2
    assert "λ" in capsys.readouterr().err


def test_lora_on_conversations_learns_and_merges(runs):
    from genlab.engine.finetune import finetune

    report = finetune(str(runs["base"]), runs["qa"], method="lora", rank=4, out=str(runs["root"] / "lora"),
                      max_steps=15, batch_size=16, warmup_steps=3, threads=1, progress=False)
    assert report["chat"] and report["method"] == "lora"
    assert report["target_loss_after"] < report["target_loss_before"]
    model = genlab.load(runs["root"] / "lora")
    assert model.has_chat_template and not any("lora" in name for name in model.state_dict())


def test_replay_mixes_plain_windows_of_the_base_text_into_the_conversations(tmp_path):
    from genlab.config import TrainConfig
    from genlab.engine.recipes import chat_loaders

    text = tmp_path / "text.txt"
    text.write_text(TEXT)
    tokenizer = _chat_tokenizer()
    model = GPT(GPTConfig(chars=tokenizer.base.chars, vocab_size=tokenizer.vocab_size, chat_tokens=SPECIAL_TOKENS,
                          **TINY))
    data = load_data(_write_jsonl(tmp_path / "qa.jsonl", _examples()))
    plain, _ = chat_loaders(model, data, TrainConfig(holdout=0, batch_size=4), lambda: 0)
    mixed, _ = chat_loaders(model, data, TrainConfig(holdout=0, batch_size=4, replay=0.25, replay_data=str(text)),
                            lambda: 0)
    chats, ids, masks = plain.tensors[0], *mixed.tensors
    assert torch.equal(ids[: len(chats)], chats)  # the conversations, then the replayed windows
    replayed, replayed_masks = ids[len(chats):], masks[len(chats):]
    assert len(replayed) == round(len(chats) * 0.25 / 0.75) and replayed_masks.all()
    stream = model.encode(TEXT).tolist()
    for window in replayed.tolist():  # a slice of the base text, no chat token in it
        assert max(window) < tokenizer.offset
        start = next(i for i in range(len(stream)) if stream[i : i + len(window)] == window)
        assert stream[start : start + len(window)] == window
    with pytest.raises(ConfigError, match="replay"):
        TrainConfig(replay=0.5)
    with pytest.raises(ConfigError, match=r"\[0, 1\)"):
        TrainConfig(replay=1.0, replay_data=str(text))


def test_replay_keeps_the_base_text_and_is_refused_on_plain_text(runs, tmp_path):
    from genlab.engine.finetune import finetune

    without = json.loads((runs["chat"] / "finetune.json").read_text())
    report = finetune(str(runs["base"]), runs["qa"], method="sft", out=str(tmp_path / "replayed"), max_steps=100,
                      lr=3e-3, batch_size=16, warmup_steps=10, threads=1, progress=False, replay=0.5)
    # the same tuning with half its windows the pre-training text gives up less of it, and still learns the task
    assert report["base_loss_after"] < without["base_loss_after"], (report, without)
    assert report["target_loss_after"] < 0.5 * report["target_loss_before"], report
    record = (tmp_path / "replayed" / "config.yaml").read_text()
    assert "replay: 0.5" in record and str(runs["text"]) in record
    with pytest.raises(ConfigError, match="plain text"):
        finetune(str(runs["base"]), str(runs["text"]), method="full", out=str(tmp_path / "x"), replay=0.5)
    with pytest.raises(ConfigError, match="none recorded"):
        finetune(str(runs["base"] / "model"), runs["qa"], method="sft", out=str(tmp_path / "y"), replay=0.5)


def test_a_chat_model_is_also_resumed_from_a_copy_with_its_template(runs, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(runs["chat"] / "model", copy)
    assert genlab.load(copy).has_chat_template
    (copy / "chat_template.json").unlink()
    with pytest.raises(Exception, match="chat_template.json"):
        genlab.load(copy)


# -- the server, through the official client -------------------------------------------------------

def test_openai_client_chat_stream_stop_and_errors(runs):
    openai = pytest.importorskip("openai", reason="pip install openai (make test installs it)")
    from servers import uvicorn_server

    from genlab.serve import ServeConfig, create_app
    from genlab.serve.registry import load_models

    registry = load_models([f"chat={runs['chat']}", f"plain={runs['base']}"])
    app = create_app(registry, ServeConfig(threads=1, concurrency=2, max_tokens=64))
    with uvicorn_server(app) as url:
        client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
        reply = client.chat.completions.create(model="chat", messages=[{"role": "user", "content": "say alpha"}],
                                               temperature=0, max_tokens=20)
        choice = reply.choices[0]
        assert choice.message.role == "assistant" and choice.message.content == "ALPHA"
        assert choice.finish_reason == "stop" and reply.object == "chat.completion"
        # the separating space and the reply, a token a character; the end token only stops it
        assert reply.usage.completion_tokens == len(" ALPHA")
        assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens

        chunks = list(client.chat.completions.create(
            model="chat", messages=[{"role": "user", "content": "say omega"}], temperature=0, stream=True))
        assert chunks[0].choices[0].delta.role == "assistant"
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "OMEGA"
        assert chunks[-1].choices[0].finish_reason == "stop" and len(chunks) > 3  # piece by piece

        stopped = client.chat.completions.create(model="chat", messages=[{"role": "user", "content": "say omega"}],
                                                 temperature=0, stop=["G"])
        assert stopped.choices[0].message.content == "OME" and stopped.choices[0].finish_reason == "stop"

        short = client.chat.completions.create(model="chat", messages=[{"role": "user", "content": "say gamma"}],
                                               temperature=0, max_tokens=3)
        assert short.choices[0].message.content == "GA" and short.choices[0].finish_reason == "length"

        several = client.chat.completions.create(model="chat", messages=[{"role": "user", "content": "say beta"}],
                                                 n=3, seed=1, temperature=1.0)
        assert [c.index for c in several.choices] == [0, 1, 2]
        seeded = client.chat.completions.create(model="chat", messages=[{"role": "user", "content": "say beta"}],
                                                n=3, seed=1, temperature=1.0)
        assert [c.message.content for c in several.choices] == [c.message.content for c in seeded.choices]

        with pytest.raises(openai.BadRequestError) as plain:
            client.chat.completions.create(model="plain", messages=[{"role": "user", "content": "hi"}])
        assert "no chat template" in plain.value.message and "genlab finetune" in plain.value.message
        with pytest.raises(openai.UnprocessableEntityError) as bad:
            client.chat.completions.create(model="chat", messages=[{"role": "user", "content": "hi"}], temperature=-1)
        assert "temperature" in bad.value.message
        with pytest.raises(openai.BadRequestError, match="assistant"):
            client.chat.completions.create(model="chat", messages=[{"role": "user", "content": "hi"},
                                                                   {"role": "assistant", "content": "x"}])
        with pytest.raises(openai.BadRequestError, match="only the first message may be one"):
            client.chat.completions.create(model="chat", messages=[{"role": "user", "content": "hi"},
                                                                   {"role": "system", "content": "x"}])
        completion = client.completions.create(model="plain", prompt="All:", max_tokens=5, seed=0)
        assert len(completion.choices[0].text) == 5  # the completion endpoint is unchanged


def test_the_page_holds_a_two_turn_conversation_in_chromium(runs):
    playwright = pytest.importorskip("playwright.sync_api", reason="pip install playwright (make test installs it)")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("no chromium binary: apt-get install chromium (make test installs it where apt works)")
    from servers import uvicorn_server, wait_until

    from genlab.serve import ServeConfig, create_app
    from genlab.serve.registry import load_models

    app = create_app(load_models([f"chat={runs['chat']}", f"plain={runs['base']}"]),
                     ServeConfig(threads=1, concurrency=2, max_tokens=64))
    sent = []
    with uvicorn_server(app) as url, playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1200, "height": 800})
        page.on("request", lambda r: sent.append(json.loads(r.post_data)) if r.url.endswith("/chat/completions")
                else None)
        page.goto(url + "/")
        wait_until(lambda: page.locator("#model option").count() == 2, 30)
        page.select_option("#model", "chat")
        assert page.is_visible("#mode-box") and page.is_visible("#chat") and page.text_content("#generate") == "Send"
        page.fill("#temperature", "0")
        for word in ("delta", "sigma"):
            page.fill("#prompt", f"say {word}")
            page.click("#generate")
            wait_until(lambda: not page.is_disabled("#generate") and "finished" in page.text_content("#meta"), 30)
        replies = page.locator("#chat .assistant").all_text_contents()
        users = page.locator("#chat .user").all_text_contents()
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "serve-chat.png"))
        page.click("#new-chat")
        emptied = page.locator("#chat .message").count()
        page.select_option("#model", "plain")
        plain_view = page.is_hidden("#mode-box") and page.is_hidden("#chat") and page.is_visible("#output")
        browser.close()
    assert users == ["say delta", "say sigma"] and replies == ["DELTA", "SIGMA"]
    assert sent[1]["messages"] == [{"role": "user", "content": "say delta"}, {"role": "assistant", "content": "DELTA"},
                                   {"role": "user", "content": "say sigma"}]  # the history goes with the second turn
    assert emptied == 0 and plain_view
