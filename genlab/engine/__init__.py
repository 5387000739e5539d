"""The run layer's training half: how a model is trained, beside the models it trains.

- `trainer.py`   the Lightning module and Trainer every family trains with (`fit`);
- `recipes.py`   each family's training recipe: defaults, tuning space, loaders, optimisers, callbacks;
- `callbacks.py` the Lightning callbacks: RNG state, checkpoints, previews, progress, EMA, collapse monitor;
- `runs.py`      the run folder (config.yaml, metrics.jsonl) and how a run starts, resumes or follows a study;
- `optim.py`     Muon + AdamW as one optimiser;
- `finetune.py`  fine-tuning a trained language model (full, LoRA).

Only trainer.py and callbacks.py import Lightning; nothing imports them before a run starts.
"""
