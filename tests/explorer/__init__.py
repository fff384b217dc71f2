"""Explorer tests (a package, so that its conftest never shadows tests/node/conftest.py)."""
