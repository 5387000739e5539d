"""Benchmark: genlab's learned vocoder against Griffin-Lim on held-out speech (issue 22), and its speed.

    python bench/vocoder.py --threads 1                       # the real run -> bench/results/vocoder.json
    python bench/vocoder.py --per-class 6 --seconds 15 --clips 4 --out /tmp/vocoder_smoke.json   # smoke test

The corpus is flite's spoken digits (`genlab data make spoken-digits`, `--per-class` clips a digit, four voices);
the vocoder (`genlab train vocoder`, a small HiFi-GAN: genlab/models/vocoder.py) trains on the training clips for
`--seconds` of wall clock. Each held-out clip's log-mel spectrogram (genlab.data.spectrogram's settings) is
turned back into sound two ways, the vocoder and Griffin-Lim with 32 iterations (fast Griffin-Lim, momentum
0.99, genlab's; the issue's anchor), and each result is compared with the clip itself: mel-cepstral distortion
(dB, DTW-aligned, silent frames left out) and log-spectral distance (dB), genlab.metrics.audio. Speed: seconds
of audio made per second of wall clock, one clip at a time, on `--threads`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import genlab  # noqa: E402
from genlab.data import load_data  # noqa: E402
from genlab.data.spectrogram import MelSettings, MelSpectrogram  # noqa: E402
from genlab.data.speech import make_spoken_digits  # noqa: E402
from genlab.metrics.audio import log_spectral_distance, mel_cepstral_distortion  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--per-class", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=900, help="the vocoder's training wall clock")
    parser.add_argument("--clips", type=int, default=100, help="held-out clips to compare on")
    parser.add_argument("--model", default="{}", help="JSON overrides of the vocoder config")
    parser.add_argument("--train", default="{}", help="JSON overrides of the training config")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--work", default="/tmp/genlab-speech-digits")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "vocoder.json"))
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    corpus = Path(args.work) / f"corpus-{args.per_class}"
    if not (corpus / "done").exists():
        make_spoken_digits(corpus, args.per_class)
        (corpus / "done").write_text("")
    data = load_data(str(corpus))
    clips = data.test_x[: args.clips]
    settings = MelSettings(sample_rate=data.sample_rate)
    transform = MelSpectrogram(settings)
    with torch.no_grad():
        log_mel = transform(torch.from_numpy(clips))

    run = Path(args.work) / f"vocoder-{int(time.time())}"
    start = time.perf_counter()
    genlab.train("vocoder", str(corpus), run, model=json.loads(args.model), max_time=f"{int(args.seconds)}s",
                 max_steps=10**7, progress=False, seed=0, threads=args.threads, **json.loads(args.train))
    trained = time.perf_counter() - start
    from genlab.files import load_torch_file

    steps = int(load_torch_file(run / "checkpoints" / "last.ckpt")["global_step"])
    vocoder = genlab.load(run / "model")

    def timed(make) -> tuple[np.ndarray, float]:
        start = time.perf_counter()
        waves = np.concatenate([make(log_mel[i : i + 1]) for i in range(len(clips))])
        return waves, clips.size / data.sample_rate / (time.perf_counter() - start)

    ours, our_speed = timed(lambda m: vocoder.vocode(m, length=clips.shape[1]).numpy())
    theirs, their_speed = timed(lambda m: transform.invert(m, iterations=32, length=clips.shape[1],
                                                           generator=torch.Generator().manual_seed(0)).numpy())

    def scores(waves: np.ndarray, speed: float) -> dict:
        mcd = [mel_cepstral_distortion(c, w, data.sample_rate) for c, w in zip(clips, waves, strict=True)]
        lsd = [log_spectral_distance(c, w) for c, w in zip(clips, waves, strict=True)]
        return {"mcd_db": round(statistics.mean(mcd), 3), "lsd_db": round(statistics.mean(lsd), 3),
                "realtime_factor": round(speed, 2)}

    results = {"machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                           "threads": torch.get_num_threads(), "torch": torch.__version__},
               "command": "python bench/vocoder.py " + " ".join(sys.argv[1:]),
               "clips": len(clips), "clip_seconds": round(clips.shape[1] / data.sample_rate, 3),
               "genlab_vocoder": {**scores(ours, our_speed), "train_seconds": round(trained, 1), "train_steps": steps,
                                  "parameters": sum(p.numel() for p in vocoder.generator.parameters()),
                                  "config": {k: v for k, v in vars(vocoder.config).items() if k != "sound"}},
               "griffin_lim_32": scores(theirs, their_speed)}
    print(json.dumps({k: results[k] for k in ("genlab_vocoder", "griffin_lim_32")}, indent=1), flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
