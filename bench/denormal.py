"""What flushing subnormal floats to zero changes, for every family: training steps/s and sampling speed.

x86 CPUs compute on subnormal floats (below 1.2e-38 in fp32) through a slow microcode path; the
activations and gradients of a network that is still learning drift into that range. genlab sets the
CPU's flush-to-zero mode where it computes (genlab.hardware). The mode is per thread and torch's
OpenMP workers copy it when they start, so each measurement here runs in a fresh process that sets
the mode (or leaves IEEE subnormals) before its first torch operation:

- train: steps/s of the family's default config and recipe on its benchmark data (Fashion-MNIST,
  tiny-shakespeare), after 3 warm-up steps, timed over --train-steps;
- sample: the speed of what the model makes, from a model trained for --prepare-steps (an
  undertrained model, where subnormals show up): 1,000 images (vae, gan), 36 DDIM-50 images
  (diffusion), 1,000 translations (pix2pix), 500 tokens (rnn, gpt).

Each is measured --repeats times per mode, the modes alternating, and the medians are reported.

    python bench/denormal.py                                   # -> bench/results/denormal.json
    python bench/denormal.py --families vae,gpt --train-steps 5 --prepare-steps 20 --out /tmp/d.json  # smoke
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHAKESPEARE = ROOT.parent / "shared" / "data" / "tinyshakespeare.txt"
FAMILIES = ("vae", "gan", "pix2pix", "diffusion", "rnn", "gpt")


def data_for(family: str) -> str:
    if family in ("rnn", "gpt"):
        return str(SHAKESPEARE) if SHAKESPEARE.exists() else "tiny-shakespeare"
    return "fashion-mnist"


# -- one measurement, in its own process -------------------------------------------------------


def worker(family: str, flush: bool, work: Path, train_steps: int) -> dict:
    import torch

    torch.set_flush_denormal(flush)  # before the first torch operation: the OpenMP workers copy the mode
    torch.manual_seed(0)
    import genlab
    from genlab.config import TrainConfig, from_dict
    from genlab.data import load_data
    from genlab.engine.recipes import recipe_for
    from genlab.models import get_family
    from genlab.models.base import ImageSampler, TextGenerator, Translator, TwoPlayerGame

    cls, recipe = get_family(family), recipe_for(family)
    data = load_data(data_for(family))
    model = cls(cls.config_for_data(cls.Config(), data))
    train = from_dict(TrainConfig, {**recipe.defaults, "progress": False})
    loader, _ = recipe.loaders(model, data, train, lambda: 0)
    optimizers = recipe.optimizers(model, train)
    batches = iter(loader)

    def update(loss, player):
        optimizers[player].zero_grad(set_to_none=True)
        loss.backward()
        optimizers[player].step()

    model.train()
    for i in range(train_steps + 3):
        if i == 3:
            start = time.perf_counter()
        if isinstance(model, TwoPlayerGame):
            model.train_step(next(batches), update, i)
        else:
            update(model.loss(next(batches), i)["loss"], 0)
    train_rate = train_steps / (time.perf_counter() - start)

    trained = genlab.load(work / family)
    with torch.no_grad():
        if isinstance(trained, ImageSampler):
            n = 36 if family == "diffusion" else 1000
            options = trained.sample_options(**({"sampler": "ddim", "steps": 50} if family == "diffusion" else {}))
            trained.sample(2, generator=torch.Generator().manual_seed(0), options=options)  # warm-up
            start = time.perf_counter()
            trained.sample(n, generator=torch.Generator().manual_seed(0), options=options)
            unit = "images"
        elif isinstance(trained, Translator):
            n = 1000
            conditions = trained.make_input(torch.from_numpy(data.test_x[:n]))
            trained.translate(conditions[:2])
            start = time.perf_counter()
            trained.translate(conditions)
            unit = "translations"
        else:
            assert isinstance(trained, TextGenerator)
            n = 500
            list(trained.generate("\n", max_new_tokens=8, seed=0))
            start = time.perf_counter()
            list(trained.generate("\n", max_new_tokens=n, temperature=0.8, seed=0))
            unit = "tokens"
    return {
        "train_steps_per_s": round(train_rate, 3),
        f"sample_{unit}_per_s": round(n / (time.perf_counter() - start), 2),
    }


def measure(family: str, flush: bool, work: Path, train_steps: int) -> dict:
    command = [sys.executable, __file__, "--worker", family, "--flush", str(int(flush)), "--work", str(work),
               "--train-steps", str(train_steps)]
    env = {**os.environ, "GENLAB_FLUSH_DENORMAL": "1" if flush else "0"}
    out = subprocess.run(command, check=True, capture_output=True, text=True, env=env).stdout
    return json.loads(out.strip().splitlines()[-1])


# -- the benchmark -------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--families", default=",".join(FAMILIES))
    parser.add_argument("--train-steps", type=int, default=20, help="timed training steps per measurement")
    parser.add_argument("--prepare-steps", type=int, default=200, help="training steps of the models that sample")
    parser.add_argument("--repeats", type=int, default=3, help="measurements per mode; the median is reported")
    parser.add_argument("--work", default="/tmp/genlab-denormal")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "denormal.json"))
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--flush", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    work = Path(args.work)
    if args.worker:
        print(json.dumps(worker(args.worker, bool(args.flush), work, args.train_steps)))
        return

    import genlab

    families = [f for f in args.families.split(",") if f]
    for family in families:  # the models that sample: trained briefly, saved once, read by both modes
        if not (work / family / "model").exists():
            genlab.train(family, data_for(family), work / family, max_steps=args.prepare_steps, progress=False,
                         val_every=10**6, ckpt_every=10**6, sample_every=10**6,
                         **({"model": {"monitor_samples": 0}} if family == "gan" else {}))
    results = {}
    for family in families:
        runs = {False: [], True: []}
        for repeat in range(args.repeats):  # alternating, so that a slow moment of the machine hits both modes
            for flush in ((False, True) if repeat % 2 == 0 else (True, False)):
                runs[flush].append(measure(family, flush, work, args.train_steps))
        ieee, flushed = (
            {k: statistics.median(r[k] for r in runs[mode]) for k in runs[mode][0]} for mode in (False, True)
        )
        results[family] = {
            "ieee": ieee,
            "flushed": flushed,
            "speedup": {k: round(flushed[k] / ieee[k], 2) for k in ieee},
            "runs": {"ieee": runs[False], "flushed": runs[True]},
        }
        print(f"{family}: ieee {ieee}, flushed {flushed}, speedup {results[family]['speedup']}", flush=True)
    import torch

    report = {"machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                          "torch": torch.__version__, "threads": torch.get_num_threads()},
              "budget": {"train_steps": args.train_steps, "prepare_steps": args.prepare_steps, "repeats": args.repeats},
              "genlab": results,
              "anchor": {"name": "the same code with IEEE subnormals (flush-to-zero off), in the same run"},
              "command": "python " + " ".join([str(Path(__file__).relative_to(ROOT)), *sys.argv[1:]])}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
