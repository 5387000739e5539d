"""The shapes world: the generator's layout, determinism and held-out pairs, captions true of their scenes, and
the analytic detector reading the rendered scenes back."""

from __future__ import annotations

import json
from itertools import permutations
from pathlib import Path

import numpy as np
import pytest

from genlab.cli import main
from genlab.data import load_data
from genlab.data.shapes import CLASSES, PALETTE, SHAPES, make_shapes, relation, sentence
from genlab.errors import ConfigError, DataError
from genlab.metrics.shapes import parse_caption, score

HELD = (("red", "circle"), ("blue", "square"))


def rows(folder: Path, split: str) -> list[dict]:
    return [json.loads(line) for line in (folder / split / "metadata.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    return make_shapes(tmp_path_factory.mktemp("shapes") / "set", 200, hold_out=HELD, seed=3)


def test_layout_and_determinism(shapes, tmp_path):
    settings = json.loads((shapes / "shapes.json").read_text())
    assert settings["counts"] == {"train": 180, "test": 20, "heldout": 20}
    assert settings["palette"]["red"] == [255, 0, 0] and settings["hold_out"] == [list(p) for p in HELD]
    assert settings["radii"]["small"] < settings["radii"]["large"]
    for split, count in settings["counts"].items():
        entries = rows(shapes, split)
        assert len(entries) == count
        assert {e["file_name"] for e in entries} == {p.name for p in (shapes / split).glob("*.png")}
        assert all(e["text"] == e["captions"][0] and len(e["captions"]) >= 2 for e in entries)
    again = make_shapes(tmp_path / "again", 200, hold_out=HELD, seed=3)
    files = sorted(p.relative_to(shapes) for p in shapes.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    assert all((shapes / f).read_bytes() == (again / f).read_bytes() for f in files)
    other = make_shapes(tmp_path / "other", 200, hold_out=HELD, seed=4)
    assert (other / "train" / "metadata.jsonl").read_bytes() != (shapes / "train" / "metadata.jsonl").read_bytes()
    with pytest.raises(DataError, match="not a shapes folder"):
        make_shapes(tmp_path, 10)  # a folder holding other things is never written into
    with pytest.raises(ConfigError, match="COLOUR SHAPE"):
        make_shapes(tmp_path / "bad", 10, hold_out=(("purple", "circle"),))


def test_held_out_pairs_only_in_heldout(shapes):
    def pairs(entry: dict) -> set[tuple[str, str]]:
        return {(o["colour"], o["shape"]) for o in entry["objects"]}

    assert not any(pairs(e) & set(HELD) for split in ("train", "test") for e in rows(shapes, split))
    assert all(pairs(e) & set(HELD) for e in rows(shapes, "heldout"))


def test_captions_are_true_of_the_positions(shapes):
    """Every caption names the scene's objects, in some order, and each relation it states is clear in their
    positions (the dominant axis of the centres' difference, by a factor 1.5)."""
    words = set()
    for entry in rows(shapes, "train"):
        objects = entry["objects"]
        for caption in entry["captions"]:
            asked = parse_caption(caption)
            words |= {o["relation"][0] for o in asked if "relation" in o}
            assert any(
                all(
                    all(objects[k][key] == o[key] for key in ("shape", "colour", "size") if key in o)
                    for k, o in zip(order, asked)
                )
                and all(
                    relation(objects[order[i]], objects[order[o["relation"][1]]]) == o["relation"][0]
                    for i, o in enumerate(asked)
                    if "relation" in o
                )
                for order in permutations(range(len(objects)))
            ), (caption, objects)
    assert words == {"left of", "right of", "above", "below"}


def test_parse_caption_round_trips_every_template(shapes):
    def expected(objects, size=True, colour=True, relations=True):
        out = []
        for i, obj in enumerate(objects):
            want = {
                "shape": obj["shape"],
                **({"size": obj["size"]} if size else {}),
                **({"colour": obj["colour"]} if colour else {}),
            }
            word = relation(obj, objects[i + 1]) if relations and i + 1 < len(objects) else None
            out.append({**want, "relation": [word, i + 1]} if word else want)
        return out

    for entry in rows(shapes, "train")[:60]:
        objects = entry["objects"]
        for forward, options in (
            (True, {}),
            (False, {"long": True}),
            (True, {"relations": False}),
            (True, {"size": False}),
            (False, {"colour": False, "long": True}),
        ):
            ordered = objects if forward else objects[::-1]
            caption = sentence(ordered, **options)
            options.pop("long", None)
            assert parse_caption(caption) == expected(ordered, **options), caption
    assert parse_caption("One large green triangle to the left of a small cyan circle, and a square.") == [
        {"size": "large", "colour": "green", "shape": "triangle", "relation": ["left of", 1]},
        {"size": "small", "colour": "cyan", "shape": "circle"},
        {"shape": "square"},
    ]
    with pytest.raises(ConfigError, match="word 2"):
        parse_caption("a purple circle")


def test_detector_recovers_the_scenes(shapes):
    """Count, colour, shape, size and every clear relation, read back from the 200 written 32-px PNGs."""
    data = load_data(str(shapes))
    images = np.concatenate([data.train_x, data.test_x])
    scenes = data.objects[0] + data.objects[1]
    assert len(images) == len(scenes) == 200
    results = [score(image, objects) for image, objects in zip(images, scenes)]
    accuracy = np.mean([r["all_correct"] for r in results])
    assert accuracy >= 0.98, accuracy
    assert any(r["relation"] for r in results)
    for image, objects in list(zip(images, scenes))[:40]:
        wrong = [dict(o) for o in objects]
        wrong[0]["colour"] = next(c for c in PALETTE if c != wrong[0]["colour"])
        assert not score(image, wrong)["all_correct"]
        wrong[0] = {**objects[0], "shape": next(s for s in SHAPES if s != objects[0]["shape"])}
        assert not score(image, wrong)["all_correct"]
        assert not score(image, [*objects, {"shape": "circle", "colour": "red"}])["all_correct"]  # one too many


def test_load_data(shapes):
    data = load_data(str(shapes))
    assert data.train_x.shape == (180, 3, 32, 32) and data.train_x.dtype == np.uint8
    assert data.test_x.shape == (20, 3, 32, 32) and data.classes == CLASSES
    train, test = rows(shapes, "train"), rows(shapes, "test")
    assert data.train_y.tolist() == [len(e["objects"]) - 1 for e in train]
    assert data.captions == ([e["captions"] for e in train], [e["captions"] for e in test])
    assert data.objects == ([e["objects"] for e in train], [e["objects"] for e in test])
    assert data.report.counts == {"train": 180, "test": 20}


def test_cli(tmp_path, capsys):
    out, make = tmp_path / "cli", ["data", "make", "shapes", "--out"]
    assert main([*make, str(out), "--n", "20", "--objects", "2", "--hold-out", "red circle, green triangle"]) == 0
    assert "wrote 20 scenes" in capsys.readouterr().out
    assert {len(e["objects"]) for e in rows(out, "train")} == {2}
    assert json.loads((out / "shapes.json").read_text())["hold_out"] == [["red", "circle"], ["green", "triangle"]]
    assert main([*make, str(tmp_path / "bad"), "--hold-out", "red"]) == 2
    err = capsys.readouterr().err
    assert "held-out pair 'red' is not a colour and a shape" in err and "--hold-out 'red circle,blue square'" in err
    assert main([*make, str(tmp_path / "bad"), "--objects", "one"]) == 2
    assert "e.g. --objects 1-3" in capsys.readouterr().err


def test_each_captions_layout_holds_the_boxes_it_names_in_order(shapes):
    """data.layouts: for every caption, the (x, y, r) boxes of the objects in the order the caption names them;
    score_layout finds the true layouts right and a layout with its boxes swapped wrong."""
    from genlab.data.shapes import radii
    from genlab.metrics.shapes import score_layout

    data = load_data(str(shapes))
    r = radii(32)
    swapped_relations = []
    for captions, layouts, objects in zip(data.captions[0], data.layouts[0], data.objects[0], strict=True):
        assert len(captions) == len(layouts)
        for caption, layout in zip(captions, layouts, strict=True):
            named = parse_caption(caption)
            assert len(layout) == len(named) == len(objects)
            for asked, (x, y, half) in zip(named, layout, strict=True):
                obj = next(o for o in objects if (o["x"], o["y"]) == (x * 32, y * 32))
                assert obj["shape"] == asked["shape"] and half * 32 == r[obj["size"]]
                assert asked.get("colour", obj["colour"]) == obj["colour"]
            judged = score_layout(layout, named)
            assert judged["count"] and all(ok is not False for ok in judged["size"]) and judged["relation"] in (
                True, None)
            if judged["relation"] is not None and len(layout) == 2:
                swapped_relations.append(score_layout(layout[::-1], named)["relation"])
    assert swapped_relations and not any(swapped_relations), "a layout with its two boxes swapped breaks its relation"
    assert score_layout(data.layouts[0][0][0][:1], parse_caption("a circle left of a square"))["count"] is False


def test_a_set_whose_captions_differ_from_its_objects_is_refused(tmp_path):
    folder = make_shapes(tmp_path / "set", 10, seed=1)
    lines = rows(folder, "train")
    lines[0]["captions"] = list(reversed(lines[0]["captions"]))
    (folder / "train" / "metadata.jsonl").write_text("".join(json.dumps(e) + "\n" for e in lines))
    with pytest.raises(DataError, match="another version of genlab"):
        load_data(str(folder))
