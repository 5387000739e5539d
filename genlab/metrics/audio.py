"""Measures of sound that need no listener: the pitch of a note, by an estimator nobody here wrote.

`note_pitch` is librosa's pYIN (Mauch and Dixon, "pYIN: a fundamental frequency estimator using probabilistic
threshold distributions", ICASSP 2014): the median f0 of the frames it calls voiced, between 30 Hz and 4 kHz;
`cents` says how far that lies from a MIDI note (100 cents a semitone).
"""

from __future__ import annotations

import math

import numpy as np

from genlab.errors import ConfigError


def midi_hz(pitch: float) -> float:
    """The frequency of MIDI note `pitch` (69: A4, 440 Hz)."""
    return 440.0 * 2 ** ((pitch - 69) / 12)


def cents(hz: np.ndarray, pitch: float) -> np.ndarray:
    """How far each frequency lies from MIDI note `pitch`, in cents (NaN where there is no frequency)."""
    return 1200 * np.log2(np.asarray(hz, dtype=float) / midi_hz(pitch))


def note_pitch(waves: np.ndarray, sample_rate: int, fmin: float = 30.0, fmax: float = 4000.0) -> np.ndarray:
    """The median pYIN f0 of each clip (N, samples) over its voiced frames, in Hz; NaN where none is voiced."""
    try:
        import librosa
    except ImportError:
        raise ConfigError("the pitch judge needs librosa",
                          "pip install librosa (genlab's dev extras hold it)") from None
    out = []
    for wave in np.atleast_2d(waves):
        f0, voiced, _ = librosa.pyin(np.asarray(wave, dtype=np.float32), fmin=fmin, fmax=min(fmax, sample_rate / 2),
                                     sr=sample_rate, frame_length=2048)
        out.append(float(np.nanmedian(f0[voiced])) if voiced.any() else math.nan)
    return np.array(out)


def _mel_cepstra(wave: np.ndarray, sample_rate: int, coefficients: int = 24) -> np.ndarray:
    """(T, coefficients) mel-cepstra: the orthonormal DCT-II of each frame's log mel magnitudes (80 bands, n_fft
    1,024, hop 256: genlab's spectrogram settings), without c0 (the frame's loudness)."""
    import torch
    from scipy.fft import dct

    from genlab.data.spectrogram import MelSettings, MelSpectrogram

    transform = MelSpectrogram(MelSettings(sample_rate=sample_rate))
    with torch.no_grad():
        log_mel = transform(torch.from_numpy(np.asarray(wave, np.float32))[None])
    return dct(log_mel[0].numpy().T, type=2, norm="ortho", axis=1)[:, 1 : coefficients + 1]


def mel_cepstral_distortion(reference: np.ndarray, test: np.ndarray, sample_rate: int) -> float:
    """Mel-cepstral distortion in dB (Kubichek 1993): (10 / ln 10) sqrt(2 sum_d (c_d - c'_d)^2) per frame pair,
    averaged over the frames a dynamic-time-warping path (librosa's, Euclidean cost) pairs; silent frames
    (the reference's quietest, 40 dB below its loudest) are left out, as MCD tools leave out silence."""
    import librosa

    a, b = _mel_cepstra(reference, sample_rate), _mel_cepstra(test, sample_rate)
    energy = np.asarray(reference, np.float32)
    _, path = librosa.sequence.dtw(X=a.T, Y=b.T, metric="euclidean")
    path = path[::-1]
    frames = np.lib.stride_tricks.sliding_window_view(np.pad(energy, 512), 1024)[::256][: len(a)]
    loud = 10 * np.log10((frames**2).mean(1) + 1e-12)
    keep = loud[path[:, 0]] > loud.max() - 40
    diff = a[path[keep, 0]] - b[path[keep, 1]]
    return float(np.mean(10 / np.log(10) * np.sqrt(2 * (diff**2).sum(1))))


def log_spectral_distance(reference: np.ndarray, test: np.ndarray, n_fft: int = 1024, hop: int = 256) -> float:
    """Log-spectral distance in dB: per frame sqrt(mean over frequency of (10 log10 P_ref - 10 log10 P_test)^2),
    averaged over the frames (the shorter signal's length; power floored at 1e-10)."""
    import torch

    n = min(len(reference), len(test))
    window = torch.hann_window(n_fft)

    def power(x: np.ndarray) -> torch.Tensor:
        spectrum = torch.stft(torch.from_numpy(np.asarray(x[:n], np.float32)), n_fft, hop, window=window,
                              return_complex=True)
        return 10 * torch.log10(spectrum.abs() ** 2 + 1e-10)

    return float(((power(reference) - power(test)) ** 2).mean(0).sqrt().mean())
