"""Fine-tuning a saved language model on new text: all weights (`full`) or low-rank adapters (`lora`).

LoRA (Hu et al. 2021) freezes a pre-trained weight W and learns W + (alpha / r) B A with
A (r, in) and B (out, r); B starts at zero, so training starts from exactly the base
model. Adapters sit on every attention and MLP matrix and on the output head, which a GPT
ties to its token embedding: one low-rank update then moves both, so a target whose words
differ from the base's can shift the vocabulary's statistics too. Fine-tuning the 20-minute
tiny-shakespeare GPT on fortunes for 3 minutes gave 1.593 nats/char, against 1.706 with the
blocks' adapters alone in an earlier run; the same model from scratch scored 1.650 and 1.637 in
those runs (bench/results/lm.json: `finetune`, `finetune_lora_on_blocks_only`). For export the
product is merged into W, which gives a plain model of the base's config, as fast as the base. The base model's
tokenizer is kept: text it cannot encode is refused before training (or its unknown
characters dropped, when asked).

`finetune` reports the target-domain test loss before and after, and what was given up
on the base domain (its test loss before and after), in the run folder's finetune.json.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Literal

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import nn

from genlab.errors import ConfigError, GenlabError


class LoRALinear(nn.Linear):
    """A frozen nn.Linear plus a trainable low-rank update; its state-dict keys extend the base's
    (`weight`, then `lora_A`, `lora_B`), so base weights load into it unchanged."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float):
        nn.Module.__init__(self)
        self.in_features, self.out_features = base.in_features, base.out_features
        self.weight, self.bias = base.weight, base.bias
        self.lora_A = nn.Parameter(torch.empty(rank, base.in_features, device=base.weight.device))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, rank, device=base.weight.device))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))  # as nn.Linear initialises, and the LoRA paper
        self.scale = alpha / rank

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias) + F.linear(F.linear(x, self.lora_A), self.lora_B) * self.scale

    def merged_weight(self) -> torch.Tensor:
        return self.weight + self.scale * self.lora_B @ self.lora_A


def add_lora(model: nn.Module, rank: int, alpha: float, embeddings: bool = False) -> nn.Module:
    """Replace every nn.Linear inside `model.blocks`, and the output head, with a LoRALinear; freeze everything
    but the adapters. A head tied to the token embedding shares its update with it, so the vocabulary's
    statistics can move too (PEFT's LoRA on `embed_tokens` and `lm_head`, as one matrix). With `embeddings`,
    the token embedding, the head and the norms' gains train whole instead (LongLoRA's LoRA+, Chen et al.
    2024, sec. 3.2, for a target whose token statistics differ from the base's)."""
    if rank < 1:
        raise ConfigError(f"LoRA rank {rank} must be >= 1", "e.g. --rank 8")
    blocks = getattr(model, "blocks", None)  # a GPT's transformer blocks; an LSTM has no such linear layers
    targets = [] if blocks is None else [(parent, name, child) for parent in blocks.modules()
                                         for name, child in parent.named_children() if type(child) is nn.Linear]
    if not targets:
        raise ConfigError(f"the {model.family} model has no linear layers to adapt", "fine-tune with --method full")
    for parent, name, child in targets:
        setattr(parent, name, LoRALinear(child, rank, alpha))
    head = getattr(model, "head", None)
    if not embeddings and type(head) is nn.Linear:
        # the output head too; tied to the token embedding, its adapter updates both (GPT.embed reads it)
        model.head = LoRALinear(head, rank, alpha)
    for pname, p in model.named_parameters():
        p.requires_grad_(pname.endswith(("lora_A", "lora_B"))
                         or embeddings and (pname.startswith(("wte.", "head.")) or ".norm" in f".{pname}"))
    return model


def merge_lora(model: nn.Module) -> nn.Module:
    """A new model of the same family without adapters, whose weights are W + (alpha / r) B A."""
    state = {}
    for name, module in model.named_modules():
        if isinstance(module, LoRALinear):
            state[f"{name}.weight"] = module.merged_weight().detach()
    if "head.weight" in state and getattr(model.config, "tie_weights", False):
        state["wte.weight"] = state["head.weight"]  # one tied matrix: both names must load the merged one
    config = dataclasses.replace(model.config, lora_rank=0, lora_embeddings=False)
    merged = type(model)(config)
    base_state = {k: v for k, v in model.state_dict().items() if not k.endswith(("lora_A", "lora_B"))}
    merged.load_state_dict(base_state | state)
    merged.tokenizer = model.tokenizer
    return merged.to(next(model.parameters()).device).eval()


class StartFrom(pl.Callback):
    """Loads the pre-trained weights before the optimisers are built; a resumed run's checkpoint then
    overwrites them (Lightning restores checkpoints after `setup`)."""

    def __init__(self, state: dict[str, torch.Tensor]):
        self.state = state

    def setup(self, trainer, pl_module, stage):
        missing, unexpected = pl_module.model.load_state_dict(self.state, strict=False)
        missing = [k for k in missing if not k.endswith(("lora_A", "lora_B"))]
        if missing or unexpected:
            raise GenlabError(f"the base weights do not fit the model: missing {missing[:5]}, unexpected {unexpected[:5]}")


def _drop_unknown(text_path: str, tokenizer, out: Path) -> tuple[str, list[str]]:
    """Write the data's text without the characters the tokenizer cannot encode; return (path, dropped chars)."""
    from genlab.data import load_data

    data = load_data(text_path)
    text = data.train + data.test
    unknown = tokenizer.unknown(text)
    if not unknown:
        return text_path, []
    table = str.maketrans("", "", "".join(unknown))
    out.mkdir(parents=True, exist_ok=True)
    # keep the file's train/test cut where it was: the text layer splits at 90% again
    (out / "data.txt").write_text(data.train.translate(table) + data.test.translate(table))
    return str(out / "data.txt"), unknown


def finetune(run: str, data: str | None = None, method: Literal["full", "lora"] = "lora", rank: int = 8, alpha: float = 16.0,
             embeddings: bool = False, out: str | None = None, max_steps: int = 500, max_time: str | None = None, lr: float | None = None,
             batch_size: int | None = None, warmup_steps: int = 20, dropout: float | None = None,
             bpe_dropout: float | None = None, holdout: float = 0.05, unknown: Literal["error", "drop"] = "error",
             seed: int = 0, threads: int | None = None, progress: bool = True) -> dict[str, float]:
    """Fine-tune a trained language model on new text; the result is a new run folder with a merged model.

    Args:
        run: the pre-trained run folder (runs/NAME) or model folder.
        data: the target text: a file, a folder of text files, or a registered text dataset.
        method: `full` trains every weight; `lora` trains rank-`rank` adapters and merges them for export (gpt only).
        rank: LoRA rank.
        alpha: LoRA scale numerator: the update is (alpha / rank) B A.
        embeddings: with lora, also train the token embedding (tied to the head) and the norms' gains (LoRA+).
        out: the new run folder (default RUN-ft-METHOD).
        max_steps: optimiser steps (the cosine schedule decays over them).
        max_time: an optional wall-clock budget such as 3m.
        lr: peak learning rate (default: pre-training's for full, which beat a third of it on a 1 M-character
            target in bench/results/lm_finetune.json; 1e-2 for lora, which beat 3e-3 and 2e-2 fine-tuning the
            4 x 192 GPT on fortunes for 3 minutes: 1.539, 1.549 and 1.548 nats/char with --embeddings true).
        batch_size: windows per batch (default the family's).
        warmup_steps: linear warm-up steps.
        dropout: dropout while fine-tuning (default the base model's). A few minutes on a new corpus is
            short of overfitting, and dropout costs a third of the step rate on a CPU: 0 fits more steps.
        bpe_dropout: BPE-dropout while fine-tuning (default the base model's; BPE models only). A regulariser
            for many passes over a small text; a few minutes of fine-tuning make about one.
        holdout: the fraction of the target's training text held out for validation (0: train on all of it).
        unknown: what to do with characters the base tokenizer cannot encode: `error`, or `drop` them.
        seed: seed of the data order and of every random number.
        threads: torch threads (default all cores).
        progress: show a progress bar.
    """
    from genlab.config import TrainConfig, from_dict
    from genlab.data import load_data
    from genlab.engine import read_run_config, train
    from genlab.persist import load

    if not data:
        raise ConfigError("genlab finetune needs --data", "pass the target text: a file, a folder of text files or a dataset")
    base = load(run)
    if base.data_kind != "text":
        raise ConfigError(f"{run} holds a {base.family} model; fine-tuning is for language models (gpt, rnn)")
    if method == "lora" and not hasattr(base.config, "lora_rank"):
        raise ConfigError(f"LoRA is not available for the {base.family} family (an LSTM has no linear layers to adapt)",
                          "use --method full")
    if method not in ("full", "lora"):
        raise ConfigError(f"method {method!r} is not one of 'full', 'lora'")
    run_path = Path(run)
    record = read_run_config(run_path) if (run_path / "config.yaml").exists() else None
    out_path = Path(out or f"{str(run_path).rstrip('/')}-ft-{method}")
    if unknown == "drop":
        data, dropped = _drop_unknown(data, base.tokenizer, out_path)
        if dropped:
            print(f"dropped {len(dropped)} character(s) the tokenizer cannot encode: {''.join(dropped)!r}")
    target = load_data(data)
    base.config_for_data(base.config, target)  # refuses text the base tokenizer cannot encode, with the characters

    config = base.config
    if dropout is not None:
        if not hasattr(config, "dropout") or not 0 <= dropout < 1:
            raise ConfigError(f"dropout = {dropout} cannot be set on this {base.family} model", "use 0 <= dropout < 1")
        # no dropout means none on the attention weights either
        no_attention = {"attn_dropout": 0.0} if dropout == 0 and hasattr(config, "attn_dropout") else {}
        config = dataclasses.replace(config, dropout=dropout, **no_attention)
    if bpe_dropout is not None:  # make_loaders refuses a rate outside [0, 1) and any rate on a char model
        config = dataclasses.replace(config, bpe_dropout=bpe_dropout)
    if method == "lora":
        config = dataclasses.replace(config, lora_rank=rank, lora_alpha=alpha, lora_embeddings=embeddings)
    pretraining_lr = type(base).train_defaults.get("lr", 1e-3)
    options = {**type(base).train_defaults, "max_steps": max_steps, "max_time": max_time,
               "lr": lr or (1e-2 if method == "lora" else pretraining_lr), "warmup_steps": warmup_steps, "seed": seed,
               "threads": threads, "progress": progress, "val_every": max(1, min(max_steps, 250)), "holdout": holdout,
               "sample_every": 10**9}
    if batch_size:
        options["batch_size"] = batch_size
    train_config = from_dict(TrainConfig, options)

    base_text = load_data(record["data"]).test if record else None
    before = {"target": base.log_likelihood(target.test)["nats_per_token"]}
    if base_text:
        before["base"] = base.log_likelihood(base_text)["nats_per_token"]

    train(base.family, data, config, train_config, out_path, callbacks=[StartFrom(base.state_dict())],
          command=f"genlab finetune {run} --data {data} --method {method}")
    tuned = load(out_path / "model")
    if method == "lora":
        tuned = merge_lora(tuned)
        tuned.save_pretrained(out_path / "model", card={"fine-tuned from": str(run), "data": data,
                                                        "method": f"LoRA rank {rank}, alpha {alpha}"
                                                                  f"{' with embeddings and norms' if embeddings else ''}, merged"})
    after = {"target": tuned.log_likelihood(target.test)["nats_per_token"]}
    if base_text:
        after["base"] = tuned.log_likelihood(base_text)["nats_per_token"]
    report = {"method": method, "base_run": str(run), "data": data,
              "target_loss_before": before["target"], "target_loss_after": after["target"]}
    if base_text:
        report |= {"base_data": record["data"], "base_loss_before": before["base"], "base_loss_after": after["base"],
                   "base_loss_given_up": after["base"] - before["base"]}
    (out_path / "finetune.json").write_text(json.dumps(report, indent=1))
    print(f"target-domain test loss {before['target']:.4f} -> {after['target']:.4f} nats/token" +
          (f"; base domain {before['base']:.4f} -> {after['base']:.4f} (given up {after['base'] - before['base']:+.4f})"
           if base_text else "") + f"\nfine-tuned model: {out_path / 'model'}")
    return report
