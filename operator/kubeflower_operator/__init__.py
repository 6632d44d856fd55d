"""The KubeFlower operator (import name `kubeflower_operator`).

`builders` and `status` are pure and import neither kopf nor the Kubernetes client, so the CLI can
render exactly what the operator creates; `handlers` holds the kopf registrations.
"""
