"""Benchmark: musical notes at a requested pitch (issue 22): genlab's class-conditional diffusion on log-mel
spectrograms of notes, judged by librosa's pYIN, beside the teacher's own notes.

    python bench/notes.py --threads 1                 # the real run -> bench/results/notes.json
    python bench/notes.py --pitches 60-62 --instruments piano,flute --seconds 10 --samples 2 \\
        --out /tmp/notes_smoke.json                   # smoke test

1. The corpus: `genlab data make notes` (FluidSynth with the TimGM6mb General MIDI soundfont): each pitch of
   `--pitches` (MIDI numbers, the class) played by each of `--instruments` at velocities 64, 100 and 127, held
   for half a second, under `--work`. The church organ is left out by default: pYIN hears its sub-octave rank
   an octave below the note on most of the teacher's own organ notes.
2. The teacher: the held-out notes as genlab's loader makes them, judged as they are and after the log-mel
   spectrogram and Griffin-Lim (the ceiling of the representation with that inverse).
3. genlab: `genlab.train("diffusion", corpus, condition="class")` for `--seconds` on the training notes'
   spectrogram images, then `--samples` notes of each pitch (DPM-Solver++, `--steps`, guidance `--guidance`),
   each made sound by Griffin-Lim (32 iterations).
4. The judge: pYIN's median f0 over voiced frames (genlab.metrics.audio.note_pitch); a note counts when it lies
   within 50 cents (half a semitone) of the pitch asked for. Also reported: the median absolute error in cents
   and the share of octave errors (within 50 cents of 12 semitones off).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from common import class_samples, command, diffusion_arguments, griffin_lim, machine, train_for, write

import genlab  # noqa: E402  (bench/common.py put the repository first on the path)
from genlab.data import load_data  # noqa: E402
from genlab.data.notes import make_notes  # noqa: E402
from genlab.data.spectrogram import MelSettings, MelSpectrogram  # noqa: E402
from genlab.metrics.audio import cents, note_pitch  # noqa: E402

MODEL = {"condition": "class", "widths": (32, 64, 96), "blocks": (1, 1, 1), "attention": (False, False, True),
         "patch": 2}
TRAINING = {"lr": 1e-3, "batch_size": 32, "warmup_steps": 50}


def judge(waves: np.ndarray, pitches: np.ndarray, rate: int) -> dict:
    off = np.array([cents(f, p) for f, p in zip(note_pitch(waves, rate), pitches, strict=True)])
    right = np.abs(off) <= 50
    return {"within_50_cents": round(float(right.mean()), 4),
            "median_abs_cents": round(float(np.nanmedian(np.abs(off))), 1),
            "octave_errors": round(float((np.abs(np.abs(off) - 1200) <= 50).mean()), 4),
            "unvoiced": round(float(np.isnan(off).mean()), 4),
            "per_pitch": {str(p): round(float(right[pitches == p].mean()), 3) for p in np.unique(pitches)}}


def pitch_range(spec: str) -> tuple[int, ...]:
    if "-" in spec:
        low, high = (int(v) for v in spec.split("-"))
        return tuple(range(low, high + 1))
    return tuple(int(v) for v in spec.split(","))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pitches", default="48-72", help="MIDI note numbers: a range or a list")
    parser.add_argument("--instruments", default="piano,guitar,violin,flute,trumpet")
    diffusion_arguments(parser, seconds=2400, samples=8, work="/tmp/genlab-notes", out="notes.json")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    pitches, instruments = pitch_range(args.pitches), tuple(args.instruments.split(","))
    corpus = Path(args.work) / f"corpus-{pitches[0]}-{pitches[-1]}-{len(pitches)}-{'-'.join(instruments)}"
    if not (corpus / "done").exists():
        make_notes(corpus, pitches, instruments, seconds=0.5)
        (corpus / "done").write_text("")
    data = load_data(str(corpus))
    classes = np.array([int(c) for c in data.classes])
    truth = classes[data.test_y]
    settings = MelSettings(sample_rate=data.sample_rate)
    results = {"machine": machine(args.threads), "command": command("notes.py"),
               "corpus": {"pitches": [pitches[0], pitches[-1]], "instruments": list(instruments),
                          "train": len(data.train_x), "test": len(data.test_x), "seconds": data.seconds}}
    results["teacher"] = judge(data.test_x, truth, data.sample_rate)
    with torch.no_grad():
        teacher_mel = MelSpectrogram(settings)(torch.from_numpy(data.test_x))
    results["teacher_griffin_lim"] = judge(griffin_lim(teacher_mel, settings, data.test_x.shape[1]), truth,
                                           data.sample_rate)
    print(f"teacher: {results['teacher']}\nthrough Griffin-Lim: {results['teacher_griffin_lim']}", flush=True)

    run = Path(args.work) / f"run-{int(time.time())}"
    model_config, training = {**MODEL, **json.loads(args.model)}, {**TRAINING, **json.loads(args.train)}
    trained, steps = train_for("diffusion", str(corpus), run, args.seconds, args.threads, model_config, training)
    model = genlab.load(run / "model")
    wanted, waves, sampled = class_samples(model, args.samples, args.steps, args.guidance)
    results["genlab_diffusion"] = {**judge(waves, classes[wanted], data.sample_rate),
                                   "train_seconds": round(trained, 1), "train_steps": steps,
                                   "sample_seconds": round(sampled, 1), "parameters": model.num_parameters(),
                                   "model": model_config, "training": training, "samples_per_pitch": args.samples,
                                   "steps": args.steps, "guidance": args.guidance, "run": str(run)}
    print(f"genlab diffusion: {results['genlab_diffusion']}", flush=True)
    write(results, args.out)


if __name__ == "__main__":
    main()
