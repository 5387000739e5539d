"""Benchmark: genlab's GPT and LSTM against nanoGPT's CPU recipe on tiny-shakespeare, side by side in one run.

    python bench/lm.py                                   # the real run -> bench/results/lm.json (~45 minutes)
    python bench/lm.py --parts anchor,gpt,generate       # the budget bar and generation (~5 minutes)
    python bench/lm.py --parts long,finetune --work /tmp/lmwork   # the 20-minute run, then fine-tuning from it
    python bench/lm.py --parts gpt,generate,finetune --finetune-from gpt --budget 20 --finetune-seconds 15 \
        --out /tmp/lm_smoke.json                          # smoke test

Parts (`--parts`, comma separated). A run without all of anchor, gpt and rnn replaces the
sections of the parts it runs in an existing `--out` and keeps the others; every section
records the command that measured it.

- `anchor`: bench/nanogpt_anchor.py, a clearly labelled re-implementation of nanoGPT's
  model.py/train.py (its repository is not reachable from this machine), in a subprocess
  with the issue's command-line parameters. Its training wall clock becomes the budget.
  Without this part the budget is the published figure (140 s, validation loss 1.886).
- `gpt`, `gpt_char`, `rnn`: genlab's families through `genlab.engine.train` with their train
  defaults; the GPT with a byte-level BPE tokenizer (`BENCH_GPT`, `--gpt-model` to change it),
  `gpt_char` with the CLI's default char-level config,
  given the same wall-clock budget: training stops at the budget less a start-up allowance and
  the cosine schedule decays over that time (the engine's `max_time` schedule), so a step time
  disturbed by other work cannot cut a run short. The reported `train_seconds` is the whole
  `train()` call (data, setup, validation, checkpoints, export).
- `generate`: tokens/s for 500 new tokens (temperature 0.8, top-k 200, as nanoGPT's
  sample.py) with genlab's KV cache at nanoGPT's size (4 layers, 4 heads, 128 wide,
  context 64), against the anchor's `generate` timed just before in this part (its own
  subprocess, `--generate-only`); best of 3 runs each. genlab's one-sequence decoding runs the C
  kernel genlab/native/gpt_decode.c where a compiler is; the torch path is timed beside it.
- `long`: a larger GPT (`--long-model`) for `--long-minutes` (default 20, wall clock on all cores).
- `finetune`: a pre-trained model (`--finetune-from`: the `long` run's by default, trained in the
  same run; `gpt`; or a run folder), fine-tuned on Debian's `fortunes` quotations (characters
  outside the Shakespeare alphabet dropped) for `--finetune-seconds` of training each: full, LoRA
  and LoRA+ (rank `--lora-rank`), without dropout or BPE-dropout at batch 16, against the same architecture
  trained from scratch on that text for the same time. Reports target-domain test loss in nats per
  character and the base-domain loss given up.

Validation loss for every model is the next-token loss summed over the whole of nanoGPT's
validation split (the last 10% of the text), in non-overlapping windows of the model's context,
divided by the characters it covers: nats per character for a BPE model too; the anchor's own
20-batch estimate is reported beside it.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("GENLAB_DATA_DIRS", str(ROOT.parent / "shared" / "data"))  # the shared tinyshakespeare.txt

import genlab  # noqa: E402
from genlab.config import TrainConfig, from_dict  # noqa: E402
from genlab.data import load_data  # noqa: E402
from genlab.engine.recipes import recipe_for  # noqa: E402
from genlab.engine.trainer import fit as train  # noqa: E402
from genlab.hardware import training_precision  # noqa: E402
from genlab.models import get_family  # noqa: E402

PUBLISHED = {
    "name": "nanoGPT CPU recipe (published figure, not measured here)",
    "val_loss": 1.886,
    "train_seconds": 140.0,
}
FORTUNE_FILES = ("fortunes", "literature", "wisdom", "people", "humorists", "platitudes", "love", "politics",
                 "men-women", "miscellaneous", "goedel", "science", "education", "work", "food", "pets", "kids")


# The benchmark's GPT: the default block over a byte-level BPE of 1,024 tokens (about 2.3 characters a
# token on tiny-shakespeare). At a fixed wall clock a token costs about what a character costs, so the
# model reads more than twice the text: at 200 steps, 1.753 nats/char against 1.888 char-level (512
# tokens: 1.783; 2,048: 1.746 at a dearer step). Two layers, not the default four: at the anchor's
# budget (74.8 s) more steps beat depth: 1, 2, 3, 4 layers gave 1.733, 1.677, 1.692, 1.709 (2 x 192:
# 1.701; 6 x 96: 1.744; context 256: 1.725). These figures, and those below that predate BENCH_TRAIN,
# were measured with genlab's 5% hold-out (bench/results/lm.json before commit 0b2b0fd); the choices
# were not revisited after it, as the budget run meets its bar with 0.19 nats/char to spare.
BENCH_GPT = {"tokenizer": "bpe", "bpe_vocab_size": 1024, "n_layer": 2}
# and batches of 16 windows rather than 32: twice the steps in the budget (1.699 against 1.721 at 102 s;
# the width-192 configuration the char-level study preferred gave 1.734 here; batch 12: 1.708 at 74.8 s)
BENCH_GPT_TRAIN = {"batch_size": 16}
# Every benchmark run trains on the whole training split, the first 90% of the text, as nanoGPT does:
# genlab's default holds out its last 5% for validation, and on tiny-shakespeare that tail opens The
# Taming of the Shrew, whose speakers (PETRUCHIO, KATHARINA, ...) fill the test split. Validation is
# off in these runs anyway (they are scored on the test split afterwards).
BENCH_TRAIN = {"holdout": 0.0, "progress": False}


def machine() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    return {
        "cores": len(os.sched_getaffinity(0)),
        "cpu": cpu,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "genlab": genlab.__version__,
    }


def run_anchor(data_path: str, iters: int) -> dict:
    command = [
        sys.executable, str(ROOT / "bench" / "nanogpt_anchor.py"), "--data", data_path, "--max-iters",
        str(iters),
    ]
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    result = json.loads(out.strip().splitlines()[-1])
    return {"name": "nanoGPT CPU recipe, re-implemented in bench/nanogpt_anchor.py (measured in this run)", **result}


def anchor_generation_speed(data_path: str, repeats: int = 3) -> dict:
    """The anchor's `generate` (500 tokens, temperature 0.8, top-k 200), best of `repeats`, untrained weights."""
    command = [sys.executable, str(ROOT / "bench" / "nanogpt_anchor.py"), "--data", data_path,
               "--generate-only", str(repeats)]
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def step_seconds(family: str, model_config, train_config: TrainConfig, data, steps: int = 8) -> tuple[float, float]:
    """Seconds per optimiser step of a family's model on this data, timed in this process after 3 warm-up
    steps, and the seconds its recipe's loaders took (BPE-dropout draws its copies there, before the clock of
    a --max-time run starts)."""
    cls = get_family(family)
    config = cls.config_for_data(model_config, data)
    torch.manual_seed(0)
    model = cls(config)
    started = time.perf_counter()
    recipe = recipe_for(family)
    loader, _ = recipe.loaders(model, data, train_config, lambda: 0)
    loader_seconds = time.perf_counter() - started
    optimizer = recipe.optimizers(model, train_config)[0]
    batches = iter(loader)
    bf16 = training_precision(train_config.precision, "cpu") == "bf16-mixed"
    for i in range(steps + 3):
        if i == 3:
            start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = model.loss(next(batches))["loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
    return (time.perf_counter() - start) / steps, loader_seconds


# Seconds of a budget left to start-up (data, Lightning's set-up, export) rather than training: they
# took 1.3 s in a run at a 76.4 s budget, so the whole call stays inside the anchor's clock, which
# counts its training loop only (bench/nanogpt_anchor.py). 6 s before: 5 s of the budget went unused.
SETUP_SECONDS = 3.0


def train_for(family: str, data_spec: str, data, seconds: float, out: Path, model: dict | None = None,
              options: dict | None = None) -> dict:
    """Train a family for a wall-clock budget; returns its figures. The run stops at the budget less
    SETUP_SECONDS and the cosine decays over that time (the engine's --max-time schedule), so a slow
    moment on the machine cannot cut it short; a step time measured first only sizes the warm-up."""
    cls = get_family(family)
    model_config = from_dict(cls.Config, model or {})
    base = {**recipe_for(family).defaults, **BENCH_TRAIN, **(options or {})}
    per_step, loader_seconds = step_seconds(family, model_config, from_dict(TrainConfig, base), data)
    budget = seconds - SETUP_SECONDS - loader_seconds  # the training clock starts after the loaders are made
    expected_steps = max(20, int(budget / (per_step * 1.05)))  # 5%: Lightning's own per-step work
    train_config = from_dict(TrainConfig, {**base, "max_steps": 10**7, "max_time": f"{int(budget)}s",
                                           "val_every": 10**7, "ckpt_every": 10**7, "sample_every": 10**9,
                                           "warmup_steps": min(base.get("warmup_steps", 100), expected_steps // 10)})
    started = time.time()
    train(family, data_spec, model_config, train_config, out)
    wall = time.time() - started
    trained = genlab.load(out / "model")
    figures = trained.log_likelihood(data.test)
    # nats per character whatever the tokenizer (the anchor's unit): a BPE token holds several characters
    return {
        "val_loss": figures["bits_per_char"] * math.log(2),
        "nats_per_token": figures["nats_per_token"],
        "bits_per_char": figures["bits_per_char"],
        "train_seconds": wall,
        "steps": last_step(out / "metrics.jsonl"),
        "measured_step_seconds": per_step,
        "parameters": trained.num_parameters(),
        "config": {k: v for k, v in trained.config.__dict__.items() if k not in ("chars", "tokenizer_hash")},
        "train": {
            k: train_config.__dict__[k]
            for k in ("lr", "batch_size", "schedule", "warmup_steps", "weight_decay")
        },
    }


def nats_per_char(model, text: str) -> float:
    """A language model's loss on a text in nats per character, whatever its tokenizer (the anchor's unit)."""
    return model.log_likelihood(text)["bits_per_char"] * math.log(2)


def last_step(metrics: Path) -> int | None:
    """The last optimiser step a run logged (its metrics.jsonl)."""
    steps = (
        [json.loads(line).get("step") for line in metrics.read_text().splitlines() if line.strip()]
        if metrics.exists()
        else []
    )
    steps = [s for s in steps if s is not None]
    return max(steps) + 1 if steps else None


def generation_speed(tokens: int = 500) -> dict:
    """Tokens/s of genlab's KV-cache generation at nanoGPT's size (random weights: speed does not depend on them)."""
    from genlab.data.tokenizers import CharTokenizer
    from genlab.models.lm.gpt import GPT, GPTConfig

    text = load_data("tiny-shakespeare").train
    tokenizer = CharTokenizer.fit(text)
    model = GPT(GPTConfig(chars=tokenizer.chars, vocab_size=tokenizer.vocab_size, block_size=64, n_layer=4, n_head=4,
                          n_embd=128)).eval()
    def rates() -> list[float]:
        measured = []
        for seed in range(3):
            start = time.perf_counter()
            count = sum(1 for _ in model.generate("\n", max_new_tokens=tokens, temperature=0.8, top_k=200, seed=seed))
            measured.append(tokens / (time.perf_counter() - start))
            assert count > 0
        return measured

    compiled = model.new_cache().native is not None
    runs = rates()
    with mock.patch.dict(os.environ, {"GENLAB_NATIVE": "0"}):  # the torch path, for the record
        torch_runs = rates()
    return {"tokens_per_s": max(runs), "tokens_per_s_runs": runs, "parameters": model.num_parameters(),
            "decoder": "C kernel (genlab/native/gpt_decode.c)" if compiled else "torch (no C compiler)",
            "torch_decoder_tokens_per_s": max(torch_runs), "torch_decoder_tokens_per_s_runs": torch_runs,
            "note": "single-sequence generation of 500 new tokens from a newline, temperature 0.8, top-k 200"}


def fortunes_text(folder: str = "/usr/share/games/fortunes") -> str:
    parts = []
    for name in FORTUNE_FILES:
        path = Path(folder) / name
        if path.exists():
            quotes = path.read_text(errors="replace").split("\n%\n")
            parts += [q.strip("\n") for q in quotes if q.strip()]
    if not parts:
        raise SystemExit(
            f"no fortunes under {folder}: make bench-data (Debian's fortunes package), or skip the finetune part"
        )
    return "\n\n".join(parts) + "\n"


# Fine-tuning options of every method: no dropout and no BPE-dropout (a few minutes on the new corpus
# are about one pass over it, short of overfitting, and dropout costs a third of the step rate) and the
# benchmark's batches of 16. Scratch trains without them too.
FINETUNE = {"dropout": 0.0, "bpe_dropout": 0.0, **BENCH_GPT_TRAIN}


def finetune_part(gpt_run: Path, data, seconds: float, work: Path, lr: float | None = None,
                  lora_lr: float | None = None, lora_rank: int = 16) -> dict:
    from genlab.config import data_fields
    from genlab.engine.finetune import finetune

    base = genlab.load(gpt_run / "model")
    # the same architecture from scratch: the base's configuration less what its tokenizer fixed, and
    # without dropout or BPE-dropout, which at a few minutes only slow learning (the strongest baseline we know)
    scratch_model = {k: v for k, v in base.config.__dict__.items() if k not in data_fields(type(base.config))}
    scratch_model |= {"dropout": FINETUNE["dropout"], "bpe_dropout": FINETUNE["bpe_dropout"]}
    if base.config.tokenizer == "bpe":  # a tokenizer of the base's size, learnt on the new text
        scratch_model["bpe_vocab_size"] = base.config.vocab_size
    text = fortunes_text()
    unknown = set(base.tokenizer.unknown(text))
    cleaned = "".join(c for c in text if c not in unknown)
    target_path = work / "fortunes.txt"
    target_path.write_text(cleaned)
    target = load_data(str(target_path))
    results = {
        "base_run": str(gpt_run),
        "base_val_loss": nats_per_char(base, data.test),
        "target_data": f"Debian fortunes ({', '.join(FORTUNE_FILES)}), {len(cleaned):,} characters after "
        f"dropping {len(text) - len(cleaned):,} outside the base alphabet ({''.join(sorted(unknown))!r})",
    }
    # Equal wall clocks: each run stops at the same training budget, its cosine decaying over it; the
    # losses are in nats per character, which compares models whose tokenizers differ (scratch trains
    # its own on the target text).
    budget = seconds - SETUP_SECONDS  # as train_for trains
    before = nats_per_char(base, target.test)
    # (section, method, embeddings): the last is LoRA+, the embedding and the norms' gains train too
    for name, method, embeddings in (
        ("full", "full", False),
        ("lora", "lora", False),
        ("lora_embeddings", "lora", True),
    ):
        started = time.time()
        report = finetune(str(gpt_run), str(target_path), method=method, out=str(work / f"ft-{name}"), max_steps=10**7,
                          max_time=f"{budget:.0f}s", lr=lr if method == "full" else lora_lr,
                          embeddings=embeddings, rank=lora_rank, **BENCH_TRAIN, **FINETUNE)
        tuned = genlab.load(work / f"ft-{name}" / "model")
        results[name] = {
            **report,
            "train_seconds": time.time() - started,
            "steps": last_step(work / f"ft-{name}" / "metrics.jsonl"),
            "target_loss_per_char_before": before,
            "target_loss_per_char": nats_per_char(tuned, target.test),
            "base_loss_per_char_after": nats_per_char(tuned, data.test),
        }
    scratch = train_for("gpt", str(target_path), target, seconds, work / "scratch", scratch_model, BENCH_GPT_TRAIN)
    results["scratch"] = {"target_loss_per_char": scratch["val_loss"], "train_seconds": scratch["train_seconds"],
                          "steps": scratch["steps"], "config": scratch["config"]}
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parts", default="anchor,gpt,gpt_char,rnn,generate,long,finetune")
    parser.add_argument("--budget", type=float, default=None, help="seconds; default the anchor's measured time")
    parser.add_argument("--anchor-iters", type=int, default=2000)
    parser.add_argument("--finetune-seconds", type=float, default=180)
    parser.add_argument("--finetune-lr", type=float, default=None, help="full fine-tuning's peak LR (default genlab's)")
    parser.add_argument("--lora-lr", type=float, default=None, help="LoRA's peak LR (default genlab's, 1e-2)")
    parser.add_argument("--lora-rank", type=int, default=16, help="rank 16 beat 8 at 3 minutes: 1.528 against 1.539")
    parser.add_argument(
        "--finetune-from",
        default="long",
        help="the pre-trained model: `long` (the 20-minute run), `gpt` (the budget run) or a run folder",
    )
    parser.add_argument("--work", default=None, help="keep the runs in this folder (default: a temporary one)")
    parser.add_argument("--long-minutes", type=float, default=20)
    # 4 x 192 with BPE-dropout 0.1 (16 copies), dropout 0.2, weight decay 0.1: 1.467 in 20 minutes on the
    # whole training split (2,518 fp32 steps on a 2-core AVX2 EPYC). Chosen before BENCH_TRAIN, with the
    # 5% hold-out, in 6-minute probes: BPE-dropout took 4 x 192 from 1.686 to 1.636, at 0.2 it hurt
    # (1.718), and 6 x 256 with it reached 1.654 in half the steps.
    parser.add_argument("--long-model", default=json.dumps({**BENCH_GPT, "n_layer": 4, "n_embd": 192, "dropout": 0.2,
                                                           "bpe_dropout": 0.1}),
                        help="JSON GPT config of the long run")
    parser.add_argument("--long-train", default=json.dumps({**BENCH_GPT_TRAIN, "weight_decay": 0.1}),
                        help="JSON train options of the long run")
    parser.add_argument("--gpt-model", default=json.dumps(BENCH_GPT),
                        help="JSON overrides of the GPT config (default: byte-level BPE, 1,024 tokens)")
    parser.add_argument("--rnn-model", default="{}", help="JSON overrides of the LSTM config (default: the CLI's)")
    parser.add_argument("--gpt-train", default=json.dumps(BENCH_GPT_TRAIN),
                        help="JSON overrides of the GPT train options (default: batches of 16)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "lm.json"))
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    data = load_data("tiny-shakespeare")
    data_path = data.report.source
    command = "python " + " ".join(shlex.quote(a) for a in sys.argv)
    out = Path(args.out)
    # A part re-run replaces its own sections of an existing report and keeps the others; each section
    # records the command that measured it.
    result = {"machine": machine(), "budget": {}, "genlab": {}, "anchor": {}}
    if out.exists() and not {"anchor", "gpt", "rnn"} <= parts:
        result = {**result, **json.loads(out.read_text()), "machine": machine()}
    result["command"] = command

    if "anchor" in parts:
        print("anchor: nanoGPT recipe ...", flush=True)
        anchor = run_anchor(data_path, args.anchor_iters)
        result["anchor"] = anchor
        print(f"  val loss {anchor['val_loss']:.4f} (full split {anchor['val_loss_full_split']:.4f}) in "
              f"{anchor['train_seconds']:.1f} s; generate {anchor['generate_tokens_per_s']:.1f} tokens/s", flush=True)
        result["anchor"]["command"] = command
    elif not result["anchor"]:
        result["anchor"] = PUBLISHED
    budget = args.budget or result["anchor"]["train_seconds"]
    if parts & {"gpt", "rnn", "finetune"}:
        result["budget"] = {"train_seconds": budget, "source": "--budget" if args.budget else result["anchor"]["name"],
                            "finetune_seconds": args.finetune_seconds, "command": command}

    if "finetune" in parts and args.finetune_from in ("gpt", "long"):
        parts.add(args.finetune_from)  # the base is trained in this run
    with tempfile.TemporaryDirectory(prefix="genlab-bench-lm-") as tmp:
        work = Path(args.work or tmp)
        work.mkdir(parents=True, exist_ok=True)
        if "gpt" in parts:
            print(f"genlab gpt for {budget:.0f} s ...", flush=True)
            gpt = train_for("gpt", "tiny-shakespeare", data, budget, work / "gpt", json.loads(args.gpt_model),
                            json.loads(args.gpt_train))
            result["genlab"]["gpt"] = gpt
            print(
                f"  val loss {gpt['val_loss']:.4f} in {gpt['train_seconds']:.1f} s ({gpt['steps']} steps)",
                flush=True,
            )
        if "gpt_char" in parts:
            print(f"genlab gpt, char-level (the CLI default), for {budget:.0f} s ...", flush=True)
            result["genlab"]["gpt_char"] = train_for("gpt", "tiny-shakespeare", data, budget, work / "gpt-char", {},
                                                     json.loads(args.gpt_train))
            print(f"  val loss {result['genlab']['gpt_char']['val_loss']:.4f}", flush=True)
        if "rnn" in parts:
            print(f"genlab rnn (LSTM) for {budget:.0f} s ...", flush=True)
            rnn = train_for("rnn", "tiny-shakespeare", data, budget, work / "rnn", json.loads(args.rnn_model))
            result["genlab"]["rnn"] = rnn
            print(f"  val loss {rnn['val_loss']:.4f} in {rnn['train_seconds']:.1f} s", flush=True)
        if "generate" in parts:
            anchor_speed = anchor_generation_speed(data_path)
            speed = generation_speed()
            speed |= {"anchor_tokens_per_s": anchor_speed["generate_tokens_per_s"],
                      "anchor_tokens_per_s_runs": anchor_speed["generate_tokens_per_s_runs"],
                      "anchor_parameters": anchor_speed["parameters"], "command": command}
            speed["speedup_vs_anchor"] = speed["tokens_per_s"] / speed["anchor_tokens_per_s"]
            result["genlab"]["generate"] = speed
            print(f"generate: anchor {speed['anchor_tokens_per_s']:.0f} tokens/s, genlab {speed['tokens_per_s']:.0f} "
                  f"({speed['speedup_vs_anchor']:.2f}x)", flush=True)
        if "long" in parts:
            print(f"genlab gpt for {args.long_minutes:.0f} minutes ...", flush=True)
            result["genlab"]["gpt_long"] = train_for(
                "gpt", "tiny-shakespeare", data,
                args.long_minutes * 60,
                work / "gpt-long",
                json.loads(args.long_model),
                json.loads(args.long_train),
            )
            result["genlab"]["gpt_long"]["command"] = command
            result["genlab"]["bar_val_loss_long"] = 1.55
            print(f"  val loss {result['genlab']['gpt_long']['val_loss']:.4f}", flush=True)
        if "finetune" in parts:
            base = {"gpt": work / "gpt", "long": work / "gpt-long"}.get(args.finetune_from, Path(args.finetune_from))
            print(f"fine-tuning {base} on fortunes, {args.finetune_seconds:.0f} s each ...", flush=True)
            result["genlab"]["finetune"] = finetune_part(base, data, args.finetune_seconds, work, args.finetune_lr,
                                                         args.lora_lr, args.lora_rank)
            result["genlab"]["finetune"]["command"] = command

    if "gpt" in result["genlab"]:
        result["genlab"]["val_loss"] = result["genlab"]["gpt"]["val_loss"]
        result["genlab"]["bar_val_loss_at_anchor_budget"] = 1.70
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
