"""Save -> load gives identical outputs; corrupt, truncated or pickled files are refused, never executed."""

from __future__ import annotations

import json
import os
import pickle

import pytest
import torch

import genlab
from genlab.config import from_dict
from genlab.errors import UnsafeFileError
from genlab.files import load_torch_file as load_checkpoint
from genlab.models import FAMILIES, get_family
from genlab.models.base import (
    ImageSampler,
    Stylizer,
    TableSampler,
    TextGenerator,
    TextToSpeech,
    VideoGenerator,
    Vocoder,
)

TINY_CONFIGS = {
    "vae": {"widths": [4, 8], "hidden_dim": 16, "latent_dim": 3, "image_size": [8, 8]},
    "gan": {
        "g_widths": [8, 4],
        "d_widths": [4, 8],
        "latent_dim": 4,
        "image_size": [8, 8],
        "condition": "class",
        "num_classes": 3,
        "class_names": ["a", "b", "c"],
    },
    "pix2pix": {"widths": [4, 8], "d_widths": [4, 8], "image_size": [8, 8], "task": "superres", "scale": 2},
    "gpt": {"chars": "abc \n", "vocab_size": 6, "block_size": 8, "n_layer": 2, "n_head": 2, "n_embd": 16},
    "rnn": {"chars": "abc \n", "vocab_size": 6, "block_size": 8, "n_layer": 2, "n_embd": 8, "hidden": 16},
    "diffusion": {
        "widths": [8, 16],
        "blocks": [1, 1],
        "attention": [False, True],
        "image_size": [8, 8],
        "condition": "class",
        "num_classes": 3,
        "class_names": ["a", "b", "c"],
        "sample_steps": 4,
    },
    "video": {"widths": [32, 32], "blocks": [1, 1], "frames": 3, "image_size": [8, 8], "patch": 2,
              "condition": "class", "num_classes": 3, "class_names": ["a", "b", "c"], "sample_steps": 2},
    "tabular": {"hidden": 8, "latent_dim": 2, "layout": json.dumps({"columns": [
        {"name": "age", "kind": "numeric", "dtype": "int64", "integer": True, "minimum": 18.0, "maximum": 80.0,
         "has_missing": False, "modes": {"means": [30.0, 60.0], "stds": [5.0, 8.0], "weights": [0.6, 0.4]}},
        {"name": "job", "kind": "categorical", "dtype": "object", "categories": ["a", "b"], "counts": [5, 3],
         "missing": 1, "has_missing": True}], "columns_order": ["age", "job"]})},
    "tts": {"width": 32, "heads": 2, "encoder_layers": 1, "decoder_layers": 1, "ffn": 64,
            "phones": ["<pad>", "pau", "f", "ao"],
            "sound": json.dumps({"sample_rate": 16000, "n_fft": 1024, "hop": 256, "n_mels": 80, "f_min": 0.0,
                                 "f_max": None, "floor": 1e-5, "samples": 8000, "log_max": 4.0})},
    "style": {"widths": [8, 8, 4], "short_side": 32, "crop": 16},
    "vocoder": {"width": 16, "layers": 1, "channels": 16, "kernels": [3], "dilations": [1], "periods": [2], "scales": 1,
                "segment": 4096,
                "sound": json.dumps({"sample_rate": 16000, "n_fft": 1024, "hop": 256, "n_mels": 80, "f_min": 0.0,
                                     "f_max": None, "floor": 1e-5, "samples": 8000, "log_max": 4.0})},
}


class Payload:
    """Unpickling this runs os.system: a loader that unpickles would create the marker file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _model(family: str):
    torch.manual_seed(0)
    cls = get_family(family)
    return cls(from_dict(cls.Config, TINY_CONFIGS[family]))


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_save_load_identical_outputs(family, tmp_path):
    assert family in TINY_CONFIGS, f"add a tiny config for the {family} family"
    model = _model(family).eval()
    model.save_pretrained(tmp_path / "m")
    loaded = genlab.load(tmp_path / "m")
    assert type(loaded) is type(model) and loaded.config == model.config
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name
    if isinstance(model, TextGenerator):  # language models: the same logits, and the same sampled text
        ids = torch.randint(0, model.config.vocab_size, (2, 8), generator=torch.Generator().manual_seed(1))
        assert torch.equal(model.logits(ids), loaded.logits(ids))
        out_a = "".join(model.generate("ab", max_new_tokens=12, seed=1))
        out_b = "".join(loaded.generate("ab", max_new_tokens=12, seed=1))
        assert len(out_a) == 12
    elif isinstance(model, TableSampler):
        out_a = model.sample_rows(6, generator=torch.Generator().manual_seed(1)).to_csv()
        out_b = loaded.sample_rows(6, generator=torch.Generator().manual_seed(1)).to_csv()
    elif isinstance(model, ImageSampler):
        out_a = model.sample(6, generator=torch.Generator().manual_seed(1))
        out_b = loaded.sample(6, generator=torch.Generator().manual_seed(1))
    elif isinstance(model, VideoGenerator):
        out_a = model.sample_video(2, generator=torch.Generator().manual_seed(1))
        out_b = loaded.sample_video(2, generator=torch.Generator().manual_seed(1))
    elif isinstance(model, TextToSpeech):  # the same phones give the same spectrogram
        out_a, out_b = (m.synthesize([["pau", "f", "ao", "pau"]])[0] for m in (model, loaded))
    elif isinstance(model, Vocoder):  # the same spectrograms give the same sound
        log_mel = torch.randn(2, 80, 6, generator=torch.Generator().manual_seed(1)) - 5
        out_a, out_b = model.vocode(log_mel), loaded.vocode(log_mel)
    elif isinstance(model, Stylizer):  # the same photos and style give the same images (the encoder: the package's)
        content, style = torch.rand(2, 3, 24, 20, generator=torch.Generator().manual_seed(1)), torch.rand(1, 3, 16, 16)
        out_a, out_b = model.stylize(content, style, alpha=0.8), loaded.stylize(content, style, alpha=0.8)
    else:  # image translation: the same inputs give the same outputs
        inputs = torch.rand(6, *model.input_shape, generator=torch.Generator().manual_seed(1))
        out_a, out_b = model.translate(inputs), loaded.translate(inputs)
    assert out_a == out_b if isinstance(out_a, str) else torch.equal(out_a, out_b)
    card = (tmp_path / "m" / "README.md").read_text()
    assert family in card and "genlab.load" in card


def test_truncated_weights_are_refused(tmp_path):
    _model("vae").save_pretrained(tmp_path / "m")
    weights = tmp_path / "m" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(UnsafeFileError, match="corrupt or truncated"):
        genlab.load(tmp_path / "m")


def test_tampered_header_is_refused(tmp_path):
    _model("vae").save_pretrained(tmp_path / "m")
    weights = tmp_path / "m" / "model.safetensors"
    raw = bytearray(weights.read_bytes())
    raw[0:8] = (10**12).to_bytes(8, "little")  # a header length far past the end of the file
    weights.write_bytes(bytes(raw))
    with pytest.raises(UnsafeFileError):
        genlab.load(tmp_path / "m")


def test_pickle_as_weights_is_refused_and_not_run(tmp_path):
    _model("vae").save_pretrained(tmp_path / "m")
    marker = tmp_path / "pwned"
    (tmp_path / "m" / "model.safetensors").write_bytes(pickle.dumps(Payload(marker)))
    with pytest.raises(UnsafeFileError, match="never unpickles"):
        genlab.load(tmp_path / "m")
    assert not marker.exists()


def test_pickle_as_checkpoint_is_refused_and_not_run(tmp_path):
    marker = tmp_path / "pwned"
    ckpt = tmp_path / "last.ckpt"
    torch.save({"state_dict": {}, "evil": Payload(marker)}, ckpt)  # torch.save pickles the payload
    with pytest.raises(UnsafeFileError, match="refusing to load checkpoint"):
        load_checkpoint(ckpt)
    assert not marker.exists()


def test_config_with_unknown_field_is_refused(tmp_path):
    _model("vae").save_pretrained(tmp_path / "m")
    path = tmp_path / "m" / "config.json"
    meta = json.loads(path.read_text())
    meta["config"]["not_a_field"] = 1
    path.write_text(json.dumps(meta))
    with pytest.raises(UnsafeFileError, match="not_a_field"):
        genlab.load(tmp_path / "m")
