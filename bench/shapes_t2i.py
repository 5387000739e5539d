"""Benchmark: compositional text-to-image on the shapes world (issue 23): prompts naming (colour, shape) pairs no
training image holds, against prompts of seen pairs; cross-attention to the prompt's tokens against one pooled
sentence embedding.

    python bench/shapes_t2i.py --threads 1 --seconds 2400        # the real run -> bench/results/shapes_t2i.json
    python bench/shapes_t2i.py --n 120 --seconds 5 --prompts 3 --steps 2 --out /tmp/shapes_smoke.json  # smoke test
    python bench/shapes_t2i.py --threads 1 --seconds 10800 --variant cross_attention --resume RUN --out FILE
                                                                   # continue one variant's run, then judge it
    python bench/shapes_t2i.py --threads 1 --seconds 3000 --variants objects --out FILE   # one variant

The set: `genlab data make shapes` (`--n` scenes of 1-3 objects at 32 px; the `--hold-out` pairs never appear in
train/ or test/, and every heldout/ scene holds one). Two diffusion models with the same U-Net train for the same
wall clock at the same time, one process and `--threads` each: `--model.cross-attention true` (a prompt
transformer trained with the model over MiniLM's frozen word pieces, attended to at every attention level) and
false (MiniLM's pooled sentence embedding through FiLM: genlab's text conditioning before this issue). Each
samples one image for each of `--prompts` captions of heldout/ scenes and of test/ scenes (DPM-Solver++, `--steps`,
classifier-free guidance `--guidance`), and genlab.metrics.shapes scores every sample against its caption as
parsed (`parse_caption`): all requested attributes right (count, each object's colour, shape and size, the
relation), each attribute, and by number of objects. The real scenes under their own first captions are scored the
same way: the instrument's ceiling.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from common import command, machine, side_by_side, train_for, write

import genlab  # noqa: E402  (bench/common.py put the repository first on the path)
from genlab.data.images import load_image  # noqa: E402
from genlab.data.shapes import make_shapes  # noqa: E402
from genlab.metrics.shapes import parse_caption, score, score_layout  # noqa: E402
from genlab.models.diffusion.model import DiffusionSampleOptions  # noqa: E402

# each variant's model options: cross-attention to the prompt's tokens; one pooled sentence embedding; cross-attention
# grounded on a layout its planner draws from the prompt (genlab.models.diffusion.layout)
VARIANTS = {"cross_attention": {"cross_attention": True}, "pooled": {"cross_attention": False},
            "layout": {"cross_attention": True, "layout": True},
            "objects": {"cross_attention": True, "layout": True, "objects_only": True}}
UNET = {"widths": [64, 96, 128], "blocks": [1, 1, 2], "attention": [False, True, True], "patch": 2}


def prompts_of(split: Path, count: int) -> list[str]:
    """The first caption of the first `count` scenes of a split (each names every object and, for two or more,
    how they lie)."""
    lines = (split / "metadata.jsonl").read_text().splitlines()[:count]
    return [json.loads(line)["text"] for line in lines]


def layouts_of(split: Path, count: int) -> list[list[tuple[float, float, float]]]:
    """The boxes of the objects each of those prompts names, in order: the scene's own layout."""
    from genlab.data.shapes import caption_layouts

    lines = (split / "metadata.jsonl").read_text().splitlines()[:count]
    size = json.loads((split.parent / "shapes.json").read_text())["size"]
    return [caption_layouts(json.loads(line)["objects"], size)[0] for line in lines]


def drawn(model, prompts: list[str], options, layouts=None) -> list[np.ndarray]:
    """One image per prompt as uint8 arrays, 50 at a time, each chunk its own seed; grounded on `layouts` when
    given (else the planner's)."""
    images = []
    for i in range(0, len(prompts), 50):
        chunk = prompts[i : i + 50]
        images.append(model.sample(len(chunk), prompt=chunk, options=options, layout=layouts[i : i + 50] if layouts
                                   else None, generator=torch.Generator().manual_seed(i)))
    return [(image.numpy() * 255).round().astype(np.uint8) for image in torch.cat(images)]


def judged(images: list[np.ndarray], prompts: list[str]) -> dict:
    """The share of images that show everything their prompt asked, each attribute's share, and all-correct by
    number of objects."""
    rows = [score(image, parse_caption(prompt)) for image, prompt in zip(images, prompts, strict=True)]
    out: dict = {"images": len(rows), "all_correct": round(float(np.mean([r["all_correct"] for r in rows])), 4)}
    for key in ("colour", "shape", "size"):
        asked = [ok for r in rows for ok in r[key] if ok is not None]
        out[key] = round(float(np.mean(asked)), 4) if asked else None
    out["count"] = round(float(np.mean([r["count"] for r in rows])), 4)
    related = [r["relation"] for r in rows if r["relation"] is not None]
    out["relation"] = round(float(np.mean(related)), 4) if related else None
    by_objects: dict[str, list[bool]] = {}
    for prompt, r in zip(prompts, rows, strict=True):
        by_objects.setdefault(str(len(parse_caption(prompt))), []).append(r["all_correct"])
    out["all_correct_by_objects"] = {k: round(float(np.mean(v)), 4) for k, v in sorted(by_objects.items())}
    return out


def run_variant(args, data: Path, name: str) -> dict:
    """Train one variant for the wall clock (or, with --resume, continue a run until its wall clock totals
    --seconds), then sample and judge both prompt sets."""
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.resume:
        from genlab.files import load_torch_file

        run, start = Path(args.resume), time.perf_counter()
        genlab.train("diffusion", None, run, resume=True, max_time=f"{int(args.seconds)}s", max_steps=10**7,
                     sample_every=10**9, val_every=10**9, progress=False, threads=args.threads)
        took = time.perf_counter() - start
        steps = int(load_torch_file(run / "checkpoints" / "last.ckpt")["global_step"])
    else:
        run = Path(args.work) / f"run-{name}-{int(time.time())}"
        model_config = {**UNET, "condition": "text", **VARIANTS[name], **json.loads(args.model)}
        took, steps = train_for("diffusion", str(data), run, args.seconds, args.threads, model_config,
                                {"batch_size": 64, **json.loads(args.train)})
    model = genlab.load(run / "model")
    options = DiffusionSampleOptions(sampler="dpm++", steps=args.steps, guidance=args.guidance)
    out = {"run": str(run), "train_seconds": round(took, 1), "train_steps": steps,
           "parameters": model.num_parameters()}
    if args.plan_seconds and model.grounded:
        out["planner_alone"] = train_planner(model, data, args.plan_seconds)
    for part in ("heldout", "test"):
        prompts = prompts_of(data / part, args.prompts)
        start = time.perf_counter()
        out[part] = {**judged(drawn(model, prompts, options), prompts),
                     "sample_seconds": round(time.perf_counter() - start, 1)}
        if model.grounded:  # each stage's share: the planner's layouts, and the denoiser on the scenes' own
            out[part]["planned_layouts"] = planned(model, prompts)
            out[part]["given_the_scenes_layouts"] = judged(
                drawn(model, prompts, options, layouts_of(data / part, args.prompts)), prompts)
    return out


def train_planner(model, data: Path, seconds: float, batch: int = 256, lr: float = 1e-3) -> dict:
    """Train a grounded model's planner alone for `seconds` more on the training captions' layouts (AdamW, `batch`
    captions a step; the denoiser untouched): the planner is a separate small model, which the joint run's
    learning rate and batch (the denoiser's) train slowly."""
    from genlab.data.shapes import load_shapes
    from genlab.models.diffusion.layout import layout_tensor
    from genlab.models.diffusion.text import embed_pieces, piece_ids

    c = model.config
    shapes = load_shapes(data)
    captions = [text for texts in shapes.captions[0] for text in texts]
    boxes = [layout for layouts in shapes.layouts[0] for layout in layouts]
    ids = piece_ids(c.text_encoder, captions, c.text_length)
    layouts = layout_tensor(boxes, c.layout_slots)
    generator = torch.Generator().manual_seed(0)
    optimiser = torch.optim.AdamW(model.planner.parameters(), lr=lr)
    model.planner.train()
    start, steps = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        rows = torch.randint(len(captions), (batch,), generator=generator)
        loss = model.planner.loss(embed_pieces(c.text_encoder, ids[rows]), layouts[rows])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        steps += 1
    model.planner.eval()
    return {"seconds": round(time.perf_counter() - start, 1), "steps": steps, "batch": batch, "lr": lr,
            "last_loss": round(float(loss), 4)}


def planned(model, prompts: list[str]) -> dict:
    """A grounded model's layouts for `prompts` (drawn as sampling draws them), judged by score_layout."""
    pieces = model.encode_prompts(prompts)
    layouts = model.planner.sample(pieces, float(model.layout_gap), generator=torch.Generator().manual_seed(0))
    rows = [score_layout([tuple(box[1:].tolist()) for box in layout if box[0] > 0], parse_caption(prompt))
            for layout, prompt in zip(layouts, prompts, strict=True)]
    sizes = [ok for r in rows for ok in r["size"] if ok is not None]
    related = [r["relation"] for r in rows if r["relation"] is not None]
    return {"count": round(float(np.mean([r["count"] for r in rows])), 4),
            "size": round(float(np.mean(sizes)), 4) if sizes else None,
            "relation": round(float(np.mean(related)), 4) if related else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=30000, help="scenes made (a tenth for test/)")
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--hold-out", default="red circle,blue square,green triangle",
                        help="(colour, shape) pairs no training scene holds")
    parser.add_argument("--seconds", type=float, default=2400, help="each model's training wall clock")
    parser.add_argument("--prompts", type=int, default=300, help="prompts of each set, one image each")
    parser.add_argument("--steps", type=int, default=20, help="sampler steps")
    parser.add_argument("--guidance", type=float, default=3.0)
    parser.add_argument("--variants", default="cross_attention,pooled")
    parser.add_argument("--variant", default=None, help=argparse.SUPPRESS)  # one variant, in a child process
    parser.add_argument("--resume", default=None, help="a run of this benchmark to continue until its training wall "
                        "clock totals --seconds, then judge (with --variant NAME and --out; the data must exist)")
    parser.add_argument("--plan-seconds", type=float, default=0.0, help="layout variant: train its planner alone "
                        "this many seconds more before judging (the denoiser untouched)")
    parser.add_argument("--model", default="{}", help="JSON overrides of both diffusion configs")
    parser.add_argument("--train", default="{}", help="JSON overrides of both training configs")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--work", default="/tmp/genlab-shapes")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "shapes_t2i.json"))
    args = parser.parse_args()
    pairs = tuple(tuple(pair.split()) for pair in args.hold_out.split(",") if pair.strip())
    data = Path(args.work) / f"shapes-{args.n}-{args.size}-{'-'.join('_'.join(p) for p in pairs)}"
    if args.variant:
        Path(args.out).write_text(json.dumps(run_variant(args, data, args.variant)))
        return
    if not (data / "shapes.json").exists():
        start = time.perf_counter()
        make_shapes(data, args.n, size=args.size, hold_out=pairs)
        print(f"made {args.n:,} scenes in {time.perf_counter() - start:.1f} s", flush=True)

    results = {"machine": machine(args.threads), "command": command("shapes_t2i.py"),
               "data": {"scenes": args.n, "size": args.size, "held_out_pairs": [" ".join(p) for p in pairs]},
               "prompts_per_set": args.prompts, "sampler": f"dpm++ {args.steps} steps, guidance {args.guidance}",
               "unet": UNET}
    for part in ("heldout", "test"):  # the instrument's ceiling: the real scenes under their own captions
        prompts = prompts_of(data / part, args.prompts)
        lines = (data / part / "metadata.jsonl").read_text().splitlines()[: len(prompts)]
        images = [load_image(data / part / json.loads(line)["file_name"]) for line in lines]
        results.setdefault("real_scenes", {})[part] = judged(images, prompts)
    # the variants train side by side, one process each, so that each gets the same wall clock on its own core
    parts = side_by_side(__file__, "--variant", args.variants.split(","), args.work)
    results |= {f"genlab_{name}": part for name, part in parts.items()}
    print(json.dumps({k: v for k, v in results.items() if k.startswith(("genlab", "real"))}, indent=1), flush=True)
    write(results, args.out)


if __name__ == "__main__":
    main()
