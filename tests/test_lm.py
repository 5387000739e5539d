"""Language models (gpt, rnn): tokenizers, generation, LoRA, persistence, fine-tuning and the CLI, on tiny configs."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
import torch

import genlab
from genlab.cli import main
from genlab.data.tokenizers import UNKNOWN, BPETokenizer, CharTokenizer, StreamDecoder, load_tokenizer
from genlab.engine.recipes import recipe_for
from genlab.errors import ConfigError, DataError
from genlab.evaluation.evaluate import text_generation_metrics
from genlab.models.lm.decode import decode_step, decode_torch
from genlab.models.lm.generation import StopMatcher, filter_logits, generate, next_token
from genlab.models.lm.gpt import GPT, GPTConfig
from genlab.models.lm.lora import add_lora, merge_lora
from genlab.models.lm.rnn import RNN

TEXT = ("First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n\n"
        "First Citizen:\nYou are all resolved rather to die than to famish?\n\nAll:\nResolved. resolved.\n\n") * 40
TINY_GPT = {"block_size": 16, "n_layer": 2, "n_head": 2, "n_embd": 16}
TINY_RNN = {"block_size": 16, "bptt": 5, "n_layer": 2, "n_embd": 8, "hidden": 16}
TINY_TRAIN = ["--batch-size", "8", "--val-every", "5", "--val-batches", "2", "--ckpt-every", "3", "--log-every", "2",
              "--sample-every", "1000", "--warmup-steps", "2", "--progress", "false", "--threads", "1"]


def _model(cls, tiny, tokenizer=None, seed=0, **extra):
    tokenizer = tokenizer or CharTokenizer.fit(TEXT)
    torch.manual_seed(seed)
    fields = (
        {"chars": tokenizer.chars}
        if tokenizer.kind == "char"
        else {"tokenizer": "bpe", "tokenizer_hash": tokenizer.hash}
    )
    model = cls(cls.Config(vocab_size=tokenizer.vocab_size, **fields, **tiny, **extra))
    model.tokenizer = tokenizer
    with torch.no_grad():  # random weights with some spread, so that greedy decoding is not one repeated token
        for name, p in model.named_parameters():
            p.normal_(0, 0.3) if p.ndim == 2 and "lora" not in name else None
    return model.eval()


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def text_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("text") / "tiny.txt"
    path.write_text(TEXT)
    return path


# -- tokenizers ---------------------------------------------------------------------------------

def test_char_tokenizer_round_trip_and_unseen_characters():
    tok = CharTokenizer.fit(TEXT)
    assert tok.decode(tok.encode(TEXT)) == TEXT
    assert tok.decode(tok.encode("Zebra ünï 🙂")) == f"{UNKNOWN}e{UNKNOWN}ra {UNKNOWN}n{UNKNOWN} {UNKNOWN}"
    with pytest.raises(DataError, match="cannot encode .*'Z'"):
        tok.encode("Zebra", strict=True)


def test_bpe_round_trip_any_text_and_streaming(tmp_path):
    tok = BPETokenizer.fit(TEXT, vocab_size=300)
    assert 256 < tok.vocab_size <= 300
    unseen = "naïve café — 東京 🙂 Zebra\ttabs"
    for text in (TEXT[:500], unseen):
        assert tok.decode(tok.encode(text)) == text
    stream = StreamDecoder(tok)
    pieces = [stream.push(i) for i in tok.encode(unseen)]
    assert "".join(pieces) == unseen and all(UNKNOWN not in p for p in pieces)  # no half characters emitted
    tok.save(tmp_path)
    loaded = load_tokenizer(tmp_path)
    assert loaded.hash == tok.hash and loaded.encode(unseen) == tok.encode(unseen)


def test_bpe_dropout_segmentations_decode_to_the_text_and_follow_the_seed():
    tok = BPETokenizer.fit(TEXT, vocab_size=320)
    text = TEXT[:2000] + "naïve café 🙂\n"
    plain = tok.encode_with_dropout(text, 0.0, copies=1, seed=0)[0]
    assert plain.tolist() == tok.encode(text)  # dropout 0 is Hugging Face's BPE exactly
    copies = tok.encode_with_dropout(text, 0.2, copies=3, seed=5)
    assert all(tok.decode(c.tolist()) == text for c in copies)
    assert all(len(c) > len(plain) for c in copies)  # skipped merges leave smaller pieces
    assert len({tuple(c.tolist()) for c in copies}) == 3
    again = tok.encode_with_dropout(text, 0.2, copies=3, seed=5)
    assert all(np.array_equal(a, b) for a, b in zip(copies, again))
    with pytest.raises(ValueError, match="BPE-dropout"):
        tok.encode_with_dropout(text, 1.0, copies=1, seed=0)


def test_bpe_dropout_trains_on_the_copies_and_validates_on_the_plain_encoding():
    from types import SimpleNamespace

    from genlab.config import TrainConfig

    tok = BPETokenizer.fit(TEXT, vocab_size=320)
    model = _model(GPT, TINY_GPT, tokenizer=tok, bpe_dropout=0.1, bpe_copies=4)
    data = SimpleNamespace(kind="text", train=TEXT, test="")
    train, val = recipe_for("gpt").loaders(model, data, TrainConfig(batch_size=4), lambda: 0)
    plain = len(tok.encode(TEXT))
    assert len(train.tensors[0]) > 4 * 0.9 * plain  # four copies, each longer than the plain encoding's 95%
    held = torch.cat(list(val.tensors[0])).tolist()
    start = TEXT.rfind(tok.decode(held))
    assert start > 0.9 * len(TEXT)  # the held-out tail, encoded the one way
    assert tok.encode(TEXT[start:])[: len(held)] == held
    with pytest.raises(ConfigError, match="needs a BPE tokenizer"):
        _model(GPT, TINY_GPT, bpe_dropout=0.1)  # the config refuses it before any data is read


@pytest.mark.parametrize("bpe_dropout", [0.0, 0.1])
def test_holdout_zero_trains_on_the_whole_training_text(bpe_dropout):
    from types import SimpleNamespace

    from genlab.config import TrainConfig

    tok = BPETokenizer.fit(TEXT, vocab_size=320)
    model = _model(GPT, TINY_GPT, tokenizer=tok, bpe_dropout=bpe_dropout, bpe_copies=1)
    data = SimpleNamespace(kind="text", train=TEXT, test="")

    def text_of(loader):  # windows start at every offset: the first window and each next one's last token
        windows = loader.tensors[0]
        return tok.decode(torch.cat([windows[0], windows[1:, -1]]).tolist())

    held, val = recipe_for("gpt").loaders(model, data, TrainConfig(batch_size=4), lambda: 0)
    assert val is not None and TEXT.startswith(text_of(held)) and len(text_of(held)) < 0.96 * len(TEXT)
    whole, none = recipe_for("gpt").loaders(model, data, TrainConfig(batch_size=4, holdout=0.0), lambda: 0)
    assert none is None and text_of(whole) == TEXT
    with pytest.raises(ConfigError, match="holdout"):
        TrainConfig(holdout=1.0)


# -- sampling -----------------------------------------------------------------------------------

def test_top_k_and_top_p_never_emit_excluded_tokens():
    logits = torch.tensor([3.0, 2.5, 2.0, 0.0, -1.0, -2.0])
    assert (
        torch.isinf(filter_logits(logits, top_k=2)[2:]).all()
        and torch.isfinite(filter_logits(logits, top_k=2)[:2]).all()
    )
    probs = logits.softmax(-1)  # [0.48, 0.29, 0.18, ...]: the nucleus of 0.7 is the first two tokens
    assert probs[0] < 0.7 < probs[:2].sum()
    kept = torch.isfinite(filter_logits(logits, top_p=0.7))
    assert kept.tolist() == [True, True, False, False, False, False]
    generator = torch.Generator().manual_seed(0)
    for options, allowed in [
        ({"top_k": 2}, {0, 1}),
        ({"top_p": 0.7}, {0, 1}),
        ({"top_k": 3, "top_p": 0.99}, {0, 1, 2}),
    ]:
        drawn = {next_token(logits, 1.0, generator=generator, **options) for _ in range(300)}
        assert drawn == allowed, options


def test_sampling_draws_from_the_tempered_distribution():
    """The Gumbel-max draws, in blocks from one generator, follow softmax(logits / T): each token's
    frequency over 20,000 draws within 4 standard errors of its probability (and a seed repeats them)."""
    from genlab.models.lm.generation import GumbelNoise

    logits, temperature, n = torch.tensor([1.0, 0.5, 0.0, -0.5, -3.0]), 0.8, 20_000
    noise = GumbelNoise(5, torch.Generator().manual_seed(0))
    counts = torch.bincount(torch.tensor([next_token(logits, temperature, noise=noise) for _ in range(n)]), minlength=5)
    p = (logits / temperature).softmax(-1)
    assert ((counts / n - p).abs() <= 4 * (p * (1 - p) / n).sqrt()).all(), (counts / n, p)
    first, again = (GumbelNoise(5, torch.Generator().manual_seed(1)) for _ in range(2))
    assert [next_token(logits, temperature, noise=first) for _ in range(100)] == \
        [next_token(logits, temperature, noise=again) for _ in range(100)]


def test_repetition_penalty_and_greedy():
    logits = torch.tensor([2.0, 1.9, -1.0])
    seen = torch.tensor([True, False, False])
    assert next_token(logits, 0) == 0
    assert next_token(logits, 0, repetition_penalty=1.2, seen=seen) == 1  # 2.0 / 1.2 < 1.9


def test_stop_strings_across_pieces():
    matcher = StopMatcher(["\n\n", "END"])
    out = [matcher.feed(p) for p in ["Hello", " E", "N", "x wor", "ld\n", "\nmore"]]
    assert "".join(out) == "Hello ENx world" and matcher.done
    model = _model(GPT, TINY_GPT)
    full = "".join(model.generate("All", max_new_tokens=40, temperature=0))
    cut = full[3] if full[3:4] else "a"  # stop at the 4th generated character
    stopped = "".join(model.generate("All", max_new_tokens=40, temperature=0, stop=cut))
    assert stopped == full[: full.index(cut)]


@pytest.mark.parametrize("cls,tiny", [(GPT, TINY_GPT), (RNN, TINY_RNN)])
def test_cached_generation_equals_recomputation_under_greedy(cls, tiny):
    model = _model(cls, tiny)
    # 60 new tokens: past the GPT's context of 16, so the sliding window is exercised too
    cached = list(model.generate("First", max_new_tokens=60, temperature=0))
    recomputed = list(generate(model, "First", max_new_tokens=60, temperature=0, use_cache=False))
    assert cached == recomputed and len("".join(cached)) == 60


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("extra", [{}, {"positions": "learned", "qk_norm": False, "activation": "gelu"},
                                   {"lora_rank": 4}, {"logit_softcap": 2.0}])
def test_one_token_decode_equals_the_full_forward(extra, batch):
    """GPT.decode (transposed weights, RoPE as a matrix, hand-written single-query attention) gives the
    logits of the whole-sequence forward at every position, for one sequence and a batch, for each
    position and MLP variant, with an unmerged LoRA adapter and with capped logits."""
    model = _model(GPT, TINY_GPT, **extra)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.normal_(0, 0.3) if name.endswith("lora_B") else None
        ids = torch.randint(0, model.config.vocab_size, (batch, 16), generator=torch.Generator().manual_seed(0))
        full = model(ids)
        cache = model.new_cache(batch)
        model(ids[:, :5], cache)
        for t in range(5, 16):
            assert torch.allclose(decode_step(model, ids[:, t], cache), full[:, t], atol=1e-4)
        with pytest.raises(ValueError, match="exceed the context"):
            decode_step(model, ids[:, 0], cache)


needs_compiler = pytest.mark.skipif(shutil.which(os.environ.get("CC", "cc")) is None, reason="no C compiler here")


@needs_compiler
@pytest.mark.parametrize("extra", [{}, {"positions": "learned", "qk_norm": False, "activation": "gelu"},
                                   {"lora_rank": 4}, {"logit_softcap": 2.0}, {"n_head": 4, "n_embd": 24}])
def test_compiled_decode_equals_the_torch_decode(extra):
    """The C kernel (genlab/native/gpt_decode.c) is what one-sequence decoding runs where a compiler is,
    and gives the torch path's logits and cache contents at every position, for each variant."""
    model = _model(GPT, {**TINY_GPT, **extra})
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.normal_(0, 0.3) if name.endswith("lora_B") else None
        ids = torch.randint(0, model.config.vocab_size, (1, 16), generator=torch.Generator().manual_seed(2))
        native, reference = model.new_cache(), model.new_cache()
        assert native.native is not None
        reference.native = None
        model(ids[:, :3], native), model(ids[:, :3], reference)
        for t in range(3, 16):
            assert torch.allclose(
                decode_step(model, ids[:, t], native), decode_torch(model, ids[:, t], reference), atol=1e-5
            )
        assert native.pos == reference.pos == 16
        assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(native.k + native.v, reference.k + reference.v))
        with pytest.raises(ValueError, match="exceed the context"):
            model.step(0, native)
        with pytest.raises(ValueError, match="outside the vocabulary"):
            model.step(model.config.vocab_size, model.new_cache())


def test_generation_without_a_compiler_falls_back_to_torch(monkeypatch, tmp_path):
    """A machine whose compiler fails loses the kernel, not the feature: the same greedy text."""
    import genlab.native

    model = _model(GPT, TINY_GPT)
    expected = "".join(model.generate("First", max_new_tokens=30, temperature=0))
    monkeypatch.setattr(genlab.native, "_loaded", {})
    monkeypatch.setenv("GENLAB_HOME", str(tmp_path))
    monkeypatch.setenv("CC", "false")  # a compiler that always fails
    assert model.new_cache().native is None
    assert "".join(model.generate("First", max_new_tokens=30, temperature=0)) == expected
    assert not list((tmp_path / "native").glob("*.so"))


def test_decode_snapshot_follows_weight_updates():
    """The transposed-weight snapshot is reused across caches only while no parameter changed."""
    model = _model(GPT, TINY_GPT)
    ids = torch.randint(0, model.config.vocab_size, (1, 8), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        first = model.new_cache().weights
        assert model.new_cache().weights is first
        model.blocks[0].mlp.fc.weight.mul_(2)  # as an optimiser step would, in place
        cache = model.new_cache()
        assert cache.weights is not first
        model(ids[:, :7], cache)
        assert torch.allclose(decode_step(model, ids[:, 7], cache), model(ids)[:, -1], atol=1e-4)


def test_seed_reproduces_output_and_bounds_are_checked():
    model = _model(GPT, TINY_GPT)
    a = "".join(model.generate("All", max_new_tokens=30, seed=3, top_p=0.95))
    assert a == "".join(model.generate("All", max_new_tokens=30, seed=3, top_p=0.95))
    assert a != "".join(model.generate("All", max_new_tokens=30, seed=4, top_p=0.95))
    assert UNKNOWN not in "".join(model.generate("Zz", max_new_tokens=30, seed=1))  # unknown prompt chars are fine
    for bad in [{"max_new_tokens": 10**9}, {"temperature": -1}, {"top_p": 0}, {"top_k": 0}]:
        with pytest.raises(ConfigError):
            "".join(model.generate("All", **{"max_new_tokens": 5, **bad}))


# -- LoRA ---------------------------------------------------------------------------------------

def test_lora_starts_at_the_base_and_merges_exactly():
    base = _model(GPT, TINY_GPT)
    adapted = _model(GPT, TINY_GPT, lora_rank=4)
    adapted.load_state_dict(base.state_dict(), strict=False)
    ids = torch.randint(0, base.config.vocab_size, (2, 16), generator=torch.Generator().manual_seed(0))
    assert torch.allclose(adapted.logits(ids), base.logits(ids), atol=1e-6)  # B = 0: exactly the base model
    trainable = {n for n, p in adapted.named_parameters() if p.requires_grad}
    assert trainable and all(n.endswith(("lora_A", "lora_B")) for n in trainable)
    assert "head.lora_B" in trainable  # the head tied to the embedding: one adapter for both, merged as one
    with torch.no_grad():
        for name, p in adapted.named_parameters():
            if name.endswith("lora_B"):
                p.normal_(0, 0.1)
    merged = merge_lora(adapted)
    assert merged.config.lora_rank == 0 and not any("lora" in k for k in merged.state_dict())
    assert torch.allclose(merged.logits(ids), adapted.logits(ids), atol=1e-5)
    assert not torch.allclose(merged.logits(ids), base.logits(ids), atol=1e-3)
    with pytest.raises(ConfigError):
        add_lora(_model(RNN, TINY_RNN), 4, 8)
    # LoRA+: the embedding (tied head) and the norms' gains train too, the blocks' base matrices stay frozen
    plus = _model(GPT, TINY_GPT, lora_rank=4, lora_embeddings=True)
    trainable = {n for n, p in plus.named_parameters() if p.requires_grad}
    assert {"wte.weight", "norm.weight", "blocks.0.norm1.weight"} <= trainable
    assert not any(n.endswith(".weight") and ("attn." in n or "mlp." in n) for n in trainable)
    assert merge_lora(plus).config.lora_embeddings is False


# -- persistence --------------------------------------------------------------------------------

def test_bpe_model_save_load_identical(tmp_path):
    model = _model(GPT, TINY_GPT, tokenizer=BPETokenizer.fit(TEXT, vocab_size=300))
    model.save_pretrained(tmp_path / "m")
    loaded = genlab.load(tmp_path / "m")
    ids = torch.randint(0, model.config.vocab_size, (2, 16), generator=torch.Generator().manual_seed(0))
    assert torch.equal(model.logits(ids), loaded.logits(ids))
    assert "".join(model.generate("All", max_new_tokens=20, seed=1)) == "".join(
        loaded.generate("All", max_new_tokens=20, seed=1)
    )
    (tmp_path / "m" / "tokenizer.json").write_text(BPETokenizer.fit(TEXT[:2000], vocab_size=280).json)
    with pytest.raises(genlab.errors.UnsafeFileError, match="not the tokenizer"):
        genlab.load(tmp_path / "m")


# -- training, resuming, fine-tuning and the CLI ---------------------------------------------------

def _flags(tiny: dict) -> list[str]:
    return [x for k, v in tiny.items() for x in (f"--model.{k}", str(v))]


@pytest.fixture(scope="module")
def gpt_run(tmp_path_factory, text_file):
    out = tmp_path_factory.mktemp("lm") / "gpt"
    assert main(["train", "gpt", "--data", str(text_file), "--out", str(out), "--max-steps", "6",
                 *_flags(TINY_GPT), *TINY_TRAIN]) == 0
    return out


def test_cli_train_generate_and_eval_metrics(gpt_run, capsys):
    capsys.readouterr()
    assert main(["generate", str(gpt_run), "--prompt", "All:", "--max-new-tokens", "25", "--seed", "1",
                 "--top-p", "0.9", "--temperature", "0.8"]) == 0
    first = capsys.readouterr().out
    assert first.startswith("All:") and len(first) >= 26
    assert main(["generate", str(gpt_run / "model"), "--prompt", "All:", "--max-new-tokens", "25", "--seed", "1",
                 "--top-p", "0.9", "--temperature", "0.8"]) == 0
    assert capsys.readouterr().out == first
    model = genlab.load(gpt_run / "model")
    pieces = model.generate("All:", max_new_tokens=10, seed=0)
    assert next(pieces) and not isinstance(pieces, str)  # an iterator of text pieces
    data = _text_data()
    metrics = model.log_likelihood(data.test) | text_generation_metrics(model, data.train, n=3, seed=0, progress=False)
    assert 0 < metrics["nats_per_token"] < 5 and metrics["perplexity"] > 1 and "distinct_2" in metrics
    assert metrics["bits_per_char"] == pytest.approx(metrics["nats_per_token"] / 0.693147, rel=1e-3)


def _text_data():
    from genlab.data.base import DataReport
    from genlab.data.text import split_text

    return split_text("tiny", TEXT, DataReport("tiny", "text"))


def test_cli_bpe_tokenizer_option(tmp_path, text_file):
    out = tmp_path / "bpe"
    # --holdout 0: no validation split
    assert main(["train", "gpt", "--data", str(text_file), "--out", str(out), "--max-steps", "6", "--model.tokenizer",
                 "bpe", "--model.bpe-vocab-size", "300", "--holdout", "0", *_flags(TINY_GPT), *TINY_TRAIN]) == 0
    model = genlab.load(out)
    assert model.config.tokenizer == "bpe" and (out / "model" / "tokenizer.json").exists()
    assert "".join(model.generate("naïve 🙂", max_new_tokens=5, seed=0))


# with dropout the restored RNG state must decide the masks; from prepared token files (genlab data prepare) the
# windows are drawn by batch index, which must continue where the interrupted run stopped
@pytest.mark.parametrize("dropout,prepared", [(0.0, False), (0.2, False), (0.0, True)])
def test_resume_equals_uninterrupted(tmp_path, text_file, dropout, prepared):
    import lightning.pytorch as pl

    from genlab.config import TrainConfig, from_dict
    from genlab.engine.trainer import fit as train

    class StopAt(pl.Callback):  # an interruption after step 3 of 6 (the cosine schedule still spans 6)
        def on_train_batch_end(self, trainer, *args):
            trainer.should_stop = trainer.global_step >= 3

    options = {
        "max_steps": 6,
        "batch_size": 8,
        "val_every": 5,
        "val_batches": 2,
        "ckpt_every": 3,
        "warmup_steps": 2,
        "progress": False,
        "threads": 1,
        **{k: v for k, v in recipe_for("gpt").defaults.items() if k in ("lr", "schedule")},
    }
    config, train_config = GPTConfig(**TINY_GPT, dropout=dropout), from_dict(TrainConfig, options)
    data = str(text_file)
    if prepared:
        from genlab.data.tokens import prepare_text

        data = str(tmp_path / "tokens")
        prepare_text(text_file, data, tokenizer="char", workers=1, test_fraction=0.1)
    train("gpt", data, config, train_config, tmp_path / "whole")
    train("gpt", data, config, train_config, tmp_path / "part", callbacks=[StopAt()])
    train("gpt", data, config, train_config, tmp_path / "part", resume=True)
    a, b = genlab.load(tmp_path / "whole").state_dict(), genlab.load(tmp_path / "part").state_dict()
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-5, atol=1e-6, msg=key)


def test_finetune_lora_merged_and_refuses_unencodable_text(gpt_run, tmp_path, capsys):
    target = tmp_path / "target.txt"
    target.write_text("All:\nSpeak, speak. You are resolved.\n\n" * 60)
    out = tmp_path / "ft"
    assert main(["finetune", str(gpt_run), "--data", str(target), "--method", "lora", "--rank", "2", "--out",
                 str(out), "--max-steps", "4", "--batch-size", "8", "--warmup-steps", "1", "--dropout", "0.1",
                 "--progress", "false", "--threads", "1"]) == 0
    report = json.loads((out / "finetune.json").read_text())
    assert report["target_loss_after"] < report["target_loss_before"] and "base_loss_given_up" in report
    tuned = genlab.load(out)
    assert tuned.config.lora_rank == 0 and "".join(tuned.generate("All", max_new_tokens=5, seed=0))
    assert tuned.config.dropout == 0.1 != genlab.load(gpt_run).config.dropout  # the override trained

    bad = tmp_path / "bad.txt"
    bad.write_text("Zebras & 42 quokkas! " * 100)
    capsys.readouterr()
    assert main(["finetune", str(gpt_run), "--data", str(bad), "--method", "full", "--out", str(tmp_path / "no")]) == 2
    err = capsys.readouterr().err
    assert "cannot encode" in err and "'Z'" in err and "--unknown drop" in err
    assert not (tmp_path / "no" / "checkpoints").exists()
    assert main(["finetune", str(gpt_run), "--data", str(target), "--bpe-dropout", "0.1", "--out",
                 str(tmp_path / "no")]) == 2
    assert "needs a BPE tokenizer" in capsys.readouterr().err  # a char model has no merges to drop


def test_rope_rotates_half_split_pairs_and_keeps_only_relative_positions():
    from genlab.models.lm.gpt import apply_rope, rope_tables

    length, head = 12, 8
    cos, sin = rope_tables(length, head)
    angles = torch.arange(length).float()[:, None] * 10_000 ** (-torch.arange(0, head, 2).float() / head)
    x = torch.randn(length, head)
    x1, x2 = x.chunk(2, dim=-1)
    written_out = torch.cat([x1 * angles.cos() - x2 * angles.sin(), x1 * angles.sin() + x2 * angles.cos()], dim=-1)
    assert torch.allclose(apply_rope(x, cos, sin), written_out, atol=1e-6)
    q, k = torch.randn(head), torch.randn(head)
    score = lambda i, j: float(apply_rope(q, cos[i], sin[i]) @ apply_rope(k, cos[j], sin[j]))  # noqa: E731
    assert abs(score(5, 2) - score(9, 6)) < 1e-4 and abs(score(5, 2) - score(5, 3)) > 1e-3


# -- training speed: what may change numbers, checked against the plain computation ----------------

def test_byte_dropout_rate_scale_and_seed():
    from genlab.models.lm.gpt import byte_dropout

    x = torch.ones(200_000)
    torch.manual_seed(3)
    y = byte_dropout(x, 0.1)
    cut = round(256 * 0.1)  # the rate is p to the nearest 1/256
    dropped = float((y == 0).float().mean())
    assert abs(dropped - cut / 256) < 4 * (cut / 256 * (1 - cut / 256) / len(x)) ** 0.5
    assert y.unique().tolist() == pytest.approx([0.0, 256 / (256 - cut)])  # kept ones are scaled: the mean is kept
    torch.manual_seed(3)
    assert torch.equal(byte_dropout(x, 0.1), y)  # torch's seed decides the mask
    assert not torch.equal(byte_dropout(x, 0.1), y)
    assert byte_dropout(x.bfloat16(), 0.5).dtype == torch.bfloat16
    model = GPT(GPTConfig(chars=list("ab"), vocab_size=2, **TINY_GPT, dropout=0.3)).train()
    ids = torch.zeros(2, 8, dtype=torch.long)
    assert not torch.equal(model(ids), model(ids))
    assert torch.equal(model.eval()(ids), model(ids))  # evaluation drops nothing


def test_muon_orthogonalises_a_stack_as_one_matrix_at_a_time():
    from genlab.engine.optim import orthogonalize

    torch.manual_seed(0)
    g = torch.randn(3, 24, 40)
    stacked = orthogonalize(g)
    for i in range(3):
        torch.testing.assert_close(stacked[i], orthogonalize(g[i]))
        singular = torch.linalg.svdvals(stacked[i])
        assert singular.min() > 0.6 and singular.max() < 1.3  # roughly U V^T: every direction at unit scale
    tall = orthogonalize(g.mT)
    torch.testing.assert_close(tall, stacked.mT)
    low = orthogonalize(g, dtype=torch.bfloat16).float()  # the reference's precision: close to fp32's
    assert (low - stacked).norm() / stacked.norm() < 0.05


def test_precision_auto_follows_the_measured_bf16_speed(monkeypatch):
    from genlab import hardware
    from genlab.engine.optim import newton_schulz_dtype

    for forced, precision, dtype in (("1", "bf16-mixed", torch.bfloat16), ("0", "32-true", torch.float32)):
        monkeypatch.setenv("GENLAB_BF16", forced)
        assert hardware.training_precision("auto", "cpu") == precision
        assert newton_schulz_dtype(torch.device("cpu")) == dtype
        assert hardware.training_precision("32-true", "cpu") == "32-true"  # an explicit choice stands


def test_every_process_of_a_run_takes_the_first_ones_bf16_answer(monkeypatch):
    """A process DDP starts may have timed bf16 itself before the run agreed (under load, differently from the first
    process): once GENLAB_BF16 holds the first process's answer, its precision and Muon's iteration follow it, or
    the processes' weights drift apart (seen in CI: GPT's Muon in bf16 in one process, fp32 in the other)."""
    from genlab import hardware
    from genlab.config import TrainConfig
    from genlab.engine.optim import newton_schulz_dtype
    from genlab.engine.trainer import agreed_precision

    monkeypatch.setenv("GENLAB_BF16", "")  # neither answer forced (restored after the test)
    monkeypatch.setattr(hardware, "_bf16_timed_fast", lambda: False)  # this process timed bf16 as slow
    assert not hardware.bf16_is_fast() and newton_schulz_dtype(torch.device("cpu")) == torch.float32
    monkeypatch.setenv("GENLAB_BF16", "1")  # the first process's answer, inherited
    assert hardware.bf16_is_fast() and newton_schulz_dtype(torch.device("cpu")) == torch.bfloat16
    assert hardware.training_precision("auto", "cpu") == "bf16-mixed"

    monkeypatch.setenv("GENLAB_BF16", "")
    monkeypatch.setattr(hardware, "_bf16_timed_fast", lambda: True)
    # an explicit precision still fixes the answer, for Muon, for the processes started after this one
    assert agreed_precision(TrainConfig(precision="32-true", accelerator="cpu")) == "32-true"
    assert os.environ["GENLAB_BF16"] == "1"


def test_attention_under_bf16_autocast_runs_in_float32():
    model = GPT(GPTConfig(chars=list("abcd"), vocab_size=4, **TINY_GPT))
    ids = torch.randint(0, 4, (2, 16))
    seen = []
    model.blocks[0].attn.proj.register_forward_hook(lambda m, args, out: seen.append(args[0].dtype))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(ids)
    assert seen == [torch.float32] and logits.dtype == torch.bfloat16
    torch.testing.assert_close(logits.float(), model(ids), atol=0.05, rtol=0.05)
