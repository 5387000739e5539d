"""Benchmark: genlab's text-to-speech on held-out texts, judged by Whisper tiny.en against the teacher (issue 22).

    python bench/tts.py --threads 1                            # the real run -> bench/results/tts.json
    python bench/tts.py --digit-strings 24 --sentences 8 --seconds 20 --held-out 4 --out /tmp/tts_smoke.json

The corpus is flite's (`genlab data make tts-corpus`: `--digit-strings` strings of 3-6 digits and `--sentences`
fortune sentences, one voice, with flite's phone alignment). genlab's FastSpeech trains on it for `--seconds` of
wall clock. Held-out texts, new digit strings and sentences none of the corpus holds, are spoken by the teacher
(flite itself) and by genlab (flite's phones -> FastSpeech -> Griffin-Lim 32, or `--vocoder RUN`), and Whisper
tiny.en transcribes both: word error rate against the texts (genlab.metrics.speech), digit strings and sentences
apart, and PocketSphinx's digit grammar on the digit strings' words.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import genlab  # noqa: E402
from genlab.data.audio import read_audio, resample  # noqa: E402
from genlab.data.spectrogram import MelSpectrogram  # noqa: E402
from genlab.data.speech import DIGITS, fortune_sentences, make_tts_corpus, phonemes, speak  # noqa: E402
from genlab.metrics.speech import Whisper, word_error_rate  # noqa: E402


def held_out_texts(digit_strings: int, sentences: int, taken: set[str], seed: int) -> list[tuple[str, str]]:
    """(kind, text) pairs none of which the corpus holds."""
    rng = np.random.default_rng(seed)
    texts = []
    while len(texts) < digit_strings:
        text = " ".join(DIGITS[d] for d in rng.integers(0, 10, rng.integers(3, 7)))
        if text not in taken:
            texts.append(("digits", text))
            taken.add(text)
    pool = [s for s in fortune_sentences(100_000, seed) if s not in taken]
    return texts + [("sentence", s) for s in pool[-sentences:]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--digit-strings", type=int, default=600)
    parser.add_argument("--sentences", type=int, default=600)
    parser.add_argument("--voice", default="slt")
    parser.add_argument("--seconds", type=float, default=1200, help="genlab's training wall clock")
    parser.add_argument("--held-out", type=int, default=50, help="held-out texts of each kind")
    parser.add_argument("--vocoder", default=None, help="a vocoder run instead of Griffin-Lim")
    parser.add_argument("--model", default="{}")
    parser.add_argument("--train", default="{}")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--work", default="/tmp/genlab-tts")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "tts.json"))
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    corpus = Path(args.work) / f"corpus-{args.voice}-{args.digit_strings}-{args.sentences}"
    if not (corpus / "metadata.csv").exists():
        make_tts_corpus(corpus, args.digit_strings, args.sentences, args.voice)
    taken = {line.split("|")[1] for line in (corpus / "metadata.csv").read_text().splitlines()}
    utterances = len(taken)
    texts = held_out_texts(args.held_out, args.held_out, set(taken), seed=1)

    run = Path(args.work) / f"run-{int(time.time())}"
    start = time.perf_counter()
    genlab.train("tts", str(corpus), run, model=json.loads(args.model), max_time=f"{int(args.seconds)}s",
                 max_steps=10**7, progress=False, seed=0, threads=args.threads, **json.loads(args.train))
    trained = time.perf_counter() - start
    from genlab.files import load_torch_file

    steps = int(load_torch_file(run / "checkpoints" / "last.ckpt")["global_step"])
    model = genlab.load(run / "model")
    rate = model.settings.sample_rate
    vocoder = genlab.load(Path(args.vocoder) / "model") if args.vocoder else None
    inverse = MelSpectrogram(model.settings)

    ours, teacher = [], []
    start = time.perf_counter()
    for _, text in texts:
        log_mel = model.synthesize([phonemes(text, args.voice)])[0][None]
        with torch.no_grad():
            wave = vocoder.vocode(log_mel) if vocoder else inverse.invert(log_mel,
                                                                          generator=torch.Generator().manual_seed(0))
        ours.append(wave[0].numpy())
    spoken = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as folder:
        for i, (_, text) in enumerate(texts):
            samples, sr, _ = read_audio(speak(text, Path(folder) / f"{i}.wav", args.voice))
            teacher.append(resample(samples, sr, rate))
    whisper = Whisper()

    def wer(waves: list[np.ndarray], kind: str) -> float:
        chosen = [i for i, (k, _) in enumerate(texts) if k == kind]
        heard = [whisper.transcribe(waves[i][None], rate)[0] for i in chosen]
        return round(word_error_rate([texts[i][1] for i in chosen], heard), 4)

    results = {"machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                           "torch": torch.__version__},
               "command": "python bench/tts.py " + " ".join(sys.argv[1:]),
               "corpus": {"utterances": utterances, "voice": args.voice}, "held_out": len(texts),
               "teacher_flite": {kind: wer(teacher, kind) for kind in ("digits", "sentence")},
               "genlab_fastspeech": {**{kind: wer(ours, kind) for kind in ("digits", "sentence")},
                                     "train_seconds": round(trained, 1), "train_steps": steps,
                                     "parameters": model.num_parameters(), "inverse": args.vocoder or "griffin-lim-32",
                                     "speak_seconds": round(spoken, 1)}}
    print(json.dumps(results, indent=1), flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
