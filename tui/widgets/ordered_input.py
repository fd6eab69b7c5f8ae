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
has the focus by then.
"""

from __future__ import annotations

from textual import events
from textual.widgets import Input


class OrderedInput(Input):
    """An :class:`~textual.widgets.Input` that runs bound keys in order with typed ones."""

    async def _on_key(self, event: events.Key) -> None:
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
