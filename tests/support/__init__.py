"""Helpers shared by tests and benchmarks: real parts (a real sqld), never mocks."""
