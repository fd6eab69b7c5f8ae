"""The header line: state, dataset, loss, optimizer, step, epoch, speed, elapsed time."""

from __future__ import annotations

from rich.text import Text
from textual.app import RenderResult
from textual.widget import Widget

STATE_STYLES = {
    "RUNNING": "bold black on green",
    "PLAYING": "bold black on green",
    "PAUSED": "bold black on yellow",
    "DIVERGED": "bold white on red",
    "FINISHED": "bold black on cyan",
}
"""Badge style per state (NO_COLOR still shows the word, in reverse video)."""


class StatusBar(Widget):
    """One line; parts are dropped from the right end when the terminal is narrow."""

    def __init__(self, *, id: str | None = None) -> None:  # noqa: A002
        super().__init__(id=id)
        self.state = ""
        """The state word shown in the badge, e.g. RUNNING."""
        self.parts: list[str] = []
        """Fields after the badge, most important first."""

    def set_fields(self, state: str, parts: list[str]) -> None:
        """Show new values; repaints only when the text changed."""
        if state != self.state or parts != self.parts:
            self.state, self.parts = state, parts
            self.refresh()

    @property
    def plain(self) -> str:
        """The full line as plain text (tests and the tmux capture read this)."""
        return "  ".join([self.state, *self.parts])

    def render(self) -> RenderResult:
        width = self.size.width
        text = Text(f" {self.state} ", style=STATE_STYLES.get(self.state, "reverse"))
        used = text.cell_len
        for part in self.parts:
            piece = "  " + part
            if used + len(piece) > width:
                break
            text.append(piece)
            used += len(piece)
        return text
