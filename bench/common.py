"""What the sound benchmarks share: the machine's description, a wall-clock-budgeted genlab run, class-conditional
spectrogram samples turned into sound, and writing the results file."""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import genlab  # noqa: E402


def machine(threads: int | None = None) -> dict:
    return {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "threads": threads or torch.get_num_threads(), "torch": torch.__version__}


def command(script: str) -> str:
    return f"python bench/{script} " + " ".join(sys.argv[1:])


def diffusion_arguments(parser, seconds: float, samples: int, work: str, out: str) -> None:
    """The options every class-conditional sound benchmark takes: genlab's budget and sampling, overrides, threads,
    where the corpus and runs go, and the results file."""
    parser.add_argument("--seconds", type=float, default=seconds, help="genlab's training wall clock")
    parser.add_argument("--samples", type=int, default=samples, help="generated clips of each class")
    parser.add_argument("--steps", type=int, default=25, help="sampler steps")
    parser.add_argument("--guidance", type=float, default=3.0)
    parser.add_argument("--model", default="{}", help="JSON overrides of the diffusion config")
    parser.add_argument("--train", default="{}", help="JSON overrides of the training config")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--work", default=work)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / out))


def train_for(family: str, data: str, run: Path, seconds: float, threads: int | None, model: dict,
              training: dict) -> tuple[float, int]:
    """genlab.train for `seconds` of wall clock (no sampling or validation passes in between); the seconds it took
    and the optimiser steps it made."""
    from genlab.files import load_torch_file

    start = time.perf_counter()
    genlab.train(family, data, run, model=model, max_time=f"{int(seconds)}s", max_steps=10**7, sample_every=10**9,
                 val_every=10**9, progress=False, seed=0, threads=threads, **training)
    took = time.perf_counter() - start
    return took, int(load_torch_file(run / "checkpoints" / "last.ckpt")["global_step"])


def class_samples(model, per_class: int, steps: int, guidance: float) -> tuple[np.ndarray, np.ndarray, float]:
    """`per_class` clips of each of a class-conditional sound model's classes: the class index of each, their
    waveforms (the spectrogram images by DPM-Solver++ with classifier-free guidance, 50 at a time, each part its
    own seed, then Griffin-Lim 32), and the seconds the sampling took."""
    from genlab.models.diffusion.model import DiffusionSampleOptions

    wanted = np.repeat(np.arange(model.config.num_classes), per_class)
    options = DiffusionSampleOptions(sampler="dpm++", steps=steps, guidance=guidance)
    start = time.perf_counter()
    images = torch.cat([model.sample(len(part), labels=torch.from_numpy(part), options=options,
                                     generator=torch.Generator().manual_seed(i))
                        for i, part in enumerate(np.array_split(wanted, max(1, len(wanted) // 50)))])
    return wanted, sound_of(images, model), time.perf_counter() - start


def sound_of(images: torch.Tensor, model) -> np.ndarray:
    """The waveforms of a sound model's spectrogram images (floats in [0, 1] or uint8): Griffin-Lim 32 from a
    fixed phase seed, genlab's default inverse."""
    from genlab.data.spectrogram import from_image, read_sound_config

    settings, samples = read_sound_config(model.config.sound)
    return griffin_lim(from_image(images, settings), settings, samples)


def griffin_lim(log_mel: torch.Tensor, settings, samples: int) -> np.ndarray:
    """Griffin-Lim (32 iterations) from a fixed phase seed: genlab's default inverse."""
    from genlab.data.spectrogram import voice

    return voice(log_mel, settings, None, samples).numpy()


def side_by_side(script: str, flag: str, names: list[str], work: str | Path) -> dict[str, dict]:
    """Run `script` again for each name at the same time, one process each (with this run's arguments and `flag NAME
    --out WORK/part-NAME.json`), so that each side gets the same wall clock on its own core; the JSON each wrote, by
    name. A side that fails stops the benchmark."""
    import subprocess

    children = {}
    for name in names:
        part = Path(work) / f"part-{name}.json"
        argv = [sys.executable, script, *sys.argv[1:], flag, name, "--out", str(part)]
        children[name] = (subprocess.Popen(argv), part)
    parts = {}
    for name, (child, part) in children.items():
        if child.wait() != 0:
            raise SystemExit(f"the {name} side failed (exit {child.returncode})")
        parts[name] = json.loads(part.read_text())
    return parts


def first_step(family: str, data: Path, steps: int, work: str, model: dict | None = None,
               train: dict | None = None) -> dict:
    """bench/first_step.py in a fresh process: seconds from launch to the first optimiser step, and peak memory."""
    import subprocess

    launched = time.time()
    out = subprocess.run([sys.executable, str(Path(__file__).parent / "first_step.py"), family, str(data), "--steps",
                          str(steps), "--launched", str(launched), "--work", work, "--model", json.dumps(model or {}),
                          "--train", json.dumps(train or {})], capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"training {family} on {data} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def write(results: dict, out: str) -> None:
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=1))
    print(f"wrote {path}")
