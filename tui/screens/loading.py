"""The loading screen: what the session loader is doing, and a progress bar."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Center, Middle
from textual.screen import Screen
from textual.widgets import Label, ProgressBar


class LoadingScreen(Screen[None]):
    """Shown while the dataset loads and the kernels compile; never a frozen screen."""

    def __init__(self, title: str) -> None:
        super().__init__()
        self.title_text = title
        """The app's title, shown above the message."""
        self.message = "starting"
        """The loader's latest message (tests read it)."""

    def compose(self) -> ComposeResult:
        with Middle():
            with Center():
                yield Label(self.title_text, id="loading-title")
            with Center():
                yield Label(self.message, id="loading-message")
            with Center():
                yield ProgressBar(total=1.0, show_eta=False, id="loading-bar")

    def set_progress(self, fraction: float, message: str) -> None:
        """Show ``message``; the bar shows ``fraction`` (indeterminate when negative)."""
        self.message = message
        self.query_one("#loading-message", Label).update(message)
        bar = self.query_one("#loading-bar", ProgressBar)
        if fraction < 0:
            bar.update(total=None)
        else:
            bar.update(total=1.0, progress=min(1.0, fraction))
