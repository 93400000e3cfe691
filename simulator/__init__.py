"""The GitHub Actions API simulator used by `demo`, the tests and the benchmarks."""
