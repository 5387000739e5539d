"""Benchmark: training on an image folder of 200,000 files (issue 24), from Arrow shards prepared once on disk,
against the in-memory path on the same folder.

    python bench/stream_images.py                          # the real run -> bench/results/stream_images.json
    python bench/stream_images.py --files 600 --steps 2 --work /tmp/images-smoke --out /tmp/images_smoke.json

The folder: `--files` PNG files of `--size` px colour crops, each from a random place, scale and flip of one of
scikit-image's colour photographs, in one subfolder per photograph (its class). `genlab data prepare FOLDER` makes
the shards (every core; images/s reported); then `genlab train FAMILY --data SHARDS --max-steps STEPS` runs in a
fresh process (bench/first_step.py), which reports the seconds from its launch to its first optimiser step and its
peak resident memory; the baseline is the same command on the folder itself, which genlab reads whole into memory
(with `--baseline`).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from common import command, first_step, machine, write
from PIL import Image

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "retina", "immunohistochemistry", "colorwheel",
          "hubble_deep_field")


def _write_share(args: tuple[Path, int, int, int, int]) -> int:
    """Files start .. stop of the folder: crop k comes from photo k % len(PHOTOS), drawn with seed k."""
    from skimage import data as pictures

    folder, start, stop, size, _ = args
    photos = [np.asarray(getattr(pictures, name)())[..., :3] for name in PHOTOS]
    for k in range(start, stop):
        rng = np.random.default_rng(k)
        photo = photos[k % len(photos)]
        side = int(rng.integers(size, min(photo.shape[:2]) + 1))
        y, x = (int(rng.integers(0, photo.shape[i] - side + 1)) for i in (0, 1))
        crop = Image.fromarray(photo[y : y + side, x : x + side]).resize((size, size), Image.Resampling.BILINEAR)
        if rng.random() < 0.5:
            crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        crop.save(folder / PHOTOS[k % len(photos)] / f"{k:07d}.png", compress_level=1)
    return stop - start


def make_folder(folder: Path, files: int, size: int, workers: int) -> dict:
    record = folder / "folder.json"
    if record.exists() and json.loads(record.read_text()) == {"files": files, "size": size}:
        return {"files": files, "size": size, "made_seconds": None}
    start = time.perf_counter()
    for name in PHOTOS:
        (folder / name).mkdir(parents=True, exist_ok=True)
    bounds = np.linspace(0, files, 64 + 1).astype(int)
    with ProcessPoolExecutor(workers) as pool:
        made = int(sum(pool.map(_write_share, [(folder, int(a), int(b), size, 0) for a, b in zip(bounds, bounds[1:])])))
    record.write_text(json.dumps({"files": files, "size": size}))
    return {"files": made, "size": size, "made_seconds": round(time.perf_counter() - start, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=200_000)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--family", default="vae")
    parser.add_argument("--model", default="{}", help="JSON overrides of the family's config")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--baseline", action=argparse.BooleanOptionalAction, default=True,
                        help="also train from the folder itself (read whole into memory)")
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    parser.add_argument("--reuse", action="store_true", help="keep shards already prepared (their meta.json's figures)")
    parser.add_argument("--work", default="/tmp/genlab-images")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "stream_images.json"))
    args = parser.parse_args()
    from genlab.data.shards import prepare_images

    work = Path(args.work)
    folder, shards = work / f"folder-{args.files}-{args.size}", work / f"shards-{args.files}-{args.size}"
    results = {"machine": machine(), "command": command("stream_images.py"),
               "folder": make_folder(folder, args.files, args.size, args.workers) | {"path": str(folder)}}
    print("folder:", results["folder"], flush=True)
    reused = args.reuse and (shards / "meta.json").exists()
    meta = json.loads((shards / "meta.json").read_text()) if reused else prepare_images(folder, shards,
                                                                                          workers=args.workers)
    results["prepare"] = {k: meta[k] for k in ("counts", "shape", "workers", "seconds", "images_per_s")}
    results["prepare"]["reused"] = reused
    results["prepare"]["disk_mb"] = round(sum(p.stat().st_size for p in shards.rglob("*") if p.is_file()) / 2**20, 1)
    print("prepared:", results["prepare"], flush=True)
    model = json.loads(args.model)
    results["shards"] = first_step(args.family, shards, args.steps, args.work, model)
    print("from shards:", results["shards"], flush=True)
    if args.baseline:
        results["in_memory"] = first_step(args.family, folder, args.steps, args.work, model)
        print("in memory:", results["in_memory"], flush=True)
    results["family"], results["peak_rss_budget_mb"], results["first_step_budget_seconds"] = args.family, 2048, 30
    write(results, args.out)


if __name__ == "__main__":
    main()
