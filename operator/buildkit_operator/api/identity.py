"""Who the Builder API is: its group, version, kind and names. Apart from the model so
that the CRD, the handlers and the owner references name the API without importing it."""

from __future__ import annotations

GROUP = "buildkit.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "Builder"
PLURAL = "builders"
SINGULAR = "builder"
SHORT_NAMES = ["bk"]
