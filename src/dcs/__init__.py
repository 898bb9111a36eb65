"""Distracting Control Suite (numpy / PIL port): `load(...)` and the built-in background videos."""

from src.dcs.constants import BUILTIN, CAMERA_MODES, DIFFICULTIES, SUPPORTED_TASKS
from src.dcs.suite import DistractingEnvironment, load
from src.dcs.videos import builtin_video, write_builtin_as_davis

__all__ = [
    "BUILTIN",
    "CAMERA_MODES",
    "DIFFICULTIES",
    "SUPPORTED_TASKS",
    "DistractingEnvironment",
    "builtin_video",
    "load",
    "write_builtin_as_davis",
]
