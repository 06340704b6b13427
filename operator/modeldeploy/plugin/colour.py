"""Colour when a person is looking: stdout is a terminal and NO_COLOR (no-color.org) is unset;
plain text when piped, so grep and diff see what was meant."""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import partialmethod
from typing import TextIO

CODES = {"bold": "1", "dim": "2", "red": "31", "green": "32", "yellow": "33", "cyan": "36"}


@dataclass(frozen=True)
class Palette:
    enabled: bool

    @classmethod
    def for_stream(cls, stream: TextIO) -> Palette:
        isatty = getattr(stream, "isatty", None)
        return cls(bool(isatty and isatty()) and not os.environ.get("NO_COLOR"))

    def paint(self, text: str, style: str) -> str:
        if not self.enabled or not style or not text:
            return text
        return f"\x1b[{CODES[style]}m{text}\x1b[0m"

    # palette.bold(text), palette.red(text), ...: one per style in CODES.
    bold = partialmethod(paint, style="bold")
    dim = partialmethod(paint, style="dim")
    red = partialmethod(paint, style="red")
    green = partialmethod(paint, style="green")
    yellow = partialmethod(paint, style="yellow")
    cyan = partialmethod(paint, style="cyan")
