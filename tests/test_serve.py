"""genlab serve: the API through FastAPI's test client and a real uvicorn on loopback, the limits (413/422,
429 under overload, timeouts, disconnects), schemathesis against the OpenAPI schema, and the web page in Chromium.

Models are tiny and untrained (built from configs and saved with save_pretrained): serving does not care
how good they are, only that every family's calls are routed, limited and answered correctly.
"""

from __future__ import annotations

import base64
import io
import json
import shutil
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("fastapi", reason="pip install fastapi uvicorn (genlab's runtime dependencies)")

from fastapi.testclient import TestClient  # noqa: E402
from servers import uvicorn_server, wait_until  # noqa: E402

from genlab.models.gan import GAN, GANConfig  # noqa: E402
from genlab.models.lm.gpt import GPT, GPTConfig  # noqa: E402
from genlab.models.lm.rnn import RNN, RNNConfig  # noqa: E402
from genlab.models.lm.tokenizers import CharTokenizer  # noqa: E402
from genlab.models.pix2pix import Pix2Pix, Pix2PixConfig  # noqa: E402
from genlab.models.vae import VAE, VAEConfig  # noqa: E402
from genlab.serve import ServeConfig, create_app  # noqa: E402
from genlab.serve.registry import load_models, parse_spec  # noqa: E402

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
TEXT = "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n"
CLASSES = ("cat", "dog", "owl")
FAST = {"threads": 1, "concurrency": 2, "queue": 4, "max_tokens": 64, "max_n": 4, "max_steps": 50}


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _spread(model):
    torch.manual_seed(0)
    with torch.no_grad():  # random weights with some spread, so that outputs vary with the seed
        for p in model.parameters():
            if p.ndim >= 2:
                p.normal_(0, 0.3)
    return model.eval()


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """One saved model per family: gpt, rnn, vae, a class-conditional gan, pix2pix (8x8 images)."""
    root = tmp_path_factory.mktemp("serve")
    tok = CharTokenizer.fit(TEXT)
    chars = {"vocab_size": tok.vocab_size, "chars": tok.chars}
    gpt = GPT(GPTConfig(block_size=32, n_layer=2, n_head=2, n_embd=32, **chars))
    rnn = RNN(RNNConfig(block_size=16, bptt=5, n_layer=1, n_embd=8, hidden=16, **chars))
    for lm in (gpt, rnn):
        lm.tokenizer = tok
    models = {"gpt": gpt, "rnn": rnn,
              "vae": VAE(VAEConfig(image_size=(8, 8), widths=(4, 8), hidden_dim=16, latent_dim=3)),
              "cgan": GAN(GANConfig(g_widths=(8, 4), d_widths=(4, 8), latent_dim=4, image_size=(8, 8),
                                    condition="class", num_classes=3, class_names=CLASSES)),
              "p2p": Pix2Pix(Pix2PixConfig(image_size=(8, 8), widths=(4, 8), d_widths=(4, 8)))}
    for name, model in models.items():
        _spread(model).save_pretrained(root / name / "model")
    return {name: root / name for name in models}


@pytest.fixture(scope="module")
def registry(folders):
    return load_models([str(path) for path in folders.values()])


@pytest.fixture(scope="module")
def client(registry):
    with TestClient(create_app(registry, ServeConfig(**FAST))) as c:
        yield c


def _png(b64: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))))


def _upload(array: np.ndarray, mode: str = "L") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array.astype(np.uint8), mode).save(buffer, format="PNG")
    return buffer.getvalue()


def _events(text: str) -> list:
    out = [line[6:] for line in text.split("\n\n") if line.startswith("data: ")]
    return [e if e == "[DONE]" else json.loads(e) for e in out]


# -- models, naming, health ---------------------------------------------------------------------

def test_models_load_once_with_names_and_capabilities(client, folders, registry):
    assert parse_spec("runs/gpt") == ("gpt", "runs/gpt") and parse_spec("x=runs/a/model")[0] == "x"
    assert parse_spec(str(folders["vae"] / "model"))[0] == "vae"  # a run's model/ folder takes the run's name
    with pytest.raises(Exception, match="two models are named"):
        load_models([str(folders["gpt"]), f"gpt={folders['rnn']}"])
    cards = {m["id"]: m for m in client.get("/v1/models").json()["data"]}
    assert set(cards) == {"gpt", "rnn", "vae", "cgan", "p2p"}
    assert cards["gpt"]["capabilities"] == ["completions"] and cards["rnn"]["family"] == "rnn"
    assert cards["vae"]["capabilities"] == ["images.generations"] and cards["vae"]["image_size"] == [8, 8]
    assert cards["cgan"]["conditioning"] == "class" and cards["cgan"]["classes"] == list(CLASSES)
    assert cards["p2p"]["capabilities"] == ["images.edits"] and cards["p2p"]["edit_modes"] == ["translation"]
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["limits"]["max_n"] == 4 and not health["auth"]


# -- completions --------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["gpt", "rnn"])
def test_completion_equals_the_models_own_generate(client, registry, name):
    body = {"model": name, "prompt": "All:", "max_tokens": 30, "temperature": 0.9, "top_p": 0.95, "seed": 7}
    r = client.post("/v1/completions", json=body)
    assert r.status_code == 200, r.text
    out = r.json()
    expected = "".join(registry[name].model.generate("All:", max_new_tokens=30, temperature=0.9, top_p=0.95, seed=7))
    assert out["object"] == "text_completion" and out["choices"][0]["text"] == expected
    assert out["choices"][0]["finish_reason"] == "length" and out["seed"] == 7
    assert out["usage"] == {"prompt_tokens": 4, "completion_tokens": 30, "total_tokens": 34}


def test_stop_strings_streaming_and_n(client):
    full = client.post("/v1/completions", json={"model": "gpt", "prompt": "A", "max_tokens": 40, "seed": 3}).json()
    text = full["choices"][0]["text"]
    stop = text[10:12]
    cut = client.post("/v1/completions", json={"model": "gpt", "prompt": "A", "max_tokens": 40, "seed": 3,
                                                "stop": [stop]}).json()["choices"][0]
    assert cut["finish_reason"] == "stop" and cut["text"] == text[: text.index(stop)]
    r = client.post("/v1/completions", json={"model": "gpt", "prompt": "A", "max_tokens": 40, "seed": 3, "n": 2,
                                              "stream": True, "stream_options": {"include_usage": True}})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = _events(r.text)
    assert events[-1] == "[DONE]" and events[-2]["usage"]["completion_tokens"] == 80
    pieces = [c for e in events[:-2] for c in e["choices"]]
    streamed = "".join(c["text"] for c in pieces if c["index"] == 0)
    assert streamed == text and len([c for c in pieces if c["text"]]) > 10  # arrived in many pieces
    assert [c["finish_reason"] for c in pieces if c["finish_reason"]] == ["length", "length"]
    second = "".join(c["text"] for c in pieces if c["index"] == 1)
    assert second and second != text  # the second choice uses seed + 1


def test_max_tokens_is_lowered_to_the_servers_limit(client):
    out = client.post("/v1/completions", json={"model": "gpt", "max_tokens": 10_000, "seed": 0}).json()
    assert out["usage"]["completion_tokens"] == FAST["max_tokens"] and out["choices"][0]["finish_reason"] == "length"


# -- images -------------------------------------------------------------------------------------

def test_image_generation_is_seeded_and_class_conditional(client):
    one = client.post("/v1/images/generations", json={"model": "vae", "n": 3, "seed": 5}).json()
    again = client.post("/v1/images/generations", json={"model": "vae", "n": 3, "seed": 5}).json()
    other = client.post("/v1/images/generations", json={"model": "vae", "n": 3, "seed": 6}).json()
    assert len(one["data"]) == 3 and one["data"] == again["data"] and one["data"] != other["data"]
    assert _png(one["data"][0]["b64_json"]).shape == (8, 8)
    by_prompt = client.post("/v1/images/generations", json={"model": "cgan", "prompt": "Dog", "n": 2, "seed": 1})
    by_label = client.post("/v1/images/generations", json={"model": "cgan", "label": 1, "n": 2, "seed": 1})
    cats = client.post("/v1/images/generations", json={"model": "cgan", "label": "cat", "n": 2, "seed": 1})
    assert by_prompt.status_code == 200 and by_prompt.json()["data"] == by_label.json()["data"]
    assert cats.json()["data"] != by_label.json()["data"]
    bad = client.post("/v1/images/generations", json={"model": "cgan", "prompt": "a red dress"})
    assert bad.status_code == 400 and "cat, dog, owl" in bad.json()["error"]["message"]


@pytest.mark.parametrize("body, status, words", [
    ({"model": "vae", "prompt": "a cat"}, 400, "takes no prompt"),
    ({"model": "vae", "steps": 10}, 400, "takes no steps"),
    ({"model": "vae", "size": "512x512"}, 400, "makes 8x8 images"),
    ({"model": "vae", "n": 5}, 422, "limit of 4"),
    ({"model": "vae", "n": 0}, 422, "n: Input should be greater than or equal to 1"),
    ({"model": "gpt"}, 400, "cannot do images.generations; fix: use vae or cgan"),
    ({"model": "nope"}, 404, "no model named 'nope'"),
    ({"model": "vae", "colour": "red"}, 422, "colour: Extra inputs are not permitted"),
])
def test_image_requests_are_refused_with_a_message(client, body, status, words):
    r = client.post("/v1/images/generations", json=body)
    assert r.status_code == status and words in r.json()["error"]["message"], r.text
    assert "fix:" in r.json()["error"]["message"]


def test_translation_edit_and_bad_uploads(client, registry):
    sketch = np.full((8, 8), 255)
    sketch[2:6, 3] = 0
    r = client.post("/v1/images/edits", data={"model": "p2p"}, files={"image": ("s.png", _upload(sketch), "image/png")})
    assert r.status_code == 200, r.text
    expected = registry["p2p"].model.translate(torch.tensor(sketch / 255, dtype=torch.float32)[None, None])
    got = _png(r.json()["data"][0]["b64_json"]).astype(np.float32) / 255
    assert np.abs(got - expected[0, 0].numpy()).max() <= 1 / 255 + 1e-6
    r = client.post("/v1/images/edits", data={"model": "p2p"}, files={"image": ("x.png", b"not an image", "image/png")})
    assert r.status_code == 422 and "not a readable image" in r.json()["error"]["message"]
    r = client.post("/v1/images/edits", data={"model": "vae"}, files={"image": ("s.png", _upload(sketch), "image/png")})
    assert r.status_code == 400 and "use p2p" in r.json()["error"]["message"]
    r = client.post("/v1/images/edits", data={"model": "p2p", "strength": "0.3"},
                    files={"image": ("s.png", _upload(sketch), "image/png")})
    assert r.status_code == 400 and "takes no strength" in r.json()["error"]["message"]


def tiny_diffusion(tmp_path):
    """A real diffusion model (genlab.models.diffusion), tiny and with spread weights, saved and loaded."""
    from genlab.models.diffusion import Diffusion, DiffusionConfig

    model = Diffusion(DiffusionConfig(image_size=(8, 8), widths=(8, 16), blocks=(1, 1), attention=(False, True),
                                      condition="class", num_classes=3, class_names=CLASSES))
    torch.manual_seed(0)
    with torch.no_grad():  # residual branches start at zero; spread them so that outputs depend on the input
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    model.save_pretrained(tmp_path / "dm" / "model")
    return load_models([str(tmp_path / "dm")])


def test_inpainting_keeps_the_unmasked_pixels(tmp_path):
    app = create_app(tiny_diffusion(tmp_path), ServeConfig(**FAST))
    image = np.tile(np.arange(0, 256, 32), (8, 1))
    mask = np.zeros((8, 8))
    mask[:, 4:] = 255  # white: regenerate the right half
    with TestClient(app) as c:
        card = c.get("/v1/models").json()["data"][0]
        assert card["edit_modes"] == ["image-to-image", "inpainting"] and "mask" in card["options"]
        r = c.post(
            "/v1/images/edits",
            data={"model": "dm", "n": "2", "steps": "4", "seed": "1"},
            files={
                "image": ("i.png", _upload(image), "image/png"),
                "mask": ("m.png", _upload(mask), "image/png"),
            },
        )
        assert r.status_code == 200, r.text
        assert len(r.json()["data"]) == 2
        out = _png(r.json()["data"][0]["b64_json"])
        assert np.array_equal(out[:, :4], image[:, :4]) and not np.array_equal(out[:, 4:], image[:, 4:])
        rgba = np.zeros((8, 8, 4))
        rgba[..., 3] = 255
        rgba[:, :4, 3] = 0  # OpenAI's convention: transparent = regenerate (the left half this time)
        r = c.post("/v1/images/edits", data={"model": "dm", "seed": "1", "steps": "4"},
                   files={"image": ("i.png", _upload(image), "image/png"),
                          "mask": ("m.png", _upload(rgba, "RGBA"), "image/png")})
        out = _png(r.json()["data"][0]["b64_json"])
        assert np.array_equal(out[:, 4:], image[:, 4:]) and not np.array_equal(out[:, :4], image[:, :4])


# -- limits and safety --------------------------------------------------------------------------

def test_size_limits_answer_413_and_422(registry):
    app = create_app(registry, ServeConfig(**FAST, max_body_bytes=4096, max_prompt_chars=50, max_image_pixels=100))
    with TestClient(app) as c:
        r = c.post("/v1/completions", json={"model": "gpt", "prompt": "x" * 5000})
        assert r.status_code == 413 and "limit of 4,096 bytes" in r.json()["error"]["message"]

        def chunks():  # no Content-Length: the limit is counted as the body arrives
            for _ in range(10):
                yield b" " * 1000

        r = c.post("/v1/completions", content=chunks(), headers={"Content-Type": "application/json"})
        assert r.status_code == 413
        r = c.post("/v1/completions", json={"model": "gpt", "prompt": "x" * 51})
        assert r.status_code == 422 and r.json()["error"]["param"] == "prompt" and "limit of 50" in r.text
        big = _upload(np.zeros((11, 11)))
        r = c.post("/v1/images/edits", data={"model": "p2p"}, files={"image": ("b.png", big, "image/png")})
        assert r.status_code == 413 and "11x11 pixels" in r.json()["error"]["message"]
        schema = c.get("/openapi.json").json()["components"]["schemas"]
        assert schema["CompletionRequest"]["properties"]["prompt"]["maxLength"] == 50
        assert schema["ImageRequest"]["properties"]["model"]["enum"] == ["vae", "cgan"]


def test_api_key_guards_v1_but_not_health(registry):
    with TestClient(create_app(registry, ServeConfig(**FAST, api_key="sesame-1234"))) as c:
        assert c.get("/health").status_code == 200 and c.get("/").status_code == 200
        r = c.get("/v1/models")
        assert r.status_code == 401 and "Authorization: Bearer" in r.json()["error"]["message"]
        assert c.get("/v1/models", headers={"Authorization": "Bearer wrong-key-00"}).status_code == 401
        ok = c.post("/v1/completions", json={"model": "gpt", "max_tokens": 2},
                    headers={"Authorization": "Bearer sesame-1234"})
        assert ok.status_code == 200
        assert "HTTPBearer" in c.get("/openapi.json").json()["components"]["securitySchemes"]


def test_real_server_streams_stays_healthy_refuses_overload_and_cancels_on_disconnect(registry):
    """concurrency 1, no queue: one long stream fills the server; /health still answers; a second request is
    refused with 429; closing the stream stops the generation at once."""
    app = create_app(registry, ServeConfig(threads=1, concurrency=1, queue=0, max_tokens=100_000))
    workers = app.state.workers
    with uvicorn_server(app) as url, httpx.Client(base_url=url, timeout=10) as http:
        body = {"model": "gpt", "prompt": "All:", "max_tokens": 100_000, "stream": True, "seed": 0}
        with http.stream("POST", "/v1/completions", json=body) as stream:
            assert stream.status_code == 200
            lines = stream.iter_lines()
            first = next(line for line in lines if line.startswith("data: "))
            assert json.loads(first[6:])["choices"][0]["text"]
            start = time.monotonic()
            health = http.get("/health")
            assert health.status_code == 200 and time.monotonic() - start < 2.0
            assert health.json()["running"] == 1
            refused = http.post("/v1/completions", json={"model": "gpt", "max_tokens": 1})
            assert refused.status_code == 429 and refused.headers["retry-after"] == "1"
            assert "server is busy" in refused.json()["error"]["message"]
        # the stream is closed after a few tokens of 100,000 (tens of seconds of work): the job must stop now
        stopped_in = wait_until(lambda: workers.admitted == 0, 5)
        assert stopped_in < 3 and workers.counts["cancelled"] == 1 and http.get("/health").json()["running"] == 0
        ok = http.post("/v1/completions", json={"model": "gpt", "max_tokens": 3})
        assert ok.status_code == 200 and ok.json()["usage"]["completion_tokens"] == 3


def test_timeouts_answer_504_or_end_the_stream_with_an_error(registry):
    app = create_app(registry, ServeConfig(threads=1, concurrency=1, queue=2, max_tokens=100_000, timeout=0.5))
    with uvicorn_server(app) as url, httpx.Client(base_url=url, timeout=10) as http:
        long = {"model": "gpt", "max_tokens": 100_000, "seed": 0}
        start = time.monotonic()
        r = http.post("/v1/completions", json=long)
        assert r.status_code == 504 and "time limit of 0.5 s" in r.json()["error"]["message"]
        assert time.monotonic() - start < 5
        r = http.post("/v1/completions", json=long | {"stream": True})
        events = _events(r.text)
        assert r.status_code == 200 and events[-1] == "[DONE]" and "time limit" in events[-2]["error"]["message"]
        wait_until(lambda: app.state.workers.admitted == 0, 5)
        assert app.state.workers.counts["timed_out"] == 2


# -- the OpenAPI schema, fuzzed -----------------------------------------------------------------

def test_schemathesis_finds_no_server_errors(registry):
    schemathesis = pytest.importorskip("schemathesis")
    from hypothesis import HealthCheck, given, settings
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        response_schema_conformance,
        status_code_conformance,
    )

    app = create_app(registry, ServeConfig(**FAST, timeout=10))
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    failures = []
    for operation in schema.get_all_operations():
        operation = operation.ok()

        @settings(max_examples=12, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck), derandomize=True)
        def check(case):
            case.call_and_validate(checks=[not_a_server_error, status_code_conformance, content_type_conformance,
                                           response_schema_conformance])

        try:
            given(operation.as_strategy())(check)()
        except Exception as error:  # noqa: BLE001 - collect every operation's failure, then report them all
            failures.append(f"{operation.label}: {error}")
    assert not failures, "\n\n".join(failures)


# -- the page in a real browser -----------------------------------------------------------------

def test_page_streams_text_and_shows_an_image_grid_in_chromium(registry):
    playwright = pytest.importorskip("playwright.sync_api", reason="pip install playwright (make test installs it)")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("no chromium binary: apt-get install chromium (make test installs it where apt works)")
    app = create_app(registry, ServeConfig(threads=1, concurrency=2, max_tokens=400, max_n=4))
    outside = []

    def until(condition, seconds: float = 30):  # polled from Python: the page's CSP forbids eval, which
        wait_until(condition, seconds)        # Playwright's wait_for_function would need
    with uvicorn_server(app) as url, playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run"])
        page = browser.new_page(viewport={"width": 1200, "height": 800})
        page.on(
            "request",
            lambda r: None if r.url.startswith(url) or r.url.startswith("data:") else outside.append(r.url),
        )
        page.goto(url + "/")
        until(lambda: page.locator("#model option").count() == 5)
        page.select_option("#model", "gpt")
        page.fill("#prompt", "All:")
        page.fill("#max_tokens", "400")
        page.fill("#seed", "4")
        page.click("#generate")
        until(lambda: page.locator("#generated").count() and page.text_content("#generated"))
        partial = len(page.text_content("#generated"))
        until(lambda: "finished" in page.text_content("#meta"))
        text = page.text_content("#generated")
        meta = page.text_content("#meta")
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "serve-text.png"))
        page.select_option("#model", "cgan")
        assert page.is_hidden("#text-options") and page.is_visible("#class-box")
        page.fill("#n", "4")
        page.fill("#seed", "2")
        page.click("#generate")
        until(lambda: page.locator("#grid img").count() == 4)
        widths = page.eval_on_selector_all("#grid img", "els => els.map(e => e.complete && e.naturalWidth)")
        page.screenshot(path=str(ARTIFACTS / "serve.png"), full_page=True)
        page.select_option("#model", "vae")
        page.fill("#n", "9")
        page.click("#generate")
        until(lambda: page.text_content("#error"))
        error = page.text_content("#error")
        browser.close()
    expected = "".join(registry["gpt"].model.generate("All:", max_new_tokens=400, temperature=0.8, seed=4))
    pieces = int(meta.split(" pieces")[0].split()[-1])
    assert text == expected and 0 < partial and "seed 4" in meta and pieces > 100  # streamed, piece by piece
    assert widths == [8, 8, 8, 8]
    assert "n = 9 is above this server's limit of 4" in error  # the server's message reaches the page
    assert not outside, outside


def test_a_worker_flushes_subnormals_on_its_own_thread_only():
    """A server worker flushes subnormals for itself; the thread that started it keeps IEEE arithmetic after a
    run's flushed block (hypothesis, for one, refuses to run under flush-to-zero)."""
    import threading

    from genlab.hardware import denormals_flushed
    from genlab.serve.limits import _start_worker

    flushed_there = []

    def worker():
        _start_worker(1)
        flushed_there.append((torch.tensor([1e-39]) * 1.0).item() == 0)

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    with denormals_flushed():
        assert (torch.tensor([1e-39]) * 1.0).item() == 0
    assert flushed_there == [True] and (torch.tensor([1e-39]) * 1.0).item() != 0
