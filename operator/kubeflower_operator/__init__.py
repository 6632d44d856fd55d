"""The KubeFlower operator (import name `kubeflower_operator`).

`builders`, `reconcile`, `observed` and `settings` are pure and import neither kopf nor the
Kubernetes client, so the CLI can render exactly what the operator creates; `handlers` holds the
kopf registrations, `children` the API calls on child objects, `poll` the read of a job server's
status document.
"""
