"""nodehosts: publish Kubernetes node names as an atomic hosts file and over DNS."""

__version__ = "0.1.0"
