"""HTTP-01 challenge files: where tokens live (RFC 8555 8.3).

Porch's own ACME manager (in the supervisor) writes each key authorization to storage
key `acme/http-01/<token>`; any worker answers it through the `acme_challenge` policy
(policies/acme_challenge.py), which also reads other clients' webroot files with
`read_webroot`.
"""

from __future__ import annotations

import os
import stat

PREFIX = b"/.well-known/acme-challenge/"
KEY_PREFIX = "acme/http-01/"
_MAX_FILE = 64 * 1024  # a key authorization is ~90 bytes


def storage_key(token: str) -> str:
    """Where the ACME manager puts the key authorization for `token`."""
    return KEY_PREFIX + token


def read_webroot(root: str, token: str) -> bytes | None:
    """DIR/.well-known/acme-challenge/<token> if it is a regular file inside `root`
    (already resolved); None otherwise.  `token` must be checked base64url."""
    path = os.path.join(root, ".well-known", "acme-challenge", token)
    real = os.path.realpath(path)
    if os.path.commonpath((root, real)) != root:  # a symlink somewhere leads out
        return None
    try:
        fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > _MAX_FILE:
            return None
        return os.read(fd, _MAX_FILE)
    except OSError:
        return None
    finally:
        os.close(fd)
