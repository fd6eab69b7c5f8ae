"""Messages exchanged between the dashboard's widgets, screens and workers.

Small dataclasses, one line of docstring each (the toolong convention). Messages posted
from a worker thread use ``post_message``, which is thread-safe and never blocks.
"""

from __future__ import annotations

from dataclasses import dataclass

from textual.message import Message


@dataclass
class LoadProgress(Message):
    """The session loader reports progress (posted from the loader thread)."""

    fraction: float
    """Done so far, 0..1 (a negative value means unknown)."""
    text: str
    """What is happening, e.g. "compiling kernels (first run only)"."""

    def can_replace(self, message: Message) -> bool:
        """Only the latest progress matters."""
        return isinstance(message, LoadProgress)


@dataclass
class LoadFinished(Message):
    """The loader thread is done: the session is handed over, or it failed."""

    error: str = ""
    """The failure as one line ("" when the session was built)."""


@dataclass
class ControlEntered(Message):
    """The user typed a value for a control and pressed Enter."""

    name: str
    """The control: "lr", "reg" or "batch_size"."""
    text: str
    """The text as typed (validated by the receiver)."""


@dataclass
class EditClosed(Message):
    """The user left the value editor (Escape)."""
