"""The workload: the Flower server and client entry points and the built-in Flower App.

Runs in the workload image and under `kubeflower run`. It never imports kopf or the Kubernetes
client: everything it learns about its job comes through the environment (`kubeflower.core.contract`).
"""

from pathlib import Path

BUILTIN_APP = Path(__file__).parent / "flowerapp"
"""The built-in Flower App project: the server bundles it, the clients read what to pre-import from it."""
