"""Pilots of the video model's two stages (issue 23, docs/video.md): each stage trained alone for a number of steps,
one thread, and scored on what it is for, in 20-25 minutes where the benchmark (bench/video.py) takes 80.

    python bench/video_pilots.py autoencoder --name bench --steps 1400  # the benchmark's: 1,000 + 400 decoder alone
    python bench/video_pilots.py autoencoder --name shift1 --steps 1500 --model '{"ae_decoder_steps": 0}'
    python bench/video_pilots.py autoencoder --name plain --steps 1500 --model '{"ae_shift": 0, "ae_decoder_steps": 0}'
    python bench/video_pilots.py diffusion --name base --steps 777 \
        --autoencoder /tmp/genlab-video-pilots/ae-bench.safetensors
    python bench/video_pilots.py diffusion --name px4 --steps 777 --model '{"mean_pixels": 4}' \
        --autoencoder /tmp/genlab-video-pilots/ae-bench.safetensors
    python bench/video_pilots.py autoencoder --n 40 --steps 3 --eval 8 --reference-steps 5  # smoke

`autoencoder` trains the first stage of the benchmark's model (bench/video.py's MODEL and `--model` over it) for
`--steps` steps of 8 clips (4 frames of each), through the model's own loss (so `ae_decoder_steps` ends it with
the decoder alone), at the benchmark's learning rate, and scores it on frames 11-20 of `--eval` test clips: their
decoded MSE per frame (OpenSTL's convention: the floor of any latent forecast), L1, the frame judge's class keeping
of the decoded clips, and how far the encoder is from shift-equivariant (frames moved by 1, 2 and 4 pixels against
their latents moved alike, per channel relative to its variance: 0 is equivariant; against the unmoved latents
beside it). It saves the autoencoder to WORK/ae-NAME.safetensors.

`diffusion` trains the denoiser for `--steps` steps of 8 clips on a saved autoencoder's latents (frozen), at the
benchmark's learning rate falling to a tenth along a cosine, and scores: the mean forecast from 10 and from 1
frames (MSE per frame and SSIM), clips animated from test clips' first frames (guidance 1) and class-conditional
clips (guidance 2), both 10 DPM-Solver++ steps, by the frame judge, and the x0 estimate's error on frames 11 and 20
(latent units) at noise levels near the last, from 10 known frames: how much the network takes from them.
Both write WORK/NAME.json.

`diagnose` scores a trained model (`--run RUN/model`, e.g. a benchmark run's) on where its forecasts err: the mean
forecast's MSE per frame of `--eval` test clips beside the ConvLSTM's (`--anchor WORK/convlstm.pt`, bench/video.py's
weights) and their average; on `--few` clips, the frame after 10 known frames (MSE and the judge's class) as the
true frame, its decoding, the mean forecast and sampled futures give it; the x0 estimate's error (latent units) by
noise level with the 10 frames known and with none; the average of 1-8 sampled futures; rolling out (each step
predicts from the last 10 frames and keeps the first 1 or 2 it makes; animated stills rolled out 2 at a time); and
a decoder for the mean: the model's mean decoder (or its autoencoder's decoder) fine-tuned on the mean forecast's
latents of `--finetune-clips` training clips against their frames, scored on the test clips every 200 steps.

    python bench/video_pilots.py diagnose --name diagnose-shift --run /tmp/genlab-video4/run-video-1796667399/model \
        --anchor /tmp/genlab-video4/convlstm.pt --threads 2

`decoders` fine-tunes a trained model's mean decoder after the fact, as `diagnose`'s last part, once per
`--variants` entry, on the same mean latents: `plain` (squared error), `context` (a decoder that also sees the last
known frame) and `ssimW` (squared error plus W x (1 - SSIM), the model's `mean_ssim`); each scored (MSE per frame
and SSIM of `--eval` test clips) every 200 steps, beside the ConvLSTM's.

    python bench/video_pilots.py decoders --name decoders --run /tmp/genlab-video5/run-video-1796678859/model \
        --anchor /tmp/genlab-video5/convlstm.pt --threads 2 --variants plain,context,ssim0.01,ssim0.02
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
from common import machine
from safetensors.torch import load_file, save_file
from video import MODEL, OPENSTL_MIRROR, TRAINING, anchor_predict, frame_classes, frame_judge

import genlab  # noqa: E402
from genlab.data.video import load_video, make_moving_fashion  # noqa: E402  (common put the repository first)
from genlab.metrics.images import ssim  # noqa: E402
from genlab.metrics.video import class_keeping, prediction_errors  # noqa: E402
from genlab.models.video import VideoConfig, VideoDiffusion, VideoSampleOptions, shift  # noqa: E402


def fresh_model(data, overrides: dict) -> VideoDiffusion:
    config = VideoDiffusion.config_for_data(VideoConfig(**{**MODEL, **overrides}), data)
    return VideoDiffusion(config)


def batches(data, steps: int, seed: int):
    """`steps` batches of 8 training clips and their labels, drawn with replacement."""
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.randint(0, len(data.train_x), (TRAINING["batch_size"],), generator=g).numpy()
        yield torch.from_numpy(data.train_x[idx]), torch.from_numpy(data.train_y[idx])


@torch.no_grad()
def score_autoencoder(model: VideoDiffusion, data, judge, n: int) -> dict:
    ae = model.autoencoder
    real = torch.from_numpy(data.test_x[:n]).float() / 255
    x = (real * 2 - 1).flatten(0, 1)
    decoded = torch.cat([ae.decode(ae.encode(part)[0], x.shape[-2:]) for part in x.split(200)])
    decoded = ((decoded + 1) / 2).clamp(0, 1).unflatten(0, real.shape[:2])
    frames = x[:: real.shape[1]][:32]  # the first frame of each clip
    z = ae.encode(frames)[0]
    variance = z.var((0, 2, 3)).clamp_min(1e-12)
    off = {}
    for pixels in (1, 2, 4):
        move = torch.tensor([[0.0, float(pixels)]]).expand(len(frames), 2)
        moved = ae.encode(shift(frames, move))[0]
        off[f"{pixels}px"] = {
            "off_moved_latents": round(float(((moved - shift(z, move / ae.factor)).pow(2).mean((0, 2, 3))
                                              / variance).mean()), 4),
            "off_unmoved_latents": round(float(((moved - z).pow(2).mean((0, 2, 3)) / variance).mean()), 4)}
    later = slice(10, None)  # frames 11-20, those a forecast decodes
    return {"decoded_mse_per_frame": round(prediction_errors(decoded[:, later], real[:, later])["mse_per_frame"], 2),
            "decoded_l1": round(float((decoded - real).abs().mean()), 4),
            "decoded_class_keeping": class_keeping(frame_classes(judge, decoded), data.test_y[:n]),
            "shift_equivariance": off, "latent_channel_variance": [round(float(v), 5) for v in variance]}


def train_autoencoder(args, data, judge) -> dict:
    overrides = json.loads(args.model)
    model = fresh_model(data, {**overrides, "ae_steps": args.steps}).train()
    optimizer = torch.optim.AdamW(model.autoencoder.parameters(), lr=TRAINING["lr"], weight_decay=0.0)
    start = time.perf_counter()
    for step, batch in enumerate(batches(data, args.steps, args.seed)):
        loss = model.loss(batch, step)["loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    seconds = time.perf_counter() - start
    model.eval()
    save_file({k: v.contiguous() for k, v in model.autoencoder.state_dict().items()},
              Path(args.work) / f"ae-{args.name}.safetensors")
    return {"stage": "autoencoder", "model": {**overrides, "ae_steps": args.steps}, "steps": args.steps,
            "seconds_per_step": round(seconds / args.steps, 3), **score_autoencoder(model, data, judge, args.eval)}


@torch.no_grad()
def x0_errors(model: VideoDiffusion, data, n: int = 16, levels=(999, 900, 700, 500), context: int = 10) -> dict:
    """The EMA network's x0 estimate's error on frames 11 and 20 (normalised latents), `context` frames known (and, in
    a `mean_hint` model, the mean forecast in the hidden frames' input, as it samples)."""
    clips = torch.from_numpy(data.test_x[:n]).float() / 127.5 - 1
    labels = torch.from_numpy(data.test_y[:n])
    z = model.to_latent(clips)
    known = (torch.arange(z.shape[1]) < context).expand(len(z), -1)
    noise = torch.randn(z.shape, generator=torch.Generator().manual_seed(0))
    out = {}
    for level in levels:
        t = torch.full((len(z),), level)
        x_t = model.schedule.add_noise(z, noise, t)
        given = z * known[..., None, None, None]
        if model.config.mean_hint and context:
            given = model._mean_hint(model.net_ema, given, known, labels, torch.Generator().manual_seed(1))
        v = model.net_ema(x_t, given, known, t, labels)
        x0, _ = model.schedule.denoise(x_t, t, v, clip=False)
        out[f"t{level}"] = [round(float((x0 - z)[:, f].pow(2).mean()), 3) for f in (10, 19)]
    return out


def train_diffusion(args, data, judge) -> dict:
    overrides = json.loads(args.model)
    model = fresh_model(data, {**overrides, "ae_steps": 1, "ae_decoder_steps": 0})  # the autoencoder: trained
    model.autoencoder.load_state_dict(load_file(args.autoencoder))
    model.train()
    trained = [*model.net.parameters(), *(model.mean_decoder.parameters() if model.mean_decoder is not None else ())]
    optimizer = torch.optim.AdamW(trained, lr=TRAINING["lr"], weight_decay=0.0)
    start = time.perf_counter()
    for step, batch in enumerate(batches(data, args.steps, args.seed + 1), start=1):
        for group in optimizer.param_groups:  # to a tenth along a cosine
            group["lr"] = TRAINING["lr"] * (0.1 + 0.45 * (1 + math.cos(math.pi * (step - 1) / args.steps)))
        loss = model.loss(batch, step)["loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trained, 1.0)
        optimizer.step()
        model.update_ema(step)
    seconds = time.perf_counter() - start
    model.eval()
    clips, labels = data.test_x[: args.eval], torch.from_numpy(data.test_y[: args.eval])
    result: dict = {"stage": "diffusion", "autoencoder": args.autoencoder, "model": overrides, "steps": args.steps,
                    "seconds_per_step": round(seconds / args.steps, 3)}
    for k in (10, 1):
        forecast = torch.cat([model.predict(c, labels=y, options=VideoSampleOptions(mean=True))
                              for c, y in zip(torch.split(torch.from_numpy(clips[:, :k]), 50), labels.split(50))])
        errors = prediction_errors(forecast, torch.from_numpy(clips[:, k:]).float() / 255)
        result[f"mean_forecast_from_{k}"] = {key: round(errors[key], 4) for key in ("mse_per_frame", "ssim")}
    few = min(40, args.eval)
    animated = model.animate(torch.from_numpy(clips[:few, 0]), labels=labels[:few],
                             options=VideoSampleOptions(steps=10, guidance=1.0),
                             generator=torch.Generator().manual_seed(0))
    result["animated"] = class_keeping(frame_classes(judge, animated), labels[:few].numpy())
    wanted = torch.arange(len(data.classes)).repeat_interleave(3)
    generated = model.sample_video(len(wanted), labels=wanted, options=VideoSampleOptions(steps=10, guidance=2.0),
                                   generator=torch.Generator().manual_seed(0))
    result["class_conditional"] = class_keeping(frame_classes(judge, generated), wanted.numpy())
    result["x0_error_frames_11_20"] = x0_errors(model, data, min(16, args.eval))
    return result


def convlstm_forecast(args, data, clips: torch.Tensor) -> torch.Tensor:
    """The benchmark's ConvLSTM (`--anchor`, bench/video.py's weights at its default settings) forecasting frames
    11-20 of `clips` from 1-10."""
    settings = argparse.Namespace(openstl=args.openstl, anchor_hidden=64, anchor_layers=2, anchor_filter=3)
    return anchor_predict(settings, data, Path(args.anchor), clips.numpy())


def forecast_scores(made: torch.Tensor, truth: torch.Tensor) -> dict:
    """MSE per frame (OpenSTL's) and SSIM of a forecast, rounded as the pilots report them."""
    errors = prediction_errors(made, truth)
    return {"mse_per_frame": round(errors["mse_per_frame"], 1), "ssim": round(errors["ssim"], 4)}


def per_frame_mse(made: torch.Tensor, truth: torch.Tensor) -> list[float]:
    """MSE of each frame (summed over its pixels, OpenSTL's convention), averaged over clips."""
    return [round(float(v), 1) for v in (made - truth).pow(2).sum((2, 3, 4)).mean(0)]


@torch.no_grad()
def diagnose(args, data, judge) -> dict:
    model = genlab.load(args.run).eval()
    c, few = 10, args.few
    clips, labels = torch.from_numpy(data.test_x[: args.eval]), torch.from_numpy(data.test_y[: args.eval])
    truth = clips[:, c:].float() / 255

    def predict(context, y, seed: int = 0, **options):
        return torch.cat([model.predict(part, labels=part_y, options=VideoSampleOptions(**options),
                                        generator=torch.Generator().manual_seed(seed + i))
                          for i, (part, part_y) in enumerate(zip(context.split(50), y.split(50)))])

    mean = predict(clips[:, :c], labels, mean=True)
    result: dict = {"stage": "diagnose", "run": args.run, "per_frame_mse": {"genlab_mean": per_frame_mse(mean, truth)}}
    if args.anchor:
        anchor = convlstm_forecast(args, data, clips)
        result["per_frame_mse"]["openstl_convlstm"] = per_frame_mse(anchor, truth)
        result["per_frame_mse"]["average_of_the_two"] = per_frame_mse((anchor + mean) / 2, truth)

    context, y, wanted = clips[:few, :c], labels[:few], labels[:few].numpy()

    def first_made(made: torch.Tensor) -> dict:
        return {"mse": per_frame_mse(made[:, :1], truth[:few, :1])[0],
                "true_class": round(float((frame_classes(judge, made[:, :1])[:, 0] == wanted).mean()), 3)}

    decoded = ((model.from_latent(model.to_latent(clips[:few].float() / 127.5 - 1)) + 1) / 2).clamp(0, 1)
    result["frame_11"] = {"true": first_made(truth[:few]), "decoded": first_made(decoded[:, c:]),
                          "mean": first_made(mean[:few])}
    for sampler, steps in (("dpm++", 10), ("dpm++", 25), ("ddim", 50)):
        made = predict(context, y, sampler=sampler, steps=steps, guidance=1.0)
        result["frame_11"][f"sampled_{sampler}_{steps}"] = first_made(made)
    levels = (999, 900, 700, 500, 300, 100)
    result["x0_error_frames_11_20"] = {"10_known": x0_errors(model, data, few, levels),
                                       "none_known": x0_errors(model, data, few, levels, context=0)}

    total, averaged = torch.zeros_like(truth[:few]), {}
    for k in range(1, 9):
        total += predict(context, y, seed=1000 * k, steps=10, guidance=1.0)
        averaged[k] = round(float(np.mean(per_frame_mse(total / k, truth[:few]))), 1)
    result["average_of_sampled_futures"] = {"mean_forecast": round(float(np.mean(per_frame_mse(mean[:few],
                                                                                                  truth[:few]))), 1),
                                            **{f"{k}_samples": v for k, v in averaged.items()}}

    def roll_out(have: torch.Tensor, keep: int, **options) -> torch.Tensor:
        while have.shape[1] < clips.shape[1]:
            window = have[:, -min(have.shape[1], c):]
            made = predict(window, y, **options)[:, :keep]
            have = torch.cat([have, made[:, : clips.shape[1] - have.shape[1]]], 1)
        return have

    result["roll_out"] = {
        f"mean_{keep}_at_a_time": round(float(np.mean(per_frame_mse(
            roll_out(context.float() / 255, keep, mean=True)[:, c:], truth[:few]))), 1) for keep in (1, 2)}
    animated = roll_out(clips[:few, :1].float() / 255, 2, steps=10, guidance=1.0)
    result["roll_out"]["animated_2_at_a_time"] = class_keeping(frame_classes(judge, animated), wanted)

    result["mean_decoder_finetuned"] = finetune_mean_decoder(args, model, data, clips, labels, truth)
    return result


class ContextDecoder(torch.nn.Module):
    """A mean decoder whose first convolution also sees the last known frame, folded factor x factor into channels
    at the latent's size (zero weights at first: it starts as the decoder it wraps)."""

    def __init__(self, decoder: torch.nn.Sequential, factor: int, channels: int):
        super().__init__()
        first, self.factor = decoder[0], factor
        self.first = torch.nn.Conv2d(first.in_channels + channels * factor**2, first.out_channels, 3, padding=1)
        with torch.no_grad():
            self.first.weight.zero_()
            self.first.weight[:, : first.in_channels] = first.weight
            self.first.bias.copy_(first.bias)
        self.rest = decoder[1:]

    def forward(self, z: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
        return self.rest(self.first(torch.cat([z, torch.nn.functional.pixel_unshuffle(last, self.factor)], 1)))


@torch.no_grad()
def mean_latents(model: VideoDiffusion, x: np.ndarray, y: np.ndarray, c: int = 10) -> torch.Tensor:
    """The mean forecast's latents of frames c+1.. of clips x (uint8) from their first c, (B, T - c, latent, h, w)."""
    parts = []
    for part, part_y in zip(np.array_split(x, max(1, len(x) // 50)), np.array_split(y, max(1, len(x) // 50))):
        z = model.to_latent(torch.from_numpy(part).float() / 127.5 - 1, torch.arange(part.shape[1]) < c)
        known = (torch.arange(z.shape[1]) < c).expand(len(z), -1)
        hint = model._mean_hint(model.net_ema, z * known[..., None, None, None], known, torch.from_numpy(part_y),
                                torch.Generator().manual_seed(len(parts)))
        parts.append(hint[:, c:])
    return torch.cat(parts)


def finetune_mean_decoder(args, model: VideoDiffusion, data, clips, labels, truth, train_z=None, test_z=None,
                          ssim_weight: float = 0.0, context: bool = False) -> dict:
    """The mean forecast's decoder fine-tuned on the mean latents of training clips against their frames, on their
    squared error and `ssim_weight` x (1 - SSIM) (the model's `mean_ssim`); `context`: a ContextDecoder, which also
    sees the last known frame. Scored on the test clips' MSE per frame and SSIM every 200 steps."""
    c, n = 10, args.finetune_clips
    train_z = mean_latents(model, data.train_x[:n], data.train_y[:n]) if train_z is None else train_z
    test_z = mean_latents(model, clips.numpy(), labels.numpy()) if test_z is None else test_z
    train_x = torch.from_numpy(data.train_x[:n]).float() / 127.5 - 1
    test_last = clips[:, c - 1].float() / 127.5 - 1
    start = model.mean_decoder_ema if model.mean_decoder_ema is not None else model.autoencoder.decoder
    decoder = copy.deepcopy(start)
    if context:
        decoder = ContextDecoder(decoder, model.autoencoder.factor, model.config.channels)
    decoder.train().requires_grad_(True)

    def decode(z: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
        """z (B, T', latent, h, w), last (B, C, H, W) -> frames (B, T', C, H, W) near [-1, 1]."""
        if not context:
            return model.from_latent(z, decoder)
        last = last[:, None].expand(-1, z.shape[1], -1, -1, -1).flatten(0, 1)
        return model.from_latent(z, lambda scaled: decoder(scaled, last))

    def score() -> dict:
        with torch.no_grad():
            made = torch.cat([((decode(z, last) + 1) / 2).clamp(0, 1)
                              for z, last in zip(test_z.split(50), test_last.split(50))])
        return forecast_scores(made, truth)

    optimizer = torch.optim.Adam(decoder.parameters(), lr=1e-4)
    g, scores = torch.Generator().manual_seed(args.seed), {0: score()}
    for step in range(1, args.finetune_steps + 1):
        pick, frame = torch.randint(0, len(train_z), (32,), generator=g), torch.randint(0, 10, (32,), generator=g)
        target = train_x[pick, c + frame]
        with torch.enable_grad():  # (diagnose runs without)
            made = decode(train_z[pick, frame][:, None], train_x[pick, c - 1])[:, 0]
            loss = (made - target).pow(2).mean()
            if ssim_weight:
                loss = loss + ssim_weight * (1 - ssim(((made + 1) / 2).clamp(0, 1), (target + 1) / 2)).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step % 200 == 0 or step == args.finetune_steps:
            scores[step] = score()
    return {"clips": n, "ssim_weight": ssim_weight, "context": context, "scores_after_steps": scores}


def decoders(args, data, judge) -> dict:
    """Mean decoders fine-tuned after the fact on a trained model's mean latents, one per `--variants` entry:
    `plain`, `context` (a ContextDecoder) or `ssimW` (SSIM at weight W), beside the ConvLSTM's scores."""
    model = genlab.load(args.run).eval()
    clips, labels = torch.from_numpy(data.test_x[: args.eval]), torch.from_numpy(data.test_y[: args.eval])
    truth = clips[:, 10:].float() / 255
    result: dict = {"stage": "decoders", "run": args.run}
    weights = {}
    for variant in args.variants.split(","):
        try:
            weights[variant] = float(variant.removeprefix("ssim")) if variant.startswith("ssim") else 0.0
        except ValueError:
            weights[variant] = None
        if weights[variant] is None or (variant not in ("plain", "context") and not variant.startswith("ssim")):
            raise SystemExit(f"unknown decoder variant {variant!r}: use plain, context or ssimW (e.g. ssim0.01)")
    if args.anchor:
        result["openstl_convlstm"] = forecast_scores(convlstm_forecast(args, data, clips), truth)
    n = args.finetune_clips
    train_z = mean_latents(model, data.train_x[:n], data.train_y[:n])
    test_z = mean_latents(model, clips.numpy(), labels.numpy())
    for variant, weight in weights.items():
        result[variant] = finetune_mean_decoder(args, model, data, clips, labels, truth, train_z, test_z,
                                                ssim_weight=weight, context=variant == "context")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("stage", choices=("autoencoder", "diffusion", "diagnose", "decoders"))
    parser.add_argument("--name", default="pilot")
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--model", default="{}", help="JSON overrides of the benchmark's video config")
    parser.add_argument("--autoencoder", help="diffusion: a saved autoencoder (WORK/ae-NAME.safetensors)")
    parser.add_argument("--n", type=int, default=10000, help="moving Fashion-MNIST clips (made once in --work)")
    parser.add_argument("--eval", type=int, default=100, help="test clips scored")
    parser.add_argument("--reference-steps", type=int, default=None, help="the frame judge's steps (default 500)")
    parser.add_argument("--run", help="diagnose: a trained model (RUN/model)")
    parser.add_argument("--anchor", help="diagnose: the benchmark's ConvLSTM weights (WORK/convlstm.pt)")
    parser.add_argument("--openstl", default=OPENSTL_MIRROR, help="diagnose: OpenSTL's repository (bench/video.py)")
    parser.add_argument("--few", type=int, default=40, help="diagnose: test clips of the slower parts")
    parser.add_argument("--finetune-clips", type=int, default=1000, help="diagnose: training clips of the decoder")
    parser.add_argument("--finetune-steps", type=int, default=800, help="diagnose: the decoder's steps")
    parser.add_argument("--variants", default="plain,context,ssim0.01,ssim0.02", help="decoders: which to fine-tune")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--work", default="/tmp/genlab-video-pilots")
    args = parser.parse_args()
    if args.stage == "diffusion" and not args.autoencoder:
        parser.error("diffusion needs --autoencoder WORK/ae-NAME.safetensors (made by the autoencoder stage)")
    if args.stage in ("diagnose", "decoders") and not args.run:
        parser.error(f"{args.stage} needs --run RUN/model (a trained latent video model)")
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    work = Path(args.work)
    data_path = work / f"moving-fashion-{args.n}"
    if not (data_path / "video.json").exists():
        make_moving_fashion(data_path, args.n)
    data = load_video(data_path)
    judge = frame_judge(data, args.reference_steps)
    train = {"autoencoder": train_autoencoder, "diffusion": train_diffusion, "diagnose": diagnose,
             "decoders": decoders}[args.stage]
    result = {"machine": machine(args.threads), "command": " ".join(["python", *sys.argv]), **train(args, data, judge)}
    (work / f"{args.name}.json").write_text(json.dumps(result, indent=1, default=lambda o: np.asarray(o).tolist()))
    print(json.dumps(result, default=lambda o: np.asarray(o).tolist()))


if __name__ == "__main__":
    main()
