"""One pass of one Builder: observe, decide, apply, report.

``plan``, ``holds``, ``drift``, ``status``, ``idle`` and ``types`` are pure (no I/O, no
clock but the one passed in); ``loop`` calls down into ``cluster`` and ``buildkit``."""
