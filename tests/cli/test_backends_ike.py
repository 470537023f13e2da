"""`ipsec backends` and `ipsec selftest` for the IKE families: PRFs and key exchange methods."""
from __future__ import annotations

import json

from typer.testing import CliRunner

from ipsec_core.cli import app
from ipsec_core.crypto.registry import get_registry

runner = CliRunner()
IKE_KEYWORDS = ["prfsha1", "prfaesxcbc", "prfsha256", "prfsha384", "prfsha512", "prfaescmac",
                "modp2048", "modp3072", "modp4096", "ecp256", "ecp384", "ecp521", "x25519", "x448"]
FAMILY = {"prfsha1": "prf-hmac-sha1", "prfaesxcbc": "prf-aes128-xcbc",
          "prfsha256": "prf-hmac-sha256", "prfsha384": "prf-hmac-sha384",
          "prfsha512": "prf-hmac-sha512", "prfaescmac": "prf-aes128-cmac",
          "x25519": "curve25519", "x448": "curve448"}


def test_backends_json_lists_ike_algorithms(preferred):
    result = runner.invoke(app, ["backends", "--json"])
    assert result.exit_code == 0, result.output
    by_name = {b["name"]: b for b in json.loads(result.stdout)}
    assert by_name["reference"]["ike_algorithms"] == IKE_KEYWORDS
    assert by_name["aesni"]["ike_algorithms"] == IKE_KEYWORDS
    assert by_name["cryptodome"]["ike_algorithms"] == [k for k in IKE_KEYWORDS
                                                       if not k.startswith("modp")]
    assert "ecp256" in by_name["aesni"]["features"] and "prf-hmac-sha256" in by_name["aesni"]["features"]
    # each goes to the highest-priority backend offering it (ipsecmb for the PRFs where its
    # extension is built, aesni for the rest and everywhere else)
    registry = get_registry()
    for keyword in IKE_KEYWORDS:
        best = preferred(registry, FAMILY.get(keyword, keyword), None)
        assert keyword in by_name[best]["default_for"], (keyword, best)
    assert not by_name["cryptodome"]["failed"]
    assert "ecp256" not in by_name["aesni"]["algorithms"]           # ESP keywords stay apart


def test_backends_table_shows_ike_algorithms():
    result = runner.invoke(app, ["backends"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "IKE PRF / key exchange" in result.stdout
    for text in ("prfsha{1,256,384,512}", "modp{2048,3072,4096}", "ecp{256,384,521}", "x25519"):
        assert text in result.stdout


def test_selftest_runs_ke_and_prf_families():
    result = runner.invoke(app, ["selftest", "--backend", "cryptodome", "--family", "curve25519",
                                 "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    ids = {r["id"] for r in data["results"]}
    assert data["failed"] == 0 and {"rfc7748-x25519-alice", "wycheproof-x25519-tc1",
                                    "rfc8031-curve25519-peer-zero"} <= ids
    result = runner.invoke(app, ["selftest", "--backend", "reference", "--family", "prf-aes128-cmac"])
    assert result.exit_code == 0, result.output
    assert "all passed" in result.stdout


def test_selftest_of_a_family_the_backend_lacks_runs_nothing():
    result = runner.invoke(app, ["selftest", "--backend", "cryptodome", "--family", "modp2048"])
    assert result.exit_code != 0
    assert "no vector was run" in result.output
