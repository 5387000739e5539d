"""The speech judges: PocketSphinx's digit grammar and Whisper tiny.en hear flite's digits, and the word error
rate agrees with jiwer's."""

from __future__ import annotations

import shutil

import jiwer
import numpy as np
import pytest
import soundfile

from genlab.metrics.speech import DigitRecogniser, Whisper, digit_of, normalise, word_error_rate


def test_word_error_rate_agrees_with_jiwer():
    refs = ["seven four two", "one", "the quick brown fox", "nine nine"]
    hyps = ["seven for two", "", "the brown fox jumps", "nine nine"]
    assert word_error_rate(refs, hyps) == pytest.approx(jiwer.wer(refs, hyps))
    assert word_error_rate(["a b c"], ["a b c"]) == 0.0 and word_error_rate(["a b"], ["x y z"]) == 1.5
    assert normalise("Seven, 4 2!") == ["seven", "four", "two"] and digit_of(" 9.") == 9
    assert digit_of("Free.") is None and digit_of("I said eight") == 8


@pytest.mark.skipif(shutil.which("flite") is None, reason="Debian's flite is not installed (make setup installs it)")
def test_both_judges_hear_flites_digits(tmp_path):
    from genlab.data.speech import DIGITS, speak

    waves, truth = [], []
    for digit in (0, 3, 7, 9):
        for voice in ("slt", "awb"):
            path = speak(DIGITS[digit], tmp_path / f"{voice}-{digit}.wav", voice)
            wave, rate = soundfile.read(path, dtype="float32")
            waves.append(np.pad(wave, (0, 20_000 - len(wave))))
            truth.append(digit)
    waves = np.stack(waves)
    heard = DigitRecogniser().recognise(waves, rate)
    assert [digit_of(w) for w in heard] == truth
    texts = Whisper().transcribe(waves, rate)
    assert np.mean([digit_of(t) == d for t, d in zip(texts, truth)]) >= 0.75  # tiny.en hears "three" as "free"
    silence = np.zeros((1, 16_000), np.float32)
    assert DigitRecogniser().recognise(silence, 16_000)[0] in ("",) + tuple(DIGITS)  # one word or none, no crash


@pytest.mark.skipif(shutil.which("flite") is None, reason="Debian's flite is not installed (make setup installs it)")
def test_a_tts_corpus_is_ljspeech_shaped_with_flites_alignment(tmp_path, capsys):
    import json

    from genlab.cli import main
    from genlab.data.speech import FORTUNES

    sentences = 2 if (FORTUNES / "fortunes").exists() else 0
    assert main(["data", "make", "tts-corpus", "--out", str(tmp_path / "c"), "--digit-strings", "3",
                 "--sentences", str(sentences), "--voices", "awb"]) == 0
    assert f"wrote {3 + sentences} utterances" in capsys.readouterr().out
    rows = [line.split("|") for line in (tmp_path / "c" / "metadata.csv").read_text().splitlines()]
    aligned = [json.loads(line) for line in (tmp_path / "c" / "alignment.jsonl").read_text().splitlines()]
    assert len(rows) == len(aligned) == 3 + sentences and all(len(r) == 3 and r[1] == r[2] for r in rows)
    for (key, _, _), a in zip(rows, aligned):
        wave, rate = soundfile.read(tmp_path / "c" / "wavs" / f"{key}.wav")
        assert a["id"] == key and a["phones"][0] == a["phones"][-1] == "pau" and len(a["phones"]) == len(a["ends"])
        assert np.all(np.diff(a["ends"]) > 0) and abs(a["ends"][-1] - len(wave) / rate) < 0.05  # ends: the clip's
    digits = rows[0][1].split()
    assert 3 <= len(digits) <= 6 and set(digits) <= {"zero", "one", "two", "three", "four", "five", "six", "seven",
                                                     "eight", "nine"}
