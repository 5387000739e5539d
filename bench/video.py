"""Benchmark: video on moving Fashion-MNIST (issue 23): frame prediction against OpenSTL's ConvLSTM trained for the
same wall clock and against copying the last frame; class-conditional clips' class keeping and motion; frame
interpolation against linear blending; image-to-video.

    python bench/video.py --threads 1 --seconds 4500 --out bench/results/video_latent_mean_ssim.json  # the model now
    python bench/video.py --threads 1 --seconds 4500 --model '{"mean_ssim": 0, "half_share": 0}' \
        --out bench/results/video_latent_mean_decoder.json  # before SSIM in the mean's loss
    python bench/video.py --threads 1 --seconds 4500 --model '{"mean_ssim": 0, "half_share": 0, \
        "mean_decoder": false}' --out bench/results/video_latent_ae_shift.json  # before the mean decoder
    python bench/video.py --threads 1 --seconds 4500 --model '{"mean_ssim": 0, "half_share": 0, \
        "mean_decoder": false, "ae_shift": 0, "ae_steps": 1500, "ae_decoder_steps": 0}' \
        --out bench/results/video_latent_ae1500.json  # before the shift terms
    python bench/video.py --threads 1 --seconds 4500 --model '{"mean_ssim": 0, "half_share": 0, \
        "mean_decoder": false, "ae_shift": 0, "ae_steps": 600, "ae_decoder_steps": 0, "mean_pixel_frames": 0, \
        "latent_cache": 0}' --out bench/results/video_latent_time_conv.json  # before the cache
    python bench/video.py --threads 1 --seconds 4500 --model '{"mean_ssim": 0, "half_share": 0, \
        "mean_decoder": false, "ae_shift": 0, "ae_steps": 600, "ae_decoder_steps": 0, "mean_pixel_frames": 0, \
        "latent_cache": 0, "time_conv": false, "mean_pixels": 0}' --out bench/results/video_latent.json  # before that
    python bench/video.py --threads 1 --seconds 2400 --model '{"latent": 0, "ae_shift": 0, "ae_decoder_steps": 0, \
        "mean_decoder": false, "mean_ssim": 0, "half_share": 0, "patch": 8, "space_time": []}'  # in pixels
    python bench/video.py --n 40 --seconds 15 --eval 4 --samples 2 --steps 2 --model '{"ae_steps": 2, \
        "ae_decoder_steps": 1}' --out /tmp/video_smoke.json  # smoke (a latent model samples only after its autoencoder)
    python bench/video.py --rescore --out bench/results/video_latent.json  # score the last run's models again

The set: `genlab data make moving-fashion` (`--n` clips of 20 frames, 64x64, two garments of one class bouncing;
test clips from Fashion-MNIST's test images). genlab's video diffusion family (one class-conditional model for
every job) and the anchor train side by side, one process and `--threads` each, for `--seconds` of wall clock.

The anchor is OpenSTL's ConvLSTM (Shi et al. 2015) run from OpenSTL's own code: `ConvLSTM_Model`, its cell and
its scheduled sampling, read from the repository's git mirror (`--openstl`, fetched by genlab's tool library;
only those three files, which need nothing but torch and numpy) and trained with OpenSTL's Moving MNIST recipe
(configs/mmnist/ConvLSTM.py: Adam at 5e-4 under a one-cycle schedule, batches of 16, patches of 4, MSE on frames
2..20, scheduled sampling whose teacher-forcing share falls linearly to 0 at 40% of training, as 50,000 of
OpenSTL's 125,000 iterations) at a CPU's size: `--anchor-hidden` channels per layer (OpenSTL: 4 x 128) and
`--anchor-filter` (5). Prediction is scored on the first `--eval` test clips, 10 frames from 10, in OpenSTL's
convention (MSE and MAE summed over a frame's pixels) and per pixel, with SSIM and PSNR.

genlab's forecast is the mean of the futures (`VideoSampleOptions(mean=True)`, one network evaluation), the
forecast of least squared error; one sampled future (DPM-Solver++, `--steps`) is scored beside it. The judges of
generation: a reference classifier trained on the training clips' frames (genlab.metrics.reference) classifies
every frame of `--samples` class-conditional clips per class (class keeping: frames in their clip's majority
class, and in the class asked for), and genlab.metrics.video compares the clips' centroid speeds and
accelerations with the test clips' (1-Wasserstein), beside two references that show the scale: the test clips'
first frames held still, and the frames of test clips shuffled in time.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import math
import subprocess
import sys
import time
import types
from pathlib import Path

import numpy as np
import torch
from common import command, machine, side_by_side, train_for, write

import genlab  # noqa: E402  (bench/common.py put the repository first on the path)
from genlab.data.base import DataReport, ImageData  # noqa: E402
from genlab.data.video import load_video, make_moving_fashion  # noqa: E402
from genlab.metrics.reference import ReferenceConfig, reference_classifier  # noqa: E402
from genlab.metrics.video import (  # noqa: E402
    class_keeping,
    interpolation_psnr,
    linear_blend,
    motion_distance,
    prediction_errors,
)
from genlab.models.video import VideoSampleOptions  # noqa: E402

MODEL = {"condition": "class", "latent": 4, "ae_steps": 1400, "ae_shift": 1.0, "ae_decoder_steps": 400,
         "widths": [64, 128], "blocks": [1, 2], "patch": 2, "space_time": [False, True], "mean_share": 0.5,
         "mean_pixels": 1.0, "mean_decoder": True, "mean_ssim": 0.01, "half_share": 0.5, "mean_pixel_frames": 4,
         "latent_cache": 1024, "time_conv": True}
TRAINING = {"batch_size": 8, "lr": 1e-3}
OPENSTL_FILES = ("openstl/modules/convlstm_modules.py", "openstl/models/convlstm_model.py",
                 "openstl/utils/predrnn_utils.py")
CONTEXT = 10
OPENSTL_MIRROR = "/work/.mirror/chengtan9907+OpenSTL/repo"  # where genlab's tool library fetches the repository


def parse_openstl_default() -> str:
    return OPENSTL_MIRROR


# -- the anchor: OpenSTL's ConvLSTM ----------------------------------------------------------------------------


def openstl(mirror: Path) -> types.SimpleNamespace:
    """OpenSTL's ConvLSTM_Model, ConvLSTMCell, schedule_sampling, reshape_patch and reshape_patch_back, loaded
    from the files of the repository's HEAD (the package's __init__ files import every method, with their
    dependencies, so the three modules are loaded alone under the names they import each other by)."""
    commit = subprocess.run(["git", "-C", str(mirror), "rev-parse", "HEAD"], capture_output=True, text=True,
                            check=True).stdout.strip()
    modules = {}
    for name in ("openstl", "openstl.modules", "openstl.models", "openstl.utils"):
        sys.modules[name] = modules[name] = types.ModuleType(name)
    for path in OPENSTL_FILES:
        source = subprocess.run(["git", "-C", str(mirror), "show", f"HEAD:{path}"], capture_output=True, text=True,
                                check=True).stdout
        name = path[:-3].replace("/", ".")
        module = types.ModuleType(name)
        exec(compile(source, f"OpenSTL/{path}", "exec"), module.__dict__)
        sys.modules[name] = module
        package = sys.modules[name.rsplit(".", 1)[0]]
        for key, value in module.__dict__.items():  # what `from openstl.modules import ConvLSTMCell` reads
            if not key.startswith("_"):
                setattr(package, key, value)
    return types.SimpleNamespace(commit=commit, **{k: getattr(sys.modules[n], k) for n, k in (
        ("openstl.models.convlstm_model", "ConvLSTM_Model"), ("openstl.utils.predrnn_utils", "schedule_sampling"),
        ("openstl.utils.predrnn_utils", "reshape_patch"), ("openstl.utils.predrnn_utils", "reshape_patch_back"))})


def anchor_settings(args, shape: tuple[int, ...]) -> types.SimpleNamespace:
    """OpenSTL's hyper-parameters (configs/mmnist/ConvLSTM.py and its defaults) at this benchmark's size."""
    frames = shape[0]
    return types.SimpleNamespace(
        in_shape=shape, pre_seq_length=CONTEXT, aft_seq_length=frames - CONTEXT, total_length=frames,
        patch_size=4, filter_size=args.anchor_filter, stride=1, layer_norm=0, reverse_scheduled_sampling=0,
        scheduled_sampling=1, sampling_start_value=1.0, lr=5e-4, batch_size=16, device="cpu",
        num_hidden=[args.anchor_hidden] * args.anchor_layers)


def train_anchor(args, data, out: Path) -> dict:
    """OpenSTL's ConvLSTM trained for the wall clock; its weights are written to `out`."""
    lib = openstl(Path(args.openstl))
    hp = anchor_settings(args, data.shape)
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    np.random.seed(0)  # OpenSTL's schedule_sampling draws from numpy's global generator
    model = lib.ConvLSTM_Model(len(hp.num_hidden), hp.num_hidden, hp)
    optimizer = torch.optim.Adam(model.parameters(), lr=hp.lr)
    # the one-cycle schedule over the time budget: OneCycleLR needs a step count, so its position is the share
    # of the wall clock spent (as genlab's own cosine follows --max-time)
    peak, start, steps, eta = hp.lr, time.perf_counter(), 0, hp.sampling_start_value
    x = data.train_x
    # the share of teacher forcing is set from the clock below: OpenSTL's own decrement is turned off
    hp.sampling_stop_iter, hp.sampling_changing_rate = 10**9, 0.0
    while (spent := (time.perf_counter() - start) / args.seconds) < 1:
        share = 0.3  # OneCycleLR's pct_start: cosine up from peak/25, then down to peak/25e4
        if spent < share:
            lr = peak / 25 + (peak - peak / 25) * (1 - math.cos(math.pi * spent / share)) / 2
        else:
            lr = peak / 25e4 + (peak - peak / 25e4) * (1 + math.cos(math.pi * (spent - share) / (1 - share))) / 2
        for group in optimizer.param_groups:
            group["lr"] = lr
        # teacher forcing falls linearly to none at 40% of training (OpenSTL: 1.0 - 2e-5 per step, 0 from 50,000)
        eta = max(0.0, 1.0 - spent / 0.4)
        _, flag = lib.schedule_sampling(eta, steps, hp.batch_size, hp)
        batch = torch.from_numpy(x[rng.integers(0, len(x), hp.batch_size)]).float() / 255  # (B, T, C, H, W)
        ims = lib.reshape_patch(batch.permute(0, 1, 3, 4, 2).contiguous(), hp.patch_size)
        _, loss = model(ims, flag)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        steps += 1
    torch.save(model.state_dict(), out)
    return {"train_seconds": round(time.perf_counter() - start, 1), "train_steps": steps,
            "parameters": sum(p.numel() for p in model.parameters()), "openstl_commit": lib.commit,
            "num_hidden": hp.num_hidden, "filter_size": hp.filter_size, "patch_size": hp.patch_size,
            "final_train_mse": round(float(loss.detach()), 5)}


@torch.no_grad()
def anchor_predict(args, data, weights: Path, clips: np.ndarray) -> torch.Tensor:
    """The anchor's 10 next frames of each clip from its first 10 (OpenSTL's test: no true frame fed after the
    context), (B, 10, C, H, W) in [0, 1]."""
    lib = openstl(Path(args.openstl))
    hp = anchor_settings(args, data.shape)
    model = lib.ConvLSTM_Model(len(hp.num_hidden), hp.num_hidden, hp)
    model.load_state_dict(torch.load(weights, weights_only=True))
    model.eval()
    out = []
    for part in np.array_split(clips, max(1, len(clips) // 50)):
        ims = lib.reshape_patch(torch.from_numpy(part).float().div(255).permute(0, 1, 3, 4, 2).contiguous(),
                                hp.patch_size)
        c, h, w = data.shape[1:]
        flag = torch.zeros(len(part), hp.aft_seq_length - 1, h // hp.patch_size, w // hp.patch_size,
                           hp.patch_size**2 * c)
        generated, _ = model(ims, flag, return_loss=False)
        frames = lib.reshape_patch_back(generated, hp.patch_size)[:, -hp.aft_seq_length:]
        out.append(frames.permute(0, 1, 4, 2, 3).clamp(0, 1))
    return torch.cat(out)


# -- genlab's side ---------------------------------------------------------------------------------------------


def frame_judge(data, steps: int | None) -> object:
    """A reference classifier of single frames: every 4th frame of the training clips, labelled with its clip's
    class (genlab.metrics.reference, trained once and cached)."""
    def frames(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return x[:, ::4].reshape(-1, *x.shape[2:]), np.repeat(y, len(range(0, x.shape[1], 4)))

    train_x, train_y = frames(data.train_x, data.train_y)
    test_x, test_y = frames(data.test_x, data.test_y)
    images = ImageData(f"{data.name}-frames", train_x, train_y, test_x, test_y, data.classes,
                       DataReport(name=f"{data.name}-frames", kind="image"))
    config = ReferenceConfig(epochs=2, min_steps=steps or 500)
    return reference_classifier(images, config, progress=False)


def frame_classes(judge, clips: torch.Tensor) -> np.ndarray:
    """The judge's class of every frame of clips (B, T, C, H, W) in [0, 1]: (B, T)."""
    flat = (clips.flatten(0, 1) * 255).round().to(torch.uint8).numpy()
    return judge.predict_proba(flat).argmax(1).numpy().reshape(clips.shape[:2])


def interpolation(model, clips: np.ndarray, factor: int, options: VideoSampleOptions) -> dict:
    """PSNR of the frames between every factor-th frame of the clips: genlab's against linear blending."""
    given = torch.from_numpy(clips[:, ::factor])
    made = torch.cat([model.interpolate(part, factor, options=options, generator=torch.Generator().manual_seed(i))
                      for i, part in enumerate(torch.split(given, 50))])
    truth = torch.from_numpy(clips[:, : made.shape[1]])
    return {"genlab_psnr": round(interpolation_psnr(made, truth, factor), 3),
            "linear_blend_psnr": round(interpolation_psnr(linear_blend(given, factor), truth, factor), 3),
            "frames_made": made.shape[1] - len(given[0])}


def genlab_side(args, data_path: Path, out: Path) -> None:
    run = Path(args.work) / f"run-video-{int(time.time())}"
    took, steps = train_for("video", str(data_path), run, args.seconds, args.threads,
                            {**MODEL, **json.loads(args.model)}, {**TRAINING, **json.loads(args.train)})
    out.write_text(json.dumps({"run": str(run), "train_seconds": round(took, 1), "train_steps": steps}))


def child(args, data_path: Path, role: str, out: Path) -> None:
    if args.threads:
        torch.set_num_threads(args.threads)
    if role == "genlab":
        genlab_side(args, data_path, out)
    else:
        result = train_anchor(args, load_video(data_path), Path(args.work) / "convlstm.pt")
        out.write_text(json.dumps(result))


def evaluate(args, data, genlab_part: dict, anchor_part: dict) -> dict:
    model = genlab.load(Path(genlab_part["run"]) / "model")
    genlab_part["parameters"] = model.num_parameters()
    # the settings the model trained with (what --model set, read back: a rescored run's may differ from MODEL now)
    trained = dataclasses.asdict(model.config)
    results: dict = {"genlab_model": {key: trained[key] for key in {**MODEL, **json.loads(args.model)}
                                      if key in trained}}
    clips = data.test_x[: args.eval]
    truth = torch.from_numpy(clips[:, CONTEXT:]).float() / 255
    context = torch.from_numpy(clips[:, :CONTEXT])
    labels = torch.from_numpy(data.test_y[: args.eval])
    mean_options = VideoSampleOptions(mean=True)
    sample_options = VideoSampleOptions(steps=args.steps, guidance=1.0)

    def forecast(options: VideoSampleOptions, n: int | None = None) -> tuple[torch.Tensor, float]:
        start = time.perf_counter()
        parts = [model.predict(c, labels=y, options=options, generator=torch.Generator().manual_seed(i))
                 for i, (c, y) in enumerate(zip(torch.split(context[:n], 50), torch.split(labels[:n], 50)))]
        return torch.cat(parts), time.perf_counter() - start

    mean, mean_seconds = forecast(mean_options)
    few = args.sampled
    sampled, sample_seconds = forecast(sample_options, few)
    start = time.perf_counter()
    anchor = anchor_predict(args, data, Path(args.work) / "convlstm.pt", clips)
    anchor_seconds = time.perf_counter() - start
    copy_last = context[:, -1:].float().div(255).expand_as(truth)
    results["prediction"] = {
        "protocol": f"{args.eval} test clips, frames 11-20 from frames 1-10",
        "genlab_mean": {**prediction_errors(mean, truth), "seconds": round(mean_seconds, 1)},
        "genlab_sampled": {**prediction_errors(sampled, truth[:few]), "clips": len(sampled),
                           "seconds": round(sample_seconds, 1)},
        "openstl_convlstm": {**prediction_errors(anchor, truth), "seconds": round(anchor_seconds, 1)},
        "copy_last_frame": prediction_errors(copy_last, truth)}

    judge = frame_judge(data, args.reference_steps)
    real = torch.from_numpy(data.test_x[: args.eval]).float() / 255
    wanted = torch.arange(len(data.classes)).repeat_interleave(args.samples)
    start = time.perf_counter()
    generated = torch.cat([model.sample_video(len(part), labels=part, generator=torch.Generator().manual_seed(i),
                                              options=VideoSampleOptions(steps=args.steps, guidance=args.guidance))
                           for i, part in enumerate(torch.split(wanted, 50))])
    generation_seconds = time.perf_counter() - start
    first = torch.from_numpy(clips[:few, 0])
    animated = torch.cat([model.animate(f, labels=y, options=sample_options, generator=torch.Generator().manual_seed(i))
                          for i, (f, y) in enumerate(zip(torch.split(first, 50), torch.split(labels[:few], 50)))])
    still = real[:, :1].expand_as(real)
    shuffled = real[:, torch.randperm(real.shape[1], generator=torch.Generator().manual_seed(0))]
    results["generation"] = {
        "judge": {"frames": "every 4th frame of the training clips", "test_accuracy": round(judge.accuracy, 4)},
        "class_conditional": {"clips": len(generated), "seconds": round(generation_seconds, 1),
                              "guidance": args.guidance,
                              **class_keeping(frame_classes(judge, generated), wanted.numpy()),
                              **motion_distance(generated, real)},
        "animated_from_test_first_frames": {"clips": len(animated),
                                            **class_keeping(frame_classes(judge, animated), labels[:few].numpy()),
                                            **motion_distance(animated, real)},
        "real_test_clips": class_keeping(frame_classes(judge, real), labels.numpy()),
        "reference_still_frames": motion_distance(still, real),
        "reference_shuffled_frames": motion_distance(shuffled, real)}
    results["interpolation"] = {f"{f}x": {"mean": interpolation(model, clips, f, mean_options),
                                          "sampled": interpolation(model, clips[:few], f, sample_options)}
                                for f in (2, 4)}
    results["genlab"] = genlab_part
    results["openstl_convlstm"] = anchor_part
    write_examples(model, generated, mean, anchor, clips, Path(args.work))
    return results


def write_examples(model, generated, mean, anchor, clips, work: Path) -> None:
    """GIFs and a frame grid of what was made, for a person to look at (not part of the results)."""
    from genlab.data.video import frame_grid, frame_image, write_video

    for i in range(min(4, len(generated))):
        write_video(work / f"sample_{i}.gif", generated[i], model.config.fps)
    truth = torch.from_numpy(clips[:4]).float() / 255
    rows = torch.cat([truth[:, CONTEXT:], mean[:4], anchor[:4]])
    frame_image(frame_grid(rows)).save(work / "prediction_grid.png")
    frame_image(frame_grid(generated[:: max(1, len(generated) // 10)][:10], every=2)).save(work / "samples_grid.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=10000, help="training clips made (and a tenth for test)")
    parser.add_argument("--seconds", type=float, default=2400, help="each model's training wall clock")
    parser.add_argument("--eval", type=int, default=200, help="test clips scored by the mean forecasts")
    parser.add_argument("--sampled", type=int, default=50, help="test clips scored by sampled frames (slower)")
    parser.add_argument("--eval-threads", type=int, default=2, help="threads of the scoring, after training")
    parser.add_argument("--samples", type=int, default=10, help="class-conditional clips per class")
    parser.add_argument("--steps", type=int, default=10, help="sampler steps (DPM-Solver++)")
    parser.add_argument("--guidance", type=float, default=4.0, help="classifier-free guidance of class-conditional "
                        "clips (the other jobs are given frames and sample without guidance)")
    parser.add_argument("--rescore", action="store_true", help="score the models that the last run in --work "
                        "trained (its part-genlab.json and part-anchor.json) without training again")
    parser.add_argument("--reference-steps", type=int, default=None, help="the frame judge's minimum updates")
    parser.add_argument("--model", default="{}", help="JSON overrides of genlab's video config")
    parser.add_argument("--train", default="{}", help="JSON overrides of genlab's training config")
    parser.add_argument("--anchor-hidden", type=int, default=64)
    parser.add_argument("--anchor-layers", type=int, default=2)
    parser.add_argument("--anchor-filter", type=int, default=3)
    parser.add_argument("--openstl", default=OPENSTL_MIRROR,
                        help="a git mirror of github.com/chengtan9907/OpenSTL")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--work", default="/tmp/genlab-video")
    parser.add_argument("--role", default=None, help=argparse.SUPPRESS)  # one side, in a child process
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "video.json"))
    args = parser.parse_args()
    data_path = Path(args.work) / f"moving-fashion-{args.n}"
    if args.role:
        child(args, data_path, args.role, Path(args.out))
        return
    if not (data_path / "video.json").exists():
        start = time.perf_counter()
        make_moving_fashion(data_path, args.n)
        print(f"made {args.n:,} clips in {time.perf_counter() - start:.1f} s", flush=True)
    if not importlib.util.find_spec("scipy"):
        raise SystemExit("the motion statistics need scipy")
    if args.rescore:
        parts = {name: json.loads((Path(args.work) / f"part-{name}.json").read_text()) for name in ("genlab", "anchor")}
    else:
        parts = side_by_side(__file__, "--role", ["genlab", "anchor"], args.work)
    torch.set_num_threads(args.eval_threads)
    data = load_video(data_path)
    results = {"machine": machine(args.threads), "command": command("video.py"),
               "data": {"clips": args.n, "shape": list(data.shape), "test_clips": len(data.test_x)},
               "genlab_training": {**TRAINING, **json.loads(args.train)},
               **evaluate(args, data, parts["genlab"], parts["anchor"])}
    print(json.dumps({k: results[k] for k in ("prediction", "interpolation")}, indent=1), flush=True)
    write(results, args.out)


if __name__ == "__main__":
    main()
