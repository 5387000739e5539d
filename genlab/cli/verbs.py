"""The verbs that use a trained model or a dataset. Each is a typed function; its docstring is its --help text.

Every verb asks the model's declared capabilities (genlab.models.base) whether it can do what it is
asked, so a model of a family that cannot answers with the families that can.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

import torch

from genlab.errors import ConfigError, GenlabError
from genlab.models.base import (
    AnomalyScorer,
    Chat,
    Editor,
    ImageSampler,
    Reconstructor,
    TableSampler,
    TextGenerator,
    Translator,
    VideoGenerator,
    Vocoder,
    require,
)

VERB_OF = {ImageSampler: "sample", TableSampler: "sample", TextGenerator: "generate", Reconstructor: "reconstruct",
           Translator: "translate", Editor: "edit", VideoGenerator: "video"}  # the verb that uses each capability


def need(model, capability: type, run: str) -> None:
    """`require`, with the verbs this model can do named in the fix."""
    try:
        require(model, capability)
    except ConfigError as error:
        can = [f"genlab {verb} {run}" for cap, verb in VERB_OF.items() if isinstance(model, cap)]
        raise ConfigError(error.problem, f"{error.fix}; this model works with {' or '.join(can)}" if can
                          else error.fix) from None


def _load_run(run: str, record: bool = True):
    """The model of a run folder (or a model folder), and (with `record`) the run's config when there is one."""
    import genlab

    path = Path(run)
    if not path.exists():
        raise GenlabError(f"{run} does not exist", "pass a run folder (runs/NAME) or a model folder (runs/NAME/model)")
    model = genlab.load(path)
    if not record or not (path / "config.yaml").exists():
        return model, None
    from genlab.engine.runs import read_run_config

    return model, read_run_config(path)


def _run_data(record: dict | None, what: str):
    """The run's data as its model saw it (sound as spectrogram images for an image family)."""
    from genlab.data import as_images, load_data
    from genlab.models import get_family

    if record is None:
        raise GenlabError(f"{what} needs the run's data, but a bare model folder has no config.yaml",
                          "pass the run folder (runs/NAME) or give image files with --image")
    data = load_data(record["data"])
    return as_images(data) if get_family(record["family"]).data_kind == "image" else data


def _save_grid(images: torch.Tensor, out: str, nrow: int | None = None) -> Path:
    from genlab.evaluation.report import save_grid

    if nrow is not None and nrow < 1:
        raise ConfigError(f"nrow = {nrow}: a grid needs at least one image per row", "pass --nrow 1 or more")
    return save_grid(images, out, nrow)


def _options(model: Any, given: dict[str, Any], editing: bool = False) -> Any:
    """The family's sampling (or editing) options from those given (None: not given); an option the family does
    not take is an error naming the families that take it."""
    from genlab.models import families_with, get_family

    def declared(cls) -> type:
        return cls.edit_options if editing else cls.sample_options

    fields = {f.name for f in dataclasses.fields(declared(model))}
    for name, value in given.items():
        if value is not None and name not in fields:
            others = [family for family in families_with(Editor if editing else ImageSampler)
                      if name in {f.name for f in dataclasses.fields(declared(get_family(family)))}]
            raise ConfigError(f"--{name.replace('_', '-')} is not an option of {model.family} "
                              f"{'editing' if editing else 'sampling'}",
                              f"drop it{'; it applies to ' + ' and '.join(others) + ' models' if others else ''}")
    chosen = {k: v for k, v in given.items() if v is not None}
    if "progress" in fields:
        chosen["progress"] = True
    return declared(model)(**chosen)


def data_list() -> None:
    """List the registered datasets, where each resolves on this machine, and whether it is present."""
    from genlab.data import list_datasets

    rows = list_datasets()
    width = max(len(r["name"]) for r in rows)
    for r in rows:
        print(f"{r['name']:<{width}}  {r['kind']:<5}  present: {r['present']:<3}  {r['where']}")
        print(f"{'':<{width}}  {r['description']}")
        if r["present"] == "no":
            print(f"{'':<{width}}  install: {r['install']}")


def data_check(data: str, max_bad_fraction: float = 0.05, as_json: bool = False, schema: str | None = None) -> None:
    """Load a dataset or path and report counts, shapes, classes and bad files; for a table, each column's kind
    (numeric, categorical, datetime, id), range or categories, and missing values.

    Args:
        data: a registered name (see `genlab data list`) or a path to images, text, conversations or a table
            (CSV, TSV, Parquet).
        max_bad_fraction: stop with an error when more than this fraction of files is unreadable.
        as_json: print the report as JSON.
        schema: a table's column kinds, overriding the inferred ones: a YAML file of `column: kind` lines.
    """
    from genlab.data import load_data

    dataset = load_data(data, max_bad_fraction=max_bad_fraction, schema=schema)
    print(json.dumps(dataset.report.to_dict(), indent=1) if as_json else dataset.report.summary())


def data_prepare(data: str, out: str | None = None, tokenizer: str = "bpe", vocab_size: int = 4096,
                 test_fraction: float | None = None, workers: int | None = None, chunk_mb: float = 8,
                 sample_mb: float = 64, image_size: int | None = None, max_bad_fraction: float = 0.05) -> None:
    """Prepare data once on disk, in parallel, so that training reads it in bounded memory whatever its size
    (docs/scale.md). Text (a file or a folder of text files) is tokenized into token files (OUT/train.bin, val.bin,
    tokenizer.json, meta.json; `genlab train gpt --data OUT` reads one window at a time); a folder of images is
    encoded into Arrow shards (OUT/train, OUT/test; any image family's `--data OUT` decodes batches in a worker).

    Args:
        data: a text file or a folder of text files (UTF-8), or a folder of images (class subfolders: labels).
        out: the folder to write (default: the data's name with -tokens or -shards).
        tokenizer: bpe (byte-level, fitted on a sample spread over the corpus) or char (every character of it).
        vocab_size: bpe: the vocabulary's size.
        test_fraction: text: the tail held out for validation (default 0.005); images: the test split (default
            0.1, as a folder read into memory holds out).
        workers: processes that tokenize or encode (default: one per core).
        chunk_mb: the text each worker takes at a time, cut at a line's end.
        sample_mb: bpe: the text the tokenizer is fitted on.
        image_size: images: the side every image is resized to (default: the most common size).
        max_bad_fraction: stop with an error when more than this fraction of files is unreadable.
    """
    from genlab.data.images import IMAGE_SUFFIXES

    source = Path(data)
    if source.is_dir() and any(p.suffix.lower() in IMAGE_SUFFIXES for p in source.rglob("*") if p.is_file()):
        from genlab.data.shards import prepare_images

        out = out or f"{source.name}-shards"
        meta = prepare_images(source, out, image_size=image_size, workers=workers, max_bad_fraction=max_bad_fraction,
                              test_fraction=0.1 if test_fraction is None else test_fraction)
        print(f"{out}: {meta['counts']['train']:,} training and {meta['counts']['test']:,} test images "
              f"({' x '.join(map(str, meta['shape']))}, {len(meta['classes'])} classes) from {meta['files']:,} files "
              f"in {meta['seconds']:.1f} s ({meta['images_per_s']:,} images/s on {meta['workers']} processes)")
        print(f"  next: genlab train diffusion --data {out}")
        return
    from genlab.data.tokens import prepare_text

    out = out or f"{source.name.removesuffix(source.suffix)}-tokens"
    test_fraction = 0.005 if test_fraction is None else test_fraction
    meta = prepare_text(data, out, tokenizer=tokenizer, vocab_size=vocab_size, test_fraction=test_fraction,
                        workers=workers, chunk_mb=chunk_mb, sample_mb=sample_mb, max_bad_fraction=max_bad_fraction)
    print(f"{out}: {meta['tokens']['train']:,} training and {meta['tokens']['val']:,} validation tokens "
          f"({meta['tokenizer']}, {meta['vocab_size']:,} ids, {meta['dtype']}) from {meta['bytes'] / 2**20:,.1f} MB "
          f"in {meta['seconds']:.1f} s ({meta['mb_per_s']} MB/s on {meta['workers']} processes)")
    for path, reason in meta["bad_files"]:
        print(f"  skipped {path}: {reason}")
    print(f"  next: genlab train gpt --data {out}")


def data_make(what: str, out: str | None = None, per_class: int = 100, voices: str = "slt,kal16,awb,rms",
              instruments: str = "piano,guitar,violin,flute", pitches: str = "48-72", velocities: str = "80,120",
              seconds: float = 1.0, digit_strings: int = 500, sentences: int = 500, n: int = 10_000,
              size: int | None = None, objects: str = "1-3", hold_out: str = "", frames: int = 20, items: int = 2,
              speed: str = "2-4", seed: int = 0) -> None:
    """Make a dataset offline.

    spoken-digits: each digit's word spoken by Debian's flite synthesiser in several voices, each clip with its
    own rate and pitch, as OUT/DIGIT/VOICE-NNNN.wav (a teacher corpus, SC09's shape). notes: single notes rendered
    by FluidSynth with a General MIDI soundfont, every instrument at every velocity for each pitch, as
    OUT/PITCH/INSTRUMENT-VELOCITY.wav (NSynth's shape; the MIDI pitch is the class). tts-corpus: digit strings and
    sentences from Debian's fortunes spoken by one flite voice, LJSpeech's layout (wavs/ID.wav, metadata.csv) with
    flite's phone alignment of each utterance (alignment.jsonl). shapes: scenes of coloured circles, squares and
    triangles with their objects and captions (genlab.data.shapes), as OUT/{train,test,heldout}/NNNNNN.png with a
    metadata.jsonl in each (Hugging Face ImageFolder's layout) and OUT/shapes.json; genlab.metrics.shapes scores
    whether an image shows what a caption asks. moving-fashion: clips of Fashion-MNIST garments bouncing in a
    canvas (Moving MNIST's shape; genlab.data.video), OUT/{train,test}/clips.npy with labels and item tracks.

    Args:
        what: the dataset to make: spoken-digits, notes, tts-corpus, shapes or moving-fashion.
        out: the folder to write (default: the dataset's name).
        per_class: spoken-digits: clips of each digit.
        voices: spoken-digits: flite voices, comma-separated, taken in turn (flite -lv lists them); tts-corpus:
            the one voice (the first).
        instruments: notes: General MIDI instruments, comma-separated (piano, organ, guitar, bass, violin,
            trumpet, flute, clarinet).
        pitches: notes: MIDI note numbers, a range (48-72) or a list (60,64,67).
        velocities: notes: MIDI velocities (loudness, 1-127), comma-separated.
        seconds: notes: how long each note is held (its release rings on).
        digit_strings: tts-corpus: utterances of 3-6 digit words.
        sentences: tts-corpus: sentences of 4-16 words from the fortune files.
        n: shapes: scenes in train/ and test/ (test/ a tenth of them); moving-fashion: training clips (and a
            tenth as many test clips).
        size: shapes: the images' width and height in pixels (32-256, default 32); moving-fashion: the canvas
            (default 64).
        objects: shapes: how many objects a scene holds, a range (1-3) or one count (2).
        hold_out: shapes: (colour, shape) pairs no train or test scene holds, comma-separated ("red circle,blue
            square"); heldout/ holds scenes with them.
        frames: moving-fashion: frames per clip.
        items: moving-fashion: garments per clip (all of the clip's class).
        speed: moving-fashion: the range of the garments' speeds in pixels per frame.
        seed: spoken-digits: the seed of each clip's rate and pitch; tts-corpus: of the digits and sentences;
            shapes: of every scene.
    """
    if what == "spoken-digits":
        from genlab.data.speech import make_spoken_digits

        folder = make_spoken_digits(Path(out or what), per_class, tuple(v for v in voices.split(",") if v), seed)
        print(f"wrote {10 * per_class:,} clips of spoken digits to {folder} (check them: genlab data check {folder})")
        return
    if what == "notes":
        from genlab.data.notes import make_notes

        try:
            low, _, high = pitches.partition("-")
            chosen = tuple(range(int(low), int(high) + 1)) if high else tuple(int(p) for p in pitches.split(","))
            loudness = tuple(int(v) for v in velocities.split(","))
        except ValueError:
            raise ConfigError(f"--pitches {pitches} --velocities {velocities} are not MIDI numbers",
                              "e.g. --pitches 48-72 --velocities 80,120") from None
        kinds = tuple(i for i in instruments.split(",") if i)
        folder = make_notes(Path(out or what), chosen, kinds, loudness, seconds)
        print(f"wrote {len(chosen) * len(kinds) * len(loudness):,} notes to {folder} "
              f"(check them: genlab data check {folder})")
        return
    if what == "tts-corpus":
        from genlab.data.speech import make_tts_corpus

        voice = voices.split(",")[0]
        folder = make_tts_corpus(Path(out or what), digit_strings, sentences, voice, seed)
        print(f"wrote {digit_strings + sentences:,} utterances of flite's {voice} voice with their phone alignment to "
              f"{folder}")
        return
    if what == "shapes":
        from genlab.data.shapes import make_shapes

        low, _, high = objects.partition("-")
        if not (low.strip().isdigit() and (high.strip().isdigit() or not high)):
            raise ConfigError(f"--objects {objects} is not a count or a range of counts", "e.g. --objects 1-3")
        pairs = tuple(tuple(pair.split()) for pair in hold_out.split(",") if pair.strip())
        folder = make_shapes(Path(out or what), n, size or 32, (int(low), int(high or low)), pairs, seed=seed)
        held = f" (heldout/ holds scenes with {hold_out})" if pairs else ""
        print(f"wrote {n:,} scenes of shapes to {folder}{held} (check them: genlab data check {folder})")
        return
    if what == "moving-fashion":
        from genlab.data.video import make_moving_fashion

        try:
            low, _, high = speed.partition("-")
            speeds = (float(low), float(high or low))
        except ValueError:
            raise ConfigError(f"--speed {speed} is not a range of pixels per frame", "e.g. --speed 2-4") from None
        folder = make_moving_fashion(Path(out or what), n, frames, size or 64, items, speeds, seed=seed)
        print(f"wrote {n:,} training and {max(1, n // 10):,} test clips of moving Fashion-MNIST to {folder} "
              f"(check them: genlab data check {folder})")
        return
    raise ConfigError(f"genlab data make {what}: there is no such dataset",
                      "genlab data make spoken-digits, notes, tts-corpus, shapes or moving-fashion")


def reference(data: str, retrain: bool = False) -> None:
    """Train (once) and cache the reference classifier of an image dataset: the feature space of FD-genlab.

    Args:
        data: a registered image dataset or a folder of images with class subfolders.
        retrain: train again even when a cached classifier matches the data.
    """
    from genlab.data import load_data
    from genlab.metrics.reference import reference_classifier

    dataset = load_data(data)
    if dataset.kind != "image":
        raise ConfigError(f"{data} is {dataset.kind} data; reference classifiers are for images",
                          "pass an image dataset such as fashion-mnist")
    classifier = reference_classifier(dataset, retrain=retrain)
    state = "trained" if classifier.trained else "cached"
    print(f"reference classifier for {dataset.name} ({state}): test accuracy {classifier.accuracy:.2%} on "
          f"{classifier.meta['test_examples']:,} images, {classifier.feature_dim}-d features\n  {classifier.folder}")


def sample(run: str, n: int = 64, out: str | None = None, seed: int = 0, label: str | None = None,
           prompt: str | None = None, nrow: int | None = None, temperature: float | None = None,
           sampler: str | None = None, steps: int | None = None, guidance: float | None = None,
           eta: float | None = None, prompt_prior: float | None = None, where: str | None = None,
           vocoder: str | None = None, video_format: str = "gif") -> None:
    """Draw n samples from a trained image model and save them as one PNG grid, n rows from a table model as a
    CSV (or Parquet) file, or n clips from a video model as GIF or MP4 files with a PNG grid of their frames.

    Args:
        run: a run folder (runs/NAME) or a model folder.
        n: how many images or rows.
        out: the file to write (default samples.png; for a table model samples.csv: CSV unless the name ends in
            .parquet).
        seed: the seed of the random numbers; the same seed gives the same images.
        label: for class-conditional models, a class name or index (default: cycle through classes).
        prompt: text-conditioned models (diffusion --model.condition text): what to draw, in any words.
        nrow: images per row of the grid.
        temperature: scale of the starting noise; below 1 trades variety for cleaner images (default 1).
        sampler: diffusion: ddpm, ddim or dpm++ (default the model's, ddim).
        steps: diffusion: network evaluations (default the model's, 50; 10-25 are enough for dpm++).
        guidance: diffusion: classifier-free guidance scale (1: none; default the model's, 3).
        eta: diffusion, ddim: 0 is deterministic, 1 as noisy as DDPM.
        prompt_prior: diffusion with --prompt: temperature of the mapping of the prompt onto the training
            captions (default the model's; 0 conditions on the raw prompt embedding).
        where: table models: conditions every row must meet, e.g. "sex=Female,age>40" (= and != for categories,
            several values joined by |; = != < <= > >= for numbers and dates; quote a value holding a comma).
        vocoder: sound models: a vocoder run (genlab train vocoder) that turns the spectrograms into sound,
            instead of Griffin-Lim.
        video_format: video models: gif or mp4 (H.264, needs the imageio-ffmpeg package).
    """
    model, _ = _load_run(run, record=False)
    if isinstance(model, VideoGenerator):
        if prompt is not None or where is not None or vocoder is not None or prompt_prior is not None:
            raise ConfigError("--prompt, --where, --vocoder and --prompt-prior do not apply to a video model",
                              "a video model takes --n, --label, --seed, --sampler, --steps, --guidance, --out")
        options = _options(model, {"temperature": temperature, "sampler": sampler, "steps": steps,
                                   "guidance": guidance})
        clips = model.sample_video(n, labels=label, generator=torch.Generator().manual_seed(seed), options=options)
        return _save_clips(model, clips, Path(out or "samples"), video_format, nrow)
    if isinstance(model, TableSampler):
        given = {"label": label, "prompt": prompt, "nrow": nrow, "temperature": temperature, "sampler": sampler,
                 "steps": steps, "guidance": guidance, "eta": eta, "prompt_prior": prompt_prior}
        image_only = [f"--{k.replace('_', '-')}" for k, v in given.items() if v is not None]
        if image_only:
            raise ConfigError(f"{', '.join(image_only)} apply to image models; this is a {model.family} model",
                              "a table model takes --n, --seed and --out")
        return _sample_rows(model, n, out or "samples.csv", seed, where)
    if where is not None:
        raise ConfigError(f"--where applies to table models; this is a {model.family} model",
                          "condition an image model with --label or --prompt")
    need(model, ImageSampler, run)
    sound = bool(getattr(model.config, "sound", ""))
    out = out or ("samples" if sound else "samples.png")
    options = _options(model, {"temperature": temperature, "sampler": sampler, "steps": steps, "guidance": guidance,
                               "eta": eta, "prompt_prior": prompt_prior})
    images = model.sample(
        n, labels=label, prompt=prompt, generator=torch.Generator().manual_seed(seed), options=options
    )
    if vocoder is not None and not sound:
        raise ConfigError(f"--vocoder applies to models of sound; {run} draws images", "leave --vocoder out")
    if sound and not out.lower().endswith((".png", ".jpg", ".jpeg")):
        return _save_sounds(model, images, Path(out), nrow, seed, vocoder)
    print(f"wrote {n} samples to {_save_grid(images, out, nrow)}")


def _save_clips(model, clips: torch.Tensor, out: Path, video_format: str, nrow: int | None = None) -> None:
    """Clips as OUT/NNN.gif (or .mp4) and OUT/frames.png, a grid with a row per clip and a column per frame."""
    from genlab.data.video import frame_grid, frame_image, write_video

    if video_format not in ("gif", "mp4"):
        raise ConfigError(f"--video-format {video_format!r}", "use gif or mp4")
    if out.suffix.lower() in (".gif", ".mp4") and len(clips) == 1:
        print(f"wrote {write_video(out, clips[0], model.config.fps)}")
        return
    for i, clip in enumerate(clips):
        write_video(out / f"{i:03d}.{video_format}", clip, model.config.fps)
    frame_image(frame_grid(clips[:nrow] if nrow else clips)).save(out / "frames.png")
    print(f"wrote {len(clips)} clips ({video_format}) and frames.png to {out}")


def video(run: str, input: str, task: str = "predict", out: str = "video.gif", context: int | None = None,
          factor: int = 2, label: str | None = None, mean: bool = False, seed: int = 0,
          sampler: str | None = None, steps: int | None = None, guidance: float | None = None) -> None:
    """Make a clip from a given one or from a still with a video model: predict what comes next, raise the frame
    rate, or animate a picture. Writes a GIF or MP4 (by the suffix of --out).

    Args:
        run: a video run folder (genlab train video) or its model folder.
        input: a video file (GIF, MP4, ...) for predict and interpolate; an image file for animate.
        task: predict (the frames after the first --context of the input), interpolate (--factor times the
            frame rate) or animate (a clip that starts from the image).
        out: the .gif or .mp4 file to write.
        context: predict: frames of the input to continue from (default half the model's clip length).
        factor: interpolate: frames out per frame in (2: twice the frame rate).
        label: class models: the class of the clip (default: none, the unconditional model).
        mean: predict and interpolate: the mean of the possible frames (the forecast of least squared error, one
            network evaluation) instead of one sample.
        seed: the seed of the random numbers.
        sampler: ddpm, ddim or dpm++ (default the model's).
        steps: network evaluations of the sampler (default the model's).
        guidance: classifier-free guidance scale of class models.
    """
    from genlab.data.images import load_image
    from genlab.data.video import read_clip, write_video

    model, _ = _load_run(run, record=False)
    need(model, VideoGenerator, run)
    c = model.config
    options = _options(model, {"sampler": sampler, "steps": steps, "guidance": guidance, "mean": mean or None})
    kwargs = {"labels": [label] if label is not None else None, "options": options,
              "generator": torch.Generator().manual_seed(seed)}
    fps = c.fps
    if task == "animate":
        clip = model.animate(torch.from_numpy(load_image(input, c.channels, c.image_size))[None], **kwargs)[0]
    elif task in ("predict", "interpolate"):
        frames, fps = read_clip(input, c.channels, c.image_size)
        frames = torch.from_numpy(frames)[None]
        if task == "predict":
            k = c.frames // 2 if context is None else context
            if not 1 <= k <= len(frames[0]):
                raise ConfigError(f"--context {k} for an input of {len(frames[0])} frames",
                                  f"use 1 .. {min(len(frames[0]), c.frames - 1)}")
            clip = torch.cat([frames[0, :k].float() / 255, model.predict(frames[:, :k], **kwargs)[0]])
        else:
            clip = model.interpolate(frames, factor, **kwargs)[0]
            fps = fps * factor
    else:
        raise ConfigError(f"--task {task!r}", "use predict, interpolate or animate")
    print(f"wrote {len(clip)} frames to {write_video(out, clip, fps)}")


def speak(run: str, text: str | None = None, out: str = "speech.wav", vocoder: str | None = None, pace: float = 1.0,
          voice: str = "slt", seed: int = 0) -> None:
    """Speak text with a text-to-speech model: flite's front end turns the text into phones, the model the phones
    into a log-mel spectrogram, and a vocoder (or Griffin-Lim) the spectrogram into a WAV file.

    Args:
        run: a tts run folder (genlab train tts) or its model folder.
        text: what to say.
        out: the WAV file to write.
        vocoder: a vocoder run (genlab train vocoder) trained on sound at the same sample rate; default Griffin-Lim.
        pace: above 1 speaks slower, below 1 faster (the predicted durations are scaled).
        voice: the flite voice whose front end (lexicon and letter-to-sound rules) gives the phones.
        seed: Griffin-Lim's starting phase.
    """
    import soundfile

    from genlab.data.speech import phonemes
    from genlab.files import atomic_path
    from genlab.models.base import TextToSpeech

    if text is None:
        raise ConfigError("genlab speak needs --text: what to say", 'e.g. --text "four two seven one"')
    model, _ = _load_run(run, record=False)
    need(model, TextToSpeech, run)
    log_mel = model.synthesize([phonemes(text, voice)], pace=pace)[0][None]
    settings = model.settings
    waves, how = _voice(log_mel, settings, vocoder, None, seed, "the tts model")
    wave = waves[0]
    path = Path(out)
    with atomic_path(path) as partial:
        soundfile.write(partial, wave.clamp(-1, 1).numpy(), settings.sample_rate, subtype="PCM_16", format="WAV")
    print(f"wrote {len(wave) / settings.sample_rate:.2f} s of speech ({how}) to {path}")


def _voice(log_mel: torch.Tensor, settings: Any, vocoder: str | None, length: int | None, seed: int,
           whose: str) -> tuple[torch.Tensor, str]:
    """Waveforms (B, samples) from log-mel spectrograms made with `settings`: by the vocoder run `vocoder`, which
    must have been trained on the same settings, or by Griffin-Lim from a seeded phase; and how, in words."""
    from genlab.data.spectrogram import voice

    if vocoder is None:
        return voice(log_mel, settings, None, length, seed), "phase by Griffin-Lim"
    voiced, _ = _load_run(vocoder, record=False)
    need(voiced, Vocoder, vocoder)
    if voiced.settings != settings:
        raise ConfigError(f"the vocoder {vocoder} was trained on other spectrogram settings than {whose}",
                          "train the vocoder on sound at the same sample rate, or leave --vocoder out")
    return voice(log_mel, settings, voiced, length), f"vocoder {vocoder}"


def _save_sounds(model: Any, images: torch.Tensor, folder: Path, nrow: int | None, seed: int,
                 vocoder: str | None = None, names: list[str] | None = None) -> None:
    """A spectrogram model's samples as WAV files (16-bit PCM, from each log-mel image by Griffin-Lim or by the
    given vocoder; `names` without .wav, default sample-000 ...) and the grid of their spectrograms, in `folder`."""
    import soundfile

    from genlab.data.spectrogram import from_image, read_sound_config
    from genlab.files import atomic_path

    if folder.suffix:
        raise ConfigError(f"--out {folder}: a sound model writes a folder of WAV files and their spectrograms",
                          "e.g. --out samples/ (or --out grid.png for the spectrograms alone)")
    settings, samples = read_sound_config(model.config.sound)
    waves, how = _voice(from_image(images, settings), settings, vocoder, samples, seed, f"{model.family}'s")
    folder.mkdir(parents=True, exist_ok=True)
    names = names or [f"sample-{i:03d}" for i in range(len(waves))]
    for name, wave in zip(names, waves.numpy(), strict=True):
        with atomic_path(folder / f"{name}.wav") as partial:
            soundfile.write(partial, wave.clip(-1, 1), settings.sample_rate, subtype="PCM_16", format="WAV")
    grid = _save_grid(images, str(folder / "spectrograms.png"), nrow)
    print(f"wrote {len(waves)} clips of {samples / settings.sample_rate:.2f} s ({settings.sample_rate} Hz WAV, {how}) "
          f"to {folder}, and their spectrograms to {grid}")


def detect(run: str, data: str | None = None, out: str = "scores.csv", percentile: float = 99.0,
           anomalies: str | None = None, report: str | None = None, score: str | None = None,
           steps: int | None = None, max_log_snr: float | None = None) -> None:
    """Score how unlike the training data each example of --data is, and flag those above a threshold chosen
    without labels: the given percentile of the scores of the run's own held-out data, so that about
    (100 - percentile)% of normal examples are flagged (the expected false-alarm rate). With --anomalies (examples
    known to be anomalous, --data then being known normal ones) it also measures the detector: AUROC, average
    precision, false alarms and detections at the threshold, and a report with both score histograms.

    Args:
        run: a run folder (runs/NAME) of a model that scores anomalies (vae, diffusion, gan, gpt, rnn, tabular).
        data: what to score: a table (CSV, TSV, Parquet) for a table model, a text file (one example a line) for a
            language model, an image file or a folder of images for an image model.
        out: the CSV to write: example, score (bits per dimension; a GAN's or CTGAN's critic in its own units),
            anomalous (and truth, with --anomalies).
        percentile: the threshold, as a percentile of the held-out scores (99: about 1% false alarms).
        anomalies: known anomalies, in the same form as --data, to evaluate the detector on.
        report: with --anomalies, the HTML report to write (default: --out with .html for .csv).
        score: a table copula's score: density (its negative log density, the default) or tail (the tail
            probabilities of its marginals, COPOD's score: a row extreme in many columns at once).
        steps: diffusion: the timesteps of the bound's grid (default 16; more is slower and closer to the exact
            sum).
        max_log_snr: diffusion: keep only the bound's terms below this log-SNR (0: the global shape, which
            ranked one-class Fashion-MNIST better than the whole bound; docs/anomaly.md).
    """
    import numpy as np

    from genlab.files import atomic_path

    if data is None:
        raise ConfigError("genlab detect needs --data: the examples to score", "e.g. --data new_rows.csv")
    if not 50 <= percentile < 100:
        raise ConfigError(f"percentile = {percentile} must be in [50, 100)", "e.g. --percentile 99 (1% false alarms)")
    if report is not None and anomalies is None:
        raise ConfigError("--report measures the detector, which needs --anomalies",
                          "give --anomalies FILE (known anomalies), or leave --report out")
    model, record = _load_run(run)
    need(model, AnomalyScorer, run)
    options = {}
    if score is not None:
        if not isinstance(model, TableSampler):
            raise ConfigError(f"--score {score}: only a table model picks its score", "leave --score out")
        options["score"] = score
    for name, value in (("steps", steps), ("max_log_snr", max_log_snr)):
        if value is not None:
            if model.family != "diffusion":
                raise ConfigError(f"--{name.replace('_', '-')} applies to diffusion models; this is a {model.family} "
                                  "model", f"leave --{name.replace('_', '-')} out")
            options[name] = value
    names, examples = _detect_examples(model, Path(data))
    reference = _detect_reference(model, _run_data(record, "genlab detect"))
    threshold = float(np.percentile(_scores(model, reference, options), percentile))
    scores = _scores(model, examples, options)
    truth = None
    if anomalies is not None:
        odd_names, odd = _detect_examples(model, Path(anomalies))
        names = names + [f"{anomalies}: {n}" for n in odd_names]
        scores = np.concatenate([scores, _scores(model, odd, options)])
        truth = np.r_[np.zeros(len(names) - len(odd_names), int), np.ones(len(odd_names), int)]
    flagged = scores > threshold
    with atomic_path(Path(out)) as partial, partial.open("w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["example", "score", "anomalous"] + (["truth"] if truth is not None else []))
        writer.writerows([name, f"{score:.6g}", int(flag)] + ([int(truth[i])] if truth is not None else [])
                         for i, (name, score, flag) in enumerate(zip(names, scores, flagged, strict=True)))
    critic = model.family == "gan" or getattr(model.config, "kind", None) == "ctgan"
    units = "(the critic's units)" if critic else "bits/dim"
    print(f"threshold {threshold:.4g} {units}: the {percentile:g}th percentile of {len(reference):,} held-out "
          f"examples (expected false alarms {100 - percentile:g}%)\nflagged {int(flagged.sum()):,} of {len(scores):,} "
          f"examples; wrote {out}")
    if truth is not None:
        _detect_report(model, run, scores, truth, threshold, percentile, report or str(Path(out).with_suffix(".html")))


def _detect_report(model: Any, run: str, scores: Any, truth: Any, threshold: float, percentile: float,
                   path: str) -> None:
    from genlab.evaluation.report import figure_html, png_data_uri, score_histograms, table_html, write_page
    from genlab.metrics.anomaly import summary

    result = summary(scores, truth, threshold)
    print(f"AUROC {result['auroc']:.4f}, average precision {result['average_precision']:.4f} over "
          f"{result['normal']:,} normal and {result['anomalous']:,} anomalous examples; at the threshold "
          f"{result['false_alarm_rate']:.1%} false alarms, {result['detection_rate']:.1%} of anomalies detected")
    figure = score_histograms(scores[truth == 0], scores[truth == 1], threshold, f"{model.family} anomaly scores")
    write_page(path, f"genlab detect: {run}", [
        ("Detection", table_html([{**result, "threshold": threshold, "threshold percentile": percentile}])),
        ("Scores", figure_html(png_data_uri(figure), "scores of the normal and the anomalous examples; the line is "
                                                     "the threshold chosen without labels")),
    ])
    print(f"wrote {path}")


def _scores(model: Any, examples: Any, options: dict[str, Any], batch: int = 256):
    import numpy as np

    if isinstance(examples, torch.Tensor):
        return np.concatenate([model.anomaly_score(examples[i : i + batch], **options).numpy()
                               for i in range(0, len(examples), batch)])
    if isinstance(examples, list):
        return model.anomaly_score(examples, **options).numpy()
    return np.concatenate([model.anomaly_score(examples.iloc[i : i + 4096], **options).numpy()
                           for i in range(0, len(examples), 4096)])


def _detect_examples(model: Any, path: Path) -> tuple[list, Any]:
    """(names, examples) of --data in the form the model scores, in file order."""
    import numpy as np

    from genlab.data import load_image
    from genlab.data.images import IMAGE_SUFFIXES
    from genlab.data.tables import TABLE_SUFFIXES, read_table

    if not path.exists():
        raise ConfigError(f"--data {path} does not exist", "pass a table, a text file or images to score")
    if isinstance(model, TableSampler):
        if path.suffix.lower() not in TABLE_SUFFIXES:
            raise ConfigError(f"--data {path} is not a table", "a table model scores .csv, .tsv or .parquet rows")
        frame = read_table(path)
        return [f"row {i + 1}" for i in range(len(frame))], frame
    if isinstance(model, TextGenerator):
        if path.is_dir() or path.suffix.lower() in (*IMAGE_SUFFIXES, *TABLE_SUFFIXES):
            raise ConfigError(f"--data {path} is not a text file", "a language model scores lines of a text file")
        lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
        if not lines:
            raise ConfigError(f"{path} holds no lines of text", "pass a text file, one example a line")
        return [f"line {i + 1}" for i in range(len(lines))], lines
    files = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES) if path.is_dir() else [path]
    if not files:
        raise ConfigError(f"no images under {path}", "an image model scores image files")
    channels, size = model.config.channels, tuple(model.config.image_size)
    return [str(f) for f in files], torch.from_numpy(np.stack([load_image(f, channels, size) for f in files]))


def _detect_reference(model: Any, dataset: Any) -> Any:
    """The run's held-out examples, scored to place the threshold: test rows, test lines, test images."""
    if isinstance(model, TableSampler):
        return dataset.test
    if isinstance(model, TextGenerator):
        return [line for line in dataset.test.splitlines() if line.strip()][:2000]
    return torch.from_numpy(dataset.test_x[:2000])


def _sample_rows(model: Any, n: int, out: str, seed: int, where: str | None) -> None:
    from genlab.files import atomic_path

    path = Path(out)
    if path.suffix.lower() in (".png", ".jpg", ".jpeg", ".gif", ".webp"):
        raise ConfigError(f"--out {out}: a table model writes .csv or .parquet files, not images",
                          "e.g. --out synthetic.csv")
    rows = model.sample_rows(n, generator=torch.Generator().manual_seed(seed), where=where)
    with atomic_path(path) as partial:
        if path.suffix.lower() == ".parquet":
            rows.to_parquet(partial, index=False)
        else:
            rows.to_csv(partial, index=False)
    met = f", each meeting {where} ({model.acceptance:.1%} of the rows drawn did)" if where else ""
    print(f"wrote {n:,} rows of {len(rows.columns)} columns to {path}{met}")


def edit(run: str, image: str | None = None, out: str = "edited.png", mask: str | None = None,
         gap: str | None = None, morph: str | None = None, prompt: str | None = None, label: str | None = None,
         strength: float | None = None, guidance: float | None = None, sampler: str | None = None,
         steps: int | None = None, resample: int | None = None, n: int = 4, seed: int = 0,
         vocoder: str | None = None) -> None:
    """Edit an image or a clip of sound with a diffusion model: image-to-image, inpainting, or a morph.

    Images: writes one grid, the input (with the masked area greyed when there is a mask), then n variations.
    Sound (a model trained on sound edits its spectrogram): writes a folder of WAV files, input.wav (the clip as
    the model sees it, through the same inverse) and the results, with the grid of their spectrograms.

    Args:
        run: a diffusion run folder or model folder.
        image: an image file (resized to the model's size), a sound file for a sound model (made into a clip as
            its training clips were), test:INDEX or a class name (a test example).
        out: the PNG file to write (a folder for a sound model; default edited/ then).
        mask: an image file, white where new pixels are to be generated and black where the input stays.
        gap: sound: START:END in seconds, the stretch of the clip to generate anew (inpainting, e.g. 0.3:0.5).
        morph: image-to-image from blends of --image and this second example (same forms as --image): n frames
            going from the first to the second, each denoised from the same noise at --strength (Riffusion's
            img2img morph, between two inputs).
        prompt: for text-conditioned models: what the result should show.
        label: for class-conditional models: the class of the result (image-to-image toward another class is a
            style transfer: a clip of one instrument or voice made into another's).
        strength: image-to-image: how much to change, in (0, 1]: 0.3 keeps shapes, 0.8 keeps the layout only
            (default 0.6).
        guidance: classifier-free guidance scale (default the model's).
        sampler: ddim or ddpm (inpainting's default: ddpm), or dpm++ for image-to-image.
        steps: network evaluations of a full denoising (image-to-image runs strength x steps of them).
        resample: inpainting: passes per step (RePaint's resampling; 1 is plain replacement; default 3).
        n: how many variations (morph: frames), each from its own noise (morph: one noise for all).
        seed: the seed of the random numbers.
        vocoder: sound: a vocoder run that voices the results (default Griffin-Lim).
    """
    from genlab.data import load_image
    from genlab.models.base import check_count

    if not image:
        raise ConfigError("genlab edit needs --image", "give an image file, test:INDEX or a class name")
    model, record = _load_run(run)
    need(model, Editor, run)
    check_count(n, "variations")
    sound = getattr(model.config, "sound", "")
    if sum(x is not None for x in (mask, gap, morph)) > 1:
        raise ConfigError("--mask, --gap and --morph are different edits", "give one of them")
    if gap is not None and not sound:
        raise ConfigError("--gap edits a stretch of a clip of sound, and this model makes images",
                          "use --mask FILE to inpaint an image")
    options = _options(model, {"strength": strength, "guidance": guidance, "sampler": sampler, "steps": steps,
                               "resample": resample}, editing=True)
    example = _clip_spec if sound else _image_spec
    x, test_label = example(image, model, record)
    source = (x.float() / 255)[None].expand(n, -1, -1, -1)
    m = None
    if mask:
        m = torch.from_numpy(load_image(mask, 1, tuple(model.config.image_size))).float()[None] / 255
        m = (m > 0.5).float()
        if m.sum() == 0:
            raise ConfigError(
                f"the mask {mask} is all black: nothing to inpaint", "paint white where new pixels should go"
            )
    elif gap is not None:
        m = _gap_mask(gap, model)
    if label is None and test_label is not None and model.config.condition == "class":
        label = test_label
    if morph is not None:
        y, _ = example(morph, model, record)
        blend = torch.linspace(0, 1, n)[:, None, None, None]
        starts = (1 - blend) * (x.float() / 255) + blend * (y.float() / 255)
        result = torch.cat([model.edit(start[None], labels=label, prompt=prompt, options=options,
                                       generator=torch.Generator().manual_seed(seed)) for start in starts])
        shown, what, names = torch.stack([x, y]).float() / 255, f"a morph at strength {options.strength}", \
            ["input", "morph-target", *(f"morph-{i:03d}" for i in range(n))]
    else:
        result = model.edit(source, mask=m, labels=label, prompt=prompt, options=options,
                            generator=torch.Generator().manual_seed(seed))
        shown = source[:1] if m is None or sound else source[:1] * (1 - m) + 0.5 * m
        what = "inpainted" if m is not None else f"image-to-image at strength {options.strength}"
        names = ["input", *(f"edited-{i:03d}" for i in range(n))]
    if sound:
        folder = Path("edited" if out == "edited.png" else out)
        _save_sounds(model, torch.cat([shown, result]), folder, len(shown) + n, seed, vocoder, names)
        print(f"({what}: the input first, then the results)")
        return
    print(f"wrote the input and {n} results ({what}) to "
          f"{_save_grid(torch.cat([shown, result]), out, nrow=len(shown) + n)}")


def _clip_spec(spec: str, model, record: dict | None):
    """A sound model's input: the spectrogram image (uint8 (1, n_mels, T)) of a sound file made into a clip as the
    training clips were, or of a test example (`test:INDEX`, a class name); and its test label (or None)."""
    from genlab.data.audio import AUDIO_SUFFIXES, load_clip
    from genlab.data.spectrogram import MelSpectrogram, read_sound_config, to_image

    path = Path(spec)
    if path.suffix.lower() in AUDIO_SUFFIXES:
        if not path.is_file():
            raise ConfigError(f"sound file {spec} does not exist", "check the path")
        settings, samples = read_sound_config(model.config.sound)
        clip = load_clip(path, settings.sample_rate, samples)
        with torch.no_grad():
            return to_image(MelSpectrogram(settings)(torch.from_numpy(clip)[None]), settings)[0], None
    if path.is_file():
        raise ConfigError(f"{spec} is not a sound file, and this model edits sound",
                          f"give a {', '.join(AUDIO_SUFFIXES)} file, test:INDEX or a class name")
    return _image_spec(spec, model, record)


def _gap_mask(gap: str, model) -> torch.Tensor:
    """The inpainting mask (1, 1, n_mels, T) of the frames whose centres lie in the --gap START:END seconds."""
    from genlab.data.spectrogram import read_sound_config

    settings, samples = read_sound_config(model.config.sound)
    seconds = samples / settings.sample_rate
    try:
        start, end = (float(v) for v in gap.split(":"))
    except ValueError:
        raise ConfigError(f"--gap {gap!r} is not START:END in seconds", "e.g. --gap 0.3:0.5") from None
    centres = torch.arange(settings.frames(samples)) * settings.hop / settings.sample_rate
    columns = (centres >= start) & (centres <= end)
    if not 0 <= start < end or not columns.any():
        raise ConfigError(f"--gap {gap}: no spectrogram frame of the {seconds:.2f} s clip lies in it",
                          f"give START < END within 0:{seconds:.2f}")
    return columns.float().expand(1, 1, settings.n_mels, -1).clone()


def _image_spec(spec: str, model, record: dict | None, shape: tuple[int, int, int] | None = None):
    """An image (uint8 (C, H, W)) and its test label (or None) from a file path, `test:INDEX`, or a class name (the
    first test image of that class). Files are converted and resized to `shape` (default the model's images)."""
    from genlab.data import load_image

    c, h, w = shape or (model.config.channels, *model.config.image_size)
    if Path(spec).is_file():
        return torch.from_numpy(load_image(spec, c, (h, w))), None
    if not spec.startswith("test:") and Path(spec).suffix.lower() in (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"):
        raise ConfigError(f"image file {spec} does not exist", "check the path")
    data = _run_data(record, f"--image {spec!r}")
    if spec.startswith("test:"):
        index = spec.split(":", 1)[1]
        if not index.isdigit() or not 0 <= int(index) < len(data.test_x):
            raise ConfigError(f"{spec}: the test split has {len(data.test_x)} images", "use test:0 .. test:N-1")
        index = int(index)
    elif spec in data.classes:
        index = int((torch.from_numpy(data.test_y) == data.classes.index(spec)).nonzero()[0])
    else:
        raise ConfigError(f"{spec!r} is not an image file, test:INDEX or a class name",
                          f"classes are: {', '.join(data.classes) or '(unlabelled data)'}")
    return torch.from_numpy(data.test_x[index]), int(data.test_y[index])


def reconstruct(run: str, image: str | None = None, n: int = 16, out: str = "reconstructions.png") -> None:
    """Encode and decode images: the top row holds the inputs, the row below their reconstructions.

    Args:
        run: a run folder or a model folder.
        image: comma-separated image files, test:INDEX or class names; default the first n test images.
        n: how many test images when --image is not given.
        out: the PNG file to write.
    """
    from genlab.models.base import check_count

    model, record = _load_run(run)
    need(model, Reconstructor, run)
    if image:
        pairs = [_image_spec(s.strip(), model, record) for s in image.split(",")]
        x = torch.stack([p[0] for p in pairs])
        labels = [p[1] for p in pairs]
    else:
        check_count(n)
        data = _run_data(record, "reconstruct")
        x, labels = torch.from_numpy(data.test_x[:n]), data.test_y[:n].tolist()
    conditional = model.config.condition == "class"
    if conditional and any(label is None for label in labels):
        raise ConfigError("a class-conditional model needs the images' classes; an image file has none",
                          "use test:INDEX or class names with --image")
    recon = model.reconstruct(x, labels if conditional else None)
    grid = torch.cat([x.float() / 255, recon])
    print(f"wrote inputs and reconstructions to {_save_grid(grid, out, nrow=len(x))}")


def interpolate(run: str, a: str = "test:0", b: str = "test:1", steps: int = 9, out: str = "interpolation.png") -> None:
    """Walk the latent line between two images; with an odd --steps the middle one is their midpoint.

    Args:
        run: a run folder or a model folder.
        a: the first image: a file, test:INDEX, or a class name such as Sneaker.
        b: the second image, in the same forms.
        steps: images along the line, both ends included.
        out: the PNG file to write.
    """
    model, record = _load_run(run)
    need(model, Reconstructor, run)
    (xa, la), (xb, lb) = _image_spec(a, model, record), _image_spec(b, model, record)
    labels = [la, lb] if model.config.condition == "class" else None
    if labels is not None and None in labels:
        raise ConfigError("a class-conditional model needs both images' classes; an image file has none",
                          "use test:INDEX or class names for --a and --b")
    path = _save_grid(model.interpolate(xa, xb, steps, labels), out, nrow=steps)
    print(f"wrote {steps} images from {a} to {b} to {path} (the middle one is the latent midpoint)")


def translate(run: str, image: str | None = None, n: int = 8, out: str = "translated.png") -> None:
    """Translate images with a pix2pix model: sketches to images, or low-resolution images to full size.

    Writes one grid: the inputs (top row, shown at full size), their translations below, and, for
    test images, the originals in a third row.

    Args:
        run: a pix2pix run folder or model folder.
        image: comma-separated inputs: image files (a sketch drawn dark on light, or a low-resolution
            image; resized to what the model takes) or test:INDEX (a test image through the task transform).
            Default: the first n test images.
        n: how many test images when --image is not given.
        out: the PNG file to write.
    """
    from genlab.data.paired import upscale
    from genlab.evaluation.report import translation_grid
    from genlab.models.base import check_count

    model, record = _load_run(run)
    need(model, Translator, run)
    if not image:
        check_count(n)
    specs = [s.strip() for s in image.split(",")] if image else [f"test:{i}" for i in range(n)]
    files = [s for s in specs if Path(s).is_file()]
    if files and len(files) < len(specs):
        raise ConfigError("mix of image files and test images in --image", "give only files or only test:INDEX")
    if not files:
        data = _run_data(record, "translate")
        index = [int(s[5:]) if s.startswith("test:") and s[5:].isdigit() else -1 for s in specs]
        for spec, i in zip(specs, index, strict=True):
            if not 0 <= i < len(data.test_x):
                raise ConfigError(f"--image {spec!r} is neither an image file nor a test image",
                                  f"give a path to an image, or test:0 .. test:{len(data.test_x) - 1}")
        grid, nrow = translation_grid(model, data.test_x[index])
        print(f"wrote inputs, translations and test images to {_save_grid(grid, out, nrow=nrow)}")
        return
    c, h, w = model.input_shape
    condition = torch.stack([_image_spec(f, model, record, (c, h, w))[0] for f in files]).float() / 255
    condition, note = model.prepare_condition(condition)
    if note:
        print(f"note: {note}")
    result = model.translate(condition)
    shown = upscale(condition, tuple(result.shape[-2:])) if condition.shape[-2:] != result.shape[-2:] else condition
    grid = torch.cat([shown.expand(-1, result.shape[1], -1, -1), result])
    print(f"wrote inputs (top) and translations (bottom) to {_save_grid(grid, out, nrow=len(files))}")


def _typed_lines():
    """Lines typed at a `> ` prompt, until an empty line or Ctrl-D."""
    while True:
        try:
            text = input("> ")
        except EOFError:
            return
        if not text:
            return
        yield text


def generate(run: str, prompt: str = "", max_new_tokens: int = 200, temperature: float = 0.8, top_k: int | None = None,
             top_p: float | None = None, repetition_penalty: float = 1.0, stop: list[str] | str | None = None,
             seed: int | None = None, interactive: bool = False) -> None:
    """Continue a prompt with a trained language model, printing the text as it is generated.

    Args:
        run: a run folder (runs/NAME) or a model folder of a language model.
        prompt: the text to continue (default: start from a newline).
        max_new_tokens: at most this many new tokens.
        temperature: 0 is greedy; lower is more conservative, higher more varied.
        top_k: sample among the k most likely tokens only.
        top_p: sample among the most likely tokens holding this much probability (nucleus sampling).
        repetition_penalty: > 1 discourages repeating tokens already in the text (1.1-1.3 is usual).
        stop: strings that end the generation (not printed), as a list: --stop '[".", "\\n\\n"]', or one:
            --stop '\\n\\n'; `\\n` and `\\t` stand for a newline and a tab.
        seed: makes the output reproducible (default: different every time).
        interactive: a prompt loop: type a prompt, see it continued; an empty line or Ctrl-D ends it.
    """
    from genlab.models.lm.generation import check_options

    model, _ = _load_run(run, record=False)
    need(model, TextGenerator, run)
    check_options(max_new_tokens, temperature, top_k, top_p, repetition_penalty)  # before the first token
    stops = [stop] if isinstance(stop, str) else list(stop or [])
    stop = [s.replace("\\n", "\n").replace("\\t", "\t") for s in stops]
    options = {"max_new_tokens": max_new_tokens, "temperature": temperature, "top_k": top_k, "top_p": top_p,
               "repetition_penalty": repetition_penalty, "stop": stop, "seed": seed}

    def stream(text: str) -> None:
        sys.stdout.write(text)
        for piece in model.generate(text, **options):
            sys.stdout.write(piece)
            sys.stdout.flush()
        sys.stdout.write("\n")

    if not interactive:
        stream(prompt)
        return
    print(f"{model.family} model from {run}: type a prompt and press Enter; an empty line or Ctrl-D quits.")
    for text in _typed_lines():
        stream(text)


def chat(run: str, system: str = "", message: list[str] | None = None, max_new_tokens: int = 200,
         temperature: float = 0.7, top_k: int | None = None, top_p: float | None = None,
         repetition_penalty: float = 1.0, seed: int | None = None) -> None:
    """A conversation with an instruction-tuned language model in the terminal, each reply streamed.

    Type a message and press Enter; the history is kept (and cut from its oldest turns when it outgrows
    the model's context, docs/chat.md); an empty line or Ctrl-D ends it, /reset starts afresh. With
    --message the conversation is scripted: each message is sent in turn and the replies printed.

    Args:
        run: a run folder (runs/NAME) or model folder of a model instruction-tuned with genlab finetune.
        system: a system message the conversation starts with.
        message: messages to send in turn instead of reading them from the terminal (repeatable).
        max_new_tokens: at most this many tokens per reply.
        temperature: 0 is greedy; lower is more conservative, higher more varied.
        top_k: sample among the k most likely tokens only.
        top_p: sample among the most likely tokens holding this much probability (nucleus sampling).
        repetition_penalty: > 1 discourages repeating tokens already in the text (1.1-1.3 is usual).
        seed: makes the replies reproducible (default: different every time).
    """
    from genlab.models.lm.generation import check_options

    model, _ = _load_run(run, record=False)
    need(model, Chat, run)
    model.require_chat()
    check_options(max_new_tokens, temperature, top_k, top_p, repetition_penalty)
    start = [{"role": "system", "content": system}] if system else []
    history = list(start)
    options = {"max_new_tokens": max_new_tokens, "temperature": temperature, "top_k": top_k, "top_p": top_p,
               "repetition_penalty": repetition_penalty, "seed": seed}

    def reply(text: str) -> None:
        history.append({"role": "user", "content": text})
        pieces = []
        for piece in model.chat(history, **options):
            pieces.append(piece)
            sys.stdout.write(piece)
            sys.stdout.flush()
        sys.stdout.write("\n")
        history.append({"role": "assistant", "content": "".join(pieces)})

    if message:
        for text in message:
            print(f"> {text}")
            reply(text)
        return
    print(f"{model.family} chat model from {run}: type a message and press Enter; /reset starts afresh, "
          "an empty line or Ctrl-D quits.")
    for text in _typed_lines():
        if text.strip() == "/reset":
            history[:] = start
            continue
        reply(text)


def _stylizer(model: str):
    """The style model of a run or model folder; a folder of the AdaIN models genlab style-train wrote before
    style transfer became a family is refused with how to train one now."""
    from genlab.models.base import Stylizer

    config = Path(model) / "config.json"
    try:
        legacy = config.is_file() and json.loads(config.read_text()).get("kind") == "adain-style"
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        legacy = False  # genlab.load names what is wrong with it
    if legacy:
        raise GenlabError(f"{model} holds an AdaIN model written by genlab style-train, which this genlab no longer "
                          "reads: style models are now a family, saved and loaded as every family's are",
                          "train one again (minutes): genlab train style --data PHOTOS --model.styles STYLES "
                          "--out runs/style, then --model runs/style")
    loaded, _ = _load_run(model, record=False)
    need(loaded, Stylizer, model)
    return loaded


def style(content: str, style: str | None = None, out: str = "styled.png", model: str | None = None,
          method: str | None = None, size: int = 256, steps: int = 150, style_weight: float = 100.0,
          temperature: float = 1.0, alpha: float = 1.0) -> None:
    """Restyle a photo after a style image: with --model, one pass of a trained style model; without, Gatys
    optimisation (no model).

    Both read EfficientNet-Lite0 features with Wang et al.'s softmax smoothing (docs/style-transfer.md).

    Args:
        content: the photo to restyle (PNG, JPEG or another image file).
        style: the style image: a painting or a texture.
        out: the PNG file to write.
        model: a style model (genlab train style --data PHOTOS --model.styles STYLES): its run or model folder.
        method: adain (the model's one pass, well under a second; the default with --model) or gatys (optimises
            the pixels, about 20 s at 256 px on one core; the default without).
        size: the photo's short side in pixels; the style image is brought to the same scale.
        steps: gatys: optimiser steps.
        style_weight: gatys: style against content (both relative errors).
        temperature: gatys: the softmax smoothing's temperature in feature standard deviations (0: off).
        alpha: adain: how much style, from 0 (the photo) to 1.
    """
    import time

    import numpy as np
    from PIL import Image

    from genlab.files import atomic_path
    from genlab.models.style import GatysOptions, gatys, read_images, resize_short_side

    if style is None:
        raise ConfigError("genlab style needs --style: the image whose style to take", "e.g. --style painting.jpg")
    method = method or ("adain" if model else "gatys")
    if method not in ("gatys", "adain"):
        raise ConfigError(f"--method {method!r} is not a style-transfer method", "use gatys or adain")
    if method == "adain" and model is None:
        raise ConfigError("--method adain needs --model: a style model's run folder",
                          "train one (genlab train style --data PHOTOS --model.styles STYLES) or use --method gatys")
    if method == "gatys" and model is not None:
        raise ConfigError("--model is a trained style model, and Gatys optimisation uses none",
                          "drop --model, or drop --method gatys to use the model")
    if size < 16:
        raise ConfigError(f"--size {size} is too small for the features", "use --size 64 or more (256 by default)")
    stylizer = _stylizer(model) if method == "adain" else None
    photo = resize_short_side(read_images(content, "content")[0], size, "content")
    look = resize_short_side(read_images(style, "style")[0], size, "style")
    start = time.perf_counter()
    if stylizer is not None:
        result = stylizer.stylize(photo, look, alpha=alpha)
    else:
        result = gatys(photo, look, GatysOptions(steps=steps, style_weight=style_weight, temperature=temperature))
    seconds = time.perf_counter() - start
    path = Path(out)
    with atomic_path(path) as partial:
        array = (result[0].cpu().permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        Image.fromarray(array).save(partial, format="PNG")
    print(f"wrote {path} ({method}, {array.shape[0]}x{array.shape[1]}, {seconds:.2f} s)")
