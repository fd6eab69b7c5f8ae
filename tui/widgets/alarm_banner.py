"""The red alarm banner: which rule fired, at which step, with which loss, and the way out."""

from __future__ import annotations

from textual.widgets import Static


class AlarmBanner(Static):
    """Hidden while training is healthy; ``show_alarm`` makes it visible."""

    def __init__(self, *, id: str | None = None) -> None:  # noqa: A002
        super().__init__("", id=id)
        self.message = ""
        """The text shown, "" when hidden (tests read it)."""

    def show_alarm(self, message: str) -> None:
        """Show ``message`` (one or two lines)."""
        if message != self.message:
            self.message = message
            self.update(message)
        if not self.display:
            self.display = True

    def hide(self) -> None:
        """Hide the banner (a no-op when hidden: the dashboard calls this every frame)."""
        self.message = ""
        if self.display:
            self.display = False
