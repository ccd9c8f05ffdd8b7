"""Runnable benchmarks: ``python -m benchmarks.<name>`` prints figures; timings never gate tests."""
