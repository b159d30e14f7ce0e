"""A test app whose ``workflows`` module the qcluster workers of tests/fault load."""
