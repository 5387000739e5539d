"""Fine-tuning a saved model on new data: a language model's weights (`full`) or low-rank adapters (`lora`), and
any other trained network in full (a text-to-speech model on a new voice, a vocoder, an image family on new
images): training starts from its weights, with its config, on the new data (`_finetune_network`).

On a JSONL file of conversations it is instruction tuning (`sft`, or `lora` on conversations): the
chat template's tokens are added to the tokenizer, the embedding grows by their rows, and the loss
is the assistant's turns' (genlab.models.lm.chat; docs/chat.md).

LoRA (genlab.models.lm.lora) freezes the pre-trained weights and learns low-rank updates of every
attention and MLP matrix and of the output head, merged into plain weights for export. The base
model's tokenizer is kept: text it cannot encode is refused before training (or its unknown
characters dropped, when asked). docs/lm.md has the measurements behind the defaults.

`finetune` reports the target-domain test loss before and after, and what was given up
on the base domain (its test loss before and after), in the run folder's finetune.json.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Literal

import lightning.pytorch as pl
import torch

from genlab.errors import ConfigError, GenlabError
from genlab.files import atomic_write


class StartFrom(pl.Callback):
    """Loads the pre-trained weights before the optimisers are built; a resumed run's checkpoint then
    overwrites them (Lightning restores checkpoints after `setup`)."""

    def __init__(self, state: dict[str, torch.Tensor]):
        self.state = state

    def setup(self, trainer, pl_module, stage):
        missing, unexpected = pl_module.model.load_state_dict(self.state, strict=False)
        missing = [k for k in missing if not k.endswith(("lora_A", "lora_B"))]
        if missing or unexpected:
            raise GenlabError(
                f"the base weights do not fit the model: missing {missing[:5]}, unexpected {unexpected[:5]}"
            )


def _drop_unknown(text_path: str, tokenizer, out: Path) -> tuple[str, list[str]]:
    """Write the data without the characters the tokenizer cannot encode; return (path, dropped chars)."""
    from genlab.data import load_data
    from genlab.data.chat import conversation_text

    data = load_data(text_path)
    chat = data.kind == "chat"
    text = conversation_text(data.train + data.test) if chat else data.train + data.test
    unknown = tokenizer.unknown(text)
    if not unknown:
        return text_path, []
    table = str.maketrans("", "", "".join(unknown))
    out.mkdir(parents=True, exist_ok=True)
    if chat:
        lines = [json.dumps({"messages": [{**m, "content": m["content"].translate(table)} for m in c]})
                 for c in data.train + data.test]
        atomic_write(out / "data.jsonl", "\n".join(lines) + "\n")
        return str(out / "data.jsonl"), unknown
    # keep the file's train/test cut where it was: the text layer splits at 90% again
    atomic_write(out / "data.txt", data.train.translate(table) + data.test.translate(table))
    return str(out / "data.txt"), unknown


def finetune(
    run: str,
    data: str | None = None,
    method: Literal["full", "sft", "lora"] | None = None,
    rank: int = 8,
    alpha: float = 16.0,
    embeddings: bool = False,
    out: str | None = None,
    max_steps: int = 500,
    max_time: str | None = None,
    lr: float | None = None,
    batch_size: int | None = None,
    warmup_steps: int = 20,
    dropout: float | None = None,
    bpe_dropout: float | None = None,
    holdout: float = 0.05,
    replay: float = 0.0,
    unknown: Literal["error", "drop"] = "error",
    seed: int = 0,
    threads: int | None = None,
    progress: bool = True,
    callbacks: list | None = None,
) -> dict[str, float]:
    """Fine-tune a trained model on new data; the result is a new run folder (with a merged model for LoRA).

    Language models take new text (full, LoRA, or instruction tuning); any other trained network is fine-tuned in
    full from its weights (a text-to-speech model on a new voice's corpus, a vocoder on new sound), the held-out
    loss on the new data before and after in finetune.json.

    Args:
        run: the pre-trained run folder (runs/NAME) or model folder.
        data: the target data: for a language model a text file, a folder of text files, a registered text
            dataset, or a JSONL file of conversations for instruction tuning (docs/chat.md); for another family
            data of the kind it trains on (a speech corpus for tts, a folder of sound for a vocoder).
        method: `full` trains every weight; `lora` trains rank-`rank` adapters and merges them for export
            (default: lora where the family has adapter layers, else full); `sft` is full on conversations.
        rank: LoRA rank.
        alpha: LoRA scale numerator: the update is (alpha / rank) B A.
        embeddings: with lora, also train the token embedding (tied to the head) and the norms' gains (LoRA+).
        out: the new run folder (default RUN-ft-METHOD).
        max_steps: optimiser steps (the cosine schedule decays over them).
        max_time: an optional wall-clock budget such as 3m.
        lr: peak learning rate (default: pre-training's for full, 1e-2 for lora; docs/lm.md says how they were chosen;
            a third of pre-training's for other families).
        batch_size: windows per batch (default the family's).
        warmup_steps: linear warm-up steps.
        dropout: dropout while fine-tuning (default the base model's). A few minutes on a new corpus is
            short of overfitting, and dropout slows a CPU step: 0 fits more steps.
        bpe_dropout: BPE-dropout while fine-tuning (default the base model's; BPE models only). A regulariser
            for many passes over a small text; a few minutes of fine-tuning make about one.
        holdout: the fraction of the target's training text held out for validation (0: train on all of it).
        replay: instruction tuning: the share of training windows that are the base run's own training text,
            replayed as plain text among the conversations (0: none). Tuning on a narrow set (a few hundred
            entities' questions) otherwise overwrites what pre-training taught: docs/chat.md measures it.
        unknown: what to do with characters the base tokenizer cannot encode: `error`, or `drop` them.
        seed: seed of the data order and of every random number.
        threads: torch threads (default all cores).
        progress: show a progress bar.
        callbacks: extra Lightning callbacks for the training run (as genlab.train takes them).
    """
    from genlab import load
    from genlab.config import TrainConfig, from_dict
    from genlab.data import load_data
    from genlab.engine.recipes import recipe_for
    from genlab.engine.runs import read_run_config
    from genlab.engine.trainer import fit
    from genlab.models import families_with, get_family
    from genlab.models.lm.base import LanguageModel
    from genlab.models.lm.lora import merge_lora

    if not data:
        raise ConfigError(
            "genlab finetune needs --data",
            "pass the target text: a file, a folder of text files or a dataset",
        )
    if method not in ("full", "sft", "lora", None):
        raise ConfigError(f"method {method!r} is not one of 'full', 'sft', 'lora'",
                          "use --method full, sft (full, on conversations) or lora")
    base = load(run)
    if not isinstance(base, LanguageModel):
        if method not in ("full", None):
            raise ConfigError(f"--method {method} is for language models; {run} holds a {base.family} model",
                              "leave --method out (full fine-tuning)")
        return _finetune_network(base, run, data, out, max_steps, max_time, lr, batch_size, warmup_steps, holdout,
                                 seed, threads, progress, callbacks)
    fields = {f.name for f in dataclasses.fields(base.config)}
    method = method or ("lora" if "lora_rank" in fields else "full")
    if method == "lora" and "lora_rank" not in fields:  # the configs that declare adapters
        able = [name for name in families_with(LanguageModel)
                if "lora_rank" in {f.name for f in dataclasses.fields(get_family(name).Config)}]
        raise ConfigError(f"LoRA is not available for the {base.family} family (it has no adapter layers)",
                          f"use --method full, or fine-tune a {' or '.join(able)} model")
    if method == "lora" and rank < 1:
        raise ConfigError(f"rank = {rank}: a LoRA adapter needs rank 1 or more", "e.g. --rank 8")
    run_path = Path(run)
    record = read_run_config(run_path) if (run_path / "config.yaml").exists() else None
    out_path = Path(out or f"{str(run_path).rstrip('/')}-ft-{method}")
    if unknown == "drop":
        data, dropped = _drop_unknown(data, base.tokenizer, out_path)
        if dropped:
            print(f"dropped {len(dropped)} character(s) the tokenizer cannot encode: {''.join(dropped)!r}")
    target = load_data(data)
    chat = target.kind == "chat"
    if method == "sft" and not chat:
        raise ConfigError(f"--method sft is instruction tuning, and {data} is plain text",
                          "pass a JSONL file of conversations (docs/chat.md), or use --method full on text")
    if replay and not chat:
        raise ConfigError(f"--replay {replay} mixes the base text into instruction tuning, and {data} is plain text",
                          "fine-tune on conversations (--method sft), or fine-tune on the texts together")
    base_data = load_data(record["data"]) if record else None
    if replay and not (base_data and base_data.kind == "text"):
        raise ConfigError(f"--replay {replay} replays the base run's training text, and {run} has none recorded",
                          "fine-tune a run folder trained by genlab train on text, or pass --replay 0")
    # refuses text the base tokenizer cannot encode, with the characters; on conversations, adds the chat tokens
    config = base.config_for_data(base.config, target)
    start = base.state_dict()
    if config.vocab_size > base.config.vocab_size:
        from genlab.models.lm.chat import grow_vocabulary

        start = grow_vocabulary(start, list(base.VOCABULARY_TENSORS), config.vocab_size)
    if dropout is not None:  # the config refuses a rate outside [0, 1)
        # no dropout means none on the attention weights either
        no_attention = {"attn_dropout": 0.0} if dropout == 0 and "attn_dropout" in fields else {}
        config = dataclasses.replace(config, dropout=dropout, **no_attention)
    if bpe_dropout is not None:  # the config refuses a rate outside [0, 1) and any rate on a char model
        config = dataclasses.replace(config, bpe_dropout=bpe_dropout)
    if method == "lora":
        config = dataclasses.replace(config, lora_rank=rank, lora_alpha=alpha, lora_embeddings=embeddings)
    recipe = recipe_for(base.family).defaults
    pretraining_lr = recipe.get("lr", 1e-3)
    options = {**recipe, "max_steps": max_steps, "max_time": max_time,
               "lr": lr or (1e-2 if method == "lora" else pretraining_lr), "warmup_steps": warmup_steps, "seed": seed,
               "threads": threads, "progress": progress, "val_every": max(1, min(max_steps, 250)), "holdout": holdout,
               "sample_every": 10**9, "replay": replay, "replay_data": record["data"] if replay else None}
    if batch_size:
        options["batch_size"] = batch_size
    train_config = from_dict(TrainConfig, options)

    # what fine-tuning gives up on the base domain, when the base run trained on text
    base_text = base_data.test if base_data and base_data.kind == "text" else None

    def target_loss(model) -> float:
        return (model.chat_loss(target.test) if chat else model.log_likelihood(target.test))["nats_per_token"]

    starting = type(base)(dataclasses.replace(config, lora_rank=0) if "lora_rank" in fields else config)
    starting.load_state_dict(start)  # the base model, with the chat tokens' rows where they were added
    before = {"target": target_loss(starting)}
    if base_text:
        before["base"] = starting.log_likelihood(base_text)["nats_per_token"]

    fit(base.family, data, config, train_config, out_path, callbacks=[StartFrom(start), *(callbacks or [])],
        command=f"genlab finetune {run} --data {data} --method {method}")
    tuned = load(out_path / "model")
    if method == "lora":
        tuned = merge_lora(tuned)
        tuned.save_pretrained(
            out_path / "model",
            card={
                "fine-tuned from": str(run),
                "data": data,
                "method": f"LoRA rank {rank}, alpha {alpha}"
                f"{' with embeddings and norms' if embeddings else ''}, merged",
            },
        )
    after = {"target": target_loss(tuned)}
    if base_text:
        after["base"] = tuned.log_likelihood(base_text)["nats_per_token"]
    report = {"method": method, "base_run": str(run), "data": data, "chat": chat,
              "target_loss_before": before["target"], "target_loss_after": after["target"]}
    if base_text:
        report |= {"base_data": record["data"], "base_loss_before": before["base"], "base_loss_after": after["base"],
                   "base_loss_given_up": after["base"] - before["base"]}
    atomic_write(out_path / "finetune.json", json.dumps(report, indent=1))
    print(f"target-domain test loss {before['target']:.4f} -> {after['target']:.4f} nats/token" +
          (f"; base domain {before['base']:.4f} -> {after['base']:.4f} (given up {after['base'] - before['base']:+.4f})"
           if base_text else "") + f"\nfine-tuned model: {out_path / 'model'}")
    return report


def _finetune_network(base, run: str, data: str, out: str | None, max_steps: int, max_time: str | None,
                      lr: float | None, batch_size: int | None, warmup_steps: int, holdout: float, seed: int,
                      threads: int | None, progress: bool, callbacks: list | None) -> dict[str, float]:
    """Full fine-tuning of a trained network other than a language model: its config (which keeps what it was
    trained with: a TTS model's phones and spectrogram settings, a vocoder's sound) checked against the new data,
    training from its weights at the family's recipe (`lr` default: a third of pre-training's, as fine-tuning
    moves less), and the held-out loss on the new data before and after, in finetune.json."""
    from genlab import load
    from genlab.config import TrainConfig, from_dict
    from genlab.data import as_images, load_data
    from genlab.engine.recipes import recipe_for
    from genlab.engine.trainer import fit
    from genlab.models import get_family

    cls = get_family(base.family)
    target = load_data(data)
    if cls.data_kind == "image":
        target = as_images(target)
    if target.kind != cls.data_kind and target.kind not in cls.also_trains_on:
        raise ConfigError(f"{run} holds a {base.family} model, which trains on {cls.data_kind} data; {data} is "
                          f"{target.kind} data", f"fine-tune it on {cls.data_kind} data")
    config = cls.config_for_data(base.config, target)
    if config != base.config:
        raise ConfigError(f"{data} does not fit the {base.family} model of {run} as it was trained "
                          "(image size, classes or sound settings differ)",
                          "fine-tune on data of the same shape, or train a new model on it")
    recipe = recipe_for(base.family)
    options = {**recipe.defaults, "max_steps": max_steps, "max_time": max_time,
               "lr": lr or recipe.defaults.get("lr", 1e-3) / 3, "warmup_steps": warmup_steps, "seed": seed,
               "threads": threads, "progress": progress, "holdout": holdout, "sample_every": 10**9}
    if batch_size:
        options["batch_size"] = batch_size
    train_config = from_dict(TrainConfig, options)
    _, held_out = recipe.loaders(base, target, train_config, lambda: 0)

    @torch.no_grad()
    def held_out_loss(model) -> float | None:
        """None when nothing is held out (--holdout 0, or fewer than 20 training examples)."""
        if held_out is None:
            return None
        model.eval()
        losses = [float(model.loss(batch)["loss"]) for batch in held_out]
        return sum(losses) / len(losses)

    before = held_out_loss(base)
    out_path = Path(out or f"{str(run).rstrip('/')}-ft")
    fit(base.family, data, config, train_config, out_path, callbacks=[StartFrom(base.state_dict()), *(callbacks or [])],
        command=f"genlab finetune {run} --data {data}")
    after = held_out_loss(load(out_path / "model"))
    report = {"method": "full", "base_run": str(run), "data": data, "family": base.family,
              "target_loss_before": before, "target_loss_after": after}
    atomic_write(out_path / "finetune.json", json.dumps(report, indent=1))
    print((f"held-out loss on {data}: {before:.4f} -> {after:.4f}" if held_out is not None else
           "nothing held out to measure the fine-tuning on (--holdout 0, or fewer than 20 training examples)")
          + f"\nfine-tuned model: {out_path / 'model'}")
    return report
