"""Request and response bodies of the API: the OpenAI completions and images shapes, plus genlab's options.

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


class SoundShape(BaseModel):
    sample_rate: int
    seconds: float


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "genlab"
    family: str = Field(description="vae, gan, pix2pix, diffusion, rnn, gpt, tts or vocoder")
    kind: Literal["text", "image", "audio"]
    capabilities: list[str] = Field(description="completions, chat.completions, images.generations, images.edits, "
                                    "audio.speech, voice (a vocoder: a voice of audio.speech)")
    edit_modes: list[str] = Field(description="for images.edits: translation, image-to-image, inpainting")
    conditioning: Literal["none", "class", "text"] = Field(
        description="what steers image generation: a class or a prompt"
    )
    classes: list[str] = Field(description="class names of a class-conditional model")
    options: list[str] = Field(description="generation options this model takes (temperature, steps, guidance, ...)")
    image_size: list[int] | None = Field(None, description="[height, width] of the images it makes")
    channels: int | None = None
    sound: SoundShape | None = Field(None, description="an image model of sound (its images are spectrograms): the "
                                     "clips it makes; its images.generations answers carry b64_wav")
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
