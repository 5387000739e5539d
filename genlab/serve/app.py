"""The FastAPI app: the OpenAI-shaped endpoints, errors, API key, body-size limit and the page.

/v1/videos is OpenAI's Videos API: a job made on the same workers, polled, then downloaded (genlab.serve.videos).

Every error, whatever raised it (validation, a limit, the model, an unknown route), is
answered as `{"error": {"message", "type", "param", "code"}}`, the message naming the
problem and the fix. Generation never runs on the event loop: each request's work is a
job on `Workers`, and the loop only waits for it (watching for the client leaving and
for the deadline), so /health answers while every model is busy.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import hmac
import json
import secrets
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from contextlib import asynccontextmanager
from importlib import resources
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, File, Form, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import ValidationError
from starlette.exceptions import HTTPException

from genlab import __version__
from genlab.data.chat import check_messages
from genlab.errors import GenlabError
from genlab.models.base import EditOptions, class_labels
from genlab.serve import videos
from genlab.serve.batching import ImageBatcher, TextBatcher
from genlab.serve.limits import HARD_MAX_N, HARD_MAX_STEPS, HARD_PROMPT_CHARS, Busy, ServeConfig, Stopped, Workers
from genlab.serve.registry import (
    RequestError,
    Served,
    complete,
    edit_images,
    load_models,
    read_upload,
    sample_images,
    speak_wav,
)
from genlab.serve.schemas import (
    ChatCompletionRequest,
    ChatCompletionResponse,
    CompletionRequest,
    CompletionResponse,
    ErrorResponse,
    Health,
    ImageRequest,
    ImagesResponse,
    ModelList,
    SpeechRequest,
    VideoDeleted,
    VideoJob,
    VideoRequest,
)

ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
               405: "invalid_request_error", 413: "request_too_large", 422: "invalid_request_error",
               429: "rate_limit_error", 503: "server_busy", 504: "timeout"}
ERRORS = {status: {"model": ErrorResponse} for status in (400, 401, 404, 413, 422, 429, 503, 504)}
SSE_EVENT = {"type": "object", "required": ["data"], "properties": {"event": {"type": "string"}, "data": {
    "type": "string", "description": "a JSON chunk shaped like the non-streaming answer, with a piece of text per "
    "choice, or {\"error\": ...}; the last event is [DONE]"}}}
# POST /v1/videos reads its body itself (OpenAI's client sends multipart/form-data; JSON is taken too), so its
# schema is declared here and added to the components in `openapi` below
VIDEO_BODY = {"requestBody": {"required": True, "content": {
    "multipart/form-data": {"schema": {"$ref": "#/components/schemas/VideoForm"}},
    "application/json": {"schema": {"$ref": "#/components/schemas/VideoRequest"}}}}}
VIDEO_FILES = {"video/mp4": {}, "image/png": {}, "image/gif": {}}
PAGE_POLICY = ("default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data: blob:; "
               "media-src blob:; "
               "connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'")


def error_response(status: int, message: str, param: str | None = None, headers: dict | None = None) -> JSONResponse:
    body = {
        "error": {
            "message": message,
            "type": ERROR_TYPES.get(status, "server_error"),
            "param": param,
            "code": None,
        }
    }
    if status in (429, 503):
        headers = {"Retry-After": "1", **(headers or {})}
    return JSONResponse(body, status_code=status, headers=headers)


def _message(problem: str, fix: str | None) -> str:
    return problem if not fix else f"{problem}; fix: {fix}"


class ClientGone(Exception):
    """The client disconnected while its request waited: nobody reads the answer."""


class BodyLimit:
    """Refuse request bodies over `limit` bytes with 413: by Content-Length up front, or while a chunked body
    arrives."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        length = headers.get(b"content-length", b"0")
        too_large = _message(f"the request body is larger than this server's limit of {self.limit:,} bytes",
                             "send less (a smaller image, a shorter prompt), or start the server with a larger "
                             "--max-body-bytes")
        if not length.isdigit():
            return await error_response(400, "the Content-Length header is not a number")(scope, receive, send)
        if int(length) > self.limit:
            return await error_response(413, too_large)(scope, receive, send)
        received = 0

        async def limited():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise HTTPException(413, too_large)
            return message

        await self.app(scope, limited, send)


def create_app(models: dict[str, Served] | list[str], config: ServeConfig | None = None) -> FastAPI:
    """The app serving `models` (loaded `Served` models, or the specs `genlab serve` takes: paths or NAME=PATH)."""
    config = config or ServeConfig()
    registry = load_models(models) if isinstance(models, list) else dict(models)
    workers = Workers(config)
    # a GPT's completions decode together on its own thread (continuous batching); other models' on the workers
    batchers = {name: TextBatcher(served.model, config, workers.counts, name) for name, served in registry.items()
                if hasattr(served.model, "step_rows") and served.model.tokenizer is not None}
    # a diffusion model's concurrent image requests sample together, each image from its own seed (--max-batch 1:
    # one request at a time on the workers, as before batching)
    image_batchers = {name: ImageBatcher(served, config, workers.counts, name) for name, served in registry.items()
                      if getattr(served.model, "generator_per_image", False) and config.max_batch > 1}

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        for batcher in [*batchers.values(), *image_batchers.values()]:
            batcher.shutdown()
        workers.shutdown()

    app = FastAPI(title="genlab", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="Generative models trained with genlab, behind OpenAI-shaped endpoints. "
                  "Limits: GET /health. The web page: GET /.")
    store = videos.VideoStore(config.max_videos)
    app.state.workers, app.state.registry, app.state.config, app.state.videos = workers, registry, config, store
    app.state.batchers, app.state.image_batchers = batchers, image_batchers
    app.add_middleware(BodyLimit, limit=config.max_body_bytes)

    # -- errors ----------------------------------------------------------------------------------

    @app.exception_handler(RequestError)
    async def on_request_error(request: Request, error: RequestError):
        return error_response(error.status, _message(error.problem, error.fix), error.param)

    @app.exception_handler(GenlabError)
    async def on_genlab_error(request: Request, error: GenlabError):
        return error_response(400, _message(error.problem, error.fix))

    @app.exception_handler(Busy)
    async def on_busy(request: Request, error: Busy):
        return error_response(429, _message(f"the server is busy: {error}", "retry after a second, or send fewer "
                                            "requests at once"))

    @app.exception_handler(RequestValidationError)
    async def on_invalid(request: Request, error: RequestValidationError):
        problems = []
        for e in error.errors()[:5]:
            where = ".".join(str(p) for p in e["loc"] if p not in ("body",)) or "body"
            problems.append(f"{where}: {e['msg']}")
        first = ".".join(str(p) for p in error.errors()[0]["loc"][1:]) if error.errors() else None
        return error_response(
            422,
            _message("; ".join(problems), "correct these fields (the schema: GET /openapi.json)"),
            first or None,
        )

    @app.exception_handler(HTTPException)
    async def on_http(request: Request, error: HTTPException):
        messages = {404: _message(f"no endpoint {request.url.path}", "see GET /openapi.json for the endpoints"),
                    405: _message(f"{request.method} is not allowed on {request.url.path}", "see GET /openapi.json")}
        return error_response(error.status_code, messages.get(error.status_code, str(error.detail)),
                              headers=getattr(error, "headers", None))

    @app.exception_handler(Exception)
    async def on_crash(request: Request, error: Exception):
        print(f"genlab serve: internal error on {request.url.path}: {type(error).__name__}: {error}", file=sys.stderr)
        return JSONResponse({"error": {"message": f"internal error ({type(error).__name__}); the server log has "
                                       "the details", "type": "server_error", "param": None, "code": None}},
                            status_code=500)

    # -- helpers ---------------------------------------------------------------------------------

    def find(name: str, capability: str) -> Served:
        if name not in registry:
            raise RequestError(f"no model named {name!r}", f"use one of {', '.join(registry)} (GET /v1/models)",
                               param="model", status=404)
        served = registry[name]
        if capability not in served.capabilities:
            able = [n for n, s in registry.items() if capability in s.capabilities]
            raise RequestError(f"model {name!r} is a {served.family} model and cannot do {capability}",
                               f"use {' or '.join(able)}" if able else "serve a model that can", param="model")
        return served

    def cap(value: int, limit: int, param: str, fix: str) -> None:
        if value > limit:
            raise RequestError(f"{param} = {value:,} is above this server's limit of {limit:,}", fix, param=param,
                               status=422)

    def timed_out(job) -> RequestError:
        if job.started:
            return RequestError(f"generation ran past this server's time limit of {config.timeout:g} s",
                                "ask for less (fewer tokens, images or steps)", status=504)
        return RequestError(f"the request waited {config.timeout:g} s for a free worker: the server is overloaded",
                            "retry later, or send fewer requests at once", status=503)

    async def wait(job, future, request: Request):
        """The job's result; its client leaving or its deadline passing cancels it (the thread stops at its next
        check)."""
        while not future.done():
            await asyncio.wait({future}, timeout=0.05)
            if future.done():
                break
            if await request.is_disconnected():
                job.cancel("disconnected")
                raise ClientGone
            if time.monotonic() > job.deadline:
                job.cancel("timeout")
                raise timed_out(job)
        try:
            return future.result()
        except Stopped as stop:
            if stop.reason == "disconnected":
                raise ClientGone from None
            raise timed_out(job) from None

    def seed_of(seed: int | None) -> int:
        return seed if seed is not None else secrets.randbelow(2**31)

    def labels_for(served: Served, label: str | int | None, prompt: str, n: int):
        """Class labels from `label` or a class-name prompt; None for models that take none."""
        model = served.model
        if served.conditioning == "class":
            if label is None and prompt:
                names = {c.lower(): c for c in model.config.class_names}
                if prompt.strip().lower() not in names:
                    raise RequestError(f"model {served.name!r} draws classes, and {prompt!r} is not one of them",
                                       f"use one of {', '.join(model.config.class_names)} as prompt or label",
                                       param="prompt")
                label = names[prompt.strip().lower()]
            return class_labels(model.config, label, n)
        if label is not None:
            raise RequestError(f"model {served.name!r} is not class-conditional and takes no label", "drop label",
                               param="label")
        if prompt and served.conditioning != "text":
            raise RequestError(f"model {served.name!r} ({served.family}) is unconditional and takes no prompt",
                               "leave prompt empty", param="prompt")
        return None

    def refuse_unsupported(served: Served, given: dict[str, Any], takes: set[str]) -> None:
        for key, value in given.items():
            if value is not None and key not in takes:
                raise RequestError(f"model {served.name!r} ({served.family}) takes no {key}",
                                   f"drop {key}; it takes {', '.join(sorted(takes)) or 'no options'}", param=key)

    def check_size(served: Served, size: str | None) -> None:
        if "style" in served.edit_modes:  # any photo, answered at its own size
            if size is not None and size.lower() != "auto":
                raise RequestError(f"model {served.name!r} answers at the photo's own size, not {size}",
                                   "drop size (or send auto); resize the photo before sending it", param="size")
            return
        h, w = served.model.config.image_size
        if size is not None and size.lower() != f"{w}x{h}":
            raise RequestError(f"model {served.name!r} makes {w}x{h} images, not {size}", f"drop size or use {w}x{h}",
                               param="size")

    # -- routes ----------------------------------------------------------------------------------

    bearer = HTTPBearer(
        auto_error=False, description="the server's API key (genlab serve --api-key, or GENLAB_API_KEY)"
    )

    async def authorize(credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:  # noqa: B008
        if credentials is None or not hmac.compare_digest(credentials.credentials.encode(), config.api_key.encode()):
            raise RequestError("missing or wrong API key", "send the header `Authorization: Bearer KEY` with the "
                               "server's key", status=401)

    guarded = [Depends(authorize)] if config.api_key else []

    @app.get("/", include_in_schema=False)
    async def page() -> HTMLResponse:
        html = resources.files("genlab.serve").joinpath("static/index.html").read_text(encoding="utf-8")
        return HTMLResponse(html, headers={"Content-Security-Policy": PAGE_POLICY, "Cache-Control": "no-cache"})

    @app.get("/health", response_model=Health)
    async def health() -> dict:
        return {"status": "ok", "models": list(registry), "running": workers.running, "waiting": workers.waiting,
                "auth": bool(config.api_key), "limits": config.public(), "counts": dict(workers.counts),
                "decoding": {name: {"running": b.running, "waiting": b.queued} for name, b in batchers.items()},
                "sampling": {name: {"running": b.sampling, "waiting": b.queued}
                             for name, b in image_batchers.items()}}

    @app.get("/v1/models", response_model=ModelList, responses=ERRORS, dependencies=guarded)
    async def list_models() -> dict:
        return {"object": "list", "data": [served.card() for served in registry.values()]}

    def stops_of(stop: str | list[str] | None) -> list[str]:
        stops = [stop] if isinstance(stop, str) else list(stop or [])
        if len(stops) > 4 or any(len(s) > 100 for s in stops):
            raise RequestError("stop takes at most 4 strings of at most 100 characters", "shorten stop", param="stop",
                               status=422)
        return stops

    def text_options(body, max_tokens: int, **what: Any) -> dict[str, Any]:
        """The worker's options for a text request: `what` to continue (prompt or messages) and how to sample."""
        return {**what, "max_tokens": min(max_tokens, config.max_tokens), "n": body.n, "temperature": body.temperature,
                "top_p": body.top_p, "top_k": body.top_k, "stop": stops_of(body.stop),
                "repetition_penalty": body.repetition_penalty, "seed": seed_of(body.seed)}

    async def text_response(served: Served, options: dict[str, Any], body, request: Request, head: dict[str, Any],
                            choice: Callable[[int, str, str | None], dict],
                            chunk: Callable[[int, str, str | None], dict], opening: list[dict] | None = None):
        """Run `complete` on a worker and answer with the whole result or, with `body.stream`, server-sent
        events: `choice(index, text, finish_reason)` shapes a choice of the result, `chunk(...)` a choice of an
        event; `opening` are the choices of a first event (a chat stream's role)."""

        def submit(emit: Callable[[str, int, Any], None]):
            """The request on the model's batcher or a worker; `emit` is called on the event loop either way."""
            batcher = batchers.get(served.name)
            if batcher:
                return batcher.submit(options, emit)
            loop = asyncio.get_running_loop()
            return workers.submit(complete, served.model, options,
                                  lambda *item: loop.call_soon_threadsafe(emit, *item))

        if not body.stream:
            texts: dict[int, list[str]] = defaultdict(list)
            reasons: dict[int, str] = {}

            def collect(kind: str, index: int, value: str) -> None:
                (texts[index].append(value) if kind == "text" else reasons.__setitem__(index, value))

            try:
                usage = await wait(*submit(collect), request)
            except ClientGone:
                return Response(status_code=499)
            choices = [choice(i, "".join(texts[i]), reasons.get(i)) for i in range(body.n)]
            return {**head, "choices": choices, "usage": usage}

        events: asyncio.Queue = asyncio.Queue()
        job, future = submit(lambda *item: events.put_nowait(item))
        future.add_done_callback(lambda _: events.put_nowait(None))
        getter = asyncio.ensure_future(events.get())
        try:  # wait for the first piece here, so that a timeout or an error still gets its own status code
            first = await wait(job, getter, request)
            if first is None:
                future.result()  # the job ended without a word: raise its error
        except ClientGone:
            return Response(status_code=499)
        except Stopped as stop:
            if stop.reason == "disconnected":
                return Response(status_code=499)
            raise timed_out(job) from None
        finally:
            getter.cancel()

        def event(data: dict | str) -> str:
            return f"data: {data if isinstance(data, str) else json.dumps(data)}\n\n"

        async def stream():
            try:
                if opening:
                    yield event({**head, "choices": opening})
                item = first
                while item is not None:
                    kind, index, value = item
                    text, finish = (value, None) if kind == "text" else ("", value)
                    yield event({**head, "choices": [chunk(index, text, finish)]})
                    item = await events.get()
                error = future.exception()
                if isinstance(error, Stopped):
                    error = timed_out(job) if error.reason == "timeout" else RequestError("the server is shutting down")
                if error is not None:
                    status = getattr(error, "status", 500)
                    problem = _message(error.problem, error.fix) if isinstance(error, GenlabError) else "internal error"
                    yield event({"error": {"message": problem, "type": ERROR_TYPES.get(status, "server_error"),
                                           "param": None, "code": None}})
                elif body.stream_options and body.stream_options.include_usage:
                    yield event({**head, "choices": [], "usage": future.result()})
                yield event("[DONE]")
            finally:
                if not future.done():
                    job.cancel("disconnected")

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    @app.post("/v1/completions", response_model=CompletionResponse, responses={
        **ERRORS, 200: {"description": "the completion, or with `stream: true` server-sent events: chunks of this "
                        "shape, then `data: [DONE]`", "content": {"text/event-stream": {"schema": SSE_EVENT}}}},
        dependencies=guarded)
    async def completions(body: CompletionRequest, request: Request):
        served = find(body.model, "completions")
        cap(len(body.prompt), config.max_prompt_chars, "prompt", "send a shorter prompt (in characters)")
        cap(body.n, config.max_n, "n", "ask for fewer completions per request")
        options = text_options(body, body.max_tokens, prompt=body.prompt)
        head = {"id": f"cmpl-{uuid.uuid4().hex[:24]}", "object": "text_completion", "created": int(time.time()),
                "model": served.name, "seed": options["seed"]}

        def choice(index: int, text: str, finish: str | None) -> dict:
            return {"text": text, "index": index, "logprobs": None, "finish_reason": finish}

        return await text_response(served, options, body, request, head, choice, choice)

    @app.post("/v1/chat/completions", response_model=ChatCompletionResponse, responses={
        **ERRORS, 200: {"description": "the reply, or with `stream: true` server-sent events: chat.completion.chunk "
                        "objects (the first holds the role), then `data: [DONE]`",
                        "content": {"text/event-stream": {"schema": SSE_EVENT}}}},
        dependencies=guarded)
    async def chat_completions(body: ChatCompletionRequest, request: Request):
        served = find(body.model, "completions")
        if not served.model.has_chat_template:
            raise RequestError(f"model {served.name!r} has no chat template: it was trained on plain text",
                               "instruction-tune it (genlab finetune RUN --data conversations.jsonl), or use "
                               "/v1/completions", param="model")
        try:  # a system message only first, as in training data (the schema checked each message)
            messages = check_messages([{"role": m.role, "content": m.content} for m in body.messages])
        except ValueError as error:
            raise RequestError(str(error), "merge the system messages into the first one", param="messages") from None
        cap(sum(len(m["content"]) for m in messages), config.max_prompt_chars, "messages",
            "send a shorter conversation (in characters)")
        cap(body.n, config.max_n, "n", "ask for fewer replies per request")
        if messages[-1]["role"] == "assistant":
            raise RequestError("the last message is the assistant's; a reply follows a user (or system) message",
                               "end messages with the user's turn", param="messages")
        wanted = body.max_completion_tokens if body.max_completion_tokens is not None else body.max_tokens
        options = text_options(body, wanted or config.max_tokens, messages=messages)
        head = {"id": f"chatcmpl-{uuid.uuid4().hex[:24]}", "created": int(time.time()), "model": served.name,
                "seed": options["seed"]}

        def choice(index: int, text: str, finish: str | None) -> dict:
            return {"index": index, "message": {"role": "assistant", "content": text}, "logprobs": None,
                    "finish_reason": finish}

        def chunk(index: int, text: str, finish: str | None) -> dict:
            return {"index": index, "delta": {"content": text} if text else {}, "logprobs": None,
                    "finish_reason": finish}

        opening = [{"index": i, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                    "finish_reason": None} for i in range(body.n)]
        if body.stream:
            head["object"] = "chat.completion.chunk"
        else:
            head["object"] = "chat.completion"
        return await text_response(served, options, body, request, head, choice, chunk, opening)

    def voice_named(voice: str, settings: Any, whose: str) -> Served | None:
        """The served vocoder `voice` of spectrograms made with `settings` (None: Griffin-Lim), or a refusal naming
        the voices there are."""
        if voice == "griffin-lim":
            return None
        voices = [n for n, s in registry.items() if "voice" in s.capabilities and s.model.settings == settings]
        if voice not in voices:
            raise RequestError(f"no voice {voice!r} for {whose}",
                               f"use {' or '.join([*voices, 'griffin-lim'])} (a served vocoder of the same "
                               "spectrogram settings, or Griffin-Lim)", param="voice")
        return registry[voice]

    def voice_of(served: Served, voice: str | None) -> Served | None:
        """What voices an image model of sound's samples; a model of images takes no voice."""
        if not served.sound:
            if voice is not None:
                raise RequestError(f"{served.name} makes images, not sound: it takes no voice", "leave voice out",
                                   param="voice")
            return None
        from genlab.data.spectrogram import read_sound_config

        return voice_named(voice or "griffin-lim", read_sound_config(served.sound)[0], served.name)

    @app.post("/v1/images/generations", response_model=ImagesResponse, responses=ERRORS, dependencies=guarded)
    async def images_generations(body: ImageRequest, request: Request):
        served = find(body.model, "images.generations")
        cap(len(body.prompt), config.max_prompt_chars, "prompt", "send a shorter prompt")
        cap(body.n, config.max_n, "n", "ask for fewer images per request")
        cap(body.steps or 0, config.max_steps, "steps", "ask for fewer sampling steps")
        check_size(served, body.size)
        takes = served.sample_options
        refuse_unsupported(served, {"steps": body.steps, "guidance": body.guidance, "sampler": body.sampler,
                                    "temperature": body.temperature}, takes)
        labels = labels_for(served, body.label, body.prompt, body.n)
        sample = {k: getattr(body, k) for k in ("steps", "guidance", "sampler", "temperature") if k in takes}
        prompt = [body.prompt] * body.n if body.prompt and served.conditioning == "text" else None
        seed = seed_of(body.seed)
        options = {"n": body.n, "labels": labels, "prompt": prompt, "seed": seed, "sample": sample,
                   "voice": voice_of(served, body.voice)}
        try:
            batcher = image_batchers.get(served.name)
            submitted = batcher.submit(options) if batcher else workers.submit(sample_images, served, options)
            made = await wait(*submitted, request)
        except ClientGone:
            return Response(status_code=499)
        return {"created": int(time.time()), "model": served.name, "seed": seed,
                "data": [{"b64_json": base64.b64encode(png).decode(),
                          **({"b64_wav": base64.b64encode(wav).decode()} if wav is not None else {})}
                         for png, wav in made]}

    @app.post("/v1/audio/speech", responses={**ERRORS, 200: {"content": {"audio/wav": {}},
                                                             "description": "the speech, a 16-bit WAV file"}},
              response_class=Response, dependencies=guarded)
    async def audio_speech(body: SpeechRequest, request: Request):
        served = find(body.model, "audio.speech")
        cap(len(body.input), config.max_prompt_chars, "input", "send a shorter text")
        if body.response_format != "wav":
            raise RequestError(f"response_format {body.response_format!r} is not served", "ask for wav",
                               param="response_format")
        if body.instructions:
            raise RequestError("instructions are not supported by genlab's text-to-speech",
                               "leave instructions out (use speed for the pace)", param="instructions")
        options = {"input": body.input, "speed": body.speed,
                   "voice": voice_named(body.voice, served.model.settings, served.name)}
        try:
            wav = await wait(*workers.submit(speak_wav, served, options), request)
        except ClientGone:
            return Response(status_code=499)
        return Response(content=wav, media_type="audio/wav")

    @app.post("/v1/images/edits", response_model=ImagesResponse, responses=ERRORS, dependencies=guarded)
    async def images_edits(
        request: Request,
        model: Annotated[str, Form(min_length=1, max_length=200, description="a model name from GET /v1/models")],
        image: Annotated[list[UploadFile] | None, File(description="the image to edit or translate (PNG or JPEG); "
                                                       "a style model: the photo, then the style image")] = None,
        image_list: Annotated[list[UploadFile] | None, File(alias="image[]", description="the images as OpenAI's "
                                                            "client sends a list (image=[photo, style])")] = None,
        mask: Annotated[UploadFile | None, File(description="inpainting: white (or transparent) = regenerate")] = None,
        prompt: Annotated[str, Form(max_length=HARD_PROMPT_CHARS)] = "",
        n: Annotated[int, Form(ge=1, le=HARD_MAX_N)] = 1,
        strength: Annotated[float | None, Form(ge=0, le=1, description="image-to-image: how much to change, in "
                                                f"(0, 1] (default {EditOptions.strength}); a style model: how much "
                                                "style, from 0 (the photo as it is) to 1 (default 1)")] = None,
        steps: Annotated[int | None, Form(ge=1, le=HARD_MAX_STEPS)] = None,
        guidance: Annotated[float | None, Form(ge=0, le=100)] = None,
        label: Annotated[str | None, Form(max_length=200, description="class name or index")] = None,
        seed: Annotated[int | None, Form(ge=0, le=2**63 - 1)] = None,
        size: Annotated[str | None, Form(max_length=20)] = None,
        response_format: Annotated[Literal["b64_json"], Form()] = "b64_json",
    ):
        served = find(model, "images.edits")
        cap(len(prompt), config.max_prompt_chars, "prompt", "send a shorter prompt")
        cap(n, config.max_n, "n", "ask for fewer images per request")
        cap(steps or 0, config.max_steps, "steps", "ask for fewer sampling steps")
        check_size(served, size)
        translation, styling = "translation" in served.edit_modes, "style" in served.edit_modes
        given = {"mask": mask, "steps": steps, "guidance": guidance, "prompt": prompt or None, "strength": strength,
                 "n": n if n > 1 else None}  # a translation or a restyling makes one image
        if translation or styling:  # one pass of a network: nothing to sample, mask or steer; a style has a strength
            takes = {"strength"} if styling else set()
        else:
            takes = {"mask", "steps", "guidance", "strength", "n"}
            if served.conditioning == "text":
                takes.add("prompt")
        refuse_unsupported(served, {k: v for k, v in given.items() if k != "prompt" or served.conditioning != "class"},
                           takes)
        if strength == 0 and not styling:
            raise RequestError("strength 0 would change nothing: image-to-image strength is in (0, 1]",
                               f"send a strength above 0 (default {EditOptions.strength})", param="strength")
        labels = None if translation else labels_for(served, label, prompt, n)
        # OpenAI's client sends one image as `image` and a list as `image[]` (openai/_utils extract_files, "brackets")
        uploads = [*(image or []), *(image_list or [])]
        wanted = 2 if styling else 1
        if not uploads:
            raise RequestError("no image was sent", "attach the image as the multipart file `image` (PNG or JPEG)",
                               param="image", status=422)
        if styling and len(uploads) == 1:
            raise RequestError(f"model {model!r} restyles a photo after a style image, and only one image came",
                               "send the style image as the second image: image=[photo, style] with OpenAI's client, "
                               "or curl -F 'image[]=@photo.png' -F 'image[]=@style.png'", param="image")
        if len(uploads) > wanted:
            raise RequestError(f"{len(uploads)} images came, and model {model!r} takes "
                               f"{'two: the photo, then the style image' if styling else 'one'}",
                               f"send {'two images' if styling else 'one image'}", param="image")
        image_bytes = await uploads[0].read()
        style_bytes = await uploads[1].read() if styling else None
        mask_bytes = await mask.read() if mask is not None else None
        seed = seed_of(seed)

        def work(job) -> list[bytes]:
            options = {
                "n": n,
                "labels": labels,
                "seed": seed,
                "image": read_upload(image_bytes, "image", config.max_image_pixels),
                "style": read_upload(style_bytes, "style image", config.max_image_pixels, "image")
                if styling else None,
                "mask": read_upload(mask_bytes, "mask", config.max_image_pixels)
                if mask_bytes is not None
                else None,
                "prompt": [prompt] * n if prompt and served.conditioning == "text" else None,
                "edit": {"strength": strength, "steps": steps, "guidance": guidance},
            }
            return edit_images(job, served, options)

        try:
            pngs = await wait(*workers.submit(work), request)
        except ClientGone:
            return Response(status_code=499)
        return {"created": int(time.time()), "model": served.name, "seed": seed,
                "data": [{"b64_json": base64.b64encode(png).decode()} for png in pngs]}

    # -- videos: OpenAI's Videos API (create, poll, download), genlab.serve.videos ---------------

    async def video_body(request: Request) -> tuple[VideoRequest, bytes | None]:
        """The request's fields, from a multipart form (the official client's way, with `input_reference` an
        image file) or JSON, checked by VideoRequest's schema; and the uploaded first frame, if any."""
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        upload = None
        if kind == "application/json":
            try:
                fields = json.loads(await request.body() or b"null")
            except ValueError:
                raise RequestError("the body is not valid JSON", "send a JSON object, or a multipart form") from None
            if not isinstance(fields, dict):
                raise RequestError("the body is not a JSON object", "send {\"model\": ..., \"prompt\": ...}")
        elif kind in ("multipart/form-data", "application/x-www-form-urlencoded"):
            fields = {}
            async with request.form(max_files=2, max_fields=20) as form:
                for key, value in form.multi_items():
                    if isinstance(value, str):
                        if value != "" or key == "prompt":  # a form's empty field is a field not given
                            fields[key] = value
                    elif key == "input_reference":
                        upload = await value.read()
                    else:
                        raise RequestError(f"{key} is a file; only input_reference takes one", f"send {key} as text",
                                           param=key)
        else:
            raise RequestError(f"a body of type {kind or '(none)'} cannot be read",
                               "send multipart/form-data (as OpenAI's client does) or application/json")
        if any(key.startswith("input_reference") for key in fields):
            raise RequestError("input_reference must be an uploaded image file (the first frame)",
                               "attach the image as the multipart file input_reference; genlab fetches no URLs and "
                               "keeps no file ids", param="input_reference")
        try:
            return VideoRequest.model_validate(fields), upload
        except ValidationError as error:
            raise RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in error.errors()]) from None

    @app.post("/v1/videos", response_model=VideoJob, responses=ERRORS, dependencies=guarded,
              openapi_extra=VIDEO_BODY)
    async def videos_create(request: Request) -> dict:
        body, upload = await video_body(request)
        served = find(body.model, "videos")
        cap(len(body.prompt), config.max_prompt_chars, "prompt", "send a shorter prompt")
        cap(body.steps or 0, config.max_steps, "steps", "ask for fewer sampling steps")
        sample = {"steps": body.steps, "guidance": body.guidance, "sampler": body.sampler,
                  "temperature": body.temperature}
        takes = served.sample_options - ({"guidance"} if served.conditioning != "class" else set())
        refuse_unsupported(served, sample, takes)
        size = videos.check_size(served, body.size)
        frames, seconds = videos.clip_frames(served, body.seconds)
        label = videos.label_of(served, body.prompt)
        videos.check_sampling(served, sample)
        video = videos.Video(videos.new_id(), served.name, body.prompt, seconds, size, frames,
                             served.model.config.fps, seed_of(body.seed))

        def work(job) -> None:
            first = read_upload(upload, "input_reference", config.max_image_pixels) if upload is not None else None
            videos.make_video(job, served, video, {"label": label, "first": first, "sample": sample})

        video.job, future = workers.submit(work)
        store.add(video)
        future.add_done_callback(lambda f: store.finish(video, Stopped("shutdown") if f.cancelled() else
                                                        f.exception()))
        return video.public()

    @app.get("/v1/videos/{video_id}", response_model=VideoJob, responses=ERRORS, dependencies=guarded)
    async def videos_retrieve(video_id: str, response: Response) -> dict:
        video = store.get(video_id)
        if not video.finished:  # the official client's poll waits this long between calls (default: 1 s)
            response.headers["openai-poll-after-ms"] = "250"
        return video.public()

    @app.get("/v1/videos/{video_id}/content", response_class=Response, dependencies=guarded, responses={
        **ERRORS, 200: {"content": VIDEO_FILES, "description": "video: the MP4 (H.264); thumbnail: the first frame "
                        "(PNG); spritesheet: every frame in a row (PNG); gif: the clip as a looping GIF (genlab's)"}})
    async def videos_content(video_id: str, variant: Annotated[
            Literal["video", "thumbnail", "spritesheet", "gif"], Query(description="which file")] = "video"):
        video = store.get(video_id)
        if video.status == "failed":
            raise RequestError(f"video {video_id} failed: {video.error['message']}", "make it again (POST /v1/videos)",
                               param="video_id")
        if video.status != "completed":
            raise RequestError(f"video {video_id} is {video.status} ({video.progress}%), not completed yet",
                               f"poll GET /v1/videos/{video_id} until its status is completed", param="video_id")
        media_type, key = videos.VARIANTS[variant]
        return Response(content=video.files[key], media_type=media_type)

    @app.delete("/v1/videos/{video_id}", response_model=VideoDeleted, responses=ERRORS, dependencies=guarded)
    async def videos_delete(video_id: str) -> dict:
        """Forget a video; one still being made stops at its next check."""
        return {"id": store.remove(video_id).id, "object": "video.deleted", "deleted": True}

    # -- the OpenAPI schema with this server's models and limits ---------------------------------

    def openapi() -> dict:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        components = schema["components"]["schemas"]
        components["VideoRequest"] = VideoRequest.model_json_schema(ref_template="#/components/schemas/{model}")
        components["VideoForm"] = copy.deepcopy(components["VideoRequest"])
        components["VideoForm"]["properties"]["input_reference"] = {
            "type": "string", "format": "binary", "description": "an image (PNG or JPEG): the first frame to animate"}
        edit_ref = schema["paths"]["/v1/images/edits"]["post"]["requestBody"]["content"][
            "multipart/form-data"
        ]["schema"]
        bodies = {"completions": components["CompletionRequest"],
                  "chat.completions": components["ChatCompletionRequest"],
                  "images.generations": components["ImageRequest"],
                  "images.edits": components[edit_ref["$ref"].split("/")[-1]]}
        for capability, body in [*bodies.items(), ("videos", components["VideoRequest"]),
                                    ("videos", components["VideoForm"])]:
            names = [n for n, s in registry.items() if capability in s.capabilities]
            props = body["properties"]
            if names:
                props["model"]["enum"] = names
            _bound(props.get("prompt"), "maxLength", config.max_prompt_chars)
            _bound(props.get("n"), "maximum", config.max_n)
            _bound(props.get("steps"), "maximum", config.max_steps)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi
    return app


def _bound(prop: dict | None, key: str, value: int) -> None:
    """Lower a bound in a property's schema (or in the non-null branch of an `X | None`)."""
    for target in ([prop] + prop.get("anyOf", [])) if prop else []:
        if key in target:
            target[key] = value
