"""The trainer: determinism, controls at chunk boundaries, pause/step, the ladder,
divergence reactions, and scripts that reproduce a run bit for bit."""

from __future__ import annotations

import math

import numpy as np
import pytest

from engine import trainer as trainer_mod
from engine.config import Config
from engine.trainer import State, Trainer


def make(ds, **kw):
    kw.setdefault("eval_every", 100)
    return Trainer(Config(data=ds.spec, **kw), ds)


def run_steps(t: Trainer, n: int) -> None:
    t.config = t.config.replace(steps=t.step + n)
    t._finished = False
    while t.step < t.config.steps:
        assert t.run_chunk() > 0, f"stuck at step {t.step} in state {t.state}"
    t.config = t.config.replace(steps=None)
    t._finished = False


def losses(t: Trainer) -> np.ndarray:
    return np.array(t.history.snapshot().loss)


def test_same_seed_same_numbers_other_seed_other_numbers(tiny):
    a, b, c = make(tiny, seed=1), make(tiny, seed=1), make(tiny, seed=2)
    for t in (a, b, c):
        run_steps(t, 300)
    np.testing.assert_array_equal(losses(a), losses(b))
    np.testing.assert_array_equal(a.W, b.W)
    assert not np.array_equal(losses(a), losses(c))


def test_chunking_never_changes_a_number(tiny, monkeypatch):
    a = make(tiny, seed=4)
    run_steps(a, 250)
    b = make(tiny, seed=4)
    monkeypatch.setattr(Trainer, "_chunk_size", lambda self: 3)
    run_steps(b, 250)
    np.testing.assert_array_equal(losses(a), losses(b))
    np.testing.assert_array_equal(a.W, b.W)
    assert [e.step for e in a.history.evaluations()] == [e.step for e in b.history.evaluations()]


def test_a_control_lands_at_the_next_chunk_boundary_and_shows_in_history(tiny):
    t = make(tiny, seed=0)
    run_steps(t, 50)
    k = t.step
    lr0 = t.config.lr
    t.send("lr", lr0 * 2)
    assert t.config.lr == lr0  # nothing happens until the trainer's next chunk
    run_steps(t, 10)
    ev = [e for e in t.history.snapshot().events if e.kind == "control"]
    assert len(ev) == 1 and ev[0].name == "lr" and ev[0].step == k
    assert ev[0].value == lr0 * 2 and ev[0].old == lr0
    assert t.config.lr == lr0 * 2


def test_invalid_control_is_refused_and_changes_nothing(tiny):
    t = make(tiny)
    lr0 = t.config.lr
    t.send("lr", -1.0)
    t.send("batch_size", tiny.num_train + 5)
    run_steps(t, 5)
    assert t.config.lr == lr0 and t.config.batch_size == 256
    refused = [e for e in t.history.snapshot().events if e.name == "refused"]
    assert len(refused) == 2 and "learning rate" in refused[0].detail


def test_pause_stops_the_counter_and_step_runs_exactly_one(tiny):
    t = make(tiny)
    run_steps(t, 20)
    t.send("pause")
    for _ in range(5):
        assert t.run_chunk() == 0
    assert t.step == 20 and t.state is State.PAUSED
    t.send("step")
    t.run_chunk()
    assert t.step == 21
    assert t.run_chunk() == 0
    t.send("toggle_pause")
    assert t.run_chunk() > 0 and t.state is State.RUNNING


def test_every_control_is_applied(tiny):
    t = make(tiny)
    for name, value in [("reg", 0.0), ("batch_size", 64), ("loss", "svm"),
                        ("optimizer", "local"), ("on_diverge", "rescue"), ("reset", None)]:
        t.send(name, value)
    w0 = t.W.copy()
    run_steps(t, 3)
    c = t.config
    assert (c.reg, c.batch_size, c.loss, c.optimizer, c.on_diverge) == (
        0.0, 64, "svm", "local", "rescue")
    assert not np.array_equal(w0, t.W)
    names = [e.name for e in t.history.snapshot().events if e.kind == "control"]
    assert names == ["reg", "batch_size", "loss", "optimizer", "on_diverge", "reset"]


def test_full_set_batch_is_full_batch_gradient_descent(tiny):
    a = make(tiny, seed=5, batch_size=tiny.num_train)
    b = make(tiny, seed=5, optimizer="gd")
    run_steps(a, 5)
    run_steps(b, 5)
    np.testing.assert_array_equal(losses(a), losses(b))
    assert a.summary()["batch_size"] == tiny.num_train


def test_script_reproduces_a_steered_run_bit_for_bit(tiny):
    a = make(tiny, seed=9, on_diverge="ignore")
    run_steps(a, 130)
    a.send("lr", a.config.lr * 10)
    run_steps(a, 70)
    a.send("loss", "svm")
    a.send("batch_size", 32)
    run_steps(a, 90)
    a.send("reset")
    run_steps(a, 40)
    events = a.history.snapshot().events
    b = Trainer(Config(data=tiny.spec, seed=9, eval_every=100, on_diverge="ignore"), tiny,
                script=events)
    run_steps(b, 330)
    np.testing.assert_array_equal(losses(a), losses(b))
    alarms = [(e.step, e.name) for e in events if e.kind == "alarm"]
    assert alarms == [(e.step, e.name) for e in b.history.snapshot().events
                      if e.kind == "alarm"]
    np.testing.assert_array_equal(a.W, b.W)


def test_sgd_beats_local_search_beats_random_search(tiny):
    """CS231n's ladder, after the same number of steps (loss evaluations)."""
    acc = {}
    for opt in ("random", "local", "sgd"):
        t = make(tiny, seed=0, optimizer=opt, loss="softmax")
        run_steps(t, 600)
        acc[opt] = t.close()["val_acc"]
    assert acc["sgd"] > acc["local"] > acc["random"] > 1 / tiny.num_classes, acc


def test_sgd_drives_the_loss_well_under_its_start(tiny):
    t = make(tiny, seed=0)
    run_steps(t, 800)
    loss = losses(t)
    assert loss[-100:].mean() < 0.8 * loss[0]


@pytest.mark.parametrize("loss", ["softmax", "svm"])
def test_a_huge_learning_rate_raises_the_alarm_and_pauses(tiny, loss):
    t = make(tiny, seed=0, loss=loss, on_diverge="pause")
    run_steps(t, 100)
    t.send("lr", t.config.lr * 1e4)
    for _ in range(200):
        t.run_chunk()
        if t.alarm:
            break
    assert t.alarm is not None and t.state is State.DIVERGED
    step = t.step
    assert t.run_chunk() == 0 and t.step == step  # paused by the alarm
    kinds = [e.kind for e in t.history.snapshot().events]
    assert "alarm" in kinds and "pause" in kinds


def test_rescue_restores_the_healthy_weights_and_lowers_lr(tiny, monkeypatch):
    monkeypatch.setattr(Trainer, "_chunk_size", lambda self: 8)  # see the test below
    t = make(tiny, seed=0, on_diverge="pause")
    run_steps(t, 300)
    big = t.config.lr * 100  # diverges
    t.send("lr", big)
    while t.alarm is None:
        t.run_chunk()
    loss_at_alarm = t.alarm.loss
    healthy_step, healthy_w, healthy_lr = t._healthy
    assert 0 < healthy_step <= t.alarm.step  # taken before the blow-up, while healthy
    t.send("rescue")
    t._apply_controls()
    np.testing.assert_array_equal(t.W, healthy_w)
    ev = [e for e in t.history.snapshot().events if e.kind == "rescue"][0]
    assert ev.value == t.config.lr == min(big / 10, healthy_lr)
    assert t.alarm is None and t.state is State.RUNNING
    assert f"step {healthy_step}" in ev.detail
    # training goes on from the restored weights, below the loss that raised the alarm
    run_steps(t, 200)
    assert t.alarm is None and t.rescues == 1
    assert np.all(losses(t)[ev.step:] < loss_at_alarm)


def test_rescue_goes_back_to_the_healthy_lr_when_it_is_lower(tiny, monkeypatch):
    """lr x10^4 then one rescue: back to the weights and the lr of the last healthy
    evaluation (a tenth of the blown-up rate would still be x10^3 and blow up again)."""
    monkeypatch.setattr(Trainer, "_chunk_size", lambda self: 8)
    t = make(tiny, seed=0, on_diverge="pause")
    run_steps(t, 300)
    lr = t.config.lr
    t.send("lr", lr * 1e4)
    while t.alarm is None:
        t.run_chunk()
    t.send("rescue")
    t._apply_controls()
    ev = [e for e in t.history.snapshot().events if e.kind == "rescue"][0]
    assert t.config.lr == ev.value == lr and ev.old == pytest.approx(lr * 1e4)
    assert "→ " + f"{lr:.2e}" in ev.detail
    run_steps(t, 300)
    assert t.alarm is None and t.rescues == 1


def test_a_scripted_rescue_sets_the_recorded_lr(tiny):
    """A re-run takes the rescue's lr from the recording (made, perhaps, under another
    rule) instead of computing it again."""
    from engine.history import Event

    script = [Event(150, "control", "lr", 1e3), Event(160, "rescue", "rescue", 0.0123)]
    t = Trainer(Config(data=tiny.spec, seed=3, eval_every=100, steps=170,
                       on_diverge="ignore"), tiny, script=script)
    t.run()
    assert t.rescues == 1 and t.config.lr == 0.0123


def test_rescued_weights_equal_the_snapshot(tiny):
    t = make(tiny, seed=0)
    run_steps(t, 200)
    snap = t._healthy[1].copy()
    t.W[...] = np.nan
    t.send("rescue")
    t._apply_controls()
    np.testing.assert_array_equal(t.W, snap)


def test_nan_forced_into_weights_is_caught_at_the_next_step(tiny):
    t = make(tiny, seed=0, on_diverge="pause")
    run_steps(t, 50)
    t.W[3, 2] = np.nan
    t.run_chunk()
    assert t.alarm is not None and t.alarm.rule == "nonfinite" and t.alarm.step == 50
    summary = t.close()
    assert summary["diverged"] is True


def test_on_diverge_stop_finishes_and_rescue_continues(tiny, monkeypatch):
    # A live alarm is acted on at the end of its chunk, and chunks follow the machine's
    # speed; after a rescue the run goes on from there, so how it continues depends on
    # timing (once, in CI, lr x10 after three rescues diverged again and the run paused).
    # Fixed chunks make these tests the same everywhere.
    monkeypatch.setattr(Trainer, "_chunk_size", lambda self: 8)
    t = make(tiny, seed=0, on_diverge="stop", lr=1e-1)
    for _ in range(300):
        if t.run_chunk() == 0:
            break
    assert t.state is State.FINISHED and t.summary()["diverged"], (t.state, t.step,
                                                                   t.summary())
    lr0 = Config().resolved(tiny).lr
    r = make(tiny, seed=0, on_diverge="rescue", lr=lr0 * 2000)
    run_steps(r, 300)
    # x2000, x200 and x20 diverge: three rescues to the initial weights, a tenth of the
    # rate each time (the only healthy weights were taken at the same rate), then x2 trains
    lrs = [e.value for e in r.history.snapshot().events if e.kind == "rescue"]
    assert lrs == pytest.approx([lr0 * 200, lr0 * 20, lr0 * 2]) and r.state is State.RUNNING, (
        r.state, r.step, r.history.snapshot().events)


def test_healthy_runs_raise_no_alarm(tiny):
    for loss in ("softmax", "svm"):
        for batch in (32, 256):
            t = make(tiny, seed=1, loss=loss, batch_size=batch)
            run_steps(t, 1500)
            assert t.alarms == 0, (loss, batch, t.history.snapshot().events)


def test_steps_option_finishes_the_run(tiny):
    t = Trainer(Config(data=tiny.spec, steps=120), tiny)
    summary = t.run()
    assert t.step == 120 and t.state is State.FINISHED
    assert summary["steps"] == 120
    final = t.close()
    assert t.history.evaluations()[-1].step == 120 and final["val_acc"] is not None


def test_chunks_stay_short(tiny):
    assert trainer_mod.CHUNK_SECONDS <= 0.05


def test_repeated_divergence_rescues_up_to_the_limit_then_pauses(tiny):
    t = make(tiny, seed=0, on_diverge="rescue", lr=0.5)  # 10^6 x the default: a tenth,
    # a hundredth and a thousandth of it all diverge
    for _ in range(2000):
        if t.run_chunk() == 0:
            break
    assert t.rescues == trainer_mod.MAX_AUTO_RESCUES
    assert t.state is State.DIVERGED and t.run_chunk() == 0  # held: paused by the alarm
    lrs = [e.value for e in t.history.snapshot().events if e.kind == "rescue"]
    assert lrs == sorted(lrs, reverse=True) and len(set(lrs)) == len(lrs)


def test_a_scripted_rescue_at_the_last_step_comes_before_the_final_evaluation(tiny):
    """An automatic rescue lands at the end of the chunk that raised the alarm, which can
    be the run's last step: the live run closed with the rescued weights, so a re-run
    (verify) must apply the recorded rescue before its final evaluation too."""
    from engine.history import Event

    script = [Event(150, "control", "lr", 1e3), Event(200, "rescue", "rescue")]
    t = Trainer(Config(data=tiny.spec, seed=3, eval_every=100, steps=200,
                       on_diverge="ignore"), tiny, script=script)
    t.run()
    healthy_w = t._healthy[1].copy()
    t.close()
    assert t.rescues == 1
    np.testing.assert_array_equal(t.W, healthy_w)
    last = t.history.evaluations()[-1]
    assert last.step == 200 and math.isfinite(last.val_loss)


def test_step_and_eval_seconds_count_only_steps_and_evaluations(tiny):
    t = make(tiny, seed=0, eval_every=50)
    run_steps(t, 120)  # evaluations at 0, 50 and 100
    assert t.step_seconds > 0 and t.eval_seconds > 0
    steps, evals = t.step_seconds, t.eval_seconds
    t.send("pause")
    for _ in range(3):
        assert t.run_chunk() == 0  # paused: no step, no evaluation
    assert (t.step_seconds, t.eval_seconds) == (steps, evals)
    t.send("resume")
    t.config = t.config.replace(eval_every=10**6)
    run_steps(t, 30)  # no evaluation is due in these steps
    assert t.step_seconds > steps
    assert t.eval_seconds == evals


def test_measure_bookkeeping_splits_the_wall_time_of_the_steps_it_ran(tiny):
    t = make(tiny, seed=0, eval_every=20)
    s0 = t.step
    m = trainer_mod.measure_bookkeeping(t, 0.05)
    assert m["n_steps"] == t.step - s0 > 0
    assert m["chunks"] >= 1
    assert m["steps"] > 0 and m["eval"] > 0  # 20-step intervals: it crossed one
    assert m["steps"] + m["eval"] <= m["wall"]
    assert m["other"] == pytest.approx(m["wall"] - m["steps"] - m["eval"])


def test_measure_bookkeeping_stops_when_the_run_finishes(tiny):
    t = make(tiny, seed=0, steps=40)
    m = trainer_mod.measure_bookkeeping(t, 60.0)  # would run a minute if it ignored the end
    assert t.state is State.FINISHED
    assert m["n_steps"] == 40


def test_bench_bookkeeping_gives_a_row_per_batch_with_its_numbers():
    rows = trainer_mod.bench_bookkeeping(spec="blobs", batches=(8, 64), seconds=0.02,
                                         repeats=1)
    assert [r[0] for r in rows] == ["bookkeeping sgd B=8", "bookkeeping sgd B=64"]
    for _, mine, steps, share, note in rows:
        assert float(mine.removesuffix(" µs/step")) >= 0
        assert float(steps.removesuffix(" µs/step")) > 0
        assert 0 <= float(share.removesuffix("%")) <= 100
        assert "evaluations every 200 steps" in note and "blobs" in note


def test_bench_bookkeeping_takes_the_bench_repeats():
    from types import SimpleNamespace

    rows = trainer_mod.bench_bookkeeping(SimpleNamespace(repeats=2), spec="blobs",
                                         batches=(8,), seconds=0.01)
    assert rows[0][4].endswith("blobs, median of 2")
