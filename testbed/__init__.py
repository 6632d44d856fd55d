"""The test bed: what stands in for a cluster in the tests and the benchmarks (see README.md).

Its own package, beside the project's: the tests and `bench/` import it, it imports neither (an
import-linter contract), and the project's packages never import it.
"""
