"""Benchmarks: each prints its figures and writes a markdown report under bench/reports/."""
