"""The KubeFlower operator (import name `kubeflower.operator`).

`builders` and `status` are pure and import neither kopf nor the Kubernetes client, so the CLI can
render exactly what the operator creates; `handlers` holds the kopf registrations.
"""
