"""The benchmarks and their synthetic data, apart from the product: nothing in retrieval/ imports them."""
