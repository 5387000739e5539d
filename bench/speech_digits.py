"""Benchmark: class-conditional spoken digits (issue 22): genlab's diffusion on log-mel spectrograms of spoken
digits, judged by two speech recognisers nobody here wrote, beside the teacher's own clips.

    python bench/speech_digits.py --threads 1                  # the real run -> bench/results/speech_digits.json
    python bench/speech_digits.py --per-class 8 --seconds 10 --samples 2 --out /tmp/sd_smoke.json   # smoke test

1. The corpus: `genlab data make spoken-digits` (flite: `--per-class` clips of each digit word, the voices slt,
   kal16, awb and rms in turn, each clip its own rate and pitch) under `--work`.
2. The teacher: the held-out clips as genlab's loader makes them (16 kHz, trimmed, -20 dBFS, padded to one
   length), judged as they are and after the log-mel spectrogram and Griffin-Lim (the ceiling of the
   representation: what a perfect spectrogram model could reach with this inverse).
3. genlab: `genlab.train("diffusion", corpus, condition="class")` for `--seconds` of wall clock on the training
   clips' spectrogram images, then `--samples` clips of each digit (DPM-Solver++, `--steps` network passes,
   classifier-free guidance `--guidance`), each turned into a waveform by Griffin-Lim (32 iterations).
4. Judges (genlab.metrics.speech): PocketSphinx with a grammar of the ten digit words, and Whisper tiny.en
   (faster-whisper, int8); a clip counts when the digit it is heard as is the one asked for.
5. genlab's own measure (as `genlab eval` gives it for a model of sound): the reference classifier genlab trains on
   the corpus's spectrogram images (`genlab reference`), its classifier score and class accuracy and FD-genlab
   against the held-out clips' spectrograms, for the samples and for the teacher through Griffin-Lim, each
   re-analysed from its waveform, beside the held-out clips' own. Labelled genlab's: it is not FAD.
6. Editing (`genlab edit`'s paths), on `--edits` held-out clips: a gap of `--gap` seconds in the middle of each
   clip (where the centred word is) silenced, then inpainted by the model (RePaint, DDIM 25 steps, 2 passes, the
   clip's digit as the label): heard as the right digit, against the gapped clip left silent; and image-to-image
   toward the next digit ((d + 1) mod 10, strength 0.7): heard as the new digit.

`--run RUN` judges a run trained before (its model and step count) instead of training one.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from common import class_samples, command, diffusion_arguments, griffin_lim, machine, sound_of, train_for, write

import genlab  # noqa: E402  (bench/common.py put the repository first on the path)
from genlab.data import load_data  # noqa: E402
from genlab.data.spectrogram import MelSettings, MelSpectrogram, read_sound_config  # noqa: E402
from genlab.data.speech import make_spoken_digits  # noqa: E402
from genlab.metrics.speech import DigitRecogniser, Whisper, digit_of  # noqa: E402

MODEL = {"condition": "class", "widths": (32, 64, 96), "blocks": (1, 1, 1), "attention": (False, False, True),
         "patch": 2}
TRAINING = {"lr": 1e-3, "batch_size": 32, "warmup_steps": 50}


def judge(waves: np.ndarray, digits: np.ndarray, rate: int, judges: dict) -> dict:
    """Each judge's share of clips heard as their digit, overall and per digit."""
    out = {}
    for name, hear in judges.items():
        heard = np.array([digit_of(text) if text else None for text in hear(waves, rate)], dtype=object)
        right = heard == digits
        out[name] = {"recognised": round(float(right.mean()), 4),
                     "per_digit": {str(d): round(float(right[digits == d].mean()), 3) for d in np.unique(digits)}}
    return out


def classifier_figures(reference, real: np.ndarray, waves: np.ndarray | None, labels: np.ndarray, settings) -> dict:
    """Step 5 for clips `waves` (None: the held-out clips themselves) of class indices `labels`: their log-mel
    spectrogram images through the reference classifier, against the held-out clips' images `real`."""
    from genlab.data.spectrogram import to_image
    from genlab.metrics.images import class_accuracy, classifier_score, fd_genlab, kid_genlab

    if waves is None:  # the held-out clips: their score and accuracy (a Frechet distance to themselves is 0)
        _, probs = reference.embed(real)
        return {"classifier_score": round(classifier_score(probs), 3),
                "class_accuracy": round(class_accuracy(probs, torch.as_tensor(labels)), 4)}
    with torch.no_grad():
        images = to_image(MelSpectrogram(settings)(torch.from_numpy(np.asarray(waves, np.float32))), settings)
    real_features, _ = reference.embed(real)
    features, probs = reference.embed(images)
    return {"fd_genlab": round(fd_genlab(real_features, features), 3),
            "kid_genlab": round(kid_genlab(real_features, features)[0], 4),
            "classifier_score": round(classifier_score(probs), 3),
            "class_accuracy": round(class_accuracy(probs, torch.as_tensor(labels)), 4)}


def editing(model, data, classes: np.ndarray, judges: dict, n: int, gap: float) -> dict:
    """The gap-inpainting and class-change measures of step 5."""
    from genlab.data.spectrogram import to_image
    from genlab.models.diffusion.model import DiffusionEditOptions

    settings, samples = read_sound_config(model.config.sound)
    clips, digits = data.test_x[:n], data.test_y[:n]
    with torch.no_grad():
        images = to_image(MelSpectrogram(settings)(torch.from_numpy(clips)), settings).float() / 255
    centres = torch.arange(images.shape[-1]) * settings.hop / settings.sample_rate
    middle = samples / settings.sample_rate / 2
    mask = ((centres - middle).abs() <= gap / 2).float().expand(1, 1, images.shape[-2], -1).contiguous()
    gapped = images * (1 - mask)  # the gap's frames at the floor: silence
    start = time.perf_counter()
    inpainted = torch.cat([model.edit(images[i : i + 50], mask=mask, labels=torch.from_numpy(digits[i : i + 50]),
                                      generator=torch.Generator().manual_seed(i),
                                      options=DiffusionEditOptions(sampler="ddim", steps=25, resample=2))
                           for i in range(0, len(images), 50)])
    inpaint_seconds = time.perf_counter() - start
    targets = (digits + 1) % len(classes)
    moved = torch.cat([model.edit(images[i : i + 50], labels=torch.from_numpy(targets[i : i + 50]),
                                  generator=torch.Generator().manual_seed(i),
                                  options=DiffusionEditOptions(sampler="dpm++", steps=25, strength=0.7))
                       for i in range(0, len(images), 50)])

    def heard(batch: torch.Tensor, wanted: np.ndarray) -> dict:
        return {name: judged["recognised"] for name, judged in judge(sound_of(batch, model), classes[wanted],
                                                                       settings.sample_rate, judges).items()}

    return {"clips": len(clips), "gap_seconds": gap, "gap_frames": int(mask[0, 0, 0].sum()),
            "gap_left_silent": heard(gapped, digits), "gap_inpainted": heard(inpainted, digits),
            "inpaint_seconds": round(inpaint_seconds, 1), "to_next_digit_strength_0.7": heard(moved, targets),
            "unedited_through_griffin_lim": heard(images, digits)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--per-class", type=int, default=200, help="clips of each digit in the corpus")
    diffusion_arguments(parser, seconds=2400, samples=20, work="/tmp/genlab-speech-digits", out="speech_digits.json")
    parser.add_argument("--edits", type=int, default=100, help="held-out clips the editing part uses (0: none)")
    parser.add_argument("--gap", type=float, default=0.15, help="seconds inpainted in each clip's middle")
    parser.add_argument("--run", default=None, help="judge this trained run instead of training one")
    parser.add_argument("--reference-steps", type=int, default=None,
                        help="the reference classifier's least updates (default genlab reference's; smoke tests: few)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    work = Path(args.work)
    corpus = work / f"corpus-{args.per_class}"
    if not (corpus / "done").exists():
        make_spoken_digits(corpus, args.per_class)
        (corpus / "done").write_text("")
    data = load_data(str(corpus))
    judges = {"pocketsphinx_digits": DigitRecogniser().recognise, "whisper_tiny_en": Whisper().transcribe}
    classes = np.array([int(c) for c in data.classes])
    results = {"machine": machine(args.threads), "command": command("speech_digits.py"),
               "corpus": {"clips": len(data.train_x) + len(data.test_x), "train": len(data.train_x),
                          "test": len(data.test_x), "seconds": data.seconds, "sample_rate": data.sample_rate}}
    truth = classes[data.test_y]
    settings = MelSettings(sample_rate=data.sample_rate)
    results["teacher"] = judge(data.test_x, truth, data.sample_rate, judges)
    teacher_mel = MelSpectrogram(settings)(torch.from_numpy(data.test_x))
    teacher_waves = griffin_lim(teacher_mel, settings, data.test_x.shape[1])
    results["teacher_griffin_lim"] = judge(teacher_waves, truth, data.sample_rate, judges)
    print(f"teacher: {results['teacher']}\nteacher through Griffin-Lim: {results['teacher_griffin_lim']}", flush=True)

    model_config, training = {**MODEL, **json.loads(args.model)}, {**TRAINING, **json.loads(args.train)}
    if args.run:
        from genlab.engine.runs import read_metrics, read_run_config
        from genlab.files import load_torch_file

        run = Path(args.run)
        trained = max(row["time"] for row in read_metrics(run))  # the training's wall clock, as it logged it
        steps = int(load_torch_file(run / "checkpoints" / "last.ckpt")["global_step"])
        record = read_run_config(run)
        model_config = {k: v for k, v in record["model"].items() if k in model_config}
        training = {k: v for k, v in record["train"].items() if k in training}
    else:
        run = work / f"run-{int(time.time())}"
        trained, steps = train_for("diffusion", str(corpus), run, args.seconds, args.threads, model_config, training)
    model = genlab.load(run / "model")
    wanted, waves, sampled = class_samples(model, args.samples, args.steps, args.guidance)
    results["genlab_diffusion"] = {**judge(waves, classes[wanted], data.sample_rate, judges),
                                   "train_seconds": round(trained, 1), "train_steps": steps,
                                   "sample_seconds": round(sampled, 1),
                                   "parameters": model.num_parameters(), "model": model_config, "training": training,
                                   "samples_per_digit": args.samples, "steps": args.steps, "guidance": args.guidance,
                                   "run": str(run)}
    print(f"genlab diffusion: {results['genlab_diffusion']}", flush=True)

    from genlab.data.spectrogram import spectrogram_images
    from genlab.metrics.reference import ReferenceConfig, reference_classifier

    spectrograms = spectrogram_images(data, settings)
    steps = {} if args.reference_steps is None else {"min_steps": args.reference_steps}
    reference = reference_classifier(spectrograms, ReferenceConfig(**steps), progress=False)
    real = spectrograms.test_x
    results["genlab_reference_classifier"] = {
        "reference_accuracy": round(float(reference.accuracy), 4),
        "held_out_clips": classifier_figures(reference, real, None, data.test_y, settings),
        "teacher_griffin_lim": classifier_figures(reference, real, teacher_waves, data.test_y, settings),
        "genlab_diffusion": classifier_figures(reference, real, waves, wanted, settings)}
    print(f"reference classifier: {results['genlab_reference_classifier']}", flush=True)
    if args.edits:
        results["genlab_editing"] = editing(model, data, classes, judges, args.edits, args.gap)
        print(f"genlab editing: {results['genlab_editing']}", flush=True)
    write(results, args.out)


if __name__ == "__main__":
    main()
