"""The replay's "go to step" prompt: type a step number, Enter seeks, Escape cancels."""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Label

from tui.widgets.ordered_input import OrderedInput


class GotoScreen(ModalScreen[int | None]):
    """Returns the step typed (an int within 0..total) or None when cancelled."""

    BINDINGS = [Binding("escape", "cancel", "cancel")]

    def __init__(self, total: int) -> None:
        super().__init__()
        self.total = total
        """The last step the recording has."""

    def compose(self) -> ComposeResult:
        with Vertical(id="goto-box"):
            yield Label(f"go to step (0–{self.total}):")
            yield OrderedInput(id="goto-input", compact=True, type="integer")
            yield Label("", id="goto-msg")

    def on_mount(self) -> None:
        field = self.query_one("#goto-input", Input)
        field.focus()
        hand_over = getattr(self.app, "hand_held_keys_to", None)
        if hand_over is not None:  # the digits typed right after ":"
            hand_over(field)

    @on(Input.Submitted)
    def _submitted(self, event: Input.Submitted) -> None:
        event.stop()
        try:
            step = int(event.value.strip())
        except ValueError:
            step = -1
        if not 0 <= step <= self.total:
            self.query_one("#goto-msg", Label).update(
                f"{event.value!r} is not a step between 0 and {self.total}"
            )
            return
        self.dismiss(step)

    def action_cancel(self) -> None:
        self.dismiss(None)
