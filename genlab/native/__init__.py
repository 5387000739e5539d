"""Small C kernels genlab compiles at first use with the machine's C compiler, loaded through ctypes.

Only where torch's per-operation cost is most of the work: one-token GPT decoding
(`gpt_decode.c`). Each kernel has a torch path beside it that computes the same thing, so a
machine without a compiler loses speed, never function. The shared library is built once per
source, compiler flags and CPU (it is compiled for this CPU's instruction set) into
`$GENLAB_HOME/native/`, written to a temporary name and renamed, so a concurrent or
interrupted build never leaves a broken file. `GENLAB_NATIVE=0` turns the kernels off; `CC`
picks the compiler.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import shutil
import subprocess
from pathlib import Path

log = logging.getLogger(__name__)

FLAGS = ("-O3", "-march=native", "-fopenmp-simd", "-fno-math-errno", "-fPIC", "-shared")
_loaded: dict[str, ctypes.CDLL | None] = {}


def enabled() -> bool:
    return os.environ.get("GENLAB_NATIVE", "1") not in ("0", "false", "no", "off")


def _cpu_signature() -> str:
    """What the library was tuned for: a build for one CPU's instruction set may not run on another."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return line
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _build(source: Path, target: Path, compiler: str) -> None:
    from genlab.files import atomic_path

    with atomic_path(target) as partial:
        subprocess.run([compiler, *FLAGS, str(source), "-o", str(partial), "-lm"], check=True, capture_output=True,
                       text=True, timeout=120)


def library(name: str) -> ctypes.CDLL | None:
    """The compiled kernel library `name` (genlab/native/NAME.c), built if needed; None when the kernels
    are off (`GENLAB_NATIVE`, read at each call) or cannot be built here (the reason is logged once)."""
    if not enabled():
        return None
    if name in _loaded:
        return _loaded[name]
    from genlab.files import genlab_home

    lib = None
    source = Path(__file__).with_name(f"{name}.c")
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        log.info("no C compiler found: genlab's %s kernel is off, torch computes the same (set CC to enable it)", name)
    else:
        key = hashlib.sha256(b"\0".join([source.read_bytes(), " ".join(FLAGS).encode(), compiler.encode(),
                                         _cpu_signature().encode()])).hexdigest()[:16]
        target = genlab_home() / "native" / f"{name}-{key}.so"
        try:
            if not target.exists():
                _build(source, target, compiler)
            lib = ctypes.CDLL(str(target))
        except (OSError, subprocess.SubprocessError) as error:
            detail = getattr(error, "stderr", "") or error
            log.warning("genlab's %s kernel did not build (%s): torch computes the same, more slowly", name,
                        str(detail).strip()[:500])
    _loaded[name] = lib
    return lib
