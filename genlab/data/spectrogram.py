"""Sound as an image and back: log-mel spectrograms, and Griffin-Lim's phase for their inverse.

The settings are the ones TTS vocoders and the diffusers audio pipelines document for 16-22 kHz speech: a
Hann window of `n_fft` = 1,024 samples (64 ms at 16 kHz), hop 256 (16 ms, 62.5 frames a second), 80 mel
bands from 0 Hz to Nyquist on the Slaney mel scale (linear below 1 kHz, logarithmic above) with Slaney's area
normalisation (librosa's defaults, which the tests check against), the magnitude (not the power) summed per
band, and the natural log with a floor of 1e-5 (-100 dB), so that silence is a finite value an image model
can learn. Frames are centred (the signal reflected at its ends): a clip of N samples has 1 + N // hop
frames.

As an image (`to_image`, what the image families train on: `spectrogram_images`), a log-mel spectrogram is
one grey channel, the mel bands as rows with the highest at the top (as spectrograms are drawn) and the frames
as columns, its values mapped linearly from [log(floor), `LOG_MAX`] onto 0-255 (0.06 nats, about 0.5 dB, a
level; Riffusion stores spectrograms as 8-bit images the same way). Clips normalised to -20 dBFS RMS (genlab.data.
audio) peak near 1 nat, so `LOG_MAX` = 4 leaves their loudest bands 3 nats of headroom.

The inverse path: the mel magnitudes back to linear ones by the filterbank's pseudo-inverse, clipped at 0 (the
least-squares magnitude; librosa solves a non-negative least squares instead), then a phase by fast
Griffin-Lim (Perraudin, Balazs and Sondergaard, "A fast Griffin-Lim algorithm", WASPAA 2013): Griffin and Lim's
alternating projections between consistent spectrograms and the given magnitude, with momentum 0.99, from a
seeded random phase.
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

LOG_MAX = 4.0  # the log-mel value an image's 255 stands for


@dataclasses.dataclass(frozen=True)
class MelSettings:
    sample_rate: int = 16_000
    n_fft: int = 1024
    hop: int = 256
    n_mels: int = 80
    f_min: float = 0.0
    f_max: float | None = None  # None: the Nyquist frequency
    floor: float = 1e-5

    def frames(self, samples: int) -> int:
        return 1 + samples // self.hop


def hz_to_mel(hz: torch.Tensor) -> torch.Tensor:
    """Slaney's mel scale: 3 mels per 200 Hz below 1 kHz, then 27 mels per factor 6.4 (Auditory Toolbox)."""
    linear = hz / (200.0 / 3)
    return torch.where(hz >= 1000.0, 15.0 + 27.0 * torch.log(hz.clamp_min(1e-10) / 1000.0) / math.log(6.4), linear)


def mel_to_hz(mel: torch.Tensor) -> torch.Tensor:
    linear = mel * (200.0 / 3)
    return torch.where(mel >= 15.0, 1000.0 * torch.exp((mel - 15.0) * math.log(6.4) / 27.0), linear)


def mel_filterbank(s: MelSettings) -> torch.Tensor:
    """(n_mels, n_fft // 2 + 1) triangles, equally spaced in mels, each of unit area in Hz (Slaney norm)."""
    f_max = s.f_max if s.f_max is not None else s.sample_rate / 2
    edges = mel_to_hz(torch.linspace(float(hz_to_mel(torch.tensor(s.f_min))), float(hz_to_mel(torch.tensor(f_max))),
                                     s.n_mels + 2, dtype=torch.float64))
    bins = torch.linspace(0, s.sample_rate / 2, s.n_fft // 2 + 1, dtype=torch.float64)
    low, centre, high = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (bins[None] - low) / (centre - low)
    falling = (high - bins[None]) / (high - centre)
    triangles = torch.clamp(torch.minimum(rising, falling), min=0.0)
    return (triangles * (2.0 / (high - low))).float()


class MelSpectrogram(torch.nn.Module):
    """Waveforms (B, N) -> log-mel spectrograms (B, n_mels, 1 + N // hop), and back through Griffin-Lim."""

    def __init__(self, settings: MelSettings | None = None):
        super().__init__()
        self.settings = s = settings or MelSettings()
        self.register_buffer("filters", mel_filterbank(s), persistent=False)
        self.register_buffer("window", torch.hann_window(s.n_fft), persistent=False)

    def stft(self, wave: torch.Tensor) -> torch.Tensor:
        s = self.settings
        return torch.stft(wave, s.n_fft, s.hop, window=self.window, center=True, pad_mode="reflect",
                          return_complex=True)

    def istft(self, spectrum: torch.Tensor, length: int | None) -> torch.Tensor:
        s = self.settings
        return torch.istft(spectrum, s.n_fft, s.hop, window=self.window, center=True, length=length)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        return self.log_mel(self.stft(wave).abs())

    def log_mel(self, magnitude: torch.Tensor) -> torch.Tensor:
        """The log-mel spectrogram of STFT magnitudes (B, n_fft // 2 + 1, T), floored at `floor`."""
        return torch.log(torch.clamp(self.filters @ magnitude, min=self.settings.floor))

    def magnitude(self, log_mel: torch.Tensor) -> torch.Tensor:
        """Linear magnitudes (B, n_fft // 2 + 1, T) whose mel bands best match exp(log_mel), clipped at 0."""
        return torch.clamp(torch.linalg.pinv(self.filters) @ torch.exp(log_mel), min=0.0)

    def invert(self, log_mel: torch.Tensor, iterations: int = 32, momentum: float = 0.99, length: int | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """Waveforms (B, length) from log-mel spectrograms: `griffin_lim` of their magnitudes."""
        return self.griffin_lim(self.magnitude(log_mel), iterations, momentum, length, generator)

    def griffin_lim(self, magnitude: torch.Tensor, iterations: int = 32, momentum: float = 0.99,
                    length: int | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
        """A waveform whose STFT magnitude approaches `magnitude` (B, F, T): fast Griffin-Lim from a random phase.
        Each step takes the phase of the STFT of the current estimate, pushed past it by `momentum` times the
        last step's change (momentum 0 is Griffin and Lim's algorithm)."""
        frames, minimum = magnitude.shape[-1], self.settings.n_fft // self.settings.hop + 1
        if frames < minimum:  # too short for the STFT's reflected padding: silence after it, cut off at the end
            wave = self.griffin_lim(F.pad(magnitude, (0, minimum - frames)), iterations, momentum, None, generator)
            return wave[..., : length if length is not None else (frames - 1) * self.settings.hop]
        phase = torch.rand(magnitude.shape, generator=generator, device=magnitude.device) * (2 * math.pi)
        angles = torch.polar(torch.ones_like(magnitude), phase)
        previous = torch.zeros_like(angles)
        for _ in range(iterations):
            rebuilt = self.stft(self.istft(magnitude * angles, length))
            angles = rebuilt - previous * (momentum / (1 + momentum))
            angles = angles / (angles.abs() + 1e-16)
            previous = rebuilt
        return self.istft(magnitude * angles, length)


def voice(log_mel: torch.Tensor, settings: MelSettings, vocoder: Any = None, length: int | None = None,
          seed: int = 0) -> torch.Tensor:
    """Waveforms (B, samples) of log-mel spectrograms made with `settings`: by a learned vocoder (a model with
    `vocode`, trained on the same settings) or, without one, by Griffin-Lim from a phase seeded by `seed`."""
    if vocoder is not None:
        return vocoder.vocode(log_mel, length=length)
    with torch.no_grad():
        return MelSpectrogram(settings).invert(log_mel, length=length, generator=torch.Generator().manual_seed(seed))


def to_image(log_mel: torch.Tensor, settings: MelSettings) -> torch.Tensor:
    """(B, n_mels, T) log-mel -> (B, 1, n_mels, T) uint8, the highest band in row 0."""
    low = math.log(settings.floor)
    levels = ((log_mel - low) / (LOG_MAX - low) * 255).round().clamp(0, 255)
    return levels.flip(1)[:, None].to(torch.uint8)


def from_image(images: torch.Tensor, settings: MelSettings) -> torch.Tensor:
    """(B, 1, n_mels, T) uint8 images, or floats in [0, 1] as the image families sample them -> (B, n_mels, T)
    log-mel: `to_image`'s inverse (to half a level for uint8)."""
    low = math.log(settings.floor)
    unit = images.float() / 255 if images.dtype == torch.uint8 else images.float().clamp(0, 1)
    return unit[:, 0].flip(1) * (LOG_MAX - low) + low


def sound_config(settings: MelSettings, samples: int) -> str:
    """What an image model of spectrograms keeps of its sound (config `sound`): the mel settings and clip length."""
    return json.dumps({**dataclasses.asdict(settings), "samples": samples, "log_max": LOG_MAX}, sort_keys=True)


def read_sound_config(sound: str) -> tuple[MelSettings, int]:
    spec = json.loads(sound)
    fields = {f.name for f in dataclasses.fields(MelSettings)}
    return MelSettings(**{k: v for k, v in spec.items() if k in fields}), int(spec["samples"])


def spectrogram_images(audio: Any, settings: MelSettings | None = None) -> Any:
    """A genlab.data.audio.AudioData as the ImageData of its clips' log-mel spectrograms (`to_image`), the sound
    settings in its `sound` field: what an image family trains on when --data is sound."""
    from genlab.data.base import ImageData

    settings = settings or MelSettings(sample_rate=audio.sample_rate)
    transform = MelSpectrogram(settings)

    def images(clips: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            parts = [to_image(transform(torch.from_numpy(clips[i : i + 256])), settings)
                     for i in range(0, len(clips), 256)]
        shape = (0, 1, settings.n_mels, settings.frames(clips.shape[1]))
        return torch.cat(parts).numpy() if parts else np.zeros(shape, np.uint8)

    report = audio.report
    report.notes = [*report.notes, f"as images: log-mel spectrograms of {settings.n_mels} bands x "
                    f"{settings.frames(audio.train_x.shape[1])} frames (n_fft {settings.n_fft}, hop {settings.hop})"]
    return ImageData(audio.name, images(audio.train_x), audio.train_y, images(audio.test_x), audio.test_y,
                     audio.classes, report, sound=sound_config(settings, audio.train_x.shape[1]))
