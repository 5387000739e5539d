"""Standard Inception-v3 FID, KID and Inception Score, for users who bring the weights file.

genlab never downloads weights from a hub. With the FID Inception weights
(`pt_inception-2015-12-05-6726825d.pth`, the TF-FID port torchmetrics and torch-fidelity
use, or the same tensors saved as .safetensors), `genlab eval --inception-weights PATH`
extracts pool3 features (2048-d) and unbiased logits once through torchmetrics'
`NoTrainInceptionV3` and computes the three scores with genlab's own tested formulas.

The user's file is read with `torch.load(weights_only=True)` (tensors only: a pickle
carrying code is refused) or safetensors; torchmetrics then reads a copy genlab wrote
itself, since torch-fidelity's own loader would unpickle anything.
"""

from __future__ import annotations

import pickle
import tempfile
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from genlab.errors import GenlabError, UnsafeFileError
from genlab.metrics.images import classifier_score, fd_genlab, kid_genlab

# torchmetrics' Inception comes from torch-fidelity, which imports torchvision at start-up; a
# torchvision that does not match the installed torch breaks the import (pip's torchvision
# pulls a different torch), so it is an opt-in, installed by the user beside a matching torch.
INSTALL_HINT = "pip install torch-fidelity torchvision, with the torchvision release that matches your torch"


def load_inception_state(path: str | Path) -> dict[str, torch.Tensor]:
    """The weights in a .pth or .safetensors file as tensors; anything else is refused, nothing is executed."""
    path = Path(path)
    if not path.is_file():
        raise GenlabError(
            f"Inception weights file {path} does not exist",
            "pass the path of pt_inception-2015-12-05-6726825d.pth (the FID weights) with --inception-weights",
        )
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(path)
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise UnsafeFileError(
            f"{path} holds more than tensors and was not loaded ({str(error).splitlines()[0]})",
            "use the original FID Inception weights file, or its tensors saved as .safetensors",
        ) from error
    except Exception as error:  # truncated zip, bad header, ...
        raise UnsafeFileError(
            f"{path} is not a readable weights file ({error})", "download the FID Inception weights again"
        ) from error
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UnsafeFileError(f"{path} is not a state dict of tensors", "use the FID Inception weights file")
    return state


def inception_extractor(path: str | Path):
    """torchmetrics' NoTrainInceptionV3 with the weights in `path`, giving pool3 features and unbiased logits."""
    try:
        from torchmetrics.image.fid import NoTrainInceptionV3
    except ImportError as error:
        raise GenlabError(
            f"standard Inception metrics need torch-fidelity and torchvision ({error})", INSTALL_HINT
        ) from error
    state = load_inception_state(path)
    with tempfile.TemporaryDirectory() as folder:
        safe_copy = Path(folder) / "inception.pth"
        torch.save(state, safe_copy)  # only tensors, written by us: safe for torch-fidelity's loader
        try:
            return NoTrainInceptionV3("inception-v3-compat", ["2048", "logits_unbiased"], str(safe_copy))
        except ModuleNotFoundError as error:
            raise GenlabError("standard Inception metrics need torch-fidelity",
                              INSTALL_HINT) from error
        except RuntimeError as error:  # missing or unexpected keys, wrong shapes
            raise GenlabError(f"{path} does not hold Inception-v3 FID weights ({str(error)[:200]})",
                              "use pt_inception-2015-12-05-6726825d.pth") from error


@torch.no_grad()
def inception_features(extractor, images: np.ndarray | torch.Tensor, batch_size: int = 50,
                       progress: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Pool3 features (N, 2048) and class probabilities (N, 1008) of uint8 (N, C, H, W) images; gray becomes RGB."""
    images = torch.as_tensor(images)
    if images.dtype != torch.uint8:
        images = (images.clamp(0, 1) * 255).round().to(torch.uint8)
    features, probs = [], []
    for i in tqdm(range(0, len(images), batch_size), desc="Inception features", disable=not progress, leave=False):
        x = images[i : i + batch_size]
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        pool, logits = extractor(x)
        features.append(pool.float())
        probs.append(logits.float().softmax(dim=1))
    return torch.cat(features), torch.cat(probs)


def inception_metrics(real_images, fake_images, weights: str | Path, progress: bool = True) -> dict[str, float]:
    """fid_inception, kid_inception (mean of 100 subsets), is_inception of generated against real uint8 images."""
    extractor = inception_extractor(weights)
    real_features, _ = inception_features(extractor, real_images, progress=progress)
    fake_features, fake_probs = inception_features(extractor, fake_images, progress=progress)
    kid, kid_std = kid_genlab(real_features, fake_features)
    return {"fid_inception": fd_genlab(real_features, fake_features), "kid_inception": kid,
            "kid_inception_std": kid_std, "is_inception": classifier_score(fake_probs)}
