"""One `genlab train FAMILY --data DATA --max-steps STEPS` in this fresh process, for the scale benchmarks
(bench/stream_text.py, bench/stream_images.py): prints as JSON the seconds from the launch time it is given to the
end of the first optimiser step, the seconds to the end of the run, the process's peak resident memory (VmHWM), and
the peak over the run of its memory and its loader workers' together (sampled every 50 ms: the sum of their RSS, and
of their PSS, which splits pages they share; memory-mapped data files count in both as they are read).

    python bench/first_step.py gpt /tmp/tokens --steps 5 --launched $(date +%s.%N) --work /tmp/runs
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time
from pathlib import Path

from common import ROOT  # noqa: F401  (puts the repository first on the path)


def tree(pid: int) -> list[int]:
    """The process and its descendants."""
    out = [pid]
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out += [q for child in (task / "children").read_text().split() for q in tree(int(child))]
        except OSError:
            pass
    return out


class TreeMemory(threading.Thread):
    """The peak sums of RSS and of PSS over this process and its descendants, sampled every 50 ms."""

    def __init__(self):
        super().__init__(daemon=True)
        self.peak = {"rss": 0, "pss": 0}

    def run(self) -> None:
        while True:
            total = {"rss": 0, "pss": 0}
            for pid in tree(os.getpid()):
                try:
                    lines = Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()
                except OSError:
                    continue
                for line in lines:
                    key = line.split(":")[0].lower()
                    if key in total:
                        total[key] += int(line.split()[1])
            self.peak = {k: max(v, total[k]) for k, v in self.peak.items()}
            time.sleep(0.05)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("family")
    parser.add_argument("data")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--launched", type=float, required=True, help="time.time() when the process was started")
    parser.add_argument("--work", required=True)
    parser.add_argument("--model", default="{}", help="JSON overrides of the family's config")
    parser.add_argument("--train", default="{}", help="JSON overrides of the training config")
    args = parser.parse_args()
    import lightning.pytorch as pl

    import genlab

    first: list[float] = []
    memory = TreeMemory()
    memory.start()

    class FirstStep(pl.Callback):
        def on_train_batch_end(self, trainer, *rest):
            if not first:
                first.append(time.time())

    run = Path(args.work) / f"run-{args.family}-{Path(args.data).name}-{int(time.time())}"
    genlab.train(args.family, args.data, run, model=json.loads(args.model), max_steps=args.steps, progress=False,
                 sample_every=10**9, val_every=10**9, callbacks=[FirstStep()], command="bench/first_step.py",
                 **json.loads(args.train))
    peak = next(int(line.split()[1]) for line in Path("/proc/self/status").read_text().splitlines()
                if line.startswith("VmHWM:"))
    print(json.dumps({"first_step_seconds": round(first[0] - args.launched, 2),
                      "seconds": round(time.time() - args.launched, 2), "steps": args.steps,
                      "peak_rss_mb": round(peak / 1024, 1), "peak_tree_rss_mb": round(memory.peak["rss"] / 1024, 1),
                      "peak_tree_pss_mb": round(memory.peak["pss"] / 1024, 1), "run": str(run)}))


if __name__ == "__main__":
    main()
