"""sockbroker's benchmark suite: ``python -m bench.run`` from the repository root (see README.md)."""
