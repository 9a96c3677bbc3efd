"""buildkit-operator: BuildKit builders in Kubernetes, reachable over mutual TLS."""

__version__ = "0.1.0"
