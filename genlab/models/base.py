"""The contract every family implements, and the registry that finds a family by name.

A family is one module with a frozen `Config` dataclass and a `GenerativeModel`
subclass. The engine only calls `loss(batch)`; persistence only needs `config`
and the state dict; sampling verbs are `sample(...)` for image families and
`generate(...)` for language models.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from genlab.errors import ConfigError

FAMILIES = {
    "vae": "genlab.models.vae:VAE",
    "gan": "genlab.models.gan:GAN",
    "pix2pix": "genlab.models.pix2pix:Pix2Pix",
    "diffusion": "genlab.models.diffusion:Diffusion",
    "rnn": "genlab.models.rnn:RNN",
    "gpt": "genlab.models.gpt:GPT",
}


def get_family(name: str) -> type[GenerativeModel]:
    """The model class of a family by name; an unknown name lists the known ones."""
    if name not in FAMILIES:
        raise ConfigError(f"unknown model family {name!r}", f"use one of {', '.join(FAMILIES)}")
    module, cls = FAMILIES[name].split(":")
    return getattr(importlib.import_module(module), cls)


class GenerativeModel(nn.Module):
    family: ClassVar[str]
    Config: ClassVar[type]
    # TrainConfig fields this family trains best with (the CLI and YAML still override them).
    train_defaults: ClassVar[dict[str, Any]] = {}
    # The key in metrics that validation and checkpoint selection watch.
    monitor: ClassVar[str] = "val/loss"
    # What `--data` must be: "image" or "text".
    data_kind: ClassVar[str] = "image"
    # Families with several optimisers (GANs) set this and implement `optimizers` and `train_step`.
    manual_optimization: ClassVar[bool] = False
    # Whether `sample(n, labels, generator)` makes images from nothing (not so for image translation).
    samples_images: ClassVar[bool] = True
    # What `genlab tune FAMILY` searches by default (a `--space my_space.yaml` is merged over it; see
    # genlab/tune/space.py). Keys are `model.FIELD` (a field of `Config`) or `train.FIELD` (of TrainConfig);
    # a value is a range, a list of choices, or a fixed value:
    #   "train.lr":          {"low": 1e-4, "high": 1e-2, "log": True}   float, log-uniform
    #   "model.latent_dim":  {"low": 8, "high": 64, "log": True}        int (both bounds ints)
    #   "model.hidden_dim":  {"low": 64, "high": 512, "step": 64}       int on a grid
    #   "model.widths":      {"choices": [[16, 32], [32, 64]]}          categorical (tuples as lists)
    #   "train.batch_size":  64                                         fixed for every trial
    # Search what changes the result at a fixed budget (learning rate, width, regularisation), not what
    # the data fixes (image size, classes, vocabulary). Trial 0 of every study is the default config.
    search_space: ClassVar[dict[str, Any]] = {}

    def __init__(self, config: Any):
        super().__init__()
        self.config = config

    @classmethod
    def config_for_data(cls, config: Any, data: Any) -> Any:
        """Fill the fields that come from the data (image shape, classes, vocabulary)."""
        return config

    def loss(self, batch: Any) -> dict[str, torch.Tensor]:
        """The training objective on one batch: a dict with `loss` and anything worth logging."""
        raise NotImplementedError

    @classmethod
    def make_loaders(cls, data: Any, train: Any, position: Callable[[], int]) -> tuple[Iterable, Iterable]:
        """Training and validation batches. `position()` is the number of training batches already
        consumed: the training loader must start there, so that a resumed run sees the same batches."""
        from genlab.data.loader import image_loaders

        return image_loaders(data, train.batch_size, train.seed, position, train.holdout)

    def optimizers(self, train: Any) -> list[torch.optim.Optimizer]:
        """Optional: the family's own optimisers. Manual optimisation: one per player (generator,
        discriminator). Automatic: a list of one (e.g. Muon for matrices + AdamW for the rest)."""
        raise NotImplementedError

    def train_step(self, batch: Any, step: Callable[[torch.Tensor, int], None]) -> dict[str, torch.Tensor]:
        """Manual optimisation only: compute each loss and call `step(loss, optimizer_index)` to apply it.
        The engine's `step` zeroes gradients, back-propagates, clips, steps, and refuses non-finite losses."""
        raise NotImplementedError

    @torch.no_grad()
    def validation_metrics(self, batch: Any) -> dict[str, torch.Tensor]:
        return self.loss(batch)

    def callbacks(self, data: Any, train: Any) -> list[Any]:
        """Optional: Lightning callbacks the family adds to its training run (a GAN's collapse monitor,
        translation previews); they may use the data, which the model itself never holds."""
        return []

    def preview(self, generator: torch.Generator) -> torch.Tensor | str | None:
        """Something to look at during training (a uint8 image grid batch, or text); None for nothing."""
        return None

    def report_figures(self, data: Any, generator: torch.Generator) -> list[tuple[torch.Tensor, int, str]]:
        """Family-specific pictures for report.html: (images in [0, 1], images per row, caption) each."""
        return []

    def resolve_labels(self, labels: Any, n: int) -> torch.Tensor | None:
        """Class indices from ints or class names (one for all n, or one each) for a model with
        `config.condition` "class" (or "text", whose captions come from class names); None for an
        unconditional model. No labels: cycle through the classes."""
        config = self.config
        if getattr(config, "condition", "none") not in ("class", "text"):
            if labels is not None:
                raise ConfigError(f"this {self.family} model is unconditional and takes no labels", "drop --label")
            return None
        if labels is None:
            return torch.arange(n) % config.num_classes
        if isinstance(labels, torch.Tensor):
            labels = labels.tolist()
        if isinstance(labels, (str, int)):
            labels = [labels] * n
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

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def save_pretrained(self, folder: str | Path, card: dict[str, Any] | None = None) -> Path:
        """Write config.json, model.safetensors and a README.md model card into `folder`."""
        from genlab.persist import save_pretrained

        return save_pretrained(self, folder, card)

    # Families with files besides the weights (tokenizers, text-encoder references) override these.
    def save_assets(self, folder: Path) -> None:
        pass

    def load_assets(self, folder: Path) -> None:
        pass

    def extra_repr(self) -> str:
        fields = ", ".join(f"{f.name}={getattr(self.config, f.name)!r}" for f in dataclasses.fields(self.config))
        return f"{self.family}: {fields}"
