"""Shared by the synthetic cohort generators: cue strengths given as keyword arguments, checked by name."""

from __future__ import annotations

from dataclasses import fields
from typing import Any

__all__ = ["FromKwargs"]


class FromKwargs:
    """Mixin for a dataclass of float settings: ``from_kwargs`` names any unknown key (a typo would do nothing)."""

    @classmethod
    def from_kwargs(cls, **kwargs: float) -> Any:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(kwargs) - known)
        if unknown:
            raise TypeError(f"unknown cue argument(s) {unknown}; known: {sorted(known)}")
        return cls(**{k: float(v) for k, v in kwargs.items()})
