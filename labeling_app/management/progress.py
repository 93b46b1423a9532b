"""Progress bars for the import and export commands: drawn on the command's stderr when that is a terminal."""

from __future__ import annotations

from django.core.management.base import BaseCommand, OutputWrapper
from tqdm import tqdm


class _Unstyled:
    """A command's stderr as tqdm needs it: written as is (Django would colour each write and end it with a newline)."""

    def __init__(self, wrapper: OutputWrapper):
        self.wrapper = wrapper

    def write(self, text: str) -> None:
        self.wrapper.write(text, style_func=str, ending="")

    def __getattr__(self, name):  # flush, fileno (tqdm sizes the bar to the terminal)
        return getattr(self.wrapper, name)


def progress_bar(command: BaseCommand, *, desc: str, unit: str, total: int | None = None, enabled: bool = True) -> tqdm:
    """A tqdm bar on `command.stderr`; a no-op unless stderr is a terminal (and `enabled`), so logs and pipes
    get no carriage-return noise."""
    return tqdm(
        desc=desc,
        unit=unit,
        total=total,
        file=_Unstyled(command.stderr),
        leave=False,
        dynamic_ncols=True,
        disable=not (enabled and command.stderr.isatty()),
    )
