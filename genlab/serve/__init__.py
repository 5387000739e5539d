"""`genlab serve`: saved models behind an HTTP API (OpenAI-shaped completions and images) and a web page.

- `limits.py`   the server's limits (`ServeConfig`) and the worker threads that run generation
                off the event loop, with admission (429 when full), deadlines and cancellation;
- `registry.py` the models: loaded once at start-up, what each can do, and the generation
                calls the endpoints run in a worker (text pieces, PNG images, edits);
- `schemas.py`  the request and response bodies (pydantic), which are the OpenAPI schema;
- `app.py`      the FastAPI app: routes, errors, API key, body-size limit, the page;
- `static/`     the page: one HTML file with plain JavaScript, no build step, no network.

FastAPI and uvicorn are imported only here, so the rest of genlab does not need them.
"""

from genlab.serve.limits import ServeConfig

__all__ = ["ServeConfig", "create_app", "serve"]


def __getattr__(name: str):
    if name in ("create_app", "serve"):
        from genlab.serve import app

        return getattr(app, name)
    raise AttributeError(name)
