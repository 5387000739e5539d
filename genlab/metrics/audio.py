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
