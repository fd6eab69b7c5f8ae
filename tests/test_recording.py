"""The recording format: writing, reading back bit for bit, robustness of the reader."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.config import Config
from engine.history import Evaluation, Event
from engine.recording import (
    FORMAT,
    VERSION,
    Recorder,
    RecordingError,
    load_recording,
)

ROOT = Path(__file__).resolve().parents[1]
DESCENT = [sys.executable, "-m", "tui"]


class FakeDataset:
    """Just what a Recorder needs from a dataset."""

    def describe(self) -> dict:
        return {"spec": "fake", "num_train": 100, "num_val": 10, "fingerprint": "f00d"}


def write_synthetic(path: Path, steps: int = 1000, chunk: int = 37, *, close: bool = True,
                    seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Record made-up losses (with NaN and inf) through a real Recorder."""
    rng = np.random.default_rng(seed)
    data = rng.random(steps) * 3
    reg = rng.random(steps) * 1e-3
    data[steps // 2] = math.nan
    data[steps // 2 + 1] = math.inf
    reg[steps // 3] = -math.inf
    rec = Recorder(path, Config(), FakeDataset())
    rec.on_start(None)
    for s in range(0, steps, chunk):
        if s % 200 < chunk:
            rec.on_eval(Evaluation(s, 0.5, 0.25, float("nan") if s == 0 else 1.5, 1.25))
        if s == 5 * chunk:
            rec.on_event(Event(s, "control", "lr", 1e-3, 1e-2, "lr 1.00e-02 → 1.00e-03"))
        rec.on_steps(s, data[s:s + chunk], reg[s:s + chunk])
    rec.on_event(Event(steps, "alarm", "nonfinite", math.nan, None, "loss is NaN"))
    if close:
        rec.close({"steps": steps, "loss": math.nan})
    else:
        rec.close(None)
    assert rec.error is None
    return data, reg


def test_round_trip_is_bit_for_bit(tmp_path):
    p = tmp_path / "r.jsonl"
    data, reg = write_synthetic(p)
    r = load_recording(p)
    assert r.header["format"] == FORMAT and r.header["version"] == VERSION
    assert r.header["dataset"]["fingerprint"] == "f00d"
    assert r.header["config"] == Config().to_dict()
    assert set(r.header["versions"]) >= {"descent", "numpy", "numba", "python"}
    assert r.header["parent"] is None
    assert r.steps == 1000
    np.testing.assert_array_equal(r.data_loss, data)  # NaN == NaN here, inf == inf
    np.testing.assert_array_equal(r.reg_loss, reg)
    assert r.data_loss.view(np.int64).tolist() == data.view(np.int64).tolist()
    np.testing.assert_array_equal(r.loss, data + reg)
    assert math.isnan(r.evaluations[0].val_loss)
    assert [e.step for e in r.evaluations] == sorted(e.step for e in r.evaluations)
    assert r.events[0] == Event(185, "control", "lr", 1e-3, 1e-2, "lr 1.00e-02 → 1.00e-03")
    assert r.events[-1].kind == "alarm" and math.isnan(r.events[-1].value)
    assert r.summary["steps"] == 1000 and math.isnan(r.summary["loss"])
    assert not r.torn and r.complete
    assert r.block_end[-1] == 1000 and np.all(np.diff(r.block_t) >= 0)


def test_file_is_plain_json_without_nan_literals(tmp_path):
    p = tmp_path / "r.jsonl"
    write_synthetic(p)
    for line in p.read_text().splitlines():
        json.loads(line, parse_constant=lambda c: pytest.fail(f"non-standard {c}"))


def test_no_summary_is_readable_and_noted(tmp_path):
    p = tmp_path / "r.jsonl"
    write_synthetic(p, close=False)
    r = load_recording(p)
    assert r.summary is None and not r.complete and r.steps == 1000
    assert any("summary" in n for n in r.notes)


def test_close_with_reason_records_it(tmp_path):
    p = tmp_path / "r.jsonl"
    rec = Recorder(p, Config(), FakeDataset())
    rec.on_steps(0, np.ones(3), np.zeros(3))
    rec.close(reason="SIGHUP")
    rec.close({"steps": 99})  # a second close is ignored
    r = load_recording(p)
    assert r.summary == {"ended_by": "SIGHUP", "t": r.summary["t"]}


def test_data_is_on_disk_without_close(tmp_path):
    """The writer flushes on its own, well within a second (polled, bounded)."""
    p = tmp_path / "r.jsonl"
    rec = Recorder(p, Config(), FakeDataset())
    rec.on_steps(0, np.ones(5), np.zeros(5))
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and load_recording(p).steps < 5:
        time.sleep(0.05)
    assert load_recording(p).steps == 5
    rec.close()


def test_unwritable_path_fails_softly(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    rec = Recorder(blocker / "sub" / "r.jsonl", Config(), FakeDataset())
    rec.on_steps(0, np.ones(3), np.zeros(3))  # training goes on: no exception
    rec.close({"steps": 3})
    assert rec.error is not None and "cannot write" in rec.error
    assert "\n" not in rec.error
    assert "FAILED" in rec.status_line()


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_disk_full_fails_softly():
    rec = Recorder("/dev/full", Config(), FakeDataset())
    for s in range(0, 3000, 100):
        rec.on_steps(s, np.ones(100), np.zeros(100))
    rec.close({"steps": 3000})
    assert rec.error is not None and "space" in rec.error.lower()


def test_torn_last_line_is_accepted_with_a_note(tmp_path):
    p = tmp_path / "r.jsonl"
    write_synthetic(p)
    raw = p.read_bytes()
    cut = raw[: raw.rindex(b'"data"') + 20]  # in the middle of the last steps line
    lines = cut.split(b"\n")
    torn = b"\n".join(lines[:-1]) + b"\n" + lines[-1]
    p.write_bytes(torn)
    r = load_recording(p)
    assert r.torn and any("cut short" in n for n in r.notes)
    with pytest.raises(RecordingError, match="line"):
        load_recording(p, allow_torn_tail=False)


def test_last_line_without_newline_but_complete_is_fine(tmp_path):
    p = tmp_path / "r.jsonl"
    write_synthetic(p)
    p.write_bytes(p.read_bytes().rstrip(b"\n"))
    r = load_recording(p)
    assert not r.torn and r.complete


def test_a_header_cut_short_says_so_and_a_header_without_newline_loads(tmp_path):
    from engine.replay import Replayer

    p = tmp_path / "r.jsonl"
    write_synthetic(p)
    header = p.read_bytes().split(b"\n")[0]
    p.write_bytes(header[:120])  # killed while the first line was being written
    for load in (load_recording, Replayer):
        with pytest.raises(RecordingError, match="header line is cut short.*holds no run"):
            load(p)
    p.write_bytes(b'{"hello": ')  # cut short, and not ours: not a recording
    for load in (load_recording, Replayer):
        with pytest.raises(RecordingError, match="not a descent recording"):
            load(p)
    p.write_bytes(header)  # the whole header, its newline lost: a run of 0 steps
    assert load_recording(p).steps == 0
    assert Replayer(p).total_steps == 0


def _steps_lines(lines: list[bytes]) -> list[int]:
    return [i for i, ln in enumerate(lines) if b'"type":"steps"' in ln]


@pytest.mark.parametrize("mutate, match", [
    (lambda ls, s: ls[:3] + [b"{not json"] + ls[3:], "line 4: not valid JSON"),
    (lambda ls, s: ls[:s[0]] + ls[s[0] + 1:], "line {gap}: steps start at"),  # a gap
    (lambda ls, s: ls[:s[1]] + [ls[s[0]]] + ls[s[1]:], "line {s1}: steps start at"),  # overlap
    (lambda ls, s: ls[:2] + [b'{"type":"weird"}'] + ls[2:], "line 3: unknown line type"),
    (lambda ls, s: ls[:2] + [b'[1,2]'] + ls[2:], "line 3: expected a JSON object"),
    (lambda ls, s: ls[:2] + [b''] + ls[2:], "line 3: empty line"),
    (lambda ls, s: ls[:1] + [b'{"type":"steps","start":0,"data":["x"],"reg":[1]}'] + ls[1:],
     "line 2: data is not a number"),
    (lambda ls, s: ls + [b'{"type":"eval","step":0}'], "after the closing summary"),
])
def test_malformed_lines_are_rejected_with_line_number(tmp_path, mutate, match):
    p = tmp_path / "r.jsonl"
    write_synthetic(p)
    lines = p.read_bytes().split(b"\n")[:-1]
    s = _steps_lines(lines)
    p.write_bytes(b"\n".join(mutate(lines, s)) + b"\n")
    with pytest.raises(RecordingError, match=match.format(gap=s[1], s1=s[1] + 1)):
        load_recording(p)


def test_not_a_recording_and_future_version(tmp_path):
    p = tmp_path / "x.jsonl"
    p.write_text('{"hello": 1}\n')
    with pytest.raises(RecordingError, match="not a descent recording"):
        load_recording(p)
    p.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    with pytest.raises(RecordingError, match="not a descent recording"):
        load_recording(p)
    p.write_text("")
    with pytest.raises(RecordingError, match="empty file"):
        load_recording(p)
    p.write_text(json.dumps({"format": FORMAT, "version": 99, "config": {}}) + "\n")
    with pytest.raises(RecordingError, match="version 99 is newer.*upgrade"):
        load_recording(p)
    with pytest.raises(RecordingError, match="cannot read"):
        load_recording(tmp_path / "missing.jsonl")


@pytest.fixture(scope="module")
def sample_bytes(tmp_path_factory) -> bytes:
    p = tmp_path_factory.mktemp("fuzz") / "r.jsonl"
    write_synthetic(p, steps=300, chunk=29)
    return p.read_bytes()


def _load_bytes(tmp_path: Path, raw: bytes) -> None:
    p = tmp_path / "fuzz.jsonl"
    p.write_bytes(raw)
    try:
        load_recording(p)
    except RecordingError as e:
        assert str(e) and "\n" not in str(e)


_FUZZ = settings(max_examples=150, deadline=None,
                 suppress_health_check=[HealthCheck.function_scoped_fixture])


@_FUZZ
@given(data=st.data())
def test_fuzz_mutations_load_or_fail_cleanly(tmp_path, sample_bytes, data):
    """Truncations, byte flips, line swaps and injected values: load or RecordingError."""
    raw = bytearray(sample_bytes)
    op = data.draw(st.sampled_from(["truncate", "flip", "swap", "inject", "delete"]))
    if op == "truncate":
        raw = raw[: data.draw(st.integers(0, len(raw)))]
    elif op == "flip":
        for _ in range(data.draw(st.integers(1, 8))):
            i = data.draw(st.integers(0, len(raw) - 1))
            raw[i] = data.draw(st.integers(0, 255))
    else:
        lines = bytes(raw).split(b"\n")
        i = data.draw(st.integers(0, len(lines) - 1))
        j = data.draw(st.integers(0, len(lines) - 1))
        if op == "swap":
            lines[i], lines[j] = lines[j], lines[i]
        elif op == "delete":
            del lines[i]
        else:
            junk = data.draw(st.sampled_from([
                b'{"type":"steps","start":1e400,"data":[],"reg":[]}',
                b'{"type":"steps","start":' + b"9" * 5000 + b',"data":[],"reg":[]}',
                b'{"type":"eval","step":-1,"train_acc":1,"val_acc":1,"val_loss":1,'
                b'"train_loss":1}',
                b'{"type":"event","step":"3","kind":"alarm"}',
                b'{"type":"event","step":3,"kind":["x"]}',
                b'{"type":"steps","start":0,"data":[[1]],"reg":[[1]]}',
                b'{"type":"steps","start":0,"data":[true],"reg":[null]}',
                b"[" * 100_000 + b"]" * 100_000,
                b'{"type":"summary","x":1e999}',
                b'{"format":"descent-recording","version":"1","config":{}}',
                b'{"format":"descent-recording","version":1,"config":{},"parent":{"step":1}}',
            ]))
            lines.insert(i, junk)
        raw = bytearray(b"\n".join(lines))
    _load_bytes(tmp_path, bytes(raw))


@_FUZZ
@given(junk=st.binary(max_size=300))
def test_fuzz_random_bytes_after_header(tmp_path, sample_bytes, junk):
    header = sample_bytes.split(b"\n", 1)[0] + b"\n"
    _load_bytes(tmp_path, header + junk)
    _load_bytes(tmp_path, junk)


# -- with the real trainer, through the command line ----------------------------------------
def _descent(*args: str, **kw) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([*DESCENT, *args], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, **kw)


def _wait_for_steps(path: Path, n: int, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        if path.exists():
            try:
                if load_recording(path).steps >= n:
                    return
            except RecordingError:
                pass
        time.sleep(0.1)
    pytest.fail(f"no {n} steps in {path} within {timeout}s")


def test_kill_9_leaves_a_readable_file(tmp_path):
    p = tmp_path / "killed.jsonl"
    proc = _descent("train", "--headless", "--data", "blobs", "--record", str(p),
                    "--on-diverge", "ignore", "--eval-every", "50")
    try:
        _wait_for_steps(p, 2000, proc)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    r = load_recording(p)  # a torn last line is fine; nothing else may be wrong
    assert r.steps >= 2000 and r.summary is None
    assert r.header["dataset"]["spec"] == "blobs"


@pytest.mark.parametrize("sig", [signal.SIGHUP, signal.SIGTERM, signal.SIGINT])
def test_signals_close_the_file_with_a_summary(tmp_path, sig):
    p = tmp_path / "hup.jsonl"
    proc = _descent("train", "--headless", "--data", "blobs", "--record", str(p),
                    "--on-diverge", "ignore")
    try:
        _wait_for_steps(p, 500, proc)
        proc.send_signal(sig)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == (130 if sig == signal.SIGINT else 128 + sig)
    r = load_recording(p)
    assert not r.torn and r.complete and r.summary["steps"] == r.steps >= 500
    assert r.summary["ended_by"] == signal.Signals(sig).name
