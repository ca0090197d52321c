"""Benchmarks: tasks, runner, metrics and reports."""
