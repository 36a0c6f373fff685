"""shrinktests: a pytest-based behavioural regression suite for compressed language models."""

__version__ = "0.2.0"
