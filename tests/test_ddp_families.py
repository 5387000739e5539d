"""Every family trained on two CPU processes with Lightning's DDP (gloo), one after another in the same two processes
(tests/ddp_families.py, run once for the module): each run's files are the first process's alone (the second writes
nothing into the run folder), each process trains on its own half of every global batch, the processes end with the
same weights, each process's random state is in the checkpoint, and the model loads with finite weights."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import genlab
from genlab.files import load_torch_file
from tests.ddp_families import CLOSED_FORM, RUNS, TRAIN, missing

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 400


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, dict]:
    """The script run once on every family whose prerequisites are here: (its folder, its done.json)."""
    work = tmp_path_factory.mktemp("ddp")
    labels = [label for label in RUNS if missing(label) is None]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
           "OMP_NUM_THREADS": "1"}
    env.pop("LOCAL_RANK", None)  # the script's first process must be the launcher
    log = work / "log.txt"  # a file, not a pipe: the second process holds its copy open until it ends
    with log.open("w") as out:
        process = subprocess.Popen([sys.executable, str(ROOT / "tests" / "ddp_families.py"), str(work), *labels],
                                   cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        late = False
        try:
            process.wait(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            late = True
        finally:  # the second process too, had the first died without it (it would wait for it forever)
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            process.wait()
    output = log.read_text()[-6000:]
    assert not late, f"tests/ddp_families.py ran past {TIMEOUT} s:\n{output}"
    assert process.returncode == 0, f"tests/ddp_families.py exited with {process.returncode}:\n{output}"
    done = json.loads((work / "done.json").read_text())
    assert done["families"] == labels
    return work, done


@pytest.mark.parametrize("label", list(RUNS))
def test_a_family_trains_on_two_processes(trained, label):
    if missing(label):
        pytest.skip(missing(label))
    work, done = trained
    run = Path(done["runs"][label])
    assert (run / "model" / "config.json").exists() and (run / "config.yaml").exists()
    model = genlab.load(run / "model")
    assert all(torch.isfinite(p).all() for p in model.parameters())
    writes = [json.loads((work / f"writes-rank{r}.json").read_text()).get(label, []) for r in (0, 1)]
    assert any(w.endswith(f"{run}/model/config.json") for w in writes[0]), "the first process exports the model"
    if label in CLOSED_FORM:  # no steps: nothing of training was written
        assert not (run / "checkpoints").exists() and not list(work.glob(f"{label}-rank*.json"))
    assert not writes[1], f"the second process wrote into the run folder: {writes[1][:5]}"
    if label in CLOSED_FORM:
        return

    assert (run / "checkpoints" / "last.ckpt").exists()
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    logged = [(r["step"], key) for r in records for key in r if key not in ("step", "time", "epoch")]
    assert logged and len(logged) == len(set(logged)), "metrics.jsonl holds records of both processes"
    assert max(step for step, _ in logged) == TRAIN["max_steps"] - 1

    ranks = [json.loads((work / f"{label}-rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["rank"] for r in ranks] == [0, 1] and all(r["world_size"] == 2 for r in ranks)
    first, second = (r["batches"] for r in ranks)
    assert len(first) == len(second) == TRAIN["max_steps"]
    batch_size = RUNS[label][3]
    for a, b in zip(first, second, strict=True):
        assert a["step"] == b["step"]
        assert len(a["rows"]) == len(b["rows"]) == batch_size // 2, "each process trains on half the global batch"
        assert not set(a["rows"]) & set(b["rows"]), f"both processes trained on the same rows at step {a['step']}"
    assert len({row for batch in first + second for row in batch["rows"]}) > batch_size, "the batches change"
    precisions = [r["precision"] for r in ranks]
    assert precisions[0] == precisions[1], (
        f"the processes train at different precisions {precisions}: precision auto is decided in each process by "
        "timing a bf16 product (genlab.hardware.bf16_is_fast), and their weights drift apart")
    assert ranks[0]["weights"] == ranks[1]["weights"], "the processes' weights drifted apart: gradients not averaged"
    assert ranks[0]["weights"] != ranks[0]["weights_before"], "training did not move the weights"

    rng = load_torch_file(run / "checkpoints" / "last.ckpt")["callbacks"]["RNGState"]
    assert len(rng["ranks"]) == 2, "the checkpoint holds the random state of each process"
    assert not torch.equal(rng["ranks"][0]["torch"], rng["ranks"][1]["torch"]), "each process draws its own stream"
