"""Which nginx directive goes where: the tables the builder reads.

- `NO_EFFECT`: accepted, warned about and ignored, with the reason (nginx features that
  Porch does otherwise or that do nothing today);
- `ROUTE_SCOPED`: read per location, inherited from server and http the nginx way (the
  innermost level that writes a directive wins, lists included: proxy_set_header and
  add_header of a server are forgotten by a location that has its own);
- `NEEDS_KEY`: directives whose porch.toml key comes from the policies issue (13): the
  mapping is written; until the key exists in this build, an error (or, where missing
  it changes no answer's meaning, a warning) says so.
Anything in none of these tables is an error naming file and line.
"""

from __future__ import annotations

_BUFFERS = "Porch streams bodies chunk by chunk with flow control; there are no buffers to size"
_TEMP = "Porch never spools bodies to temporary files"
_PROCESS = "Porch's process model is [porch] workers (\"auto\": one per core)"
_SESSION = "Porch's TLS sessions use OpenSSL's defaults (session tickets with rotating keys)"

NO_EFFECT: dict[str, str] = {
    # Let's Encrypt ended OCSP in 2025: there is nothing to staple.
    "ssl_stapling": "Let's Encrypt has ended OCSP: there is nothing to staple",
    "ssl_stapling_verify": "Let's Encrypt has ended OCSP: there is nothing to staple",
    "ssl_trusted_certificate": "it only serves OCSP stapling, which Porch does not do",
    "ssl_dhparam": "Porch's ciphers use ECDHE (and TLS 1.3), never finite-field DH",
    "ssl_ecdh_curve": "OpenSSL's default groups are used (X25519 first)",
    "ssl_prefer_server_ciphers": "the TLS 1.2 cipher list is ordered by strength already",
    "ssl_session_cache": _SESSION,
    "ssl_session_timeout": _SESSION,
    "ssl_session_tickets": _SESSION,
    "ssl_buffer_size": _BUFFERS,
    "proxy_buffer_size": _BUFFERS,
    "proxy_buffers": _BUFFERS,
    "proxy_busy_buffers_size": _BUFFERS,
    "proxy_buffering": _BUFFERS,
    "proxy_request_buffering": _BUFFERS,
    "proxy_max_temp_file_size": _TEMP,
    "proxy_temp_file_write_size": _TEMP,
    "client_body_buffer_size": _BUFFERS,
    "client_body_temp_path": _TEMP,
    "proxy_temp_path": _TEMP,
    "fastcgi_temp_path": _TEMP,
    "uwsgi_temp_path": _TEMP,
    "scgi_temp_path": _TEMP,
    "sendfile": "Porch decides itself when to use sendfile",
    "tcp_nopush": "Porch sets its sockets' options itself",
    "tcp_nodelay": "Porch sets its sockets' options itself",
    "worker_processes": _PROCESS,
    "worker_connections": _PROCESS,
    "worker_rlimit_nofile": _PROCESS,
    "multi_accept": _PROCESS,
    "use": _PROCESS,
    "pid": "Porch's pid and state live in [porch] state_dir",
    "user": "run Porch as the user of its systemd unit (examples/porch.service)",
    "load_module": "Porch has no dynamic modules",
    "pcre_jit": "Porch's regexes are Python's",
    "types_hash_max_size": "Porch has no hash tables to size",
    "types_hash_bucket_size": "Porch has no hash tables to size",
    "server_names_hash_bucket_size": "Porch has no hash tables to size",
    "server_names_hash_max_size": "Porch has no hash tables to size",
    "variables_hash_max_size": "Porch has no hash tables to size",
    "map_hash_bucket_size": "Porch has no hash tables to size",
    "types": "Porch serves no files of its own by type here",
    "default_type": "Porch serves no files of its own by type here",
    "server_tokens": "Porch does not add a version to its Server field",
    "log_format": "Porch writes [porch] access_log_format (\"combined\", \"vhost_combined\" or \"json\")",
    "keepalive_requests": "Porch keeps client connections open as long as keepalive_timeout allows",
    "proxy_pass_header": "Porch passes the upstream's response fields as they are",
    "proxy_ssl_protocols": "Porch offers TLS 1.2 and 1.3 to upstreams, OpenSSL's default",
    "proxy_ssl_session_reuse": "Porch reuses upstream connections instead",
    "proxy_ssl_verify_depth": "Porch verifies the whole chain",
    "proxy_send_timeout": ("Porch has no timeout between two writes to the upstream; the client's"
                           " body_timeout bounds a request body that stalls"),
    "http2_max_concurrent_streams": "write max_concurrent_streams in [porch]",
    "resolver": "Porch resolves upstream names with the system resolver at each connect",
    "open_file_cache": "Porch serves no files of its own here",
    "charset": "Porch does not change the upstream's Content-Type",
    "large_client_header_buffers": "write max_header_size in [porch] (default 16k)",
    "reset_timedout_connection": "Porch closes timed-out connections at once",
}

# The directives a location reads (with its server's and http's as defaults).
ROUTE_SCOPED = frozenset({
    "proxy_set_header", "proxy_http_version", "proxy_redirect", "proxy_read_timeout",
    "proxy_connect_timeout", "proxy_ssl_verify", "proxy_ssl_trusted_certificate",
    "proxy_ssl_certificate", "proxy_ssl_certificate_key", "proxy_ssl_name",
    "proxy_ssl_server_name", "client_max_body_size", "client_body_timeout", "add_header",
    "auth_basic", "auth_basic_user_file", "limit_req", "limit_req_status", "allow", "deny", "expires", "root",
    "try_files", "gzip", "gzip_types", "gzip_min_length", "gzip_comp_level", "gzip_proxied",
    "gzip_vary", "gzip_disable", "gzip_http_version", "gzip_buffers", "auth_request",
    "proxy_hide_header", "index", "auth_request_set", "internal", "proxy_pass_request_body",
})

# Server (or http) level only, read by the builder itself.
SERVER_SCOPED = frozenset({
    "listen", "server_name", "ssl_certificate", "ssl_certificate_key", "ssl_protocols",
    "ssl_ciphers", "access_log", "error_log", "client_header_timeout", "keepalive_timeout",
    "send_timeout", "http2", "ssl", "return", "rewrite", "if", "location",
    "underscores_in_headers", "limit_req_zone", "upstream", "map", "server",
})

# directive -> (porch.toml key, True when its absence is only a warning).
NEEDS_KEY: dict[str, tuple[str, bool]] = {
    "auth_basic": ("basic_auth", False),
    "auth_basic_user_file": ("basic_auth", False),
    "auth_request": ("forward_auth", False),
    "limit_req": ("rate_limit", False),
    "allow": ("allow", False),
    "deny": ("deny", False),
    "root": ("root", False),
    "try_files": ("try_files", False),
    "expires": ("expires", True),
    "gzip": ("compress", True),
}

# Identity fields apps trust (http/forwarding.py IDENTITY): Porch always drops a
# client's; nginx passes it unless the config sets it.
IDENTITY = ("x-remote-user", "remote-user", "x-forwarded-user", "x-auth-request-user",
            "x-webauth-user")

# proxy_set_header lines whose value Porch gives already (http/forwarding.py).
FORWARDING_DEFAULTS: dict[str, tuple[str, ...]] = {
    "x-forwarded-for": ("$proxy_add_x_forwarded_for", "$remote_addr"),
    "x-real-ip": ("$remote_addr",),
    "x-forwarded-proto": ("$scheme",),
    "x-forwarded-host": ("$host", "$http_host"),
    "x-forwarded-port": ("$server_port",),
    "upgrade": ("$http_upgrade",),
    "connection": ("upgrade", "Upgrade", "$connection_upgrade", ""),
}
