"""Model families: networks, their math and their sampling. Each family lives in one module, imported on demand.

`FAMILIES` names every family with a one-line summary (read without importing torch, for the
CLI's help); `get_family(name)` imports the class. The contract they implement is in `base.py`.
"""

from __future__ import annotations

import importlib
from typing import NamedTuple


class Family(NamedTuple):
    path: str  # module:class
    summary: str


FAMILIES: dict[str, Family] = {
    "vae": Family(
        "genlab.models.vae:VAE",
        "variational autoencoder: samples, reconstructions, likelihood, anomaly scores",
    ),
    "gan": Family("genlab.models.gan:GAN", "GAN: sharp samples, class-conditional"),
    "pix2pix": Family(
        "genlab.models.pix2pix:Pix2Pix", "image-to-image translation: sketches to images, super-resolution"
    ),
    "diffusion": Family(
        "genlab.models.diffusion:Diffusion", "denoising diffusion: samples, text-to-image, inpainting"
    ),
    "rnn": Family("genlab.models.lm.rnn:RNN", "LSTM language model: text from a prompt"),
    "gpt": Family("genlab.models.lm.gpt:GPT", "transformer language model: text, pre-train then fine-tune"),
    "tabular": Family("genlab.models.tabular.model:Tabular", "synthetic rows of a table (TVAE)"),
    "vocoder": Family("genlab.models.vocoder:HiFiGAN",
                      "learned vocoder: mel spectrograms to sound (Vocos or HiFi-GAN generator)"),
    "video": Family("genlab.models.video:VideoDiffusion",
                    "video diffusion: clips from noise or a class, animation, next frames, frame interpolation"),
    "tts": Family("genlab.models.tts:FastSpeech", "text-to-speech: phones to mel spectrograms (FastSpeech)"),
    "style": Family("genlab.models.style:AdaINStylizer",
                    "feed-forward style transfer (AdaIN on EfficientNet-Lite0): any photo in any style, one pass"),
}


def get_family(name: str):
    """The model class of a family by name; an unknown name lists the known ones."""
    from genlab.errors import ConfigError

    if name not in FAMILIES:
        raise ConfigError(f"unknown model family {name!r}", f"use one of {', '.join(FAMILIES)}")
    module, cls = FAMILIES[name].path.split(":")
    return getattr(importlib.import_module(module), cls)


def families_with(capability: type) -> list[str]:
    """The families whose models have `capability` (a class of genlab.models.base)."""
    return [name for name in FAMILIES if issubclass(get_family(name), capability)]


__all__ = ["FAMILIES", "Family", "families_with", "get_family"]
