"""What every command shares: stopping cleanly on a signal, checking numbers and output paths
before any work starts, writing JSON results atomically."""

from __future__ import annotations

import json
import math
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

from ..errors import InputError


class GracefulStop:
    """SIGINT and SIGTERM ask the loop to stop after its current step, so outputs are flushed
    and closed on the way out; a second signal raises KeyboardInterrupt at once (a stuck source),
    unless ``shield()`` was called: then the flushing under way is never cut short."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.callbacks: list[Callable[[], None]] = []
        self._saved: dict[int, Any] = {}
        self._shielded = False

    def __enter__(self) -> GracefulStop:
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._saved[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: leave signals alone
                break
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, old in self._saved.items():
            signal.signal(sig, old)

    def shield(self) -> None:
        """From now on signals are only noted: outputs are being closed."""
        self._shielded = True

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is not None:
            if self._shielded:
                return
            raise KeyboardInterrupt
        self.signum = signum
        for cb in self.callbacks:
            cb()

    @property
    def requested(self) -> bool:
        return self.signum is not None

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum is not None else ""

    @property
    def exit_code(self) -> int:
        return 128 + (self.signum or 0)

    def report(self, prog: str, kept: str, interrupted: bool = False) -> int:
        """Say on stderr how the command was stopped and what its output holds; the exit code."""
        how = "interrupted" if interrupted or not self.requested else f"stopped by {self.name}"
        print(f"{prog}: {how}; {kept}", file=sys.stderr)
        return 130 if interrupted or not self.requested else self.exit_code


def check_number(name: str, value: float | None, lo: float, hi: float = math.inf) -> None:
    """A numeric flag is finite (NaN and inf never are) and within [lo, hi]; InputError if not."""
    if value is None:
        return
    if not (math.isfinite(value) and lo <= value <= hi):
        span = f">= {lo:g}" if hi == math.inf else f"in [{lo:g}, {hi:g}]"
        raise InputError(f"{name} must be a finite number {span}, got {value}")


def check_writable(path: Path | None, what: str) -> None:
    """An output file can be created: its folder exists and it is not itself a folder."""
    if path is None:
        return
    if path.is_dir():
        raise InputError(f"{what} {path} is a folder, not a file")
    if not path.parent.is_dir():
        raise InputError(f"{what} {path}: folder {path.parent} does not exist")


def write_json(path: Path, data: dict) -> None:
    """Write atomically (temp file + rename) so a reader never sees half a file."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(json.dumps(data, indent=1))
        os.replace(tmp, path)
    except OSError as exc:
        raise InputError(f"cannot write {path}: {exc.strerror or exc}") from exc
