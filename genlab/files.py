"""Files genlab writes and reads: never half-written, never unpickled.

- `atomic_write(path, data)` and `atomic_path(path)`: the content goes to a temporary file in the
  same folder, is flushed to disk (fsync) and renamed over the target, so a reader or a crash sees
  the old file or the new one, never part of one. Every file genlab writes goes through them.
- `refuse_pickle(path)`: the one check that a weights file is not a pickle in disguise, before any
  parser touches it.
- `load_torch_file(path)`: a `torch.save` file (a training checkpoint, user weights) read with
  `weights_only=True`: tensors and plain containers, no code.
- `genlab_home()`: where caches live (datasets, reference classifiers, compiled kernels).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from genlab.errors import GenlabError, UnsafeFileError


def genlab_home() -> Path:
    """`$GENLAB_HOME`, default `~/.cache/genlab`: datasets, parsed-array cache, reference classifiers."""
    return Path(os.environ.get("GENLAB_HOME", Path.home() / ".cache" / "genlab")).expanduser()


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path beside `path` to write to; on success it is fsynced and renamed to `path`,
    on failure removed. For writers that want a file name (torch.save, safetensors)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with tmp.open("rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write(path: str | Path, data: bytes | str) -> Path:
    """Write `data` (text is UTF-8) so that readers see the old content or the new, never half of it."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data.encode() if isinstance(data, str) else data)
    return Path(path)


def refuse_pickle(path: Path) -> None:
    """Refuse a file meant to be safetensors that is a pickle or a torch.save zip, or too short to be anything."""
    with Path(path).open("rb") as f:
        head = f.read(9)
    if len(head) < 9:
        raise UnsafeFileError(f"{path} is truncated ({len(head)} bytes)", "re-export or re-download the model")
    # safetensors: an 8-byte little-endian header length, then the JSON header. A pickle starts with 0x80 and a
    # torch.save file is a zip ("PK"); a header length whose low byte is 0x80 is told apart by the JSON brace.
    if (head[:2] == b"PK" or head[:1] == b"\x80") and head[8:9] != b"{":
        raise UnsafeFileError(f"{path} is a pickle / torch.save file, not safetensors; genlab never unpickles weights",
                              "export the model with genlab's save_pretrained (or safetensors.torch.save_file)")


def load_torch_file(path: str | Path, what: str = "checkpoint") -> Any:
    """A torch.save file loaded without running any code it may contain (`weights_only=True`)."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise GenlabError(
            f"{what} {path} does not exist", "check the path (a run keeps its checkpoints in checkpoints/)"
        )
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any failure means the file is not one we trust
        raise UnsafeFileError(f"refusing to load {what} {path}: {str(error).splitlines()[0][:200]}",
                              "it is corrupt or holds arbitrary Python objects; use a file genlab (or torch) "
                              "wrote with tensors only") from None
