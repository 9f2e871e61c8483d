"""Port sharing on the HTTPS listener (sslh's job): sans-IO pieces.

clienthello (in porch.tls) reads SNI and ALPN; proxy_protocol reads and writes
PROXY headers; probes recognise plain protocols by their first bytes; streams
matches a connection against the `[[stream]]` entries.  The I/O is server/mux.py.
"""
