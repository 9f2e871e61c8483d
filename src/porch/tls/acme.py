"""ACME issuance (RFC 8555) over HTTP-01 or TLS-ALPN-01 (RFC 8737), with certbot's `acme` library.

Blocking, like the library: the CertManager runs these calls in a thread, the CLI
calls them directly.  Library and network exceptions are mapped here, at one
boundary, to `AcmeError`, whose message carries the CA's problem document
(RFC 8555 6.7: type, detail, and the subproblem per name).

State kept in storage, per ACME directory (so staging and production accounts never
mix):
    acme/accounts/<directory-slug>/key.pem        account key, EC P-256 (0600)
    acme/accounts/<directory-slug>/account.json   registration (account URL)
    acme/http-01/<token>                          key authorizations while validating
    acme/tls-alpn-01/<name>                       validation certificate + key (tls/acme_alpn.py)
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import re
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit

import josepy as jose
import requests
from acme import challenges, client, crypto_util, errors, messages
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from porch import __version__
from porch.storage import Storage, StorageError
from porch.tls import alpn_challenge
from porch.tls.acme_alpn import TLSALPN01, validation_pem
from porch.tls.challenge import storage_key

HTTP_01 = "http-01"
TLS_ALPN_01 = "tls-alpn-01"

_PEM = serialization.Encoding.PEM
_PKCS8 = serialization.PrivateFormat.PKCS8
_NO_PASSWORD = serialization.NoEncryption()


class AcmeError(Exception):
    """Issuance failed; the message says where and carries the CA's detail."""


class ChallengeFailed(AcmeError):
    """The CA could not validate a name with this challenge type, or does not offer
    it: another type may succeed (acme_challenge_type "auto")."""


@dataclass(frozen=True)
class CA:
    """Which ACME server, how to trust it, and who the account is for."""

    directory: str
    root: str | None = None  # PEM file trusted instead of the system store (pebble)
    email: str | None = None


@dataclass(frozen=True)
class Issued:
    fullchain: bytes  # PEM: leaf first, then the intermediates
    key: bytes  # PEM PKCS#8


def new_key() -> tuple[ec.EllipticCurvePrivateKey, bytes]:
    """A fresh ECDSA P-256 key (what Caddy and certbot >= 2.0 use by default) and its PEM."""
    key = ec.generate_private_key(ec.SECP256R1())
    return key, key.private_bytes(_PEM, _PKCS8, _NO_PASSWORD)


def directory_slug(url: str) -> str:
    """A storage-safe name for an ACME directory URL."""
    parts = urlsplit(url)
    return re.sub(r"[^A-Za-z0-9._-]+", "_", f"{parts.netloc}{parts.path}").strip("_") or "acme"


class AcmeClient:
    """One ACME directory and our account there; `issue()` gets certificates."""

    def __init__(self, ca: CA, storage: Storage, *, timeout: float = 90.0) -> None:
        self.ca = ca
        self.storage = storage
        self.timeout = timeout  # for validation and finalisation of one order
        self._acme: client.ClientV2 | None = None
        self._jwk: jose.JWKEC | None = None
        self._base = f"acme/accounts/{directory_slug(ca.directory)}"

    # -- account -------------------------------------------------------------------

    def connect(self) -> client.ClientV2:
        """The directory and a registered account (created on first use, then reused)."""
        if self._acme is not None:
            return self._acme
        # One key and one registration per directory, whoever comes first (sites are
        # issued in parallel threads, `porch certs renew` in another process).
        with _mapped(f"ACME server {self.ca.directory}"), self.storage.lock(f"{self._base}/account"):
            pem = self.storage.get(f"{self._base}/key.pem")
            if pem is None:
                pem = new_key()[1]
                self.storage.put(f"{self._base}/key.pem", pem, 0o600)
            jwk = jose.JWKEC(key=serialization.load_pem_private_key(pem, None))
            net = client.ClientNetwork(jwk, alg=jose.ES256, verify_ssl=self.ca.root or True,
                                       user_agent=f"porch/{__version__}", timeout=30)
            directory = client.ClientV2.get_directory(self.ca.directory, net)
            acme = client.ClientV2(directory, net)
            saved = self.storage.get(f"{self._base}/account.json")
            if saved is not None:
                net.account = messages.RegistrationResource.json_loads(saved)
            else:
                net.account = self._register(acme)
        self._acme, self._jwk = acme, jwk
        return acme

    def _register(self, acme: client.ClientV2) -> messages.RegistrationResource:
        # Agreeing to the CA's terms is what running Porch with ACME means (Caddy too).
        new = messages.NewRegistration.from_data(email=self.ca.email, terms_of_service_agreed=True)
        try:
            regr = acme.new_account(new)
        except errors.ConflictError as e:  # the key is registered already: reuse it
            regr = messages.RegistrationResource(uri=e.location, body=messages.Registration())
        self.storage.put(f"{self._base}/account.json", regr.json_dumps().encode(), 0o600)
        return regr

    # -- issuance ------------------------------------------------------------------

    def issue(self, names: tuple[str, ...], challenge: str = HTTP_01) -> Issued:
        """A certificate for `names` (SANs, first one first) with a new P-256 key,
        validated over `challenge` (HTTP_01 or TLS_ALPN_01).  Raises AcmeError, or
        ChallengeFailed when the CA could not validate with that type."""
        acme = self.connect()
        try:
            return self._issue(acme, names, challenge)
        except ChallengeFailed:
            raise
        except AcmeError as e:
            if "accountDoesNotExist" not in str(e):
                raise
        # The CA forgot the account (pebble restarted, or it was deactivated): once more.
        self.storage.delete(f"{self._base}/account.json")
        self._acme = None
        return self._issue(self.connect(), names, challenge)

    def _issue(self, acme: client.ClientV2, names: tuple[str, ...], challenge: str) -> Issued:
        _, key_pem = new_key()
        csr = crypto_util.make_csr(key_pem, list(names))
        published: list[str] = []  # storage keys to remove once the order is done
        with _mapped(f"ACME order for {', '.join(names)}", _HINTS[challenge]):
            try:
                order = acme.new_order(csr)
                for authz in order.authorizations:
                    if authz.body.status == messages.STATUS_VALID:  # still valid from before
                        continue
                    published.append(self._answer(acme, authz, challenge))
                deadline = dt.datetime.now() + dt.timedelta(seconds=self.timeout)
                order = acme.poll_and_finalize(order, deadline)
            finally:
                for key in published:
                    with contextlib.suppress(StorageError):
                        self.storage.delete(key)
        return Issued(fullchain=order.fullchain_pem.encode(), key=key_pem)

    def _answer(self, acme: client.ClientV2, authz: messages.AuthorizationResource, challenge: str) -> str:
        """Publish what the CA will look for to validate one name over `challenge`
        (storage: any worker answers), then tell the CA; return the storage key."""
        name = authz.body.identifier.value
        wanted = TLSALPN01 if challenge == TLS_ALPN_01 else challenges.HTTP01
        for challb in authz.body.challenges:
            if isinstance(challb.chall, wanted):
                break
        else:
            offered = ", ".join(_typ(c.chall) for c in authz.body.challenges)
            raise ChallengeFailed(f"the CA offers no {challenge} challenge for {name} (only {offered})")
        response, validation = challb.response_and_validation(self._jwk)
        if challenge == TLS_ALPN_01:
            key = alpn_challenge.storage_key(name.lower())
            self.storage.put(key, validation_pem(name.lower(), validation), 0o600)
        else:
            key = storage_key(challb.chall.encode("token"))
            self.storage.put(key, validation.encode("ascii"), 0o600)
        acme.answer_challenge(challb, response)
        return key

    # -- renewal information (RFC 9773) ----------------------------------------------

    def renewal_window(self, fullchain: bytes) -> tuple[dt.datetime, dt.datetime, float] | None:
        """The CA's suggested renewal window (start, end) and how many seconds to wait
        before asking again, or None when the CA offers no ARI.  Raises AcmeError."""
        acme = self.connect()
        base = acme.directory.to_partial_json().get("renewalInfo")
        if not base:
            return None
        cert = x509.load_pem_x509_certificate(fullchain)
        with _mapped("ACME renewal information"):
            response = acme.net.get(f"{base.rstrip('/')}/{ari_cert_id(cert)}")
            info = messages.RenewalInfo.from_json(response.json())
        window = info.suggested_window
        retry = response.headers.get("Retry-After", "")
        # RFC 9773 4.3.3: poll again after Retry-After, clamped to [1 min, 1 day]; 6 h default
        wait = min(max(float(retry), 60.0), 86400.0) if retry.isdigit() else 6 * 3600.0
        return window.start, window.end, wait


def ari_cert_id(cert: x509.Certificate) -> str:
    """RFC 9773 4.1: base64url(authority key identifier) "." base64url(serial DER bytes)."""
    aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    serial = cert.serial_number
    raw = serial.to_bytes((serial.bit_length() + 8) // 8, "big", signed=True)  # room for the sign bit
    return f"{_b64(aki.key_identifier or b'')}.{_b64(raw)}"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def _typ(chall: challenges.Challenge) -> str:
    if isinstance(chall, challenges.UnrecognizedChallenge):
        return str(chall.jobj.get("type", "?"))
    return chall.typ


@contextlib.contextmanager
def _mapped(what: str, hint: str = "") -> Iterator[None]:
    """Library and network exceptions -> AcmeError naming `what` and the CA's detail;
    a failed validation -> ChallengeFailed, followed by `hint`."""
    try:
        yield
    except AcmeError:
        raise
    except errors.ValidationError as e:
        raise ChallengeFailed(f"{what}: validation failed: {_failed(e)}{hint}") from None
    except errors.TimeoutError:
        raise AcmeError(f"{what}: the CA did not finish within the time allowed") from None
    except errors.IssuanceError as e:
        raise AcmeError(f"{what}: {_problem(e.error)}") from None
    except messages.Error as e:
        raise AcmeError(f"{what}: {_problem(e)}") from None
    except requests.exceptions.SSLError as e:
        raise AcmeError(f"{what}: TLS error (is acme_ca_root the CA's root?): {_reason(e)}") from None
    except requests.exceptions.RequestException as e:
        raise AcmeError(f"{what}: cannot reach the CA: {_reason(e)}") from None
    except (errors.Error, jose.errors.Error, ValueError) as e:
        raise AcmeError(f"{what}: {e}") from None
    except StorageError as e:
        raise AcmeError(f"{what}: {e}") from None


# The usual causes, said once after the CA's own words (certbot says as much)
_HINTS = {
    HTTP_01: (" (the CA must reach http://NAME/.well-known/acme-challenge/ on port 80 of this"
              " Porch: check the names' DNS records and the firewall)"),
    TLS_ALPN_01: (" (the CA must reach port 443 of this Porch with TLS and ALPN acme-tls/1:"
                  " check the names' DNS records and the firewall, and that nothing in front"
                  " of Porch terminates TLS)"),
}


def _problem(error: messages.Error) -> str:
    """A problem document on one line: "urn:...:unauthorized: detail [name: ...]"."""
    text = f"{error.typ}: {error.detail or error.title or error.description or ''}".strip()
    for sub in error.subproblems or ():
        who = sub.identifier.value if sub.identifier else "?"
        text += f" [{who}: {sub.typ}: {sub.detail}]"
    return text


def _failed(e: errors.ValidationError) -> str:
    parts = []
    for authz in e.failed_authzrs:
        for challb in authz.body.challenges:
            if challb.error is not None:
                parts.append(f"{authz.body.identifier.value}: {_problem(challb.error)}")
    return "; ".join(parts) or "no detail from the CA"


def _reason(e: Exception) -> str:
    # requests nests the cause a few levels deep; the innermost says the most
    while e.__context__ is not None and isinstance(e.__context__, Exception):
        e = e.__context__
    return str(e) or type(e).__name__
