"""The value editor: type an exact lr, λ or batch size; Enter applies, Escape leaves.

Each row is ``label [input] message``: a refused value leaves everything unchanged and
the reason appears beside the input that was refused.
"""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import Input, Label

from tui.messages import ControlEntered, EditClosed
from tui.widgets.ordered_input import OrderedInput

EDITABLE = (("lr", "lr"), ("reg", "λ"), ("batch_size", "batch"))
"""(control name, label) of the editable values, in Tab order."""


class ControlEditor(Vertical):
    """Three inputs; posts ControlEntered on Enter and EditClosed on Escape."""

    BINDINGS = [Binding("escape", "close", "leave editing", show=False)]

    def compose(self) -> ComposeResult:
        for name, label in EDITABLE:
            with Horizontal(classes="edit-row"):
                yield Label(label, classes="edit-label")
                yield OrderedInput(id=f"edit-{name}", compact=True, select_on_focus=True)
                yield Label("", id=f"msg-{name}", classes="edit-msg")

    def open(self, values: dict[str, str]) -> None:
        """Show the editor with the current values filled in and focus the lr input."""
        for name, _ in EDITABLE:
            self.query_one(f"#edit-{name}", Input).value = values.get(name, "")
            self.set_message(name, "")
        self.display = True
        self.query_one("#edit-lr", Input).focus()

    def set_message(self, name: str, message: str, *, error: bool = False) -> None:
        """Show ``message`` beside the input of ``name`` (red when ``error``)."""
        msg = self.query_one(f"#msg-{name}", Label)
        msg.update(message)
        msg.set_class(error, "-error")

    def message_of(self, name: str) -> str:
        """The message shown beside ``name``'s input (tests read it)."""
        return str(self.query_one(f"#msg-{name}", Label).content)

    @on(Input.Submitted)
    def _submitted(self, event: Input.Submitted) -> None:
        event.stop()
        name = (event.input.id or "").removeprefix("edit-")
        self.post_message(ControlEntered(name, event.value))

    def action_close(self) -> None:
        self.post_message(EditClosed())
