"""The bottom line: the most used keys, or a short note after an action."""

from __future__ import annotations

from textual.timer import Timer
from textual.widgets import Static


class KeyHints(Static):
    """Shows ``hints``; :meth:`note` replaces them for a few seconds."""

    def __init__(self, hints: str, *, id: str | None = None) -> None:  # noqa: A002
        super().__init__(hints, id=id)
        self.hints = hints
        """The default text: the keys."""
        self.current = hints
        """What is shown now (tests read it)."""
        self._timer: Timer | None = None

    def note(self, text: str, seconds: float = 4.0) -> None:
        """Show ``text`` instead of the hints for ``seconds``."""
        self.current = text
        self.update(text)
        self.set_class(True, "-note")
        if self._timer is not None:
            self._timer.stop()
        self._timer = self.set_timer(seconds, self._restore)

    def _restore(self) -> None:
        self.current = self.hints
        self.update(self.hints)
        self.set_class(False, "-note")
        self._timer = None
