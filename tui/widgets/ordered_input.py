"""An Input whose editing keys keep their place among the characters typed around them.

Textual's Input inserts a printable character as soon as its key event arrives, while a
bound key (backspace, delete, the arrows, Home/End, Enter) bubbles up to the app, which
runs the binding's action afterwards. When keys arrive together (a fast typist over SSH,
several keys read from the terminal at once) a character typed after a backspace is then
inserted before the backspace runs: ``ab⌫⌫⌫1e-3`` leaves ``ab1`` plus whatever the late
backspaces did not delete (Textual issue #6605). :class:`OrderedInput` runs the binding of
a non-printable key itself, as soon as the key reaches it, so every key acts in the order
it was typed. The app hands each key to the widget focused when the key is read, so keys
typed right after Tab (or Escape) still come here; they are passed on to the widget that
has the focus by then. An Escape read together with the letter after it arrives as one
alt+letter key; that is taken as Escape (the input closes) and then the letter, which the
app holds until the input has closed (Textual reads Escape fused with some symbols, such
as ``+``, as the symbol alone: there the Escape is lost before it gets here).
"""

from __future__ import annotations

from textual import events
from textual.widgets import Input


class OrderedInput(Input):
    """An :class:`~textual.widgets.Input` that runs bound keys in order with typed ones."""

    async def _on_key(self, event: events.Key) -> None:
        defer = getattr(self.app, "defer_key", None)
        if defer is not None and defer(event):  # an Esc split below is closing this input
            event.stop()
            event.prevent_default()
            return
        if event.key.startswith("alt+") and await self._split_escape(event):
            return
        focused = self.screen.focused
        if focused is not self:  # an earlier key of the same burst moved the focus on
            event.stop()
            event.prevent_default()
            target = focused if focused is not None else self.screen
            target.post_message(events.Key(event.key, event.character))
            return
        await super()._on_key(event)  # a printable key is inserted (and stopped) here
        if event.is_printable:
            return
        active = self.screen.active_bindings.get(event.key)
        if active is None or not active.enabled or active.binding.priority:
            return  # unbound (it bubbles as before); priority keys never get this far
        event.stop()
        event.prevent_default()
        await self.app.run_action(active.binding.action, active.node)

    async def _split_escape(self, event: events.Key) -> bool:
        """Esc and the key typed after it, read together, reach the app as one alt+key
        (``\\x1bl`` is alt+l). Here that is Esc (leave the input) and then the key, which
        the app holds until the input has closed. Returns False where Esc does nothing."""
        escape = self.screen.active_bindings.get("escape")
        hold = getattr(self.app, "hold_keys", None)
        if escape is None or not escape.enabled or hold is None:
            return False
        event.stop()
        event.prevent_default()
        hold(events.Key(event.key.removeprefix("alt+"), event.character))
        await self.app.run_action(escape.binding.action, escape.node)
        return True
