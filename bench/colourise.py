"""Benchmark: colourisation (issue 23), grey -> colour with pix2pix in Lab, on the shapes world, whose colours the
analytic detector reads back, against the grey image itself and a per-pixel L1 regression of the same U-Net.

    python bench/colourise.py --threads 1 --seconds 1800       # the real run -> bench/results/colourise.json
    python bench/colourise.py --smoke --out /tmp/colourise.json  # tiny settings: checks the script runs
    python bench/colourise.py --photos --threads 1 --seconds 900 --out bench/results/colourise_photos.json

`--photos`: a folder of colour pictures instead, as a user would bring: the colour photographs that ship in
scikit-image's wheel (`PHOTOS`), cut into non-overlapping `--size` px tiles saved as PNG files, which
`genlab train pix2pix --data FOLDER` reads like any folder (its fixed random tenth is the test split: tiles no
model trained on, from the same photographs). There is no detector to read a photo's objects back, so the figures
are PSNR, SSIM, deltaE over all pixels and over the coloured ones (chroma above 5), ab L1 there, and the mean
colourfulness (Hasler and Suesstrunk 2003) beside the real tiles': what tells a greyish average from colour.

The set: `genlab data make shapes` (`--n` scenes of 1-3 objects at 32 px; test/, a tenth, is never trained on).
Each scene's grey image of the same CIE lightness (genlab.data.colour.grey) is the input; the colour is the target.
Two models with the same U-Net train for the same wall clock at the same time, one process and `--threads` each:

- genlab_pix2pix: `genlab train pix2pix --model.task colourise` (L in, ab out, PatchGAN + 100 x L1, EMA);
- l1_regression: the same generator, input and output trained on L1 to ab alone, no discriminator, with the same
  optimiser, batch, clipping and EMA (written here: the per-pixel regression whose greyish averages Zhang et al.
  2016 set out to beat).

Each colours the first `--scenes` test scenes. Beside them, `grey` (the input itself, a = b = 0: what a colouriser
must beat) and `real` (the originals: the instrument's ceiling). For each: PSNR and SSIM in RGB, the mean CIE 1976
colour difference (deltaE) over all pixels and over the objects' pixels (the target's chroma above 5; the black
background is easy), the mean |a| + |b| error (ab L1) on the objects' pixels, and genlab.metrics.shapes's reading
of the coloured image against the scene's own objects: the share of objects whose colour is read right (the
headline) and of scenes read right in everything (count, colour, shape, size, positions). A grey image has no
colour to read, so its colour share is 0 by construction; the detector reads the real scenes back completely.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from common import command, machine, side_by_side, train_for, write

import genlab  # noqa: E402  (bench/common.py put the repository first on the path)
from genlab.data import load_data  # noqa: E402
from genlab.data.colour import chroma, delta_e, grey, rgb_to_lab  # noqa: E402
from genlab.data.shapes import make_shapes  # noqa: E402
from genlab.metrics.images import psnr, ssim  # noqa: E402
from genlab.metrics.shapes import score  # noqa: E402

VARIANTS = ("genlab_pix2pix", "l1_regression")
PHOTOS = ("astronaut", "chelsea", "coffee", "hubble_deep_field", "immunohistochemistry", "retina", "rocket")
SMOKE = {"n": 60, "seconds": 1, "scenes": 6, "model": '{"widths": [8, 16], "d_widths": [8, 16]}', "batch": 16}


def colourfulness(rgb: torch.Tensor) -> torch.Tensor:
    """Hasler and Suesstrunk's colourfulness (2003) of images (N, 3, H, W) in [0, 1], on the 0-255 scale: the
    spread plus a third of the mean of the opponent channels rg = R - G and yb = (R + G) / 2 - B; 0 for grey."""
    r, g, b = (rgb * 255).unbind(1)
    rg, yb = (r - g).flatten(1), ((r + g) / 2 - b).flatten(1)
    spread = (rg.var(1, correction=0) + yb.var(1, correction=0)).sqrt()
    return spread + 0.3 * (rg.mean(1) ** 2 + yb.mean(1) ** 2).sqrt()


def measured(out: torch.Tensor, target: torch.Tensor, objects: list[list[dict]] | None) -> dict:
    """The figures of colourings `out` of `target`, both (N, 3, H, W) in [0, 1]: the colourings are judged as the
    8-bit images they would be saved as. `objects`: each shapes scene's, read back by the detector (None for
    photos)."""
    out = (out * 255).round() / 255
    on_objects = (chroma(target) > 5).squeeze(1)  # (N, H, W): the coloured pixels
    lab_error = (rgb_to_lab(out) - rgb_to_lab(target))[:, 1:].abs().sum(1)  # (N, H, W): |da| + |db|
    difference = delta_e(out, target)
    figures = {"psnr_db": round(psnr(out, target).mean().item(), 3), "ssim": round(ssim(out, target).mean().item(), 4),
               "delta_e": round(difference.mean().item(), 3),
               "delta_e_objects": round(difference[on_objects].mean().item(), 3),
               "ab_l1_objects": round(lab_error[on_objects].mean().item(), 3)}
    if objects is None:
        return {**figures, "colourfulness": round(colourfulness(out).mean().item(), 2), "images": len(out)}
    pixels = (out * 255).round().to(torch.uint8).numpy()
    rows = [score(image, scene) for image, scene in zip(pixels, objects, strict=True)]
    colour = [ok for row in rows for ok in row["colour"]]
    return {**figures, "objects_colour_correct": round(float(np.mean(colour)), 4),
            "scenes_all_correct": round(float(np.mean([row["all_correct"] for row in rows])), 4),
            "scenes": len(rows), "objects": len(colour)}


def held_out(data: Path, scenes: int) -> tuple[torch.Tensor, list[list[dict]] | None]:
    """The first `scenes` test images as floats in [0, 1], and the objects of each scene (None for photos)."""
    images = load_data(str(data))
    objects = images.objects[1][:scenes] if getattr(images, "objects", None) is not None else None
    return torch.from_numpy(images.test_x[:scenes]).float() / 255, objects


def photo_tiles(out: Path, size: int) -> int:
    """The PHOTOS cut into non-overlapping size x size tiles, written as PNG files into `out`; how many."""
    import skimage.data
    from PIL import Image

    part = out.with_name(out.name + ".part")  # renamed when whole: a folder that is there is complete
    part.mkdir(parents=True, exist_ok=True)
    count = 0
    for name in PHOTOS:
        photo = getattr(skimage.data, name)()[..., :3]
        for top in range(0, photo.shape[0] - size + 1, size):
            for left in range(0, photo.shape[1] - size + 1, size):
                Image.fromarray(photo[top: top + size, left: left + size]).save(part / f"{name}-{top}-{left}.png")
                count += 1
    part.rename(out)
    return count


def regression(data: Path, seconds: float, model_config: dict, batch: int, run: Path) -> tuple:
    """pix2pix's generator trained on L1 to ab alone for `seconds`: the recipe's optimiser (AdamW, lr 2e-4,
    betas (0.5, 0.999)), gradient clipping at 10 and the EMA of the weights, as `genlab train pix2pix` does; no
    discriminator. The model, the seconds and the steps."""
    from genlab.engine.recipes import recipe_for
    from genlab.models.ema import ema_decay, ema_update
    from genlab.models.pix2pix import Pix2Pix, Pix2PixConfig

    images = load_data(str(data))
    model = Pix2Pix(Pix2Pix.config_for_data(Pix2PixConfig(task="colourise", **model_config), images))
    train = recipe_for("pix2pix").defaults
    optimiser = torch.optim.AdamW(model.generator.parameters(), lr=train["lr"], betas=train["betas"],
                                  weight_decay=0.0)
    x_all, generator = torch.from_numpy(images.train_x), torch.Generator().manual_seed(0)
    batch = min(batch, len(x_all))
    at, start, step = len(x_all), time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        if at + batch > len(x_all):  # epochs in fresh random orders, as the engine feeds them
            order, at = torch.randperm(len(x_all), generator=generator), 0
        target = x_all[order[at : at + batch]].float() / 255
        at += batch
        x = model.lift(model.make_input(target))
        loss = (model.generator(x) - model.target(target)).abs().mean()
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.generator.parameters(), train["grad_clip"])
        optimiser.step()
        ema_update(model.generator_ema, model.generator, ema_decay(model.config.ema_decay, step))
        step += 1
    model.save_pretrained(run / "model")
    return model.eval(), time.perf_counter() - start, step


def run_variant(args, data: Path, name: str) -> dict:
    """Train one colouriser for the wall clock, then colour the held-out scenes and measure them."""
    if args.threads:
        torch.set_num_threads(args.threads)
    run = Path(args.work) / f"run-{name}-{int(time.time())}"
    model_config = json.loads(args.model)
    if name == "genlab_pix2pix":
        took, steps = train_for("pix2pix", str(data), run, args.seconds, args.threads,
                                {"task": "colourise", **model_config}, {"batch_size": args.batch, "holdout": 0})
        model = genlab.load(run / "model")
    else:
        model, took, steps = regression(data, args.seconds, model_config, args.batch, run)
    target, objects = held_out(data, args.scenes)
    start = time.perf_counter()
    out = model.translate(model.make_input(target))
    seconds = time.perf_counter() - start
    torch.save(out[:16], run / "examples.pt")  # for the parent's grid
    return {"run": str(run), "train_seconds": round(took, 1), "train_steps": steps,
            "parameters": sum(p.numel() for p in model.generator.parameters()),
            "colour_seconds": round(seconds, 2), **measured(out, target, objects)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=20000, help="scenes made (a tenth for test/)")
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=1800, help="each model's training wall clock")
    parser.add_argument("--scenes", type=int, default=1000, help="held-out (test/) scenes coloured and measured")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--variant", default=None, help=argparse.SUPPRESS)  # one variant, in a child process
    parser.add_argument("--model", default="{}", help="JSON overrides of the pix2pix config (both models)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--smoke", action="store_true", help="60 scenes, 1 s, a tiny U-Net: checks the script runs")
    parser.add_argument("--photos", action="store_true", help="a folder of colour photographs' tiles, not shapes")
    parser.add_argument("--work", default="/tmp/genlab-colourise")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "colourise.json"))
    args = parser.parse_args()
    if args.smoke:
        for key, value in SMOKE.items():
            setattr(args, key, value)
    data = Path(args.work) / (f"photos-{args.size}" if args.photos else f"shapes-{args.n}-{args.size}")
    if args.variant:
        Path(args.out).write_text(json.dumps(run_variant(args, data, args.variant)))
        return
    if args.photos and not data.exists():
        print(f"cut {photo_tiles(data, args.size):,} tiles of {args.size} px", flush=True)
    if not args.photos and not (data / "shapes.json").exists():
        start = time.perf_counter()
        make_shapes(data, args.n, size=args.size)
        print(f"made {args.n:,} scenes in {time.perf_counter() - start:.1f} s", flush=True)

    target, objects = held_out(data, args.scenes)
    source = {"photos": list(PHOTOS), "tiles": len(list(data.glob("*.png")))} if args.photos else {"scenes": args.n}
    results = {"machine": machine(args.threads), "command": command("colourise.py"),
               "data": {**source, "size": args.size, "held_out_scenes": len(target)},
               "budget": {"seconds": args.seconds, "batch": args.batch, "model": json.loads(args.model),
                          "smoke": args.smoke},
               "real": measured(target, target, objects)}
    results["grey"] = measured(grey(target).expand(-1, 3, -1, -1), target, objects)  # the input itself: a = b = 0
    # the colourisers train side by side, one process each, so that each gets the same wall clock on its own core
    results |= side_by_side(__file__, "--variant", args.variants.split(","), args.work)
    grid = examples(results, target, Path(args.work) / "colourise_examples.png")
    results["examples"] = str(grid)
    print(json.dumps({k: v for k, v in results.items() if k in ("real", "grey", *VARIANTS)}, indent=1), flush=True)
    write(results, args.out)


def examples(results: dict, target: torch.Tensor, path: Path) -> Path:
    """A grid of 16 held-out scenes: grey inputs, each colouriser's colourings, the originals (one row each)."""
    from genlab.evaluation.report import save_grid

    rows = [grey(target[:16]).expand(-1, 3, -1, -1)]
    rows += [torch.load(Path(results[name]["run"]) / "examples.pt") for name in VARIANTS if name in results]
    rows.append(target[:16])
    return save_grid(torch.cat(rows), str(path), nrow=len(rows[0]))


if __name__ == "__main__":
    main()
