"""A learned vocoder: log-mel spectrograms -> waveforms.

Two generators (`generator`):

- "fourier" (the default; Siuzdak, "Vocos: Closing the gap between time-domain and Fourier-based neural vocoders
  for high-quality audio synthesis", ICLR 2024): every layer runs at the spectrogram's frame rate. A 7-tap
  convolution lifts the mel bands to `width`, `layers` ConvNeXt blocks (Liu et al. 2022: a 7-tap depthwise
  convolution, LayerNorm, a 3x pointwise expansion with GELU, a learned per-channel layer scale, a residual)
  mix them, and a linear head gives each frame's STFT log-magnitude for each of the n_fft / 2 + 1 bins (and,
  with `phase` "learned", its phase angle). The log-magnitude is a correction to a prior, the magnitude whose
  mel bands best match the input (the mel filterbank's pseudo-inverse, as FreeV: Lv et al., "FreeV: Free Lunch
  For Vocoders Through Pseudo Inversed Mel Filter", Interspeech 2024), so that training starts from
  Griffin-Lim's magnitudes and spends its steps on the detail the mel bands lost. Nothing is upsampled by
  convolutions, so a CPU trains and runs it many times faster than the alternative;
- "upsample" (Kong, Kim and Bae, "HiFi-GAN: Generative Adversarial Networks for Efficient and High Fidelity
  Speech Synthesis", NeurIPS 2020, at the scale of its V3 configuration): the mel bands lifted to `channels`
  with a 7-tap convolution, then upsampled by the hop in stages (`upsample`, 8 x 8 x 4 = 256), each a
  transposed convolution of twice its stride that halves the channels, followed by multi-receptive-field
  fusion: the mean of residual blocks of dilated 1-D convolutions, one block per kernel size (`kernels`), one
  convolution per dilation (`dilations`; HiFi-GAN's block type 2); leaky ReLU 0.1 throughout, weight
  normalisation on every convolution, a 7-tap convolution to one channel and tanh.

Where the Fourier generator's phase comes from (`phase`):

- "griffin-lim" (the default): the network learns the full-resolution magnitudes alone, against the real
  window's STFT (`magnitude_loss`: spectral convergence plus log-magnitude L1, no waveform between), and fast
  Griffin-Lim (`iterations`, from a seeded phase) rebuilds a phase around them: the structure of Tacotron's
  post-net (Wang et al., "Tacotron: Towards End-to-End Speech Synthesis", Interspeech 2017), which predicts a
  linear spectrogram for Griffin-Lim. A step costs a tenth of a game's, and Griffin-Lim's result is bounded by
  how near its magnitudes are to the true ones, which this learns in minutes on a CPU, where the phase below is
  not (docs/audio.md has the figures);
- "learned": the network also gives each bin's phase, and the inverse STFT (the spectrogram's own window and
  hop) makes the waveform, trained as a GAN (Vocos). Two discriminators judge the waveform: multi-period (each
  of `periods` folds the waveform into rows of that many samples and convolves along the time axis only, so
  that each sees one phase of the periodic structure) and multi-scale (`scales` 1-D convolutional critics of
  the waveform and of its 2x and 4x average-pooled copies). The upsampling generator always plays this game.

The game's losses are least-squares GAN (LSGAN), feature matching (the L1 distance between the discriminators'
activations on real and generated audio, weight `feature_weight`, 2 as HiFi-GAN) and two reconstruction terms:
HiFi-GAN's L1 distance between the log-mel spectrograms of the generated and real windows (`mel_weight`, 45 as
HiFi-GAN), and Parallel WaveGAN's multi-resolution STFT loss (Yamamoto, Song and Kim, ICASSP 2020: spectral
convergence plus log-magnitude L1 at FFT sizes 512, 1024 and 2048; `stft_weight`), which constrains the phase
through the resolutions' disagreement. The Fourier generator's phases are also pulled toward the real window's
own before the inverse STFT mixes them with the magnitudes (`phase_weight`, APNet's anti-wrapped losses on the
phase, group delay and instantaneous frequency). The adversarial terms join after `adversarial_start` steps, as
Parallel WaveGAN first trains its generator on reconstruction alone: early adversarial gradients against an
untrained generator slow the reconstruction a CPU budget can afford.

Training draws random `segment`-sample windows of the training clips (aligned to the hop) and computes their
log-mel spectrograms with the same settings the image families' spectrograms use (genlab.data.spectrogram).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

from genlab.config import validate
from genlab.data.spectrogram import MelSettings, MelSpectrogram, mel_filterbank, read_sound_config, sound_config
from genlab.errors import ConfigError
from genlab.models.base import GenerativeModel, TwoPlayerGame, Vocoder

STFT_RESOLUTIONS = ((512, 128), (1024, 256), (2048, 512))  # (n_fft, hop), Hann windows of n_fft
SLOPE = 0.1


@dataclasses.dataclass(frozen=True)
class VocoderConfig:
    FROM_DATA: ClassVar[tuple[str, ...]] = ("sound",)
    LEGACY_DEFAULTS: ClassVar[dict[str, Any]] = {"phase": "learned"}  # folders saved before `phase` existed

    generator: Literal["fourier", "upsample"] = "fourier"
    """the generator: frame-rate ConvNeXt blocks and an inverse STFT (Vocos), or upsampling convolutions
    (HiFi-GAN)"""
    phase: Literal["griffin-lim", "learned"] = "griffin-lim"
    """where the Fourier generator's phase comes from: Griffin-Lim on its learned magnitudes (the network learns
    the magnitudes alone, no game), or the network with the magnitudes, trained as a GAN (Vocos)"""
    iterations: int = 32
    """Griffin-Lim iterations of phase griffin-lim"""
    width: int = 256
    """the Fourier generator's channels"""
    layers: int = 8
    """the Fourier generator's ConvNeXt blocks"""
    channels: int = 128
    """the upsampling generator's channels after the input convolution, halved at each upsampling stage"""
    upsample: tuple[int, ...] = (8, 8, 4)
    """upsampling factors of the stages; their product must be the spectrogram's hop"""
    kernels: tuple[int, ...] = (3, 5, 7)
    """kernel sizes of each stage's residual blocks (multi-receptive-field fusion)"""
    dilations: tuple[int, ...] = (1, 2)
    """dilations of each residual block's convolutions"""
    periods: tuple[int, ...] = (2, 3, 5, 7, 11)
    """the multi-period discriminator's periods"""
    scales: int = 3
    """the multi-scale discriminator's scales (1, 1/2, 1/4 of the sample rate)"""
    segment: int = 8192
    """samples of each training window (a multiple of the hop)"""
    mel_weight: float = 45.0
    """weight of the log-mel L1 distance in the generator's loss"""
    stft_weight: float = 20.0
    """weight of the multi-resolution STFT loss in the generator's loss"""
    phase_weight: float = 30.0
    """weight of APNet's phase losses against the real window's STFT phase (the Fourier generator; 0: none)"""
    feature_weight: float = 2.0
    """weight of feature matching in the generator's loss"""
    adversarial_start: int = 1000
    """steps of the STFT loss alone before the discriminators join"""
    d_lr_ratio: float = 1.0
    """the discriminators' learning rate as a multiple of the generator's"""
    sound: str = ""
    """the mel settings and clip length, as JSON (from the data)"""

    def __post_init__(self):
        validate(self)
        if self.iterations < 1:
            raise ConfigError(f"iterations {self.iterations} must be at least 1", "e.g. --model.iterations 32")
        if self.width < 8 or self.layers < 1:
            raise ConfigError(f"width {self.width} and layers {self.layers} are too small",
                              "e.g. --model.width 256 --model.layers 8")
        if self.channels < 2 ** len(self.upsample) or any(u < 2 or u % 2 for u in self.upsample):
            raise ConfigError(f"channels {self.channels} and upsample {self.upsample}: each factor must be even and "
                              "the channels must halve at every stage",
                              "e.g. --model.channels 128 --model.upsample [8,8,4]")
        largest = max(n for n, _ in STFT_RESOLUTIONS)
        if self.segment <= largest:
            raise ConfigError(f"segment {self.segment} must be longer than {largest} samples, the STFT loss's largest "
                              "window", "e.g. --model.segment 8192")
        if not self.kernels or not self.dilations or any(k % 2 == 0 for k in self.kernels) or self.scales < 0:
            raise ConfigError(f"kernels {self.kernels} must be odd sizes and dilations {self.dilations} non-empty",
                              "e.g. --model.kernels [3,5,7] --model.dilations [1,2]")
        if self.sound:
            settings, _ = read_sound_config(self.sound)
            upsampled = math.prod(self.upsample) if self.generator == "upsample" else settings.hop
            if upsampled != settings.hop or self.segment % settings.hop:
                raise ConfigError(f"upsample {self.upsample} (x{math.prod(self.upsample)}) and segment {self.segment} "
                                  f"must match the spectrogram's hop of {settings.hop} samples",
                                  "e.g. --model.upsample [8,8,4] --model.segment 8192 for a hop of 256")


def conv1d(c_in: int, c_out: int, kernel: int, stride: int = 1, dilation: int = 1, groups: int = 1) -> nn.Module:
    return weight_norm(nn.Conv1d(c_in, c_out, kernel, stride, padding=dilation * (kernel - 1) // 2,
                                 dilation=dilation, groups=groups))


class ResBlock(nn.Module):
    """x + conv(leaky_relu(x)) for each dilation in turn (HiFi-GAN's residual block of type 2)."""

    def __init__(self, channels: int, kernel: int, dilations: tuple[int, ...]):
        super().__init__()
        self.convs = nn.ModuleList(conv1d(channels, channels, kernel, dilation=d) for d in dilations)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv in self.convs:
            x = x + conv(F.leaky_relu(x, SLOPE))
        return x


class Generator(nn.Module):
    def __init__(self, n_mels: int, c: VocoderConfig):
        super().__init__()
        self.pre = conv1d(n_mels, c.channels, 7)
        self.ups, self.fusions = nn.ModuleList(), nn.ModuleList()
        width = c.channels
        for rate in c.upsample:  # kernel 2r, stride r, padding r/2: exactly r samples out per sample in
            self.ups.append(weight_norm(nn.ConvTranspose1d(width, width // 2, 2 * rate, rate, padding=rate // 2)))
            width //= 2
            self.fusions.append(nn.ModuleList(ResBlock(width, k, c.dilations) for k in c.kernels))
        self.post = conv1d(width, 1, 7)

    def forward(self, log_mel: torch.Tensor) -> torch.Tensor:
        """(B, n_mels, T) -> (B, T x hop) samples in (-1, 1)."""
        x = self.pre(log_mel)
        for up, blocks in zip(self.ups, self.fusions, strict=True):
            x = up(F.leaky_relu(x, SLOPE))
            x = sum(block(x) for block in blocks) / len(blocks)
        return torch.tanh(self.post(F.leaky_relu(x, SLOPE)))[:, 0]


class ConvNeXtBlock(nn.Module):
    """x + scale * W2 gelu(W1 norm(depthwise_conv(x))), over (B, T, C) frames."""

    def __init__(self, width: int, layer_scale: float):
        super().__init__()
        self.depthwise = nn.Conv1d(width, width, 7, padding=3, groups=width)
        self.norm = nn.LayerNorm(width, eps=1e-6)
        self.expand = nn.Linear(width, 3 * width)
        self.project = nn.Linear(3 * width, width)
        self.scale = nn.Parameter(torch.full((width,), layer_scale))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.depthwise(x.transpose(1, 2)).transpose(1, 2)
        return x + self.scale * self.project(F.gelu(self.expand(self.norm(h))))


class FourierGenerator(nn.Module):
    """Log-mel (B, n_mels, T) -> ConvNeXt blocks at the frame rate -> each frame's STFT magnitude (and phase,
    when it learns one) -> inverse STFT."""

    def __init__(self, settings: MelSettings, c: VocoderConfig):
        super().__init__()
        self.n_fft, self.hop = settings.n_fft, settings.hop
        self.learns_phase = c.phase == "learned"
        bins = settings.n_fft // 2 + 1
        self.pre = nn.Conv1d(settings.n_mels, c.width, 7, padding=3)
        self.norm = nn.LayerNorm(c.width, eps=1e-6)
        self.blocks = nn.ModuleList(ConvNeXtBlock(c.width, 1 / c.layers) for _ in range(c.layers))
        self.final_norm = nn.LayerNorm(c.width, eps=1e-6)
        self.head = nn.Linear(c.width, 2 * bins if self.learns_phase else bins)
        with torch.no_grad():  # the magnitude starts at the prior
            self.head.weight[:bins].zero_()
            self.head.bias.zero_()
        self.register_buffer("window", torch.hann_window(settings.n_fft), persistent=False)
        self.register_buffer("inverse", torch.linalg.pinv(mel_filterbank(settings)), persistent=False)
        self.floor = settings.floor

    def frames(self, log_mel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Each frame's log-magnitude and phase (None unless it learns one), (B, n_fft / 2 + 1, T) each."""
        x = self.norm(self.pre(log_mel).transpose(1, 2))
        for block in self.blocks:
            x = block(x)
        out = self.head(self.final_norm(x)).transpose(1, 2)
        correction, phase = out.chunk(2, dim=1) if self.learns_phase else (out, None)
        prior = torch.log(torch.clamp(self.inverse @ torch.exp(log_mel), min=self.floor))
        # exp keeps magnitudes positive and makes silence (a large negative log) cheap to say; the clamp keeps
        # an untrained head from overflowing. The phase is the raw output, an angle wrapped by cos and sin.
        return (prior + correction).clamp(max=math.log(100.0)), phase

    def synthesise(self, log_magnitude: torch.Tensor, phase: torch.Tensor) -> torch.Tensor:
        """(B, (T - 1) x hop) samples: frame t is centred on sample t x hop, as the (centred) forward STFT put it."""
        spectrum = torch.polar(log_magnitude.exp(), phase)
        return torch.istft(spectrum, self.n_fft, self.hop, window=self.window, center=True)

    def forward(self, log_mel: torch.Tensor) -> torch.Tensor:
        return self.synthesise(*self.frames(log_mel))


class PeriodCritic(nn.Module):
    """The waveform folded into (T / p, p) and convolved along T with (5, 1) kernels, stride 3."""

    def __init__(self, period: int, widths: tuple[int, ...] = (32, 64, 128, 128)):
        super().__init__()
        self.period = period
        chans = (1, *widths)
        self.convs = nn.ModuleList(
            weight_norm(nn.Conv2d(a, b, (5, 1), (3 if i < len(widths) - 1 else 1, 1), padding=(2, 0)))
            for i, (a, b) in enumerate(zip(chans[:-1], chans[1:])))
        self.out = weight_norm(nn.Conv2d(chans[-1], 1, (3, 1), padding=(1, 0)))

    def forward(self, wave: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        pad = (-wave.shape[-1]) % self.period
        x = F.pad(wave[:, None], (0, pad), mode="reflect")
        x = x.view(len(wave), 1, -1, self.period)
        features = []
        for conv in self.convs:
            x = F.leaky_relu(conv(x), SLOPE)
            features.append(x)
        x = self.out(x)
        return x.flatten(1), [*features, x]


class ScaleCritic(nn.Module):
    """1-D convolutions of growing stride and grouping over the (pooled) waveform, MelGAN's critic, narrowed."""

    def __init__(self):
        super().__init__()
        self.convs = nn.ModuleList([conv1d(1, 16, 15), conv1d(16, 64, 41, 4, groups=4),
                                    conv1d(64, 128, 41, 4, groups=16), conv1d(128, 128, 41, 4, groups=16),
                                    conv1d(128, 128, 5)])
        self.out = conv1d(128, 1, 3)

    def forward(self, wave: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        x, features = wave[:, None], []
        for conv in self.convs:
            x = F.leaky_relu(conv(x), SLOPE)
            features.append(x)
        x = self.out(x)
        return x.flatten(1), [*features, x]


class Critics(nn.Module):
    """Every period critic, then every scale critic (the waveform average-pooled by 2 between scales)."""

    def __init__(self, c: VocoderConfig):
        super().__init__()
        self.periods = nn.ModuleList(PeriodCritic(p) for p in c.periods)
        self.scales = nn.ModuleList(ScaleCritic() for _ in range(c.scales))

    def forward(self, wave: torch.Tensor) -> list[tuple[torch.Tensor, list[torch.Tensor]]]:
        out = [critic(wave) for critic in self.periods]
        for i, critic in enumerate(self.scales):
            if i:
                wave = F.avg_pool1d(wave[:, None], 4, 2, padding=2)[:, 0]
            out.append(critic(wave))
        return out


def to_length(wave: torch.Tensor, length: int) -> torch.Tensor:
    """(B, length) samples: `wave` cut, or padded with silence (the Fourier generator makes (T - 1) x hop samples
    of T frames, the upsampling one T x hop)."""
    return F.pad(wave, (0, max(0, length - wave.shape[1])))[:, :length]


def anti_wrapped(x: torch.Tensor) -> torch.Tensor:
    """|x| of a phase difference taken to (-pi, pi]: how far apart two angles are, whatever their wrapping."""
    return (x - 2 * math.pi * torch.round(x / (2 * math.pi))).abs()


def phase_loss(phase: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
    """APNet's phase losses (Ai and Ling, "APNet: An All-Frame-Level Neural Vocoder Incorporating Direct
    Prediction of Amplitude and Phase Spectra", IEEE/ACM TASLP 2023), on (B, F, T) phases: the anti-wrapped
    distance of the instantaneous phase, of the group delay (its difference across frequency) and of the
    instantaneous frequency (its difference across time), summed."""
    return (anti_wrapped(phase - true).mean() + anti_wrapped(phase.diff(dim=1) - true.diff(dim=1)).mean()
            + anti_wrapped(phase.diff(dim=2) - true.diff(dim=2)).mean())


def magnitude_loss(log_magnitude: torch.Tensor, magnitude: torch.Tensor, floor: float) -> dict[str, torch.Tensor]:
    """The STFT loss's two terms at one resolution, taken on the magnitudes themselves (no waveform between):
    spectral convergence ||S - S'||_F / ||S||_F, which weighs the loud peaks a Griffin-Lim phase rebuilds around,
    and mean |log max(S, floor) - log S'|, which weighs every bin alike, the quiet ones included."""
    convergence = torch.linalg.norm(magnitude - log_magnitude.exp()) / torch.linalg.norm(magnitude)
    log_distance = (torch.log(magnitude.clamp_min(floor)) - log_magnitude).abs().mean()
    return {"loss": convergence + log_distance, "spectral_convergence": convergence, "log_magnitude_l1": log_distance}


def stft_loss(fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """Parallel WaveGAN's multi-resolution STFT loss: at each resolution ||S_real - S_fake||_F / ||S_real||_F
    (spectral convergence) plus mean |log S_real - log S_fake|; averaged over the resolutions."""
    total = fake.new_zeros(())
    for n_fft, hop in STFT_RESOLUTIONS:
        window = torch.hann_window(n_fft, device=fake.device)
        s_fake, s_real = (torch.stft(x, n_fft, hop, window=window, return_complex=True).abs().clamp_min(1e-7)
                          for x in (fake, real))
        convergence = torch.linalg.norm(s_real - s_fake) / torch.linalg.norm(s_real)
        total = total + convergence + (s_real.log() - s_fake.log()).abs().mean()
    return total / len(STFT_RESOLUTIONS)


class HiFiGAN(GenerativeModel, TwoPlayerGame, Vocoder):
    family = "vocoder"
    Config = VocoderConfig
    data_kind: ClassVar[str] = "audio"

    def __init__(self, config: VocoderConfig):
        super().__init__(config)
        if not config.sound:
            raise ConfigError("a vocoder needs the spectrogram settings of its sound",
                              "train it with genlab train vocoder --data FOLDER_OF_SOUND")
        self.settings, _ = read_sound_config(config.sound)
        self.mel = MelSpectrogram(self.settings)
        self.generator = (FourierGenerator(self.settings, config) if config.generator == "fourier"
                          else Generator(self.settings.n_mels, config))
        self.discriminator = Critics(config) if self.is_game() else None

    def is_game(self) -> bool:
        """A generator of waveforms or of phases plays against the critics; one of magnitudes alone learns them
        from the real STFT's, and Griffin-Lim gives them a phase."""
        return self.config.generator == "upsample" or self.config.phase == "learned"

    @classmethod
    def config_for_data(cls, config: VocoderConfig, data: Any) -> VocoderConfig:
        if config.sound:  # fine-tuning keeps the settings it was trained with
            return config
        settings = MelSettings(sample_rate=data.sample_rate)
        if data.train_x.shape[1] < config.segment:
            raise ConfigError(f"the clips are {data.train_x.shape[1]} samples long, shorter than a training window of "
                              f"{config.segment}", f"lower --model.segment (a multiple of {settings.hop})")
        return dataclasses.replace(config, sound=sound_config(settings, data.train_x.shape[1]))

    def players(self) -> tuple[nn.Module, nn.Module]:
        return self.generator, self.discriminator

    @torch.no_grad()
    def vocode(self, log_mel: torch.Tensor, length: int | None = None) -> torch.Tensor:
        """Waveforms in [-1, 1] from log-mel spectrograms (B, n_mels, T): (B, length), cut or padded with silence,
        or as many samples as the generator makes ((T - 1) x hop for the Fourier generator, T x hop for the
        upsampling one)."""
        was_training = self.training
        self.eval()
        log_mel = log_mel.to(self.mel.filters.device)
        try:
            if self.is_game():
                wave = self.generator(log_mel)
            else:  # the same seeded phase start for every call, so that a spectrogram always sounds the same
                magnitude = self.generator.frames(log_mel)[0].exp()
                seed = torch.Generator(log_mel.device).manual_seed(0)
                wave = self.mel.griffin_lim(magnitude, self.config.iterations, generator=seed)
        finally:
            self.train(was_training)
        wave = wave.clamp(-1, 1)
        return to_length(wave, length) if length else wave

    def train_step(self, batch: Any, update, step: int) -> dict[str, torch.Tensor]:
        """The discriminators' LSGAN update on real windows against generated ones (once adversarial), then the
        generator's: the log-mel and multi-resolution STFT losses (and, once adversarial, LSGAN and feature
        matching)."""
        real = batch[0]
        with torch.no_grad():
            spectrum = self.mel.stft(real)  # once: its magnitudes make the input, its angles the phase target
            log_mel = self.mel.log_mel(spectrum.abs())
        c = self.config
        out: dict[str, torch.Tensor] = {}
        phase_term = None
        if isinstance(self.generator, FourierGenerator):
            log_magnitude, phase = self.generator.frames(log_mel)
            fake = self.generator.synthesise(log_magnitude, phase)
            if c.phase_weight:
                phase_term = phase_loss(phase, spectrum.angle())
                out["phase"] = phase_term.detach()
        else:
            fake = self.generator(log_mel)
        fake = to_length(fake, real.shape[1])
        adversarial = step >= c.adversarial_start
        if adversarial:
            d_loss = fake.new_zeros(())
            for (r, _), (f, _) in zip(self.discriminator(real), self.discriminator(fake.detach()), strict=True):
                d_loss = d_loss + ((1 - r) ** 2).mean() + (f**2).mean()
            update(d_loss, 1)
            out["d_loss"] = d_loss.detach()
        mel_distance = (self.mel(fake) - log_mel).abs().mean()
        reconstruction = stft_loss(fake, real)
        g_loss = c.mel_weight * mel_distance + c.stft_weight * reconstruction
        if phase_term is not None:
            g_loss = g_loss + c.phase_weight * phase_term
        if adversarial:
            self.discriminator.requires_grad_(False)
            g_adv = fake.new_zeros(())
            matching = fake.new_zeros(())
            with torch.no_grad():
                real_features = [feats for _, feats in self.discriminator(real)]
            for (f, feats), target in zip(self.discriminator(fake), real_features, strict=True):
                g_adv = g_adv + ((1 - f) ** 2).mean()
                matching = matching + sum((a - b).abs().mean() for a, b in zip(feats, target, strict=True))
            g_loss = g_loss + g_adv + c.feature_weight * matching
            self.discriminator.requires_grad_(True)
            out.update(g_adv=g_adv.detach(), feature_matching=matching.detach())
        update(g_loss, 0)
        return {"loss": reconstruction.detach(), "mel_l1": mel_distance.detach(), **out}

    def loss(self, batch: Any, step: int | None = None) -> dict[str, torch.Tensor]:
        """A generator of magnitudes alone: `magnitude_loss` against the real windows' STFT (its training and
        validation loss). A game's validation: the STFT loss of the generator's waveform for held-out windows, and
        the log-mel L1."""
        real = batch[0]
        if not self.is_game():
            magnitude = self.mel.stft(real).abs()
            return magnitude_loss(self.generator.frames(self.mel.log_mel(magnitude))[0], magnitude,
                                  self.settings.floor)
        log_mel = self.mel(real)
        fake = to_length(self.generator(log_mel), real.shape[1])
        return {"loss": stft_loss(fake, real), "mel_l1": (self.mel(fake) - log_mel).abs().mean()}
