"""digitsapp: a Flower App on scikit-learn's digits."""
