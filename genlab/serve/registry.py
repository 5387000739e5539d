"""The served models: loaded once at start-up, what each can do, and the work a request runs on a worker thread.

A model's capabilities are the ones its family declares (genlab.models.base), never a list of
families: a `TextGenerator` serves completions; an `ImageSampler` makes images, with the options its
`sample_options` declare (steps, guidance, sampler, temperature); a `Translator` (pix2pix) or an
`Editor` (diffusion: image-to-image and inpainting) edits images; a `Stylizer` (the `style` family) restyles a
photo after a style image, both uploaded to /v1/images/edits; a `VideoGenerator` makes video jobs
(genlab.serve.videos).
"""

from __future__ import annotations

import dataclasses
import io
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

from genlab.errors import ConfigError, GenlabError
from genlab.models.base import (
    Editor,
    ImageSampler,
    Stylizer,
    TextGenerator,
    TextToSpeech,
    Translator,
    VideoGenerator,
    Vocoder,
)
from genlab.serve.limits import Job

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
SAMPLE_OPTIONS = ("temperature", "steps", "guidance", "sampler")  # the sampling options the API exposes


class RequestError(GenlabError):
    """A request the model cannot serve as asked (answered with 400, or `status`)."""

    def __init__(self, problem: str, fix: str | None = None, param: str | None = None, status: int = 400):
        super().__init__(problem, fix)
        self.param, self.status = param, status


@dataclasses.dataclass
class Served:
    name: str
    path: str
    model: Any
    created: int

    @property
    def family(self) -> str:
        return self.model.family

    @property
    def kind(self) -> str:
        if isinstance(self.model, TextGenerator):
            return "text"
        if isinstance(self.model, VideoGenerator):
            return "video"
        return "audio" if isinstance(self.model, (TextToSpeech, Vocoder)) else "image"

    @property
    def sound(self) -> str:
        """An image model of sound's spectrogram settings and clip length (genlab.data.spectrogram.sound_config), or
        "" for a model of images."""
        return getattr(self.model.config, "sound", "") if self.kind == "image" else ""

    @property
    def conditioning(self) -> str:
        """none, class or text: what steers an image model's samples and edits."""
        return self.model.config.condition if isinstance(self.model, (ImageSampler, Editor, VideoGenerator)) else "none"

    @property
    def sample_options(self) -> set[str]:
        if not isinstance(self.model, (ImageSampler, VideoGenerator)):
            return set()
        declared = {f.name for f in dataclasses.fields(self.model.sample_options)} & set(SAMPLE_OPTIONS)
        return declared | ({"prompt"} if self.conditioning == "text" else set())

    @property
    def edit_modes(self) -> list[str]:
        if isinstance(self.model, Translator):
            return ["translation"]
        if isinstance(self.model, Editor):
            return ["image-to-image", "inpainting"]
        if isinstance(self.model, Stylizer):
            return ["style"]
        return []

    @property
    def capabilities(self) -> list[str]:
        if self.kind == "text":
            return ["completions"] + (["chat.completions"] if self.model.has_chat_template else [])
        if self.kind == "audio":  # a vocoder is a voice of /v1/audio/speech, not an endpoint of its own
            return ["audio.speech"] if isinstance(self.model, TextToSpeech) else ["voice"]
        if self.kind == "video":
            return ["videos"]
        can = ["images.generations"] if isinstance(self.model, ImageSampler) else []
        return can + (["images.edits"] if self.edit_modes else [])

    def card(self) -> dict[str, Any]:
        config = self.model.config
        options = (["temperature", "top_p", "top_k", "repetition_penalty", "stop", "seed"] if self.kind == "text"
                   else ["voice", "speed"] if self.kind == "audio"
                   else sorted(self.sample_options | {"seed", "seconds", "size", "input_reference"})
                   if self.kind == "video"
                   else sorted(self.sample_options | {"seed"} | ({"voice"} if self.sound else set())))
        sound = None
        if self.sound:
            from genlab.data.spectrogram import read_sound_config

            settings, samples = read_sound_config(self.sound)
            sound = {"sample_rate": settings.sample_rate, "seconds": samples / settings.sample_rate}
        if "style" in self.edit_modes:  # a pure function of its two images: no seed, no mask
            options = ["strength"]
        elif "images.edits" in self.capabilities and "translation" not in self.edit_modes:
            options = sorted(set(options) | {"strength", "mask"})
        # a style model takes photos of any size (returned at their own) and has no image_size
        shaped = self.kind in ("image", "video") and "style" not in self.edit_modes
        return {"id": self.name, "created": self.created, "family": self.family, "kind": self.kind,
                "capabilities": self.capabilities, "edit_modes": self.edit_modes, "conditioning": self.conditioning,
                "classes": list(config.class_names) if self.conditioning == "class" else [],
                "options": options, "sound": sound,
                "image_size": list(config.image_size) if shaped else None,
                "channels": config.channels if shaped else 3 if "style" in self.edit_modes else None,
                "style": {"short_side": config.short_side} if "style" in self.edit_modes else None,
                "video": {"frames": config.frames, "fps": config.fps, "seconds": config.frames / config.fps}
                if self.kind == "video" else None,
                "parameters": self.model.num_parameters()}


def parse_spec(spec: str) -> tuple[str, str]:
    """`runs/gpt` -> ("gpt", "runs/gpt"); `name=path` names it; a run's `model/` folder takes the run's name."""
    name, eq, path = spec.partition("=")
    if not eq or not NAME.match(name):
        name, path = "", spec
    folder = Path(path)
    if not name:
        name = folder.resolve().parent.name if folder.name == "model" else folder.resolve().name
    if not NAME.match(name):
        raise ConfigError(f"cannot use {name!r} (from {spec}) as a model name",
                          "name it: genlab serve NAME=PATH, with letters, digits, '.', '_' or '-'")
    return name, path


def load_models(specs: list[str]) -> dict[str, Served]:
    """Load every model once; two models of one name are an error naming the fix."""
    from genlab import load

    if not specs:
        raise ConfigError("genlab serve needs at least one model", "genlab serve runs/NAME [NAME=runs/OTHER ...]")
    served: dict[str, Served] = {}
    for spec in specs:
        name, path = parse_spec(spec)
        if name in served:
            raise ConfigError(f"two models are named {name!r} ({served[name].path} and {path})",
                              f"name them apart: genlab serve {name}-a={served[name].path} {name}-b={path}")
        if not Path(path).exists():
            raise ConfigError(f"model folder {path} does not exist", "pass a run folder (runs/NAME) or a model folder")
        model = load(path).eval()
        served[name] = Served(name, path, model, int(Path(path).stat().st_mtime))
    return served


# -- text -----------------------------------------------------------------------------------------

def prompt_of(model: Any, options: dict[str, Any]) -> tuple[list[int], list[int], Callable]:
    """A text request's prompt ids, the ids that end a reply, and the decoder of its ids into text; its sampling
    options checked. A chat completion is the conversation in the model's template, ending at its end token."""
    from genlab.data.tokenizers import StreamDecoder
    from genlab.models.lm.generation import check_options

    o = options
    check_options(o["max_tokens"], o["temperature"], o["top_k"], None if o["top_p"] >= 1 else o["top_p"],
                  o["repetition_penalty"])
    if "messages" in o:
        from genlab.models.lm.chat import ReplyDecoder, prompt_ids

        chat = model.require_chat()
        return prompt_ids(chat, o["messages"], model.context_size, o["max_tokens"]), [chat.end_id], ReplyDecoder
    return (model.tokenizer.encode(o["prompt"]) if o["prompt"] else model.start_ids()), [], StreamDecoder


def complete(job: Job, model: Any, options: dict[str, Any], emit: Callable[[str, int, Any], None]) -> dict[str, int]:
    """Run on a worker: `n` completions of one prompt, token by token, with `job.check()` between tokens.

    Calls emit("text", index, piece) as text is decided and emit("finish", index, reason) at the end of each;
    returns the token counts. Built from the generation loop's parts (not `model.generate`) so that it can count
    tokens, tell a stop string from the token limit, and stop at once when the client leaves.
    """
    from genlab.models.lm.generation import StopMatcher, generate_ids

    o = options
    top_p = None if o["top_p"] >= 1 else o["top_p"]
    ids, end, decoder_of = prompt_of(model, o)
    tokenizer = model.tokenizer
    device = next(model.parameters()).device
    total = 0
    for index in range(o["n"]):
        generator = torch.Generator(device=device).manual_seed(o["seed"] + index)
        matcher, decoder = StopMatcher(o["stop"]), decoder_of(tokenizer)
        reason = "length"
        tokens = generate_ids(model, ids, o["max_tokens"], o["temperature"], o["top_k"], top_p,
                              o["repetition_penalty"], generator, end=end)
        made = 0
        try:
            for token in tokens:
                made += 1
                job.check()
                total += 1
                text = matcher.feed(decoder.push(token))
                if text:
                    emit("text", index, text)
                if matcher.done:
                    reason = "stop"
                    break
        finally:
            tokens.close()
        if end and made < o["max_tokens"] and not matcher.done:
            reason = "stop"  # the model wrote its end token
        rest = "" if matcher.done else matcher.flush()
        if rest:
            emit("text", index, rest)
        emit("finish", index, reason)
    return {"prompt_tokens": len(ids), "completion_tokens": total, "total_tokens": len(ids) * o["n"] + total}


# -- images ---------------------------------------------------------------------------------------

def to_png(image: torch.Tensor) -> bytes:
    """A float image in [0, 1], (C, H, W), as PNG bytes (grey or RGB)."""
    array = (image.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
    pil = Image.fromarray(array[0] if array.shape[0] == 1 else array.transpose(1, 2, 0))
    buffer = io.BytesIO()
    pil.save(buffer, format="PNG")
    return buffer.getvalue()


def read_upload(data: bytes, what: str, max_pixels: int, param: str | None = None) -> Image.Image:
    """Decode an uploaded image, refusing one too large to decode safely (413) or not an image (422); the errors
    name `param` (default `what`), the request field it came in."""
    param = param or what
    if not data:
        raise RequestError(f"the {what} upload is empty", "attach a PNG or JPEG file", param=param, status=422)
    try:
        image = Image.open(io.BytesIO(data))
        width, height = image.size
        if width * height > max_pixels:
            raise RequestError(f"the {what} is {width}x{height} pixels, more than this server's limit of "
                               f"{max_pixels:,}", "send a smaller image (it is resized to the model's size anyway)",
                               param=param, status=413)
        image.load()
    except RequestError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError, SyntaxError) as error:
        raise RequestError(f"the {what} is not a readable image ({type(error).__name__})", "send a PNG or JPEG file",
                           param=param, status=422) from None
    return image


def image_tensor(image: Image.Image, channels: int, size: tuple[int, int]) -> torch.Tensor:
    """A PIL image -> float (1, C, H, W) in [0, 1] at the model's size (bicubic)."""
    image = image.convert("L" if channels == 1 else "RGB")
    if image.size != (size[1], size[0]):
        image = image.resize((size[1], size[0]), Image.Resampling.BICUBIC)
    array = np.asarray(image, dtype=np.float32) / 255
    array = array[None] if array.ndim == 2 else array.transpose(2, 0, 1)
    return torch.from_numpy(np.ascontiguousarray(array))[None]


def mask_tensor(image: Image.Image, size: tuple[int, int]) -> torch.Tensor:
    """A mask -> float (1, 1, H, W), 1 = regenerate. OpenAI's convention when the mask has transparency
    (transparent pixels are regenerated); otherwise white = regenerate, black = keep."""
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        alpha = np.asarray(image.convert("RGBA"), dtype=np.float32)[..., 3]
        if alpha.min() < 255:
            return _mask_from(255 - alpha, size)
    return _mask_from(np.asarray(image.convert("L"), dtype=np.float32), size)


def _mask_from(values: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
    pil = Image.fromarray(values.astype(np.uint8)).resize((size[1], size[0]), Image.Resampling.NEAREST)
    return torch.from_numpy((np.asarray(pil) >= 128).astype(np.float32))[None, None]


def sample_images(job: Job, served: Served, options: dict[str, Any]) -> list[tuple[bytes, bytes | None]]:
    """Run on a worker: `n` images from the model's `sample`, as PNG bytes, each with its sound as WAV bytes for a
    model of sound (voiced by `options["voice"]`, a served vocoder, or by Griffin-Lim: None)."""
    job.check()
    model = served.model
    seed, n = options["seed"], options["n"]
    # a model that takes a generator per image draws image i from seed + i, as its batched requests do
    # (genlab.serve.batching.ImageBatcher): the same images however the server runs them
    generator = image_generators(seed, n) if model.generator_per_image else torch.Generator().manual_seed(seed)
    images = model.sample(n, labels=options["labels"], prompt=options["prompt"], generator=generator,
                          options=sampling_options(model, options))
    job.check()
    return images_of(served, images, options, job)


def image_generators(seed: int, n: int) -> list[torch.Generator]:
    """One generator per image of a request: image i's seeded seed + i."""
    return [torch.Generator().manual_seed(seed + i) for i in range(n)]


def sampling_options(model: Any, options: dict[str, Any]):
    """The model's sample options from a request's (those it left unset take the model's defaults)."""
    return model.sample_options(**{k: v for k, v in options["sample"].items() if v is not None})


def images_of(served: Served, images: torch.Tensor, options: dict[str, Any], job: Job | None = None,
              ) -> list[tuple[bytes, bytes | None]]:
    """Sampled images (n, C, H, W) in [0, 1] as PNG bytes, each with its sound as WAV bytes for a model of sound
    (voiced by `options["voice"]`, a served vocoder, or by Griffin-Lim: None)."""
    pngs = [to_png(image) for image in images]
    if not served.sound:
        return [(png, None) for png in pngs]
    from genlab.data.spectrogram import from_image, read_sound_config, voice

    settings, samples = read_sound_config(served.sound)
    vocoder = options.get("voice")
    waves = voice(from_image(images, settings), settings, vocoder and vocoder.model, samples, options["seed"])
    if job is not None:
        job.check()
    return [(png, to_wav(wave, settings.sample_rate)) for png, wave in zip(pngs, waves, strict=True)]


def to_wav(wave: torch.Tensor, sample_rate: int) -> bytes:
    import soundfile

    buffer = io.BytesIO()
    soundfile.write(buffer, wave.clamp(-1, 1).cpu().numpy(), sample_rate, subtype="PCM_16", format="WAV")
    return buffer.getvalue()


def speak_wav(job: Job, served: Served, options: dict[str, Any]) -> bytes:
    """Run on a worker: the text spoken by a text-to-speech model (flite's phones in), voiced by a served vocoder
    (`options["voice"]`, a Served) or by Griffin-Lim (None), as a 16-bit WAV file."""
    from genlab.data.spectrogram import voice
    from genlab.data.speech import phonemes

    job.check()
    model = served.model
    log_mel = model.synthesize([phonemes(options["input"])], pace=1.0 / options["speed"])[0][None]
    job.check()
    vocoder = options["voice"]
    return to_wav(voice(log_mel, model.settings, vocoder and vocoder.model)[0], model.settings.sample_rate)


def stylize_upload(model: Any, photo: Image.Image, style: Image.Image, alpha: float) -> torch.Tensor:
    """A photo restyled after a style image by a `Stylizer`, (3, H, W) in [0, 1] at the photo's own size.

    Both are read at one scale, as `genlab style` does (features are read at a scale, and the style's texture is
    sized against the photo's): the photo's short side, lowered to the model's `short_side` (the scale it trained
    at) when larger, which also bounds the work for large uploads. A photo brought down is stylised there and the
    result resized back up (bicubic), so the answer always has the photo's size."""
    from genlab.models.style import resize_short_side

    content = image_tensor(photo, 3, (photo.height, photo.width))
    side = min(photo.height, photo.width, model.config.short_side)
    look = resize_short_side(image_tensor(style, 3, (style.height, style.width)), side, "style")
    out = model.stylize(resize_short_side(content, side, "content"), look, alpha=alpha)
    if out.shape[-2:] != content.shape[-2:]:
        out = F.interpolate(out, size=content.shape[-2:], mode="bicubic", align_corners=False)
    return out[0].clamp(0, 1)


def edit_images(job: Job, served: Served, options: dict[str, Any]) -> list[bytes]:
    """Run on a worker: translate (pix2pix), edit (diffusion: image-to-image, inpainting) or restyle (a style model:
    the photo after `options["style"]`, at strength `alpha`) an uploaded image."""
    job.check()
    model, image = served.model, options["image"]
    if "style" in served.edit_modes:
        strength = options["edit"]["strength"]
        out = [stylize_upload(model, image, options["style"], 1.0 if strength is None else strength)]
    elif "translation" in served.edit_modes:
        c, h, w = model.input_shape
        condition = image_tensor(image, c, (h, w))
        condition, _ = model.prepare_condition(condition)
        out = model.translate(condition)
    else:
        config, n = model.config, options["n"]
        x = image_tensor(image, config.channels, tuple(config.image_size)).expand(n, -1, -1, -1).contiguous()
        mask = options["mask"]
        mask = mask_tensor(mask, tuple(config.image_size)).expand(n, -1, -1, -1).contiguous() if mask else None
        kwargs = {k: v for k, v in options["edit"].items() if v is not None}
        out = model.edit(x, mask=mask, labels=options["labels"], prompt=options["prompt"],
                         generator=torch.Generator().manual_seed(options["seed"]), options=model.edit_options(**kwargs))
    job.check()
    return [to_png(image) for image in out]
