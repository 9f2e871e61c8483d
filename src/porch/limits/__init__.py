"""Limits shared across workers: the counter table (table.py) and the connection limiter."""
