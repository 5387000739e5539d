"""Smoke tests of the sound benchmarks (bench/vocoder.py, tts.py, speech_digits.py, notes.py) at tiny settings: a
file of their own, so that the test runner can spread the slow smoke tests over the cores."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(__import__("shutil").which("flite") is None
                    or not Path("/usr/share/games/fortunes/fortunes").exists(),
                    reason="Debian's flite and fortunes are not installed (make setup installs them)")
def test_the_vocoder_and_tts_benchmarks_run_and_write_their_figures(tmp_path):
    vocoder = tmp_path / "vocoder.json"
    subprocess.run([sys.executable, str(ROOT / "bench" / "vocoder.py"), "--per-class", "3", "--seconds", "4",
                    "--clips", "2", "--model", '{"width": 32, "layers": 1, "segment": 4096}', "--threads", "1",
                    "--work", str(tmp_path / "work"), "--out", str(vocoder)], check=True, capture_output=True,
                   timeout=300)
    results = json.loads(vocoder.read_text())
    assert results["clips"] == 2 and results["genlab_vocoder"]["train_steps"] >= 1
    for side in ("genlab_vocoder", "griffin_lim_32"):
        assert results[side]["mcd_db"] > 0 and results[side]["lsd_db"] > 0 and results[side]["realtime_factor"] > 0
    tts = tmp_path / "tts.json"
    subprocess.run([sys.executable, str(ROOT / "bench" / "tts.py"), "--digit-strings", "12", "--sentences", "4",
                    "--seconds", "4", "--held-out", "2", "--second-utterances", "20", "--finetune-seconds", "3",
                    "--coqui", "", "--threads", "1", "--work", str(tmp_path / "tts"),
                    "--out", str(tts)], check=True, capture_output=True, timeout=300)
    results = json.loads(tts.read_text())
    assert results["held_out"] == 4 and results["corpus"]["utterances"] == 16
    assert 0 <= results["teacher_flite"]["digits"] <= 0.5  # flite's own digits are heard
    assert results["genlab_fastspeech"]["digits"] >= 0 and results["genlab_fastspeech"]["train_steps"] >= 1
    second = results["second_voice"]
    assert second["voice"] == "kal16" and second["utterances"] == 20
    assert second["genlab_finetuned"]["finetune_steps"] >= 1
    assert 0 <= second["teacher_flite"]["digits"] <= 0.5 and second["genlab_finetuned"]["sentence"] >= 0


@pytest.mark.skipif(__import__("shutil").which("flite") is None or __import__("shutil").which("fluidsynth") is None,
                    reason="Debian's flite and fluidsynth are not installed (make setup installs them)")
def test_the_spoken_digits_and_notes_benchmarks_run_and_write_their_figures(tmp_path):
    tiny = ["--seconds", "3", "--samples", "1", "--steps", "2", "--threads", "1",
            "--model", '{"widths": [8, 16], "blocks": [1, 1], "attention": [false, true]}']
    digits = tmp_path / "digits.json"
    subprocess.run([sys.executable, str(ROOT / "bench" / "speech_digits.py"), "--per-class", "3", "--edits", "3",
                    "--reference-steps", "4", *tiny,
                    "--work", str(tmp_path / "digits"), "--out", str(digits)], check=True, capture_output=True,
                   timeout=300)
    results = json.loads(digits.read_text())
    assert results["corpus"]["clips"] == 30 and results["genlab_diffusion"]["train_steps"] >= 1
    for side in ("teacher", "teacher_griffin_lim", "genlab_diffusion"):
        assert {"pocketsphinx_digits", "whisper_tiny_en"} <= set(results[side])
        assert all(0 <= judged["recognised"] <= 1 for name, judged in results[side].items()
                   if name in ("pocketsphinx_digits", "whisper_tiny_en"))
    assert results["teacher"]["pocketsphinx_digits"]["recognised"] >= 0.5  # flite's own digits are heard
    judged = results["genlab_reference_classifier"]  # genlab's own measure beside the held-out clips'
    assert set(judged) == {"reference_accuracy", "held_out_clips", "teacher_griffin_lim", "genlab_diffusion"}
    assert 0 <= judged["genlab_diffusion"]["class_accuracy"] <= 1 and judged["genlab_diffusion"]["fd_genlab"] >= 0
    edits = results["genlab_editing"]
    assert edits["clips"] == 3 and edits["gap_frames"] >= 8  # 0.15 s: 9 or 10 frames of 16 ms
    for part in ("gap_left_silent", "gap_inpainted", "to_next_digit_strength_0.7", "unedited_through_griffin_lim"):
        assert set(edits[part]) == {"pocketsphinx_digits", "whisper_tiny_en"}
    notes = tmp_path / "notes.json"
    subprocess.run([sys.executable, str(ROOT / "bench" / "notes.py"), "--pitches", "60,67", "--instruments",
                    "piano,flute", *tiny, "--work", str(tmp_path / "notes"), "--out", str(notes)], check=True,
                   capture_output=True, timeout=300)
    results = json.loads(notes.read_text())
    assert results["corpus"]["train"] + results["corpus"]["test"] == 12
    assert len(results["genlab_diffusion"]["per_pitch"]) == 2 and results["genlab_diffusion"]["train_steps"] >= 1
    assert results["teacher"]["within_50_cents"] == 1.0  # pYIN hears piano and flute notes at their pitch
