"""The command line as a user runs it: real subprocesses, exit statuses, one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

DESCENT = [sys.executable, "-m", "tui"]


def descent(
    *args: str, cwd: Path | None = None, timeout: float = 120
) -> subprocess.CompletedProcess:
    env = os.environ | {"COLUMNS": "100"}
    return subprocess.run([*DESCENT, *args], capture_output=True, text=True, timeout=timeout,
                          cwd=cwd, env=env)


def test_headless_json_has_the_promised_fields(tmp_path):
    r = descent("train", "--headless", "--steps", "300", "--json", "--data", "synthetic:1200",
                "--no-record")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 1  # exactly one JSON object on stdout
    out = json.loads(lines[0])
    for key in ("steps", "loss", "train_acc", "val_acc", "steps_per_s", "diverged", "alarms",
                "rescues", "recording", "dataset", "loss_kind", "optimizer", "lr", "reg",
                "batch_size"):
        assert key in out, key
    assert out["steps"] == 300 and out["diverged"] is False and out["recording"] is None
    assert out["dataset"] == "synthetic:1200" and out["loss_kind"] == "softmax"
    assert 0.0 <= out["val_acc"] <= 1.0 and out["steps_per_s"] > 0
    assert "step" in r.stderr  # progress went to stderr


def test_default_subcommand_is_train():
    r = descent("--headless", "--steps", "5", "--json", "--data", "blobs", "--no-record")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["steps"] == 5


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--headless", "--lr", "-1", "--data", "blobs"], "learning rate"),
        (["--headless", "--lr", "abc"], "not a number"),
        (["--headless", "--loss", "hinge"], "invalid choice"),
        (["--headless", "--batch", "99999", "--data", "blobs"], "larger than the training set"),
        (["--headless", "--data", "imagenet"], "imagenet"),
        (["--headless", "--data", "cifar10:/nonexistent/dir"], "/nonexistent/dir"),
        (["--json", "--data", "blobs"], "--json needs --headless"),
        (["--headless", "--reg", "nan", "--data", "blobs"], "λ"),
    ],
)
def test_bad_input_exits_2_with_one_line(args, needle):
    r = descent(*args, "--no-record")
    assert r.returncode == 2, (r.stdout, r.stderr)
    err = r.stderr.strip()
    assert len(err.splitlines()) == 1, err
    assert needle in err and "Traceback" not in err


def test_divergence_headless_stops_with_status_3():
    r = descent("train", "--headless", "--json", "--steps", "3000", "--data", "synthetic:1200",
                "--lr", "1", "--no-record")
    assert r.returncode == 3, r.stderr
    out = json.loads(r.stdout)
    assert out["diverged"] is True and out["alarms"] >= 1 and out["steps"] < 3000
    assert "diverged at step" in r.stderr


def test_gradcheck_passes_for_both_losses():
    for loss in ("softmax", "svm"):
        r = descent("gradcheck", "--loss", loss, "--data", "synthetic:600")
        assert r.returncode == 0, r.stdout + r.stderr


def test_help_lists_every_subcommand():
    r = descent("--help")
    assert r.returncode == 0
    for sub in ("train", "replay", "verify", "fork", "gradcheck", "bench"):
        assert sub in r.stdout


@pytest.mark.parametrize("flag", ["--repeats", "--threads"])
def test_bench_rejects_zero_in_one_line_before_measuring(flag):
    # 0 used to be taken for "not given": a full four-minute bench at the defaults ran.
    r = descent("bench", flag, "0", "--no-compile", timeout=60)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        "descent bench: --repeats and --threads must be at least 1"]
    assert r.stdout == ""


def test_eval_test_reports_the_held_out_test_set_only_when_asked():
    base = ("train", "--headless", "--steps", "50", "--json", "--data", "synthetic:1200",
            "--no-record")
    plain = json.loads(descent(*base).stdout)
    assert "test_acc" not in plain
    r = descent(*base, "--eval-test")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert 0.0 <= out["test_acc"] <= 1.0 and out["test_loss"] > 0


def _headless_run(tmp_path: Path, signals_in_third_chunk: int) -> tuple[int, list[int], Path]:
    """run_headless on blobs, recording; the third chunk sends this process SIGINT
    `signals_in_third_chunk` times before it steps. Returns the status, the step count
    after each chunk that ran to its end, and the recording."""
    import signal

    from engine.config import Config
    from tui import cli

    dataset = cli.load_data("blobs", None, None)
    rec = tmp_path / "run.jsonl"
    trainer, recorder = cli.build_trainer(Config(data="blobs"), dataset, rec)
    real_chunk, ends = trainer.run_chunk, []

    def chunk() -> None:
        if len(ends) == 2:
            for _ in range(signals_in_third_chunk):
                os.kill(os.getpid(), signal.SIGINT)  # handled before os.kill returns
        real_chunk()
        ends.append(trainer.step)

    trainer.run_chunk = chunk
    status = cli.run_headless(trainer, recorder, json_out=True)
    return status, ends, rec


def test_ctrl_c_headless_ends_the_run_after_the_chunk_it_lands_in(tmp_path, capsys):
    """A KeyboardInterrupt raised where the signal lands could tear a chunk (steps in the
    history but not in the recording) or break Numba loading a kernel from its cache (a
    traceback on the next kernel call): the first signal only asks the loop to stop."""
    from engine.recording import load_recording

    status, ends, rec = _headless_run(tmp_path, signals_in_third_chunk=1)
    assert status == 130
    assert len(ends) == 3  # the chunk the signal landed in ran to its end, and no more ran
    r = load_recording(rec)
    assert r.complete and r.summary["ended_by"] == "SIGINT"
    assert r.summary["steps"] == r.steps == ends[-1]
    assert json.loads(capsys.readouterr().out)["steps"] == ends[-1]


def test_a_second_ctrl_c_headless_stops_at_once_and_still_closes_the_recording(tmp_path):
    from engine.recording import load_recording

    status, ends, rec = _headless_run(tmp_path, signals_in_third_chunk=2)
    assert status == 130
    assert len(ends) == 2  # the second signal raised before the third chunk stepped
    r = load_recording(rec)
    assert r.complete and r.summary["ended_by"] == "SIGINT"
    assert r.summary["steps"] == r.steps == ends[-1]


def test_ctrl_c_while_the_kernels_load_headless_leaves_no_recording(tmp_path, monkeypatch,
                                                                     capsys):
    """The kernels load (or compile, the first time) before the recording opens, as in
    the dashboard's loader: interrupted there, there is nothing to close."""
    from engine import kernels
    from tui import cli

    def interrupted() -> float:
        raise KeyboardInterrupt

    monkeypatch.setattr(kernels, "warmup", interrupted)
    rec = tmp_path / "run.jsonl"
    status = cli.main(["train", "--headless", "--data", "blobs", "--steps", "100",
                       "--record", str(rec)])
    assert status == 130
    assert not rec.exists()
    assert capsys.readouterr().err.strip().splitlines()[-1] == "descent: interrupted"
