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
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
from common import machine
from safetensors.torch import load_file, save_file
from video import MODEL, TRAINING, frame_classes, frame_judge

from genlab.data.video import load_video, make_moving_fashion  # noqa: E402  (common put the repository first)
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
def x0_errors(model: VideoDiffusion, data, n: int = 16) -> dict:
    """The EMA network's x0 estimate's error on frames 11 and 20 (normalised latents), 10 frames known."""
    clips = torch.from_numpy(data.test_x[:n]).float() / 127.5 - 1
    labels = torch.from_numpy(data.test_y[:n])
    z = model.to_latent(clips)
    known = (torch.arange(z.shape[1]) < 10).expand(len(z), -1)
    noise = torch.randn(z.shape, generator=torch.Generator().manual_seed(0))
    out = {}
    for level in (999, 900, 700, 500):
        t = torch.full((len(z),), level)
        x_t = model.schedule.add_noise(z, noise, t)
        v = model.net_ema(x_t, z * known[..., None, None, None], known, t, labels)
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("stage", choices=("autoencoder", "diffusion"))
    parser.add_argument("--name", default="pilot")
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--model", default="{}", help="JSON overrides of the benchmark's video config")
    parser.add_argument("--autoencoder", help="diffusion: a saved autoencoder (WORK/ae-NAME.safetensors)")
    parser.add_argument("--n", type=int, default=10000, help="moving Fashion-MNIST clips (made once in --work)")
    parser.add_argument("--eval", type=int, default=100, help="test clips scored")
    parser.add_argument("--reference-steps", type=int, default=None, help="the frame judge's steps (default 500)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--work", default="/tmp/genlab-video-pilots")
    args = parser.parse_args()
    if args.stage == "diffusion" and not args.autoencoder:
        parser.error("diffusion needs --autoencoder WORK/ae-NAME.safetensors (made by the autoencoder stage)")
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    work = Path(args.work)
    data_path = work / f"moving-fashion-{args.n}"
    if not (data_path / "video.json").exists():
        make_moving_fashion(data_path, args.n)
    data = load_video(data_path)
    judge = frame_judge(data, args.reference_steps)
    train = train_autoencoder if args.stage == "autoencoder" else train_diffusion
    result = {"machine": machine(args.threads), "command": " ".join(["python", *sys.argv]), **train(args, data, judge)}
    (work / f"{args.name}.json").write_text(json.dumps(result, indent=1, default=lambda o: np.asarray(o).tolist()))
    print(json.dumps(result, default=lambda o: np.asarray(o).tolist()))


if __name__ == "__main__":
    main()
