"""`genlab serve`: saved models behind an HTTP API (OpenAI-shaped completions, images, speech and videos) and a
web page.

- `limits.py`   the server's limits (`ServeConfig`) and the worker threads that run generation
                off the event loop, with admission (429 when full), deadlines and cancellation;
- `registry.py` the models: loaded once at start-up, what each can do, and the generation
                calls the endpoints run in a worker (text pieces, PNG images, edits);
- `videos.py`   video jobs (OpenAI's Videos API): made on the workers, kept in memory (bounded), downloaded as
                MP4, GIF or PNG;
- `schemas.py`  the request and response bodies (pydantic), which are the OpenAPI schema;
- `app.py`      the FastAPI app: routes, errors, API key, body-size limit, the page;
- `static/`     the page: one HTML file with plain JavaScript, no build step, no network.

FastAPI and uvicorn are imported only here, so the rest of genlab does not need them.
"""

from __future__ import annotations

from genlab.serve.limits import ServeConfig

__all__ = ["ServeConfig", "create_app", "serve"]


def create_app(models, config: ServeConfig | None = None):
    """The FastAPI app serving `models` (paths or NAME=PATH specs, or loaded `Served` models); see `app.create_app`."""
    from genlab.serve.app import create_app as _create_app

    return _create_app(models, config)


def serve(
    models: list[str],
    host: str = "127.0.0.1",
    port: int = 8000,
    api_key: str | None = None,
    concurrency: int = 0,
    queue: int = 16,
    threads: int = 0,
    timeout: float = 120.0,
    max_tokens: int = 1024,
    max_n: int = 16,
    max_steps: int = 1000,
    max_prompt_chars: int = 8000,
    max_body_bytes: int = 16 * 2**20,
    max_videos: int = 64,
    max_batch: int = 64,
) -> None:
    """Serve saved models over HTTP: OpenAI-shaped completions, images, speech and videos, and a web page at /

    Args:
        models: run or model folders; each is served under its folder name, or NAME=PATH to name it.
        host: the address to bind (127.0.0.1: this machine only; 0.0.0.0: every interface, then set an API key).
        port: the TCP port.
        api_key: clients must send `Authorization: Bearer KEY` (default: $GENLAB_API_KEY; unset: no key).
        concurrency: requests generating at once, one thread each (0: one per CPU core).
        queue: requests waiting for a thread; more are answered 429.
        threads: torch threads per request (0: CPU cores / concurrency).
        timeout: seconds a request may take; past it, 503 (still waiting) or 504 (generating).
        max_tokens: completions asking for more tokens are lowered to this.
        max_n: completions or images per request; more are refused (422).
        max_steps: diffusion sampling steps per request; more are refused (422).
        max_prompt_chars: longer prompts are refused (422).
        max_body_bytes: larger request bodies (uploads included) are refused (413).
        max_videos: finished video jobs kept in memory for download; beyond this the oldest are forgotten.
        max_batch: text sequences a GPT decodes together (continuous batching); `queue` more wait, then 429.
    """
    import os
    import sys

    import uvicorn

    from genlab.serve.app import create_app

    api_key = api_key or os.environ.get("GENLAB_API_KEY") or None
    config = ServeConfig(host=host, port=port, api_key=api_key, concurrency=concurrency, queue=queue, threads=threads,
                         timeout=timeout, max_tokens=max_tokens, max_n=max_n, max_steps=max_steps,
                         max_prompt_chars=max_prompt_chars, max_body_bytes=max_body_bytes,
                         max_videos=max_videos, max_batch=max_batch)
    app = create_app(list(models), config)
    for name, served in app.state.registry.items():
        print(f"  {name}: {served.family} ({', '.join(served.capabilities)}) from {served.path}")
    if host not in ("127.0.0.1", "localhost", "::1") and not api_key:
        print(f"warning: serving on {host} without an API key: anyone who can reach it may use it "
              "(set GENLAB_API_KEY or --api-key)", file=sys.stderr)
    print(
        f"genlab serve: http://{'127.0.0.1' if host == '0.0.0.0' else host}:{port}/  (API: /v1, schema: /openapi.json)"
    )
    uvicorn.run(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=5)
