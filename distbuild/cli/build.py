"""Placeholder: filled in by the core work."""

from __future__ import annotations

from typing import Any


def register(sub: Any) -> None:
    pass
