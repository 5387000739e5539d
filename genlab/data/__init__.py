"""The data layer: `load_data(spec)` turns a registered name or a path into arrays or text.

Names resolve cache -> system copy -> download (see `registry.py`); paths may be a
folder of images (class subfolders become labels), text prepared into token files (genlab.data.tokens), a
shapes set (genlab.data.shapes), a folder of sound files (WAV,
FLAC, OGG; genlab.data.audio), a text file or folder of text files, a JSONL file of
conversations (genlab.data.chat), or a table (CSV, TSV, Parquet; genlab.data.tables). Every result carries a
`DataReport` of what was found.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from genlab.data.audio import AUDIO_SUFFIXES, load_audio_folder
from genlab.data.base import DataReport, ImageData, TextData, fill_report
from genlab.data.chat import CHAT_SUFFIXES, ChatData, load_chat
from genlab.data.images import IMAGE_SUFFIXES, load_image, load_image_folder
from genlab.data.loader import BatchLoader
from genlab.data.registry import DATASETS, load_registered
from genlab.data.shapes import is_shapes_folder, load_shapes
from genlab.data.shards import is_shard_folder, load_image_shards
from genlab.data.tables import TABLE_SUFFIXES, TableData, load_table
from genlab.data.text import load_text
from genlab.data.tokens import TokenData, is_token_folder, load_tokens
from genlab.data.tts import is_tts_corpus, load_tts_corpus
from genlab.data.video import VideoData, is_video_folder, load_video
from genlab.errors import DataError

__all__ = ["DATASETS", "BatchLoader", "ChatData", "DataReport", "ImageData", "TableData", "TextData", "TokenData",
           "as_images", "VideoData", "list_datasets", "load_data", "load_image"]


def load_data(spec: str, image_size: int | None = None, max_bad_fraction: float = 0.05,
              refresh: bool = False, schema: str | None = None
              ) -> ImageData | TextData | TokenData | ChatData | TableData | VideoData:
    """Load a registered dataset by name, or the images, text, conversations or table at a path (`schema`: a
    table's column kinds, genlab.data.tables)."""
    if spec in DATASETS:
        data = load_registered(spec, refresh=refresh)
    else:
        path = Path(spec).expanduser()
        if not path.exists():
            known = ", ".join(DATASETS)
            raise DataError(f"--data {spec!r} is neither a registered dataset nor an existing path",
                            f"use one of {known}, or a folder of images, a text file or a folder of text files")
        if path.suffix.lower() in TABLE_SUFFIXES or (path.is_dir() and _holds_split_table(path)):
            return load_table(path, schema=schema)
        if path.is_file() and path.suffix.lower() in CHAT_SUFFIXES:
            return load_chat(path)
        if path.is_dir() and is_token_folder(path):
            return load_tokens(path)
        if path.is_dir() and is_shard_folder(path):
            return load_image_shards(path)
        if path.is_dir() and is_video_folder(path):
            return load_video(path)
        if path.is_dir() and is_tts_corpus(path):
            return load_tts_corpus(path, max_bad_fraction=max_bad_fraction)
        if path.is_dir() and any(p.suffix.lower() in AUDIO_SUFFIXES for p in path.rglob("*") if p.is_file()):
            return load_audio_folder(path, max_bad_fraction=max_bad_fraction, refresh=refresh)
        if path.is_dir() and is_shapes_folder(path):
            data = load_shapes(path, image_size)
        elif path.is_dir() and any(p.suffix.lower() in IMAGE_SUFFIXES for p in path.rglob("*") if p.is_file()):
            data = load_image_folder(path, image_size, max_bad_fraction=max_bad_fraction, refresh=refresh)
        else:
            data = load_text(path, max_bad_fraction=max_bad_fraction)
    if isinstance(data, ImageData):
        fill_report(data)
    return data


def as_images(data: Any) -> Any:
    """The data an image family sees: sound as the images of its log-mel spectrograms (genlab.data.spectrogram),
    anything else as it is."""
    if getattr(data, "kind", None) == "audio":
        from genlab.data.spectrogram import spectrogram_images

        return spectrogram_images(data)
    return data


def _holds_split_table(folder: Path) -> bool:
    return any((folder / f"train{s}").exists() for s in TABLE_SUFFIXES)


def list_datasets() -> list[dict[str, str]]:
    """Each registered dataset with where it resolves now and whether it is present."""
    rows = []
    for dataset in DATASETS.values():
        found = dataset.locate()
        rows.append({
            "name": dataset.name,
            "kind": dataset.kind,
            "present": "yes" if found else "no",
            "where": f"{found[0]}: {found[1]}" if found else f"download ({dataset.urls[0].split('/')[2]})",
            "description": dataset.description,
            "install": dataset.install,
        })
    return rows
