"""Benchmark: genlab's GAN against the DCGAN of pytorch/examples, and pix2pix against bicubic upscaling.

Every model trains the same number of epochs at the same batch size on the same images
(genlab's own training split of Fashion-MNIST, 57,000 images), on this machine, one after the
other in one process, and goes through one evaluator: `genlab.metrics.images.sample_metrics`
(FD-genlab, KID, precision/recall/density/coverage, class histogram) on `--eval-samples`
samples against the first `--test-examples` test images, in the feature space of genlab's
reference classifier, trained once before any clock starts. Wall-clock is reported for both.

Parts (`--parts`, default all; a part re-run replaces its section of an existing --out file):

  anchor    DCGAN (Radford et al. 2016) as in pytorch/examples/dcgan, adapted to 28x28 (below).
  genlab    genlab's GAN with its defaults (hinge, spectral norm, TTUR, EMA generator), seed 0.
  seeds     the same with seeds 1 and 2: stability = (max - min) / mean of FD-genlab over 3 seeds.
  cgan      --model.condition class: the reference classifier's accuracy on samples of each requested class.
  superres  pix2pix --model.task superres --model.scale 4: PSNR/SSIM on the test split against bicubic upscaling.
  sketch    pix2pix --model.task sketch: FD-genlab of translated test sketches; example grids go to --docs-dir.

    GENLAB_HOME=/tmp/genlab-home python bench/gan.py                      # the real run -> bench/results/gan.json
    python bench/gan.py --parts anchor,genlab                              # a part at a time
    python bench/gan.py --data digits --steps 30 --eval-samples 300 --out /tmp/gan_smoke.json --docs-dir /tmp/gan_docs

The anchor, written here from the published code: generator ConvTranspose(nz=100 -> 4 ngf, k=H/4)
-> BN-ReLU -> ConvTranspose(4 ngf -> 2 ngf, 4, 2, 1) -> BN-ReLU -> ConvTranspose(2 ngf -> 1, 4, 2, 1)
-> tanh; discriminator Conv(1 -> ndf, 4, 2, 1) -> LeakyReLU(0.2) -> Conv(ndf -> 2 ndf, 4, 2, 1) -> BN-LReLU
-> Conv(2 ndf -> 4 ndf, 3, 2, 1) -> BN-LReLU -> Conv(4 ndf -> 1, k=H/8) -> sigmoid; ngf = ndf = 64, no
biases, weights N(0, 0.02) and batch-norm scales N(1, 0.02) (its `weights_init`), binary cross-entropy,
Adam lr 2e-4, betas (0.5, 0.999), and its training loop (D on a real batch, then on the fakes, one
step; G on the same fakes against the real label). The published 64x64 networks have two more
stride-2 stages (4x4 and 8x8 ngf*8 maps); a 28x28 image has room for two, so the adaptation keeps
the published widths of the last stages and starts from a 7x7 map. Its samples are scored with the
generator in training mode (batch statistics, as the example draws them) and in evaluation mode
(running statistics); the better FD-genlab is the anchor's figure.
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

import genlab
from genlab.data import load_data
from genlab.data.loader import split_validation
from genlab.evaluation.evaluate import translation_metrics
from genlab.evaluation.report import save_grid, translation_grid
from genlab.files import load_torch_file as load_checkpoint
from genlab.metrics.images import sample_metrics
from genlab.metrics.reference import reference_classifier

sys.path.insert(0, str(Path(__file__).parent))
from vae import cpu_model, usable_cores  # noqa: E402  (the machine helpers of the VAE benchmark)

ANCHOR_NAME = "DCGAN (pytorch/examples, adapted to 28x28)"
PARTS = ("anchor", "genlab", "seeds", "cgan", "superres", "sketch")
SAMPLE_KEYS = ("fd_genlab", "kid_genlab", "precision", "recall", "density", "coverage", "classifier_score",
               "class_histogram_tv", "class_accuracy")


# -- the anchor: DCGAN ------------------------------------------------------------------------


class DCGANGenerator(nn.Module):
    def __init__(self, size: int, channels: int = 1, nz: int = 100, ngf: int = 64):
        super().__init__()
        self.nz = nz
        self.net = nn.Sequential(
            nn.ConvTranspose2d(nz, ngf * 4, size // 4, 1, 0, bias=False), nn.BatchNorm2d(ngf * 4), nn.ReLU(True),
            nn.ConvTranspose2d(ngf * 4, ngf * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf * 2), nn.ReLU(True),
            nn.ConvTranspose2d(ngf * 2, channels, 4, 2, 1, bias=False), nn.Tanh())

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z[:, :, None, None])


class DCGANDiscriminator(nn.Module):
    def __init__(self, size: int, channels: int = 1, ndf: int = 64):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(channels, ndf, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf, ndf * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * 2), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf * 2, ndf * 4, 3, 2, 1, bias=False), nn.BatchNorm2d(ndf * 4), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf * 4, 1, math.ceil(size / 8), 1, 0, bias=False), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).view(-1)


def weights_init(m: nn.Module) -> None:
    """pytorch/examples' init: convolutions N(0, 0.02), batch-norm scales N(1, 0.02) and shifts 0."""
    if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(m.weight, 0.0, 0.02)
    elif isinstance(m, nn.BatchNorm2d):
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)


def train_anchor(train_x: torch.Tensor, steps: int, batch_size: int, seed: int) -> dict[str, Any]:
    """pytorch/examples' DCGAN loop for `steps` batches of shuffled epochs (the short last batch dropped)."""
    torch.manual_seed(seed)
    order_generator = torch.Generator().manual_seed(seed)
    size, channels = train_x.shape[-1], train_x.shape[1]
    net_g, net_d = DCGANGenerator(size, channels), DCGANDiscriminator(size, channels)
    net_g.apply(weights_init)
    net_d.apply(weights_init)
    opt_d = torch.optim.Adam(net_d.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_g = torch.optim.Adam(net_g.parameters(), lr=2e-4, betas=(0.5, 0.999))
    criterion = nn.BCELoss()
    done, start = 0, time.perf_counter()
    while done < steps:
        order = torch.randperm(len(train_x), generator=order_generator)
        for i in range(0, len(order) - batch_size + 1, batch_size):
            real = train_x[order[i : i + batch_size]].float() / 127.5 - 1
            b = len(real)
            net_d.zero_grad()
            err_real = criterion(net_d(real), torch.ones(b))
            err_real.backward()
            fake = net_g(torch.randn(b, net_g.nz))
            err_fake = criterion(net_d(fake.detach()), torch.zeros(b))
            err_fake.backward()
            opt_d.step()
            net_g.zero_grad()
            err_g = criterion(net_d(fake), torch.ones(b))
            err_g.backward()
            opt_g.step()
            done += 1
            if done == steps:
                break
    seconds = time.perf_counter() - start
    return {"generator": net_g, "steps": done, "train_seconds": seconds,
            "parameters": sum(p.numel() for m in (net_g, net_d) for p in m.parameters()),
            "final_d_loss": (err_real + err_fake).item(), "final_g_loss": err_g.item()}


@torch.no_grad()
def anchor_samples(net_g: DCGANGenerator, n: int, seed: int, train_mode: bool, chunk: int = 128) -> torch.Tensor:
    net_g.train(train_mode)
    z = torch.randn(n, net_g.nz, generator=torch.Generator().manual_seed(seed))
    return torch.cat([(net_g(z[i : i + chunk]) + 1) / 2 for i in range(0, n, chunk)])


# -- ours -------------------------------------------------------------------------------------


def train_genlab(family: str, data: str, run: Path, steps: int, batch_size: int, seed: int, threads: int,
                 model: dict[str, Any] | None = None) -> dict[str, Any]:
    """genlab.train with the family's defaults; the clock includes its validation, monitoring and export."""
    start = time.perf_counter()
    genlab.train(family, data, str(run), model=model, max_steps=steps, batch_size=batch_size, seed=seed,
                 progress=sys.stderr.isatty(), threads=threads)
    seconds = time.perf_counter() - start
    loaded = genlab.load(run / "model")
    # the trained networks, as counted for the anchor: generator and discriminator (not the EMA copy)
    trained = sum(p.numel() for m in (loaded.generator, loaded.discriminator) for p in m.parameters())
    return {"model": loaded, "steps": int(load_checkpoint(run / "checkpoints" / "last.ckpt")["global_step"]),
            "train_seconds": seconds, "parameters": trained}


# -- evaluation -------------------------------------------------------------------------------


def score(
    reference, test_x: torch.Tensor, fake: torch.Tensor, requested: torch.Tensor | None = None
) -> dict[str, float]:
    metrics = sample_metrics(reference, test_x, fake, requested=requested)
    return {k: round(metrics[k], 5) for k in SAMPLE_KEYS if k in metrics}


def timing(trained: dict[str, Any], batch_size: int, train_examples: int, command: str) -> dict[str, Any]:
    """A section's training figures, with the command that measured it (parts may come from separate runs)."""
    return {"command": command, "steps": trained["steps"], "batch_size": batch_size,
            "epochs": round(trained["steps"] * batch_size / train_examples, 2),
            "train_seconds": round(trained["train_seconds"], 1),
            "train_images_per_s": round(trained["steps"] * batch_size / trained["train_seconds"], 1),
            "parameters": trained["parameters"]}


def split_parts(parser: argparse.ArgumentParser, text: str, known: list[str]) -> list[str]:
    """`--parts a,b` -> ["a", "b"]; an unknown part is a usage error naming the known ones."""
    parts = [s.strip() for s in text.split(",") if s.strip()]
    unknown = sorted(set(parts) - set(known))
    if unknown:
        parser.error(f"unknown parts {unknown}; choose from {', '.join(known)}")
    return parts


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)}")
    p.add_argument(
        "--data",
        default="fashion-mnist",
        help="image dataset (default fashion-mnist; digits for a smoke test)",
    )
    p.add_argument("--epochs", type=float, default=5, help="training epochs for every model (default 5)")
    p.add_argument("--steps", type=int, default=None, help="training steps instead of --epochs (smoke tests)")
    p.add_argument(
        "--translation-epochs",
        type=float,
        default=None,
        help="epochs of the superres and sketch parts (default --epochs): their bar is against bicubic, not the anchor",
    )
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--eval-samples", type=int, default=10000, help="generated images per evaluation (default 10000)")
    p.add_argument("--test-examples", type=int, default=10000, help="first N test images as the real set (default all)")
    p.add_argument("--seeds", default="0,1,2", help="seeds of the stability part; the first is the genlab part's")
    p.add_argument("--runs-dir", default=None, help="where genlab's run folders go (default a fresh /tmp folder)")
    p.add_argument("--docs-dir", default="docs/gan", help="where the example grids go")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: all usable cores)")
    p.add_argument("--out", default="bench/results/gan.json")
    args = p.parse_args(argv)
    args.parts = split_parts(p, args.parts, PARTS)
    args.seeds = [int(s) for s in args.seeds.split(",")]
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    threads = args.threads or usable_cores()
    torch.set_num_threads(threads)
    data = load_data(args.data)
    (train_x, _), _ = split_validation(data)  # the images genlab trains on; the anchor gets the same
    steps = args.steps or int(args.epochs * (len(train_x) // args.batch_size))
    translation_steps = steps if args.steps or args.translation_epochs is None else \
        int(args.translation_epochs * (len(train_x) // args.batch_size))
    n_test = min(args.test_examples, len(data.test_x))
    test_x = torch.from_numpy(data.test_x[:n_test].copy())
    runs = Path(args.runs_dir) if args.runs_dir else Path(tempfile.mkdtemp(prefix="genlab-bench-gan-", dir="/tmp"))
    docs = Path(args.docs_dir)

    print(f"reference classifier for {args.data} (trained once, before any clock starts)", flush=True)
    reference = reference_classifier(data, progress=True)  # minutes the first time on a CPU, then cached
    out = Path(args.out)
    report: dict[str, Any] = json.loads(out.read_text()) if out.exists() else {}
    command = shlex.join(["python", "bench/gan.py", *(argv if argv is not None else sys.argv[1:])])
    report |= {
        "machine": {
            "cores": usable_cores(),
            "cpu_model": cpu_model(),
            "torch_version": torch.__version__,
            "threads": threads,
        },
        "budget": {
            "data": args.data,
            "train_examples": len(train_x),
            "epochs": round(steps * args.batch_size / len(train_x), 2),
            "steps": steps,
            "batch_size": args.batch_size,
            "eval_samples": args.eval_samples,
            "translation_steps": translation_steps,
            "test_examples": n_test,
            "reference_accuracy": reference.accuracy,
        },
        "command": command,  # the latest invocation; each section names its own
    }

    def section_timing(trained: dict[str, Any]) -> dict[str, Any]:
        return timing(trained, args.batch_size, len(train_x), command)

    def save() -> None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2) + "\n")

    def ours(
        name: str, family: str, seed: int, model: dict[str, Any] | None = None, n_steps: int = steps
    ) -> dict[str, Any]:
        print(f"[{name}] training genlab {family} for {n_steps} steps into {runs / name}", flush=True)
        return train_genlab(family, args.data, runs / name, n_steps, args.batch_size, seed, threads, model)

    if "anchor" in args.parts:
        print(f"[anchor] training {ANCHOR_NAME} for {steps} steps", flush=True)
        trained = train_anchor(train_x, steps, args.batch_size, args.seeds[0])
        modes = {
            mode: score(
                reference, test_x, anchor_samples(trained["generator"], args.eval_samples, 0, mode == "train")
            )
            for mode in ("train", "eval")
        }
        best = min(modes, key=lambda m: modes[m]["fd_genlab"])
        report["anchor"] = {
            "name": ANCHOR_NAME,
            **modes[best],
            **section_timing(trained),
            "batch_norm_mode_scored": best,
            "fd_genlab_other_mode": modes["eval" if best == "train" else "train"]["fd_genlab"],
            "final_d_loss": trained["final_d_loss"],
            "final_g_loss": trained["final_g_loss"],
        }
        save_grid(
            anchor_samples(trained["generator"], 64, 1, best == "train"),
            docs / "samples_dcgan_anchor.png",
            8,
            scale=2,
        )
        save()

    fds: dict[int, float] = {}
    if "genlab" in args.parts or "seeds" in args.parts:
        seeds = args.seeds if "seeds" in args.parts else args.seeds[:1]
        if "genlab" not in args.parts and report.get("genlab"):
            seeds = seeds[1:]  # the first seed's run is the genlab part, already measured
            fds[args.seeds[0]] = report["genlab"]["fd_genlab"]
        for seed in seeds:
            trained = ours(f"gan-seed{seed}", "gan", seed)
            generator = torch.Generator().manual_seed(0)
            section = {**score(reference, test_x, trained["model"].sample(args.eval_samples, generator=generator)),
                       **section_timing(trained), "seed": seed, "run_folder": str(runs / f"gan-seed{seed}")}
            fds[seed] = section["fd_genlab"]
            if seed == args.seeds[0]:
                report["genlab"] = section
                save_grid(trained["model"].sample(64, generator=torch.Generator().manual_seed(1)),
                          docs / "samples_genlab_gan.png", 8, scale=2)
            else:  # the first seed's section is the genlab part
                report.setdefault("seed_runs", {})[str(seed)] = section
            print(f"[seed {seed}] fd_genlab {section['fd_genlab']:.3f} recall {section['recall']:.3f} in "
                  f"{section['train_seconds']:.0f} s", flush=True)
            save()
    if "seeds" in args.parts and len(fds) > 1:
        values = list(fds.values())
        report["stability"] = {"seeds": list(fds), "fd_genlab": values,
                               "spread": round((max(values) - min(values)) / (sum(values) / len(values)), 4)}
        save()

    if "cgan" in args.parts:
        trained = ours("cgan", "gan", args.seeds[0], {"condition": "class"})
        labels = torch.arange(args.eval_samples) % len(data.classes)
        fake = trained["model"].sample(args.eval_samples, labels=labels, generator=torch.Generator().manual_seed(0))
        report["conditional"] = {**score(reference, test_x, fake, labels), **section_timing(trained),
                                 "run_folder": str(runs / "cgan")}
        rows = torch.arange(len(data.classes)).repeat_interleave(10)
        save_grid(trained["model"].sample(len(rows), labels=rows, generator=torch.Generator().manual_seed(1)),
                  docs / "samples_genlab_cgan_rows.png", 10, scale=2)
        save()

    for task in ("superres", "sketch"):
        if task not in args.parts:
            continue
        options = {"task": task, "scale": 4} if task == "superres" else {"task": task}
        trained = ours(task, "pix2pix", args.seeds[0], options, translation_steps)
        model = trained["model"]
        start = time.perf_counter()
        metrics = translation_metrics(model, data, n_test, seed=0, progress=False)
        report[task] = {**{k: round(v, 5) for k, v in metrics.items()}, **section_timing(trained),
                        "eval_seconds": round(time.perf_counter() - start, 1), "run_folder": str(runs / task)}
        grid, nrow = translation_grid(model, data.test_x[:16])
        save_grid(grid, docs / f"pix2pix_{task}_examples.png", nrow, scale=3)
        save()

    report["bar"] = bar(report)
    save()
    print_table(report)
    print(f"\nwrote {out}; example grids in {docs}")
    return report


def bar(report: dict[str, Any]) -> dict[str, bool | None]:
    """The issue's bar, checked on whatever parts have been measured (None: not measured yet)."""
    g, a = report.get("genlab"), report.get("anchor")
    return {
        "fd_genlab_below_anchor": g["fd_genlab"] < a["fd_genlab"] if g and a else None,
        "recall_at_least_0.5": g["recall"] >= 0.5 if g else None,
        "seed_spread_at_most_15%": report["stability"]["spread"] <= 0.15 if report.get("stability") else None,
        "conditional_accuracy_at_least_90%": report["conditional"]["class_accuracy"] >= 0.9
        if report.get("conditional")
        else None,
        "superres_psnr_at_least_bicubic_plus_2db": report["superres"]["psnr_gain_db"] >= 2
        if report.get("superres")
        else None,
    }


def print_table(report: dict[str, Any]) -> None:
    budget = report["budget"]
    print(
        f"\nGANs on {budget['data']}: {budget['steps']} steps at batch {budget['batch_size']} "
        f"({budget['epochs']} epochs) each; {budget['eval_samples']} samples vs {budget['test_examples']} test images"
    )
    keys = ["fd_genlab", "kid_genlab", "precision", "recall", "coverage", "class_accuracy", "psnr_db",
            "bicubic_psnr_db", "psnr_gain_db", "ssim", "train_seconds", "train_images_per_s", "parameters"]
    names = [n for n in ("anchor", "genlab", "conditional", "superres", "sketch") if report.get(n)]
    print("".ljust(20) + "".join(n.rjust(13) for n in names))
    for key in keys:
        if any(key in report[n] for n in names):
            print(key.ljust(20) + "".join(str(report[n].get(key, "-")).rjust(13) for n in names))
    if report.get("stability"):
        print(f"stability: FD-genlab {report['stability']['fd_genlab']} -> spread {report['stability']['spread']:.1%}")
    print("bar: " + ", ".join(f"{k} {'yes' if v else 'NO' if v is False else '-'}" for k, v in report["bar"].items()))


if __name__ == "__main__":
    main()
