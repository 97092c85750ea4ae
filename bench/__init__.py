"""Benchmarks (`make bench-*`): figures for the README, not tests."""
