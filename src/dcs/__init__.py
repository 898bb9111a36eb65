"""Distracting Control Suite (numpy / PIL port): `load(...)`; its settings in `constants`, its videos in `videos`."""

from src.dcs.constants import DIFFICULTIES
from src.dcs.suite import load
from src.dcs.videos import write_builtin_as_davis

__all__ = ["DIFFICULTIES", "load", "write_builtin_as_davis"]
