"""TLS to `https://` upstreams: client contexts built at load, handshake failures in words.

One `ssl.SSLContext` per distinct setting, built when the config is compiled and shared
by every target that uses it; a connection only passes it (and the name to send as SNI)
to `loop.create_connection`.  Nothing here runs per request.

Defaults follow Caddy rather than nginx: the upstream's certificate is verified against
the system trust store and its name checked (nginx: `proxy_ssl_verify off`), SNI is sent
(nginx: `proxy_ssl_server_name off`), ALPN offers http/1.1 only (what we speak upstream),
TLS 1.2 is the floor (RFC 8996 retired 1.0 and 1.1).
"""

from __future__ import annotations

import re
import ssl

_ALPN = ["http/1.1"]


def client_context(*, verify: bool = True, ca: str | None = None, cert: str | None = None,
                   key: str | None = None) -> ssl.SSLContext:
    """A client context: verify against `ca` (only) or the system store, or not at all;
    present `cert`/`key` if given.  Raises ssl.SSLError or OSError for bad files;
    `bad_files()` turns those into a sentence."""
    ctx = ssl.create_default_context(cafile=ca if verify else None)
    if verify and ca is not None:
        # `ca` may be the upstream's own certificate, not a root (nginx's
        # proxy_ssl_trusted_certificate, Radicale's guide): accept a chain that ends at
        # any certificate in it.  Python 3.13 sets this flag by default.
        ctx.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    if not verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if cert is not None:
        ctx.load_cert_chain(cert, key, password=_no_passphrase)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_alpn_protocols(_ALPN)
    return ctx


def _no_passphrase() -> bytes:
    # Without a callback OpenSSL would prompt on the terminal, and a server cannot answer.
    raise ValueError("encrypted")


# -- failures, in words ----------------------------------------------------------------

_LIB_NOISE = re.compile(r"^\[[A-Z0-9_]+(?:: [A-Z0-9_]+)?\] | \(_ssl\.c:\d+\)$")

# OpenSSL reasons an operator meets, and what to do about them.
_HINTS = {
    "CERTIFICATE_VERIFY_FAILED": "trust the upstream's CA with upstream_tls.ca,"
                                 " or set upstream_tls = { verify = false }",
    "TLSV13_ALERT_CERTIFICATE_REQUIRED": "the upstream wants a client certificate:"
                                         " set upstream_tls.cert and upstream_tls.key",
    "SSLV3_ALERT_HANDSHAKE_FAILURE": "no common protocol or cipher, or the upstream wants a"
                                     " client certificate: upstream_tls.cert and key",
    "WRONG_VERSION_NUMBER": "the upstream does not speak TLS on this port: use http://",
    "TLSV1_ALERT_UNKNOWN_CA": "the upstream does not trust our client certificate's issuer",
    "SSLV3_ALERT_BAD_CERTIFICATE": "the upstream rejected our client certificate",
    "SSLV3_ALERT_CERTIFICATE_EXPIRED": "the upstream says our client certificate expired",
}


# X509_V_ERR_* codes whose fix is not "trust the issuer" (openssl's x509_vfy.h).
_NOT_YET_VALID, _EXPIRED = 9, 10


def tls_failure(exc: BaseException) -> str:
    """Why a TLS connection to an upstream failed, for the error log: OpenSSL's reason
    without its library codes and source lines, and a hint when the fix is known.
    Handshake failures, and TLS 1.3 alerts that arrive after it (a missing client
    certificate is reported on the first read).

        certificate verify failed: self-signed certificate in certificate chain
        (trust the upstream's CA with upstream_tls.ca, or set upstream_tls = { verify = false })
    """
    if isinstance(exc, ssl.SSLCertVerificationError) and exc.verify_message:
        text = f"certificate verify failed: {exc.verify_message.rstrip('.')}"
        if "Hostname mismatch" in exc.verify_message or "IP address mismatch" in exc.verify_message:
            return text + " (connect by a name the certificate has, or set upstream_tls.server_name to one)"
        if exc.verify_code in (_NOT_YET_VALID, _EXPIRED):
            return text + " (renew the upstream's certificate, or check this machine's clock)"
        return f"{text} ({_HINTS['CERTIFICATE_VERIFY_FAILED']})"
    if isinstance(exc, ssl.SSLError):
        text = _LIB_NOISE.sub("", str(exc.args[1] if len(exc.args) > 1 else exc))
        hint = _HINTS.get(exc.reason or "")
        return f"{text} ({hint})" if hint else text
    if isinstance(exc, ConnectionResetError | BrokenPipeError | EOFError):
        return "the upstream closed the connection during the TLS handshake"
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__


# -- load-time checks, in words --------------------------------------------------------


def bad_files(exc: BaseException, *, ca: str | None, cert: str | None, key: str | None) -> str:
    """Why `client_context` refused these files, for a config error."""
    reason = getattr(exc, "reason", None) or ""
    if isinstance(exc, ValueError) or "BAD_DECRYPT" in reason:
        return f"key {key or cert} is encrypted; Porch reads keys without a passphrase" \
               " (decrypt it: openssl pkey -in KEY -out KEY.plain)"
    if reason == "KEY_VALUES_MISMATCH":
        return f"cert {cert} and key {key} do not match: give the key the certificate was made for"
    text = _LIB_NOISE.sub("", str(exc.args[1] if len(exc.args) > 1 else exc))
    if cert is not None and ca is None:
        return f"cert {cert} / key {key or cert} cannot be used: {text}"
    return f"cannot use these files: {text}"
