"""Does an image show what its shapes prompt asked? An analytic detector and scorer for genlab.data.shapes.

`detect` reads objects back from pixels with no learned part. On black, an anti-aliased pixel is coverage x
colour, so each pixel is fitted along the ray from black to every palette colour: the colour whose ray passes
nearest names it, and the fitted coverage says how much of the pixel is covered. Pixels at least half covered
form connected components per colour (one object each: objects of one colour never touch); each component's
area and centre are then summed from the soft coverage of it and its one-pixel rim, which recovers the exact
area of the drawn shape (the renderer box-filters a 4x drawing) rather than a thresholded count.

A triangle is told by the skew of its rows' mass: its width grows linearly from apex to base, a skewness of
-2 sqrt(2) / 5 = -0.57 (circles and squares are symmetric: 0). The rest by how they fill their box: area /
(width x height) is pi/4 for a circle and 1 for a square (1/2 for a triangle, but a 32-px anti-aliased one
measures up to 0.67), the box's width and height measured as the summed column and row maxima of the
coverage. Its size follows from its area given its shape (circle pi r^2, square 4 r^2, triangle 2 r^2), split
at the geometric mean of the two radii. A triangle's centroid lies r/3 below its box's centre.

`score` matches requested objects to detected ones (every assignment is tried: the most attributes agreeing,
then the most relations holding, so two identical objects are told apart by where they are asked to be) and
says, per attribute, whether each is right; a relation is right when its axis dominates the detected centres'
difference, with the right sign. `parse_caption` reads any caption of the generator's grammar back into
requested objects, so a free prompt of that grammar can be scored.
"""

from __future__ import annotations

from itertools import permutations

import numpy as np
from scipy import ndimage

from genlab.data.shapes import PALETTE, RELATIONS, SHAPES, SIZES, radii, relation
from genlab.errors import ConfigError

AREA = {"circle": np.pi, "square": 4.0, "triangle": 2.0}  # area / r^2
ATTRIBUTES = ("shape", "colour", "size")
# each joint between two objects as its words, longest first (so ", and" is one joint, not "," and a stray
# "and"), with the relation it states: None for a list's joints and "next to", which names no direction
JOINTS = sorted(
    [
        (tuple(joint.replace(",", " ,").split()), word)
        for joint, word in {
            "next to": None,
            "and": None,
            ",": None,
            ", and": None,
            **{long: short for short, long in RELATIONS.items()},
            **{short: short for short in RELATIONS},
        }.items()
    ],
    key=lambda joint: -len(joint[0]),
)
GRAMMAR = (
    "objects as '[a|an|one] [small|large] [COLOUR] SHAPE' joined by ',', 'and', 'next to', 'left of', "
    "'to the left of', 'right of', 'to the right of', 'above' or 'below'"
)


def _pixels(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) float32 from a (3, H, W) or (H, W, 3) uint8 image."""
    image = np.asarray(image)
    if image.ndim != 3 or 3 not in (image.shape[0], image.shape[-1]):
        raise ValueError(f"expected a (3, H, W) or (H, W, 3) RGB image, got shape {image.shape}")
    return (image.transpose(1, 2, 0) if image.shape[-1] != 3 else image).astype(np.float32)


def detect(
    image: np.ndarray, palette: dict[str, tuple[int, int, int]] = PALETTE, tolerance: float = 0.35
) -> list[dict]:
    """The objects in a shapes image, largest first: [{"shape", "colour", "size", "x", "y", "area"}] in pixels, as
    the generator writes them (sizes judged against its radii for this canvas). `tolerance`: how far from its
    colour's ray a pixel may be, as a fraction of its brightness."""
    pixels = _pixels(image)
    names = list(palette)
    colours = np.array([palette[name] for name in names], dtype=np.float32)  # (K, 3)
    cover = np.clip(pixels @ colours.T / (colours**2).sum(1), 0, 1)  # (H, W, K) coverage along each ray
    residual = np.linalg.norm(pixels[..., None, :] - cover[..., None] * colours, axis=-1)  # (H, W, K)
    nearest = residual.argmin(-1)
    alpha = np.take_along_axis(cover, nearest[..., None], -1)[..., 0]
    brightness = alpha * np.linalg.norm(colours, axis=1)[nearest]
    # at least half covered (dark anti-aliased edges are left to the soft sums) and near its colour's ray
    solid = (alpha >= 0.5) & (residual.min(-1) <= tolerance * brightness)

    height, width = pixels.shape[:2]
    radius = radii(height)
    small, large = radius["small"], radius["large"]
    split = np.sqrt(small * large)
    least = 0.3 * AREA["triangle"] * small**2  # a third of the smallest object: anything less is noise
    found = []
    for k, name in enumerate(names):
        labels, _ = ndimage.label(solid & (nearest == k), structure=np.ones((3, 3)))
        for index, box in enumerate(ndimage.find_objects(labels), start=1):
            # the component's box grown by its rim, where the partly covered edge pixels are
            rows = slice(max(box[0].start - 1, 0), min(box[0].stop + 1, height))
            cols = slice(max(box[1].start - 1, 0), min(box[1].stop + 1, width))
            region = ndimage.binary_dilation(labels[rows, cols] == index, structure=np.ones((3, 3)))
            soft = np.where(region, cover[rows, cols, k], 0.0)
            area = soft.sum()
            if area < least:
                continue
            y, x = np.indices(soft.shape) + 0.5  # pixel i covers [i, i + 1)
            cx, cy = (soft * x).sum() / area, (soft * y).sum() / area
            spread = np.sqrt((soft * (y - cy) ** 2).sum() / area)
            skew = (soft * (y - cy) ** 3).sum() / area / spread**3
            fill = area / (soft.max(0).sum() * soft.max(1).sum())
            shape = "triangle" if abs(skew) > 0.28 else "square" if fill > 0.89 else "circle"
            r = np.sqrt(area / AREA[shape])
            cx, cy = cx + cols.start, cy + rows.start
            if shape == "triangle":
                cy -= r / 3  # from the centroid to the box's centre
            found.append(
                {
                    "shape": shape,
                    "colour": name,
                    "size": "large" if r > split else "small",
                    "x": round(float(cx), 2),
                    "y": round(float(cy), 2),
                    "area": round(float(area), 1),
                }
            )
    return sorted(found, key=lambda obj: -obj["area"])


def parse_caption(text: str) -> list[dict]:
    """The objects a caption of the shapes grammar asks for, in order: [{"shape", and "colour" and "size" where
    named}], an object followed by a relation word carrying "relation": [word, index of the next object]
    ("a red circle left of a blue square": the circle has ["left of", 1]); "to the left of" reads as "left of"."""
    tokens = text.lower().replace(",", " , ").rstrip(" .").split()
    objects: list[dict] = []
    i = 0

    def refuse(expected: str):
        seen = repr(tokens[i]) if i < len(tokens) else "the end"
        return ConfigError(
            f"{text!r} is not a shapes caption: expected {expected} at word {i + 1}, found {seen}", f"write {GRAMMAR}"
        )

    while True:
        obj: dict = {}
        if i < len(tokens) and tokens[i] in ("a", "an", "one"):
            i += 1
        for key, words in (("size", SIZES), ("colour", PALETTE)):
            if i < len(tokens) and tokens[i] in words:
                obj[key] = tokens[i]
                i += 1
        if i >= len(tokens) or tokens[i] not in SHAPES:
            raise refuse(f"a shape ({', '.join(SHAPES)})")
        obj["shape"] = tokens[i]
        i += 1
        objects.append(obj)
        if i == len(tokens):
            return objects
        joint = next(((words, word) for words, word in JOINTS if tuple(tokens[i : i + len(words)]) == words), None)
        if joint is None:
            raise refuse("',', 'and' or a relation")
        i += len(joint[0])
        if joint[1] is not None:
            obj["relation"] = [joint[1], len(objects)]


def _wanted(requested: list[dict]) -> list[tuple[int, str, int]]:
    """(i, word, j): object i is `word` object j; from parsed relations, and from positions where given."""
    wanted = [(i, *obj["relation"]) for i, obj in enumerate(requested) if "relation" in obj]
    placed = [i for i, obj in enumerate(requested) if "x" in obj and "y" in obj]
    for a, i in enumerate(placed):
        for j in placed[a + 1 :]:
            word = relation(requested[i], requested[j])
            if word is not None:
                wanted.append((i, word, j))
    return wanted


def _holds(a: dict | None, word: str, b: dict | None) -> bool:
    return a is not None and b is not None and relation(a, b, clear=1.0) == word


def score(image: np.ndarray, requested_objects: list[dict], palette: dict[str, tuple[int, int, int]] = PALETTE) -> dict:
    """What is right in `image` of what `requested_objects` ask (generator objects, or parse_caption's): "count"
    (as many objects found as asked), per requested object whether its "colour", "shape" and "size" are right
    (None where not asked), "relation" (every requested relation holds; None when none is asked),
    "all_correct", and the "detected" objects."""
    detected = detect(image, palette)
    wanted = _wanted(requested_objects)
    # every assignment is tried, over the largest few detections: a broken sample's specks cannot blow it up
    slots: list[dict | None] = detected[: len(requested_objects) + 3]
    slots += [None] * max(0, len(requested_objects) - len(slots))

    def agreement(order: tuple[int, ...]) -> tuple[int, int]:
        chosen = [slots[k] for k in order]
        same = sum(
            found is not None and found[key] == obj[key]
            for obj, found in zip(requested_objects, chosen)
            for key in ATTRIBUTES
            if key in obj
        )
        return same, sum(_holds(chosen[i], word, chosen[j]) for i, word, j in wanted)

    best = max(permutations(range(len(slots)), len(requested_objects)), key=agreement)
    chosen = [slots[k] for k in best]
    result: dict = {"count": len(detected) == len(requested_objects)}
    for key in ATTRIBUTES:
        result[key] = [
            None if key not in obj else found is not None and found[key] == obj[key]
            for obj, found in zip(requested_objects, chosen)
        ]
    result["relation"] = all(_holds(chosen[i], word, chosen[j]) for i, word, j in wanted) if wanted else None
    result["all_correct"] = (
        result["count"]
        and result["relation"] is not False
        and all(ok is not False for key in ATTRIBUTES for ok in result[key])
    )
    result["detected"] = detected
    return result


def score_layout(boxes: list[tuple[float, float, float]], requested_objects: list[dict]) -> dict:
    """Does a layout (the planned (x, y, r) boxes of the objects a caption names, in the order it names them, as
    fractions of the canvas) place what the caption asked? count: as many boxes as objects; size: each box's
    half-side nearer the asked size's radius than the other's; relation: each stated relation holds between the
    boxes' centres (None without one)."""
    count = len(boxes) == len(requested_objects)
    fractions = {name: fraction for name, fraction in SIZES.items()}
    size = [None if "size" not in obj or i >= len(boxes) else
            min(fractions, key=lambda name: abs(fractions[name] - boxes[i][2])) == obj["size"]
            for i, obj in enumerate(requested_objects)]
    wanted = _wanted(requested_objects)
    placed = [{"x": x, "y": y} for x, y, _ in boxes]
    holds = [_holds(placed[i] if i < len(placed) else None, word, placed[j] if j < len(placed) else None)
             for i, word, j in wanted]
    return {"count": count, "size": size, "relation": all(holds) if holds else None}
