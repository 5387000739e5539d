"""Model folders: `save_pretrained` writes them and `load` rebuilds any family from one.

A model folder holds `config.json` (family + config), `model.safetensors` and a
`README.md` model card, plus family assets (a tokenizer, a text-encoder
reference). Nothing here unpickles: weights load through safetensors, whose
header is checked before any tensor is read, and training checkpoints load with
`torch.load(weights_only=True)`.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_model, save_model

from genlab.config import from_dict, to_dict
from genlab.errors import ConfigError, GenlabError, UnsafeFileError
from genlab.models.base import GenerativeModel, get_family

CONFIG_FILE, WEIGHTS_FILE, CARD_FILE = "config.json", "model.safetensors", "README.md"
FORMAT_VERSION = 1


def save_pretrained(model: GenerativeModel, folder: str | Path, card: dict[str, Any] | None = None) -> Path:
    """Write the folder; each file goes to a temporary name first and is renamed into place."""
    from genlab import __version__

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".model.", suffix=".tmp")
    os.close(fd)
    try:
        save_model(model, tmp, metadata={"family": model.family, "format": str(FORMAT_VERSION)})
        os.replace(tmp, folder / WEIGHTS_FILE)
    finally:
        Path(tmp).unlink(missing_ok=True)
    config = {"family": model.family, "format": FORMAT_VERSION, "genlab_version": __version__,
              "config": to_dict(model.config)}
    _atomic_text(folder / CONFIG_FILE, json.dumps(config, indent=2))
    _atomic_text(folder / CARD_FILE, model_card(model, card or {}))
    model.save_assets(folder)
    return folder


def _atomic_text(path: Path, text: str) -> None:
    from genlab.data.base import atomic_write_bytes

    atomic_write_bytes(path, text.encode())


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


def _check_weights_file(path: Path) -> None:
    """Refuse files that are not safetensors before handing them to the parser."""
    with path.open("rb") as f:
        head = f.read(9)
    # safetensors: an 8-byte little-endian header length, then the JSON header; a length whose low byte is
    # 0x80 looks like a pickle's first byte, so the JSON brace decides
    if (head[:2] == b"PK" or head[:1] == b"\x80") and head[8:9] != b"{":
        raise UnsafeFileError(f"{path} is a pickle / torch.save file, not safetensors; genlab never unpickles weights",
                              "export the model with genlab's save_pretrained (or safetensors.torch.save_file)")
    if len(head) < 8:
        raise UnsafeFileError(f"{path} is truncated ({len(head)} bytes)", "re-export or re-download the model")


def load(folder: str | Path, device: str | torch.device = "cpu") -> GenerativeModel:
    """Rebuild a model of any family from a folder written by `save_pretrained`."""
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
    cls = get_family(family)
    try:
        config = from_dict(cls.Config, config_dict)
    except (ConfigError, TypeError) as error:
        raise UnsafeFileError(f"{folder / CONFIG_FILE} does not describe a valid {family} config: {error}",
                              "re-export the model with the genlab version that trained it") from None
    model = cls(config)
    weights = folder / WEIGHTS_FILE
    if not weights.exists():
        raise GenlabError(f"{folder} has no {WEIGHTS_FILE}", "re-export the model with save_pretrained")
    _check_weights_file(weights)
    try:
        missing, unexpected = load_model(model, weights, strict=False, device=str(device))
    except (SafetensorError, OSError, ValueError, RuntimeError) as error:
        raise UnsafeFileError(f"{weights} is corrupt or truncated: {error}",
                              "re-export or re-download the model; do not edit the file") from None
    if missing or unexpected:
        raise UnsafeFileError(f"{weights} does not match the {family} config: missing {sorted(missing)[:5]}, "
                              f"unexpected {sorted(unexpected)[:5]}", "use the config.json that came with the weights")
    model.load_assets(folder)
    return model.to(device).eval()


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """A training checkpoint, loaded without running any code it may contain."""
    path = Path(path)
    if not path.exists():
        raise GenlabError(f"checkpoint {path} does not exist", "resume from a run folder that has checkpoints/last.ckpt")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any failure means the file is not a checkpoint we trust
        raise UnsafeFileError(f"refusing to load checkpoint {path}: {str(error).splitlines()[0][:200]}",
                              "it is corrupt or holds arbitrary Python objects; resume from a checkpoint genlab wrote") from None
