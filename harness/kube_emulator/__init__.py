"""A Kubernetes API-server emulator for tests, benchmarks and the demo (no real apiserver is available here).

The official `kubernetes` client (CoreV1Api, CustomObjectsApi, DynamicClient)
works against it unmodified through the kubeconfig from `write_kubeconfig`.
"""

from .server import KubeEmulator, default_crd_dir
from .store import ApiError

__all__ = ["ApiError", "KubeEmulator", "default_crd_dir"]
