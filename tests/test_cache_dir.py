"""Where the Numba cache lives: a writable directory named after the kernels' sources."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import engine


def _copy_sources(dst: Path) -> Path:
    here = Path(engine.__file__).resolve().parent
    dst.mkdir()
    for name in engine._COMPILED_TOGETHER:
        shutil.copy(here / name, dst / name)
    return dst


def test_the_directory_changes_with_any_module_compiled_into_the_kernels(tmp_path):
    src = _copy_sources(tmp_path / "src")
    before = engine._sources_digest(src)
    assert engine._sources_digest(src) == before  # stable
    for name in engine._COMPILED_TOGETHER:
        text = (src / name).read_text()
        (src / name).write_text(text + "\n# edited\n")
        assert engine._sources_digest(src) != before, name
        (src / name).write_text(text)
    assert engine._sources_digest(src) == before


def test_cache_dir_is_under_descent_cache_dir_and_respects_numba_cache_dir(tmp_path,
                                                                          monkeypatch):
    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    monkeypatch.setenv("DESCENT_CACHE_DIR", str(tmp_path))
    engine._set_numba_cache_dir()
    path = Path(os.environ["NUMBA_CACHE_DIR"])
    assert path == tmp_path / "numba" / ("src-" + engine._sources_digest())
    assert path.is_dir()
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path / "mine"))
    engine._set_numba_cache_dir()
    assert os.environ["NUMBA_CACHE_DIR"] == str(tmp_path / "mine")  # the user's choice wins


def test_old_cache_dirs_are_pruned_and_recent_ones_kept(tmp_path):
    parent = tmp_path / "numba"
    old, recent, current = parent / "src-old", parent / "engine_0123", parent / "src-now"
    for d in (old, recent, current):
        (d / "sub").mkdir(parents=True)
        (d / "sub" / "k.nbc").write_bytes(b"x")
    long_ago = time.time() - (engine.STALE_CACHE_DAYS + 1) * 86400
    os.utime(old, (long_ago, long_ago))
    os.utime(current, (long_ago, long_ago))  # the one in use is never pruned
    (parent / "a-file").write_text("not a directory")
    os.utime(parent / "a-file", (long_ago, long_ago))
    engine._prune(str(parent), "src-now")
    assert not old.exists()
    assert recent.exists() and current.exists() and (parent / "a-file").exists()
