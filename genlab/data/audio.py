"""Sound: a folder of audio files (WAV, FLAC, OGG) read into clips of one length at one sample rate.

Each file is read with soundfile (libsndfile), mixed down to mono, resampled to the folder's sample rate
(`sample_rate`, default 16 kHz: speech's band, and a quarter of the samples of CD audio) by polyphase
filtering (scipy's `resample_poly`, a Kaiser-windowed low-pass at the lower Nyquist), trimmed of leading and
trailing silence (frames more than `TRIM_DB` below the clip's loudest), and normalised to `LOUDNESS_DBFS`
RMS (the peak kept below full scale). Clips are then cut or padded (centred, with silence) to one length:
`seconds`, or by default the longest trimmed clip's, rounded up to a tenth of a second, so that no sound is
cut unless asked (the report gives the lengths, so that one long file padding all the others shows).
Class subfolders become labels, as for images; a fixed share is held out for testing.

The report counts what a person should know before training: sample rates and channels found, lengths,
clipped files (more than `CLIPPED_SHARE` of samples at full scale) and silent ones (RMS below
`SILENT_DBFS`, kept out of training), unreadable files.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from collections import Counter
from pathlib import Path

import numpy as np

from genlab.data.base import DataReport, load_arrays, save_arrays
from genlab.errors import DataError
from genlab.files import genlab_home

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")
SAMPLE_RATE = 16_000
TRIM_DB = 40.0  # frames this far below the clip's loudest frame are silence, at either end
LOUDNESS_DBFS = -20.0  # RMS the clips are normalised to
CLIPPED_SHARE = 0.001  # a file with more than this share of samples at full scale is reported as clipped
SILENT_DBFS = -60.0  # a file quieter than this RMS is silent: reported and left out
ARRAY_KEYS = ["train_x", "train_y", "test_x", "test_y"]
PROCESSING = 2  # in the cache key: a change to how clips are made invalidates the parsed clips


@dataclasses.dataclass
class AudioData:
    """Clips as float32 arrays (N, samples) in [-1, 1] at `sample_rate`, integer labels (-1: unlabelled)."""

    name: str
    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    classes: tuple[str, ...]
    sample_rate: int
    report: DataReport

    kind = "audio"

    @property
    def seconds(self) -> float:
        return self.train_x.shape[1] / self.sample_rate


def read_audio(path: Path) -> tuple[np.ndarray, int, int]:
    """(mono float32 samples, sample rate, channels) of one file; DataError when libsndfile cannot read it."""
    import soundfile

    try:
        samples, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except (RuntimeError, soundfile.LibsndfileError, OSError) as error:
        reason = str(error).replace(f"Error opening {str(path)!r}: ", "")
        raise DataError(f"not a readable audio file: {reason}", "re-encode it as WAV, FLAC or OGG, or remove it") \
            from None
    return samples.mean(1), int(rate), samples.shape[1]


def resample(samples: np.ndarray, rate: int, target: int) -> np.ndarray:
    """Polyphase resampling from `rate` to `target` Hz (exact ratio, anti-aliased)."""
    if rate == target:
        return samples
    from scipy.signal import resample_poly

    g = math.gcd(rate, target)
    return resample_poly(samples, target // g, rate // g).astype(np.float32)


def trim_silence(samples: np.ndarray, rate: int, top_db: float = TRIM_DB) -> np.ndarray:
    """The clip without its leading and trailing frames (25 ms, hop 10 ms) quieter than `top_db` below its loudest."""
    frame, hop = max(1, int(0.025 * rate)), max(1, int(0.010 * rate))
    if len(samples) <= frame:
        return samples
    starts = np.arange(0, len(samples) - frame + 1, hop)
    energy = np.array([np.mean(samples[s : s + frame] ** 2) for s in starts])
    loud = np.flatnonzero(10 * np.log10(energy + 1e-20) > 10 * np.log10(energy.max() + 1e-20) - top_db)
    if not len(loud):
        return samples
    return samples[starts[loud[0]] : starts[loud[-1]] + frame]


def normalise_loudness(samples: np.ndarray, dbfs: float = LOUDNESS_DBFS) -> np.ndarray:
    """Scale to `dbfs` RMS, then down if needed so that the peak stays below full scale (0.99)."""
    rms = float(np.sqrt(np.mean(samples**2)))
    if rms == 0:
        return samples
    scaled = samples * (10 ** (dbfs / 20) / rms)
    peak = float(np.abs(scaled).max())
    return (scaled * (0.99 / peak) if peak > 0.99 else scaled).astype(np.float32)


def fit_length(samples: np.ndarray, length: int) -> np.ndarray:
    """Centre-crop or centre-pad (with silence) to `length` samples."""
    if len(samples) >= length:
        start = (len(samples) - length) // 2
        return samples[start : start + length]
    out = np.zeros(length, dtype=np.float32)
    start = (length - len(samples)) // 2
    out[start : start + len(samples)] = samples
    return out


def load_clip(path: Path, sample_rate: int, length: int) -> np.ndarray:
    """One audio file as a folder's clips are made: mono, resampled, trimmed, loudness-normalised and cut or
    padded to `length` samples (what a sound model of that folder expects as input)."""
    samples, rate, _ = read_audio(path)
    if len(samples) == 0 or rms_dbfs(samples) < SILENT_DBFS:
        raise DataError(f"{path} holds no sound (silent or empty)", "give a clip with sound in it")
    return fit_length(normalise_loudness(trim_silence(resample(samples, rate, sample_rate), sample_rate)), length)


def rms_dbfs(samples: np.ndarray) -> float:
    return 20 * math.log10(float(np.sqrt(np.mean(samples**2))) + 1e-12)


def load_audio_folder(folder: Path, sample_rate: int = SAMPLE_RATE, seconds: float | None = None,
                      test_fraction: float = 0.1, max_bad_fraction: float = 0.05, refresh: bool = False) -> AudioData:
    """A folder of audio files, class subfolders as labels; parsed clips are cached by the folder's listing."""
    folder = Path(folder).resolve()
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)
    if not files:
        raise DataError(f"no audio files ({', '.join(AUDIO_SUFFIXES)}) under {folder}",
                        "point --data at a folder of WAV, FLAC or OGG files (class subfolders become labels)")
    if sample_rate < 1000 or (seconds is not None and seconds <= 0):
        raise DataError(f"sample rate {sample_rate} Hz and clip length {seconds} s are not usable",
                        "e.g. a sample rate of 16000 and --seconds 1")
    listing = "\n".join(f"{p.relative_to(folder)}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in files)
    key = hashlib.sha256(f"{listing}|{sample_rate}|{seconds}|{test_fraction}|{PROCESSING}".encode()).hexdigest()[:16]
    cache = genlab_home() / "cache" / "audio" / key
    cached = None if refresh else load_arrays(cache, ARRAY_KEYS)
    if cached is not None:
        arrays, meta = cached
        report = DataReport(**meta["report"])
        report.check_bad_fraction(len(files), max_bad_fraction)
        return AudioData(folder.name, *(arrays[k] for k in ARRAY_KEYS), tuple(meta["classes"]), meta["sample_rate"],
                         report)

    report = DataReport(folder.name, "audio", str(folder), "path")
    rates: Counter = Counter()
    channels: Counter = Counter()
    clips, names, clipped, silent, lengths = [], [], [], [], []
    for path in files:
        name = path.relative_to(folder).as_posix()
        try:
            samples, rate, n_channels = read_audio(path)
        except DataError as error:
            report.bad_files.append((name, error.problem))
            continue
        if len(samples) == 0:
            report.bad_files.append((name, "no samples"))
            continue
        rates[rate] += 1
        channels[n_channels] += 1
        if np.mean(np.abs(samples) >= 0.999) > CLIPPED_SHARE:
            clipped.append(name)
        if rms_dbfs(samples) < SILENT_DBFS:
            silent.append(name)
            continue
        lengths.append(len(samples) / rate)
        clip = trim_silence(resample(samples, rate, sample_rate), sample_rate)
        clips.append(normalise_loudness(clip))
        names.append(path)
    report.check_bad_fraction(len(files), max_bad_fraction)
    if not clips:
        raise DataError(f"none of the {len(files)} audio files under {folder} holds usable sound",
                        "check the files: unreadable or silent ones are listed by genlab data check")
    trimmed = np.array([len(c) / sample_rate for c in clips])
    length_s = seconds or math.ceil(trimmed.max() * 10 - 1e-9) / 10
    length = int(round(length_s * sample_rate))
    report.shape = [length]
    report.notes += [
        "sample rates: " + ", ".join(f"{r} Hz x {n}" for r, n in sorted(rates.items()))
        + (f" (resampled to {sample_rate} Hz)" if set(rates) != {sample_rate} else ""),
        "channels: " + ", ".join(f"{c} x {n}" for c, n in sorted(channels.items()))
        + (" (mixed down to mono)" if set(channels) != {1} else ""),
        f"lengths: {min(lengths):.2f}-{max(lengths):.2f} s (median {np.median(lengths):.2f} s); after trimming "
        f"{trimmed.min():.2f}-{trimmed.max():.2f} s; clips cut or padded to {length_s:g} s "
        f"({int((trimmed > length_s).sum())} cut)",
        f"clipped (over {CLIPPED_SHARE:.1%} of samples at full scale): {len(clipped)}"
        + (f": {', '.join(clipped[:5])}" if clipped else ""),
        f"silent (RMS below {SILENT_DBFS:g} dBFS, left out): {len(silent)}"
        + (f": {', '.join(silent[:5])}" if silent else ""),
    ]
    class_names = sorted({p.parent.relative_to(folder).as_posix() for p in names} - {"."})
    labelled = bool(class_names) and all(p.parent != folder for p in names)
    classes = tuple(class_names) if labelled else ()
    index = {c: i for i, c in enumerate(classes)}
    x = np.stack([fit_length(c, length) for c in clips])
    y = np.array([index[p.parent.relative_to(folder).as_posix()] if labelled else -1 for p in names], dtype=np.int64)
    order = np.random.default_rng(0).permutation(len(x))  # fixed split, independent of the training seed
    n_test = int(round(len(x) * test_fraction)) if len(x) >= 10 else 0
    test, train = order[:n_test], order[n_test:]
    report.counts = {"train": len(train), "test": len(test)}
    report.classes = list(classes)
    report.class_counts = {c: int((y == i).sum()) for i, c in enumerate(classes)}
    data = AudioData(folder.name, x[train], y[train], x[test], y[test], classes, sample_rate, report)
    save_arrays(cache, dict(zip(ARRAY_KEYS, (data.train_x, data.train_y, data.test_x, data.test_y))),
                {"classes": list(classes), "sample_rate": sample_rate, "report": report.to_dict()})
    return data
