"""Text-to-speech: phones -> log-mel spectrogram, a non-autoregressive FastSpeech.

Ren, Ruan, Tan, Qin, Zhao, Zhao and Liu, "FastSpeech: Fast, Robust and Controllable Text to Speech", NeurIPS
2019. The phones (flite's, the front end that turns text into them: genlab.data.speech.phonemes) are embedded,
given sinusoidal positions and encoded by feed-forward Transformer blocks (self-attention, then two 1-D
convolutions, each with a residual connection and layer norm after it); a duration predictor (two convolutions
with ReLU, layer norm and dropout, then a linear layer) predicts each phone's log(1 + frames); the length
regulator repeats each phone's encoding for its frames (the teacher's durations in training, the predicted
ones rounded when speaking); decoder blocks over the frames, with their own positions, and a linear layer give
the 80 mel bands. The teacher's durations come from the corpus's alignment (genlab.data.tts: flite's own
segmentation, FastSpeech's "teacher" being an autoregressive model's attention instead). Loss: L1 between the
predicted and real log-mel over the real frames, plus `duration_weight` x the MSE of the log durations.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from genlab.config import validate
from genlab.data.spectrogram import MelSettings, read_sound_config, sound_config
from genlab.errors import ConfigError
from genlab.models.base import GenerativeModel, TextToSpeech


@dataclasses.dataclass(frozen=True)
class TTSConfig:
    FROM_DATA: ClassVar[tuple[str, ...]] = ("phones", "sound")

    width: int = 128
    """width of the phone and frame encodings"""
    heads: int = 2
    """attention heads of each block"""
    encoder_layers: int = 3
    """feed-forward Transformer blocks over the phones"""
    decoder_layers: int = 3
    """feed-forward Transformer blocks over the frames"""
    ffn: int = 512
    """channels of each block's convolutional feed-forward network"""
    kernel: int = 3
    """kernel size of its convolutions (and of the duration predictor's)"""
    dropout: float = 0.1
    """dropout in the blocks and the duration predictor"""
    duration_weight: float = 1.0
    """weight of the duration predictor's loss"""
    phones: tuple[str, ...] = ()
    """the phone vocabulary, padding first (from the data)"""
    sound: str = ""
    """the mel settings, as JSON (from the data)"""

    def __post_init__(self):
        validate(self)
        if self.width % self.heads or self.kernel % 2 == 0 or min(self.encoder_layers, self.decoder_layers) < 1:
            raise ConfigError(f"width {self.width} must split into {self.heads} heads, kernel {self.kernel} must be "
                              "odd and there must be a block on each side",
                              "e.g. --model.width 128 --model.heads 2 --model.kernel 3")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"dropout = {self.dropout} must be in [0, 1)", "e.g. --model.dropout 0.1")


def positions(length: int, width: int, device: torch.device) -> torch.Tensor:
    """(length, width) sinusoidal position encodings (Vaswani et al. 2017)."""
    position = torch.arange(length, device=device, dtype=torch.float32)[:, None]
    rate = torch.exp(torch.arange(0, width, 2, device=device, dtype=torch.float32) * (-math.log(10_000.0) / width))
    table = torch.zeros(length, width, device=device)
    table[:, 0::2] = torch.sin(position * rate)
    table[:, 1::2] = torch.cos(position * rate)
    return table


class FFTBlock(nn.Module):
    """FastSpeech's feed-forward Transformer block: self-attention, then conv -> ReLU -> conv, post-norm."""

    def __init__(self, c: TTSConfig):
        super().__init__()
        self.attention = nn.MultiheadAttention(c.width, c.heads, dropout=c.dropout, batch_first=True)
        self.conv1 = nn.Conv1d(c.width, c.ffn, c.kernel, padding=c.kernel // 2)
        self.conv2 = nn.Conv1d(c.ffn, c.width, c.kernel, padding=c.kernel // 2)
        self.norm1, self.norm2 = nn.LayerNorm(c.width), nn.LayerNorm(c.width)
        self.drop = nn.Dropout(c.dropout)

    def forward(self, x: torch.Tensor, padding: torch.Tensor) -> torch.Tensor:
        """x (B, T, W), padding (B, T) True where there is nothing."""
        a, _ = self.attention(x, x, x, key_padding_mask=padding, need_weights=False)
        x = self.norm1(x + self.drop(a))
        h = self.conv2(F.relu(self.conv1(x.transpose(1, 2)))).transpose(1, 2)
        return self.norm2(x + self.drop(h)).masked_fill(padding[..., None], 0.0)


class DurationPredictor(nn.Module):
    def __init__(self, c: TTSConfig):
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv1d(c.width, c.width, c.kernel, padding=c.kernel // 2) for _ in range(2))
        self.norms = nn.ModuleList(nn.LayerNorm(c.width) for _ in range(2))
        self.drop = nn.Dropout(c.dropout)
        self.out = nn.Linear(c.width, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, P, W) -> (B, P) predicted log(1 + frames)."""
        for conv, norm in zip(self.convs, self.norms, strict=True):
            x = self.drop(norm(F.relu(conv(x.transpose(1, 2)).transpose(1, 2))))
        return self.out(x)[..., 0]


def length_regulate(encoded: torch.Tensor, durations: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Repeat each phone's encoding (B, P, W) for its frames (B, P): (B, T, W) and the frames' padding (B, T)."""
    frames = durations.sum(1)
    T = max(int(frames.max()), 1)
    out = encoded.new_zeros(len(encoded), T, encoded.shape[-1])
    for i in range(len(encoded)):
        expanded = torch.repeat_interleave(encoded[i], durations[i], dim=0)
        out[i, : len(expanded)] = expanded
    padding = torch.arange(T, device=encoded.device)[None] >= frames[:, None]
    return out, padding


class FastSpeech(GenerativeModel, TextToSpeech):
    family = "tts"
    Config = TTSConfig
    data_kind: ClassVar[str] = "speech"

    def __init__(self, config: TTSConfig):
        super().__init__(config)
        if not config.phones or not config.sound:
            raise ConfigError("a text-to-speech model needs its phone set and spectrogram settings",
                              "train it with genlab train tts --data CORPUS (genlab data make tts-corpus)")
        self.settings, _ = read_sound_config(config.sound)
        self.embed = nn.Embedding(len(config.phones), config.width, padding_idx=0)
        self.encoder = nn.ModuleList(FFTBlock(config) for _ in range(config.encoder_layers))
        self.durations = DurationPredictor(config)
        self.decoder = nn.ModuleList(FFTBlock(config) for _ in range(config.decoder_layers))
        self.to_mel = nn.Linear(config.width, self.settings.n_mels)

    @classmethod
    def config_for_data(cls, config: TTSConfig, data: Any) -> TTSConfig:
        if config.phones:  # fine-tuning keeps the phone set it was trained with
            unknown = sorted(set(data.phones) - set(config.phones))
            if unknown:
                raise ConfigError(f"the corpus has phones the model never saw: {' '.join(unknown)}",
                                  "fine-tune on a corpus of the same front end (flite's phones)")
            return config
        settings: MelSettings = data.settings
        return dataclasses.replace(config, phones=tuple(data.phones),
                                   sound=sound_config(settings, int(data.train.frames.max()) * settings.hop))

    def encode(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        padding = tokens == 0
        x = self.embed(tokens) + positions(tokens.shape[1], self.config.width, tokens.device)
        for block in self.encoder:
            x = block(x, padding)
        return x, padding

    def decode(self, encoded: torch.Tensor, durations: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, n_mels, T) log-mel and the frames' padding (B, T) from the phones' encodings and durations."""
        x, padding = length_regulate(encoded, durations)
        x = x + positions(x.shape[1], self.config.width, x.device)
        for block in self.decoder:
            x = block(x, padding)
        return self.to_mel(x).transpose(1, 2), padding

    def loss(self, batch: Any, step: int | None = None) -> dict[str, torch.Tensor]:
        tokens, durations, mels, frames = batch
        P, T = int((tokens != 0).sum(1).max()), int(frames.max())
        tokens, durations, mels = tokens[:, :P], durations[:, :P], mels[:, :, :T]
        encoded, phone_padding = self.encode(tokens)
        predicted = self.durations(encoded)
        real = ~phone_padding
        duration_loss = F.mse_loss(predicted[real], torch.log1p(durations[real].float()))
        mel, frame_padding = self.decode(encoded, durations)
        present = (~frame_padding)[:, None].expand_as(mel)
        mel_loss = (mel - mels).abs()[present].mean()
        return {"loss": mel_loss + self.config.duration_weight * duration_loss, "mel_l1": mel_loss,
                "duration_mse": duration_loss}

    def tokens(self, phones: list[str]) -> torch.Tensor:
        index = {p: i for i, p in enumerate(self.config.phones)}
        unknown = sorted({p for p in phones if p not in index or p == self.config.phones[0]})
        if unknown:
            raise ConfigError(f"phones the model never saw: {' '.join(unknown)}",
                              f"the model knows {' '.join(self.config.phones[1:])}")
        return torch.tensor([index[p] for p in phones], dtype=torch.long)

    @torch.no_grad()
    def synthesize(self, phones: list[list[str]], pace: float = 1.0) -> list[torch.Tensor]:
        """The log-mel spectrogram (n_mels, T) of each phone sequence; `pace` > 1 speaks slower."""
        if pace <= 0:
            raise ConfigError(f"pace = {pace} must be above 0", "e.g. 1.0 (1.2: slower)")
        was_training = self.training
        self.eval()
        try:
            tokens = nn.utils.rnn.pad_sequence([self.tokens(p) for p in phones], batch_first=True)
            tokens = tokens.to(self.embed.weight.device)
            encoded, padding = self.encode(tokens)
            durations = torch.clamp(torch.round(torch.expm1(self.durations(encoded)) * pace), min=0).long()
            durations = durations.masked_fill(padding, 0)
            durations[:, 0] = torch.clamp(durations[:, 0], min=1)  # at least one frame in all
            mel, frame_padding = self.decode(encoded, durations)
            return [m[:, : int((~p).sum())] for m, p in zip(mel, frame_padding, strict=True)]
        finally:
            self.train(was_training)
