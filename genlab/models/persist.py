"""Model folders: `save_pretrained` writes them and `load` rebuilds any family from one.

A model folder holds `config.json` (family + config), `model.safetensors` and a
`README.md` model card, plus family assets (a tokenizer, a text-encoder
reference). Nothing here unpickles: weights load through safetensors, whose
header is checked before any tensor is read, and training checkpoints load with
`torch.load(weights_only=True)`.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_model, save_model

from genlab.config import from_dict, to_dict
from genlab.errors import ConfigError, GenlabError, UnsafeFileError
from genlab.files import atomic_path, atomic_write, refuse_pickle
from genlab.models import get_family
from genlab.models.base import GenerativeModel

CONFIG_FILE, WEIGHTS_FILE, CARD_FILE = "config.json", "model.safetensors", "README.md"
FORMAT_VERSION = 1


def save_pretrained(model: GenerativeModel, folder: str | Path, card: dict[str, Any] | None = None) -> Path:
    """Write the folder; each file goes to a temporary name first and is renamed into place."""
    from genlab import __version__

    folder = Path(folder)
    with atomic_path(folder / WEIGHTS_FILE) as tmp:
        save_model(model, str(tmp), metadata={"family": model.family, "format": str(FORMAT_VERSION)})
    config = {"family": model.family, "format": FORMAT_VERSION, "genlab_version": __version__,
              "config": to_dict(model.config)}
    atomic_write(folder / CONFIG_FILE, json.dumps(config, indent=2))
    atomic_write(folder / CARD_FILE, model_card(model, card or {}))
    model.save_assets(folder)
    return folder


def model_card(model: GenerativeModel, card: dict[str, Any]) -> str:
    lines = [f"# genlab {model.family} model", "",
             f"- family: `{model.family}`", f"- parameters: {model.num_parameters():,}",
             f"- written: {time.strftime('%Y-%m-%d %H:%M:%S')}"]
    lines += [f"- {key}: {value}" for key, value in card.items() if not isinstance(value, dict)]
    for key, value in card.items():
        if isinstance(value, dict):
            lines += ["", f"## {key}", ""] + [f"- {k}: {v}" for k, v in value.items()]
    lines += ["", "## Config", "", "```json", json.dumps(to_dict(model.config), indent=2), "```",
              "", "## Load", "", "```python", "import genlab", "", f'model = genlab.load("{"path/to/this/folder"}")',
              "```", ""]
    return "\n".join(lines)


def load(folder: str | Path, device: str | torch.device = "cpu") -> GenerativeModel:
    """Rebuild a model of any family from a folder written by `save_pretrained` (or a run folder: its model/)."""
    folder = Path(folder)
    if (folder / "model" / CONFIG_FILE).exists() and not (folder / CONFIG_FILE).exists():
        folder = folder / "model"  # a run folder: use its exported model
    if not (folder / CONFIG_FILE).exists():
        raise GenlabError(f"{folder} has no {CONFIG_FILE}: it is not a genlab model folder",
                          "pass a folder written by save_pretrained, such as runs/NAME/model")
    try:
        meta = json.loads((folder / CONFIG_FILE).read_text())
        family = meta["family"]
        config_dict = meta["config"]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as error:
        raise UnsafeFileError(f"{folder / CONFIG_FILE} is not a valid genlab config ({error})",
                              "re-export the model with save_pretrained") from None
    written_by = meta.get("genlab_version", "an unknown version")
    if isinstance(meta.get("format"), int) and meta["format"] > FORMAT_VERSION:
        raise UnsafeFileError(
            f"{folder} was written by genlab {written_by} in model format {meta['format']}; this "
            f"genlab reads format {FORMAT_VERSION} and older",
            f"upgrade genlab to {written_by} or later",
        )
    try:
        cls = get_family(family)
        # a field added since with a new default: the older folder keeps the behaviour it was saved with
        config = from_dict(cls.Config, {**getattr(cls.Config, "LEGACY_DEFAULTS", {}), **config_dict})
    except (ConfigError, TypeError) as error:
        raise UnsafeFileError(f"{folder / CONFIG_FILE} (written by genlab {written_by}) does not describe a valid "
                              f"{family} config for this genlab: {error}",
                              f"load it with genlab {written_by}, or re-export it from its run") from None
    model = cls(config)
    weights = folder / WEIGHTS_FILE
    if not weights.exists():
        raise GenlabError(f"{folder} has no {WEIGHTS_FILE}", "re-export the model with save_pretrained")
    refuse_pickle(weights)
    try:
        missing, unexpected = load_model(model, weights, strict=False, device=str(device))
    except (SafetensorError, OSError, ValueError, RuntimeError) as error:
        raise UnsafeFileError(f"{weights} is corrupt or truncated: {error}",
                              "re-export or re-download the model; do not edit the file") from None
    missing = [name for name in missing if name not in getattr(model, "OPTIONAL_TENSORS", ())]  # older folders
    if missing or unexpected:
        raise UnsafeFileError(f"{weights} does not match the {family} config: missing {sorted(missing)[:5]}, "
                              f"unexpected {sorted(unexpected)[:5]}", "use the config.json that came with the weights")
    model.load_assets(folder)
    return model.to(device).eval()
