"""Text-to-speech: durations from an alignment tile the spectrogram, the length regulator, FastSpeech's loss
and synthesis, and training on a flite corpus then speaking through the CLI."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import soundfile
import torch

import genlab
from genlab.cli import main
from genlab.data.spectrogram import MelSettings, sound_config
from genlab.data.tts import durations_in_frames
from genlab.errors import ConfigError
from genlab.models.tts import FastSpeech, TTSConfig, length_regulate

PHONES = ("<pad>", "pau", "f", "ao", "r", "t", "uw")


def tiny() -> FastSpeech:
    torch.manual_seed(0)
    return FastSpeech(TTSConfig(width=32, heads=2, encoder_layers=1, decoder_layers=1, ffn=64, phones=PHONES,
                                sound=sound_config(MelSettings(), 16_000)))


def test_durations_tile_the_spectrogram_and_the_regulator_repeats_each_phone():
    d = durations_in_frames([0.1, 0.25, 0.251, 0.6], 40, MelSettings())
    assert d.tolist() == [6, 10, 0, 24] and d.sum() == 40  # round(end x 62.5), the last phone to the clip's end
    encoded = torch.arange(6.0).view(1, 3, 2)
    out, padding = length_regulate(torch.cat([encoded, encoded]), torch.tensor([[2, 0, 1], [1, 1, 1]]))
    assert out.shape == (2, 3, 2) and padding.tolist() == [[False, False, False], [False, False, False]]
    assert out[0].tolist() == [[0, 1], [0, 1], [4, 5]] and out[1].tolist() == [[0, 1], [2, 3], [4, 5]]


def test_fastspeech_learns_from_the_teachers_durations_and_speaks_at_a_pace():
    model = tiny()
    tokens = torch.tensor([[1, 2, 3, 4, 1], [1, 5, 6, 1, 0]])
    durations = torch.tensor([[3, 4, 5, 2, 3], [2, 6, 4, 3, 0]])
    frames = durations.sum(1)
    mels = torch.randn(2, 80, int(frames.max())) - 5
    out = model.loss((tokens, durations, mels, frames))
    assert torch.isfinite(out["loss"]) and out["loss"] > out["mel_l1"] > 0
    optimiser = torch.optim.Adam(model.parameters(), 3e-3)
    first = out["duration_mse"].item()
    for _ in range(60):
        loss = model.loss((tokens, durations, mels, frames))
        optimiser.zero_grad()
        loss["loss"].backward()
        optimiser.step()
    assert loss["duration_mse"].item() < first / 4  # the duration predictor fits the teacher's durations
    speech = model.synthesize([["pau", "f", "ao", "r", "pau"]])[0]
    slow = model.synthesize([["pau", "f", "ao", "r", "pau"]], pace=2.0)[0]
    assert speech.shape[0] == 80 and abs(speech.shape[1] - 17) <= 4  # about the 3 + 4 + 5 + 2 + 3 frames learned
    assert slow.shape[1] > 1.6 * speech.shape[1]
    with pytest.raises(ConfigError, match="phones the model never saw: zh"):
        model.synthesize([["pau", "zh"]])


@pytest.mark.skipif(shutil.which("flite") is None, reason="Debian's flite is not installed (make setup installs it)")
def test_a_tts_model_trains_on_a_flite_corpus_and_speaks_through_the_cli(tmp_path, capsys):
    from genlab.data.speech import make_tts_corpus

    make_tts_corpus(tmp_path / "corpus", digit_strings=24, sentences=0, voice="slt")
    assert main(["data", "check", str(tmp_path / "corpus")]) == 0
    assert "phones:" in capsys.readouterr().out
    assert main(["train", "tts", "--data", str(tmp_path / "corpus"), "--out", str(tmp_path / "run"), "--max-steps",
                 "3", "--batch-size", "8", "--model.width", "32", "--model.ffn", "64", "--threads", "1",
                 "--progress", "false"]) == 0
    assert "genlab speak" in capsys.readouterr().out
    model = genlab.load(tmp_path / "run" / "model")
    assert "f" in model.config.phones and model.config.phones[0] == "<pad>"
    assert main(["speak", str(tmp_path / "run"), "--text", "four two", "--out", str(tmp_path / "say.wav")]) == 0
    wave, rate = soundfile.read(tmp_path / "say.wav")
    assert rate == 16_000 and len(wave) > 256 and np.isfinite(wave).all()
    assert main(["speak", str(tmp_path / "run"), "--text", "  "]) == 2
    assert "no text to speak" in capsys.readouterr().err
    # a second voice: full fine-tuning from the first voice's weights, its held-out loss before and after
    make_tts_corpus(tmp_path / "kal", digit_strings=24, sentences=0, voice="kal16")
    assert main(["finetune", str(tmp_path / "run"), "--data", str(tmp_path / "kal"), "--out", str(tmp_path / "ft"),
                 "--max-steps", "8", "--batch-size", "4", "--lr", "3e-3", "--holdout", "0.25", "--threads", "1",
                 "--progress", "false"]) == 0
    report = json.loads((tmp_path / "ft" / "finetune.json").read_text())
    assert report["family"] == "tts" and report["target_loss_after"] < report["target_loss_before"]
    assert genlab.load(tmp_path / "ft" / "model").config.phones == model.config.phones
    assert main(["finetune", str(tmp_path / "run"), "--data", str(tmp_path / "kal"), "--method", "lora"]) == 2
    assert "for language models" in capsys.readouterr().err


@pytest.mark.skipif(shutil.which("flite") is None, reason="Debian's flite is not installed (make setup installs it)")
def test_the_openai_client_speaks_through_v1_audio_speech_with_a_served_vocoder(tmp_path):
    import io

    openai = pytest.importorskip("openai", reason="pip install openai (make test installs it)")
    from genlab.serve import create_app
    from tests.servers import uvicorn_server
    from tests.test_vocoder import tiny as tiny_vocoder

    model = tiny()  # flite's phones for "four two" are among PHONES
    model.save_pretrained(tmp_path / "tts")
    tiny_vocoder().save_pretrained(tmp_path / "voc")
    app = create_app([f"tts={tmp_path / 'tts'}", f"voc={tmp_path / 'voc'}"])
    with uvicorn_server(app) as url:
        client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
        cards = {m.id: m for m in client.models.list().data}
        assert cards["tts"].model_extra["capabilities"] == ["audio.speech"]
        assert cards["voc"].model_extra["capabilities"] == ["voice"] and cards["voc"].model_extra["kind"] == "audio"
        for voice in ("voc", "griffin-lim"):
            speech = client.audio.speech.create(model="tts", voice=voice, input="four two", response_format="wav")
            wave, rate = soundfile.read(io.BytesIO(speech.content))
            assert rate == 16_000 and len(wave) > 0 and np.isfinite(wave).all()
        slow = client.audio.speech.create(model="tts", voice="griffin-lim", input="four two", response_format="wav",
                                          speed=0.5)
        assert len(soundfile.read(io.BytesIO(slow.content))[0]) > len(wave)  # half the speed: longer
        with pytest.raises(openai.BadRequestError, match="no voice 'alloy'"):
            client.audio.speech.create(model="tts", voice="alloy", input="four", response_format="wav")
        with pytest.raises(openai.BadRequestError, match="ask for wav"):
            client.audio.speech.create(model="tts", voice="voc", input="four", response_format="mp3")
        with pytest.raises(openai.BadRequestError, match="cannot do audio.speech"):
            client.audio.speech.create(model="voc", voice="voc", input="four", response_format="wav")


@pytest.mark.skipif(shutil.which("flite") is None, reason="Debian's flite is not installed (make setup installs it)")
def test_the_page_speaks_text_and_plays_it_in_chromium(tmp_path):
    playwright = pytest.importorskip("playwright.sync_api", reason="pip install playwright (make test installs it)")
    from genlab.serve import create_app
    from tests.servers import open_page, uvicorn_server, wait_until
    from tests.test_vocoder import tiny as tiny_vocoder

    tiny().save_pretrained(tmp_path / "tts")
    tiny_vocoder().save_pretrained(tmp_path / "voc")
    app = create_app([f"tts={tmp_path / 'tts'}", f"voc={tmp_path / 'voc'}"])
    with uvicorn_server(app) as url, playwright.sync_playwright() as p:
        browser, page, errors = open_page(p, url, models=2)
        page.select_option("#model", "tts")
        assert page.is_visible("#voice-box") and page.is_hidden("#image-options")
        assert page.eval_on_selector_all("#voice option", "els => els.map(e => e.value)") == ["voc", "griffin-lim"]
        page.fill("#prompt", "four two")
        page.click("#generate")
        wait_until(lambda: page.locator("#grid audio").count() == 1, 30)
        wait_until(lambda: page.eval_on_selector("#grid audio", "a => a.readyState") >= 1, 10)  # the WAV decoded
        duration = page.eval_on_selector("#grid audio", "a => a.duration")
        meta = page.text_content("#meta")
        browser.close()
    assert duration > 0 and "speech by voc" in meta and not errors
