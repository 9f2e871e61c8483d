"""Integration tests: real Porch processes, real upstreams, real clients on 127.0.0.1."""
