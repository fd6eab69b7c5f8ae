"""descent's engine: data, losses, kernels, optimizers and the trainer.

A plain library: it never imports textual, so headless runs, benchmarks, verify and the
tests use it directly. Numba compiles its kernels on first use and caches them in a
directory the user can write (``$DESCENT_CACHE_DIR`` or ``~/.cache/descent``, then
``numba/src-<hash of the kernel sources>``), never inside a possibly read-only install.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from pathlib import Path

__version__ = "0.1.0"

_COMPILED_TOGETHER = ("kernels.py", "simd.py", "atomics.py")
"""Numba re-validates a cached function against its own file only; the kernels also
compile in code from these modules, so the cache lives in a directory named after all of
their contents (editing simd.py alone would otherwise leave stale machine code)."""
STALE_CACHE_DAYS = 14
"""Other cache directories next to the current one (older versions' kernels) are removed
once unused this long."""


def _sources_digest(here: Path | None = None) -> str:
    """Hash of the contents of the _COMPILED_TOGETHER modules (in `here`: this package)."""
    h = hashlib.sha256()
    here = here or Path(__file__).resolve().parent
    for name in _COMPILED_TOGETHER:
        try:
            h.update((here / name).read_bytes())
        except OSError:
            h.update(name.encode())
    return h.hexdigest()[:16]


def _prune(parent: str, keep: str) -> None:
    """Remove sibling cache directories not modified for STALE_CACHE_DAYS (best effort)."""
    cutoff = time.time() - STALE_CACHE_DAYS * 86400
    try:
        entries = list(os.scandir(parent))
    except OSError:
        return
    for entry in entries:
        try:
            if entry.name != keep and entry.is_dir() and entry.stat().st_mtime < cutoff:
                shutil.rmtree(entry.path, ignore_errors=True)
        except OSError:
            continue


def _set_numba_cache_dir() -> None:
    if os.environ.get("NUMBA_CACHE_DIR"):
        return
    base = os.environ.get("DESCENT_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache"), "descent"
    )
    parent = os.path.join(base, "numba")
    name = "src-" + SOURCES_DIGEST
    path = os.path.join(parent, name)
    try:
        os.makedirs(path, exist_ok=True)
        os.utime(path)  # in use: keep it out of _prune's reach
    except OSError:
        return  # numba falls back to its own choice; compiling still works
    _prune(parent, name)
    os.environ["NUMBA_CACHE_DIR"] = path


SOURCES_DIGEST = _sources_digest()
"""The kernels' sources as this process imported (and will compile) them."""
_set_numba_cache_dir()
