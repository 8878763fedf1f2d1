"""The per-request budget: editor calls and wall-clock seconds (checked between backend calls)."""

from __future__ import annotations

from time import monotonic


class Budget:
    """Counts editor calls and time since the request started; ``None`` limits are unlimited."""

    def __init__(self, max_editor_calls: int | None = None, max_seconds: float | None = None):
        self.max_editor_calls = max_editor_calls
        self.max_seconds = max_seconds
        self.editor_calls = 0
        self.started = monotonic()

    @property
    def seconds(self) -> float:
        return monotonic() - self.started

    def spend_call(self) -> None:
        self.editor_calls += 1

    def out_of_time(self) -> bool:
        return self.max_seconds is not None and self.seconds >= self.max_seconds

    def out_of_calls(self) -> bool:
        return self.max_editor_calls is not None and self.editor_calls >= self.max_editor_calls

    def exhausted(self) -> str | None:
        """Why no further editor call may be made, or None."""
        if self.out_of_calls():
            return f"editor-call budget spent ({self.editor_calls} of {self.max_editor_calls})"
        if self.out_of_time():
            return f"time budget spent ({self.seconds:.1f} s of {self.max_seconds:g} s)"
        return None
