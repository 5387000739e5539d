"""Style transfer against histogram matching: held-out style loss at equal content SSIM, and AdaIN's speed.

The claim (issue 23): genlab's style transfer (Gatys optimisation, and a feed-forward AdaIN model, both on
EfficientNet-Lite0 features with Wang et al.'s softmax smoothing) reaches a lower held-out style loss than
histogram matching at equal content SSIM, and the feed-forward model stylises a 256x256 photo in under 1 s.

- Data: scikit-image's bundled pictures, all offline. Content to stylise: astronaut, chelsea, coffee, rocket.
  Styles: brick, grass, gravel (grey textures), hubble_deep_field, immunohistochemistry, retina. The AdaIN
  model (the `style` family, trained through the engine as `genlab train style` trains it) learns from other
  photos (camera, coins, clock, moon, page, the motorcycle stereo pair) and from the first --train-styles styles
  only: the rest are styles it never saw.
- Every image is brought to 256x256 (short side 256, centre crop), except the training styles, which the training
  crops read whole at that scale.
- Held-out style loss: the relative squared error of Gram matrices, mean((G - G_style)^2) / mean(G_style^2),
  averaged over layers, in networks no method optimised against: EfficientNet-Lite1 (ImageNet weights trained
  separately from Lite0's, 21 blocks against 16; raw features of stages 1-5, no softmax), and a VGG-like network
  with fixed random weights (Ustyuzhaninov et al., "Texture synthesis using shallow convolutional networks with
  random filters", 2016: random filters carry texture statistics). Lower is better.
- Content SSIM: skimage.metrics.structural_similarity between the 256x256 photo and the output, over RGB.
- Equal SSIM: every method's output is blended with the photo, (1 - b) photo + b output for b in 0, 0.1, ..., 1,
  which traces its (SSIM, style loss) curve; each method's style loss is read off its curve at the SSIM of
  histogram matching (b = 1). A method whose full output keeps more of the photo than histogram matching does
  (higher SSIM) is read at b = 1: if its loss is lower there it wins at a higher SSIM, which is a stronger win.
- Anchor: skimage.exposure.match_histograms(photo, style, channel_axis=-1).

    python bench/style.py                        # -> bench/results/style.json (about 35 min on 2 cores)
    python bench/style.py --smoke --out /tmp/style.json   # tiny settings: one pair, a few steps, 64 px
    python bench/style.py --gatys-only --colour-weight W --out FILE   # Gatys (its colour term at W) and the anchor
"""

from __future__ import annotations

import argparse
import dataclasses
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

CONTENTS = ("astronaut", "chelsea", "coffee", "rocket")
STYLES = ("immunohistochemistry", "hubble_deep_field", "brick", "gravel", "grass", "retina")
TRAIN_CONTENTS = ("camera", "coins", "clock", "moon", "page", "motorcycle_left", "motorcycle_right")
BLENDS = np.linspace(0, 1, 11)


def picture(name: str) -> np.ndarray:
    """A scikit-image picture as uint8 RGB (H, W, 3): grey ones repeated, RGBA's alpha dropped."""
    import skimage.data

    if name.startswith("motorcycle_"):
        image = skimage.data.stereo_motorcycle()[0 if name.endswith("left") else 1]
    else:
        image = getattr(skimage.data, name)()
    return np.repeat(image[..., None], 3, axis=-1) if image.ndim == 2 else np.ascontiguousarray(image[..., :3])


def square(image: np.ndarray, size: int) -> torch.Tensor:
    """(H, W, 3) uint8 -> (1, 3, size, size) in [0, 1]: short side to `size`, centre crop."""
    from genlab.models.style import resize_short_side

    x = resize_short_side(torch.from_numpy(image).permute(2, 0, 1), size)
    top, left = (x.shape[-2] - size) // 2, (x.shape[-1] - size) // 2
    return x[..., top : top + size, left : left + size]


def as_hwc(x: torch.Tensor) -> np.ndarray:
    return x[0].permute(1, 2, 0).numpy().astype(np.float64)


# -- the judges ---------------------------------------------------------------------------------


class RandomVGG(torch.nn.Module):
    """VGG-19's first three blocks (conv 3x3 + ReLU, max-pooling) with Kaiming-normal random weights, seed 0."""

    def __init__(self, widths: tuple[int, ...] = (64, 128, 256), seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        layers, cin = [], 3
        for i, w in enumerate(widths):
            for _ in range(2):
                conv = torch.nn.Conv2d(cin, w, 3, padding=1)
                with torch.no_grad():
                    conv.weight.copy_(torch.randn(conv.weight.shape, generator=g) * (2 / (9 * cin)) ** 0.5)
                    conv.bias.zero_()
                layers += [conv, torch.nn.ReLU()]
                cin = w
            if i < len(widths) - 1:
                layers.append(torch.nn.MaxPool2d(2))
        self.net = torch.nn.Sequential(*layers).requires_grad_(False).eval()

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for layer in self.net:
            x = layer(x)
            if isinstance(layer, torch.nn.ReLU):
                out.append(x)
        return out[::2]  # the first ReLU of each block, as Gatys's conv1_1, conv2_1, conv3_1


class Judge:
    """Held-out style loss of images against a style image in one network's Gram matrices."""

    def __init__(self, name: str):
        from genlab.metrics.features import efficientnet_features

        self.name = name
        if name == "efficientnet_lite1":
            net = efficientnet_features("lite1")
            layers = ("stage1", "stage2", "stage3", "stage4", "stage5")
            self.features = lambda x: list(net(x, layers).values())
        else:
            self.features = RandomVGG()

    @torch.no_grad()
    def loss(self, images: torch.Tensor, style: torch.Tensor) -> np.ndarray:
        """(B, 3, H, W) in [0, 1] -> (B,) relative Gram errors, averaged over the network's layers."""
        from genlab.models.style import gram

        targets = [gram(f) for f in self.features(style)]
        errors = [((gram(f) - g) ** 2).mean(dim=(1, 2)) / (g**2).mean() for f, g in zip(self.features(images), targets)]
        return torch.stack(errors).mean(0).numpy()


def curve(photo: torch.Tensor, output: torch.Tensor, style: torch.Tensor, judges: list[Judge]) -> dict:
    """The (SSIM, style loss) points of the blends of `output` with `photo`."""
    from skimage.metrics import structural_similarity

    blends = torch.stack([(1 - b) * photo[0] + b * output[0] for b in BLENDS]).float()
    ssim = [structural_similarity(as_hwc(photo), as_hwc(x[None]), channel_axis=-1, data_range=1.0) for x in blends]
    return {"ssim": ssim, **{j.name: j.loss(blends, style).tolist() for j in judges}}


def at_ssim(points: dict, judge: str, target: float) -> tuple[float, float]:
    """(style loss, SSIM) read off a blend curve at SSIM `target`, or at b = 1 where the output's SSIM is higher."""
    ssim, loss = np.asarray(points["ssim"]), np.asarray(points[judge])
    if ssim[-1] >= target:
        return float(loss[-1]), float(ssim[-1])
    order = np.argsort(ssim)  # SSIM falls as b grows; interpolate on the sorted curve
    return float(np.interp(target, ssim[order], loss[order])), target


# -- the methods --------------------------------------------------------------------------------


def histogram_matching(photo: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
    from skimage.exposure import match_histograms

    matched = match_histograms(as_hwc(photo), as_hwc(style), channel_axis=-1)
    return torch.from_numpy(matched).permute(2, 0, 1)[None].float().clamp(0, 1)


def train_adain(args, styles: list[str]):
    """The style family trained through the engine (genlab.train), as `genlab train style` trains it, on the training
    photos (each brought to size x size, so that the folder's images share a shape) and the first styles (whole);
    or a trained model loaded (--adain-model)."""
    import tempfile

    from PIL import Image

    import genlab

    if args.adain_model:
        return genlab.load(args.adain_model), {"loaded_from": args.adain_model}
    with tempfile.TemporaryDirectory(prefix="genlab-style-bench-") as tmp:  # the image folders; the run unless kept
        scratch = Path(tmp)
        (scratch / "content").mkdir()
        (scratch / "styles").mkdir()
        for name in TRAIN_CONTENTS:
            array = (square(picture(name), args.size)[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
            Image.fromarray(array).save(scratch / "content" / f"{name}.png")
        for name in styles:
            Image.fromarray(picture(name)).save(scratch / "styles" / f"{name}.png")
        start = time.perf_counter()
        out = Path(args.save_adain) if args.save_adain else scratch / "run"
        run = genlab.train("style", str(scratch / "content"), out,
                           {"styles": str(scratch / "styles"), "short_side": args.size, "crop": args.crop},
                           max_steps=args.adain_steps, max_time=f"{args.adain_seconds:g}s",
                           batch_size=args.batch_size, seed=0, holdout=0.0, log_every=50, progress=False,
                           threads=args.threads)
        seconds = round(time.perf_counter() - start, 1)
        metrics = run / "metrics.jsonl"  # the logged losses, every log_every steps (none yet in a 2-step smoke run)
        logged = [json.loads(line) for line in metrics.read_text().splitlines()] if metrics.exists() else []
        card = (run / "model" / "README.md").read_text()  # the engine's model card records the steps taken
        steps = int(next(line for line in card.splitlines() if line.startswith("- steps: ")).split(": ")[1])
        model = genlab.load(run)
    info = {"steps": steps, "seconds": seconds, "losses": ([m for m in logged if "train/loss" in m] or [{}])[-1],
            "run": args.save_adain or None, "train_contents": list(TRAIN_CONTENTS), "train_styles": styles,
            "batch_size": args.batch_size, "crop": args.crop}
    return model, info


def stylisation_seconds(model, size: int, repeats: int = 5) -> dict:
    """Median wall clock of AdaIN on one size x size photo and style (both encoded, decoded), at 1 and all threads."""
    photo, style = torch.rand(1, 3, size, size), torch.rand(1, 3, size, size)
    out, threads = {}, torch.get_num_threads()
    for n in sorted({1, threads}):
        torch.set_num_threads(n)
        model.stylize(photo, style)  # warm-up
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            model.stylize(photo, style)
            times.append(time.perf_counter() - start)
        out[f"threads_{n}"] = round(statistics.median(times), 4)
    torch.set_num_threads(threads)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--contents", default=",".join(CONTENTS))
    parser.add_argument("--styles", default=",".join(STYLES))
    parser.add_argument("--train-styles", type=int, default=3, help="AdaIN trains on the first this many styles")
    parser.add_argument("--gatys-steps", type=int, default=150)
    parser.add_argument("--colour-weight", type=float, default=None,
                        help="Gatys's colour term (GatysOptions.colour_weight; default the options')")
    parser.add_argument("--gatys-only", action="store_true", help="Gatys and the anchor alone: no AdaIN training")
    parser.add_argument("--adain-steps", type=int, default=20000)
    parser.add_argument("--adain-seconds", type=float, default=1200, help="AdaIN's training wall clock")
    parser.add_argument("--adain-model", default="", help="a trained style model's run folder: skip training")
    parser.add_argument("--save-adain", default="", help="train the style model into this run folder")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--crop", type=int, default=128)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--smoke", action="store_true", help="one pair at 64 px, a few steps: checks the script runs")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "style.json"))
    args = parser.parse_args()
    if args.smoke:
        args.size, args.contents, args.styles, args.train_styles = 64, "chelsea", "immunohistochemistry,brick", 1
        args.gatys_steps, args.adain_steps, args.adain_seconds, args.batch_size, args.crop = 3, 2, 60, 2, 32
    if args.threads:
        torch.set_num_threads(args.threads)

    from genlab.models.style import GatysOptions, gatys

    contents, styles = args.contents.split(","), args.styles.split(",")
    judges = [Judge("efficientnet_lite1"), Judge("random_vgg")]
    adain_model, adain_info = None, None
    if not args.gatys_only:
        adain_model, adain_info = train_adain(args, styles[: args.train_styles])
        adain_info["stylise_256x256_seconds"] = stylisation_seconds(adain_model, 256, repeats=2 if args.smoke else 5)
        print(f"AdaIN: {adain_info.get('steps', 'loaded')} steps; 256x256 in {adain_info['stylise_256x256_seconds']} s")
    options = GatysOptions(steps=args.gatys_steps, **(
        {} if args.colour_weight is None else {"colour_weight": args.colour_weight}))
    methods = ("gatys", "histogram_matching") if args.gatys_only else ("gatys", "adain", "histogram_matching")

    pairs, gatys_seconds = [], []
    for content in contents:
        photo = square(picture(content), args.size)
        for name in styles:
            style = square(picture(name), args.size)
            start = time.perf_counter()
            outputs = {"gatys": gatys(photo, style, options)}
            gatys_seconds.append(time.perf_counter() - start)
            if adain_model is not None:
                outputs["adain"] = adain_model.stylize(photo, style)
            outputs["histogram_matching"] = histogram_matching(photo, style)
            curves = {method: curve(photo, out, style, judges) for method, out in outputs.items()}
            target = curves["histogram_matching"]["ssim"][-1]
            row = {"content": content, "style": name, "adain_saw_style": name in styles[: args.train_styles],
                   "histogram_matching_ssim": target, "curves": curves}
            for judge in judges:
                for method in methods:
                    row[f"{method}_{judge.name}"], row[f"{method}_ssim_{judge.name}"] = at_ssim(
                        curves[method], judge.name, target)
            pairs.append(row)
            print(f"{content} in {name}: SSIM {target:.3f}; " + "; ".join(
                f"{j.name} " + " ".join(f"{m} {row[f'{m}_{j.name}']:.4f}" for m in methods) for j in judges))

    def summary(method: str) -> dict:
        out = {}
        for judge in judges:
            ours = np.array([p[f"{method}_{judge.name}"] for p in pairs])
            anchor = np.array([p[f"histogram_matching_{judge.name}"] for p in pairs])
            out[f"style_loss_{judge.name}_mean"] = float(ours.mean())
            out[f"style_loss_ratio_to_anchor_{judge.name}_median"] = float(np.median(ours / anchor))
            out[f"pairs_below_anchor_{judge.name}"] = f"{int((ours < anchor).sum())}/{len(pairs)}"
        return out

    results = {
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "threads": torch.get_num_threads(), "torch_version": torch.__version__},
        "budget": {"size": args.size, "gatys_steps": args.gatys_steps, "gatys_options": dataclasses.asdict(options),
                   "adain_training": adain_info, "smoke": args.smoke},
        "genlab": {"gatys": {**summary("gatys"), "seconds_per_image_median": statistics.median(gatys_seconds)}} | (
            {} if adain_model is None else
            {"adain": {**summary("adain"), "stylise_256x256_seconds": adain_info["stylise_256x256_seconds"]}}),
        "anchor": {"name": "histogram matching (skimage.exposure.match_histograms, channel_axis=-1)",
                   **{f"style_loss_{j.name}_mean": float(np.mean([p[f"histogram_matching_{j.name}"] for p in pairs]))
                      for j in judges},
                   "content_ssim_mean": float(np.mean([p["histogram_matching_ssim"] for p in pairs]))},
        "judges": {"efficientnet_lite1": "EfficientNet-Lite1 (ImageNet), raw stage1-5 features, no softmax",
                   "random_vgg": "VGG-19's first three blocks with random weights (seed 0), conv1_1, conv2_1, conv3_1"},
        "pairs": pairs,
        "command": "python bench/style.py " + " ".join(sys.argv[1:]),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=1))
    print(json.dumps({k: results[k] for k in ("genlab", "anchor")}, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
