"""A stock-style Flower App: the baseline that bench/round_overhead.py times the built-in app against."""
