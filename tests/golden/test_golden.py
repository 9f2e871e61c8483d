"""Golden config tests: each NAME.toml here, read as porch.toml, gives NAME.out: the
`porch check --dump` text of the model, or the error text `porch check` prints.
A good config's dump must also load back to the same model.  README.md says how to
add a case and how to rewrite the .out files (PORCH_UPDATE_GOLDEN=1)."""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import sys
from pathlib import Path

import pytest

from porch.config import keys, streams
from porch.config.dump import dump
from porch.config.errors import ConfigError
from porch.config.model import Config
from porch.config.toml import loads, origins
from porch.policies import registry

HERE = Path(__file__).resolve().parent
CASES = sorted(p.stem for p in HERE.glob("*.toml"))
UPDATE = os.environ.get("PORCH_UPDATE_GOLDEN") == "1"
PLACEHOLDER = "@CERTS@"  # the directory of the certificates made for the run

_CERTS = HERE.parent / "integration" / "certs.py"
_spec = importlib.util.spec_from_file_location("porch_test_certs", _CERTS)
certs = sys.modules.setdefault("porch_test_certs", importlib.util.module_from_spec(_spec))
if not hasattr(certs, "TestCA"):
    _spec.loader.exec_module(certs)


@pytest.fixture(scope="module")
def cert_dir(tmp_path_factory) -> Path:
    """Files the cases name as @CERTS@/...: a CA, a site's and a client's certificate,
    an htpasswd file, an admin token file."""
    d = tmp_path_factory.mktemp("golden-certs")
    ca = certs.TestCA(d)
    for stem, names, client in (("site", ["files.example.org"], False), ("client", ["porch"], True)):
        pair = ca.issue(stem, names, client=client)
        os.replace(pair.cert, d / f"{stem}.pem")
        os.replace(pair.key, d / f"{stem}.key")
    os.replace(ca.cert, d / "ca.pem")
    # basic_auth's file: bcrypt of "golden", and a plaintext password (warned about)
    (d / "htpasswd").write_text("alice:$2y$04$Ir4mWnzGvbfibhWOHJikReEj0yr.L4YzkEOioB.25b2SRZkyYSx2S\n"
                                "carol:plaintext\n")
    # admin.toml's admin_token_file: made here, as the keys are (no token in the repository)
    (d / "admin-token").write_text("golden-case-token-" + "0" * 16 + "\n")
    return d


def output(name: str, cert_dir: Path) -> tuple[str, Config | None]:
    """What `porch check --dump` prints for the case (stdout or stderr), and the model."""
    text = (HERE / f"{name}.toml").read_text().replace(PLACEHOLDER, str(cert_dir))
    try:
        config = loads(text, source=f"{name}.toml", base=str(HERE))
    except ConfigError as err:
        return "\n".join(err.located()) + "\n", None
    out = "".join(f"# warning: {line}\n" for line in config.warnings) + dump(config)
    return out.replace(str(cert_dir), PLACEHOLDER), config


@pytest.mark.parametrize("name", CASES)
def test_golden(name, cert_dir):
    found, config = output(name, cert_dir)
    expected_file = HERE / f"{name}.out"
    if UPDATE:
        expected_file.write_text(found)
    assert found == expected_file.read_text(), f"{name}.out differs (PORCH_UPDATE_GOLDEN=1 rewrites it)"
    if config is not None:  # the dump is porch.toml that means the same
        again = loads(dump(config), source=f"{name}.toml", base=str(HERE))
        assert _unplaced(again) == _unplaced(config)
        assert dump(again) == dump(config)


def test_every_key_has_a_golden_case():
    """A key no case writes is a key whose dump nobody checked: a new key, a policy
    in registry.SPECS included, comes with a line in one of the cases here."""
    written = set()
    for name in CASES:
        paths = origins((HERE / f"{name}.toml").read_text(), name)
        written |= {path.rpartition(".")[2].split("[")[0] for path in paths}
    wanted = set(keys.GLOBAL_KEYS) | set(keys.SITE_KEYS) | set(keys.ROUTE_KEYS) | set(streams.KEYS)
    wanted |= {spec.key for spec in registry.SPECS}
    assert sorted(wanted - written) == []


def _unplaced(config: Config) -> Config:
    """`config` without what says where it was read (key paths, file name)."""
    sites = tuple(dataclasses.replace(site, key_path="", routes=tuple(
        dataclasses.replace(route, key_path="") for route in site.routes)) for site in config.sites)
    streams_ = tuple(dataclasses.replace(stream, key_path="") for stream in config.streams)
    return dataclasses.replace(config, sites=sites, streams=streams_, source="", warnings=())
