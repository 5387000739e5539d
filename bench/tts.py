"""Benchmark: genlab's text-to-speech on held-out texts, judged by Whisper tiny.en against the teacher (issue 22).

    python bench/tts.py --threads 1                            # the real run -> bench/results/tts.json
    python bench/tts.py --digit-strings 24 --sentences 8 --seconds 20 --held-out 4 --out /tmp/tts_smoke.json

The corpus is flite's (`genlab data make tts-corpus`: `--digit-strings` strings of 3-6 digits and `--sentences`
fortune sentences, one voice, with flite's phone alignment). genlab's FastSpeech trains on it for `--seconds` of
wall clock. Held-out texts, new digit strings and sentences none of the corpus holds, are spoken by the teacher
(flite itself) and by genlab (flite's phones -> FastSpeech -> Griffin-Lim 32, or `--vocoder RUN`), and Whisper
tiny.en transcribes both: word error rate against the texts (genlab.metrics.speech), digit strings and sentences
apart.

The anchor (`--coqui`, the Python of a venv holding coqui-tts: bench/coqui_anchor.py gives its install): Coqui
TTS's Glow-TTS trained on the same corpus for the same `--seconds` on the same threads, speaking the same held-out
texts (characters in, Griffin-Lim 32 out), judged by the same Whisper.

A second voice (`--second-voice`, flite's kal16 by default): a corpus of `--second-utterances` of it, and
`genlab.finetune` of the first voice's run on it for `--finetune-seconds` (full fine-tuning from its weights);
the held-out texts spoken by the fine-tuned model through the second voice's phones are judged beside flite's
own second voice.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from common import command, machine, write

import genlab  # noqa: E402  (bench/common.py put the repository first on the path)
from genlab.data.audio import read_audio, resample  # noqa: E402
from genlab.data.spectrogram import voice  # noqa: E402
from genlab.data.speech import DIGITS, fortune_sentences, make_tts_corpus, phonemes, speak  # noqa: E402
from genlab.engine.finetune import finetune  # noqa: E402
from genlab.files import load_torch_file  # noqa: E402
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


def speak_all(model, vocoder, texts: list[tuple[str, str]], speaker: str) -> tuple[list[np.ndarray], float]:
    """genlab's waveforms of the texts (flite's phones for `speaker` -> the TTS model -> the vocoder or Griffin-Lim
    32), and the seconds it took."""
    waves = []
    start = time.perf_counter()
    for _, text in texts:
        log_mel = model.synthesize([phonemes(text, speaker)])[0][None]
        waves.append(voice(log_mel, model.settings, vocoder)[0].numpy())
    return waves, time.perf_counter() - start


def teacher_waves(texts: list[tuple[str, str]], voice: str, rate: int) -> list[np.ndarray]:
    with tempfile.TemporaryDirectory() as folder:
        return [resample(*read_audio(speak(text, Path(folder) / f"{i}.wav", voice))[:2], rate)
                for i, (_, text) in enumerate(texts)]


def corpus_for(work: Path, voice: str, digit_strings: int, sentences: int) -> tuple[Path, set[str]]:
    corpus = work / f"corpus-{voice}-{digit_strings}-{sentences}"
    if not (corpus / "metadata.csv").exists():
        make_tts_corpus(corpus, digit_strings, sentences, voice)
    return corpus, {line.split("|")[1] for line in (corpus / "metadata.csv").read_text().splitlines()}


def coqui(args, corpus: Path, texts: list[tuple[str, str]], rate: int, wers) -> dict:
    """The anchor: Coqui TTS's Glow-TTS trained on the same corpus for the same wall clock in its own venv
    (bench/coqui_anchor.py), speaking the same held-out texts through Griffin-Lim 32; judged as genlab is."""
    import subprocess

    with tempfile.TemporaryDirectory() as folder:
        listing = Path(folder) / "texts.json"
        listing.write_text(json.dumps([text for _, text in texts]))
        out = Path(folder) / "coqui"
        subprocess.run([args.coqui, str(Path(__file__).parent / "coqui_anchor.py"), "--corpus", str(corpus),
                        "--seconds", str(args.seconds), "--texts", str(listing), "--out", str(out),
                        "--threads", str(args.threads or torch.get_num_threads())], check=True)
        waves = [resample(*read_audio(out / f"{i:04d}.wav")[:2], rate) for i in range(len(texts))]
        anchor = json.loads((out / "anchor.json").read_text())
    return {**wers(waves), **anchor}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--digit-strings", type=int, default=600)
    parser.add_argument("--sentences", type=int, default=600)
    parser.add_argument("--voice", default="slt")
    parser.add_argument("--seconds", type=float, default=1200, help="genlab's training wall clock")
    parser.add_argument("--held-out", type=int, default=50, help="held-out texts of each kind")
    parser.add_argument("--second-voice", default="kal16", help="the voice fine-tuned to ('' for none)")
    parser.add_argument("--second-utterances", type=int, default=600, help="its corpus: half digit strings")
    parser.add_argument("--finetune-seconds", type=float, default=180, help="the fine-tune's wall clock")
    parser.add_argument("--finetune-lr", type=float, default=1e-3, help="the fine-tune's peak learning rate "
                        "(pre-training's: 3 minutes are too few steps for genlab finetune's default, a third of it)")
    parser.add_argument("--run", default=None, help="a first-voice run trained before, instead of training one")
    parser.add_argument("--vocoder", default=None, help="a vocoder run instead of Griffin-Lim")
    parser.add_argument("--coqui", default="/tmp/coquivenv/bin/python",
                        help="the Python of the Coqui TTS venv (bench/coqui_anchor.py says how to make it); '' skips")
    parser.add_argument("--model", default="{}")
    parser.add_argument("--train", default="{}")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--work", default="/tmp/genlab-tts")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "tts.json"))
    args = parser.parse_args()
    if args.coqui and not Path(args.coqui).exists():
        parser.error(f"--coqui {args.coqui} does not exist: make the anchor's venv as bench/coqui_anchor.py says, or "
                     "pass --coqui '' to run genlab alone")
    if args.threads:
        torch.set_num_threads(args.threads)
    work = Path(args.work)
    corpus, taken = corpus_for(work, args.voice, args.digit_strings, args.sentences)
    utterances = len(taken)
    second = None
    if args.second_voice:
        half = args.second_utterances // 2
        second, second_taken = corpus_for(work, args.second_voice, half, args.second_utterances - half)
        taken |= second_taken
    texts = held_out_texts(args.held_out, args.held_out, set(taken), seed=1)

    if args.run:  # a first voice trained before: its wall clock as its log has it
        from genlab.engine.runs import read_metrics

        run = Path(args.run)
        trained = max(row["time"] for row in read_metrics(run))
    else:
        run = work / f"run-{int(time.time())}"
        start = time.perf_counter()
        genlab.train("tts", str(corpus), run, model=json.loads(args.model), max_time=f"{int(args.seconds)}s",
                     max_steps=10**7, progress=False, seed=0, threads=args.threads, **json.loads(args.train))
        trained = time.perf_counter() - start
    steps = int(load_torch_file(run / "checkpoints" / "last.ckpt")["global_step"])
    model = genlab.load(run / "model")
    rate = model.settings.sample_rate
    vocoder = genlab.load(Path(args.vocoder) / "model") if args.vocoder else None
    ours, spoken = speak_all(model, vocoder, texts, args.voice)
    whisper = Whisper()

    def wer(waves: list[np.ndarray], kind: str) -> float:
        chosen = [i for i, (k, _) in enumerate(texts) if k == kind]
        heard = [whisper.transcribe(waves[i][None], rate)[0] for i in chosen]
        return round(word_error_rate([texts[i][1] for i in chosen], heard), 4)

    def wers(waves: list[np.ndarray]) -> dict[str, float]:
        return {kind: wer(waves, kind) for kind in ("digits", "sentence")}

    results = {"machine": machine(args.threads), "command": command("tts.py"),
               "corpus": {"utterances": utterances, "voice": args.voice}, "held_out": len(texts),
               "teacher_flite": wers(teacher_waves(texts, args.voice, rate)),
               "genlab_fastspeech": {**wers(ours), "train_seconds": round(trained, 1), "train_steps": steps,
                                     "parameters": model.num_parameters(), "inverse": args.vocoder or "griffin-lim-32",
                                     "speak_seconds": round(spoken, 1)}}
    print(json.dumps(results, indent=1), flush=True)
    if args.coqui:
        results["coqui_glow_tts"] = coqui(args, corpus, texts, rate, wers)
        print(json.dumps(results["coqui_glow_tts"], indent=1), flush=True)
    if second is not None:
        tuned = work / f"{run.name}-{args.second_voice}-{int(time.time())}"
        start = time.perf_counter()
        report = finetune(str(run), str(second), out=str(tuned), max_time=f"{int(args.finetune_seconds)}s",
                          max_steps=10**7, lr=args.finetune_lr, progress=False, seed=0, threads=args.threads)
        took = time.perf_counter() - start
        waves, _ = speak_all(genlab.load(tuned / "model"), vocoder, texts, args.second_voice)
        results["second_voice"] = {
            "voice": args.second_voice, "utterances": len(second_taken),
            "teacher_flite": wers(teacher_waves(texts, args.second_voice, rate)),
            "genlab_finetuned": {**wers(waves), "finetune_seconds": round(took, 1), "lr": args.finetune_lr,
                                 "finetune_steps": int(load_torch_file(tuned / "checkpoints" / "last.ckpt")
                                                       ["global_step"]),
                                 "held_out_loss_before": report["target_loss_before"],
                                 "held_out_loss_after": report["target_loss_after"]}}
        print(json.dumps(results["second_voice"], indent=1), flush=True)
    write(results, args.out)


if __name__ == "__main__":
    main()
