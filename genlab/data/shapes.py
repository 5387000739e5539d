"""Shapes: a procedural world of coloured shapes whose every caption can be checked.

A scene is 1-3 objects on black, each a shape (circle, square, triangle), a colour from a palette of six
saturated colours, a size (small, large) and a position. Text-to-image models are judged on whether a sample
shows what its prompt asked; here the attributes are exact and an analytic detector
(genlab.metrics.shapes) reads them back from pixels, so "all requested attributes correct" is a measurement,
not an opinion. Pairs of (colour, shape) can be held out of training entirely to test composition.

Geometry: each object fills the square box of half-side r (its "radius") centred on (x, y): a circle of
radius r, a square of side 2r, an upright triangle of base and height 2r. x and y are pixels from the image's
top-left corner (pixel i covers [i, i + 1)), on a quarter-pixel grid. Boxes never come closer than a margin
of size/16 pixels, so objects of one colour never touch and every pair is apart along at least one axis.
Scenes are drawn at 4x and box-filtered down, so an edge pixel is exactly coverage x colour on black.

Layout (Hugging Face ImageFolder's): OUT/{train,test,heldout}/NNNNNN.png with a metadata.jsonl in each folder
({"file_name", "text": the first caption, "captions", "objects"}), and OUT/shapes.json with the settings.
heldout/ holds scenes with at least one held-out pair, which no train or test scene contains.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from genlab.data.base import DataReport, ImageData
from genlab.data.images import load_image
from genlab.errors import ConfigError, DataError
from genlab.files import atomic_write

SHAPES = ("circle", "square", "triangle")
# the corners of the RGB cube but black and white: 45 degrees or more apart as directions from black
PALETTE = {
    "red": (255, 0, 0),
    "green": (0, 255, 0),
    "blue": (0, 0, 255),
    "yellow": (255, 255, 0),
    "magenta": (255, 0, 255),
    "cyan": (0, 255, 255),
}
SIZES = {"small": 0.1, "large": 0.18}  # radius as a fraction of the canvas: 3.25 and 5.75 px at 32 px
RELATIONS = {"left of": "to the left of", "right of": "to the right of", "above": "above", "below": "below"}
CLASSES = ("one object", "two objects", "three objects")
SPLITS = ("train", "test", "heldout")
SCALE = 4  # drawn at 4x, then each 4x4 block averaged


def radii(size: int) -> dict[str, float]:
    """Each size's radius in pixels on a `size`-pixel canvas, on the quarter-pixel grid the renderer draws."""
    return {name: round(SCALE * fraction * size) / SCALE for name, fraction in SIZES.items()}


def margin(size: int) -> float:
    """The least gap between two objects' boxes, and between a box and the canvas edge: 2 px at 32 px."""
    return size / 16


def relation(a: dict, b: dict, clear: float = 1.5) -> str | None:
    """Where `a` is relative to `b` ("left of", "right of", "above", "below") along the dominant axis of their
    centres' difference, or None when that axis does not dominate the other by the factor `clear`."""
    dx, dy = a["x"] - b["x"], a["y"] - b["y"]
    if abs(dx) >= clear * abs(dy) and dx != 0:
        return "left of" if dx < 0 else "right of"
    if abs(dy) >= clear * abs(dx) and dy != 0:
        return "above" if dy < 0 else "below"  # y grows downwards
    return None


def phrase(obj: dict, size: bool = True, colour: bool = True) -> str:
    """'a small red circle', without the size or the colour when asked."""
    return " ".join(["a", *([obj["size"]] if size else []), *([obj["colour"]] if colour else []), obj["shape"]])


def sentence(
    objects: list[dict], size: bool = True, colour: bool = True, relations: bool = True, long: bool = False
) -> str:
    """The objects in order, each pair of neighbours joined by their relation where it is clear (`long`: "to the
    left of"), else by "next to" (two objects) or a list's "," and "and"."""
    text = phrase(objects[0], size, colour)
    for i in range(1, len(objects)):
        word = relation(objects[i - 1], objects[i]) if relations else None
        if word is not None:
            joint = f" {RELATIONS[word] if long else word} "
        elif relations and len(objects) == 2:
            joint = " next to "
        else:
            joint = " and " if i == len(objects) - 1 else ", "
        text += joint + phrase(objects[i], size, colour)
    return text


def mentions(objects: list[dict]) -> list[tuple[str, tuple[int, ...]]]:
    """Every caption of a scene, the fullest first, each with the order in which it names the objects (indices
    into `objects`); all of them true of its positions."""
    forward, backward = tuple(range(len(objects))), tuple(reversed(range(len(objects))))
    texts = [
        (sentence(objects), forward),  # a small red circle left of a large blue square
        (sentence(objects[::-1], long=True), backward),  # a large blue square to the right of a small red circle
        (sentence(objects, relations=False), forward),  # a small red circle and a large blue square
        (sentence(objects, size=False), forward),  # a red circle left of a blue square
        (sentence(objects[::-1], colour=False, long=True), backward),  # a large square to the right of a small circle
    ]
    return list(dict(texts).items())  # one object's templates coincide: keep each text once


def captions(objects: list[dict]) -> list[str]:
    """Every caption of a scene, the fullest first; all of them true of its positions."""
    return [text for text, _ in mentions(objects)]


def caption_layouts(objects: list[dict], size: int) -> list[list[tuple[float, float, float]]]:
    """For each caption of `captions(objects)`, the boxes of the objects in the order it names them: (x, y, r),
    centre and half-side as fractions of the canvas (what a layout-grounded model trains on)."""
    radius = radii(size)
    boxes = [(o["x"] / size, o["y"] / size, radius[o["size"]] / size) for o in objects]
    return [[boxes[i] for i in order] for _, order in mentions(objects)]


def render(objects: list[dict], size: int, palette: dict[str, tuple[int, int, int]] = PALETTE) -> Image.Image:
    """The scene as a `size` x `size` RGB image, anti-aliased by drawing at 4x and averaging 4x4 blocks."""
    canvas = Image.new("RGB", (SCALE * size, SCALE * size))
    draw = ImageDraw.Draw(canvas)
    radius = radii(size)
    for obj in objects:
        x, y, r = (round(SCALE * v) for v in (obj["x"], obj["y"], radius[obj["size"]]))
        fill = tuple(palette[obj["colour"]])
        if obj["shape"] == "circle":
            draw.ellipse((x - r, y - r, x + r - 1, y + r - 1), fill=fill)  # Pillow's boxes include both ends
        elif obj["shape"] == "square":
            draw.rectangle((x - r, y - r, x + r - 1, y + r - 1), fill=fill)
        else:
            draw.polygon([(x, y - r), (x + r - 1, y + r - 1), (x - r, y + r - 1)], fill=fill)
    return canvas.reduce(SCALE)


def _positions(rng: np.random.Generator, rs: list[float], size: int) -> list[tuple[float, float]]:
    """Centres for boxes of radii `rs`, inside the canvas and pairwise apart by the margin on some axis; each
    box is redrawn until it fits, and the whole layout restarted when one cannot (three large boxes are tight)."""
    gap = margin(size)
    for _ in range(1000):
        placed: list[tuple[float, float]] = []
        for r in rs:
            low, high = int(np.ceil(SCALE * (r + gap))), int(SCALE * (size - r - gap))
            for _ in range(100):
                x, y = rng.integers(low, high + 1, size=2) / SCALE
                if all(max(abs(x - px), abs(y - py)) - r - pr >= gap for (px, py), pr in zip(placed, rs)):
                    placed.append((float(x), float(y)))
                    break
            else:
                break
        if len(placed) == len(rs):
            return placed
    raise DataError(f"could not place boxes of radii {rs} apart on a {size}-pixel canvas", "use a larger --size")


def _scene(
    rng: np.random.Generator,
    size: int,
    objects: tuple[int, int],
    pairs: list[tuple[str, str]],
    forced: list[tuple[str, str]],
) -> list[dict]:
    """One scene's objects, each (colour, shape) drawn from `pairs`; with `forced`, one object takes one of
    those pairs instead (a held-out scene)."""
    count = int(rng.integers(objects[0], objects[1] + 1))
    drawn = [pairs[i] for i in rng.integers(len(pairs), size=count)]
    if forced:
        drawn[int(rng.integers(count))] = forced[int(rng.integers(len(forced)))]
    sizes = [list(SIZES)[i] for i in rng.integers(len(SIZES), size=count)]
    radius = radii(size)
    centres = _positions(rng, [radius[s] for s in sizes], size)
    return [
        {"shape": shape, "colour": colour, "size": s, "x": x, "y": y}
        for (colour, shape), s, (x, y) in zip(drawn, sizes, centres)
    ]


def _check(
    n: int, size: int, objects: tuple[int, int], hold_out: tuple[tuple[str, str], ...], test_fraction: float
) -> None:
    if n < 1:
        raise ConfigError(f"n = {n}: a shapes set needs at least one scene", "e.g. --n 10000")
    if not 32 <= size <= 256:
        raise ConfigError(f"size = {size} pixels is outside 32-256", "small shapes are unreadable below 32: --size 32")
    if not 1 <= objects[0] <= objects[1] <= 3:
        raise ConfigError(f"objects = {objects[0]}-{objects[1]}: scenes hold 1 to 3 objects", "e.g. --objects 1-3")
    if not 0 <= test_fraction < 1:
        raise ConfigError(f"test_fraction = {test_fraction} is outside [0, 1)", "e.g. 0.1")
    for pair in hold_out:
        if len(pair) != 2 or pair[0] not in PALETTE or pair[1] not in SHAPES:
            raise ConfigError(
                f"held-out pair {' '.join(pair)!r} is not a colour and a shape",
                f"name pairs as 'COLOUR SHAPE' with colours {', '.join(PALETTE)} and shapes "
                f"{', '.join(SHAPES)}, e.g. --hold-out 'red circle,blue square'",
            )
    if len(set(hold_out)) == len(PALETTE) * len(SHAPES):
        raise ConfigError(
            "every (colour, shape) pair is held out: nothing is left to train on",
            "hold out a few pairs, e.g. --hold-out 'red circle,blue square'",
        )


def make_shapes(
    out: Path,
    n: int,
    size: int = 32,
    objects: tuple[int, int] = (1, 3),
    hold_out: tuple[tuple[str, str], ...] = (),
    test_fraction: float = 0.1,
    seed: int = 0,
) -> Path:
    """Write `n` scenes (a `test_fraction` of them to test/, the rest to train/) and, when pairs are held out, as
    many scenes as test/ has (at least one) holding them to heldout/. The same seed writes the same bytes.
    A folder made before is replaced; any other non-empty folder is refused."""
    hold_out = tuple(tuple(pair) for pair in hold_out)
    _check(n, size, objects, hold_out, test_fraction)
    out = Path(out)
    if (out / "shapes.json").exists():
        (out / "shapes.json").unlink()  # first: a replacement cut short must not pass for a complete set
        for split in SPLITS:
            shutil.rmtree(out / split, ignore_errors=True)
    elif out.exists() and any(out.iterdir()):
        raise DataError(f"{out} exists and is not a shapes folder", "choose a new --out, or empty that folder")
    rng = np.random.default_rng(seed)
    allowed = [(c, s) for c in PALETTE for s in SHAPES if (c, s) not in hold_out]
    n_test = round(n * test_fraction)
    counts = {"train": n - n_test, "test": n_test, "heldout": max(n_test, 1) if hold_out else 0}
    index = 0
    for split, count in counts.items():
        if split == "heldout" and not count:
            continue
        folder = out / split
        folder.mkdir(parents=True, exist_ok=True)
        lines = []
        for _ in range(count):
            scene = _scene(rng, size, objects, allowed, list(hold_out) if split == "heldout" else [])
            name = f"{index:06d}.png"
            render(scene, size).save(folder / name)
            texts = captions(scene)
            lines.append(json.dumps({"file_name": name, "text": texts[0], "captions": texts, "objects": scene}))
            index += 1
        atomic_write(folder / "metadata.jsonl", "".join(line + "\n" for line in lines))
    settings = {
        "size": size,
        "objects": list(objects),
        "palette": {k: list(v) for k, v in PALETTE.items()},
        "shapes": list(SHAPES),
        "radii": radii(size),
        "margin": margin(size),
        "hold_out": [list(pair) for pair in hold_out],
        "test_fraction": test_fraction,
        "seed": seed,
        "counts": counts,
    }
    atomic_write(out / "shapes.json", json.dumps(settings, indent=1))  # last: its presence marks a complete set
    return out


def is_shapes_folder(folder: Path) -> bool:
    return (folder / "shapes.json").is_file() and (folder / "train" / "metadata.jsonl").is_file()


def load_shapes(folder: Path, image_size: int | None = None) -> ImageData:
    """A folder `make_shapes` wrote, as ImageData: labels are the number of objects less one, and `captions` and
    `objects` hold each image's captions and objects. heldout/ is not loaded (it is for scoring prompts)."""
    folder = Path(folder).resolve()
    try:
        settings = json.loads((folder / "shapes.json").read_text())
        rows = {
            split: [
                json.loads(line)
                for line in (folder / split / "metadata.jsonl").read_text().splitlines()
                if line.strip()
            ]
            for split in ("train", "test")
        }
    except (OSError, ValueError) as error:
        raise DataError(
            f"{folder} is not a readable shapes folder ({error})",
            f"make it again: genlab data make shapes --out {folder}",
        ) from None
    size = settings["size"]
    if image_size not in (None, size):
        raise DataError(
            f"{folder} holds {size}-pixel scenes, not {image_size}",
            f"make them at that size: genlab data make shapes --size {image_size}",
        )
    stale = next((e for entries in rows.values() for e in entries if e["captions"] != captions(e["objects"])), None)
    if stale is not None:  # the layouts below follow this version's captions of each scene
        raise DataError(f"{folder} was made by another version of genlab: the captions of {stale['file_name']} "
                        "differ from what its objects give", f"make it again: genlab data make shapes --out {folder}")
    arrays = {}
    for split, entries in rows.items():
        x = [load_image(folder / split / entry["file_name"], channels=3) for entry in entries]
        arrays[split] = (
            np.stack(x) if x else np.zeros((0, 3, size, size), np.uint8),
            np.array([len(entry["objects"]) - 1 for entry in entries], dtype=np.int64),
        )
    report = DataReport(folder.name, "image", str(folder), "path")
    if settings["hold_out"]:
        pairs = ", ".join(" ".join(pair) for pair in settings["hold_out"])
        report.notes.append(
            f"heldout/ holds {settings['counts']['heldout']} scenes with the held-out pairs {pairs} "
            "(not loaded: they are for scoring prompts)"
        )
    return ImageData(
        folder.name,
        *arrays["train"],
        *arrays["test"],
        CLASSES,
        report,
        captions=tuple([entry["captions"] for entry in rows[s]] for s in ("train", "test")),
        objects=tuple([entry["objects"] for entry in rows[s]] for s in ("train", "test")),
        layouts=tuple([caption_layouts(entry["objects"], size) for entry in rows[s]] for s in ("train", "test")),
    )
