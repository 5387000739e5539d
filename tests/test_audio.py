"""Sound: reading, resampling, trimming and normalising clips, the report, log-mel spectrograms (checked against
librosa) and Griffin-Lim's inverse, and the spoken-digit corpus made by flite."""

from __future__ import annotations

import json
import math
import shutil

import librosa
import numpy as np
import pytest
import soundfile
import torch

import genlab
from genlab.cli import main
from genlab.data import load_data
from genlab.data.audio import fit_length, normalise_loudness, resample, rms_dbfs, trim_silence
from genlab.data.spectrogram import MelSettings, MelSpectrogram, mel_filterbank
from genlab.errors import DataError


def tone(freq: float, seconds: float, rate: int, amplitude: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def chirp(rate: int = 16_000, seconds: float = 1.0) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.5 * np.sin(2 * np.pi * (200 * t + 1500 * t**2))).astype(np.float32)  # 200 Hz rising to 3.2 kHz


def tone_folders(root, per_class: int, seconds: float = 0.5, names=("low", "high"), low=(300, 10),
                 high=(2000, 50)):
    """A folder of sound with two classes of tones, low and high, each tone its own frequency (start + step x i)."""
    for name, (start, step) in zip(names, (low, high), strict=True):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            soundfile.write(root / name / f"{i}.wav", tone(start + step * i, seconds, 16_000), 16_000)
    return root


def peak_hz(x: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / rate)[spectrum.argmax()])


def test_the_mel_filterbank_and_log_mel_spectrogram_match_librosa():
    for s in (MelSettings(), MelSettings(sample_rate=22_050, n_fft=1024, hop=256, n_mels=80, f_min=20, f_max=8000)):
        ours = mel_filterbank(s).numpy()
        theirs = librosa.filters.mel(sr=s.sample_rate, n_fft=s.n_fft, n_mels=s.n_mels, fmin=s.f_min, fmax=s.f_max,
                                     htk=False, norm="slaney")
        np.testing.assert_allclose(ours, theirs, atol=1e-7)
    x = chirp()
    ours = MelSpectrogram()(torch.from_numpy(x)[None])[0].numpy()
    theirs = np.log(np.maximum(librosa.feature.melspectrogram(
        y=x, sr=16_000, n_fft=1024, hop_length=256, power=1.0, center=True, pad_mode="reflect", n_mels=80), 1e-5))
    assert ours.shape == theirs.shape == (80, MelSettings().frames(len(x)))
    np.testing.assert_allclose(ours, theirs, atol=5e-3)


def test_griffin_lim_recovers_a_consistent_waveform_as_well_as_librosa():
    m = MelSpectrogram()
    x = chirp()
    magnitude = m.stft(torch.from_numpy(x)[None]).abs()

    def convergence(wave):
        return float(torch.linalg.norm(m.stft(wave).abs() - magnitude) / torch.linalg.norm(magnitude))

    errors = [convergence(m.griffin_lim(magnitude, it, length=len(x), generator=torch.Generator().manual_seed(0)))
              for it in (0, 8, 32)]
    assert errors[0] > 0.4 and errors[0] > errors[1] > errors[2]  # a random phase, then better with each pass
    theirs = librosa.griffinlim(magnitude[0].numpy(), n_iter=32, hop_length=256, n_fft=1024, length=len(x),
                                random_state=0)
    assert errors[2] <= convergence(torch.from_numpy(theirs)[None]) + 0.02
    # the whole inverse path from the log-mel: the mel bands of the result match the ones asked for
    log_mel = m(torch.from_numpy(x)[None])
    back = m.invert(log_mel, iterations=32, length=len(x), generator=torch.Generator().manual_seed(0))
    loud = log_mel > log_mel.max() - 6  # the bands holding the chirp (within 6 nats, ~52 dB, of the loudest)
    assert (m(back) - log_mel)[loud].abs().median() < 0.3
    assert abs(peak_hz(back[0, :4000].numpy(), 16_000) - peak_hz(x[:4000], 16_000)) < 60


def test_clips_are_resampled_trimmed_normalised_and_fitted():
    x = tone(440, 1.0, 44_100)
    y = resample(x, 44_100, 16_000)
    assert len(y) == 16_000 and abs(peak_hz(y, 16_000) - 440) < 2
    padded = np.r_[np.zeros(8000, np.float32), y, np.zeros(4000, np.float32)]
    trimmed = trim_silence(padded, 16_000)
    assert abs(len(trimmed) - 16_000) < 0.05 * 16_000  # the silence at both ends gone, to two 25 ms frames
    assert rms_dbfs(normalise_loudness(y)) == pytest.approx(-20.0, abs=0.01)
    loud = normalise_loudness(np.r_[np.zeros(1000, np.float32), np.ones(10, np.float32)])  # one spike
    assert np.abs(loud).max() <= 0.99  # the peak kept under full scale, though the RMS is then below -20
    assert fit_length(np.arange(10, dtype=np.float32), 4).tolist() == [3, 4, 5, 6]
    assert fit_length(np.ones(2, np.float32), 6).tolist() == [0, 0, 1, 1, 0, 0]


def test_a_folder_of_sound_files_becomes_labelled_clips_with_a_report(tmp_path, capsys):
    (tmp_path / "low").mkdir()
    (tmp_path / "high").mkdir()
    for i in range(6):
        soundfile.write(tmp_path / "low" / f"{i}.wav", tone(220, 0.5, 8_000), 8_000)
        stereo = np.stack([tone(880, 0.7, 22_050), tone(880, 0.7, 22_050)], 1)
        soundfile.write(tmp_path / "high" / f"{i}.flac", stereo, 22_050)
    soundfile.write(tmp_path / "high" / "silent.wav", np.zeros(8000, np.float32), 16_000)
    soundfile.write(tmp_path / "high" / "clipped.wav", np.clip(tone(500, 0.5, 16_000, 3.0), -1, 1), 16_000)
    (tmp_path / "low" / "broken.wav").write_bytes(b"RIFF not really")
    data = load_data(str(tmp_path), max_bad_fraction=0.2)
    assert data.kind == "audio" and data.classes == ("high", "low") and data.sample_rate == 16_000
    assert len(data.train_x) + len(data.test_x) == 13 and data.train_x.dtype == np.float32
    assert data.train_x.shape[1] == int(round(data.seconds * 16_000)) and data.seconds == pytest.approx(0.7)
    lows = np.concatenate([data.train_x[data.train_y == 1], data.test_x[data.test_y == 1]])
    assert all(abs(peak_hz(clip[np.abs(clip) > 0], 16_000) - 220) < 5 for clip in lows)  # resampled, pitch kept
    notes = "\n".join(data.report.notes)
    assert "8000 Hz x 6" in notes and "22050 Hz x 6" in notes and "resampled to 16000 Hz" in notes
    assert "mixed down to mono" in notes and "clipped (over 0.1% of samples at full scale): 1" in notes
    assert "silent (RMS below -60 dBFS, left out): 1: high/silent.wav" in notes
    assert data.report.bad_files and data.report.bad_files[0][0] == "low/broken.wav"
    assert main(["data", "check", str(tmp_path), "--max-bad-fraction", "0.01"]) == 2
    assert "could not be used" in capsys.readouterr().err


@pytest.mark.skipif(shutil.which("flite") is None, reason="Debian's flite is not installed (make setup installs it)")
def test_spoken_digits_are_made_by_flite_in_several_voices(tmp_path, capsys):
    assert main(["data", "make", "spoken-digits", "--out", str(tmp_path / "sd"), "--per-class", "2",
                 "--voices", "slt,awb"]) == 0
    assert "wrote 20 clips" in capsys.readouterr().out
    files = sorted((tmp_path / "sd").rglob("*.wav"))
    assert len(files) == 20 and {f.parent.name for f in files} == {str(d) for d in range(10)}
    data = load_data(str(tmp_path / "sd"))
    assert data.classes == tuple(str(d) for d in range(10)) and len(data.train_x) + len(data.test_x) == 20
    first, again = (soundfile.read(tmp_path / "sd" / "7" / "slt-0000.wav")[0] for _ in range(2))
    np.testing.assert_array_equal(first, again)
    with pytest.raises(DataError, match="unknown flite voice"):
        from genlab.data.speech import make_spoken_digits

        make_spoken_digits(tmp_path / "x", 1, ("nobody",))


def test_spectrogram_images_round_trip_to_half_a_level_with_the_highest_band_on_top():
    from genlab.data.spectrogram import LOG_MAX, from_image, to_image

    s = MelSettings()
    log_mel = torch.empty(2, 80, 7).uniform_(math.log(s.floor), LOG_MAX, generator=torch.Generator().manual_seed(0))
    image = to_image(log_mel, s)
    assert image.shape == (2, 1, 80, 7) and image.dtype == torch.uint8
    step = (LOG_MAX - math.log(s.floor)) / 255
    assert (from_image(image, s) - log_mel).abs().max() <= step / 2 + 1e-5
    torch.testing.assert_close(from_image(image.float() / 255, s), from_image(image, s))  # samples are in [0, 1]
    assert image[0, 0, 0, 0] == to_image(log_mel[:, -1:], s)[0, 0, 0, 0]  # row 0 is the highest band


def test_an_image_family_trains_on_sound_and_samples_wav_files(tmp_path, capsys):
    tone_folders(tmp_path / "wavs", 30)
    run = tmp_path / "run"
    assert main(["train", "vae", "--data", str(tmp_path / "wavs"), "--model.condition", "class", "--max-steps", "2",
                 "--batch-size", "4", "--out", str(run), "--threads", "1", "--progress", "false"]) == 0
    model = genlab.load(run / "model")
    assert model.config.image_size == (80, MelSettings().frames(8000)) and model.config.channels == 1
    assert json.loads(model.config.sound)["samples"] == 8000
    capsys.readouterr()
    assert main(["sample", str(run), "--n", "3", "--label", "high", "--out", str(tmp_path / "out")]) == 0
    assert "wrote 3 clips of 0.50 s (16000 Hz WAV" in capsys.readouterr().out
    clips = sorted((tmp_path / "out").glob("*.wav"))
    assert len(clips) == 3 and (tmp_path / "out" / "spectrograms.png").exists()
    wave, rate = soundfile.read(clips[0])
    assert rate == 16_000 and len(wave) == 8000 and np.isfinite(wave).all()
    assert rms_dbfs(wave) > -50  # the samples' grey levels read as loudness: sound, not silence
    assert main(["sample", str(run), "--out", str(tmp_path / "one.wav")]) == 2
    assert "a folder of WAV files" in capsys.readouterr().err
    # judged on spectrogram images, in the features of a classifier genlab trains on the corpus's spectrograms
    assert main(["eval", str(run), "--n", "16", "--progress", "false"]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert 0 <= metrics["class_accuracy"] <= 1 and metrics["reference_accuracy"] >= 0.5 and "fd_genlab" in metrics


def test_diffusion_edits_sound_a_gap_inpainted_a_class_changed_a_morph(tmp_path, capsys):
    from genlab.cli.verbs import _gap_mask

    tone_folders(tmp_path / "wavs", 12)
    run = tmp_path / "run"
    assert main(["train", "diffusion", "--data", str(tmp_path / "wavs"), "--model.condition", "class",
                 "--model.widths", "[8,16]", "--model.blocks", "[1,1]", "--model.attention", "[false,true]",
                 "--model.patch", "2", "--max-steps", "2", "--batch-size", "4", "--out", str(run), "--threads", "1",
                 "--progress", "false"]) == 0
    model = genlab.load(run / "model")
    mask = _gap_mask("0.1:0.2", model)  # frames every 16 ms: centres 0.112 ... 0.192 s
    assert mask.shape == (1, 1, 80, 32) and mask[0, 0, 0].nonzero().flatten().tolist() == list(range(7, 13))
    assert bool((mask[0, 0] == mask[0, 0, :1]).all())  # every band of those frames
    clip = tmp_path / "stereo-44k.wav"  # a file unlike the corpus: made into a clip as the corpus's were
    soundfile.write(clip, np.stack([tone(440, 0.8, 44_100)] * 2, 1), 44_100)
    capsys.readouterr()
    assert main(["edit", str(run), "--image", str(clip), "--gap", "0.1:0.2", "--n", "2", "--steps", "3",
                 "--resample", "1", "--out", str(tmp_path / "gap")]) == 0
    assert "inpainted" in capsys.readouterr().out
    names = sorted(p.name for p in (tmp_path / "gap").iterdir())
    assert names == ["edited-000.wav", "edited-001.wav", "input.wav", "spectrograms.png"]
    wave, rate = soundfile.read(tmp_path / "gap" / "edited-000.wav")
    assert rate == 16_000 and len(wave) == 8000 and np.isfinite(wave).all()
    assert main(["edit", str(run), "--image", "low", "--label", "high", "--strength", "0.5", "--n", "1",
                 "--steps", "4", "--out", str(tmp_path / "style")]) == 0
    assert "image-to-image at strength 0.5" in capsys.readouterr().out
    assert main(["edit", str(run), "--image", "low", "--morph", "high", "--n", "3", "--steps", "4",
                 "--out", str(tmp_path / "morph")]) == 0
    assert sorted(p.name for p in (tmp_path / "morph").glob("*.wav")) == [
        "input.wav", "morph-000.wav", "morph-001.wav", "morph-002.wav", "morph-target.wav"]
    for bad, message in [(["--gap", "0.4:0.3"], "no spectrogram frame"), (["--gap", "soon"], "START:END"),
                         (["--gap", "0.1:0.2", "--morph", "high"], "different edits")]:
        assert main(["edit", str(run), "--image", "low", *bad, "--out", str(tmp_path / "x")]) == 2
        assert message in capsys.readouterr().err
    (tmp_path / "notes.txt").write_text("not sound")
    assert main(["edit", str(run), "--image", str(tmp_path / "notes.txt"), "--out", str(tmp_path / "x")]) == 2
    assert "not a sound file" in capsys.readouterr().err


def sound_diffusion(folder):
    """A class-conditional diffusion of 0.5 s clips' spectrograms (untrained), saved to `folder`."""
    from genlab.data.spectrogram import sound_config
    from genlab.models.diffusion import Diffusion, DiffusionConfig

    torch.manual_seed(0)
    config = DiffusionConfig(channels=1, image_size=(80, MelSettings().frames(8000)), condition="class",
                             num_classes=2, class_names=("low", "high"), widths=(8, 16), blocks=(1, 1),
                             attention=(False, True), patch=2, sample_steps=2,
                             sound=sound_config(MelSettings(), 8000))
    Diffusion(config).save_pretrained(folder)


def test_the_openai_client_gets_clips_of_a_served_model_of_sound(tmp_path):
    import base64
    import io

    openai = pytest.importorskip("openai", reason="pip install openai (make test installs it)")
    from genlab.serve import create_app
    from tests.servers import uvicorn_server
    from tests.test_vocoder import tiny as tiny_vocoder

    sound_diffusion(tmp_path / "digits")
    tiny_vocoder().save_pretrained(tmp_path / "voc")
    app = create_app([f"digits={tmp_path / 'digits'}", f"voc={tmp_path / 'voc'}"])
    with uvicorn_server(app) as url:
        client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
        card = next(m for m in client.models.list().data if m.id == "digits").model_extra
        assert card["sound"] == {"sample_rate": 16_000, "seconds": 0.5} and "voice" in card["options"]
        for voice in ("voc", "griffin-lim"):
            result = client.images.generate(model="digits", prompt="high", n=2, extra_body={"voice": voice, "seed": 3})
            assert len(result.data) == 2
            for item in result.data:
                wave, rate = soundfile.read(io.BytesIO(base64.b64decode(item.model_extra["b64_wav"])))
                assert rate == 16_000 and len(wave) == 8000 and np.isfinite(wave).all()
                assert base64.b64decode(item.b64_json)[:8] == b"\x89PNG\r\n\x1a\n"  # and its spectrogram
        with pytest.raises(openai.BadRequestError, match="no voice 'alloy'"):
            client.images.generate(model="digits", prompt="high", extra_body={"voice": "alloy"})


def test_the_page_plays_the_clips_of_a_model_of_sound_in_chromium(tmp_path):
    playwright = pytest.importorskip("playwright.sync_api", reason="pip install playwright (make test installs it)")
    from genlab.serve import create_app
    from tests.servers import open_page, uvicorn_server, wait_until

    sound_diffusion(tmp_path / "digits")
    with uvicorn_server(create_app([f"digits={tmp_path / 'digits'}"])) as url, playwright.sync_playwright() as p:
        browser, page, errors = open_page(p, url, models=1)
        assert page.is_visible("#voice-box") and "0.5 s clips of sound" in page.text_content("#about")
        page.fill("#n", "2")
        page.click("#generate")
        wait_until(lambda: page.locator("#grid figure audio").count() == 2, 30)
        wait_until(lambda: page.eval_on_selector_all("#grid audio", "as => as.every(a => a.readyState >= 1)"), 10)
        durations = page.eval_on_selector_all("#grid audio", "as => as.map(a => a.duration)")
        meta = page.text_content("#meta")
        browser.close()
    assert durations == [pytest.approx(0.5, abs=0.01)] * 2 and "2 clip(s)" in meta and not errors


def test_a_midi_note_is_a_standard_midi_file():
    from genlab.data.notes import midi_note

    data = midi_note(40, 69, 100, 1.0)
    assert data[:4] == b"MThd" and int.from_bytes(data[8:10], "big") == 0 and data[14:18] == b"MTrk"
    track = data[22:]
    assert len(track) == int.from_bytes(data[18:22], "big") and track.endswith(b"\xff\x2f\x00")
    assert bytes([0xC0, 40]) in track and bytes([0x90, 69, 100]) in track
    assert bytes([0x87, 0x40, 0x80, 69, 0]) in track  # note off after 960 ticks (one second), a variable-length delta


@pytest.mark.skipif(shutil.which("fluidsynth") is None, reason="Debian's fluidsynth is not installed (make setup)")
def test_notes_are_rendered_at_their_pitch_and_judged_by_pyin(tmp_path, capsys):
    from genlab.metrics.audio import cents, midi_hz, note_pitch

    assert midi_hz(69) == 440.0 and abs(cents(np.array([466.16]), 69)[0] - 100) < 0.1
    assert main(["data", "make", "notes", "--out", str(tmp_path / "n"), "--pitches", "57,64", "--instruments",
                 "piano,flute", "--velocities", "100"]) == 0
    assert "wrote 4 notes" in capsys.readouterr().out
    data = load_data(str(tmp_path / "n"))
    assert data.classes == ("57", "64")
    clips = np.concatenate([data.train_x, data.test_x])
    labels = np.concatenate([data.train_y, data.test_y])
    off = [cents(note_pitch(clip, 16_000), int(data.classes[y]))[0] for clip, y in zip(clips, labels)]
    assert np.all(np.abs(off) < 50), off  # within a quarter tone of the note asked for
    assert np.isnan(note_pitch(np.zeros(16_000, np.float32), 16_000)[0])  # silence has no pitch


def test_griffin_lim_takes_a_spectrogram_shorter_than_its_window():
    m = MelSpectrogram()
    wave = m.invert(torch.zeros(1, 80, 2) - 5, length=300, generator=torch.Generator().manual_seed(0))
    assert wave.shape == (1, 300) and torch.isfinite(wave).all()
    assert m.invert(torch.zeros(1, 80, 1) - 5).shape == (1, 0)
