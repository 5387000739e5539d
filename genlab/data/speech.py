"""Spoken digits made offline by a speech synthesiser: a teacher corpus to learn from and measure against.

SC09 (the ten digits of Speech Commands) is the usual small benchmark of spoken-digit generation; it is not
on this machine, so genlab makes its own with Debian's `flite` (CMU's Flite, a diphone/cluster-unit
synthesiser): each digit's word spoken by several voices (`VOICES`), each clip with its own speaking rate
(flite's `duration_stretch`, 0.8-1.25) and pitch (`int_f0_target_mean`, the voice's mean +-15%), drawn from
a seeded generator, so that a class is a distribution rather than one recording. Files are written as
`OUT/DIGIT/VOICE-NNNN.wav` at each voice's own rate: the audio loader resamples them.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np

from genlab.errors import DataError

DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
VOICES = ("slt", "kal16", "awb", "rms")
MEAN_F0 = {"slt": 170.0, "kal16": 105.0, "awb": 110.0, "rms": 100.0, "kal": 105.0, "awb_time": 110.0}  # Hz


def flite_binary() -> str:
    path = shutil.which("flite")
    if path is None:
        raise DataError("the speech synthesiser flite is not installed",
                        "install Debian's flite (apt-get install flite; make setup does)")
    return path


def speak(text: str, out: Path, voice: str = "slt", stretch: float = 1.0, f0: float | None = None) -> Path:
    """Synthesise `text` into the WAV file `out` with flite."""
    command = [flite_binary(), "-voice", voice, "--setf", f"duration_stretch={stretch:.3f}"]
    if f0 is not None:
        command += ["--setf", f"int_f0_target_mean={f0:.1f}"]
    out.parent.mkdir(parents=True, exist_ok=True)
    done = subprocess.run([*command, "-t", text, "-o", str(out)], capture_output=True, text=True)
    if done.returncode != 0 or not out.exists():
        raise DataError(f"flite could not speak {text!r} with voice {voice!r}: {done.stderr.strip()[:200]}",
                        f"choose a voice flite has ({', '.join(MEAN_F0)}; flite -lv lists them)")
    return out


def make_spoken_digits(out: Path, per_class: int = 100, voices: tuple[str, ...] = VOICES, seed: int = 0) -> Path:
    """`per_class` clips of each digit under OUT/0 ... OUT/9, the voices taken in turn."""
    if per_class < 1 or not voices:
        raise DataError(f"per_class = {per_class} with voices {voices}", "e.g. --per-class 100 --voices slt,awb")
    unknown = [v for v in voices if v not in MEAN_F0]
    if unknown:
        raise DataError(f"unknown flite voice {unknown[0]!r}", f"use some of {', '.join(MEAN_F0)}")
    rng = np.random.default_rng(seed)
    out = Path(out)
    for digit, word in enumerate(DIGITS):
        for i in range(per_class):
            voice = voices[i % len(voices)]
            stretch, pitch = rng.uniform(0.8, 1.25), MEAN_F0[voice] * rng.uniform(0.85, 1.15)
            speak(word, out / str(digit) / f"{voice}-{i:04d}.wav", voice, stretch, pitch)
    return out
