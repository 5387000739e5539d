"""Benchmark: genlab's diffusion model against diffusers' UNet2DModel + DDPMScheduler on Fashion-MNIST.

Both models train the same number of steps at the same batch size on the same images (genlab's
own training split, 57,000 images, in the same batch order), with the same optimiser recipe
(AdamW, linear warm-up then cosine decay, gradient clipping, an EMA of the weights for sampling),
and go through one evaluator: `genlab.metrics.images.sample_metrics` (FD-genlab, KID-genlab,
precision/recall/coverage) of DDIM-50 samples against the test images, in the feature space of
genlab's reference classifier (trained once, before any clock starts).

The anchor is diffusers' `UNet2DModel` at half the widths of the issue's CPU reference
((16, 32, 64), two ResNet layers per block, attention at the lowest resolution: 0.99 M parameters),
trained as diffusers' `train_unconditional.py` trains it (epsilon prediction, `DDPMScheduler`'s
linear betas, MSE), sampled by `DDIMPipeline`. genlab's default model has the same parameter count
within 10% (its U-Net puts fewer blocks at 28x28 and more at 7x7 and 4x4).

Parts (`--parts`, default all). Each part writes WORK/PART.json (and sample arrays) so that parts may
run in separate processes, e.g. the two training parts side by side at one thread each; `score`
evaluates whatever samples exist and writes --out.

  anchor    train diffusers' UNet2DModel + DDPMScheduler; 2,000 DDIM-50 samples (DDIMPipeline)
  genlab    train genlab's default diffusion model; 2,000 DDIM-50 samples
  samplers  the genlab model: 1,000 samples by DPM-Solver++(2M) at 20 steps and by DDIM at 250 steps
  speed     training images/s (batch 128) and 50-step sampling images/s (256 images), both models,
            one after the other, same threads
  text      train --model.condition text; reference-classifier accuracy of samples for the 10
            class-name prompts and for 10 paraphrases that appear in no caption template
  score     metrics of every sample set found in WORK -> --out (bench/results/diffusion.json)

    GENLAB_HOME=/tmp/genlab-home python bench/diffusion.py                 # everything, one after the other
    python bench/diffusion.py --parts anchor --threads 1 &                # side by side
    python bench/diffusion.py --parts genlab --threads 1 ; wait
    python bench/diffusion.py --parts samplers,speed,text,score
    python bench/diffusion.py --data digits --steps 20 --eval-samples 64 --work /tmp/dm-smoke --out /tmp/dm.json
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

import genlab
from genlab.data import load_data
from genlab.data.loader import BatchLoader, split_validation
from genlab.metrics.images import sample_metrics
from genlab.metrics.reference import reference_classifier
from genlab.models.diffusion import DiffusionSampleOptions

sys.path.insert(0, str(Path(__file__).parent))
from gan import split_parts, timing  # noqa: E402  (shared with the GAN benchmark)
from vae import cpu_model, usable_cores  # noqa: E402  (the machine helpers of the VAE benchmark)

PARTS = ["anchor", "genlab", "samplers", "speed", "text", "score"]
ANCHOR_NAME = "diffusers UNet2DModel (16, 32, 64) x2 + DDPMScheduler"
# The optimiser recipe both models train with (genlab's diffusion recipe, genlab/engine/recipes.py).
RECIPE = {
    "lr": 5e-4,
    "warmup_steps": 100,
    "min_lr_ratio": 0.1,
    "betas": (0.9, 0.999),
    "grad_clip": 1.0,
    "ema_decay": 0.999,
}
SCORE_KEYS = ["fd_genlab", "kid_genlab", "precision", "recall", "density", "coverage", "class_histogram_tv"]
# Prompts for the text-to-image part: the class names as captions, and paraphrases that share no
# template with training (genlab.models.captions holds the templates; none of these words is a class name).
CLASS_PROMPTS = ["a t-shirt", "a pair of trousers", "a pullover", "a dress", "a coat", "a sandal", "a shirt",
                 "a sneaker", "a bag", "an ankle boot"]
PARAPHRASES = [
    "a short-sleeved tee for summer", "denim jeans", "a warm knitted jumper",
    "an elegant gown for the evening", "a winter overcoat", "open summer footwear with straps",
    "a button-down top with a collar", "comfortable running shoes", "a leather handbag",
    "boots that cover the ankle",
]
# A second set of unseen prompts (class index, prompt) on which the prompt prior's temperature is chosen,
# so that the paraphrases above stay a test set.
SELECTION_PROMPTS = [
    (2, "a cosy fleece hoodie"),
    (1, "blue jeans"),
    (3, "a long summer dress"),
    (4, "a waterproof rain jacket"),
    (5, "beach sandals"),
    (6, "a plaid flannel"),
    (7, "running trainers"),
    (8, "a backpack"),
    (9, "winter boots"),
    (6, "a polo shirt"),
    (3, "a wedding gown"),
    (1, "cargo pants"),
    (0, "a sleeveless vest top"),
]
# A second test set of unseen prompts, written after the prompt prior's first form (single captions
# weighed alone) had been scored on PARAPHRASES and before its present form was: reported beside them.
MORE_PARAPHRASES = [
    (0, "a basic cotton tee"),
    (1, "straight-leg denims"),
    (2, "a thick woollen jersey"),
    (3, "a summer sundress"),
    (4, "a padded anorak"),
    (5, "strappy flat shoes for the beach"),
    (6, "a long-sleeved oxford with buttons"),
    (7, "athletic footwear for the gym"),
    (8, "a carry-all for groceries"),
    (9, "short leather boots with a zip"),
]

# Written together, before the class lexicon of genlab.models.text_encoder was widened (2026-12-02):
# DEV_PROMPTS to develop the lexicon on (text retrieval only), FRESH_PARAPHRASES a test set that no
# choice was made on.
DEV_PROMPTS = [(0, "a graphic tee"), (0, "a plain white top with short sleeves"), (0, "a v-neck t shirt"),
               (1, "a pair of jeans"), (1, "corduroy trousers"), (1, "tailored pants for the office"),
               (2, "a knit sweater"), (2, "a cardigan"), (2, "a cable-knit jumper"),
               (3, "a maxi dress"), (3, "an evening gown"), (3, "a little black dress"),
               (4, "a puffer jacket"), (4, "a leather jacket"), (4, "a long wool coat"),
               (5, "strappy sandals"), (5, "a pair of flip flops"), (5, "open-toed shoes"),
               (6, "a checked button-up shirt"), (6, "a linen shirt"), (6, "a collared business shirt"),
               (7, "a pair of running shoes"), (7, "athletic sneakers"), (7, "canvas trainers"),
               (8, "a leather purse"), (8, "a handbag"), (8, "a shopping tote"),
               (9, "suede ankle boots"), (9, "a pair of booties with a heel"), (9, "short winter boots")]
FRESH_PARAPHRASES = [(0, "a short sleeve cotton top"), (1, "slim-fit khaki pants"), (2, "a chunky knitted pullover"),
                     (3, "a floral summer dress"), (4, "a heavy winter jacket"), (5, "leather sandals with buckles"),
                     (6, "a crisp white dress shirt"), (7, "white leather sneakers"), (8, "a small crossbody bag"),
                     (9, "black chelsea boots")]


def anchor_unet(channels: int, size: int):
    from diffusers import UNet2DModel

    return UNet2DModel(sample_size=size, in_channels=channels, out_channels=channels, layers_per_block=2,
                       block_out_channels=(16, 32, 64), norm_num_groups=8,
                       down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
                       up_block_types=("AttnUpBlock2D", "UpBlock2D", "UpBlock2D"))


def anchor_schedule(steps: int):
    """genlab's own learning-rate schedule (genlab.engine.lr_factor, cosine) for the anchor's loop."""
    from genlab.config import TrainConfig
    from genlab.engine.trainer import lr_factor

    config = TrainConfig(max_steps=steps, lr=RECIPE["lr"], warmup_steps=RECIPE["warmup_steps"], schedule="cosine",
                         min_lr_ratio=RECIPE["min_lr_ratio"])
    return lambda step: lr_factor(step, config)


def train_anchor(train_x: torch.Tensor, steps: int, batch_size: int, seed: int) -> dict[str, Any]:
    """diffusers' train_unconditional loop: noise, a random timestep, MSE on epsilon; EMA weights for sampling."""
    import copy

    from diffusers import DDPMScheduler

    torch.manual_seed(seed)
    unet = anchor_unet(train_x.shape[1], train_x.shape[-1])
    ema = copy.deepcopy(unet).requires_grad_(False)
    scheduler = DDPMScheduler(num_train_timesteps=1000)
    opt = torch.optim.AdamW(unet.parameters(), lr=RECIPE["lr"], betas=RECIPE["betas"], weight_decay=0.0)
    loader = BatchLoader((train_x,), batch_size, seed=seed)
    lr_factor = anchor_schedule(steps)
    done, start, losses = 0, time.perf_counter(), []
    while done < steps:
        for (images,) in loader:
            for group in opt.param_groups:
                group["lr"] = RECIPE["lr"] * lr_factor(done)
            clean = images.float() / 127.5 - 1
            noise = torch.randn_like(clean)
            t = torch.randint(0, scheduler.config.num_train_timesteps, (len(clean),))
            loss = torch.nn.functional.mse_loss(unet(scheduler.add_noise(clean, noise, t), t).sample, noise)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(unet.parameters(), RECIPE["grad_clip"])
            opt.step()
            decay = min(RECIPE["ema_decay"], (1 + done) / (10 + done))
            with torch.no_grad():
                for e, p in zip(ema.parameters(), unet.parameters()):
                    e.lerp_(p, 1 - decay)
            losses.append(loss.item())
            done += 1
            if done % 100 == 0:
                print(f"[anchor] step {done}/{steps} loss {np.mean(losses[-100:]):.4f} "
                      f"{done * batch_size / (time.perf_counter() - start):.1f} img/s", flush=True)
            if done == steps:
                break
    return {"unet": ema, "scheduler": scheduler, "steps": done, "train_seconds": time.perf_counter() - start,
            "parameters": sum(p.numel() for p in unet.parameters()), "final_loss": float(np.mean(losses[-100:]))}


@torch.no_grad()
def anchor_samples(unet, scheduler, n: int, steps: int, seed: int, chunk: int = 250) -> np.ndarray:
    """DDIMPipeline (eta 0) with the scheduler built from the training DDPMScheduler's config; uint8 (n, C, H, W)."""
    from diffusers import DDIMPipeline, DDIMScheduler

    pipe = DDIMPipeline(unet=unet, scheduler=DDIMScheduler.from_config(scheduler.config))
    pipe.set_progress_bar_config(disable=True)
    generator = torch.Generator().manual_seed(seed)
    out = []
    for i in range(0, n, chunk):
        images = pipe(batch_size=min(chunk, n - i), generator=generator, num_inference_steps=steps, eta=0.0,
                      output_type="np").images
        out.append(np.round(images * 255).astype(np.uint8).transpose(0, 3, 1, 2))
    return np.concatenate(out)


def to_uint8(images: torch.Tensor) -> np.ndarray:
    return (images.clamp(0, 1) * 255).round().to(torch.uint8).numpy()


def ours_samples(model, n: int, sampler: str, steps: int, seed: int, chunk: int = 250, **options) -> np.ndarray:
    generator = torch.Generator().manual_seed(seed)
    opts = DiffusionSampleOptions(sampler=sampler, steps=steps, **options)
    return np.concatenate([to_uint8(model.sample(min(chunk, n - i), generator=generator, options=opts))
                           for i in range(0, n, chunk)])


def train_genlab(data: str, run: Path, steps: int, batch_size: int, seed: int, threads: int,
                 model: dict[str, Any] | None = None) -> dict[str, Any]:
    """genlab.train with the family's defaults; the clock includes its validation, previews and export."""
    start = time.perf_counter()
    genlab.train(
        "diffusion", data, str(run),
        model=model,
        max_steps=steps,
        batch_size=batch_size,
        seed=seed,
        progress=sys.stderr.isatty(),
        threads=threads,
        val_every=max(steps // 4, 1),
        sample_every=max(steps // 4, 1),
    )
    seconds = time.perf_counter() - start
    loaded = genlab.load(run / "model")
    return {"model": loaded, "steps": steps, "train_seconds": seconds, "parameters": loaded.num_parameters()}


# -- speed ------------------------------------------------------------------------------------


def train_speed(forward, parameters, batch: torch.Tensor, repeats: int) -> float:
    """Images/s of forward + backward + AdamW step at this batch (after one warm-up step)."""
    opt = torch.optim.AdamW(parameters, lr=1e-4)
    for i in range(repeats + 1):
        if i == 1:
            start = time.perf_counter()
        t = torch.randint(0, 1000, (len(batch),))
        loss = forward(batch, t).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return len(batch) * repeats / (time.perf_counter() - start)


def speed_part(data, channels: int, size: int, args) -> dict[str, Any]:
    from genlab.models import get_family
    from genlab.models.diffusion import DiffusionConfig

    model = get_family("diffusion")(get_family("diffusion").config_for_data(DiffusionConfig(), data))
    anchor = anchor_unet(channels, size)
    from diffusers import DDPMScheduler

    batch = torch.randn(args.batch_size, channels, size, size)
    result: dict[str, Any] = {"batch_size": args.batch_size, "sampling_images": args.speed_images, "sampling_steps": 50}
    result["genlab_train_images_per_s"] = round(
        train_speed(lambda x, t: model.net(x, t), model.net.parameters(), batch, args.speed_repeats), 1
    )
    result["anchor_train_images_per_s"] = round(
        train_speed(lambda x, t: anchor(x, t).sample, anchor.parameters(), batch, args.speed_repeats), 1
    )
    model.eval()
    start = time.perf_counter()
    model.sample(args.speed_images, generator=torch.Generator().manual_seed(0),
                 options=DiffusionSampleOptions(sampler="ddim", steps=50))
    result["genlab_sample_images_per_s"] = round(args.speed_images / (time.perf_counter() - start), 2)
    start = time.perf_counter()
    anchor_samples(anchor, DDPMScheduler(num_train_timesteps=1000), args.speed_images, 50, 0, chunk=args.speed_images)
    result["anchor_sample_images_per_s"] = round(args.speed_images / (time.perf_counter() - start), 2)
    result["genlab_parameters"] = model.num_parameters()
    result["anchor_parameters"] = sum(p.numel() for p in anchor.parameters())
    result["train_ratio"] = round(result["genlab_train_images_per_s"] / result["anchor_train_images_per_s"], 2)
    result["sample_ratio"] = round(result["genlab_sample_images_per_s"] / result["anchor_sample_images_per_s"], 2)
    return result


def previous_timing(part_file: Path) -> dict[str, Any]:
    """The training figures (`timing`'s keys) of an earlier run of a part, for --reuse."""
    section = json.loads(part_file.read_text())
    return {k: section[k] for k in ("steps", "batch_size", "train_seconds", "train_images_per_s", "parameters")}


def shared_words(prompts: list[str], class_names: list[str]) -> dict[str, list[str]]:
    """Per paraphrase, the content words that some training caption also uses: the honesty check on
    "words never seen in training"."""
    from genlab.models.diffusion.text import captions_for

    def words(text: str) -> set[str]:
        return {
            w
            for w in text.lower().replace("-", " ").split()
            if w not in {"a", "an", "the", "of", "for", "with", "that"}
        }

    seen = set().union(*(words(c) for name in class_names for c in captions_for(name)))
    return {p: sorted(words(p) & seen) for p in prompts}


def text_part(args, data, work: Path, n_train: int, threads: int, command: str) -> dict[str, Any]:
    """Train (or, with --reuse, reload) the text-conditioned model; accuracy of its prompted samples."""
    run = work / "dm-text"
    previous = work / "text.json"
    if args.reuse and (run / "model").exists() and previous.exists():
        model = genlab.load(run / "model")
        section = previous_timing(previous)
    else:
        text_steps = args.steps or int(args.text_epochs * (n_train // args.batch_size))
        trained = train_genlab(args.data, run, text_steps, args.batch_size, 0, threads, {"condition": "text"})
        model, section = trained["model"], timing(trained, args.batch_size, n_train, command)
    reference = reference_classifier(data)

    def accuracy(prompts: list[tuple[int, str]], guidance: float, prior: float) -> dict[str, Any]:
        correct, per_prompt = 0, {}
        for seed, (label, prompt) in enumerate(prompts):
            images = model.sample(args.prompt_samples, prompt=prompt, generator=torch.Generator().manual_seed(seed),
                                  options=DiffusionSampleOptions(guidance=guidance, sampler="dpm++", steps=20,
                                                                 prompt_prior=prior))
            _, probs = reference.embed(images)
            hits = int((torch.as_tensor(probs).argmax(1) == label).sum())
            per_prompt[prompt] = round(hits / len(images), 3)
            correct += hits
        return {"accuracy": round(correct / (len(prompts) * args.prompt_samples), 4), "per_prompt": per_prompt}

    # The prompt prior's temperature: chosen on SELECTION_PROMPTS at the first guidance scale, then fixed.
    selection = {str(prior): accuracy(SELECTION_PROMPTS, args.guidance[0], prior) for prior in args.prompt_priors}
    for prior, scores in selection.items():
        print(f"[text] selection prompts, prompt prior {prior}: {scores['accuracy']:.3f}", flush=True)
    chosen = float(max(selection, key=lambda p: (selection[p]["accuracy"], -float(p))))
    section |= {"sampler": "dpm++ 20", "samples_per_prompt": args.prompt_samples,
                "paraphrase_words_seen_in_training_captions": shared_words(PARAPHRASES, list(model.config.class_names)),
                "prompt_prior_default": model.config.prompt_prior,
                "prompt_prior_selection": {"guidance": args.guidance[0], "by_prior": selection, "chosen": chosen},
                "prompt_prior": chosen, "by_guidance": {}, "by_prior": {}}
    for prior in sorted({0.0, chosen}):  # without the prior, and with the chosen one
        for guidance in args.guidance:
            scores = {"class_name_prompts": accuracy(list(enumerate(CLASS_PROMPTS)), guidance, prior),
                      "paraphrase_prompts": accuracy(list(enumerate(PARAPHRASES)), guidance, prior),
                      "more_paraphrase_prompts": accuracy(MORE_PARAPHRASES, guidance, prior),
                      "fresh_paraphrase_prompts": accuracy(FRESH_PARAPHRASES, guidance, prior),
                      "dev_prompts": accuracy(DEV_PROMPTS, guidance, prior)}
            section["by_prior"].setdefault(str(prior), {})[str(guidance)] = scores
            if prior == chosen:
                section["by_guidance"][str(guidance)] = scores
            print(
                f"[text] prompt prior {prior}, guidance {guidance}: class names "
                f"{scores['class_name_prompts']['accuracy']:.3f}, "
                f"paraphrases {scores['paraphrase_prompts']['accuracy']:.3f}, "
                f"more paraphrases {scores['more_paraphrase_prompts']['accuracy']:.3f}, fresh paraphrases "
                f"{scores['fresh_paraphrase_prompts']['accuracy']:.3f}, "
                f"dev prompts {scores['dev_prompts']['accuracy']:.3f}",
                flush=True,
            )
    return section


# -- driver -----------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)}")
    p.add_argument("--data", default="fashion-mnist")
    p.add_argument("--epochs", type=float, default=3, help="training epochs of both models (default 3)")
    p.add_argument(
        "--text-epochs",
        type=float,
        default=6,
        help="training epochs of the text-conditioned model (default 6)",
    )
    p.add_argument("--steps", type=int, default=None, help="training steps instead of --epochs (smoke tests)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--eval-samples", type=int, default=2000, help="DDIM-50 samples per model (default 2000)")
    p.add_argument("--sampler-samples", type=int, default=1000, help="samples per sampler in the samplers part")
    p.add_argument("--prompt-samples", type=int, default=50, help="samples per prompt in the text part")
    p.add_argument("--guidance", type=lambda v: [float(g) for g in v.split(",")], default=[5.0, 8.0],
                   help="comma-separated guidance scales the text part samples at (default 5,8)")
    p.add_argument("--prompt-priors", type=lambda v: [float(g) for g in v.split(",")], default=[0.0, 0.01, 0.02, 0.05],
                   help="prompt-prior temperatures to try in the text part (0: the raw prompt embedding)")
    p.add_argument("--speed-images", type=int, default=256)
    p.add_argument("--speed-repeats", type=int, default=5)
    p.add_argument("--test-examples", type=int, default=10000)
    p.add_argument("--work", default="/tmp/genlab-bench-diffusion", help="run folders, samples and part results")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: all usable cores)")
    p.add_argument("--reuse", action="store_true",
                   help="genlab and text parts: re-sample the trained runs in WORK instead of training again")
    p.add_argument("--out", default="bench/results/diffusion.json")
    args = p.parse_args(argv)
    args.parts = split_parts(p, args.parts, PARTS)
    return args


def main(argv: list[str] | None = None) -> dict[str, Any] | None:
    args = parse_args(argv)
    threads = args.threads or usable_cores()
    torch.set_num_threads(threads)
    data = load_data(args.data)
    (train_x, _), _ = split_validation(data)  # the images genlab trains on; the anchor gets the same
    steps = args.steps or int(args.epochs * (len(train_x) // args.batch_size))
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    command = shlex.join(["python", "bench/diffusion.py", *(argv if argv is not None else sys.argv[1:])])
    machine = {
        "cores": usable_cores(),
        "cpu_model": cpu_model(),
        "torch_version": torch.__version__,
        "threads": threads,
    }

    def write(part: str, section: dict[str, Any]) -> None:
        (work / f"{part}.json").write_text(
            json.dumps({**section, "machine": machine, "command": command}, indent=2) + "\n"
        )
        print(f"[{part}] {json.dumps({k: v for k, v in section.items() if not isinstance(v, dict)})}", flush=True)

    if "anchor" in args.parts:
        print(f"[anchor] training {ANCHOR_NAME} for {steps} steps at batch {args.batch_size}", flush=True)
        trained = train_anchor(torch.as_tensor(train_x), steps, args.batch_size, 0)
        start = time.perf_counter()
        samples = anchor_samples(trained["unet"], trained["scheduler"], args.eval_samples, 50, 0)
        np.save(work / "anchor_ddim50.npy", samples)
        write(
            "anchor",
            {
                "name": ANCHOR_NAME,
                **timing(trained, args.batch_size, len(train_x), command),
                "final_loss": trained["final_loss"],
                "sample_seconds": round(time.perf_counter() - start, 1),
            },
        )

    if "genlab" in args.parts:
        previous = work / "genlab.json"
        if args.reuse and (work / "dm" / "model").exists() and previous.exists():  # re-sample a trained run
            trained = {"model": genlab.load(work / "dm" / "model")}
            section = previous_timing(previous)
        else:
            print(f"[genlab] training genlab diffusion for {steps} steps at batch {args.batch_size}", flush=True)
            trained = train_genlab(args.data, work / "dm", steps, args.batch_size, 0, threads)
            section = timing(trained, args.batch_size, len(train_x), command)
        start = time.perf_counter()
        np.save(work / "genlab_ddim50.npy", ours_samples(trained["model"], args.eval_samples, "ddim", 50, 0))
        write(
            "genlab",
            {
                **section,
                "run_folder": str(work / "dm"),
                "sample_seconds": round(time.perf_counter() - start, 1),
            },
        )

    if "samplers" in args.parts:
        model = genlab.load(work / "dm" / "model")
        section = {}
        for sampler, n_steps in (("dpm++", 20), ("ddim", 250)):
            start = time.perf_counter()
            np.save(
                work / f"genlab_{sampler}{n_steps}.npy",
                ours_samples(model, args.sampler_samples, sampler, n_steps, 1),
            )
            section[f"{sampler}{n_steps}_seconds"] = round(time.perf_counter() - start, 1)
        write("samplers", section)

    if "speed" in args.parts:
        write("speed", speed_part(data, train_x.shape[1], train_x.shape[-1], args))

    if "text" in args.parts:
        write("text", text_part(args, data, work, len(train_x), threads, command))

    if "score" in args.parts:
        return score(args, data, work, machine, command)
    return None


def score(args, data, work: Path, machine: dict[str, Any], command: str) -> dict[str, Any]:
    reference = reference_classifier(data, progress=True)
    n_test = min(args.test_examples, len(data.test_x))
    test_x = data.test_x[:n_test]
    report: dict[str, Any] = {
        "machine": machine,
        "command": command,
        "budget": {"data": args.data, "test_examples": n_test, "reference_accuracy": reference.accuracy},
    }
    for part in ("anchor", "genlab", "samplers", "speed", "text"):
        path = work / f"{part}.json"
        if path.exists():
            report[part] = json.loads(path.read_text())
    for name in ("anchor_ddim50", "genlab_ddim50", "genlab_dpm++20", "genlab_ddim250"):
        path = work / f"{name}.npy"
        if path.exists():
            metrics = sample_metrics(reference, test_x, np.load(path))
            report.setdefault("scores", {})[name] = {
                k: round(float(metrics[k]), 5) for k in SCORE_KEYS if k in metrics
            } | {"samples": int(metrics["fake_examples"])}
    report["bar"] = bar(report)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report.get("scores", {}), indent=1))
    print("bar: " + ", ".join(f"{k} {'yes' if v else 'NO' if v is False else '-'}" for k, v in report["bar"].items()))
    print(f"wrote {out}")
    return report


def bar(report: dict[str, Any]) -> dict[str, bool | None]:
    """The issue's bar on whatever has been measured (None: not measured yet)."""
    s, speed, text = report.get("scores", {}), report.get("speed"), report.get("text")
    ours, theirs = s.get("genlab_ddim50"), s.get("anchor_ddim50")
    fast, slow = s.get("genlab_dpm++20"), s.get("genlab_ddim250")
    within = lambda a, b: a <= 1.1 * b if b > 0 else a <= b + 0.1 * abs(b)
    g, a = report.get("genlab"), report.get("anchor")
    accuracy = {name: [scores[name]["accuracy"] for scores in text["by_guidance"].values()]
                for name in ("class_name_prompts", "paraphrase_prompts")} if text else {}
    return {
        "parameters_within_10%": abs(g["parameters"] / a["parameters"] - 1) <= 0.1 if g and a else None,
        "fd_genlab_below_anchor": ours["fd_genlab"] < theirs["fd_genlab"] if ours and theirs else None,
        "kid_genlab_below_anchor": ours["kid_genlab"] < theirs["kid_genlab"] if ours and theirs else None,
        "dpm20_fd_within_10%_of_ddim250": within(fast["fd_genlab"], slow["fd_genlab"])
        if fast and slow
        else None,
        "dpm20_kid_within_10%_of_ddim250": within(fast["kid_genlab"], slow["kid_genlab"])
        if fast and slow
        else None,
        "train_speed_at_least_1.5x": speed["train_ratio"] >= 1.5 if speed else None,
        "sample_speed_at_least_1.5x": speed["sample_ratio"] >= 1.5 if speed else None,
        "class_prompts_at_least_90%": max(accuracy["class_name_prompts"]) >= 0.9 if text else None,
        "paraphrases_at_least_75%": max(accuracy["paraphrase_prompts"]) >= 0.75 if text else None,
        "both_text_bars_at_one_guidance": any(c >= 0.9 and p >= 0.75 for c, p in zip(*accuracy.values()))
        if text
        else None,
    }


if __name__ == "__main__":
    main()
