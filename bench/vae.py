"""Benchmark: genlab's VAE against pythae's plain VAE on dynamically binarised Fashion-MNIST.

Both models get the same wall-clock training budget on the same machine, one after the
other in one process, the same 57,000 training images (genlab's own train/validation
split, so neither sees the images genlab holds out), and the same evaluator: the
importance-weighted bound (IWAE, Burda et al. 2016) with k samples on the test split,
computed by `genlab.metrics.image_log_likelihood` for both.

The test images are binarised once, here, with a fixed seed and handed to both models
as uint8 {0, 255}. Bernoulli(0) and Bernoulli(1) are deterministic, so each model's own
binarisation step leaves them unchanged: both are scored on literally the same bits,
even though their posterior samples consume different amounts of randomness.

    GENLAB_HOME=/tmp/genlab-home python bench/vae.py --budget 10m
    python bench/vae.py --budget 20s --k 5 --test-examples 500 --out /tmp/vae_small.json  # smoke test

See bench/README.md for what the numbers mean and how pythae was installed.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shlex
import sys
import tempfile
import time
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

import genlab
from genlab.config import parse_duration
from genlab.data import load_data
from genlab.data.loader import split_validation
from genlab.engine.runs import read_run_config
from genlab.files import load_torch_file as load_checkpoint
from genlab.metrics import image_log_likelihood

ANCHOR_NAME = "pythae VAE (default MLP)"
LOG_2PI = math.log(2 * math.pi)


# -- machine ---------------------------------------------------------------------------------


def usable_cores() -> int:
    """Cores this process may run on (the affinity mask, which respects taskset/cgroups)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# -- data ------------------------------------------------------------------------------------


def binarise_once(images: torch.Tensor, seed: int) -> torch.Tensor:
    """uint8 images -> uint8 {0, 255}, each pixel ~ Bernoulli(pixel / 255), from a generator seeded by `seed`."""
    generator = torch.Generator().manual_seed(seed)
    return (torch.bernoulli(images.float() / 255, generator=generator) * 255).to(torch.uint8)


# -- the anchor: pythae's VAE ----------------------------------------------------------------


def build_anchor(latent_dim: int | None) -> nn.Module:
    """pythae's VAE with its default MLP encoder/decoder for (1, 28, 28) and the Bernoulli (BCE) loss.

    pythae's own default reconstruction loss is MSE (a unit-variance Gaussian on [0, 1]
    pixels), which is not a likelihood of binary images; BCE is the Bernoulli one.
    """
    from pythae.models import VAE, VAEConfig

    options: dict[str, Any] = {"input_dim": (1, 28, 28), "reconstruction_loss": "bce"}
    if latent_dim is not None:
        options["latent_dim"] = latent_dim
    return VAE(VAEConfig(**options))


class PythaeLikelihood(nn.Module):
    """Gives a pythae VAE the `log_likelihood(images, labels, k, generator)` contract of genlab's VAE,
    so that `image_log_likelihood` scores it exactly as it scores ours.

    pythae's default decoder ends in a sigmoid; log p(x|z) is computed from the logits
    before it (the linear layer's output), which is exact where log(sigmoid) would
    round to -inf or be clamped.
    """

    def __init__(self, vae: nn.Module):
        super().__init__()
        self.vae = vae
        last = vae.decoder.layers[-1]
        if not (isinstance(last, nn.Sequential) and isinstance(last[-1], nn.Sigmoid)):
            raise TypeError(f"expected pythae's default MLP decoder ending in a Sigmoid, got {last}")
        self.latent_dim = int(vae.model_config.latent_dim)
        self._check_logits()

    def decoder_logits(self, z: torch.Tensor) -> torch.Tensor:
        """(N, latent_dim) -> (N, 784) Bernoulli logits: pythae's decoder without its final sigmoid."""
        layers = self.vae.decoder.layers
        h = z
        for layer in layers[:-1]:
            h = layer(h)
        return layers[-1][:-1](h)

    @torch.no_grad()
    def _check_logits(self) -> None:
        # Guards against a pythae version whose decoder is wired differently from what we slice.
        z = torch.randn(4, self.latent_dim, generator=torch.Generator().manual_seed(0))
        reference = self.vae.decoder(z)["reconstruction"].reshape(4, -1)
        if not torch.allclose(torch.sigmoid(self.decoder_logits(z)), reference, atol=1e-6):
            raise RuntimeError("pythae's decoder output is not sigmoid(logits) of its last linear layer")

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.vae.encoder(x)
        return out["embedding"], out["log_covariance"]

    @torch.no_grad()
    def log_likelihood(self, images: torch.Tensor, labels: torch.Tensor | None = None, k: int = 200,
                       generator: torch.Generator | None = None, chunk: int = 8192,
                       data_generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Per-example IWAE bound and ELBO in nats; the same estimator as genlab's VAE.log_likelihood."""
        x = torch.bernoulli(images.float() / 255, generator=data_generator or generator)  # identity on {0, 255} input
        target = x.flatten(1)
        mu, logvar = self.encode(x)
        std = (0.5 * logvar).exp()
        b, d = mu.shape
        per_chunk = max(1, chunk // b)  # bounds the decoder batch, like genlab's
        log_w: list[torch.Tensor] = []
        log_px_first: torch.Tensor | None = None
        for start in range(0, k, per_chunk):
            kk = min(per_chunk, k - start)
            eps = torch.randn(kk, b, d, generator=generator, device=mu.device)
            z = mu + eps * std  # (kk, B, D)
            logits = self.decoder_logits(z.reshape(kk * b, d)).view(kk, b, -1)
            log_px = -F.binary_cross_entropy_with_logits(logits, target.expand(kk, -1, -1), reduction="none").sum(-1)
            log_pz = -0.5 * (LOG_2PI + z.pow(2)).sum(-1)
            log_qz = -0.5 * (LOG_2PI + logvar + eps.pow(2)).sum(-1)  # (z - mu)^2 / sigma^2 = eps^2
            log_w.append(log_px + log_pz - log_qz)
            if log_px_first is None:
                log_px_first = log_px[0]
        iwae = torch.logsumexp(torch.cat(log_w), 0) - math.log(k)
        kl = 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(-1)
        return {"log_likelihood": iwae, "elbo": log_px_first - kl}


def batch_indices(n: int, batch_size: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
    """Endless shuffled epochs of full batches (a short last batch is dropped, as genlab's loader does)."""
    while True:
        order = torch.randperm(n, generator=generator)
        for i in range(0, n - batch_size + 1, batch_size):
            yield order[i : i + batch_size]


def train_anchor(vae: nn.Module, train_x: torch.Tensor, budget_s: float, batch_size: int, lr: float,
                 seed: int) -> dict[str, Any]:
    """Adam on pythae's own loss (summed BCE + KL, averaged over the batch) until the budget runs out.

    Our loop instead of pythae's trainer: the trainer has no wall-clock stop, and it would
    binarise once rather than per batch. The clock starts at the first batch, as Lightning's
    max_time does for ours.
    """
    torch.manual_seed(seed)
    order_generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(vae.parameters(), lr=lr)
    vae.train()
    steps, stopped, loss = 0, "budget", torch.tensor(float("nan"))
    start = time.perf_counter()
    for index in batch_indices(len(train_x), batch_size, order_generator):
        x = torch.bernoulli(train_x[index].float() / 255)  # dynamic binarisation, fresh every batch
        loss = vae({"data": x}).loss
        if not torch.isfinite(loss):
            stopped = f"non-finite loss at step {steps}"
            break
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        steps += 1
        if time.perf_counter() - start >= budget_s:
            break
    seconds = time.perf_counter() - start
    vae.eval()
    return {"steps": steps, "train_seconds": seconds, "stopped": stopped, "final_train_loss": float(loss.detach())}


# -- ours: genlab's VAE ----------------------------------------------------------------------


def train_genlab(run: Path, budget: str, max_steps: int, threads: int, model_overrides: dict[str, Any],
                 train_overrides: dict[str, Any]) -> dict[str, Any]:
    """genlab.train with the family's default config; returns steps, seconds and the loaded model."""
    start = time.perf_counter()
    options = {"max_time": budget, "max_steps": max_steps, "progress": False, "threads": threads, **train_overrides}
    genlab.train("vae", "fashion-mnist", str(run), model=model_overrides or None, **options)
    seconds = time.perf_counter() - start
    checkpoint = load_checkpoint(run / "checkpoints" / "last.ckpt")
    record = read_run_config(run)
    return {"model": genlab.load(str(run / "model")), "steps": int(checkpoint["global_step"]),
            "train_seconds": seconds, "batch_size": int(record["train"]["batch_size"]), "config": record}


# -- evaluation and reporting ----------------------------------------------------------------


def evaluate(model: nn.Module, images: torch.Tensor, labels: torch.Tensor | None, k: int) -> dict[str, Any]:
    """The one evaluator both models go through."""
    return image_log_likelihood(model, images, labels, k=k, seed=0, progress=sys.stderr.isatty())


def section(
    result: dict[str, Any], steps: int, batch_size: int, train_seconds: float, parameters: int
) -> dict[str, Any]:
    return {
        "nll_nats": round(result["nll_nats"], 3),
        "elbo_nats": round(result["elbo_nats"], 3),
        "bits_per_dim": round(result["bits_per_dim"], 5),
        "train_images_per_s": round(steps * batch_size / train_seconds, 1),
        "parameters": parameters,
        "steps": steps,
        "eval_seconds": round(result["eval_seconds"], 1),
        "train_seconds": round(train_seconds, 1),
        "batch_size": batch_size,
    }


def print_table(report: dict[str, Any]) -> None:
    rows = [("", "genlab", "anchor")]
    keys = ["nll_nats", "elbo_nats", "bits_per_dim", "train_images_per_s", "parameters", "steps",
            "train_seconds", "eval_seconds"]
    for key in keys:
        cells = [str(report[name][key]) if report.get(name) else "-" for name in ("genlab", "anchor")]
        rows.append((key, *cells))
    budget = report["budget"]
    print(f"\nVAE on binarised Fashion-MNIST: budget {budget['train_wall_clock_s']:g} s each, "
          f"IWAE k={budget['iwae_k']} on {budget['test_examples']} test images "
          f"(anchor: {ANCHOR_NAME})")
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for row in rows:
        print("  ".join(cell.ljust(widths[0]) if i == 0 else cell.rjust(widths[i]) for i, cell in enumerate(row)))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--budget", default="10m", help="training wall clock per model, like 10m, 60s (default 10m)")
    p.add_argument("--k", type=int, default=200, help="IWAE importance samples per test image (default 200)")
    p.add_argument("--test-examples", type=int, default=10000, help="first N test images to score (default all 10000)")
    p.add_argument("--out", default="bench/results/vae.json", help="where the JSON report goes")
    p.add_argument("--skip-anchor", action="store_true", help="only train and score genlab's VAE")
    p.add_argument("--skip-genlab", action="store_true", help="only train and score the pythae anchor")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: all usable cores)")
    p.add_argument("--run-dir", default=None, help="genlab run folder (default: a fresh folder under /tmp)")
    p.add_argument("--max-steps", type=int, default=10_000_000,
                   help="genlab's max_steps; large so that the wall clock is what stops training")
    p.add_argument("--genlab-model", default="{}", metavar="JSON",
                   help='overrides of genlab\'s VAE config for experiments, e.g. \'{"latent_dim": 64}\'')
    p.add_argument("--genlab-train", default="{}", metavar="JSON",
                   help="overrides of genlab's TrainConfig for experiments, e.g. '{\"lr\": 2e-3}'")
    p.add_argument("--anchor-latent-dim", type=int, default=None, help="pythae latent_dim (default: pythae's, 10)")
    p.add_argument("--anchor-batch-size", type=int, default=128)
    p.add_argument("--anchor-lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0, help="seed of the test binarisation and of the anchor's training")
    args = p.parse_args(argv)
    if args.skip_anchor and args.skip_genlab:
        p.error("--skip-anchor and --skip-genlab together leave nothing to run")
    for name in ("genlab_model", "genlab_train"):
        try:
            setattr(args, name, json.loads(getattr(args, name)))
        except json.JSONDecodeError as error:
            p.error(f"--{name.replace('_', '-')} is not JSON: {error}")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    budget_s = parse_duration(args.budget).total_seconds()  # genlab's own parser: both budgets read alike
    threads = args.threads or usable_cores()
    torch.set_num_threads(threads)

    data = load_data("fashion-mnist")
    (train_x, _), _ = split_validation(data)  # the 57,000 images genlab trains on
    n_test = min(args.test_examples, len(data.test_x))
    test_x = binarise_once(torch.from_numpy(data.test_x[:n_test].copy()), args.seed)
    test_y = torch.from_numpy(data.test_y[:n_test].copy())

    report: dict[str, Any] = {
        "machine": {"cores": usable_cores(), "cpu_model": cpu_model(), "torch_version": torch.__version__,
                    "threads": threads},
        "budget": {"train_wall_clock_s": budget_s, "iwae_k": args.k, "test_examples": n_test},
        "genlab": None,
        "anchor": None,
        "command": shlex.join(["python", "bench/vae.py", *(argv if argv is not None else sys.argv[1:])]),
    }

    if not args.skip_genlab:
        run = Path(args.run_dir) if args.run_dir else Path(tempfile.mkdtemp(prefix="genlab-bench-vae-", dir="/tmp"))
        print(f"[genlab] training for {args.budget} into {run}", flush=True)
        ours = train_genlab(run, args.budget, args.max_steps, threads, args.genlab_model, args.genlab_train)
        model = ours["model"]
        if getattr(model.config, "likelihood", "bernoulli") != "bernoulli":
            # Any other likelihood is over 8-bit pixels, not over the binarised test set: not comparable.
            raise SystemExit(
                f"genlab's VAE uses likelihood={model.config.likelihood!r}; this benchmark needs 'bernoulli'"
            )
        conditional = getattr(model.config, "condition", "none") == "class"
        print(f"[genlab] {ours['steps']} steps in {ours['train_seconds']:.0f} s; scoring with k={args.k}", flush=True)
        scored = evaluate(model, test_x, test_y if conditional else None, args.k)
        report["genlab"] = {**section(scored, ours["steps"], ours["batch_size"], ours["train_seconds"],
                                      model.num_parameters()),
                            "run_folder": str(run)}
        if conditional:
            report["genlab"]["note"] = "class-conditional: nll is -log p(x|y), not comparable to the anchor"

    if not args.skip_anchor:
        vae = build_anchor(args.anchor_latent_dim)
        print(f"[anchor] training {ANCHOR_NAME} for {args.budget}", flush=True)
        trained = train_anchor(vae, train_x, budget_s, args.anchor_batch_size, args.anchor_lr, args.seed)
        print(f"[anchor] {trained['steps']} steps in {trained['train_seconds']:.0f} s ({trained['stopped']}); "
              f"scoring with k={args.k}", flush=True)
        adapter = PythaeLikelihood(vae)
        scored = evaluate(adapter, test_x, None, args.k)
        report["anchor"] = {"name": ANCHOR_NAME,
                            **section(scored, trained["steps"], args.anchor_batch_size, trained["train_seconds"],
                                      sum(p.numel() for p in vae.parameters())),
                            "latent_dim": adapter.latent_dim, "pythae_version": version("pythae"),
                            "optimizer": f"Adam lr={args.anchor_lr:g}"}
        if trained["stopped"] != "budget":
            report["anchor"]["note"] = trained["stopped"]

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print_table(report)
    print(f"\nwrote {out}")
    return report


if __name__ == "__main__":
    main()
