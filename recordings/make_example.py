"""Make recordings/example.jsonl: a short session recorded by descent itself.

    .venv/bin/python recordings/make_example.py [OUT] [--factor F]

SGD on ``synthetic:600`` with several control changes (λ, batch size, lr, a pause, the
loss), then an lr blow-up at step 1300 that raises an alarm and is rescued automatically
(``--on-diverge rescue``: last healthy weights and, being lower than a tenth of the
blown-up rate, the lr they were trained at). Controls are sent when the
trainer stands exactly on an evaluation step (chunks always stop there), so the file is
the same on every machine apart from the timestamps. The script checks that the result
has one alarm and one rescue and that ``verify`` reproduces it bit for bit.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.config import Config  # noqa: E402
from engine.data import load_dataset  # noqa: E402
from engine.recording import Recorder, load_recording  # noqa: E402
from engine.trainer import Trainer  # noqa: E402
from engine.verify import verify  # noqa: E402

SPEC = "synthetic:600"
STEPS = 2000


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", nargs="?", default=str(Path(__file__).parent / "example.jsonl"))
    ap.add_argument("--factor", type=float, default=30.0,
                    help="lr multiple at step 1300 (must blow up)")
    args = ap.parse_args()
    ds = load_dataset(SPEC)
    cfg = Config(data=SPEC, batch_size=64, steps=STEPS, eval_every=100,
                 on_diverge="rescue").resolved(ds)
    lr = cfg.lr
    assert lr is not None and cfg.reg is not None
    controls = {
        300: [("reg", cfg.reg * 10)],
        600: [("batch_size", 32)],
        900: [("lr", lr / 2)],
        1100: [("pause", None), ("resume", None)],
        1300: [("lr", lr * args.factor)],
        1700: [("loss", "svm"), ("lr", lr)],
    }
    rec = Recorder(args.out, cfg, ds)
    tr = Trainer(cfg, ds, observers=[rec])
    while tr.state.value != "FINISHED":
        for name, value in controls.pop(tr.step, []):
            tr.send(name, value)
        tr.run_chunk()
    tr.close()
    if rec.error:
        print(rec.error, file=sys.stderr)
        return 1
    r = load_recording(args.out)
    for e in r.events:
        print(f"step {e.step:5d}  {e.kind:8s} {e.name:12s} {e.detail}")
    kinds = [e.kind for e in r.events]
    print(f"{r.steps} steps, {len(r.evaluations)} evaluations; alarms {kinds.count('alarm')}, "
          f"rescues {kinds.count('rescue')}, warnings {kinds.count('warning')}")
    result = verify(args.out)
    print(result.message)
    ok = kinds.count("alarm") == 1 and kinds.count("rescue") == 1 and result.identical
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
