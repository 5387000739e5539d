"""One trial of a study, trained in processes of its own: `python -m genlab.tune.trial STUDY NUMBER [MAX_TIME]`.

A trial that trains on several devices (`genlab tune ... --devices 2 --strategy ddp`) cannot train inside the
tuning process, which runs trial after trial: Lightning's DDP launcher starts the other processes by running the
command of the first one again. So the tuning process runs this module for such a trial and waits. Every process
builds the trial's configs from the study (Optuna hands back the parameters the trial already drew); the first
one reports the watched validation metric to the trial through the study's storage, where the pruner decides as it
does for a trial trained in the tuning process, and every process stops with its decision (TrialPruning
broadcasts it). At the end the first process writes trials/NNNN/outcome.json ({} when it trained to the end, else
{"pruned": why} or {"diverged": why}); the tuning process then measures the trained model.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    if len(argv) not in (2, 3):
        print(__doc__, file=sys.stderr)
        return 2
    import optuna

    from genlab.engine.runs import first_process
    from genlab.files import atomic_write
    from genlab.tune.study import load_study, read_settings, train_trial, trial_configs

    folder, number = Path(argv[0]), int(argv[1])
    max_time = argv[2] if len(argv) == 3 and argv[2] else None
    settings = read_settings(folder)
    study = load_study(folder, settings)
    frozen = next((t for t in study.get_trials(deepcopy=False) if t.number == number), None)
    if frozen is None or frozen.state != optuna.trial.TrialState.RUNNING:
        print(f"trial {number} of {folder} is not running", file=sys.stderr)
        return 2
    trial = optuna.Trial(study, frozen._trial_id)
    model_config, train_config, metric = trial_configs(trial, settings, max_time)
    run = folder / "trials" / f"{number:04d}"
    command = f"genlab tune {settings.family} --out {folder} (trial {number}, on {train_config.devices} devices)"
    outcome = train_trial(trial, settings, run, model_config, train_config, metric, command)
    if first_process():
        atomic_write(run / "outcome.json", json.dumps(outcome))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
