"""Argument types shared by the scripts (kept free of torch, so ``--help`` and bad arguments answer at once)."""

from __future__ import annotations

import argparse
import math


def positive_int(text: str) -> int:
    """An argparse type: an integer >= 1 (0 or -1 views, windows or classes would fail deep inside with a traceback)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return value


def positive_float(text: str) -> float:
    """An argparse type: seconds > 0 and finite (nan and inf windows would never end)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds > 0, got {text!r}") from None
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"expected seconds > 0, got {text!r}")
    return value
