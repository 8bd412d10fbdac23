"""Test doubles of the engine side, shared by tests and benchmarks."""
