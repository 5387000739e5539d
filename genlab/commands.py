"""The verbs behind the CLI. Each is a typed function; its docstring is its --help text."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from genlab.data import ImageData, list_datasets, load_data, load_image
from genlab.errors import ConfigError, GenlabError
from genlab.report import save_grid


def _load_run(run: str):
    """The model of a run folder (or a model folder), and the run's config when there is one."""
    from genlab.engine import read_run_config
    from genlab.persist import load

    path = Path(run)
    model = load(path)
    record = read_run_config(path) if (path / "config.yaml").exists() else None
    return model, record


def _run_data(record: dict | None, what: str) -> ImageData:
    if record is None:
        raise GenlabError(f"{what} needs the run's data, but a bare model folder has no config.yaml",
                          "pass the run folder (runs/NAME) or give image files with --image")
    return load_data(record["data"])


def data_list() -> None:
    """List the registered datasets, where each resolves on this machine, and whether it is present."""
    rows = list_datasets()
    width = max(len(r["name"]) for r in rows)
    for r in rows:
        print(f"{r['name']:<{width}}  {r['kind']:<5}  present: {r['present']:<3}  {r['where']}")
        print(f"{'':<{width}}  {r['description']}")
        if r["present"] == "no":
            print(f"{'':<{width}}  install: {r['install']}")


def data_check(data: str, max_bad_fraction: float = 0.05, as_json: bool = False) -> None:
    """Load a dataset or path and report counts, shapes, classes and bad files.

    Args:
        data: a registered name (see `genlab data list`) or a path to images, text or a CSV file.
        max_bad_fraction: stop with an error when more than this fraction of files is unreadable.
        as_json: print the report as JSON.
    """
    dataset = load_data(data, max_bad_fraction=max_bad_fraction)
    print(json.dumps(dataset.report.to_dict(), indent=1) if as_json else dataset.report.summary())


def reference(data: str, retrain: bool = False) -> None:
    """Train (once) and cache the reference classifier of an image dataset: the feature space of FD-genlab.

    Args:
        data: a registered image dataset or a folder of images with class subfolders.
        retrain: train again even when a cached classifier matches the data.
    """
    from genlab.metrics.reference import reference_classifier

    dataset = load_data(data)
    if dataset.kind != "image":
        raise ConfigError(f"{data} is {dataset.kind} data; reference classifiers are for images",
                          "pass an image dataset such as fashion-mnist")
    classifier = reference_classifier(dataset, retrain=retrain)
    state = "trained" if classifier.trained else "cached"
    print(f"reference classifier for {dataset.name} ({state}): test accuracy {classifier.accuracy:.2%} on "
          f"{classifier.meta['test_examples']:,} images, {classifier.feature_dim}-d features\n  {classifier.folder}")


def sample(run: str, n: int = 64, out: str = "samples.png", seed: int = 0, label: str | None = None,
           temperature: float = 1.0, nrow: int | None = None) -> None:
    """Draw n samples from a trained image model and save them as one PNG grid.

    Args:
        run: a run folder (runs/NAME) or a model folder.
        n: how many images.
        out: the PNG file to write.
        seed: the seed of the random numbers; the same seed gives the same images.
        label: for class-conditional models, a class name or index (default: cycle through classes).
        temperature: scale of the latent noise (VAE); below 1 trades variety for cleaner images.
        nrow: images per row of the grid.
    """
    model, _ = _load_run(run)
    if not hasattr(model, "sample"):
        raise ConfigError(f"a {model.family} model does not sample images", "use genlab generate for language models")
    images = model.sample(n, labels=label, generator=torch.Generator().manual_seed(seed), temperature=temperature)
    print(f"wrote {n} samples to {save_grid(images, out, nrow)}")


def _image_spec(spec: str, model, record: dict | None) -> tuple[torch.Tensor, int | None]:
    """An image from a file path, `test:INDEX`, or a class name (the first test image of that class)."""
    config = model.config
    if Path(spec).is_file():
        array = load_image(spec, config.channels, tuple(config.image_size))
        return torch.from_numpy(array), None
    data = _run_data(record, f"--a/--b/--image {spec!r}")
    if spec.startswith("test:"):
        index = int(spec.split(":", 1)[1])
        if not 0 <= index < len(data.test_x):
            raise ConfigError(f"{spec}: the test split has {len(data.test_x)} images", "use test:0 .. test:N-1")
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
    model, record = _load_run(run)
    if image:
        pairs = [_image_spec(s.strip(), model, record) for s in image.split(",")]
        x = torch.stack([p[0] for p in pairs])
        labels = [p[1] for p in pairs]
    else:
        data = _run_data(record, "reconstruct")
        x, labels = torch.from_numpy(data.test_x[:n]), data.test_y[:n].tolist()
    labels = model.resolve_labels(labels, len(x)) if model.config.condition == "class" else None
    recon = model.reconstruct(x, labels)
    grid = torch.cat([x.float() / 255, recon])
    print(f"wrote inputs and reconstructions to {save_grid(grid, out, nrow=len(x))}")


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
    (xa, la), (xb, lb) = _image_spec(a, model, record), _image_spec(b, model, record)
    labels = [la, lb] if model.config.condition == "class" else None
    path = save_grid(model.interpolate(xa, xb, steps, labels), out, nrow=steps)
    print(f"wrote {steps} images from {a} to {b} to {path} (the middle one is the latent midpoint)")
