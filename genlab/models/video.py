"""Video diffusion: a space-time U-Net that denoises whole clips around the frames it is given.

One model does four jobs (the masked conditional video diffusion of Voleti, Jolicoeur-Martineau and Pal,
NeurIPS 2022, "MCVD"): each training clip hides a random set of its frames from the network, which sees the
others clean beside the noisy clip (as extra input channels, with a mask channel) and denoises the hidden ones.
The sets drawn are the jobs: none known (generation from noise, class-conditional by classifier-free
guidance), the first k known (k = 1: animating a still; larger k: predicting the next frames) and every f-th
known (frame interpolation, f = 2 and 4). Sampling runs the image family's samplers (genlab.models.diffusion
.schedule) over the hidden frames and returns the known ones as given.

The network factorises space and time (Ho et al., "Video Diffusion Models", NeurIPS 2022): every residual
block and spatial attention works on each frame alone (frames folded into the batch), and temporal attention
mixes each pixel's features across the frames, with sinusoidal frame positions; the image U-Net's blocks are
reused as they are. Frames are folded patch x patch into channels first (space-to-depth, as the image U-Net's
`patch`), which is what makes 20 frames of 64x64 affordable on a CPU. At a coarse level, one attention over every
position of every frame (`space_time`) can carry what a moving thing looks like from where it was to where it is.

In pixels, a large patch leaves a CPU-sized network too few channels to carry each pixel's noise, and samples
keep speckle. A latent model (`latent` > 0) runs the diffusion in the latent space of a per-frame KL autoencoder
(Rombach et al., CVPR 2022; frame by frame, as Blattmann et al., "Align your Latents", CVPR 2023): the first
`ae_steps` of training fit the autoencoder, the rest the diffusion on its frozen encoder's latents, normalised
per channel; its decoder draws the pixels of every clip the model makes.

A forecast scored by squared error is best as the mean of the futures, not one sampled future. The network's
x0 estimate at the last timestep, where x_T carries no trace of the clip, is that mean: E[x0 | known frames]. So
a share of the training clips with known frames (`mean_share`) sits at the last timestep with the plain x0
error (min-SNR's weight is 0 there and would never train it), and `VideoSampleOptions.mean` returns the
forecast from one network evaluation. In a latent model that error is also taken in pixels, through the frozen
decoder (`mean_pixels`), since squared error is scored on frames.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import nn

from genlab.errors import ConfigError
from genlab.metrics.images import ssim
from genlab.models.base import (
    ConditionalImageConfig,
    GenerativeModel,
    SampleOptions,
    VideoGenerator,
    check_count,
    class_labels,
)
from genlab.models.diffusion.schedule import SAMPLERS, NoiseSchedule, sample_loop
from genlab.models.diffusion.unet import Attention, ResBlock, group_norm, timestep_embedding
from genlab.models.ema import ema_decay, ema_update
from genlab.models.vae import gaussian_kl


@dataclasses.dataclass(frozen=True)
class VideoConfig(ConditionalImageConfig):
    FROM_DATA: ClassVar[tuple[str, ...]] = (*ConditionalImageConfig.FROM_DATA, "frames", "fps")

    frames: int = 20
    """frames per clip (from the data)"""
    fps: float = 10.0
    """frames per second of the data, for the files sampling writes (from the data)"""
    widths: tuple[int, ...] = (64, 128)
    """U-Net channels per resolution, fine to coarse"""
    blocks: tuple[int, ...] = (1, 2)
    """residual blocks per level on the way down (one more on the way up)"""
    attention: tuple[bool, ...] = (False, True)
    """spatial self-attention (within each frame) at these levels"""
    temporal: tuple[bool, ...] = (True, True)
    """temporal self-attention (across the frames, at each pixel) at these levels"""
    space_time: tuple[bool, ...] = ()
    """joint space-time self-attention (every position of every frame of the clip) at these levels and, where the
    last level has it, in the middle, in place of the spatial and temporal attention there; () for none"""
    time_conv: bool = False
    """a convolution across 3 neighbouring frames after every residual block ((2+1)-D convolutions)"""
    patch: int = 4
    """fold patch x patch pixels of each frame into channels before the U-Net"""
    head: int = 0
    """hidden width of a per-patch MLP from the last features and the patch's input pixels to its output pixels,
    added to the output convolution's (0: none): what removes pixel-level noise when patches are large"""
    dropout: float = 0.0
    """dropout in the residual blocks"""
    latent: int = 0
    """channels of a per-frame autoencoder's latent that the diffusion runs in (0: in pixels)"""
    ae_widths: tuple[int, ...] = (16, 32, 64)
    """the autoencoder's channels per resolution, fine to coarse: a latent frame is 2^(levels - 1) times smaller"""
    ae_steps: int = 600
    """latent models: the first steps train the autoencoder alone (frames' L1 error and a small KL term); the
    diffusion trains after them, on the frozen encoder's latents"""
    ae_shift: float = 0.0
    """latent models: weight of the autoencoder's shift terms (EQ-VAE, Kouzelis et al., ICML 2025): a frame moved by
    a few pixels must encode to its latents moved alike, by fractions of a latent pixel, and those must decode to
    the moved frame. A strided encoder is not otherwise shift-equivariant: a garment moved by half a latent pixel
    (the data's 2 pixels a frame) gets latents as far from its own as from another frame's, and the diffusion must
    learn to move what it cannot see move (0: none)"""
    ae_decoder_steps: int = 0
    """latent models: the last this many of the `ae_steps` train the decoder alone on the frames' L1 error, the
    encoder frozen and without shift terms: the shift terms keep the encoder's latents smooth and take that from
    the decoder's sharpness, which a decoder trained alone wins back (0: none)"""
    timesteps: int = 1000
    """diffusion steps T of training (cosine schedule, v prediction)"""
    t_sampling: Literal["uniform", "logit-normal"] = "uniform"
    """how training draws each clip's timestep: uniformly, or t = T sigmoid(n), n ~ N(t_logit_mean, t_logit_std)
    (Esser et al., "Scaling Rectified Flow Transformers", ICML 2024), which draws the middle noise levels more often:
    there the denoiser must weigh a frame's own noisy input against the known frames, and uniform draws left it
    reading the noisy input alone (docs/video.md, "Where the forecast's error is")"""
    t_logit_mean: float = 0.0
    """logit-normal timesteps: the mean of n (0 centres the draws on t = T/2; larger: noisier)"""
    t_logit_std: float = 1.0
    """logit-normal timesteps: the spread of n"""
    min_snr_gamma: float = 5.0
    """loss weight min(SNR, gamma) / (SNR + 1) (Hang et al. 2023); 0: plain MSE"""
    ema_decay: float = 0.999
    """samples come from this moving average of the weights (0: the raw weights)"""
    cond_drop: float = 0.1
    """class models: fraction of training clips without their class (for classifier-free guidance)"""
    free_share: float = 0.2
    """of training clips, the share with no frame known (generation from noise)"""
    interpolate_share: float = 0.3
    """of training clips, the share with every 2nd or 4th frame known (interpolation); the rest know their first
    k frames, k uniform in 1 .. T/2 (animation and prediction)"""
    half_share: float = 0.0
    """of training clips that know their first k frames, the share with k = T/2: the next half of a clip from its
    first half, the prediction protocol of Moving MNIST benchmarks (OpenSTL: 10 frames from 10); the rest draw k
    uniformly"""
    mean_share: float = 0.25
    """of training clips with known frames, the share at the last timestep, trained on the plain error of x0:
    the mean forecast `VideoSampleOptions.mean` returns"""
    mean_hint: bool = False
    """every denoising step of a clip with known frames also sees the mean forecast of its hidden frames (the
    network's own estimate at the last timestep: one more evaluation per sample), in the known frames' input
    channels: trained on uniform noise levels, the denoiser at middle ones reads each frame from its own noisy
    input and takes next to nothing from the known frames, which the mean forecast carries forward (self-
    conditioning, Chen et al., ICLR 2023; a forecast plus a sampled residual, Yang et al., 2023)"""
    mean_pixels: float = 1.0
    """latent models: weight of the mean forecast's error in pixels, through the frozen decoder, beside its error
    in latents (the decoding of the latents' mean is not the frames' mean: trained on latents alone, forecasts
    came out dim and flat)"""
    mean_decoder: bool = False
    """latent models: decode the mean forecast with a decoder of its own, a copy of the autoencoder's made when the
    diffusion starts and trained with it on the mean clips' pixel error. The frames' mean is not the decoding of
    the latents' mean: a decoder trained on real frames draws a garment where the mean of where it may be is a
    faint spread, and squared error pays for the difference (the autoencoder's decoder, which draws every sample,
    is left as it is)"""
    mean_ssim: float = 0.0
    """latent models: weight of 1 - SSIM (Wang et al. 2004) of the mean clips' decoded frames, beside their squared
    error (the mixed loss of Zhao et al., IEEE TCI 2017). The least-squares forecast hedges with a faint haze where
    a garment may be, and SSIM, whose luminance term on a black background is c1 / (mu^2 + c1), counts a haze of
    1% as half wrong: a small weight keeps the background black where the forecast is sure (0: none)"""
    mean_pixel_frames: int = 4
    """latent models: decode this many of each mean clip's hidden frames, drawn at random, for that pixel error
    (0: all of them; the decoder's pass over all of them cost a seventh of a training step)"""
    latent_cache: int = 1024
    """latent models: MB of training clips' latents (float16) kept after they are first encoded, so that later
    epochs skip the frozen encoder (its pass was a quarter of a training step); 0: none"""
    sampler: Literal["ddpm", "ddim", "dpm++"] = "dpm++"
    """the sampler by default"""
    sample_steps: int = 25
    """network evaluations a sample takes by default"""
    guidance: float = 2.0
    """classifier-free guidance scale of class models by default (1: the conditional model alone)"""

    def __post_init__(self):
        super().__post_init__()
        levels = len(self.widths)
        if not levels or not levels == len(self.blocks) == len(self.attention) == len(self.temporal):
            raise ConfigError("widths, blocks, attention and temporal need one entry per U-Net level",
                              "e.g. --model.widths [64,128] --model.blocks [1,2] --model.attention [false,true] "
                              "--model.temporal [true,true]")
        if len(self.space_time) not in (0, levels):
            raise ConfigError(f"space_time {list(self.space_time)} needs one entry per U-Net level ({levels}) or none",
                              "e.g. --model.space-time [false,true]")
        if any(w % 32 for w in self.widths):
            raise ConfigError(f"widths {list(self.widths)} must be multiples of 32 (attention heads of 32)",
                              "e.g. [64,128]")
        if self.latent < 0 or (self.latent and (len(self.ae_widths) < 2 or self.ae_steps < 1)):
            raise ConfigError(f"latent {self.latent}, ae_widths {list(self.ae_widths)}, ae_steps {self.ae_steps}: a "
                              "latent model needs two or more autoencoder levels and steps to train it",
                              "e.g. --model.latent 4 --model.ae-widths [16,32,64] --model.ae-steps 600")
        if self.ae_shift < 0:
            raise ConfigError(f"ae_shift {self.ae_shift} must be >= 0", "e.g. --model.ae-shift 1 (0: none)")
        if not self.latent and (self.ae_shift or self.ae_decoder_steps):
            raise ConfigError(f"ae_shift {self.ae_shift} and ae_decoder_steps {self.ae_decoder_steps} train the "
                              "autoencoder of a latent model; this model runs in pixels (latent 0)",
                              "add --model.latent 4, or leave them out")
        if not 0 <= self.ae_decoder_steps < max(self.ae_steps, 1):
            raise ConfigError(f"ae_decoder_steps {self.ae_decoder_steps} must be >= 0 and fewer than ae_steps "
                              f"{self.ae_steps} (the encoder trains first)",
                              "e.g. --model.ae-steps 1500 --model.ae-decoder-steps 500")
        if self.mean_pixels < 0 or self.mean_ssim < 0:
            raise ConfigError(f"mean_pixels {self.mean_pixels} and mean_ssim {self.mean_ssim} must be >= 0",
                              "e.g. --model.mean-pixels 1 --model.mean-ssim 0.01 (0: none)")
        if self.mean_ssim and not (self.latent and self.mean_pixels > 0):
            raise ConfigError(f"mean_ssim {self.mean_ssim} weighs a term of the mean forecast's decoded frames, which "
                              f"a latent model (latent {self.latent}) with mean_pixels > 0 ({self.mean_pixels}) makes",
                              "add --model.latent 4 --model.mean-pixels 1, or leave --model.mean-ssim out")
        if self.mean_decoder and not (self.latent and self.mean_pixels > 0):
            raise ConfigError(f"mean_decoder needs a latent model (latent {self.latent}) whose mean forecast is "
                              f"trained in pixels (mean_pixels {self.mean_pixels}): that error is what trains it",
                              "add --model.latent 4 --model.mean-pixels 1, or leave --model.mean-decoder out")
        if self.mean_pixel_frames < 0 or self.latent_cache < 0:
            raise ConfigError(f"mean_pixel_frames {self.mean_pixel_frames} and latent_cache {self.latent_cache} must "
                              "be >= 0", "e.g. --model.mean-pixel-frames 4 --model.latent-cache 1024 (0: all / none)")
        if self.head < 0:
            raise ConfigError(f"head {self.head} must be >= 0", "e.g. --model.head 256 (0: none)")
        if not 1 <= self.patch <= 16 or not 2 <= self.frames <= 64:
            raise ConfigError(f"patch {self.patch} and frames {self.frames}: need 1-16 and 2-64",
                              "e.g. --model.patch 4 (frames come from the data)")
        shares = (self.free_share, self.interpolate_share, self.mean_share, self.half_share)
        if min(shares) < 0 or max(shares) > 1 or self.free_share + self.interpolate_share > 1:
            raise ConfigError(f"free_share {self.free_share}, interpolate_share {self.interpolate_share}, "
                              f"mean_share {self.mean_share} and half_share {self.half_share} must be shares (the "
                              "first two summing to 1 at most)",
                              "e.g. --model.free-share 0.2 --model.interpolate-share 0.3")
        if self.t_sampling not in ("uniform", "logit-normal") or self.t_logit_std <= 0:
            raise ConfigError(f"t_sampling {self.t_sampling!r} with t_logit_std {self.t_logit_std}: use uniform or "
                              "logit-normal, with a spread > 0", "e.g. --model.t-sampling logit-normal "
                              "--model.t-logit-std 1")
        if self.timesteps < 10 or not 0 <= self.cond_drop < 1 or not 0 <= self.ema_decay < 1:
            raise ConfigError("timesteps must be >= 10, cond_drop in [0, 1) and ema_decay in [0, 1)",
                              "e.g. --model.timesteps 1000 --model.cond-drop 0.1 --model.ema-decay 0.999")


@dataclasses.dataclass(frozen=True)
class VideoSampleOptions(SampleOptions):
    """How to sample clips; unset fields take the model's defaults (its config)."""

    steps: int | None = None
    """network evaluations (default: the model's sample_steps)"""
    sampler: Literal["ddpm", "ddim", "dpm++"] | None = None
    """the sampler (default: the model's)"""
    guidance: float | None = None
    """classifier-free guidance scale of class models (default: the model's)"""
    mean: bool = False
    """frames to fill around known ones: the mean of what they could be (the forecast of least squared error, one
    network evaluation) instead of one sample of it"""
    progress: bool = False
    """show a progress bar"""


# -- the network ---------------------------------------------------------------------------------------------


class TemporalAttention(Attention):
    """Multi-head self-attention across the frames at each pixel of a feature map (B*T, C, H, W), with sinusoidal
    frame positions added to the normalised features and a residual connection (zero at initialisation): the image
    U-Net's attention layers, attending along time instead of space."""

    def forward(self, x: torch.Tensor, frames: int) -> torch.Tensor:
        bt, c, h, w = x.shape
        b, d = bt // frames, c // self.heads
        tokens = self.norm(x).permute(0, 2, 3, 1).reshape(b, frames, h * w, c).transpose(1, 2)
        tokens = tokens + timestep_embedding(torch.arange(frames, device=x.device), c).to(x.dtype)
        q, k, v = self.qkv(tokens).view(b * h * w, frames, 3, self.heads, d).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, h * w, frames, c)
        out = self.proj(out).transpose(1, 2).reshape(bt, h, w, c).permute(0, 3, 1, 2)
        return x + out


class SpaceTimeAttention(Attention):
    """Multi-head self-attention over every position of every frame of a clip, (B*T, C, H, W) feature maps, with
    sinusoidal frame positions added to the normalised features: what lets a coarse level copy what a garment looks
    like from where it was in one frame to where it is in another, which attention at one pixel across time cannot
    (Ho et al. 2022 factorise it for cost; at a coarse level of a small clip the joint form is cheap)."""

    def forward(self, x: torch.Tensor, frames: int) -> torch.Tensor:
        bt, c, h, w = x.shape
        b, d = bt // frames, c // self.heads
        tokens = self.norm(x).permute(0, 2, 3, 1).reshape(b, frames, h * w, c)
        tokens = tokens + timestep_embedding(torch.arange(frames, device=x.device), c).to(x.dtype)[:, None]
        q, k, v = self.qkv(tokens.reshape(b, frames * h * w, c)).view(b, -1, 3, self.heads, d).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(bt, h, w, c)
        return x + self.proj(out).permute(0, 3, 1, 2)


class TemporalConv(nn.Module):
    """GroupNorm, SiLU and a convolution across 3 neighbouring frames at each pixel, (B*T, C, H, W) feature maps,
    around a residual connection (zero at initialisation): the temporal half of a factorised (2+1)-D convolution
    (Tran et al., CVPR 2018; the temporal layers of Singer et al.'s Make-A-Video and Blattmann et al.'s Video LDM),
    a local prior that a thing is near where it was a frame ago. The kernel of 3 x 1 x 1 is a 1x1 convolution of
    each frame's features stacked with its neighbours' (zero beyond the clip's ends), which keeps the feature maps
    2-D and channels-last, as the rest of the U-Net."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = group_norm(channels)
        self.conv = nn.Conv2d(3 * channels, channels, 1)
        nn.init.zeros_(self.conv.weight)
        nn.init.zeros_(self.conv.bias)

    def forward(self, x: torch.Tensor, frames: int) -> torch.Tensor:
        bt, c, h, w = x.shape
        y = F.silu(self.norm(x)).view(bt // frames, frames, c, h, w)
        edge = y.new_zeros(bt // frames, 1, c, h, w)
        before, after = torch.cat([edge, y[:, :-1]], 1), torch.cat([y[:, 1:], edge], 1)
        return x + self.conv(torch.cat([before, y, after], 2).view(bt, 3 * c, h, w))


class SpaceTimeBlock(nn.Module):
    """A residual block (and a convolution across frames, `time_conv`), then attention within each frame and across
    the frames where the level has them, or one attention over the whole clip (`joint`)."""

    def __init__(self, c_in: int, c_out: int, emb_dim: int, dropout: float, spatial: bool, temporal: bool,
                 joint: bool = False, time_conv: bool = False):
        super().__init__()
        self.res = ResBlock(c_in, c_out, emb_dim, dropout)
        self.time_conv = TemporalConv(c_out) if time_conv else None
        self.joint = SpaceTimeAttention(c_out) if joint else None
        self.spatial = Attention(c_out) if spatial and not joint else None
        self.temporal = TemporalAttention(c_out) if temporal and not joint else None

    def forward(self, h: torch.Tensor, emb: torch.Tensor, frames: int) -> torch.Tensor:
        h = self.res(h, emb)
        if self.time_conv is not None:
            h = self.time_conv(h, frames)
        if self.joint is not None:
            h = self.joint(h, frames)
        if self.spatial is not None:
            h = self.spatial(h)
        if self.temporal is not None:
            h = self.temporal(h, frames)
        return h


class ConvBlock(nn.Module):
    """GroupNorm, SiLU and a 3x3 convolution, twice, around a residual connection (no time embedding)."""

    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(group_norm(channels), nn.SiLU(), nn.Conv2d(channels, channels, 3, padding=1),
                                  group_norm(channels), nn.SiLU(), nn.Conv2d(channels, channels, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def shift(x: torch.Tensor, move: torch.Tensor) -> torch.Tensor:
    """Feature maps (N, C, H, W) moved by `move` (N, 2) pixels down and right, fractions interpolated bilinearly and
    edges extended (a moved frame's background continues its own)."""
    n, _, h, w = x.shape
    # grid_sample reads the input at normalised coordinates in [-1, 1] (align_corners=False: a pixel is 2 / size)
    theta = torch.zeros(n, 2, 3, device=x.device, dtype=x.dtype)
    theta[:, 0, 0] = theta[:, 1, 1] = 1
    theta[:, 0, 2] = -2 * move[:, 1] / w
    theta[:, 1, 2] = -2 * move[:, 0] / h
    grid = F.affine_grid(theta, (n, 1, h, w), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


class FrameAutoencoder(nn.Module):
    """A per-frame KL autoencoder, the first stage of latent diffusion (Rombach et al., CVPR 2022), which latent
    video models (Blattmann et al., "Align your Latents", CVPR 2023) run frame by frame: its decoder draws the
    pixels, so that the diffusion model spends its steps on what is where and when, not on each pixel's noise.
    Each level but the last halves the frame (a 4x4 stride-2 convolution); the decoder mirrors it (nearest
    upsampling and a 3x3 convolution). Frames whose sides the halvings do not divide are padded (replicating the
    edge) and cropped back, as the U-Net's patches are."""

    def __init__(self, channels: int, latent: int, widths: tuple[int, ...]):
        super().__init__()
        self.latent, self.factor = latent, 2 ** (len(widths) - 1)
        encoder = [nn.Conv2d(channels, widths[0], 3, padding=1)]
        for c_in, c_out in zip(widths, widths[1:]):
            encoder += [nn.Conv2d(c_in, c_out, 4, stride=2, padding=1), ConvBlock(c_out)]
        encoder += [group_norm(widths[-1]), nn.SiLU(), nn.Conv2d(widths[-1], 2 * latent, 3, padding=1)]
        self.encoder = nn.Sequential(*encoder)
        decoder = [nn.Conv2d(latent, widths[-1], 3, padding=1), ConvBlock(widths[-1])]
        for c_in, c_out in zip(widths[::-1], widths[-2::-1]):
            decoder += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(c_in, c_out, 3, padding=1)]
            decoder += [ConvBlock(c_out)] if c_out != widths[0] else []  # none at full size, where it costs most
        decoder += [group_norm(widths[0]), nn.SiLU(), nn.Conv2d(widths[0], channels, 3, padding=1)]
        self.decoder = nn.Sequential(*decoder)

    def latent_shape(self, height: int, width: int) -> tuple[int, int, int]:
        """The latent's (channels, h, w) of a height x width frame."""
        return self.latent, -(-height // self.factor), -(-width // self.factor)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Frames (N, C, H, W) in [-1, 1] -> the posterior's mean and log-variance, (N, latent, h, w) each."""
        f = self.factor
        x = F.pad(x, (0, -x.shape[-1] % f, 0, -x.shape[-2] % f), mode="replicate")
        mean, logvar = self.encoder(x).chunk(2, dim=1)
        return mean, logvar.clamp(-30, 20)

    def decode(self, z: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Latents (N, latent, h, w) -> frames (N, C, *size)."""
        return self.decoder(z)[..., : size[0], : size[1]]


class SpaceTimeUNet(nn.Module):
    """v prediction of a clip: (x_t, known frames, their mask, t, class) -> (B, T, C, H, W). The input of each
    frame is its noisy pixels, its known pixels (zero where unknown) and a mask plane; the time and class
    embedding drives every residual block (FiLM), as in the image U-Net."""

    def __init__(self, channels: int, widths: tuple[int, ...], blocks: tuple[int, ...], attention: tuple[bool, ...],
                 temporal: tuple[bool, ...], dropout: float, num_classes: int, patch: int,
                 space_time: tuple[bool, ...] = (), head: int = 0, time_conv: bool = False):
        super().__init__()
        joint = space_time or (False,) * len(widths)
        self.patch = patch
        emb_dim = 4 * widths[0]
        self.time_dim = widths[0]
        self.time_mlp = nn.Sequential(nn.Linear(widths[0], emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        # one embedding per class plus the "no class" (the last row) of classifier-free guidance
        self.class_embed = nn.Embedding(num_classes + 1, emb_dim) if num_classes else None
        self.stem = nn.Conv2d((2 * channels + 1) * patch * patch, widths[0], 3, padding=1)

        self.down, self.downsample = nn.ModuleList(), nn.ModuleList()
        skips, c = [widths[0]], widths[0]
        for i, (w, n) in enumerate(zip(widths, blocks)):
            level = nn.ModuleList()
            for j in range(n):
                level.append(SpaceTimeBlock(c if j == 0 else w, w, emb_dim, dropout, attention[i], temporal[i],
                                            joint[i], time_conv))
                skips.append(w)
            self.down.append(level)
            c = w
            last = i == len(widths) - 1
            self.downsample.append(nn.Identity() if last else nn.Conv2d(c, c, 3, stride=2, padding=1))
            if not last:
                skips.append(c)
        self.mid = nn.ModuleList([SpaceTimeBlock(c, c, emb_dim, dropout, True, True, joint[-1], time_conv),
                                  SpaceTimeBlock(c, c, emb_dim, dropout, False, True, joint[-1], time_conv)])
        self.up, self.upsample = nn.ModuleList(), nn.ModuleList()
        for i in reversed(range(len(widths))):
            level = nn.ModuleList()
            for _ in range(blocks[i] + 1):
                level.append(SpaceTimeBlock(c + skips.pop(), widths[i], emb_dim, dropout, attention[i], temporal[i],
                                            joint[i], time_conv))
                c = widths[i]
            self.up.append(level)
            self.upsample.append(nn.Conv2d(c, c, 3, padding=1) if i > 0 else nn.Identity())
        self.out_norm = group_norm(c)
        self.out = nn.Conv2d(c, channels * patch * patch, 3, padding=1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)
        # A patch of p x p pixels leaves the U-Net through c channels: when p * p is near c, the network can hardly
        # carry each pixel's noise from input to output, and samples keep speckle it cannot remove. The head sees
        # the patch's input pixels beside the last features (the long skip of U-ViT, Bao et al., CVPR 2023)
        self.head = None
        if head:
            self.head = nn.Sequential(nn.Conv2d(c + (2 * channels + 1) * patch * patch, head, 1), nn.SiLU(),
                                      nn.Conv2d(head, channels * patch * patch, 1))
            nn.init.zeros_(self.head[-1].weight)
            nn.init.zeros_(self.head[-1].bias)
        self.to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor, known: torch.Tensor, mask: torch.Tensor, t: torch.Tensor,
                labels: torch.Tensor | None = None) -> torch.Tensor:
        b, frames, c, height, width = x.shape
        emb = self.time_mlp(timestep_embedding(t, self.time_dim))
        if self.class_embed is not None and labels is not None:
            emb = emb + self.class_embed(labels)
        emb = F.silu(emb).repeat_interleave(frames, 0)  # one embedding per clip, for each of its frames
        plane = mask.to(x.dtype)[:, :, None, None, None].expand(b, frames, 1, height, width)
        h = torch.cat([x, known, plane], 2).flatten(0, 1)  # (B*T, 2C+1, H, W): frames are batch items
        p = self.patch
        h = F.pad(h, (0, -width % p, 0, -height % p), mode="replicate")
        pixels = F.pixel_unshuffle(h, p).contiguous(memory_format=torch.channels_last)
        h = self.stem(pixels)
        hs = [h]
        for level, down in zip(self.down, self.downsample):
            for block in level:
                h = block(h, emb, frames)
                hs.append(h)
            if not isinstance(down, nn.Identity):
                h = down(h)
                hs.append(h)
        for block in self.mid:
            h = block(h, emb, frames)
        for level, up in zip(self.up, self.upsample):
            for block in level:
                h = block(torch.cat([h, hs.pop()], dim=1), emb, frames)
            if not isinstance(up, nn.Identity):
                h = up(F.interpolate(h, size=hs[-1].shape[-2:], mode="nearest"))
        h = F.silu(self.out_norm(h))
        out = self.out(h)
        if self.head is not None:
            out = out + self.head(torch.cat([h, pixels], 1))
        out = F.pixel_shuffle(out, p)[..., :height, :width]
        return out.reshape(b, frames, c, height, width)


# -- the family ----------------------------------------------------------------------------------------------


class VideoDiffusion(GenerativeModel, VideoGenerator):
    family = "video"
    Config = VideoConfig
    data_kind = "video"
    sample_options = VideoSampleOptions

    def __init__(self, config: VideoConfig):
        super().__init__(config)
        c = config
        classes = c.num_classes if c.condition == "class" else 0
        self.autoencoder = None
        if c.latent:
            self.autoencoder = FrameAutoencoder(c.channels, c.latent, c.ae_widths)
            # each latent channel's mean and standard deviation over the training frames, measured when the
            # diffusion starts, so that it sees latents of unit variance (Rombach et al.'s scale factor, per channel)
            self.register_buffer("latent_mean", torch.zeros(c.latent))
            self.register_buffer("latent_std", torch.zeros(c.latent))
            self._latent_cache: dict[bytes, torch.Tensor] = {}  # training clips' latents by digest (not saved)
            self.register_load_state_dict_post_hook(VideoDiffusion._forget_latents)  # loaded weights: stale
        self.mean_decoder = self.mean_decoder_ema = None
        if c.mean_decoder:  # made from the autoencoder's decoder when the diffusion starts (`loss`)
            self.mean_decoder = copy.deepcopy(self.autoencoder.decoder)
            self.mean_decoder_ema = copy.deepcopy(self.mean_decoder).requires_grad_(False)
        self.net = SpaceTimeUNet(c.latent or c.channels, c.widths, c.blocks, c.attention, c.temporal, c.dropout,
                                 classes, c.patch, c.space_time, c.head, c.time_conv)
        self.net_ema = copy.deepcopy(self.net).requires_grad_(False)
        self.schedule = NoiseSchedule("cosine", c.timesteps, prediction="v")

    @classmethod
    def config_for_data(cls, config: VideoConfig, data: Any) -> VideoConfig:
        frames, channels, h, w = data.shape
        if config.condition != "none" and len(data.classes) < 2:
            raise ConfigError(f"condition={config.condition!r} needs clips in at least 2 classes; {data.name} has "
                              f"{len(data.classes)}", "use labelled clips or --model.condition none")
        return dataclasses.replace(config, channels=channels, image_size=(h, w), frames=frames,
                                   fps=float(getattr(data, "fps", 10.0)), num_classes=len(data.classes),
                                   class_names=tuple(data.classes))

    def num_parameters(self) -> int:
        """The denoiser's, the autoencoder's and the mean decoder's (not the moving averages' copies)."""
        parts = (self.net, self.autoencoder, self.mean_decoder)
        return sum(p.numel() for part in parts if part is not None for p in part.parameters())

    def update_ema(self, step: int) -> None:
        start = self.config.ae_steps if self.autoencoder is not None else 0
        if step >= start:  # the average starts with the diffusion's training, not the autoencoder's
            decay = ema_decay(self.config.ema_decay, step - start)
            ema_update(self.net_ema, self.net, decay)
            if self.mean_decoder is not None:
                ema_update(self.mean_decoder_ema, self.mean_decoder, decay)

    # -- the latent space (latent models) ----------------------------------------------------------

    def to_latent(self, x: torch.Tensor, frames: torch.Tensor | None = None) -> torch.Tensor:
        """Clips (B, T, C, H, W) in [-1, 1] -> normalised latent clips (B, T, latent, h, w); clips themselves in
        pixel models. `frames` ((T,) bool): encode these only, the others' latents are left zero."""
        if self.autoencoder is None:
            return x
        if not self.latent_std.any():
            raise ConfigError(f"this latent model's diffusion has not trained yet: it starts after the autoencoder's "
                              f"{self.config.ae_steps} steps", "train it for longer (or with fewer --model.ae-steps)")
        b, t = x.shape[:2]
        frames = torch.ones(t, dtype=torch.bool, device=x.device) if frames is None else frames
        z = x.new_zeros(b, t, *self.autoencoder.latent_shape(*x.shape[-2:]))
        if frames.any():
            mean, _ = self.autoencoder.encode(x[:, frames].flatten(0, 1))
            z[:, frames] = ((mean - self.latent_mean[:, None, None]) / self.latent_std[:, None, None]).unflatten(
                0, (b, -1))
        return z

    def from_latent(self, z: torch.Tensor, decoder: nn.Module | None = None) -> torch.Tensor:
        """Normalised latent clips (B, T, latent, h, w) -> clips (B, T, C, H, W) near [-1, 1], drawn by the
        autoencoder's decoder or by `decoder` (a mean decoder)."""
        if self.autoencoder is None:
            return z
        scaled = z.flatten(0, 1) * self.latent_std[:, None, None] + self.latent_mean[:, None, None]
        (h, w), ae = self.config.image_size, self.autoencoder
        frames = ae.decode(scaled, (h, w)) if decoder is None else decoder(scaled)[..., :h, :w]
        return frames.unflatten(0, z.shape[:2])

    def _measure_latents(self, x0: torch.Tensor) -> None:
        """Set the latent's per-channel mean and standard deviation from the first diffusion step's clips (the
        mean over the processes of a multi-process run, so that every process normalises alike)."""
        mean, _ = self.autoencoder.encode(x0.flatten(0, 1))
        stats = torch.stack([mean.mean((0, 2, 3)), mean.pow(2).mean((0, 2, 3))])
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(stats)
            stats /= torch.distributed.get_world_size()
        self.latent_mean.copy_(stats[0])
        self.latent_std.copy_((stats[1] - stats[0] ** 2).clamp_min(1e-8).sqrt())

    @staticmethod
    def _forget_latents(module: VideoDiffusion, incompatible_keys: Any = None) -> None:
        module._latent_cache.clear()

    def _training_latents(self, clips: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Normalised latents of the training clips `clips` (uint8; `x`: the same in [-1, 1]), rounded to float16.
        The encoder is frozen while the diffusion trains, so a clip's latent never changes: each is encoded once
        and kept by its bytes' digest, up to `latent_cache` MB. The rounding applies to fresh latents too, so a
        resumed run, its cache empty, trains on the same values."""
        if not self.config.latent_cache:
            return self.to_latent(x).half().float()
        keys = [hashlib.blake2b(clip.tobytes(), digest_size=16).digest() for clip in clips.cpu().numpy()]
        latents = [self._latent_cache.get(key) for key in keys]
        missing = [i for i, z in enumerate(latents) if z is None]
        if missing:
            fresh = self.to_latent(x[missing]).half().cpu()
            for i, z in zip(missing, fresh):  # every clip's latent has the one shape, so the same bytes
                latents[i] = z
                if (len(self._latent_cache) + 1) * z.nbytes <= self.config.latent_cache * 2**20:
                    self._latent_cache[keys[i]] = z.clone()
        return torch.stack(latents).to(x.device, torch.float32)

    def autoencoder_loss(self, x0: torch.Tensor, decoder_only: bool = False) -> dict[str, torch.Tensor]:
        """The first stage's loss on frames (N, C, H, W) in [-1, 1]: L1 reconstruction of a sampled latent plus
        a KL term weighted 1e-6 per latent value (LDM's KL-f autoencoders), which keeps the latent's scale in
        check without blurring it; with `ae_shift`, the shift terms. `decoder_only`: the L1 term alone, through
        the decoder (the encoder frozen)."""
        ae = self.autoencoder
        with torch.set_grad_enabled(torch.is_grad_enabled() and not decoder_only):
            mean, logvar = ae.encode(x0)
        z = mean + torch.randn_like(mean) * (0.5 * logvar).exp()
        l1 = (ae.decode(z, x0.shape[-2:]) - x0).abs().mean()
        if decoder_only:
            return {"loss": l1, "ae_l1": l1.detach()}
        kl = gaussian_kl(mean.flatten(1), logvar.flatten(1)).mean()  # per frame
        losses = {"loss": l1 + 1e-6 * kl, "ae_l1": l1.detach(), "ae_kl": kl.detach() / mean[0].numel()}
        if self.config.ae_shift > 0:
            # each frame moved by whole pixels, up to one latent pixel each way; its latents by the same distance
            move = torch.randint(-ae.factor, ae.factor + 1, (len(x0), 2), device=x0.device).float()
            moved, latent_move = shift(x0, move), move / ae.factor
            moved_mean, _ = ae.encode(moved)
            # each channel's error relative to that channel's spread, which it could otherwise shrink away (the
            # diffusion sees each channel at unit variance)
            spread = mean.detach().var((0, 2, 3)).clamp_min(1e-8)
            encoder = ((moved_mean - shift(mean, latent_move)).pow(2).mean((0, 2, 3)) / spread).mean()
            decoder = (ae.decode(shift(z, latent_move), x0.shape[-2:]) - moved).abs().mean()
            losses["loss"] = losses["loss"] + self.config.ae_shift * (encoder + decoder)
            losses.update(ae_shift_encoder=encoder.detach(), ae_shift_decoder=decoder.detach())
        return losses

    # -- training ----------------------------------------------------------------------------

    def draw_known(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Which frames each of n training clips shows the network, (n, T) bool: none (free generation), every
        2nd or 4th from the first (interpolation) or the first k, k uniform in 1 .. T/2 or, a `half_share` of
        them, T/2 (animation, prediction)."""
        c, frames = self.config, self.config.frames
        u = torch.rand(n, generator=generator)
        index = torch.arange(frames)
        k = torch.randint(1, max(2, frames // 2 + 1), (n,), generator=generator)
        k = torch.where(torch.rand(n, generator=generator) < c.half_share, max(1, frames // 2), k)
        stride = torch.where(torch.rand(n, generator=generator) < 0.5, 2, 4)
        first_k = index[None] < k[:, None]
        every = index[None] % stride[:, None] == 0
        interpolate = (u >= c.free_share) & (u < c.free_share + c.interpolate_share)
        known = torch.where(interpolate[:, None], every, first_k)
        return known & (u >= c.free_share)[:, None]

    def draw_timesteps(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Each of n training clips' timestep in 0 .. T-1 (`t_sampling`)."""
        c = self.config
        if c.t_sampling == "uniform":
            return torch.randint(0, c.timesteps, (n,), generator=generator)
        logit = torch.randn(n, generator=generator) * c.t_logit_std + c.t_logit_mean
        return (torch.sigmoid(logit) * c.timesteps).long().clamp(max=c.timesteps - 1)

    def loss(self, batch, step: int | None = None) -> dict[str, torch.Tensor]:
        """The weighted denoising loss of the hidden frames of (clips uint8 (B, T, C, H, W), labels)."""
        clips, labels = batch[:2]
        c = self.config
        x0 = clips.float() / 127.5 - 1
        if self.autoencoder is not None:
            # validation (no step) scores the stage that is training
            first_stage = step < c.ae_steps if step is not None else not self.latent_std.any()
            if first_stage:
                # 4 frames of each clip: the frames of a clip are alike, and a step of all of them costs 5x
                pick = torch.randint(0, c.frames, (len(x0), 4), device=x0.device)
                decoder_only = step is not None and step >= c.ae_steps - c.ae_decoder_steps
                return self.autoencoder_loss(x0[torch.arange(len(x0))[:, None], pick].flatten(0, 1), decoder_only)
            self.autoencoder.requires_grad_(False)  # frozen from here on, also when a run resumes
            with torch.no_grad():
                if not self.latent_std.any():
                    self._measure_latents(x0)
                    if self.mean_decoder is not None:  # from the decoder the autoencoder's steps trained
                        for copy_ in (self.mean_decoder, self.mean_decoder_ema):
                            copy_.load_state_dict(self.autoencoder.decoder.state_dict())
                pixels, x0 = x0, self._training_latents(clips, x0)
        n, device = len(x0), x0.device
        known = self.draw_known(n).to(device)
        t = self.draw_timesteps(n).to(device)
        mean = known.any(1) & (torch.rand(n, device=device) < c.mean_share)
        t = torch.where(mean, c.timesteps - 1, t)
        noise = torch.randn_like(x0)
        x_t = self.schedule.add_noise(x0, noise, t)
        given, labels = x0 * known[..., None, None, None], self._training_labels(labels)
        hinted = known.any(1) & ~mean if c.mean_hint else torch.zeros_like(mean)
        if hinted.any():  # the mean forecast of the hidden frames, in place of their zeros (not trained through)
            with torch.no_grad():
                given[hinted] = self._mean_hint(self.net, given[hinted], known[hinted],
                                                None if labels is None else labels[hinted])
        out = self.net(x_t, given, known, t, labels)
        per_frame = (out - self.schedule.target(x0, noise, t)).pow(2).flatten(2).mean(2)  # (B, T)
        hidden = (~known).float()
        per_clip = (per_frame * hidden).sum(1) / hidden.sum(1).clamp_min(1)
        weight = torch.ones_like(per_clip)
        if c.min_snr_gamma > 0:
            snr = self.schedule.snr(t)
            weight = snr.clamp(max=c.min_snr_gamma) / (snr + 1)
        # at the last timestep v = -x0 (to 1e-4): weight 1 trains the plain x0 error, the mean forecast
        weight = torch.where(mean, 1.0, weight)
        losses = {"loss": (weight * per_clip).mean(), "mse": per_clip.mean().detach()}
        if self.autoencoder is not None and c.mean_pixels > 0 and mean.any():
            # the mean forecast's hidden frames, decoded, against the true frames
            x0_hat, _ = self.schedule.denoise(x_t[mean], t[mean], out[mean], clip=False)
            frames = ~known[mean]  # decoded, the hidden frames only
            if c.mean_pixel_frames:  # a few of them at random: the hidden frames with the lowest random scores
                score = torch.rand(frames.shape, device=device).masked_fill(~frames, 2.0)
                lowest = score.argsort(1)[:, : c.mean_pixel_frames]
                frames = frames & torch.zeros_like(frames).scatter(1, lowest, True)
            pixel_error = torch.zeros(frames.shape, device=device)  # (mean clips, T)
            decoded = self.from_latent(x0_hat[frames][None], self.mean_decoder)[0]
            target = pixels[mean][frames]
            pixel_error[frames] = (decoded - target).pow(2).flatten(1).mean(1)
            if c.mean_ssim > 0:  # on the frames as they are scored: in [0, 1], clamped
                pixel_error[frames] += c.mean_ssim * (1 - ssim(((decoded + 1) / 2).clamp(0, 1), (target + 1) / 2))
            per_mean_clip = pixel_error.sum(1) / frames.sum(1).clamp_min(1)
            # (not logged apart: a batch may hold no mean clip, and every process must log the same keys)
            losses["loss"] = losses["loss"] + c.mean_pixels * per_mean_clip.sum() / n
        return losses

    def _mean_hint(self, net: nn.Module, given: torch.Tensor, known: torch.Tensor, labels: torch.Tensor | None,
                   generator: torch.Generator | None = None) -> torch.Tensor:
        """`given` (latents of known frames, zeros elsewhere) with its hidden frames' mean forecast filled in: the
        network's x0 estimate at the last timestep, where its noisy input holds nothing of the clip."""
        t = torch.full((len(given),), self.config.timesteps - 1, device=given.device)
        x_t = torch.randn(given.shape, generator=generator, device=given.device)
        x0_hat, _ = self.schedule.denoise(x_t, t, net(x_t, given, known, t, labels), clip=False)
        return torch.where(known[..., None, None, None], given, x0_hat)

    def _training_labels(self, labels: torch.Tensor) -> torch.Tensor | None:
        if self.net.class_embed is None:
            return None
        drop = torch.rand(len(labels), device=labels.device) < self.config.cond_drop
        return torch.where(drop | (labels < 0), self.config.num_classes, labels)

    # -- sampling ----------------------------------------------------------------------------

    def _options(self, options: SampleOptions | None) -> VideoSampleOptions:
        o = options if isinstance(options, VideoSampleOptions) else VideoSampleOptions(
            **dataclasses.asdict(options or SampleOptions()))
        c = self.config
        o = dataclasses.replace(o, steps=c.sample_steps if o.steps is None else int(o.steps),
                                sampler=o.sampler or c.sampler,
                                guidance=c.guidance if o.guidance is None else float(o.guidance))
        if o.sampler not in SAMPLERS:
            raise ConfigError(f"unknown sampler {o.sampler!r}", f"use one of {', '.join(SAMPLERS)}")
        if not 1 <= o.steps <= c.timesteps:
            raise ConfigError(f"steps = {o.steps} is out of range", f"use 1 .. {c.timesteps} (10-25 for dpm++)")
        if o.guidance < 0:
            raise ConfigError(f"guidance = {o.guidance} must be >= 0", "use 1 for none, 1.5-3 for stronger classes")
        return o

    def _labels(self, labels: Any, n: int, device: torch.device) -> torch.Tensor | None:
        if self.net.class_embed is None:
            class_labels(self.config, labels, n)  # refuses labels for a model without classes
            return None
        return class_labels(self.config, labels, n).to(device)

    def check_clips(self, clips: torch.Tensor) -> torch.Tensor:
        """Clips as floats in [-1, 1], refusing a shape that is not (B, T, C, H, W) of this model's frames."""
        c = self.config
        expected = (c.frames, c.channels, *c.image_size)
        if clips.dim() != 5 or tuple(clips.shape[1:]) != expected:
            shape = ", ".join(map(str, expected))
            raise ConfigError(f"clips of shape {tuple(clips.shape)}; this model takes (B, {shape})",
                              f"give clips of {c.frames} frames of {c.image_size[0]}x{c.image_size[1]} with "
                              f"{c.channels} channel(s) (genlab's verbs cut and resize video files)")
        clips = clips.float() / 255 if clips.dtype == torch.uint8 else clips.float()
        return clips * 2 - 1

    @torch.no_grad()
    def _fill(self, x0: torch.Tensor, known: torch.Tensor, labels: torch.Tensor | None,
              generator: torch.Generator | None, o: VideoSampleOptions) -> torch.Tensor:
        net, schedule, n = self.net_ema, self.schedule, len(x0)
        device, pixels = x0.device, x0
        x0 = self.to_latent(x0, known.any(0))  # latent models fill in latents, which their decoder draws
        given = x0 * known[..., None, None, None]
        guided = labels is not None and o.guidance != 1.0
        null = torch.full_like(labels, self.config.num_classes) if labels is not None else None
        hinted = known.any(1)
        if self.config.mean_hint and not o.mean and hinted.any():  # (the conditional model's mean forecast)
            given[hinted] = self._mean_hint(net, given[hinted], known[hinted],
                                            None if labels is None else labels[hinted], generator)

        def denoise(x: torch.Tensor, t: torch.Tensor):
            if guided:  # one batch for the conditional and unconditional outputs
                out_c, out_u = net(torch.cat([x, x]), torch.cat([given, given]), torch.cat([known, known]),
                                   torch.cat([t, t]), torch.cat([labels, null])).chunk(2)
                out = out_u + o.guidance * (out_c - out_u)
            else:
                out = net(x, given, known, t, labels)
            # latents are not bounded like pixels (Stable Diffusion does not clip them either)
            x0_hat, eps = schedule.denoise(x, t, out, clip=self.autoencoder is None)
            # Known frames are denoised to themselves: the loss never trained the network's output there, and the
            # sampler's state of those frames, which the network sees beside the hidden ones, must stay the noisy
            # version of the true frames that training showed it
            ab = schedule.alpha_bar.to(x.device)[t.long()].to(x.dtype).view(-1, 1, 1, 1, 1)
            eps_known = (x - ab.sqrt() * x0) / (1 - ab).sqrt()
            mask = known[..., None, None, None]
            return torch.where(mask, x0, x0_hat), torch.where(mask, eps_known, eps)

        if o.mean and generator is None:  # a forecast is one answer: its x_T, which it should ignore, is fixed too
            generator = torch.Generator(device).manual_seed(0)
        x = torch.randn(x0.shape, generator=generator, device=device) * o.temperature
        if o.mean:
            out, _ = denoise(x, torch.full((n,), self.config.timesteps - 1, device=device))
        else:
            out = sample_loop(schedule, denoise, x, schedule.timesteps_for(o.steps), o.sampler, generator=generator,
                              progress=o.progress)
        out = self.from_latent(out, self.mean_decoder_ema if o.mean else None)
        out = torch.where(known[..., None, None, None], pixels, out)
        return ((out + 1) / 2).clamp(0, 1)

    @torch.no_grad()
    def sample_video(self, n: int, *, labels: Any = None, generator: torch.Generator | None = None,
                     options: SampleOptions | None = None) -> torch.Tensor:
        """n clips in [0, 1], (n, T, C, H, W); `labels`: class names or indices (class models; None cycles through
        the classes)."""
        check_count(n, "clips")
        o = self._options(options)
        c = self.config
        device = next(self.parameters()).device
        x0 = torch.zeros(n, c.frames, c.channels, *c.image_size, device=device)
        known = torch.zeros(n, c.frames, dtype=torch.bool, device=device)
        return self._fill(x0, known, self._labels(labels, n, device), generator, o)

    @torch.no_grad()
    def complete(self, clips: torch.Tensor, known: torch.Tensor, *, labels: Any = None,
                 generator: torch.Generator | None = None, options: SampleOptions | None = None) -> torch.Tensor:
        """Clips (B, T, C, H, W) (uint8, or floats in [0, 1]) with the frames where `known` ((T,) or (B, T) bool)
        is True kept and the rest made to fit them; full clips in [0, 1]."""
        device = next(self.parameters()).device
        x0 = self.check_clips(clips).to(device)
        known = torch.as_tensor(known, dtype=torch.bool, device=device).expand(len(x0), self.config.frames)
        return self._fill(x0, known, self._labels(labels, len(x0), device), generator, self._options(options))

    def predict(self, context: torch.Tensor, **kwargs) -> torch.Tensor:
        """The frames after `context` (B, k, C, H, W), k < T: (B, T - k, C, H, W) in [0, 1]; `kwargs` as
        `complete`'s (options=VideoSampleOptions(mean=True) for the forecast of least squared error)."""
        k, frames = context.shape[1], self.config.frames
        if not 1 <= k < frames:
            raise ConfigError(f"a context of {k} frames for a model of {frames}", f"give 1 .. {frames - 1} frames")
        clips = torch.zeros(len(context), frames, *context.shape[2:], dtype=context.dtype)
        clips[:, :k] = context
        return self.complete(clips, torch.arange(frames) < k, **kwargs)[:, k:]

    def interpolate(self, clip: torch.Tensor, factor: int, **kwargs) -> torch.Tensor:
        """`factor` times the frame rate of clips (B, m, C, H, W): (B, (m - 1) * factor + 1, C, H, W) in [0, 1],
        the given frames at every factor-th place, made in windows of this model's length that share their end
        frames; `kwargs` as `complete`'s."""
        frames = self.config.frames
        per_window = (frames - 1) // factor  # intervals between given frames one window holds
        if factor < 2 or per_window < 1:
            raise ConfigError(f"factor {factor} for a model of {frames} frames", f"use 2 .. {frames - 1}")
        b, m = clip.shape[:2]
        given = clip.float() / 255 if clip.dtype == torch.uint8 else clip.float()
        out = [given[:, :1]]
        for start in range(0, m - 1, per_window):
            stop = min(m - 1, start + per_window)
            window = torch.zeros(b, frames, *clip.shape[2:])
            places = torch.arange(stop - start + 1) * factor
            window[:, places] = given[:, start: stop + 1]
            known = torch.zeros(frames, dtype=torch.bool)
            known[places] = True
            filled = self.complete(window, known, **kwargs)
            out.append(filled[:, 1: places[-1] + 1].cpu())
        return torch.cat(out, 1)

    def animate(self, first: torch.Tensor, **kwargs) -> torch.Tensor:
        """Clips (B, T, C, H, W) in [0, 1] that start from still images `first` (B, C, H, W)."""
        return torch.cat([first[:, None].float() / (255 if first.dtype == torch.uint8 else 1),
                          self.predict(first[:, None], **kwargs)], 1)
