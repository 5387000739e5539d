"""Denoising diffusion (Ho et al. 2020): unconditional, class- or text-conditioned, with fast samplers and editing.

Training adds noise at a random timestep and regresses the U-Net's output on the noise (eps) or
on v, weighted by min-SNR-gamma (Hang et al. 2023) so that the nearly clean timesteps, which
are easy, do not dominate the gradient. Conditioning enters every residual block through the
FiLM embedding: a learned class embedding, or the frozen sentence embedding of a caption
(genlab.models.diffusion.text); at sampling a prompt's embedding is first mapped onto the training
captions' (`Diffusion._prompt_prior`). The condition is dropped for `cond_drop` of the examples, which
trains the unconditional model that classifier-free guidance (Ho & Salimans 2021) extrapolates from.

Sampling uses the EMA weights and any sampler of genlab.models.diffusion.schedule (DDPM, DDIM, DPM-Solver++).
Editing: image-to-image is SDEdit (Meng et al. 2022): noise the input to `strength` x T and denoise
from there. Inpainting is RePaint (Lugmayr et al. 2022): after every step the known pixels are
replaced by the input noised to the same level, and each step is redone `resample` times
(renoise, denoise) so that the generated region agrees with the kept one. RePaint needs no
mask-conditioned training, so every trained model inpaints, conditional or not.

Anomaly scores are the variational bound on -log p(x) in bits per dimension (Ho et al. 2020, eq. 5):
the prior term, the denoising terms estimated on a fixed grid of timesteps even in log-SNR
(`NoiseSchedule.vlb_grid`), and the discretised Gaussian decoder, with fixed noise.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import nn

from genlab.errors import ConfigError
from genlab.models.base import (
    AnomalyScorer,
    ConditionalImageConfig,
    EditOptions,
    Editor,
    ImageModel,
    ImageSampler,
    SampleOptions,
    check_count,
    class_labels,
)
from genlab.models.diffusion.schedule import (
    SAMPLERS,
    Generators,
    NoiseSchedule,
    discretized_gaussian_log_prob,
    randn,
    sample_loop,
)
from genlab.models.diffusion.unet import UNet
from genlab.models.ema import ema_decay, ema_update


@dataclasses.dataclass(frozen=True)
class DiffusionConfig(ConditionalImageConfig):
    FROM_DATA: ClassVar[tuple[str, ...]] = (*ConditionalImageConfig.FROM_DATA, "text_dim", "example_prompts",
                                            "layout_slots")

    widths: tuple[int, ...] = (16, 32, 48, 64)
    """U-Net channels per resolution, fine to coarse"""
    blocks: tuple[int, ...] = (1, 1, 1, 1)
    """residual blocks per level on the way down (one more on the way up)"""
    attention: tuple[bool, ...] = (False, False, True, True)
    """self-attention at these levels"""
    patch: int = 1
    """fold patch x patch pixels into channels before the U-Net (space-to-depth; 2 runs its first level on a
    quarter of the pixels, for larger images such as spectrograms)"""
    dropout: float = 0.0
    """dropout in the residual blocks"""
    schedule: Literal["linear", "cosine"] = "linear"
    """noise schedule: linear betas (Ho et al. 2020) or cosine (Nichol & Dhariwal 2021)"""
    timesteps: int = 1000
    """diffusion steps T of training"""
    prediction: Literal["eps", "v"] = "eps"
    """what the network predicts: the noise, or v (Salimans & Ho 2022)"""
    min_snr_gamma: float = 5.0
    """loss weight min(SNR, gamma) / SNR (eps) or / (SNR + 1) (v), Hang et al. 2023; 0: plain MSE"""
    ema_decay: float = 0.999
    """samples come from this moving average of the weights (0: the raw weights)"""
    condition: Literal["none", "class", "text"] = "none"
    """what steers generation: nothing, the class label, or a prompt (captions made from class names)"""
    cond_drop: float = 0.1
    """fraction of training examples without their condition (for classifier-free guidance)"""
    text_encoder: str = "sentence-transformers/all-MiniLM-L6-v2"
    """the frozen sentence encoder of text-conditioned models; its name is all the model folder keeps"""
    text_dim: int = 384
    """the encoder's embedding size (from the encoder)"""
    text_noise: float = 0.005
    """per-dimension std of the noise on caption embeddings in training (pooled prompts)"""
    cross_attention: bool = False
    """text models: the attention levels attend to the prompt's tokens (the encoder's frozen word-piece embeddings
    through a small transformer trained with the model); False: one pooled sentence embedding of the prompt
    drives every block's FiLM"""
    text_width: int = 128
    """cross-attention: the prompt transformer's width"""
    text_layers: int = 2
    """cross-attention: the prompt transformer's layers"""
    text_length: int = 32
    """cross-attention: word pieces a prompt keeps (longer prompts are cut)"""
    layout: bool = False
    """cross-attention models on data with layouts (genlab data make shapes): a planner samples the box of each
    object the prompt names, and the denoiser is grounded on them (genlab.models.diffusion.layout)"""
    layout_slots: int = 0
    """layouts: the most objects a caption names (from the data)"""
    objects_only: bool = False
    """layout models: the denoiser sees the prompt only through the objects placed (their grounding tokens and
    map), not the sentence's states or pooled vector, as layout-to-image models do (LayoutDiffusion, Zheng et al.,
    CVPR 2023); the planner still reads the sentence. docs/diffusion.md has the figures"""
    planner_batch: int = 256
    """layout models: captions the planner learns from at each step, drawn from all the training captions (it
    needs no images); 0: the image batch's own"""
    example_prompts: tuple[str, ...] = ()
    """captions of training images, for data with captions of its own (genlab data make shapes): what sampling
    without a prompt draws (from the data)"""
    prompt_prior: float = 0.05
    """temperature of the mapping of a prompt onto the training captions before it conditions the denoiser
    (retrieval conditioning, as in kNN-Diffusion and RDM; `Diffusion._prompt_prior`); 0 feeds the raw prompt
    embedding. docs/diffusion.md tells how it was chosen"""
    sampler: Literal["ddpm", "ddim", "dpm++"] = "ddim"
    """the sampler `sample` uses by default"""
    sample_steps: int = 50
    """network evaluations `sample` uses by default"""
    guidance: float = 3.0
    """classifier-free guidance scale of conditional models by default (1: the conditional model alone)"""

    def __post_init__(self):
        super().__post_init__()
        if not self.widths or not len(self.widths) == len(self.blocks) == len(self.attention):
            raise ConfigError(
                "widths, blocks and attention need one entry per U-Net level",
                "e.g. --model.widths [16,32,48,64] --model.blocks [1,1,1,1] --model.attention [false,false,true,true]",
            )
        if any(w % 4 for w in self.widths) or min(self.widths) < 8:
            raise ConfigError(
                f"U-Net widths {list(self.widths)} must be multiples of 4 and at least 8",
                "e.g. [16,32,48,64]",
            )
        if not 1 <= self.patch <= 8:
            raise ConfigError(f"patch {self.patch} must be 1 to 8", "e.g. --model.patch 2")
        if self.cross_attention and (self.text_width % 32 or self.text_layers < 1 or self.text_length < 4):
            raise ConfigError(f"text_width {self.text_width}, text_layers {self.text_layers} and text_length "
                              f"{self.text_length}: the width must be a multiple of 32, with a layer and 4 pieces "
                              "at least", "e.g. --model.text-width 128 --model.text-layers 2 --model.text-length 32")
        if self.layout and not (self.condition == "text" and self.cross_attention):
            raise ConfigError("a layout grounds a model that attends to its prompt's tokens",
                              "add --model.condition text --model.cross-attention true, or drop --model.layout")
        if self.objects_only and not self.layout:
            raise ConfigError("objects_only grounds the denoiser on a layout's objects, and this model has no layout",
                              "add --model.layout true, or drop --model.objects-only")
        if self.planner_batch < 0:
            raise ConfigError(f"planner_batch = {self.planner_batch} must be >= 0",
                              "e.g. --model.planner-batch 256 (0: the image batch's captions)")
        if self.timesteps < 10 or not 0 <= self.cond_drop < 1 or not 0 <= self.ema_decay < 1:
            raise ConfigError("timesteps must be >= 10, cond_drop in [0, 1) and ema_decay in [0, 1)",
                              "e.g. --model.timesteps 1000 --model.cond-drop 0.1 --model.ema-decay 0.999")


@dataclasses.dataclass(frozen=True)
class DiffusionSampleOptions(SampleOptions):
    """How to sample from a diffusion model; unset fields take the model's defaults (its config)."""

    sampler: Literal["ddpm", "ddim", "dpm++"] | None = None
    """ddpm, ddim or dpm++ (default the model's, ddim)"""
    steps: int | None = None
    """network evaluations (default the model's, 50; 10-25 are enough for dpm++)"""
    guidance: float | None = None
    """classifier-free guidance scale (1: none; default the model's, 3)"""
    eta: float = 0.0
    """ddim: 0 is deterministic, 1 as noisy as DDPM"""
    prompt_prior: float | None = None
    """with a prompt: the temperature of its mapping onto the training captions (default the model's; 0: off)"""
    progress: bool = False
    """show a progress bar over the steps"""

    def __post_init__(self):
        super().__post_init__()
        if self.eta < 0:
            raise ConfigError(f"eta = {self.eta} must be >= 0", "0 is deterministic DDIM, 1 as noisy as DDPM")
        if self.prompt_prior is not None and self.prompt_prior < 0:
            raise ConfigError(f"prompt_prior = {self.prompt_prior} must be >= 0", "0 turns the prompt prior off")


@dataclasses.dataclass(frozen=True)
class DiffusionEditOptions(EditOptions):
    progress: bool = False
    """show a progress bar over the steps"""


def _joined(*conds):
    """Conditions stacked along the batch: tensors, or a grounded model's (pieces, layout) pairs."""
    if isinstance(conds[0], tuple):
        return tuple(torch.cat(parts) for parts in zip(*conds, strict=True))
    return torch.cat(conds)


def _rows(cond, rows: slice):
    """Some rows of a condition (a tensor, or a grounded model's (pieces, layout)); None stays None."""
    if cond is None:
        return None
    return tuple(part[rows] for part in cond) if isinstance(cond, tuple) else cond[rows]


@dataclasses.dataclass
class CaptionBank:
    """Captions in sets (a class's, or an image's), each distinct caption encoded once: word-piece ids
    (texts, text_length) for a model that attends to tokens, else sentence embeddings (texts, d)."""

    texts: list[str]
    index: torch.Tensor  # (sets, most captions of a set): indices into texts, -1 past a set's end
    count: torch.Tensor  # (sets,) captions of each set
    encoded: torch.Tensor
    layouts: torch.Tensor | None = None  # (sets, most captions of a set, slots, 4): each caption's layout

    def draw(self, sets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """One caption of each set, uniformly (the torch generator: a resumed run draws as the first did): its
        index into texts, and its layout (None without layouts)."""
        which = (torch.rand(len(sets)) * self.count[sets]).long()
        return self.index[sets, which], self.layouts[sets, which] if self.layouts is not None else None

    def members(self, k: int) -> torch.Tensor:
        return self.encoded[self.index[k, : self.count[k]]]


class Diffusion(ImageModel, ImageSampler, Editor, AnomalyScorer):
    """A denoising diffusion model: U-Net, linear/cosine schedule, eps/v prediction, DDPM/DDIM/DPM-Solver++
    sampling, classifier-free guidance (--model.condition class|text), SDEdit and RePaint editing; anomaly
    scores from its variational bound."""

    family = "diffusion"
    generator_per_image = True
    Config = DiffusionConfig
    sample_options = DiffusionSampleOptions
    edit_options = DiffusionEditOptions
    eval_samples = 2000  # DDIM-50 sampling is slow on a CPU: `genlab eval` scores fewer samples by default

    def __init__(self, config: DiffusionConfig):
        super().__init__(config)
        c = config
        cond_dim = {"none": 0, "class": 4 * c.widths[0], "text": c.text_dim}[c.condition]
        self.attends = c.condition == "text" and c.cross_attention
        prompt = (c.text_dim, c.text_width, c.text_layers, c.text_length) if self.attends else None
        self.grounded = c.layout  # the config holds it to cross-attention models
        self.net = UNet(c.channels, c.widths, c.blocks, c.attention, c.dropout, cond_dim, c.patch, prompt,
                        c.layout_slots if self.grounded else 0, c.objects_only)
        if self.grounded:
            from genlab.models.diffusion.layout import LayoutPlanner

            self.planner = LayoutPlanner(c.text_dim, c.text_width, c.text_layers, c.text_length, c.layout_slots)
            # the least gap between two boxes of a training layout: sampled boxes keep it (-inf: they may overlap)
            self.register_buffer("layout_gap", torch.tensor(-math.inf))
        # Class conditioning: one embedding per class plus the "no class" of classifier-free guidance.
        self.class_embed = nn.Embedding(c.num_classes + 1, cond_dim) if c.condition == "class" else None
        self.net_ema = copy.deepcopy(self.net).requires_grad_(False)
        self.schedule = NoiseSchedule(c.schedule, c.timesteps, c.prediction)
        self.class_embed_ema = copy.deepcopy(self.class_embed).requires_grad_(False) if self.class_embed else None
        if c.condition == "text" and not self.attends:  # caption statistics that normalise a pooled text input
            self.register_buffer("text_center", torch.zeros(c.text_dim))
            self.register_buffer("text_scale", torch.tensor(c.text_dim**0.5))
        self._bank: CaptionBank | None = None  # text models: the captions training draws from
        self._empty: torch.Tensor | None = None  # attending models: the empty prompt's pieces, made once
        self._text_fitted = False  # pooled text models: caption statistics set for this training

    @classmethod
    def config_for_data(cls, config: DiffusionConfig, data) -> DiffusionConfig:
        config = super().config_for_data(config, data)
        h, w = config.image_size
        if min(h, w) < config.patch * 2 ** (len(config.widths) - 1):
            raise ConfigError(f"{h}x{w} images are too small for a {len(config.widths)}-level U-Net on "
                              f"{config.patch}x{config.patch} patches", "use fewer --model.widths levels or a smaller "
                              "--model.patch")
        if config.condition == "text":
            from genlab.models.diffusion.text import encoder_dim, word_pieces

            # the encoder's size (its word pieces' for a model that attends to them), and a clear error now if the
            # encoder is missing
            dim = (word_pieces(config.text_encoder)[1].shape[1] if config.cross_attention
                   else encoder_dim(config.text_encoder))
            config = dataclasses.replace(config, text_dim=dim)
            captions = getattr(data, "captions", None)
            if config.layout:
                layouts = getattr(data, "layouts", None)
                if not (layouts and captions):
                    raise ConfigError(f"--model.layout needs data whose captions come with the boxes of the objects "
                                      f"they name, and {data.name} has none",
                                      "genlab data make shapes writes such data; or drop --model.layout")
                slots = max(len(boxes) for sets in layouts for boxes_of_image in sets for boxes in boxes_of_image)
                config = dataclasses.replace(config, layout_slots=slots)
            if captions and not config.example_prompts:  # data with captions of its own: a few to sample from
                firsts = list(dict.fromkeys(c[0] for c in captions[0] if c))
                config = dataclasses.replace(config, example_prompts=tuple(firsts[:16]))
        return config

    @property
    def captioned(self) -> bool:
        """Trained on captions of each image (data that has them) rather than on captions made from class names."""
        return bool(self.config.example_prompts)

    def num_parameters(self) -> int:
        """Parameters of the denoiser (the EMA copy and class table are not counted twice)."""
        return sum(p.numel() for p in self.net.parameters()) + (
            self.class_embed.weight.numel() if self.class_embed else 0
        ) + (sum(p.numel() for p in self.planner.parameters()) if self.grounded else 0)

    def update_ema(self, step: int) -> None:
        """Move the EMA weights towards the trained ones (after each optimiser step)."""
        decay = ema_decay(self.config.ema_decay, step)
        ema_update(self.net_ema, self.net, decay)
        if self.class_embed is not None:
            ema_update(self.class_embed_ema, self.class_embed, decay)

    # -- conditions --------------------------------------------------------------------------

    def use_captions(self, sets: list[list[str]], layouts: list[list[list]] | None = None) -> None:
        """The captions training draws from when the data has its own: one list per image of the training split,
        indexed by the row the loader yields with each image (genlab.engine.recipes.DiffusionRecipe); for a
        grounded model, each caption's layout too: the (x, y, r) boxes of the objects it names, in order."""
        empty = next((i for i, captions in enumerate(sets) if not captions), None)
        if empty is not None:
            raise ConfigError(f"training image {empty} has no caption",
                              "give every image at least one caption, or train with --model.condition class")
        if self.grounded and layouts is None:
            raise ConfigError("this model is grounded on layouts, and the data gave its captions none",
                              "train it on data with layouts (genlab data make shapes), or drop --model.layout")
        self._bank = self._make_bank(sets, layouts if self.grounded else None)
        if self.grounded:
            from genlab.models.diffusion.layout import least_gap

            flat = self._bank.layouts.flatten(0, 1)
            self.layout_gap.fill_(least_gap(flat[flat[:, 0, 0] > 0]))

    def _make_bank(self, sets: list[list[str]], layouts: list[list[list]] | None = None) -> CaptionBank:
        from genlab.models.diffusion.text import encode, piece_ids

        texts = list(dict.fromkeys(t for captions in sets for t in captions))
        where = {t: i for i, t in enumerate(texts)}
        index = torch.full((len(sets), max(map(len, sets))), -1, dtype=torch.long)
        for row, captions in enumerate(sets):
            index[row, : len(captions)] = torch.tensor([where[t] for t in captions])
        c = self.config
        encoded = piece_ids(c.text_encoder, texts, c.text_length) if self.attends else encode(c.text_encoder, texts)
        boxes = None
        if layouts is not None:  # (sets, captions, slots, 4): present, x, y, r
            from genlab.models.diffusion.layout import layout_tensor

            crowded = next(((row, len(layout)) for row, per_caption in enumerate(layouts) for layout in per_caption
                            if len(layout) > c.layout_slots), None)
            if crowded is not None:
                raise ConfigError(f"a caption of training image {crowded[0]} names {crowded[1]} objects; this model "
                                  f"plans {c.layout_slots}", "train a new model on this data")
            flat = [layout for per_caption in layouts for layout in per_caption]
            where = [(row, j) for row, per_caption in enumerate(layouts) for j in range(len(per_caption))]
            boxes = torch.zeros(*index.shape, c.layout_slots, 4)
            boxes[tuple(torch.tensor(where).T)] = layout_tensor(flat, c.layout_slots)
        return CaptionBank(texts, index, torch.tensor([len(captions) for captions in sets]), encoded, boxes)

    def _caption_bank(self) -> CaptionBank:
        """The captions training draws from: each image's own (`use_captions`), else every templated caption of
        each class (set k: class k)."""
        if self._bank is None:
            if self.captioned:
                raise ConfigError("this model was trained on the captions of each image, and none were given",
                                  "train it on data with captions (genlab data make shapes writes such data)")
            from genlab.models.diffusion.text import captions_for

            self._bank = self._make_bank([captions_for(name) for name in self.config.class_names])
        return self._bank

    def _fit_text_statistics(self) -> None:
        """The training captions' mean and scale that `_text_input` normalises by (set when training starts)."""
        every = self._caption_bank().encoded
        self.text_center.copy_(every.mean(0))
        self.text_scale.fill_(1 / (every - self.text_center).pow(2).mean().sqrt())
        self._text_fitted = True

    def _prompt_prior(self, emb: torch.Tensor, temperature: float) -> torch.Tensor:
        """Unit prompt embeddings (n, d) -> a weighted mean of the training captions' embeddings, renormalised.

        Each class k gets weight softmax_k(cos(prompt, class centroid k) / temperature), and within a
        class each caption gets softmax(cos(prompt, caption) / temperature) of that; cosines are taken
        around the captions' mean, where classes separate. A prompt then conditions the denoiser as the
        training captions nearest it did, instead of at a point between classes that the network never
        saw. Classes are weighed by their centroids rather than by single captions: a caption's
        template words pull as hard as its noun ("comfortable running shoes" is nearest to "pair of
        ankle boots", yet nearest to the sneaker centroid). Models trained on each image's own captions take
        prompts as they come: their captions are not grouped by class."""
        if temperature <= 0 or self.captioned:
            return emb
        center = self.text_center.to(emb)
        prompt = F.normalize(emb - center, dim=1)
        bank = self._caption_bank()
        per_class = [bank.members(k).to(emb) for k in range(len(bank.count))]
        centroids = F.normalize(torch.stack([captions.mean(0) for captions in per_class]) - center, dim=1)
        class_weights = (prompt @ centroids.T / temperature).softmax(1)  # (n, classes)
        out = torch.zeros_like(emb)
        for k, captions in enumerate(per_class):
            within = (prompt @ F.normalize(captions - center, dim=1).T / temperature).softmax(1)
            out += class_weights[:, k : k + 1] * (within @ captions)
        return F.normalize(out, dim=1)

    def encode_prompts(self, prompts: list[str]) -> torch.Tensor:
        """The condition of each prompt as the network takes it, before guidance: its frozen word-piece embeddings
        (n, text_length, d) for a model that attends to tokens, else its unit sentence embedding (n, d)."""
        from genlab.models.diffusion.text import embed_pieces, encode, piece_ids

        c = self.config
        if c.condition != "text":
            raise ConfigError(f"this diffusion model is {c.condition}-conditioned and takes no prompt",
                              "drop --prompt, or train one with --model.condition text")
        emb = (embed_pieces(c.text_encoder, piece_ids(c.text_encoder, prompts, c.text_length)) if self.attends
               else encode(c.text_encoder, prompts))
        if emb.shape[-1] != c.text_dim:
            raise ConfigError(
                f"the text encoder {c.text_encoder!r} gives {emb.shape[-1]}-d embeddings; "
                f"this model was trained on {c.text_dim}-d ones",
                "use the encoder it was trained with",
            )
        return emb

    def _null_condition(self, n: int, device: torch.device | str = "cpu"):
        """What classifier-free guidance trained as "no condition": the empty prompt's pieces (and an empty
        layout), or a zero vector."""
        if self.attends:
            if self._empty is None:  # every training step asks for it: tokenised once
                self._empty = self.encode_prompts([""])
            empty = self._empty.expand(n, -1, -1).to(device)
            return (empty, torch.zeros(n, self.config.layout_slots, 4, device=device)) if self.grounded else empty
        return torch.zeros(n, self.config.text_dim, device=device)

    def _training_condition(self, labels: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor | None:
        """Per-example condition vectors; `cond_drop` of them are the null condition. Text models draw one caption
        of each example's set: its image's (`rows`, with data that has captions) or its class's."""
        from genlab.models.diffusion.text import embed_pieces

        c = self.config
        if c.condition == "none":
            return None
        drop = torch.rand(len(labels), device=labels.device) < c.cond_drop
        if c.condition == "class":
            return self.class_embed(torch.where(drop, torch.full_like(labels, c.num_classes), labels.long()))
        bank = self._caption_bank()
        chosen, layout = bank.draw((rows if rows is not None else labels).long().cpu())
        if self.attends:
            pieces = embed_pieces(c.text_encoder, bank.encoded[chosen]).to(labels.device)
            null = self._null_condition(len(labels), labels.device)
            if self.grounded:  # a dropped condition drops its layout too: guidance extrapolates from neither
                return (torch.where(drop[:, None, None], null[0], pieces),
                        torch.where(drop[:, None, None], null[1], layout.to(labels.device)))
            return torch.where(drop[:, None, None], null, pieces)
        if not self._text_fitted:
            self._fit_text_statistics()
        emb = bank.encoded[chosen].to(labels.device)
        if c.text_noise > 0:
            emb = F.normalize(emb + c.text_noise * torch.randn_like(emb), dim=1)
        return torch.where(drop[:, None], torch.zeros_like(emb), self._text_input(emb))

    def _text_input(self, emb: torch.Tensor) -> torch.Tensor:
        """Sentence embeddings centred on the training captions' mean and scaled to unit variance per
        dimension. As they come out of the encoder they are tiny and share a large common part, and the
        condition barely moved the network's output (docs/diffusion.md has the figures)."""
        return (emb - self.text_center) * self.text_scale

    def _sampling_condition(self, n: int, labels: Any, prompt: Any, prompt_prior: float | None = None,
                            generator: Generators = None, layout: Any = None) -> tuple[Any, Any]:
        """(condition, null condition) for sampling with the EMA weights; (None, None) when unconditional. A
        grounded model's conditions are (pieces, layout), its layouts drawn with `generator` unless given."""
        c = self.config
        if layout is not None and not self.grounded:
            raise ConfigError("this model is not grounded on layouts and takes no boxes",
                              "drop the layout, or train one with --model.layout true")
        if c.condition == "none":
            if prompt is not None:
                raise ConfigError("this diffusion model is unconditional and takes no prompt",
                                  "drop --prompt, or train one with --model.condition text")
            class_labels(c, labels, n)  # refuses labels with a clear error
            return None, None
        if c.condition == "class":
            if prompt is not None:
                raise ConfigError("this diffusion model is class-conditioned and takes no prompt", "use --label CLASS")
            table = self.class_embed_ema.weight
            labels = class_labels(c, labels, n)
            return table[labels.to(table.device)], table[c.num_classes].expand(n, -1)
        if prompt is None and self.captioned:  # no prompt: the training captions kept with the model, in turn
            class_labels(c, labels, n)  # refuses labels with a clear error
            prompt = [c.example_prompts[i % len(c.example_prompts)] for i in range(n)]
        elif prompt is None:  # no prompt: the class captions, cycled or as asked by labels
            from genlab.models.diffusion.text import class_prompt

            labels = class_labels(c, labels, n)
            prompt = [class_prompt(c.class_names[int(i)]) for i in labels]
        prompts = [prompt] * n if isinstance(prompt, str) else list(prompt)
        if len(prompts) != n:
            raise ConfigError(f"{len(prompts)} prompts for {n} images", "give one prompt, or one per image")
        if any(not p.strip() for p in prompts):
            example = c.example_prompts[0] if c.example_prompts else "a pair of ankle boots"
            raise ConfigError("an empty prompt", f"write what the image should show, e.g. --prompt {example!r}")
        device = next(self.parameters()).device
        if self.grounded:  # the planner draws a layout for each prompt (unless given), then the denoiser follows it
            pieces = self.encode_prompts(prompts).to(device)
            if layout is None:
                layout = self.planner.sample(pieces, float(self.layout_gap), generator=generator)
            else:
                layout = self._given_layout(layout, n).to(device)
            return (pieces, layout), self._null_condition(n, device)
        if self.attends:
            return self.encode_prompts(prompts).to(device), self._null_condition(n, device)
        prior = c.prompt_prior if prompt_prior is None else prompt_prior
        emb = self._text_input(self._prompt_prior(self.encode_prompts(prompts).to(device), prior))
        return emb, torch.zeros_like(emb)

    def _given_layout(self, layout: Any, n: int) -> torch.Tensor:
        """A layout given for sampling, as a (n, slots, 4) tensor: from one list of (x, y, r) boxes per image (the
        objects its prompt names, in order; fractions of the image), or such a tensor itself."""
        from genlab.models.diffusion.layout import layout_tensor

        slots = self.config.layout_slots
        try:
            if not isinstance(layout, torch.Tensor):
                if any(len(boxes) > slots or any(len(box) != 3 for box in boxes) for boxes in layout):
                    raise ValueError
                layout = layout_tensor([[tuple(map(float, box)) for box in boxes] for boxes in layout], slots)
        except (TypeError, ValueError):
            raise ConfigError(f"a layout is a list of up to {slots} (x, y, r) boxes per image", "e.g. "
                              "[[(0.25, 0.5, 0.1), (0.75, 0.5, 0.18)]]: centres and half-sides as fractions of the "
                              "image, one box per object the prompt names, in order") from None
        if layout.shape != (n, slots, 4):
            raise ConfigError(f"a layout of shape {tuple(layout.shape)} for {n} images of this model",
                              f"give ({n}, {slots}, 4): one row (present, x, y, r) per slot, or one list of boxes "
                              "per image")
        return layout.float()

    # -- training ----------------------------------------------------------------------------

    def loss(self, batch, step: int | None = None) -> dict[str, torch.Tensor]:
        """The weighted denoising loss of (images, labels) or, for data with captions, (images, labels, rows)."""
        images, labels, *rows = batch
        x0 = images.float() / 127.5 - 1
        noise = torch.randn_like(x0)
        t = torch.randint(0, self.config.timesteps, (len(x0),), device=x0.device)
        cond = self._training_condition(labels, rows[0] if rows else None)
        output = self.net(self.schedule.add_noise(x0, noise, t), t, cond)
        planned = self._planner_loss(cond) if self.grounded else None
        per_example = (output - self.schedule.target(x0, noise, t)).pow(2).flatten(1).mean(1)
        gamma = self.config.min_snr_gamma
        if gamma > 0:
            snr = self.schedule.snr(t)
            weight = snr.clamp(max=gamma) / (snr if self.config.prediction == "eps" else snr + 1)
            loss = (weight * per_example).mean()
        else:
            loss = per_example.mean()
        if planned is None:
            return {"loss": loss, "mse": per_example.mean().detach()}
        return {"loss": loss + planned, "mse": per_example.mean().detach(), "layout_nll": planned.detach()}

    def _planner_loss(self, cond: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """The planner's cross-entropy of layouts. In training, of `planner_batch` captions drawn afresh from all the
        training captions: it needs no images, and learned slowly from an image batch's few (its relations 78% right
        after a 3,000 s run; 93% after 300 s more on 256 captions a step). Otherwise, and with planner_batch 0, of
        the batch's captions kept (a dropped one has no objects)."""
        from genlab.models.diffusion.text import embed_pieces

        c = self.config
        if self.training and c.planner_batch:
            bank = self._caption_bank()
            chosen, layout = bank.draw(torch.randint(len(bank.count), (c.planner_batch,)))
            device = cond[0].device
            return self.planner.loss(embed_pieces(c.text_encoder, bank.encoded[chosen]).to(device), layout.to(device))
        pieces, layout = cond
        kept = layout[:, 0, 0] > 0
        return self.planner.loss(pieces[kept], layout[kept]) if kept.any() else pieces.new_zeros(())

    @torch.no_grad()
    def validation_metrics(self, batch) -> dict[str, torch.Tensor]:
        return self.loss(batch)

    # -- anomaly scores ----------------------------------------------------------------------

    @torch.no_grad()
    def _bound_nats(self, x0: torch.Tensor, cond: torch.Tensor | None, steps: int, seed: int,
                    max_log_snr: float | None = None, chunk: int = 512) -> torch.Tensor:
        """The variational bound on -log p(x_0) in nats, (B,), for x_0 in [-1, 1] on the 8-bit grid:
        L_T + sum_t L_{t-1} + L_0 (Ho et al. 2020, eq. 5), the sum estimated on `vlb_grid(steps)`.

        The noise of each grid timestep is one (C, H, W) draw from `seed` shared by every example, so an
        example's score is the same in any batch, and differences between examples are not noise draws'; each
        draw is used with its negation (antithetic variates), which cancels the part of the error odd in the
        noise (with the exact denoiser of Gaussian data, all of its variance but ||eps||^2's). The EMA network
        scores, as it samples. With `max_log_snr`, only the denoising terms below it (no L_0)."""
        schedule, net = self.schedule, self.net_ema
        timesteps, weights = schedule.vlb_grid(steps, max_log_snr)
        generator = torch.Generator().manual_seed(seed)
        noises = torch.randn(len(timesteps) + 1, *x0.shape[1:], generator=generator).to(x0)
        total = schedule.prior_kl(x0).double()
        for i in range(0, len(x0), chunk):
            x, c = x0[i : i + chunk], _rows(cond, slice(i, i + chunk))
            cc = _joined(c, c) if c is not None else None
            part = torch.zeros(len(x), dtype=torch.float64, device=x.device)
            for t, w, noise in zip(timesteps, weights.tolist(), noises[1:]):
                # antithetic pair: +noise and -noise (the error's part odd in the noise cancels)
                tt = torch.full((2 * len(x),), t, device=x.device, dtype=torch.long)
                pair = torch.cat([noise.expand_as(x), -noise.expand_as(x)])
                xt = schedule.add_noise(torch.cat([x, x]), pair, tt)
                _, eps = schedule.denoise(xt, tt, net(xt, tt, cc), clip=False)  # eps or v prediction alike
                part += w / 2 * (eps - pair).pow(2).flatten(1).sum(1).double().view(2, -1).sum(0)
            if max_log_snr is not None:
                total[i : i + chunk] += part
                continue
            # L_0: the decoder's discretised Gaussian around the clipped x_0 estimate at the first timestep
            t0 = torch.zeros(2 * len(x), device=x.device, dtype=torch.long)
            pair = torch.cat([noises[0].expand_as(x), -noises[0].expand_as(x)])
            xt = schedule.add_noise(torch.cat([x, x]), pair, t0)
            x0_hat, _ = schedule.denoise(xt, t0, net(xt, t0, cc), clip=True)
            log_p = discretized_gaussian_log_prob(torch.cat([x, x]), x0_hat, schedule.decoder_log_scale())
            total[i : i + chunk] += part - log_p.flatten(1).sum(1).double().view(2, -1).mean(0)
        return total.float()

    @torch.no_grad()
    def anomaly_score(self, examples: torch.Tensor, labels=None, *, steps: int = 16, seed: int = 0,
                      max_log_snr: float | None = None) -> torch.Tensor:
        """The variational bound on -log p(x) in bits per pixel channel, (B,), of uint8 images (B, C, H, W):
        the denoising error summed over noise levels with the weights that make it a bound (Ho et al. 2020, eq. 12),
        on `steps` timesteps spread evenly in log-SNR, with fixed noise (`seed`): the same images always score the
        same. More steps estimate the bound better and cost two network passes per image each.

        `max_log_snr` keeps only the terms of the noise levels below it (0: where noise outweighs the image, the
        terms about its global shape), without the decoder's and the fine detail's, which dominate the bound's
        bits and rank images by how complex they are more than by how unlike the data (docs/anomaly.md: one-class
        Fashion-MNIST AUROC 0.884 against the whole bound's 0.752). It is then not a bound on -log p(x).

        Conditional models score p(x | labels) when given `labels`. Without them, a model trained with the
        condition dropped (`cond_drop` > 0, for classifier-free guidance) scores its unconditional branch, which
        was trained as p(x); one trained without drop scores the marginal over its classes with a uniform prior,
        -log (1/K) sum_y p(x | y) (text models: each class's caption)."""
        self.check_images(examples)
        c = self.config
        if not 1 <= steps <= c.timesteps - 1:
            raise ConfigError(f"steps = {steps} is out of range", f"use 1 .. {c.timesteps - 1} (16-64 are usual)")
        lowest = float(torch.log(self.schedule.alpha_bar[-1] / (1 - self.schedule.alpha_bar[-1])))
        if max_log_snr is not None and max_log_snr <= lowest:
            raise ConfigError(f"max_log_snr = {max_log_snr}: no noise level is below it",
                              f"use a value above {lowest:.1f} (0 keeps the coarse half)")
        device = next(self.parameters()).device
        x0 = examples.to(device).float() / 127.5 - 1
        n = len(x0)

        def bound(cond: torch.Tensor | None) -> torch.Tensor:
            return self._bound_nats(x0, cond, steps, seed, max_log_snr)

        if c.condition == "none":
            class_labels(c, labels, n)  # refuses labels with a clear error
            nats = bound(None)
        elif labels is not None:
            nats = bound(self._sampling_condition(n, labels, None)[0])
        elif c.cond_drop > 0:  # the null condition classifier-free guidance trained
            nats = bound(self.class_embed_ema.weight[c.num_classes].expand(n, -1) if c.condition == "class"
                         else self._null_condition(n, device))
        else:
            per_class = torch.stack([bound(self._sampling_condition(n, [y] * n, None)[0])
                                     for y in range(c.num_classes)])  # (K, B)
            nats = -(torch.logsumexp(-per_class, 0) - math.log(c.num_classes))
        return nats / (x0[0].numel() * math.log(2))

    # -- sampling ----------------------------------------------------------------------------

    def _denoiser(self, cond: torch.Tensor | None, null: torch.Tensor | None, guidance: float, clip: bool = True):
        """(x, t) -> (x0, eps) of the EMA network, with classifier-free guidance when guidance != 1."""
        net, schedule = self.net_ema, self.schedule
        guided = cond is not None and guidance != 1.0

        def denoise(x: torch.Tensor, t: torch.Tensor):
            if guided:  # one batch for the conditional and unconditional outputs
                out_c, out_u = net(torch.cat([x, x]), torch.cat([t, t]), _joined(cond, null)).chunk(2)
                out = out_u + guidance * (out_c - out_u)
            else:
                out = net(x, t, cond)
            return schedule.denoise(x, t, out, clip=clip)

        return denoise

    def _options(self, steps: int | None, sampler: str | None, guidance: float | None) -> tuple[int, str, float]:
        c = self.config
        steps = c.sample_steps if steps is None else int(steps)
        sampler = sampler or c.sampler
        guidance = c.guidance if guidance is None else float(guidance)
        if sampler not in SAMPLERS:
            raise ConfigError(f"unknown sampler {sampler!r}", f"use one of {', '.join(SAMPLERS)}")
        if not 1 <= steps <= c.timesteps:
            raise ConfigError(
                f"steps = {steps} is out of range", f"use 1 .. {c.timesteps} (10-25 for dpm++, 50+ for ddim)"
            )
        if guidance < 0:
            raise ConfigError(f"guidance = {guidance} must be >= 0", "use 1 for none, 2-5 for stronger conditioning")
        return steps, sampler, guidance

    @torch.no_grad()
    def sample(self, n: int, *, labels=None, prompt: str | list[str] | None = None,
               generator: Generators = None, options: DiffusionSampleOptions | None = None,
               layout: Any = None) -> torch.Tensor:
        """n images in [0, 1], (n, C, H, W).

        labels: class names or indices (class models; None cycles through the classes; text models
        turn them into captions). prompt: a text or one per image (text models). `options`: the
        sampler, its steps, the guidance scale, the starting noise's temperature (below 1: smoother,
        less varied images) and the prompt prior's temperature (`DiffusionSampleOptions`). `generator`: one, or a
        list of one per image (each image's noise and layout then its own generator's alone). `layout`: a grounded
        model's boxes for the objects each prompt names, in order (one list of (x, y, r) per image, or a (n, slots,
        4) tensor), in place of its planner's.
        """
        check_count(n)
        if isinstance(generator, list) and len(generator) != n:
            raise ConfigError(f"{len(generator)} generators for {n} images", "give one generator, or one per image")
        o = options if isinstance(options, DiffusionSampleOptions) else DiffusionSampleOptions(
            **dataclasses.asdict(options or SampleOptions()))
        steps, sampler, guidance = self._options(o.steps, o.sampler, o.guidance)
        cond, null = self._sampling_condition(n, labels, prompt, o.prompt_prior, generator, layout)
        device = next(self.parameters()).device
        x = randn((n, self.config.channels, *self.config.image_size), generator, device) * o.temperature
        timesteps = self.schedule.timesteps_for(steps)
        out = sample_loop(self.schedule, self._denoiser(cond, null, guidance), x, timesteps, sampler, eta=o.eta,
                          generator=generator, progress=o.progress)
        return ((out + 1) / 2).clamp(0, 1)

    @torch.no_grad()
    def edit(self, images: torch.Tensor, *, mask: torch.Tensor | None = None, labels=None,
             prompt: str | list[str] | None = None, generator: torch.Generator | None = None,
             options: EditOptions | None = None) -> torch.Tensor:
        """Edit images in [0, 1], (B, C, H, W); returns the results in [0, 1].

        Without a mask: image-to-image (SDEdit). `strength` in (0, 1] is how far into the noise the
        input goes: 0.3 keeps its shapes and changes details, 0.8 keeps little more than its layout.
        With a mask (B or 1, 1, H, W), 1 where pixels are to be generated and 0 where the input is
        kept: inpainting (RePaint, `resample` passes per step, from pure noise; `strength` unused).
        A prompt or labels steer conditional models, as in `sample`.
        """
        c = self.config
        self.check_images(images)
        o = options if isinstance(options, DiffusionEditOptions) else DiffusionEditOptions(
            **dataclasses.asdict(options or EditOptions()))
        strength, resample, progress = o.strength, o.resample, o.progress
        sampler = o.sampler or ("ddpm" if mask is not None else None)
        steps, sampler, guidance = self._options(o.steps, sampler, o.guidance)
        n = len(images)
        device = next(self.parameters()).device
        x0 = images.to(device).float() * 2 - 1
        cond, null = self._sampling_condition(n, labels, prompt, generator=generator)
        denoise = self._denoiser(cond, null, guidance)
        schedule = self.schedule

        def noise_like(x: torch.Tensor) -> torch.Tensor:
            return torch.randn(x.shape, generator=generator, device=device, dtype=x.dtype)

        if mask is None:
            start = max(0, round(strength * (c.timesteps - 1)))
            timesteps = schedule.timesteps_for(max(1, min(start + 1, round(steps * strength))), start)
            x = schedule.add_noise(x0, noise_like(x0), torch.full((n,), start, device=device))
            out = sample_loop(schedule, denoise, x, timesteps, sampler, generator=generator, progress=progress)
            return ((out + 1) / 2).clamp(0, 1)

        if sampler == "dpm++":
            raise ConfigError("inpainting resamples each step, which a multistep solver cannot do",
                              "use --sampler ddpm (default for inpainting) or ddim")
        mask = mask.to(device).float()
        if mask.dim() != 4 or mask.shape[1] != 1 or mask.shape[-2:] != x0.shape[-2:] or mask.shape[0] not in (1, n):
            raise ConfigError(f"a mask of shape {tuple(mask.shape)} for images of shape {tuple(x0.shape)}",
                              "give one (1, H, W) mask, white where the image is to be generated")
        keep = 1 - mask

        def paste(x: torch.Tensor, t_next: int) -> torch.Tensor:
            known = (
                x0
                if t_next < 0
                else schedule.add_noise(x0, noise_like(x0), torch.full((n,), t_next, device=device))
            )
            return mask * x + keep * known

        timesteps = schedule.timesteps_for(steps)
        x = noise_like(x0)
        for i, t in enumerate(timesteps):
            t_next = timesteps[i + 1] if i + 1 < len(timesteps) else -1
            for r in range(resample if t_next >= 0 else 1):
                step = sample_loop(schedule, denoise, x, [t], sampler, generator=generator, t_end=t_next)
                step = paste(step, t_next)
                if r < resample - 1 and t_next >= 0:  # back to t: x_t ~ q(x_t | x_t_next)
                    ratio = float(schedule.alpha_bar[t] / schedule.alpha_bar[t_next])
                    x = ratio**0.5 * step + (1 - ratio) ** 0.5 * noise_like(step)
                else:
                    x = step
        return ((x + 1) / 2).clamp(0, 1)
