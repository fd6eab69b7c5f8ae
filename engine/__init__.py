"""descent's engine: data, losses, kernels, optimizers and the trainer.

A plain library: it never imports textual, so headless runs, benchmarks, verify and the
tests use it directly. Numba compiles its kernels on first use and caches them in a
directory the user can write (``$DESCENT_CACHE_DIR`` or ``~/.cache/descent/numba``),
never inside a possibly read-only install.
"""

from __future__ import annotations

import os
from pathlib import Path

__version__ = "0.1.0"


def _set_numba_cache_dir() -> None:
    if os.environ.get("NUMBA_CACHE_DIR"):
        return
    base = os.environ.get("DESCENT_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache"), "descent"
    )
    path = os.path.join(base, "numba")
    try:
        os.makedirs(path, exist_ok=True)
    except OSError:
        return  # numba falls back to its own choice; compiling still works
    os.environ["NUMBA_CACHE_DIR"] = path


_set_numba_cache_dir()
