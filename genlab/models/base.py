"""The contract every family implements: a model class, its config, and the abilities it declares.

A family is a `GenerativeModel` subclass with a frozen `Config` dataclass. Training only needs
`loss(batch, step)` (or, for a two-player game, `TwoPlayerGame.train_step`); persistence only
needs `config` and the state dict. What a trained model can be asked to do is declared by the
capability classes it inherits, one method with one signature each:

| capability        | method                                                                 |
| ----------------- | ---------------------------------------------------------------------- |
| `ImageSampler`    | `sample(n, labels=, prompt=, generator=, options=) -> images in [0, 1]` |
| `TextGenerator`   | `generate(prompt, max_new_tokens, temperature, ..., seed) -> text pieces` |
| `TableSampler`    | `sample_rows(n, generator=) -> a DataFrame of the training table's columns` |
| `Reconstructor`   | `encode(images, labels)`, `reconstruct(images, labels)`, `interpolate(a, b, steps, labels)` |
| `Translator`      | `translate(conditions) -> images`, `make_input(images) -> conditions`, `prepare_condition` |
| `Editor`          | `edit(images, mask=, labels=, prompt=, generator=, options=) -> images` |
| `ImageLikelihood` | `log_likelihood(images, labels, k=, generator=, data_generator=)`      |
| `TextLikelihood`  | `log_likelihood(text) -> nats per token, bits per char`                |
| `AnomalyScorer`   | `anomaly_score(examples, labels=) -> bits per dimension, (B,)`         |
| `VideoGenerator`  | `sample_video(n, labels=, ...)`, `complete(clips, known, ...)` -> clips in [0, 1] |
| `Stylizer`        | `stylize(content, style, alpha=1.0) -> images in [0, 1]`, the content's size |

Callers (the CLI, `eval`, `compare`, `tune`, the server) dispatch with `isinstance` on these
classes and `require(model, Capability)`, which names the families that can when one cannot.
Images cross the contract as uint8 (B, C, H, W) going in and floats in [0, 1] coming out.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
from torch import nn

from genlab.config import validate
from genlab.errors import ConfigError


class GenerativeModel(nn.Module):
    family: ClassVar[str]
    Config: ClassVar[type]
    # what `--data` must be
    data_kind: ClassVar[Literal["image", "text", "table", "audio", "speech", "video"]] = "image"
    also_trains_on: ClassVar[tuple[str, ...]] = ()  # other data kinds it takes (language models: "chat")

    def __init__(self, config: Any):
        super().__init__()
        self.config = config

    @classmethod
    def config_for_data(cls, config: Any, data: Any) -> Any:
        """The config with the fields the data decides filled in (`Config.FROM_DATA`: image shape, classes,
        vocabulary); a `ConfigError` when the data cannot train this config."""
        return config

    def fit_closed_form(self, data: Any, seed: int = 0) -> bool:
        """Fit to `data` without gradient steps where this model can (a Gaussian copula), returning True; the
        engine then saves it as trained. False (the default): the model trains on `loss`."""
        return False

    def fit_after_training(self, data: Any, seed: int = 0) -> None:
        """Fit what is estimated from the trained network and the data rather than by gradient steps (a VAE's
        density of its codes), before the engine saves the model. The default: nothing."""

    def loss(self, batch: Any, step: int | None = None) -> dict[str, torch.Tensor]:
        """The training objective on one batch: a dict with `loss` and anything worth logging. `step` is the
        optimiser step, for objectives that change during training (a KL warm-up); None is the final objective."""
        raise NotImplementedError

    @torch.no_grad()
    def validation_metrics(self, batch: Any) -> dict[str, torch.Tensor]:
        return self.loss(batch)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def save_pretrained(self, folder: str | Path, card: dict[str, Any] | None = None) -> Path:
        """Write config.json, model.safetensors and a README.md model card into `folder`."""
        from genlab.models.persist import save_pretrained

        return save_pretrained(self, folder, card)

    # Families with files besides the weights (tokenizers) override these.
    def save_assets(self, folder: Path) -> None:
        pass

    def load_assets(self, folder: Path) -> None:
        pass

    def extra_repr(self) -> str:
        fields = ", ".join(f"{f.name}={getattr(self.config, f.name)!r}" for f in dataclasses.fields(self.config))
        return f"{self.family}: {fields}"


class TwoPlayerGame:
    """A model trained as a game between a generator and a discriminator (GANs), one optimiser each."""

    def is_game(self) -> bool:
        """Whether this model trains as a game: a family of several kinds may play with some of them only (the
        tabular family's ctgan); the others train on `loss`."""
        return True

    def players(self) -> tuple[nn.Module, nn.Module]:
        """(generator, discriminator): the modules the two optimisers train, in that order."""
        raise NotImplementedError

    def train_step(self, batch: Any, update, step: int) -> dict[str, torch.Tensor]:
        """Compute each player's loss and call `update(loss, player)` (0: generator, 1: discriminator) to apply
        it: the engine zeroes gradients, back-propagates, clips, steps and refuses non-finite losses. `step` is
        the optimiser step (an EMA warm-up reads it)."""
        raise NotImplementedError


# -- images -----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ImageConfig:
    """What every image family's config holds: the image shape, filled from the data."""

    FROM_DATA: ClassVar[tuple[str, ...]] = ("channels", "image_size", "sound")

    channels: int = 1
    """image channels (from the data)"""
    image_size: tuple[int, int] = (28, 28)
    """(height, width) of the images (from the data)"""
    sound: str = ""
    """the images are log-mel spectrograms of sound: the mel settings and clip length, as JSON (from the data)"""

    def __post_init__(self):
        validate(self)


@dataclasses.dataclass(frozen=True)
class ConditionalImageConfig(ImageConfig):
    """An image config whose generation may be steered by the class label: the classes come from the data."""

    FROM_DATA: ClassVar[tuple[str, ...]] = ("channels", "image_size", "sound", "num_classes", "class_names")

    condition: Literal["none", "class"] = "none"
    """what steers generation: nothing, or the class label"""
    num_classes: int = 0
    """classes of the data (from the data)"""
    class_names: tuple[str, ...] = ()
    """class names of the data (from the data)"""

    def __post_init__(self):
        super().__post_init__()
        if self.condition != "none" and self.num_classes == 1:  # 0: not filled from the data yet
            raise ConfigError(f"condition={self.condition!r} needs at least 2 classes", "or use --model.condition none")


class ImageModel(GenerativeModel):
    """A family over images: its config's image shape (and classes) are filled from the data."""

    @classmethod
    def config_for_data(cls, config: ImageConfig, data: Any) -> ImageConfig:
        c, h, w = data.shape
        sound = getattr(data, "sound", "")
        if not isinstance(config, ConditionalImageConfig):
            return dataclasses.replace(config, channels=c, image_size=(h, w), sound=sound)
        if config.condition != "none" and len(data.classes) < 2:
            raise ConfigError(
                f"condition={config.condition!r} needs labelled data with at least 2 classes; {data.name} "
                f"has {len(data.classes)}",
                "use data with labels (a folder with class subfolders) or --model.condition none",
            )
        return dataclasses.replace(config, channels=c, image_size=(h, w), sound=sound, num_classes=len(data.classes),
                                   class_names=tuple(data.classes))

    def check_images(self, images: torch.Tensor, what: str = "images") -> None:
        """Refuse a batch that is not (B, C, H, W) of this model's channels and size."""
        c = self.config
        expected = (c.channels, *c.image_size)
        if images.dim() != 4 or tuple(images.shape[1:]) != expected:
            raise ConfigError(
                f"{what} of shape {tuple(images.shape)}; this model takes (B, {', '.join(map(str, expected))})",
                f"give {c.image_size[0]}x{c.image_size[1]} images with {c.channels} channel(s) "
                "(genlab's verbs resize image files)",
            )


def class_labels(config: Any, labels: Any, n: int) -> torch.Tensor | None:
    """Class indices (n,) from ints or class names (one for all n, or one each) for a model whose config has
    `condition` "class" (or "text", whose captions come from class names); None for an unconditional model.
    No labels: cycle through the classes. A text model trained on captions of each image (`example_prompts`)
    takes prompts, not labels: None."""
    prompts = getattr(config, "example_prompts", ())
    if config.condition not in ("class", "text") or (config.condition == "text" and prompts):
        if labels is not None:
            if prompts:
                raise ConfigError("this model was trained on captions and takes a prompt, not labels",
                                  f"e.g. --prompt {prompts[0]!r}")
            raise ConfigError("this model is unconditional and takes no labels", "drop --label")
        return None
    if labels is None:
        return torch.arange(n) % config.num_classes
    if isinstance(labels, torch.Tensor):
        labels = labels.tolist()
    if isinstance(labels, (str, int)):
        labels = [labels] * n
    if len(labels) != n:
        raise ConfigError(f"{len(labels)} labels for {n} images", "give one label, or one per image")
    out = []
    for label in labels:
        if isinstance(label, str) and label in config.class_names:
            out.append(config.class_names.index(label))
        elif isinstance(label, int) or (isinstance(label, str) and label.lstrip("-").isdigit()):
            out.append(int(label))
        else:
            raise ConfigError(f"unknown class {label!r}", f"use one of {', '.join(config.class_names)}")
        if not 0 <= out[-1] < config.num_classes:
            raise ConfigError(f"class index {out[-1]} is out of range", f"use 0 .. {config.num_classes - 1}")
    return torch.tensor(out)


def check_count(n: int, what: str = "images") -> None:
    if not isinstance(n, int) or n < 1:
        raise ConfigError(f"n = {n}: at least one of the {what} must be asked for", "pass --n 1 or more")


# -- capabilities -----------------------------------------------------------------------------


class Capability:
    """A declared ability; `ability` completes "this ... model cannot ..." in errors."""

    ability: ClassVar[str]


@dataclasses.dataclass(frozen=True)
class SampleOptions:
    """How to draw samples; a family extends this with its sampler's own options."""

    temperature: float = 1.0
    """scale of the starting noise: below 1 trades variety for cleaner images"""

    def __post_init__(self):
        if self.temperature < 0:
            raise ConfigError(f"temperature = {self.temperature} must be >= 0", "e.g. --temperature 0.8")


class ImageSampler(Capability):
    """Makes images from noise, optionally steered by class labels or a prompt."""

    ability = "sample images"
    sample_options: ClassVar[type[SampleOptions]] = SampleOptions  # what `options` of `sample` may hold
    eval_samples: ClassVar[int] = 10_000  # samples `genlab eval` scores by default
    # `sample` takes a list of generators, one per image (as diffusers' pipelines do): an image is then the same
    # whatever images are drawn beside it, so a server may batch concurrent requests (genlab.serve.batching)
    generator_per_image: ClassVar[bool] = False

    def sample(self, n: int, *, labels: Any = None, prompt: str | list[str] | None = None,
               generator: torch.Generator | None = None, options: SampleOptions | None = None) -> torch.Tensor:
        """n images in [0, 1], (n, C, H, W). `labels`: class names or indices, one for all or one each (None
        cycles through the classes of a conditional model); `prompt`: text-conditioned models."""
        raise NotImplementedError


class TextGenerator(Capability):
    """Continues a text prompt, one token at a time."""

    ability = "generate text"

    def generate(self, prompt: str = "", max_new_tokens: int = 200, temperature: float = 1.0, top_k: int | None = None,
                 top_p: float | None = None, repetition_penalty: float = 1.0, stop: str | list[str] | None = None,
                 seed: int | None = None) -> Iterator[str]:
        """Text pieces continuing `prompt`, yielded as they are produced; `seed` makes them reproducible."""
        raise NotImplementedError


class Chat(Capability):
    """Replies to a conversation in its chat template (a language model instruction-tuned on conversations:
    `has_chat_template`; others raise a ConfigError naming the fix)."""

    ability = "chat"
    has_chat_template: bool

    def chat(self, messages: list[dict[str, str]], max_new_tokens: int = 200, temperature: float = 1.0,
             top_k: int | None = None, top_p: float | None = None, repetition_penalty: float = 1.0,
             stop: str | list[str] | None = None, seed: int | None = None) -> Iterator[str]:
        """The assistant's reply to [{"role", "content"}, ...] as text pieces, yielded as they are produced."""
        raise NotImplementedError


class TableSampler(Capability):
    """Makes rows of a table: the columns, kinds, categories and ranges of the table it was trained on."""

    ability = "sample table rows"

    def sample_rows(self, n: int, *, generator: torch.Generator | None = None) -> Any:
        """n synthetic rows as a pandas DataFrame with the training table's columns and dtypes."""
        raise NotImplementedError


class Reconstructor(Capability):
    """Maps images to a latent space and back."""

    ability = "reconstruct or interpolate images"

    def encode(self, images: torch.Tensor, labels: Any = None) -> torch.Tensor:
        """uint8 images (B, C, H, W) -> latent codes (B, D): the posterior means."""
        raise NotImplementedError

    def reconstruct(self, images: torch.Tensor, labels: Any = None) -> torch.Tensor:
        """uint8 images -> their reconstructions in [0, 1]."""
        raise NotImplementedError

    def interpolate(self, a: torch.Tensor, b: torch.Tensor, steps: int = 9, labels: Any = None) -> torch.Tensor:
        """Images along the latent line between two uint8 images, both ends included; (steps, C, H, W)."""
        raise NotImplementedError


class Translator(Capability):
    """Translates a condition image (a sketch, a low-resolution image) into an image."""

    ability = "translate images"

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of what `translate` takes."""
        raise NotImplementedError

    def make_input(self, images: torch.Tensor) -> torch.Tensor:
        """Target images (uint8, or float in [0, 1]) -> the conditions the task makes of them, in [0, 1]."""
        raise NotImplementedError

    def prepare_condition(self, conditions: torch.Tensor) -> tuple[torch.Tensor, str | None]:
        """A user's images (B, *input_shape) in [0, 1] as the conditions the model learnt, and a note saying what
        was changed (None: nothing)."""
        return conditions, None

    def translate(self, conditions: torch.Tensor) -> torch.Tensor:
        """Conditions (B, *input_shape) in [0, 1] -> images (B, C, H, W) in [0, 1]."""
        raise NotImplementedError


@dataclasses.dataclass(frozen=True)
class EditOptions:
    """How to edit: image-to-image strength, or inpainting's passes, and the sampler."""

    strength: float = 0.6
    """image-to-image: how much to change, in (0, 1]: 0.3 keeps shapes, 0.8 keeps the layout only"""
    guidance: float | None = None
    """classifier-free guidance scale (default the model's)"""
    steps: int | None = None
    """network evaluations of a full denoising (image-to-image runs strength x steps of them)"""
    sampler: str | None = None
    """ddim or ddpm (inpainting's default: ddpm), or dpm++ for image-to-image"""
    resample: int = 3
    """inpainting: passes per step (RePaint's resampling; 1 is plain replacement)"""

    def __post_init__(self):
        if not 0 < self.strength <= 1:
            raise ConfigError(f"strength = {self.strength} must be in (0, 1]", "e.g. --strength 0.6")
        if self.resample < 1:
            raise ConfigError(f"resample = {self.resample} must be at least 1", "e.g. --resample 3")


class Editor(Capability):
    """Edits given images: image-to-image, and inpainting under a mask."""

    ability = "edit images"
    edit_options: ClassVar[type[EditOptions]] = EditOptions

    def edit(self, images: torch.Tensor, *, mask: torch.Tensor | None = None, labels: Any = None,
             prompt: str | list[str] | None = None, generator: torch.Generator | None = None,
             options: EditOptions | None = None) -> torch.Tensor:
        """Images in [0, 1] (B, C, H, W) -> edited images in [0, 1]; `mask` (B or 1, 1, H, W) is 1 where pixels
        are generated (inpainting) and 0 where the input stays; without a mask, image-to-image."""
        raise NotImplementedError


class ImageLikelihood(Capability):
    """Scores the likelihood of images (a bound where exact likelihood is intractable)."""

    ability = "score the likelihood of images"

    def log_likelihood(self, images: torch.Tensor, labels: torch.Tensor | None = None, *, k: int = 200,
                       generator: torch.Generator | None = None,
                       data_generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Per-example log p(x) (nats; `log_likelihood`) and the ELBO (`elbo`) of uint8 images, each (B,)."""
        raise NotImplementedError


class TextLikelihood(Capability):
    """Scores the likelihood of text."""

    ability = "score the likelihood of text"

    def log_likelihood(self, text: str) -> dict[str, float]:
        """nats per token, bits per character and perplexity of `text`."""
        raise NotImplementedError


class Vocoder(Capability):
    """Turns log-mel spectrograms (genlab.data.spectrogram's settings) into waveforms."""

    ability = "turn spectrograms into sound"

    def vocode(self, log_mel: torch.Tensor, length: int | None = None) -> torch.Tensor:
        """Waveforms (B, samples) in (-1, 1) from log-mel spectrograms (B, n_mels, T)."""
        raise NotImplementedError


class TextToSpeech(Capability):
    """Speaks: phone sequences (the front end, genlab.data.speech.phonemes, turns text into them) into log-mel
    spectrograms, which a vocoder or Griffin-Lim turns into sound."""

    ability = "speak text"

    def synthesize(self, phones: list[list[str]], pace: float = 1.0) -> list[torch.Tensor]:
        """The log-mel spectrogram (n_mels, T) of each phone sequence; `pace` > 1 speaks slower."""
        raise NotImplementedError


class VideoGenerator(Capability):
    """Makes clips (B, T, C, H, W) in [0, 1]: from noise, or around the frames it is given (the first k: animation
    and prediction; every f-th: frame interpolation)."""

    ability = "generate video"
    sample_options: ClassVar[type[SampleOptions]] = SampleOptions

    def sample_video(self, n: int, *, labels: Any = None, generator: torch.Generator | None = None,
                     options: SampleOptions | None = None) -> torch.Tensor:
        """n clips in [0, 1], (n, T, C, H, W); `labels` as `ImageSampler.sample`'s."""
        raise NotImplementedError

    def complete(self, clips: torch.Tensor, known: torch.Tensor, *, labels: Any = None,
                 generator: torch.Generator | None = None, options: SampleOptions | None = None) -> torch.Tensor:
        """Clips (B, T, C, H, W) in [0, 1] (or uint8) whose frames where `known` (T,) or (B, T) is True are kept
        and the others made to fit them; returns full clips in [0, 1]."""
        raise NotImplementedError


class Stylizer(Capability):
    """Restyles photos after a style image in one pass (feed-forward style transfer): any photo, any style."""

    ability = "stylise images"

    def stylize(self, content: torch.Tensor, style: torch.Tensor, alpha: float = 1.0) -> torch.Tensor:
        """Content images (B, 3, H, W) in the style of `style` (one image, or one per content image), both uint8 or
        floats in [0, 1]; `alpha` in [0, 1] is how much style (0: the content kept). Floats in [0, 1] out, the
        content's size."""
        raise NotImplementedError


class AnomalyScorer(Capability):
    """Scores how unlike the training data each example is: its negative log-likelihood per dimension."""

    ability = "score anomalies"

    def anomaly_score(self, examples: Any, labels: Any = None) -> torch.Tensor:
        """Bits per dimension (pixel channel or character) of each example, (B,); higher is more anomalous.
        Images are uint8 (B, C, H, W), texts a list of strings."""
        raise NotImplementedError


CAPABILITIES: tuple[type[Capability], ...] = (ImageSampler, TextGenerator, Chat, TableSampler, Reconstructor,
                                              Translator, Editor, ImageLikelihood, TextLikelihood, AnomalyScorer,
                                              Vocoder, TextToSpeech, VideoGenerator, Stylizer)


def require(model: GenerativeModel, capability: type[Capability]) -> None:
    """A `ConfigError` naming the families that can, unless `model` has `capability`."""
    if isinstance(model, capability):
        return
    from genlab.models import families_with

    able = families_with(capability)
    listed = ", ".join(able[:-1]) + " or " + able[-1] if len(able) > 1 else "".join(able)
    raise ConfigError(f"this {model.family} model cannot {capability.ability}",
                      f"use a {listed} model" if able else "no family can yet")
