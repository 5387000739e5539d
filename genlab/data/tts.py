"""A text-to-speech corpus: utterances, their phones and durations, and their log-mel spectrograms.

The layout is LJSpeech's (`metadata.csv` of `ID|text|normalized text` lines, `wavs/ID.wav`) plus an alignment
(`alignment.jsonl`: for each ID its phones and the second each ends at), which `genlab data make tts-corpus`
writes from flite's own segmentation. Each clip is read, mixed to mono, resampled to 16 kHz and normalised to
-20 dBFS RMS (not trimmed: the alignment's times refer to the clip as it is), and turned into its log-mel
spectrogram (genlab.data.spectrogram's settings). A phone's duration in frames is the difference of the frames
its boundaries fall on (round(end x rate / hop)), the last phone taking what makes the sum the clip's frame
count, so that the durations tile the spectrogram exactly. Utterances are padded into tensors: phone ids (0 is
padding), durations, spectrograms (padded with the floor's log) and frame counts. A fixed 5% is held out.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import torch

from genlab.data.audio import normalise_loudness, read_audio, resample
from genlab.data.base import DataReport
from genlab.data.spectrogram import MelSettings, MelSpectrogram
from genlab.data.speech import FLITE_PHONES
from genlab.errors import DataError

PAD = "<pad>"


def is_tts_corpus(folder: Path) -> bool:
    return (folder / "metadata.csv").exists() and (folder / "wavs").is_dir()


@dataclasses.dataclass
class Utterances:
    tokens: torch.Tensor  # (N, P) phone ids, 0-padded
    durations: torch.Tensor  # (N, P) frames of each phone
    mels: torch.Tensor  # (N, n_mels, T) log-mel, padded with log(floor)
    frames: torch.Tensor  # (N,) frames of each spectrogram
    texts: list[str]

    def __len__(self) -> int:
        return len(self.texts)


@dataclasses.dataclass
class SpeechCorpus:
    name: str
    phones: tuple[str, ...]  # the vocabulary, PAD first
    train: Utterances
    test: Utterances
    settings: MelSettings
    report: DataReport

    kind = "speech"


def durations_in_frames(ends: list[float], frames: int, settings: MelSettings) -> np.ndarray:
    """Each phone's frames, from the seconds its segments end at, summing to `frames`."""
    bounds = np.round(np.asarray(ends) * settings.sample_rate / settings.hop).astype(int)
    bounds = np.minimum(np.maximum.accumulate(bounds), frames)
    durations = np.diff(np.r_[0, bounds])
    durations[-1] += frames - durations.sum()
    return durations


def load_tts_corpus(folder: Path, sample_rate: int = 16_000, test_fraction: float = 0.05,
                    max_bad_fraction: float = 0.05) -> SpeechCorpus:
    folder = Path(folder).resolve()
    if not (folder / "alignment.jsonl").exists():
        raise DataError(f"{folder} has no alignment.jsonl: genlab's text-to-speech learns durations from one",
                        "make the corpus with genlab data make tts-corpus (flite's alignment), or add one")
    lines = [line.split("|") for line in (folder / "metadata.csv").read_text().splitlines() if line.strip()]
    alignment = {}
    for n, line in enumerate((folder / "alignment.jsonl").read_text().splitlines(), 1):
        try:
            entry = json.loads(line)
            alignment[entry["id"]] = (list(entry["phones"]), [float(t) for t in entry["ends"]])
        except (ValueError, KeyError, TypeError):
            raise DataError(f"alignment.jsonl line {n} is not {{\"id\", \"phones\", \"ends\"}} JSON",
                            "write one object a line: its id, its phones and the second each ends at") from None
    settings = MelSettings(sample_rate=sample_rate)
    transform = MelSpectrogram(settings)
    report = DataReport(folder.name, "speech", str(folder), "path")
    items = []
    for fields in lines:
        key = fields[0]
        text = fields[2] if len(fields) > 2 else fields[-1]
        if key not in alignment:
            report.bad_files.append((f"wavs/{key}.wav", "no alignment"))
            continue
        try:
            samples, rate, _ = read_audio(folder / "wavs" / f"{key}.wav")
        except DataError as error:
            report.bad_files.append((f"wavs/{key}.wav", error.problem))
            continue
        wave = normalise_loudness(resample(samples, rate, sample_rate))
        with torch.no_grad():
            log_mel = transform(torch.from_numpy(wave)[None])[0]
        phones, ends = alignment[key]
        items.append((text, phones, durations_in_frames(ends, log_mel.shape[1], settings), log_mel))
    report.check_bad_fraction(len(lines), max_bad_fraction)
    if not items:
        raise DataError(f"no usable utterances in {folder}", "check metadata.csv, wavs/ and alignment.jsonl")
    # the front end's whole inventory, so that a text with a phone the corpus lacks can still be spoken
    phones = (PAD, *sorted(set(FLITE_PHONES) | {p for _, ps, _, _ in items for p in ps}))
    index = {p: i for i, p in enumerate(phones)}
    order = np.random.default_rng(0).permutation(len(items))
    n_test = max(1, int(round(len(items) * test_fraction))) if len(items) >= 20 else 0

    def pack(chosen: np.ndarray) -> Utterances:
        picked = [items[i] for i in chosen]
        P = max((len(p) for _, p, _, _ in picked), default=1)
        T = max((m.shape[1] for *_, m in picked), default=1)
        tokens = torch.zeros(len(picked), P, dtype=torch.long)
        durations = torch.zeros(len(picked), P, dtype=torch.long)
        mels = torch.full((len(picked), settings.n_mels, T), float(np.log(settings.floor)))
        frames = torch.zeros(len(picked), dtype=torch.long)
        for i, (_, ps, ds, m) in enumerate(picked):
            tokens[i, : len(ps)] = torch.tensor([index[p] for p in ps])
            durations[i, : len(ds)] = torch.from_numpy(ds)
            mels[i, :, : m.shape[1]] = m
            frames[i] = m.shape[1]
        return Utterances(tokens, durations, mels, frames, [t for t, *_ in picked])

    train, test = pack(order[n_test:]), pack(order[:n_test])
    seconds = [float(f) * settings.hop / sample_rate for f in torch.cat([train.frames, test.frames])]
    report.counts = {"train": len(train), "test": len(test)}
    seen = sorted({p for _, ps, _, _ in items for p in ps})
    report.notes += [f"phones: {len(seen)} of the front end's {len(phones) - 1} ({' '.join(seen)})",
                     f"utterances of {min(seconds):.2f}-{max(seconds):.2f} s (median {np.median(seconds):.2f} s), "
                     f"{sum(seconds) / 60:.1f} minutes in all"]
    return SpeechCorpus(folder.name, phones, train, test, settings, report)
