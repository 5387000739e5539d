"""ANCHOR, NOT GENLAB: Coqui TTS's Glow-TTS trained from scratch on a genlab TTS corpus, then Griffin-Lim synthesis.

Trains Coqui's Glow-TTS (recipes/ljspeech/glow_tts/train_glowtts.py as the model of the config) on a corpus in
LJSpeech layout (`metadata.csv` with `ID|text|text`, `wavs/ID.wav`, 16 kHz mono) on the CPU for a wall-clock
budget, then speaks every text of `--texts` (a JSON list of strings) through Coqui's own inference path
(`model.synthesize(..., use_griffin_lim=True)`, the one Coqui's Synthesizer calls) into OUT/0000.wav, 0001.wav, ...
and writes OUT/anchor.json. Nothing of genlab is imported and nothing is downloaded at run time. Run it with the
anchor's own venv, never genlab's:

    python3.11 -m venv /tmp/coquivenv
    /tmp/coquivenv/bin/pip install torch==2.13.0          # the CPU build; a loose pin would pull a CUDA build
    /tmp/coquivenv/bin/pip install coqui-tts==0.28.0 six==1.17.0 torchaudio==2.11.1 torchcodec==0.17.0
    rm /tmp/coquivenv/lib/python3.11/site-packages/torchaudio/lib/*.so
    /tmp/coquivenv/bin/python bench/coqui_anchor.py --corpus CORPUS --seconds 900 --texts texts.json --out OUT \
        --threads 1

Why the extra installs: coqui-tts 0.28.0 imports `six` without declaring it; `import TTS` refuses to start
without torchaudio and (torch >= 2.9) torchcodec, and Glow-TTS's base class imports torchaudio. PyPI's newest
torchaudio, 2.11.1 (needs torch >= 2.11), is a CUDA build whose C++ extensions need libc10_cuda.so; without them
(the `rm`) torchaudio runs as pure Python, which is all Coqui's Glow-TTS path touches (it never calls torchaudio
or torchcodec: audio is read with soundfile/librosa).

Changes from Coqui's recipe (everything else is GlowTTSConfig's default), also listed in anchor.json:
- text_cleaner english_cleaners, use_phonemes False: characters, since espeak-ng is not installed here;
- audio.sample_rate 16000 (the corpus), audio.griffin_lim_iters 32 (as genlab's side; Coqui's default is 60);
- mixed_precision False: the recipe's fp16 is a GPU setting (on a CPU the Trainer would run bf16 autocast);
- num_loader_workers 0: one process, `--threads` threads, no loader processes beside it;
- batch_size `--batch-size` (default 16, not 32): a 1-thread step at 32 takes ~6 s here (~150 updates in 900 s),
  at 16 ~2 s (~400 updates); more updates per budget;
- scheduler_after_epoch False and lr_scheduler_params warmup_steps `--warmup` (default 100, not 4000): with the
  Trainer's default the NoamLR schedule advances once per epoch, so its 4000-step warm-up would keep the learning
  rate near 1e-6 for the whole budget (a few epochs); stepped per update as Noam's schedule is defined, with a
  warm-up of about a quarter of the updates the budget allows, so that the peak rate (1e-3) is reached;
- no eval split, no eval, no test sentences, no checkpoints or dashboard: the whole corpus is trained on and no
  budget is spent on anything but training steps;
- training stops at the first step end past `--seconds` (counted from the first epoch's start, set-up
  excluded); train_steps counts optimizer updates, not Glow-TTS's 10 data-dependent initialisation passes.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import TTS  # noqa: E402
from trainer import Trainer, TrainerArgs  # noqa: E402
from trainer.logging.dummy_logger import DummyLogger  # noqa: E402
from TTS.tts.configs.glow_tts_config import GlowTTSConfig  # noqa: E402
from TTS.tts.configs.shared_configs import BaseDatasetConfig  # noqa: E402
from TTS.tts.datasets import load_tts_samples  # noqa: E402
from TTS.tts.models.glow_tts import GlowTTS  # noqa: E402


class BudgetSpent(Exception):
    pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", required=True, help="folder with metadata.csv and wavs/")
    parser.add_argument("--seconds", type=float, required=True, help="training wall clock")
    parser.add_argument("--texts", required=True, help="JSON list of texts to synthesise")
    parser.add_argument("--out", required=True)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--warmup", type=int, default=100, help="NoamLR warm-up (updates)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    texts = json.loads(Path(args.texts).read_text())

    changes = {"text_cleaner": "english_cleaners", "use_phonemes": False, "mixed_precision": False,
               "num_loader_workers": 0, "batch_size": args.batch_size,
               "lr_scheduler_params": {"warmup_steps": args.warmup}, "scheduler_after_epoch": False,
               "run_eval": False, "test_delay_epochs": 10**9, "test_sentences": [], "save_checkpoints": False,
               "save_step": 10**9, "log_model_step": 10**9, "plot_step": 10**9, "save_best_after": 10**9,
               "epochs": 10**6}
    audio_changes = {"sample_rate": 16000, "griffin_lim_iters": 32}
    dataset = BaseDatasetConfig(formatter="ljspeech", meta_file_train="metadata.csv", path=str(args.corpus))
    config = GlowTTSConfig(datasets=[dataset], print_step=25, **changes)
    for key, value in audio_changes.items():
        setattr(config.audio, key, value)

    work = tempfile.TemporaryDirectory(prefix="coqui-anchor-")
    config.output_path = work.name
    model = GlowTTS(config)  # coqui-tts 0.28 builds the AudioProcessor and the TTSTokenizer itself
    ap, parameters = model.ap, sum(p.numel() for p in model.parameters())  # counted as the Trainer does
    train_samples, _ = load_tts_samples(model.config, eval_split=False)

    clock = {}

    def start(trainer: Trainer) -> None:  # the first epoch's loader is built: set-up ends
        clock.setdefault("start", time.perf_counter())

    def check(trainer: Trainer) -> None:
        if time.perf_counter() - clock["start"] >= args.seconds:
            raise BudgetSpent

    trainer = Trainer(TrainerArgs(), model.config, work.name, model=model, train_samples=train_samples,
                      dashboard_logger=DummyLogger(), parse_command_line_args=False,
                      callbacks={"on_train_epoch_start": start, "on_train_step_end": check})
    try:
        trainer._fit()  # fit() minus its handlers, which turn any exception into sys.exit
    except BudgetSpent:
        pass
    train_seconds = time.perf_counter() - clock["start"]

    model.eval()
    model.store_inverse()
    start_synth = time.perf_counter()
    with torch.inference_mode():
        for i, text in enumerate(texts):
            wav = model.synthesize(text, use_griffin_lim=True)["wav"]
            ap.save_wav(wav, str(out / f"{i:04d}.wav"), sr=ap.sample_rate)
    synthesis_seconds = time.perf_counter() - start_synth

    report = {"model": "glow_tts", "coqui_tts_version": TTS.__version__, "torch": torch.__version__,
              "train_seconds": round(train_seconds, 1),
              "train_steps": max(0, trainer.total_steps_done - config.data_dep_init_steps),
              "data_dep_init_steps": config.data_dep_init_steps, "parameters": parameters,
              "synthesis_seconds": round(synthesis_seconds, 1), "utterances": len(train_samples),
              "config_changes": [f"{k}={v!r}" for k, v in changes.items()]
              + [f"audio.{k}={v!r}" for k, v in audio_changes.items()]}
    (out / "anchor.json").write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report))
    work.cleanup()


if __name__ == "__main__":
    main()
