"""The core: the API model, the environment contract, the status document, the CRD, validation.

A leaf: it imports neither the operator nor the workload nor the CLI (an import-linter contract in
pyproject.toml, checked by `make lint`), so both images carry it and both sides agree through it.
"""
