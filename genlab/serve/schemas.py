"""Request and response bodies of the API: the OpenAI completions, images and videos shapes, plus genlab's options.

Fields are bounded by the hard ceilings in `limits`; the app writes its own (lower) limits
into the OpenAPI schema it serves, and refuses or lowers values above them at run time.
Unknown fields are refused (422), so that a misspelt option never passes unnoticed.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from genlab.serve.limits import HARD_MAX_N, HARD_MAX_STEPS, HARD_MAX_TOKENS, HARD_PROMPT_CHARS

MODEL_FIELD = Field(description="a model name from GET /v1/models", min_length=1, max_length=200)
SEED_FIELD = Field(None, ge=0, le=2**63 - 1, description="the same seed gives the same output; default: a random one, "
                   "returned in the response")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# -- errors -------------------------------------------------------------------------------------

class ErrorDetail(BaseModel):
    message: str = Field(description="what went wrong and how to fix it")
    type: str = Field(description="invalid_request_error, authentication_error, not_found_error, "
                      "request_too_large, rate_limit_error, server_busy, timeout or server_error")
    param: str | None = Field(None, description="the request field at fault, when there is one")
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorDetail


# -- health and models --------------------------------------------------------------------------

class Health(BaseModel):
    status: Literal["ok"]
    models: list[str]
    running: int = Field(description="requests generating now")
    waiting: int = Field(description="requests waiting for a worker")
    auth: bool = Field(description="whether /v1 needs `Authorization: Bearer KEY`")
    limits: dict[str, int | float]
    counts: dict[str, int] = Field(description="finished requests by outcome since start-up")
    decoding: dict[str, dict[str, int]] = Field(
        default_factory=dict, description="per language model decoding in batches: sequences running and waiting")
    sampling: dict[str, dict[str, int]] = Field(
        default_factory=dict, description="per image model sampling in batches: images in the batch and waiting")


class SoundShape(BaseModel):
    sample_rate: int
    seconds: float


class VideoShape(BaseModel):
    frames: int = Field(description="frames in each clip")
    fps: float = Field(description="frames per second")
    seconds: float = Field(description="the clip's length: frames / fps, the most `seconds` may ask for")


class StyleShape(BaseModel):
    short_side: int = Field(description="the scale it stylises at: a photo whose short side is longer is restyled "
                            "at this short side (the scale it trained at) and resized back to its own size")


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "genlab"
    family: str = Field(description="vae, gan, pix2pix, diffusion, style, rnn, gpt, tts, vocoder or video")
    kind: Literal["text", "image", "audio", "video"]
    capabilities: list[str] = Field(description="completions, chat.completions, images.generations, images.edits, "
                                    "audio.speech, voice (a vocoder: a voice of audio.speech), videos")
    edit_modes: list[str] = Field(description="for images.edits: translation, image-to-image, inpainting, style "
                                  "(two images: the photo, then the style image)")
    conditioning: Literal["none", "class", "text"] = Field(
        description="what steers image generation: a class or a prompt"
    )
    classes: list[str] = Field(description="class names of a class-conditional model")
    options: list[str] = Field(description="generation options this model takes (temperature, steps, guidance, ...)")
    image_size: list[int] | None = Field(None, description="[height, width] of the images (or video frames) it makes; "
                                         "null for a style model, whose answer has the photo's size")
    channels: int | None = None
    sound: SoundShape | None = Field(None, description="an image model of sound (its images are spectrograms): the "
                                     "clips it makes; its images.generations answers carry b64_wav")
    video: VideoShape | None = Field(None, description="a video model: the clips it makes")
    style: StyleShape | None = Field(None, description="a style model: the scale it restyles photos at")
    parameters: int


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


# -- completions --------------------------------------------------------------------------------

class StreamOptions(Strict):
    include_usage: bool = False


class TextRequest(Strict):
    """The fields /v1/completions and /v1/chat/completions share: the model and how to sample."""

    model: str = MODEL_FIELD
    temperature: float = Field(1.0, ge=0, le=10, description="0 is greedy")
    top_p: float = Field(1.0, gt=0, le=1, description="nucleus sampling: keep the most likely tokens holding this mass")
    top_k: int | None = Field(None, ge=1, le=1_000_000, description="keep the k most likely tokens only")
    repetition_penalty: float = Field(1.0, gt=0, le=10, description="> 1 discourages repeating tokens (1.1-1.3 usual)")
    seed: int | None = SEED_FIELD
    stream_options: StreamOptions | None = None
    user: str | None = Field(None, max_length=200, description="accepted for OpenAI compatibility; not stored")


class CompletionRequest(TextRequest):
    prompt: str = Field("", max_length=HARD_PROMPT_CHARS, description="the text to continue (empty: start afresh)")
    max_tokens: int = Field(16, ge=0, le=HARD_MAX_TOKENS, description="new tokens at most; values above the "
                            "server's max_tokens (GET /health) are lowered to it")
    n: int = Field(1, ge=1, le=HARD_MAX_N, description="completions of the same prompt (seeds seed, seed+1, ...)")
    stop: str | list[str] | None = Field(None, description="up to 4 strings that end a completion (not included)")
    stream: bool = Field(False, description="send the text as server-sent events, ending with `data: [DONE]`")

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"model": "gpt", "prompt": "ROMEO:", "max_tokens": 200, "temperature": 0.8, "stream": True}]})


class CompletionChoice(BaseModel):
    text: str
    index: int
    logprobs: None = None
    finish_reason: Literal["stop", "length"] | None = Field(description="stop: a stop string was reached; "
                                                             "length: max_tokens was reached")


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class CompletionResponse(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    seed: int = Field(description="the seed used (give it back to repeat the output)")
    choices: list[CompletionChoice]
    usage: Usage | None = None


# -- chat completions ---------------------------------------------------------------------------

class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "user", "assistant"]
    content: str = Field(max_length=HARD_PROMPT_CHARS)
    name: str | None = Field(None, max_length=200, description="accepted for OpenAI compatibility; not used")


class ChatCompletionRequest(TextRequest):
    messages: list[ChatMessage] = Field(min_length=1, max_length=1000, description="the conversation so far; a "
                                        "system message may come first, and the last message is the user's")
    max_tokens: int | None = Field(None, ge=0, le=HARD_MAX_TOKENS, description="reply tokens at most (default: "
                                   "the server's max_tokens, GET /health)")
    max_completion_tokens: int | None = Field(None, ge=0, le=HARD_MAX_TOKENS, description="OpenAI's newer name for "
                                              "max_tokens")
    n: int = Field(1, ge=1, le=HARD_MAX_N, description="replies to the same conversation (seeds seed, seed+1, ...)")
    stop: str | list[str] | None = Field(None, description="up to 4 strings that end a reply (not included)")
    stream: bool = Field(False, description="send the reply as server-sent events (chat.completion.chunk), ending "
                         "with `data: [DONE]`")

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"model": "chat", "messages": [{"role": "user", "content": "What is the capital of Germany?"}],
         "temperature": 0, "stream": True}]})


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(BaseModel):
    index: int
    message: AssistantMessage
    logprobs: None = None
    finish_reason: Literal["stop", "length"] | None = Field(description="stop: the model ended its reply or a stop "
                                                             "string was reached; length: max_tokens was reached")


class ChatCompletionResponse(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    seed: int = Field(description="the seed used (give it back to repeat the output)")
    choices: list[ChatChoice]
    usage: Usage | None = None


# -- images -------------------------------------------------------------------------------------

class ImageRequest(Strict):
    model: str = MODEL_FIELD
    prompt: str = Field("", max_length=HARD_PROMPT_CHARS, description="text-conditioned models: what to draw; "
                        "class-conditional models: a class name (or use `label`)")
    n: int = Field(1, ge=1, le=HARD_MAX_N)
    label: str | int | None = Field(None, description="class-conditional models: a class name or index "
                                    "(default: cycle through the classes)")
    seed: int | None = SEED_FIELD
    temperature: float | None = Field(None, gt=0, le=10, description="scale of the latent noise (default 1); below 1 "
                                      "trades variety for cleaner images")
    steps: int | None = Field(None, ge=1, le=HARD_MAX_STEPS, description="diffusion models: sampling steps")
    guidance: float | None = Field(None, ge=0, le=100, description="diffusion models: classifier-free guidance scale")
    sampler: str | None = Field(None, max_length=40, description="diffusion models: the sampler (e.g. ddim, ddpm)")
    size: str | None = Field(None, max_length=20, description="WIDTHxHEIGHT; must be the model's own size if given")
    voice: str | None = Field(None, max_length=200, description="models of sound: what makes the spectrograms sound, "
                              "a served vocoder's name (GET /v1/models: capability voice) or griffin-lim (default)")
    response_format: Literal["b64_json"] = "b64_json"
    user: str | None = Field(None, max_length=200)

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"model": "dm-text", "prompt": "a red dress", "n": 4, "seed": 1}]})


class SpeechRequest(Strict):
    model: str = MODEL_FIELD
    input: str = Field(min_length=1, max_length=HARD_PROMPT_CHARS, description="the text to speak")
    voice: str = Field(max_length=200, description="a served vocoder's name (GET /v1/models: capability voice), or "
                       "griffin-lim")
    response_format: str = Field("wav", max_length=20, description="wav (the only format served)")
    speed: float = Field(1.0, ge=0.25, le=4.0, description="above 1 speaks faster")
    instructions: str | None = Field(None, max_length=HARD_PROMPT_CHARS, description="not supported: refused")

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"model": "tts", "input": "four two seven one", "voice": "voc", "response_format": "wav"}]})


class ImageData(BaseModel):
    b64_json: str = Field(description="a PNG image, base64-encoded")
    b64_wav: str | None = Field(None, description="models of sound: the sound of the spectrogram image, a 16-bit WAV "
                                "file, base64-encoded (genlab's extension of the images shape)")


class ImagesResponse(BaseModel):
    created: int
    model: str
    seed: int
    data: list[ImageData]


# -- videos -------------------------------------------------------------------------------------

class VideoRequest(Strict):
    """POST /v1/videos, as OpenAI's client sends it (multipart/form-data; JSON is taken too)."""

    model: str = MODEL_FIELD
    prompt: str = Field("", max_length=HARD_PROMPT_CHARS, description="class models: a class name (GET "
                        "/v1/models: classes); unconditional models: empty")
    seconds: str | float | None = Field(None, description="the clip's length: the model's first round(seconds * fps) "
                                        "frames (at least 2), at most its whole clip (GET /v1/models: video.seconds); "
                                        "default: the whole clip")
    size: str | None = Field(None, max_length=20, description="WIDTHxHEIGHT; must be the model's own size if given")
    seed: int | None = SEED_FIELD
    steps: int | None = Field(None, ge=1, le=HARD_MAX_STEPS, description="sampling steps (default: the model's)")
    guidance: float | None = Field(None, ge=0, le=100, description="class models: classifier-free guidance scale")
    sampler: str | None = Field(None, max_length=40, description="the sampler: ddpm, ddim or dpm++")
    temperature: float | None = Field(None, gt=0, le=10, description="scale of the starting noise (default 1)")

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"model": "video", "prompt": "Trouser", "seconds": "2", "seed": 1}]})


class VideoError(BaseModel):
    code: str = Field(description="timeout, cancelled or generation_failed")
    message: str


class VideoJob(BaseModel):
    """OpenAI's Video object (openai.types.Video), with genlab's seed, frames and fps."""

    id: str
    object: Literal["video"] = "video"
    created_at: int
    completed_at: int | None = None
    expires_at: int | None = Field(None, description="always null: kept until the server forgets it (see README)")
    error: VideoError | None = None
    model: str
    progress: int = Field(description="0 while queued or sampling, 90 while encoding, 100 when completed")
    prompt: str | None = None
    remixed_from_video_id: str | None = None
    seconds: str = Field(description="the clip's length in seconds (frames / fps)")
    size: str = Field(description="WIDTHxHEIGHT")
    status: Literal["queued", "in_progress", "completed", "failed"]
    seed: int = Field(description="the seed used (give it back to repeat the clip)")
    frames: int
    fps: float


class VideoDeleted(BaseModel):
    id: str
    object: Literal["video.deleted"] = "video.deleted"
    deleted: bool
