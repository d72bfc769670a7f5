"""Benchmarks and checks run from the command line (``poolbench bench ...``, ``poolbench check ...``)."""
