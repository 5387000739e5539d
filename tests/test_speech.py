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
