"""engine/ is a plain library: importing it never pulls in textual (DESIGN.md)."""

import subprocess
import sys


def test_engine_imports_without_textual():
    code = (
        "import sys, engine, engine.trainer, engine.data, engine.kernels, engine.optim, "
        "engine.history, engine.config, engine.divergence, engine.reference, engine.gradcheck\n"
        "import importlib.util\n"
        "for m in ('engine.recording', 'engine.replay', 'engine.verify', 'engine.bench'):\n"
        "    if importlib.util.find_spec(m): importlib.import_module(m)\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('textual', 'tui'))\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", "import importlib\n" + code],
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
