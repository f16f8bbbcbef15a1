"""The benchmarks and their synthetic data, apart from the product: nothing in retrieval/ imports them."""


class BenchError(RuntimeError):
    """The benchmark cannot run: missing or malformed data."""
