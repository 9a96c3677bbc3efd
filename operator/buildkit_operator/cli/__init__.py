"""The ``buildkit-operator`` command: ``render``, ``crd``, ``run``, ``connect``, ``wake``."""

from .main import main

__all__ = ["main"]
