"""Verify (re-execution, bit for bit) and fork (state at step k, then new settings)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from engine.config import Config
from engine.history import Event
from engine.recording import Recorder, load_recording
from engine.replay import Replayer
from engine.verify import (
    EXIT_DIFFERENT,
    EXIT_INPUT,
    EXIT_SAME,
    VerifyInputError,
    fork,
    run_verify,
    verify,
)

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "recordings" / "example.jsonl"


def record_run(dataset, path: Path, *, steps: int = 1200,
               controls: dict[int, list[tuple[str, object]]] | None = None,
               **config) -> None:
    """Train with a Recorder, sending controls when the trainer is exactly at their steps.

    Chunks always stop at multiples of eval_every (100 here), so controls given at such
    steps take effect exactly there. Chunks are 20 steps: an automatic rescue lands at the
    end of the chunk that raised the alarm, so with chunks that follow the machine's speed
    the run after it would not be the same everywhere.
    """
    from engine.trainer import Trainer

    cfg = Config(data=dataset.spec, batch_size=64, steps=steps, eval_every=100,
                 **{"on_diverge": "rescue", **config}).resolved(dataset)
    rec = Recorder(path, cfg, dataset)
    tr = Trainer(cfg, dataset, observers=[rec])
    pending = dict(controls or {})
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Trainer, "_chunk_size", lambda self: 20)
        while tr.state.value != "FINISHED":
            for name, value in pending.pop(tr.step, []):
                tr.send(name, value)
            tr.run_chunk()
    tr.close()
    assert rec.error is None


@pytest.fixture(scope="module")
def parent(blobs, tmp_path_factory) -> Path:
    """A run with lr, λ and batch changes, a reset, and an lr blow-up that is rescued."""
    p = tmp_path_factory.mktemp("verify") / "parent.jsonl"
    lr = Config().resolved(blobs).lr
    record_run(blobs, p, controls={
        200: [("reg", 1e-2)],
        300: [("batch_size", 128)],
        500: [("lr", lr * 3)],
        700: [("lr", lr * 1e4)],  # blows up at once: alarm, automatic rescue (lr / 10)
        1000: [("reset", None), ("lr", lr)],
    })
    return p


def test_parent_has_what_we_need(parent):
    r = load_recording(parent)
    kinds = [(e.kind, e.name) for e in r.events]
    assert ("control", "reset") in kinds and ("rescue", "rescue") in kinds
    assert any(k == "alarm" for k, _ in kinds)
    assert r.steps == 1200 and r.complete


def test_verify_fresh_recording_is_identical(parent):
    res = verify(parent)
    assert res.status == EXIT_SAME and res.identical, res.message
    assert res.message.startswith("identical") and res.steps == 1200


def _alter(src: Path, dst: Path, step: int, rel: float, field: str = "data") -> None:
    """Copy a recording with one step's number changed by a relative ``rel``."""
    lines = src.read_text().splitlines()
    for i, line in enumerate(lines):
        o = json.loads(line)
        if o.get("type") == "steps" and o["start"] <= step < o["start"] + len(o[field]):
            v = o[field][step - o["start"]]
            o[field][step - o["start"]] = v * (1 + rel) if v else 1e-300
            lines[i] = json.dumps(o)
            break
    dst.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("step, field, metric", [(650, "data", "data_loss"),
                                                 (3, "reg", "reg_loss"),
                                                 (1199, "data", "data_loss")])
def test_verify_finds_the_first_altered_number(parent, tmp_path, step, field, metric):
    bad = tmp_path / "bad.jsonl"
    _alter(parent, bad, step, 1e-9, field)
    res = verify(bad)
    assert res.status == EXIT_DIFFERENT and res.step == step and res.metric == metric
    assert f"step {step}" in res.message and metric in res.message
    assert "recorded with" not in res.message  # same kernels build: a real difference
    assert verify(bad, tolerance=1e-6).status == EXIT_SAME


def _rebuild_header(src: Path, dst: Path, kernels: str | None) -> None:
    """Copy a recording with its header naming another kernels build (None: no name)."""
    lines = src.read_text().splitlines()
    head = json.loads(lines[0])
    if kernels is None:
        head["versions"].pop("kernels")
    else:
        head["versions"]["kernels"] = kernels
    dst.write_text("\n".join([json.dumps(head), *lines[1:]]) + "\n")


def test_the_header_names_the_kernels_build(parent):
    from engine.kernels import build

    assert load_recording(parent).header["versions"]["kernels"] == build()


@pytest.mark.parametrize("kernels, named", [
    ("src-0123456789abcdef zen4", "kernels 'src-0123456789abcdef zen4'"),
    (None, "kernels it does not name"),
])
def test_a_difference_under_other_kernels_says_so(parent, tmp_path, kernels, named):
    altered, other = tmp_path / "altered.jsonl", tmp_path / "other.jsonl"
    _alter(parent, altered, 650, 1e-9)
    _rebuild_header(altered, other, kernels)
    res = verify(other)
    assert res.status == EXIT_DIFFERENT and res.step == 650
    assert f"recorded with {named}" in res.message and "--tolerance" in res.message
    _rebuild_header(parent, other, kernels)
    assert verify(other).status == EXIT_SAME  # identical runs need no excuse


def test_verify_reports_an_altered_evaluation(parent, tmp_path):
    lines = parent.read_text().splitlines()
    i = [k for k, ln in enumerate(lines) if '"type":"eval"' in ln][4]
    o = json.loads(lines[i])
    o["val_acc"] = o["val_acc"] + 0.5
    lines[i] = json.dumps(o)
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join(lines) + "\n")
    res = verify(bad)
    assert res.status == EXIT_DIFFERENT and res.metric == "val_acc" and res.step == o["step"]


def test_verify_missing_dataset_or_other_fingerprint_is_exit_2(parent, tmp_path, capsys):
    lines = parent.read_text().splitlines()
    header = json.loads(lines[0])
    header["dataset"]["fingerprint"] = "0" * 16
    other = tmp_path / "fp.jsonl"
    other.write_text("\n".join([json.dumps(header), *lines[1:]]) + "\n")
    res = verify(other)
    assert res.status == EXIT_INPUT and "fingerprint" in res.message
    header["dataset"]["spec"] = header["config"]["data"] = f"npz:{tmp_path}/nope.npz"
    other.write_text("\n".join([json.dumps(header), *lines[1:]]) + "\n")
    assert run_verify(other) == EXIT_INPUT
    err = capsys.readouterr().err
    assert "not available" in err and len(err.strip().splitlines()) == 1


def test_a_fork_at_the_step_of_a_rescue_starts_from_the_rescued_weights(parent, tmp_path):
    """The parent's rescue at step k was applied before step k ran: a fork at k must
    start from the restored weights (once, with chunks of 50, it started from the
    blown-up ones and its first loss was NaN)."""
    p = load_recording(parent)
    k = next(e.step for e in p.events if e.kind == "rescue")
    child = tmp_path / "at_rescue.jsonl"
    tr, rec, _ = fork(parent, k, {"steps": 20}, record=child, headless=True)
    while tr.state.value != "FINISHED":
        tr.run_chunk()
    tr.close()
    c = load_recording(child)
    np.testing.assert_array_equal(c.data_loss[: k + 20], p.data_loss[: k + 20])
    assert [(e.step, e.kind) for e in c.events if e.step == k] == [(k, "rescue")]
    assert verify(child).identical


@pytest.mark.parametrize("mode", ["rescue", "stop", "ignore"])
def test_a_fork_inside_a_blow_up_answers_the_standing_alarm(mode, tmp_path):
    """The example blows up at step 1302 and its automatic rescue lands at 1400. Forked at
    1350, the alarm stands: the fork's --on-diverge answers it as it goes live (a rescue,
    after which the lr asked for applies; stop; or nothing, for ignore). The fork used to
    run on DIVERGED for good, no later alarm able to fire."""
    p = load_recording(EXAMPLE)
    alarm = next(e.step for e in p.events if e.kind == "alarm")
    rescue = next(e.step for e in p.events if e.kind == "rescue")
    k = (alarm + rescue) // 2
    child = tmp_path / f"inside_{mode}.jsonl"
    tr, rec, _ = fork(EXAMPLE, k, {"steps": 200, "lr": 1e-7, "on_diverge": mode},
                      record=child, headless=True)
    assert tr.alarm is not None  # standing at the fork point
    for _ in range(1000):
        if tr.run_chunk() == 0:
            break
    tr.close()
    c = load_recording(child)
    answers = [(e.kind, e.name) for e in c.events if e.step == k and e.kind != "control"]
    if mode == "rescue":
        assert answers == [("rescue", "rescue")] and tr.alarm is None
        assert tr.config.lr == 1e-7 and tr.step == k + 200
        assert np.all(np.isfinite(c.data_loss[k:])) and c.data_loss[-1] < 3.0
    elif mode == "stop":
        assert answers == [("finish", "finish")] and tr.step == k
        assert tr.summary()["diverged"] and c.summary["diverged"]
    else:
        assert answers == [] and tr.step == k + 200
    assert verify(child).identical


def test_a_fork_at_a_rescue_takes_the_recorded_lr(parent, tmp_path):
    """Recordings made before a rescue could go back to the healthy lr hold a tenth of the
    blown-up rate: a fork at such a rescue starts from the recorded lr, not from what the
    rule of the day would compute."""
    lines = parent.read_text().splitlines()
    for i, line in enumerate(lines):
        o = json.loads(line)
        if o.get("type") == "event" and o.get("kind") == "rescue":
            k, recorded = o["step"], o["old"] / 10  # the old rule's value
            assert o["value"] != recorded
            o["value"] = recorded
            lines[i] = json.dumps(o)
    old_rule = tmp_path / "old_rule.jsonl"
    old_rule.write_text("\n".join(lines) + "\n")
    tr, _, _ = fork(old_rule, k, {"steps": 1}, headless=True)
    tr.run_chunk()
    assert tr.config.lr == recorded and tr.rescues == 1


def test_fork_reproduces_the_parent_up_to_k(parent, tmp_path):
    k = 750  # after the alarm and rescue, before the reset
    child = tmp_path / "child.jsonl"
    tr, rec, info = fork(parent, k, {"lr": 1e-4, "steps": 300}, record=child, headless=True)
    assert tr.step == k and info.step == k
    p = load_recording(parent)
    snap = tr.history.snapshot()
    np.testing.assert_array_equal(snap.data_loss, p.data_loss[:k])
    np.testing.assert_array_equal(snap.reg_loss, p.reg_loss[:k])
    while tr.state.value != "FINISHED":
        tr.run_chunk()
    tr.close()
    c = load_recording(child)
    assert c.header["parent"] == {"path": str(parent), "step": k}
    assert c.steps == k + 300 and c.complete
    np.testing.assert_array_equal(c.data_loss[: k + 1], p.data_loss[: k + 1])
    assert not np.array_equal(c.data_loss[k + 1: k + 50], p.data_loss[k + 1: k + 50])
    assert Event(k, "control", "lr", 1e-4, tr.history.snapshot().events[-2].old,
                 ) in c.events or any(e.step == k and e.name == "lr" for e in c.events)
    assert [e for e in c.events if e.step < k] == [e for e in p.events if e.step < k]
    assert verify(child).identical  # a fork recording verifies on its own
    h, at = Replayer(child).parent_history()
    assert at == k and h.steps == p.steps


def test_fork_bad_requests(parent):
    with pytest.raises(VerifyInputError, match="outside the recording"):
        fork(parent, 10**6, {})
    with pytest.raises(VerifyInputError, match="cannot change seed"):
        fork(parent, 5, {"seed": 3})
    # an invalid value is refused before any re-execution, naming the problem (it used to
    # be refused silently by the trainer, and the fork ran on as the parent had)
    for change, problem in (({"lr": -1.0}, "learning rate must be a finite number > 0"),
                            ({"reg": float("nan")}, "λ"),
                            ({"batch_size": 10**9}, "larger than the training set"),
                            ({"optimizer": "adam"}, "optimizer must be one of")):
        with pytest.raises(VerifyInputError, match=problem):
            fork(parent, 5, change)


def test_chunking_does_not_change_numbers_after_a_rescue(blobs, monkeypatch):
    """The determinism contract: the same events at the same steps give the same numbers,
    however the run is cut into chunks. The update/weight ratio feeds ``healthy`` (which
    decides whether an evaluation takes the weight snapshot a rescue restores), so it must
    be measured at steps that do not depend on chunking. Thresholds are lowered here so
    the ratio rule is in play on any data."""
    from engine import divergence
    from engine import trainer as T

    class Touchy(divergence.DivergenceMonitor):
        def __init__(self, config: object = None) -> None:
            super().__init__(divergence.DivergenceConfig(ratio_warn=1e-9, ratio_patience=2))

    monkeypatch.setattr(T, "DivergenceMonitor", Touchy)
    lr = Config().resolved(blobs).lr

    def run(chunk: int) -> np.ndarray:
        monkeypatch.setattr(T.Trainer, "_chunk_size", lambda self: chunk)
        cfg = Config(data=blobs.spec, batch_size=64, steps=320, eval_every=20)
        script = [Event(200, "control", "lr", lr * 1e5), Event(300, "rescue", "rescue")]
        tr = T.Trainer(cfg, blobs, script=script)
        while tr.state.value != "FINISHED":
            tr.run_chunk()
        return tr.history.snapshot().loss.copy()

    a, b = run(20), run(2)
    same = (a == b) | (np.isnan(a) & np.isnan(b))
    assert same.all(), f"first differing step {int(np.flatnonzero(~same)[0])}"


def test_example_verifies():
    res = verify(EXAMPLE)
    assert res.identical, res.message


def _descent(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "tui", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


def test_cli_verify_and_fork(parent, tmp_path):
    out = _descent("verify", str(parent))
    assert out.returncode == 0 and out.stdout.startswith("identical"), out.stderr
    bad = tmp_path / "bad.jsonl"
    _alter(parent, bad, 500, 1e-9)
    out = _descent("verify", str(bad))
    assert out.returncode == 1 and "step 500" in out.stdout
    child = tmp_path / "child.jsonl"
    out = _descent("fork", str(parent), "--at", "400", "--lr", "1e-4", "--steps", "100",
                   "--headless", "--json", "--record", str(child))
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert summary["steps"] == 500 and summary["lr"] == 1e-4
    assert load_recording(child).header["parent"]["step"] == 400
    out = _descent("replay", str(child), "--headless", "--json")
    assert out.returncode == 0 and json.loads(out.stdout)["steps"] == 500
    out = _descent("fork", str(parent), "--at", "400", "--lr", "-1", "--headless",
                   "--no-record")
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.strip().splitlines()[-1] == (
        "descent: error: fork: learning rate must be a finite number > 0, got -1.0")
