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
import warnings
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("fastapi", reason="pip install fastapi uvicorn (genlab's runtime dependencies)")

from fastapi.testclient import TestClient  # noqa: E402
from servers import uvicorn_server, wait_until  # noqa: E402

from genlab.data.tokenizers import CharTokenizer  # noqa: E402
from genlab.models.gan import GAN, GANConfig  # noqa: E402
from genlab.models.lm.gpt import GPT, GPTConfig  # noqa: E402
from genlab.models.lm.rnn import RNN, RNNConfig  # noqa: E402
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
    """A batch of one sequence, no queue: one long stream fills the GPT's batcher; /health still answers; a second
    request is refused with 429; closing the stream stops the generation at once."""
    app = create_app(registry, ServeConfig(threads=1, concurrency=1, queue=0, max_batch=1, max_tokens=100_000))
    workers, batcher = app.state.workers, app.state.batchers["gpt"]
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
            assert health.json()["decoding"]["gpt"] == {"running": 1, "waiting": 0}
            refused = http.post("/v1/completions", json={"model": "gpt", "max_tokens": 1})
            assert refused.status_code == 429 and refused.headers["retry-after"] == "1"
            assert "server is busy" in refused.json()["error"]["message"]
        # the stream is closed after a few tokens of 100,000 (tens of seconds of work): the job must stop now
        stopped_in = wait_until(lambda: batcher.sequences == 0, 5)
        # the outcome is counted on the event loop once the request's future settles, just after its rows left
        wait_until(lambda: workers.counts["cancelled"] > 0, 5)
        assert stopped_in < 3 and workers.counts["cancelled"] == 1
        assert http.get("/health").json()["decoding"]["gpt"]["running"] == 0
        ok = http.post("/v1/completions", json={"model": "gpt", "max_tokens": 3})
        assert ok.status_code == 200 and ok.json()["usage"]["completion_tokens"] == 3


def test_concurrent_completions_decode_together_and_each_is_its_own_generation(registry):
    """Continuous batching: requests of different lengths, options and seeds, sent at once, join a batch of three
    rows (the rest wait), leave it as they end, and each says exactly what the model generates for it alone
    (greedy and sampled, stop strings, n > 1, and past the 32-token context, where a window slides)."""
    import asyncio

    from genlab.models.lm.generation import generate

    app = create_app(registry, ServeConfig(threads=1, concurrency=1, queue=8, max_batch=3, max_tokens=400))
    bodies = [{"prompt": "All:", "max_tokens": 80, "temperature": 0, "seed": 0},
              {"prompt": "First Citizen:\nBefore", "max_tokens": 20, "temperature": 1.0, "seed": 5, "n": 2},
              {"prompt": "", "max_tokens": 50, "temperature": 0.8, "top_k": 5, "seed": 7, "stop": ["e"]},
              {"prompt": "Speak, speak.", "max_tokens": 3, "temperature": 1.0, "top_p": 0.9, "seed": 3,
               "repetition_penalty": 1.3}]

    async def send_all(url: str) -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            return await asyncio.gather(*(http.post("/v1/completions", json={"model": "gpt", **b}) for b in bodies))

    with uvicorn_server(app) as url:
        responses = asyncio.run(send_all(url))
    model = registry["gpt"].model
    for body, r in zip(bodies, responses, strict=True):
        assert r.status_code == 200, r.text
        for choice in r.json()["choices"]:
            alone = "".join(generate(model, body["prompt"], body["max_tokens"], body["temperature"], body.get("top_k"),
                                     body.get("top_p"), body.get("repetition_penalty", 1.0), body.get("stop"),
                                     seed=body["seed"] + choice["index"]))
            assert choice["text"] == alone, (body, choice["index"])
    batcher = app.state.batchers["gpt"]
    assert app.state.workers.counts["completed"] == 4 and batcher.sequences == 0 and batcher.widest == 3


def test_concurrent_image_requests_sample_together_and_each_image_is_its_own_seeds(tmp_path):
    """A diffusion model's requests that wait together and sample alike run as one batch; each image is what the
    model draws for it alone from its request's seed + its index (its own noise), whatever shared its batch; a
    request beyond the batch and queue is refused with 429."""
    import asyncio

    registry = tiny_diffusion(tmp_path)
    app = create_app(registry, ServeConfig(threads=1, concurrency=1, queue=4, max_batch=8, max_steps=1000))
    batcher = app.state.image_batchers["dm"]
    blocker = {"model": "dm", "label": 1, "n": 2, "seed": 0, "steps": 500}  # busy (2 s) while the others arrive
    bodies = [{"label": 0, "n": 2, "seed": 1, "steps": 6}, {"label": 2, "n": 1, "seed": 9, "steps": 6},
              {"prompt": CLASSES[1], "n": 3, "seed": 4, "steps": 6},
              {"label": 0, "n": 1, "seed": 2, "steps": 6, "sampler": "ddpm"}]  # samples otherwise: its own batch

    async def send_all(url: str):
        async with httpx.AsyncClient(base_url=url, timeout=60) as http:
            first = asyncio.ensure_future(http.post("/v1/images/generations", json=blocker))
            while (await http.get("/health")).json()["sampling"]["dm"]["running"] == 0:
                assert not first.done(), first.result().text
                await asyncio.sleep(0.01)
            rest = [asyncio.ensure_future(http.post("/v1/images/generations", json={"model": "dm", **b}))
                    for b in bodies]
            while (await http.get("/health")).json()["sampling"]["dm"]["waiting"] < 7:  # all queued behind it
                assert not first.done(), "the blocker ended before the others arrived"
                await asyncio.sleep(0.01)
            # 2 images sampling and 7 waiting, of 8 at once + 4 in the queue: 4 more do not fit
            refused = await http.post("/v1/images/generations", json={"model": "dm", "label": 0, "n": 4, "seed": 0})
            return await first, await asyncio.gather(*rest), refused

    with uvicorn_server(app) as url:
        first, responses, refused = asyncio.run(send_all(url))
    assert refused.status_code == 429 and "this model's limit" in refused.json()["error"]["message"]
    assert first.status_code == 200 and all(r.status_code == 200 for r in responses), [r.text for r in responses]
    model = registry["dm"].model
    for body, r in zip(bodies, responses, strict=True):
        label = body.get("label", 1)
        alone = model.sample(body["n"], labels=[label] * body["n"],
                             generator=[torch.Generator().manual_seed(body["seed"] + i) for i in range(body["n"])],
                             options=model.sample_options(steps=body["steps"], sampler=body.get("sampler")))
        got = np.stack([_png(d["b64_json"]) for d in r.json()["data"]]).astype(int)
        expected = (alone[:, 0].numpy() * 255).round().astype(int)
        assert np.abs(got - expected).max() <= 1, body  # float sums in another batch order: a rounding apart
    assert batcher.widest == 6, "the three alike requests (6 images) sampled as one batch"
    assert batcher.images == 0 and app.state.workers.counts["completed"] == 5
    unbatched = create_app(registry, ServeConfig(threads=1, concurrency=1, max_batch=1))  # the worker pool's path
    assert not unbatched.state.image_batchers
    with TestClient(unbatched) as c:
        again = c.post("/v1/images/generations", json={"model": "dm", **bodies[0]}).json()
    pixels = [np.stack([_png(d["b64_json"]) for d in r["data"]]).astype(int) for r in (again, responses[0].json())]
    assert np.abs(pixels[0] - pixels[1]).max() <= 1, "a seed draws the same images with or without batching"


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
        wait_until(lambda: app.state.batchers["gpt"].sequences == 0, 5)
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
    from genlab.serve.limits import start_worker

    flushed_there = []

    def worker():
        start_worker(1)
        flushed_there.append((torch.tensor([1e-39]) * 1.0).item() == 0)

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    with denormals_flushed():
        assert (torch.tensor([1e-39]) * 1.0).item() == 0
    assert flushed_there == [True] and (torch.tensor([1e-39]) * 1.0).item() != 0


# -- videos: OpenAI's Videos API through the official client, and the page ----------------------

@pytest.fixture(scope="module")
def video_registry(tmp_path_factory):
    """Two tiny video models (genlab.models.video: 6 frames of 16x16 at 4 fps, 2 sampling steps, spread weights),
    class-conditional ("clips") and unconditional ("free"), saved and loaded. Built from configs rather than
    trained, as the other models here: serving does not care how good they are."""
    from genlab.models.video import VideoConfig, VideoDiffusion

    root = tmp_path_factory.mktemp("video")
    for name, condition in (("clips", "class"), ("free", "none")):
        classes = {"num_classes": 3, "class_names": CLASSES} if condition == "class" else {}
        model = VideoDiffusion(VideoConfig(image_size=(16, 16), frames=6, fps=4.0, widths=(32, 64), blocks=(1, 1),
                                           patch=4, sample_steps=2, condition=condition, **classes))
        torch.manual_seed(0)
        with torch.no_grad():  # residual branches start at zero; spread them so that clips depend on the seed
            for p in model.parameters():
                p.add_(0.05 * torch.randn_like(p))
        model.save_pretrained(root / name / "model")
    return load_models([str(root / "clips"), str(root / "free")])


def test_videos_through_the_official_openai_client(video_registry, tmp_path):
    openai = pytest.importorskip("openai")
    from genlab.data.video import read_video

    def frames_of(content: bytes) -> np.ndarray:
        path = tmp_path / f"{len(list(tmp_path.iterdir()))}.mp4"
        path.write_bytes(content)
        frames, fps = read_video(path)
        assert fps == 4
        return frames

    def png(content: bytes) -> np.ndarray:
        return np.asarray(Image.open(io.BytesIO(content)))

    app = create_app(video_registry, ServeConfig(**FAST, max_videos=3))
    with uvicorn_server(app) as url, warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the client marks OpenAI's own (Sora) API deprecated
        client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
        card = {m.id: m for m in client.models.list()}["clips"].model_dump()
        assert card["kind"] == "video" and card["capabilities"] == ["videos"] and card["classes"] == list(CLASSES)
        assert card["video"] == {"frames": 6, "fps": 4.0, "seconds": 1.5} and card["image_size"] == [16, 16]

        dog = client.videos.create_and_poll(model="clips", prompt="Dog", seconds="1", size="16x16",
                                            extra_body={"seed": 3})
        assert (dog.status, dog.progress, dog.seconds, dog.size, dog.model) == ("completed", 100, "1", "16x16", "clips")
        assert dog.completed_at >= dog.created_at and dog.model_dump()["seed"] == 3
        clip = frames_of(client.videos.download_content(dog.id).content)  # variant "video": the MP4
        assert clip.shape == (4, 16, 16, 3)  # 1 s at 4 fps: the model's first 4 frames of 6
        sheet_png = client.videos.download_content(dog.id, variant="spritesheet").content
        sheet, thumbnail = png(sheet_png), png(client.videos.download_content(dog.id, variant="thumbnail").content)
        assert sheet.shape == (16, 4 * 17 - 1) and np.array_equal(thumbnail, sheet[:, :16])  # frames, 1 px apart
        tiles = np.stack([sheet[:, 17 * i: 17 * i + 16] for i in range(4)])
        assert tiles.std() > 1 and np.abs(clip[..., 0].astype(int) - tiles).mean() < 4  # H.264 is near, not exact
        again = client.videos.create_and_poll(model="clips", prompt="dog", seconds="1", extra_body={"seed": 3})
        assert client.videos.download_content(again.id, variant="spritesheet").content == sheet_png  # the same seed

        free = client.videos.create_and_poll(model="free", prompt="")  # seconds left out: the whole clip
        assert free.seconds == "1.5" and frames_of(client.videos.download_content(free.id).content).shape[0] == 6
        still = np.full((16, 16), 200)
        animated = client.videos.create_and_poll(model="free", prompt="", input_reference=(
            "first.png", _upload(still), "image/png"))
        first = png(client.videos.download_content(animated.id, variant="thumbnail").content)
        assert animated.status == "completed" and np.array_equal(first, still)  # the given frame opens the clip

        refusals = [({"model": "clips", "prompt": "a horse"}, "is not one of them; fix: send one of cat, dog, owl"),
                    ({"model": "clips", "prompt": ""}, "the prompt is empty"),
                    ({"model": "clips", "prompt": "cat", "seconds": "4"}, "ask for at most 1.5 seconds"),
                    ({"model": "clips", "prompt": "cat", "size": "1280x720"}, "makes 16x16 clips, not 1280x720"),
                    ({"model": "free", "prompt": "a cat"}, "no prompt steers it"),
                    ({"model": "free", "prompt": "", "extra_body": {"guidance": 2}}, "takes no guidance")]
        for fields, message in refusals:
            with pytest.raises(openai.BadRequestError, match=message):
                client.videos.create(**fields)
        with pytest.raises(openai.UnprocessableEntityError, match="steps: Input should be greater than or equal"):
            client.videos.create(model="clips", prompt="cat", extra_body={"steps": 0})
        with pytest.raises(openai.NotFoundError, match="no model named 'sora-2'"):
            client.videos.create(model="sora-2", prompt="cat")
        with pytest.raises(openai.NotFoundError, match="no video 'video_nope'"):
            client.videos.retrieve("video_nope")
        # three finished videos are kept (max_videos): the two oldest are forgotten
        with pytest.raises(openai.NotFoundError, match="keeps the 3 newest finished videos"):
            client.videos.download_content(dog.id)
        assert client.videos.retrieve(animated.id).status == "completed"
        assert client.videos.delete(animated.id).deleted
        with pytest.raises(openai.NotFoundError):
            client.videos.retrieve(animated.id)

    with TestClient(create_app(video_registry, ServeConfig(**FAST))) as c:  # JSON too; and what the client cannot send
        r = c.post("/v1/videos", json={"model": "clips", "prompt": "owl", "seconds": 0.5, "seed": 1})
        assert r.status_code == 200 and r.json()["seconds"] == "0.5" and r.json()["frames"] == 2
        wait_until(lambda: c.get(f"/v1/videos/{r.json()['id']}").json()["status"] == "completed", 10)
        gif = c.get(f"/v1/videos/{r.json()['id']}/content", params={"variant": "gif"})  # the page's fallback
        assert gif.headers["content-type"] == "image/gif" and Image.open(io.BytesIO(gif.content)).n_frames == 2
        r = c.post("/v1/videos", json={"model": "clips", "prompt": "owl", "input_reference": {"image_url": "x"}})
        assert r.status_code == 400 and "genlab fetches no URLs" in r.json()["error"]["message"]
        r = c.post("/v1/videos", content=b"prompt", headers={"Content-Type": "text/plain"})
        assert r.status_code == 400 and "multipart/form-data" in r.json()["error"]["message"]
        r = c.get("/v1/videos/video_nope/content", params={"variant": "poster"})
        assert r.status_code == 422 and "variant" in r.json()["error"]["message"]
        r = c.post("/v1/images/generations", json={"model": "clips"})
        assert r.status_code == 400 and "cannot do images.generations" in r.json()["error"]["message"]


def test_page_makes_a_clip_and_shows_it_in_chromium(video_registry):
    """The page's video form in a real browser: a class, a length and a seed in; the job polled; the clip playing
    (the MP4 in a <video>, or the GIF where the browser has no H.264) beside its frames."""
    playwright = pytest.importorskip("playwright.sync_api", reason="pip install playwright (make test installs it)")
    from servers import open_page

    app = create_app(video_registry, ServeConfig(**FAST))
    with uvicorn_server(app) as url, playwright.sync_playwright() as p:
        browser, page, errors = open_page(p, url, 2)
        page.select_option("#model", "clips")
        assert page.is_visible("#video-options") and page.is_hidden("#n-box") and page.is_visible("#class-box")
        assert "clips of 6 frames of 16x16 at 4 fps (1.5 s)" in page.text_content("#about")
        page.select_option("#label", "owl")
        page.fill("#seconds", "1")
        page.fill("#seed", "7")
        page.click("#generate")
        shown = "#grid figure.clip video, #grid figure.clip img.clip"

        def loaded() -> list:  # [tag, width, height] of the clip once the browser has decoded it, and the frames'
            return page.eval_on_selector_all(shown + ", #grid img.frames", """els => els.map(e => e.tagName === "VIDEO"
                ? (e.readyState >= 2 && ["VIDEO", e.videoWidth, e.videoHeight])
                : (e.complete && e.naturalWidth > 0 && [e.className, e.naturalWidth, e.naturalHeight]))""")

        wait_until(lambda: len(loaded()) == 2 and all(loaded()), 20)
        clip, frames = loaded()
        meta = page.text_content("#meta")
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "serve-video.png"), full_page=True)
        page.fill("#seconds", "9")
        page.click("#generate")
        wait_until(lambda: page.text_content("#error"), 10)
        error = page.text_content("#error")
        browser.close()
    assert clip in (["VIDEO", 16, 16], ["clip", 16, 16]) and frames == ["frames", 4 * 17 - 1, 16]
    assert "4 frames (1 s at 4 fps)" in meta and "seed 7" in meta
    assert "ask for at most 1.5 seconds" in error and not errors


# -- styled images: a style model through /v1/images/edits (OpenAI's client), and the page ------

@pytest.fixture(scope="module")
def style_registry(tmp_path_factory):
    """A tiny style model (genlab.models.style: AdaIN on EfficientNet-Lite0, a decoder of widths (8, 8, 4)) that
    reads photos at a short side of 32 px, built from its config rather than trained, as the other models here. Its
    decoder gets He-initialised weights and an output bias of 0.5, so that its images are mid-grey with spread
    rather than the near-black that a small default initialisation decodes to."""
    from genlab.models.style import AdaINStylizer, StyleConfig

    torch.manual_seed(0)
    model = AdaINStylizer(StyleConfig(widths=(8, 8, 4), short_side=32, crop=16))
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim == 4:
                torch.nn.init.kaiming_normal_(p, nonlinearity="relu")
        model.decoder[-1].weight.mul_(0.03)
        model.decoder[-1].bias.fill_(0.5)
    root = tmp_path_factory.mktemp("style")
    model.save_pretrained(root / "sty" / "model")
    return load_models([str(root / "sty")])


def _photo(h: int, w: int) -> np.ndarray:
    """A smooth colour gradient with an edge, (h, w, 3) uint8: something with content."""
    y, x = np.meshgrid(np.linspace(0, 1, h), np.linspace(0, 1, w), indexing="ij")
    return (np.stack([x, y, (x + y) / 2], -1) * 180 + 60 * (x > 0.5)[..., None]).astype(np.uint8)


def _stripes(side: int = 64) -> np.ndarray:
    """Blue-and-orange stripes, (side, side, 3) uint8: a style unlike `_photo`."""
    stripe = np.broadcast_to((np.arange(side) // 4 % 2)[None, :], (side, side)).astype(np.float32)
    return (np.stack([0.9 * stripe + 0.1, 0.5 * stripe + 0.2, 0.9 * (1 - stripe)], -1) * 255).astype(np.uint8)


def test_styled_images_through_the_official_openai_client(style_registry):
    openai = pytest.importorskip("openai")
    from genlab.models.style import resize_short_side

    model = style_registry["sty"].model
    small, large, style = _photo(24, 32), _photo(40, 56), _stripes()
    files = {name: (f"{name}.png", _upload(array, "RGB"), "image/png")
             for name, array in (("small", small), ("large", large), ("style", style))}
    with uvicorn_server(create_app(style_registry, ServeConfig(**FAST))) as url:
        client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
        card = client.models.list().data[0].model_dump()
        assert (card["family"], card["kind"], card["capabilities"], card["edit_modes"]) == (
            "style", "image", ["images.edits"], ["style"])
        assert card["options"] == ["strength"] and card["style"] == {"short_side": 32} and card["image_size"] is None

        def styled(photo: str, **fields) -> np.ndarray:  # the client sends a list of images as image[]
            answer = client.images.edit(model="sty", image=[files[photo], files["style"]], prompt="", **fields)
            return _png(answer.data[0].b64_json)

        # a photo no larger than the model's scale is restyled as it is: the model's own stylize, to the PNG's 1/255
        full = styled("small")
        photo = torch.from_numpy(small).permute(2, 0, 1)[None]
        expected = model.stylize(photo, resize_short_side(torch.from_numpy(style).permute(2, 0, 1), 24), alpha=1.0)
        assert full.shape == (24, 32, 3)
        assert np.abs(full / 255 - expected[0].permute(1, 2, 0).numpy()).max() <= 0.5 / 255 + 1e-6
        kept = styled("small", extra_body={"strength": 0})
        half = styled("small", extra_body={"strength": 0.5})
        assert np.abs(full.astype(int) - kept).mean() > 5 and not np.array_equal(half, kept)
        # a larger one is read at the model's short side (32) and answered at its own size
        assert styled("large").shape == (40, 56, 3)

        refusals = [
            (openai.BadRequestError, {"image": files["small"]}, "send the style image as the second image"),
            (openai.BadRequestError, {"image": [files["small"], files["style"], files["large"]]},
             "3 images came, and model 'sty' takes two: the photo, then the style image"),
            (openai.BadRequestError, {"prompt": "a painting"}, "takes no prompt"),
            (openai.BadRequestError, {"size": "512x512"}, "answers at the photo's own size"),
            (openai.BadRequestError, {"n": 2}, "takes no n"),
            (openai.UnprocessableEntityError, {"extra_body": {"strength": 1.5}},
             "strength: Input should be less than or equal to 1"),
            (openai.UnprocessableEntityError, {"image": [files["small"], ("s.png", b"not an image", "image/png")]},
             "the style image is not a readable image"),
            (openai.BadRequestError, {"image": [files["small"], ("s.png", _upload(np.zeros((8, 8, 3)), "RGB"),
                                                                "image/png")]}, "at least 16x16"),
        ]
        for error, fields, message in refusals:
            with pytest.raises(error, match=message) as raised:
                client.images.edit(**{"model": "sty", "image": [files["small"], files["style"]], "prompt": ""}
                                   | fields)
            assert "fix:" in str(raised.value)


def test_page_restyles_a_photo_in_chromium(style_registry):
    """The page's style form in a real browser: a photo and a style image uploaded, the strength slider set, the
    styled image shown at the photo's size; a bad style file's refusal reaches the page."""
    playwright = pytest.importorskip("playwright.sync_api", reason="pip install playwright (make test installs it)")
    from servers import open_page

    def png_file(name: str, array: np.ndarray) -> dict:
        return {"name": name, "mimeType": "image/png", "buffer": _upload(array, "RGB")}

    app = create_app(style_registry, ServeConfig(**FAST))
    with uvicorn_server(app) as url, playwright.sync_playwright() as p:
        browser, page, errors = open_page(p, url, 1)
        page.select_option("#model", "sty")
        assert page.is_visible("#style-box") and page.is_visible("#image-file") and page.is_hidden("#mask-box")
        assert page.is_hidden("#generate") and page.text_content("#edit") == "Stylise"
        assert "read at most 32 px on the short side" in page.text_content("#about")
        page.set_input_files("#image-file", png_file("photo.png", _photo(40, 56)))
        page.set_input_files("#style-file", png_file("style.png", _stripes()))
        page.fill("#alpha", "0.75")
        page.click("#edit")

        def shown() -> list:  # [width, height] of each styled image once the browser has decoded it
            return page.eval_on_selector_all("#grid img.styled",
                                             "els => els.map(e => e.complete && [e.naturalWidth, e.naturalHeight])")

        wait_until(lambda: shown() and all(shown()), 20)
        size, meta = shown(), page.text_content("#meta")
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "serve-style.png"), full_page=True)
        page.set_input_files("#style-file", {"name": "style.png", "mimeType": "image/png", "buffer": b"not an image"})
        page.click("#edit")
        wait_until(lambda: page.text_content("#error"), 10)
        error = page.text_content("#error")
        browser.close()
    assert size == [[56, 40]] and "strength 0.75" in meta
    assert "the style image is not a readable image" in error and not errors
