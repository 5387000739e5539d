"""Speech made offline by a speech synthesiser: teacher corpora to learn from and measure against.

SC09 (the ten digits of Speech Commands) is the usual small benchmark of spoken-digit generation; it is not
on this machine, so genlab makes its own with Debian's `flite` (CMU's Flite, a diphone/cluster-unit
synthesiser): each digit's word spoken by several voices (`VOICES`), each clip with its own speaking rate
(flite's `duration_stretch`, 0.8-1.25) and pitch (`int_f0_target_mean`, the voice's mean +-15%), drawn from
a seeded generator, so that a class is a distribution rather than one recording. Files are written as
`OUT/DIGIT/VOICE-NNNN.wav` at each voice's own rate: the audio loader resamples them.

A text-to-speech corpus (`make_tts_corpus`) is LJSpeech's layout: `wavs/ID.wav` and `metadata.csv` of
`ID|text|text` lines, spoken by one voice, plus flite's own alignment of each utterance (`alignment.jsonl`: its
phones and the time each ends, from `-psdur`), the teacher's durations a non-autoregressive model learns from.
The texts are digit strings ("four two seven one") and sentences of 4-16 words from the `fortunes` package's
quotations (public domain or freely distributable, on the machine with Debian's `fortunes`).
"""

from __future__ import annotations

import json
import re
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


FORTUNES = Path("/usr/share/games/fortunes")
# flite's US English phone set (CMU's, as its cmu_us voices use it): every phone its front end can give
FLITE_PHONES = ("aa", "ae", "ah", "ao", "aw", "ax", "axr", "ay", "b", "ch", "d", "dh", "eh", "el", "em", "en", "er",
                "ey", "f", "g", "hh", "ih", "iy", "jh", "k", "l", "m", "n", "ng", "ow", "oy", "p", "pau", "r", "s",
                "sh", "t", "th", "uh", "uw", "v", "w", "y", "z", "zh")


def speak_aligned(text: str, out: Path, voice: str = "slt") -> tuple[list[str], list[float]]:
    """Synthesise `text` into `out` and return flite's phones and the second each ends at."""
    out.parent.mkdir(parents=True, exist_ok=True)
    done = subprocess.run([flite_binary(), "-voice", voice, "-psdur", "-t", text, "-o", str(out)],
                          capture_output=True, text=True)
    pairs = [p.rsplit(":", 1) for p in done.stdout.split()]
    if done.returncode != 0 or not out.exists() or not pairs:
        raise DataError(f"flite could not speak {text!r} with voice {voice!r}: {done.stderr.strip()[:200]}",
                        f"choose a voice flite has ({', '.join(MEAN_F0)})")
    return [p for p, _ in pairs], [float(t) for _, t in pairs]


def phonemes(text: str, voice: str = "slt") -> list[str]:
    """flite's phones for `text` (its letter-to-sound rules and lexicon: the front end of genlab's TTS), pauses
    included; nothing is synthesised."""
    if not text.strip():
        raise DataError("there is no text to speak", "pass some words, e.g. --text \"four two seven\"")
    done = subprocess.run([flite_binary(), "-voice", voice, "-ps", "-t", text, "-o", "none"], capture_output=True,
                          text=True)
    if done.returncode != 0 or not done.stdout.split():
        raise DataError(f"flite found no phones in {text!r}: {done.stderr.strip()[:200]}", "pass words flite can read")
    return done.stdout.split()


def fortune_sentences(limit: int, seed: int = 0, files: tuple[str, ...] = ("fortunes", "wisdom", "literature",
                                                                           "people", "science")) -> list[str]:
    """Up to `limit` sentences of 4-16 words of plain letters and punctuation from Debian's fortune files."""
    found = [FORTUNES / f for f in files if (FORTUNES / f).exists()]
    if not found:
        raise DataError(f"no fortune files under {FORTUNES}", "install Debian's fortunes (make setup does)")
    sentences = set()
    for path in found:
        for entry in path.read_text(errors="replace").split("\n%\n"):
            for sentence in re.split(r"(?<=[.!?])\s+", " ".join(entry.split())):
                words = sentence.split()
                if 4 <= len(words) <= 16 and re.fullmatch(r"[A-Za-z ,.;:'!?-]+", sentence) and not sentence.isupper():
                    sentences.add(sentence)
    ordered = sorted(sentences)
    rng = np.random.default_rng(seed)
    return [ordered[i] for i in rng.permutation(len(ordered))[:limit]]


def make_tts_corpus(out: Path, digit_strings: int = 500, sentences: int = 500, voice: str = "slt",
                    seed: int = 0) -> Path:
    """An LJSpeech-style corpus of one voice: digit strings of 3-6 digits and fortune sentences, with flite's
    phone alignment of each."""
    if voice not in MEAN_F0:
        raise DataError(f"unknown flite voice {voice!r}", f"use one of {', '.join(MEAN_F0)}")
    rng = np.random.default_rng(seed)
    texts = [" ".join(DIGITS[d] for d in rng.integers(0, 10, rng.integers(3, 7))) for _ in range(digit_strings)]
    texts += fortune_sentences(sentences, seed) if sentences else []
    out = Path(out)
    lines, alignments = [], []
    for i, text in enumerate(texts):
        key = f"{voice}-{i:05d}"
        phones, ends = speak_aligned(text, out / "wavs" / f"{key}.wav", voice)
        lines.append(f"{key}|{text}|{text}")
        alignments.append(json.dumps({"id": key, "phones": phones, "ends": ends}))
    (out / "metadata.csv").write_text("\n".join(lines) + "\n")
    (out / "alignment.jsonl").write_text("\n".join(alignments) + "\n")
    return out
