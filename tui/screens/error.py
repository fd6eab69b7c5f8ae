"""The error screen: one clear line saying why descent could not start (or stopped)."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Center, Middle
from textual.screen import Screen
from textual.widgets import Label


class ErrorScreen(Screen[None]):
    """Shows ``message``; q, Enter or Escape leaves the app with ``exit_code``."""

    BINDINGS = [
        Binding("q", "leave", "quit"),
        Binding("enter", "leave", "quit", show=False),
        Binding("escape", "leave", "quit", show=False),
    ]

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__()
        self.message = message
        """The one-line error."""
        self.exit_code = exit_code
        """Returned by the app when the user leaves (2: bad input or usage)."""

    def compose(self) -> ComposeResult:
        with Middle():
            with Center():
                yield Label("descent stopped", id="error-title")
            with Center():
                yield Label(self.message, id="error-message")
            with Center():
                yield Label("press q, Enter or Escape to exit", id="error-hint")

    def action_leave(self) -> None:
        shutdown = getattr(self.app, "shutdown", None)
        if shutdown is not None:
            shutdown(self.exit_code)
        else:
            self.app.exit(self.exit_code, return_code=self.exit_code)
