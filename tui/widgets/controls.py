"""The controls panel: the current lr, λ, batch size, loss, optimizer and on-diverge mode.

Values are shown exactly as the README promises (``lr 1.00e-03``, ``λ 2.50e+04``,
``batch 256`` or ``batch full``, ``loss softmax``, ``opt sgd``). A value sent to the
trainer but not yet applied is shown at once, followed by ``…`` until the trainer's
control event confirms it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rich.text import Text
from textual.widgets import Static

CONTROL_ORDER = ("lr", "reg", "batch_size", "loss", "optimizer", "on_diverge")
"""The rows of the panel, top to bottom."""


def format_control(name: str, value: Any, *, full: bool = False) -> str:
    """The panel text of one control, e.g. ``lr 1.00e-03``.

    Args:
        name: lr, reg, batch_size, loss, optimizer or on_diverge.
        value: its value.
        full: the batch is the whole training set (gd, or batch >= num_train).
    """
    if name == "lr":
        return f"lr {float(value):.2e}"
    if name == "reg":
        return f"λ {float(value):.2e}"
    if name == "batch_size":
        return "batch full" if full else f"batch {int(value)}"
    if name == "loss":
        return f"loss {value}"
    if name == "optimizer":
        return f"opt {value}"
    if name == "on_diverge":
        return f"on-diverge {value}"
    return f"{name} {value}"


class ControlsPanel(Static):
    """Shows the current controls and the view settings (smoothing, y scale)."""

    def __init__(self, *, id: str | None = None) -> None:  # noqa: A002
        super().__init__("", id=id)
        self.lines: list[str] = []
        """The rows as plain text, a pending value ending in " …" (tests read them)."""

    def show(self, values: Mapping[str, Any], pending: Mapping[str, Any], *, full: bool,
             extra: list[str]) -> None:
        """Display ``values`` overridden by ``pending`` (marked ``…``), then ``extra`` rows."""
        text = Text()
        lines = []
        for name in CONTROL_ORDER:
            if name not in values and name not in pending:
                continue
            value = pending.get(name, values.get(name))
            line = format_control(name, value, full=full)
            lines.append(line + (" …" if name in pending else ""))
            text.append(line, style="bold" if name in pending else "")
            if name in pending:
                text.append(" …", style="dim")
            text.append("\n")
        for row in extra:
            lines.append(row)
            text.append(row + "\n", style="dim")
        if lines != self.lines:
            self.lines = lines
            self.update(text)
