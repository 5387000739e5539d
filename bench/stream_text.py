"""Benchmark: training the GPT on a text corpus larger than memory (issue 24), from token files prepared once on
disk, against the in-memory path on a slice of the same text.

    python bench/stream_text.py --corpus-gb 4                       # the real run -> bench/results/stream_text.json
    python bench/stream_text.py --corpus-gb 0.01 --baseline-mb 2 --steps 3 --tokenizers char \\
        --work /tmp/stream-smoke --out /tmp/stream_smoke.json     # smoke test

The corpus: every UTF-8 text file of this machine's Python packages, Python's library and Debian's documentation
and fortunes (.py, .md, .rst, .txt; about 0.5 GB of distinct text), written again and again in a new shuffled
order of files until it holds `--corpus-gb`, as 128 MB files. Each tokenizer in `--tokenizers` prepares it
(`genlab data prepare`, every core) and is timed; then `genlab train gpt --data PREPARED --max-steps STEPS` runs in a
fresh process, which reports the seconds from its launch to the end of its first optimiser step and its peak
resident memory (VmHWM). The baseline is the same command on `--baseline-mb` of the corpus as one text file, read
whole (genlab's path before this issue; the issue measured 105 s and 3.9 GB at 200 MB).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
from common import command, first_step, machine, write

ROOTS = [Path(sys.prefix) / "lib", Path(sys.base_prefix) / "lib", Path("/usr/share/doc"),
         Path("/usr/share/games/fortunes"), Path("/usr/share/common-licenses")]
SUFFIXES = {".py", ".md", ".rst", ".txt"}
SHARD = 128 * 2**20


def documents() -> list[bytes]:
    """Every UTF-8 text file under ROOTS (fortune files have no suffix), each once."""
    seen, out = set(), []
    for root in ROOTS:
        for path in sorted(root.rglob("*")) if root.exists() else []:
            if not path.is_file() or path.is_symlink() or path.suffix not in SUFFIXES and "fortunes" not in str(path):
                continue
            try:
                raw = path.read_bytes()
                raw.decode("utf-8")
            except (OSError, UnicodeDecodeError):
                continue
            if raw and b"\x00" not in raw and hash(raw) not in seen:
                seen.add(hash(raw))
                out.append(raw if raw.endswith(b"\n") else raw + b"\n")
    return out


def make_corpus(folder: Path, size: int) -> dict:
    """`size` bytes of the documents, pass after pass in a new order each, as SHARD-byte files."""
    record = folder / "corpus.json"
    if record.exists() and json.loads(record.read_text())["bytes"] >= size:
        return json.loads(record.read_text())
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.txt"):
        old.unlink()
    start = time.perf_counter()
    docs = documents()
    rng, written, shard, shards, passes = np.random.default_rng(0), 0, None, 0, 0
    while written < size:
        passes += 1
        for i in rng.permutation(len(docs)):
            if shard is None or shard.tell() >= SHARD:
                if shard is not None:
                    shard.close()
                shard, shards = open(folder / f"part-{shards:04d}.txt", "wb"), shards + 1
            shard.write(docs[i])
            written += len(docs[i])
            if written >= size:
                break
    shard.close()
    meta = {"bytes": written, "files": len(list(folder.glob("*.txt"))), "documents": len(docs),
            "distinct_bytes": sum(map(len, docs)), "passes": passes, "seconds": round(time.perf_counter() - start, 1)}
    record.write_text(json.dumps(meta))
    return meta


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus-gb", type=float, default=4.0)
    parser.add_argument("--baseline-mb", type=float, default=200, help="the in-memory path's text (0: skip it)")
    parser.add_argument("--tokenizers", default="bpe,char")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--workers", type=int, default=None, help="preparation processes (default: every core)")
    parser.add_argument("--reuse", action="store_true", help="keep token files already prepared (their meta.json)")
    parser.add_argument("--work", default="/tmp/genlab-stream")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "stream_text.json"))
    args = parser.parse_args()
    from genlab.data.tokens import prepare_text

    work = Path(args.work)
    corpus = work / f"corpus-{args.corpus_gb:g}gb"
    results = {"machine": machine(), "command": command("stream_text.py"),
               "corpus": make_corpus(corpus, int(args.corpus_gb * 2**30)) | {"folder": str(corpus)}}
    print("corpus:", results["corpus"], flush=True)
    for tokenizer in args.tokenizers.split(","):
        prepared = work / f"tokens-{args.corpus_gb:g}gb-{tokenizer}"
        reused = args.reuse and (prepared / "meta.json").exists()
        meta = json.loads((prepared / "meta.json").read_text()) if reused else prepare_text(
            corpus, prepared, tokenizer=tokenizer, workers=args.workers)
        results[f"prepare_{tokenizer}"] = {k: meta[k] for k in ("tokens", "bytes", "vocab_size", "dtype", "workers",
                                                              "fit_seconds", "seconds", "mb_per_s")} | {
            "reused": reused}
        print(tokenizer, results[f"prepare_{tokenizer}"], flush=True)
        results[f"train_{tokenizer}"] = first_step("gpt", prepared, args.steps, args.work)
        print(results[f"train_{tokenizer}"], flush=True)
    if args.baseline_mb:
        text = work / f"slice-{args.baseline_mb:g}mb.txt"
        if not text.exists():  # the corpus's first files, up to --baseline-mb, cut at a line's end
            want, parts = int(args.baseline_mb * 2**20), []
            for part in sorted(corpus.glob("*.txt")):
                parts.append(part.read_bytes()[: want - sum(map(len, parts))])
                if sum(map(len, parts)) >= want:
                    break
            raw = b"".join(parts)
            text.write_bytes(raw[: raw.rfind(b"\n") + 1])
        results["in_memory"] = {"text_mb": round(text.stat().st_size / 2**20, 1),
                                **first_step("gpt", text, args.steps, args.work)}
        print("in memory:", results["in_memory"], flush=True)
    results["peak_rss_budget_mb"], results["first_step_budget_seconds"] = 2048, 30
    write(results, args.out)


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
