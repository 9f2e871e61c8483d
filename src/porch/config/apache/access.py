"""Apache's client-address rules -> porch.toml's `allow` and `deny` (policies/allow.py).

mod_authz_core (httpd 2.4), where it maps onto "not in deny, and in allow":

    Require all granted                       nothing (every address)
    Require all denied                        deny = ["all"]
    Require ip 10.0.0.0/8 ::1                 allow = ["10.0.0.0/8", "::1"]
    Require local                             allow = ["127.0.0.0/8", "::1"]
    Require ip A + Require ip B (RequireAny)  allow = [A, B]
    <RequireAll> Require ip A                 allow = [A], deny = [B]
                 Require not ip B </RequireAll>
    <RequireAll> Require all granted          deny = [B]
                 Require not ip B </RequireAll>
    <RequireAll> Require valid-user ...       allow (and basic_auth: both must pass)

A <Location>'s Require lines are one implicit <RequireAny> (httpd refuses them in a
<VirtualHost>: an error says where to put them).  What would need
"either this address or that password" (ip and valid-user in one RequireAny), or
several ip lists that must all match, is an error naming the line and the fix.

mod_access_compat (httpd 2.2's Order/Allow/Deny), where it maps:

    Order deny,allow + Deny from all + Allow from A     allow = [A]
    Order allow,deny + Allow from A [+ Deny from B]     allow = [A] (deny = [B])
    Order allow,deny + Allow from all + Deny from B     deny = [B]
    Order deny,allow + Deny from B (no Allow)           deny = [B]
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from porch.config.apache.parse import Directive

# Require local: the loopback addresses (mod_authz_host also lets in a client whose
# address is the server's own; Porch does not: such a client is refused here)
LOCAL = ["127.0.0.0/8", "::1"]
_USERS = ("valid-user", "user", "group")


class AccessProblem(Exception):
    pass


@dataclass
class Access:
    """The outcome: allow/deny lists (None: not written), whether a user is required."""

    allow: list[str] | None = None
    deny: list[str] = field(default_factory=list)
    users: bool = False


def addresses(d: Directive, args: tuple[str, ...]) -> list[str]:
    """httpd's forms: 10.1.2.3, 10.1 (a prefix of whole bytes), 10.0.0.0/8,
    10.0.0.0/255.0.0.0, 2001:db8::/32; written as Porch's networks."""
    out = []
    for arg in args:
        text = arg
        if "/" not in arg and ":" not in arg and arg.count(".") < 3 and arg.replace(".", "").isdigit():
            parts = [p for p in arg.split(".") if p]
            text = ".".join(parts + ["0"] * (4 - len(parts))) + f"/{8 * len(parts)}"
        try:
            out.append(str(ipaddress.ip_network(text, strict=False)))
        except ValueError:
            raise AccessProblem(f"{d.origin}: {arg}: not an address or network; Porch matches"
                                " addresses, not host names (Require host, Allow from NAME):"
                                " write the network, e.g. 10.0.0.0/8") from None
    return out


def require(lines: list[Directive]) -> Access:
    """The Require lines and <RequireAll>/<RequireAny> sections of one section (an
    implicit <RequireAny>: one container alone in it is that container)."""
    if len(lines) == 1 and lines[0].key == "requireall" and lines[0].block is not None:
        return _all(list(lines[0].block), lines[0])
    return _any(lines, lines[0])


def _any(items: list[Directive], where: Directive) -> Access:
    """<RequireAny> (and a section's implicit one): passes when one item passes."""
    allow: list[str] = []
    users = denied = False
    for d in items:
        kind = _kind(d)
        if kind == "granted":
            return Access()  # one item that always passes: the section lets everyone in
        if kind == "denied":
            denied = True
        elif kind == "ip":
            allow += _ip(d)
        elif kind == "users":
            users = True
        elif kind == "all":
            inner = _all(list(d.block or ()), d)
            if inner.deny or inner.users:
                raise AccessProblem(f"{d.origin}: a <RequireAll> with Require not ip or a user inside"
                                    " a <RequireAny> is not supported; make the <RequireAll> the outer"
                                    " section")
            allow += inner.allow or []
        elif kind == "any":
            inner = _any(list(d.block or ()), d)
            if inner.allow is None and not inner.deny and not inner.users:
                return Access()
            allow += inner.allow or []
            users = users or inner.users
        elif kind == "not":
            raise AccessProblem(f"{d.origin}: Require not ... alone or in a <RequireAny> is refused by"
                                " httpd (a negative rule lets nobody in by itself): write it in a"
                                " <RequireAll> with Require all granted")
    if users and allow:
        raise AccessProblem(f"{where.origin}: either an address or a password (Require ip with"
                            " Require valid-user in one <RequireAny>) is not supported; Porch checks"
                            " both: write them in a <RequireAll>, or keep one")
    if allow:
        return Access(allow=allow)
    if users:
        return Access(users=True)
    if denied:
        return Access(deny=["all"])
    return Access()


def _all(items: list[Directive], where: Directive) -> Access:
    """<RequireAll>: passes when every item passes."""
    out = Access()
    allow_from: Directive | None = None
    for d in items:
        kind = _kind(d)
        if kind == "granted":
            continue
        if kind == "denied":
            out.deny = ["all"]
        elif kind == "not":
            out.deny += _ip(d, negated=True)
        elif kind == "users":
            out.users = True
        elif kind in ("ip", "any"):
            inner = Access(allow=_ip(d)) if kind == "ip" else _any(list(d.block or ()), d)
            if inner.users:
                out.users = True
            if inner.allow is None:
                continue
            if allow_from is not None:
                raise AccessProblem(f"{d.origin}: a second address list that must also match (the"
                                    f" first at line {allow_from.line}): Porch has one allow list;"
                                    " write the addresses both let in as one Require ip line")
            out.allow, allow_from = inner.allow, d
        elif kind == "all":
            inner = _all(list(d.block or ()), d)
            if inner.allow is not None and out.allow is not None:
                raise AccessProblem(f"{d.origin}: a second address list that must also match: write"
                                    " the addresses both let in as one Require ip line")
            out.allow = inner.allow if inner.allow is not None else out.allow
            out.deny += inner.deny
            out.users = out.users or inner.users
    if "all" in out.deny:
        out.deny, out.allow = ["all"], None
    if not items:
        raise AccessProblem(f"{where.origin}: an empty <{where.name}>: httpd refuses it")
    return out


def _kind(d: Directive) -> str:
    if d.block is not None:
        if d.key in ("requireall", "requireany"):
            return d.key[7:]
        raise AccessProblem(f"{d.origin}: <{d.name}> is not supported among Require lines")
    args = [a.lower() for a in d.args]
    if d.key != "require" or not args:
        raise AccessProblem(f"{d.origin}: is not supported among Require lines")
    if args == ["all", "granted"]:
        return "granted"
    if args == ["all", "denied"]:
        return "denied"
    if args[0] in ("ip", "local"):
        return "ip"
    if args[0] == "not" and args[1:2] in (["ip"], ["local"]):
        return "not"
    if args[0] in _USERS:
        return "users"
    raise AccessProblem(f"{d.origin}: Require {' '.join(d.args)}: not supported (Require all"
                        " granted|denied, ip, not ip, local and valid-user are); write allow = [...]"
                        " or deny = [...] in a porch.toml")


def _ip(d: Directive, negated: bool = False) -> list[str]:
    args = d.args[1:] if negated else d.args
    if args[0].lower() == "local":
        return list(LOCAL)
    if len(args) < 2:
        raise AccessProblem(f"{d.origin}: Require ip takes one or more addresses: Require ip 10.0.0.0/8")
    return addresses(d, tuple(args[1:]))


def compat(order: Directive | None, allows: list[Directive], denies: list[Directive]) -> Access:
    """Order / Allow from / Deny from (mod_access_compat) where they map; else a problem."""
    def listed(lines: list[Directive]) -> tuple[list[str], bool]:
        nets: list[str] = []
        every = False
        for d in lines:
            if d.args[:1] != ("from",) and [a.lower() for a in d.args[:1]] != ["from"]:
                raise AccessProblem(f"{d.origin}: write {d.name} from ADDRESS ...")
            for arg in d.args[1:]:
                if arg.lower() == "all":
                    every = True
                elif arg.lower().startswith("env="):
                    raise AccessProblem(f"{d.origin}: {arg}: environment conditions are not supported")
                else:
                    nets += addresses(d, (arg,))
        return nets, every

    first = (order or (allows + denies)[0])
    way = "".join(order.args).lower().replace(" ", "") if order is not None else "deny,allow"
    if way not in ("deny,allow", "allow,deny", "mutual-failure"):
        raise AccessProblem(f"{first.origin}: Order {' '.join(order.args)}: write Order deny,allow or"
                            " Order allow,deny")
    allow, allow_all = listed(allows)
    deny, deny_all = listed(denies)
    fix = ("; write Require ip ... (with <RequireAll> and Require not ip ... for exceptions),"
           " which Porch reads as allow and deny")
    if way == "deny,allow":  # allowed unless denied, Allow overriding Deny
        if allow_all or not deny_all and not deny:
            return Access()
        if deny_all:
            return Access(allow=allow) if allow else Access(deny=["all"])
        if allow:
            raise AccessProblem(f"{first.origin}: Order deny,allow with both Deny from and Allow from"
                                f" addresses (let in: not denied, or allowed) has no Porch form{fix}")
        return Access(deny=deny)
    # allow,deny (and mutual-failure): allowed when allowed and not denied
    if deny_all or not allow and not allow_all:
        return Access(deny=["all"])
    return Access(allow=None if allow_all else allow, deny=deny)
