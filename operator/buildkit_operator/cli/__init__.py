"""The ``buildkit-operator`` command (and the ``kubectl buildkit`` plugin): ``render``, ``crd``,
``run``, ``connect``, ``wake``."""

from .main import kubectl_plugin, main

__all__ = ["kubectl_plugin", "main"]
