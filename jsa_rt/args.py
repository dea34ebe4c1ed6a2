"""Argument types for numeric options, shared by every command's parser: a bad value (`nan`
included) is a one-line usage error naming the rule, before anything runs."""
from __future__ import annotations

import argparse
import math


def _number(kind, ok, rule: str):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number; use {rule}") from None
        if not math.isfinite(value) or not ok(value):      # nan passes every comparison test
            raise argparse.ArgumentTypeError(f"got {text}; use {rule}")
        return value
    return parse


positive_int = _number(int, lambda v: v > 0, "a whole number >= 1")
non_negative_int = _number(int, lambda v: v >= 0, "a whole number >= 0")
positive_float = _number(float, lambda v: v > 0, "a number > 0")
non_negative_float = _number(float, lambda v: v >= 0, "a number >= 0")
unit_interval = _number(float, lambda v: 0 <= v <= 1, "a number from 0 to 1")


def at_least(low: int, why: str = ""):
    """A whole number >= `low` (`why` says why smaller is refused)."""
    return _number(int, lambda v: v >= low, f"a whole number >= {low}" + (f" ({why})" if why else ""))
