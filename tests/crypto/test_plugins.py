"""Plugins: loading through entry points (with their distribution and version), the
IPSEC_PLUGINS allowlist and IPSEC_DISABLE_PLUGIN_AUTOLOAD, broken plugins reported and skipped
while the rest works, transforms added by plugins (accepted, refused for each reason, refused for
failing vectors), the backend-choice hook, and the `ipsec plugins` / `ipsec backends` listings.

The plugins are the small modules in tests/ipsec_test_plugins; entry points come from fake
distributions (a *.dist-info folder on sys.path), as `pip install` would leave them.
"""
from __future__ import annotations

import ipaddress
import json
import os

import pytest
from typer.testing import CliRunner

from ipsec_core.cli import app
from ipsec_core.crypto import selftest
from ipsec_core.crypto.base import Feature
from ipsec_core.crypto.catalog import NO_BACKEND, OFFERED, REFUSED
from ipsec_core.crypto.registry import (BUILTIN_PLUGINS, Registry, get_registry,
                                        reset_registry)
from ipsec_core.errors import BackendError, ProposalError
from ipsec_core.transforms.keywords import EspProposal, esp_keywords_for, parse_esp, resolve_encr
from ipsec_core.dataplane.sa import Direction, Mode, SaConfig, SecurityAssociation
from ipsec_core.testing import plugin_registry
from ipsec_core.transforms.iana import EncrId, EncrTransform, PluginEncrId
from ipsec_test_plugins import (bad_chooser, bad_transforms, chooser, hmac_only, toy_gcm,
                                wrong_vectors)

runner = CliRunner()
BUILTIN_NAMES = {"reference", "aesni", "cryptodome", "gpu", "ipsecmb"}


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture
def fake_dist(tmp_path, monkeypatch):
    """`fake_dist(name, version, {entry point name: module})` leaves what pip would: a
    dist-info folder with METADATA and entry_points.txt, on sys.path.  Autoload is on."""
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv("IPSEC_DISABLE_PLUGIN_AUTOLOAD", raising=False)
    monkeypatch.delenv("IPSEC_PLUGINS", raising=False)

    def install(name: str, version: str, entry_points: dict[str, str]) -> None:
        folder = tmp_path / f"{name.replace('-', '_')}-{version}.dist-info"
        folder.mkdir()
        (folder / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        (folder / "entry_points.txt").write_text(
            "[ipsec]\n" + "".join(f"{k} = {v}\n" for k, v in entry_points.items()))
    return install


@pytest.fixture
def process_registry():
    """Tests that change what the process-wide registry loads start and end with a fresh one."""
    reset_registry()
    yield
    reset_registry()


def problems_of(registry, plugin: str) -> list[str]:
    return [p.reason for p in registry.problems if p.plugin == plugin]


def sa_configs(proposal: str, *, catalog, backend=None):
    prop = parse_esp(proposal, catalog=catalog)
    key = os.urandom(prop.enc_key_bytes)
    integ = os.urandom(prop.integ_info.key_bytes) if prop.integ_info else b""
    a, b = ipaddress.ip_address("192.0.2.1"), ipaddress.ip_address("192.0.2.2")
    common = dict(spi=0x5150, mode=Mode.TUNNEL, proposal=prop, enc_key=key, integ_key=integ,
                  backend=backend)
    return (SaConfig(name="o", direction=Direction.OUT, local=a, remote=b, **common),
            SaConfig(name="i", direction=Direction.IN, local=b, remote=a, **common))


def udp_packet(n: int) -> bytes:
    from ipsec_core.wire.ip import IPPROTO_UDP, build_ipv4

    body = bytes(range(256)) * 6
    udp = b"\x9c\x40\x00\x35" + (8 + n).to_bytes(2, "big") + b"\0\0" + body[:n]
    return build_ipv4(src=bytes((198, 51, 100, 1)), dst=bytes((203, 0, 113, 1)),
                      proto=IPPROTO_UDP, payload_len=len(udp), ident=n) + udp


# -- loading ----------------------------------------------------------------------------------
def test_builtins_load_by_module_path_even_with_autoload_off(monkeypatch):
    monkeypatch.setenv("IPSEC_DISABLE_PLUGIN_AUTOLOAD", "1")
    registry = Registry()
    assert set(BUILTIN_PLUGINS) <= set(registry.plugins)
    assert BUILTIN_NAMES <= set(registry.records)
    for name in BUILTIN_PLUGINS:
        info = registry.plugins[name]
        assert info.builtin and info.loaded
        assert registry.hooks_of(name) == ["ipsec_register_backends"]
        assert info.distribution in ("ipsec-suite", None)   # None from a bare source checkout
    assert not [p for p in registry.problems if p.plugin in BUILTIN_PLUGINS]


def test_entry_point_plugin_loads_with_its_distribution_and_version(fake_dist):
    fake_dist("ipsec-hmac-only", "1.2.3", {"hmaconly": "ipsec_test_plugins.hmac_only"})
    registry = Registry()
    info = registry.plugins["ipsec_test_plugins.hmac_only"]
    assert (info.entry_point, info.distribution, info.version, info.loaded, info.builtin) == (
        "hmaconly", "ipsec-hmac-only", "1.2.3", True, False)
    assert registry.hooks_of("ipsec_test_plugins.hmac_only") == ["ipsec_register_backends"]
    record = registry.records["stdlib-hmac"]
    assert record.plugin == "ipsec_test_plugins.hmac_only"
    assert record.available and record.features == [Feature("hmac-sha256")]
    assert registry.select("hmac-sha256", None, backend="stdlib-hmac") is record.backend


def test_allowlist_loads_only_the_named_entry_points(fake_dist, monkeypatch):
    fake_dist("ipsec-hmac-only", "1.0", {"hmaconly": "ipsec_test_plugins.hmac_only"})
    fake_dist("ipsec-toy", "2.0", {"toy": "ipsec_test_plugins.toy_gcm"})
    monkeypatch.setenv("IPSEC_PLUGINS", "toy, nosuch")
    registry = Registry()
    assert "ipsec_test_plugins.toy_gcm" in registry.plugins
    assert "ipsec_test_plugins.hmac_only" not in registry.plugins
    assert "stdlib-hmac" not in registry.records and "toy" in registry.records
    assert BUILTIN_NAMES <= set(registry.records)       # built-ins are not subject to it
    assert problems_of(registry, "nosuch") == [
        "IPSEC_PLUGINS names it, but no installed distribution has an entry point of that name "
        "in the group 'ipsec'"]
    monkeypatch.setenv("IPSEC_PLUGINS", "")
    assert "ipsec_test_plugins.toy_gcm" not in Registry().plugins


@pytest.mark.parametrize("value,loads", [("1", False), ("yes", False), ("0", True), ("false", True)])
def test_disable_autoload(fake_dist, monkeypatch, value, loads):
    fake_dist("ipsec-hmac-only", "1.0", {"hmaconly": "ipsec_test_plugins.hmac_only"})
    monkeypatch.setenv("IPSEC_DISABLE_PLUGIN_AUTOLOAD", value)
    registry = Registry()
    assert ("stdlib-hmac" in registry.records) is loads
    assert BUILTIN_NAMES <= set(registry.records)


def test_broken_plugins_are_reported_and_skipped_the_rest_works(fake_dist):
    fake_dist("ipsec-broken", "0.0.1", {
        "broken": "ipsec_test_plugins.broken_import",
        "raises": "ipsec_test_plugins.hook_raises",
        "typo": "ipsec_test_plugins.typo_hook",
    })
    fake_dist("ipsec-hmac-only", "1.0", {"hmaconly": "ipsec_test_plugins.hmac_only"})
    registry = Registry()
    by_plugin = {p.plugin: p for p in registry.problems}
    broken = by_plugin["ipsec_test_plugins.broken_import"]
    assert (broken.distribution, broken.version) == ("ipsec-broken", "0.0.1")
    assert broken.reason.startswith("import failed: ModuleNotFoundError(")
    assert "ipsec_test_no_such_dependency" in broken.reason
    assert str(broken).startswith("plugin ipsec_test_plugins.broken_import (ipsec-broken 0.0.1): import failed")
    assert by_plugin["ipsec_test_plugins.hook_raises"].reason == (
        "ipsec_register_backends failed: RuntimeError('backend table not found')")
    typo = by_plugin["ipsec_test_plugins.typo_hook"].reason
    assert typo.startswith("register failed: ipsec_register_backend is not an ipsec hook")
    assert not registry.plugins["ipsec_test_plugins.typo_hook"].loaded
    assert not registry.pm.has_plugin("ipsec_test_plugins.typo_hook")
    assert not registry.plugins["ipsec_test_plugins.broken_import"].loaded
    # ... and everything else is there and works
    assert registry.records["stdlib-hmac"].available
    for name in ("reference", "aesni", "cryptodome"):
        assert registry.records[name].available and not registry.records[name].failed
    out_cfg, in_cfg = sa_configs("aes128gcm16", catalog=registry.transforms)
    out, inb = (SecurityAssociation(c, registry=registry, now=0.0) for c in (out_cfg, in_cfg))
    assert inb.unprotect(out.protect(udp_packet(100), now=0.0), now=0.0) == udp_packet(100)


def test_a_backend_registered_twice_and_a_non_backend_are_problems_not_crashes():
    class Twice:
        from ipsec_core import hookimpl

        @staticmethod
        @hookimpl
        def ipsec_register_backends(register):
            register(hmac_only.StdlibHmac())
            register(object())

    registry = Registry(load_entry_points=False, plugins=[hmac_only, Twice])
    reasons = problems_of(registry, "Twice")
    assert "backend name 'stdlib-hmac' is already registered by ipsec_test_plugins.hmac_only" in reasons
    assert any("which is not a named Backend" in r for r in reasons)


# -- transforms from plugins ------------------------------------------------------------------
@pytest.fixture(scope="module")
def toy():
    return plugin_registry(toy_gcm)


def test_private_use_aead_transform_is_offered_and_usable(toy):
    record = toy.transforms.by_id(toy_gcm.TOY_ID)
    assert record.state == OFFERED and record.plugin == "ipsec_test_plugins.toy_gcm"
    assert record.results == {"toy": {128: None}}
    prop = parse_esp("toygcm128-esn", catalog=toy.transforms)
    assert isinstance(prop.encr, PluginEncrId) and prop.encr == 1025
    assert prop.encr.name == "ENCR_TOY_GCM_16" and prop.keyword == "toygcm128-esn"
    assert prop.enc_key_bytes == 20 and prop.encr_info.icv_bytes == 16
    assert resolve_encr(1025, catalog=toy.transforms) is prop.encr
    assert EspProposal(prop.encr, 128) == parse_esp("toygcm128", catalog=toy.transforms)
    with pytest.raises(ProposalError, match="combined-mode"):
        parse_esp("toygcm128-sha256", catalog=toy.transforms)
    with pytest.raises(ProposalError, match=r"takes \(128,\) bit keys"):
        EspProposal(prop.encr, 256)


def test_private_use_aead_transform_carries_traffic_single_and_batch(toy):
    out_cfg, in_cfg = sa_configs("toygcm128", catalog=toy.transforms)
    out = SecurityAssociation(out_cfg, registry=toy, now=0.0)
    twin = SecurityAssociation(out_cfg, registry=toy, now=0.0)
    twin.engine.ident = out.engine.ident
    assert out.engine.backend_names == "toy"
    assert out.engine._fast_protect is not None      # the plugin AEAD takes the fast path
    packets = [udp_packet(n) for n in (0, 1, 2, 3, 100, 1400)]
    wire = [out.protect(p, now=0.0) for p in packets]
    assert twin.protect_batch(packets, now=0.0) == wire
    inb, inb_batch = (SecurityAssociation(in_cfg, registry=toy, now=0.0) for _ in range(2))
    assert [inb.unprotect(w, now=0.0) for w in wire] == packets
    fresh = out.protect(udp_packet(50), now=0.0)
    forged = fresh[:-1] + bytes([fresh[-1] ^ 1])
    verdicts = inb_batch.unprotect_batch(wire + [forged, wire[1]], now=0.0)
    assert verdicts[:6] == packets
    assert [v.reason.value for v in verdicts[6:]] == ["auth_failed", "replay"]


def test_plugin_vectors_run_in_selftest_and_the_quick_check(toy):
    backend = toy.records["toy"].backend
    cases = list(selftest.iter_cases("toy-gcm", catalog=toy.transforms))
    assert [c.id for c in cases][-1] == "mcgrew-toy-forged" and not cases[-1].valid
    assert all(c.source == "plugin ipsec_test_plugins.toy_gcm (ENCR_TOY_GCM_16)" for c in cases)
    results = selftest.run_all(backend, catalog=toy.transforms)
    assert results and all(r.passed for r in results) and {r.family for r in results} == {"toy-gcm"}
    assert selftest.quick_check(backend, Feature("toy-gcm", (128,)), catalog=toy.transforms) == []
    assert "toy-gcm" in {c.family for c in selftest.iter_cases(catalog=toy.transforms)}
    with pytest.raises(ValueError, match="no vectors for family 'toy-gcmx'"):
        list(selftest.iter_cases("toy-gcmx", catalog=toy.transforms))


def test_each_malformed_transform_is_refused_with_its_reason_the_good_ones_stay():
    registry = plugin_registry(toy_gcm, bad_transforms)
    reasons = problems_of(registry, "ipsec_test_plugins.bad_transforms")
    assert len(reasons) == len(bad_transforms.REFUSED)
    for name, why in bad_transforms.REFUSED.items():
        matching = [r for r in reasons if r.startswith(f"transform {name} refused: ")]
        assert len(matching) == 1 and why in matching[0], (name, reasons)
    assert {r.name for r in registry.transforms.refused} == set(bad_transforms.REFUSED)
    assert [t.name for t in registry.transforms] == ["ENCR_TOY_GCM_16", "ENCR_TOY_GCM_16_AGAIN"]
    assert all(t.state == OFFERED for t in registry.transforms)
    for keyword in ("novec128", "badiv128", "dupid128"):
        with pytest.raises(ProposalError, match=f"unknown keyword '{keyword}'"):
            parse_esp(keyword, catalog=registry.transforms)
    assert parse_esp("toyagain128", catalog=registry.transforms).encr == 1030
    assert parse_esp("aes128-sha256", catalog=registry.transforms).encr is EncrId.ENCR_AES_CBC


def test_failing_vectors_refuse_the_transform_and_the_family_the_rest_works(preferred):
    registry = plugin_registry(toy_gcm, wrong_vectors)
    wrong = registry.transforms.by_id(1026)
    assert wrong.state == REFUSED
    assert wrong.reason.startswith("its known-answer vectors fail on every backend that declares "
                                   "wrong-gcm (wrong: mcgrew-wrong-1: encrypt differs")
    assert problems_of(registry, "ipsec_test_plugins.wrong_vectors") == [
        f"transform ENCR_WRONG_GCM_16 refused: {wrong.reason}"]
    record = registry.records["wrong"]
    assert record.available and record.features == []
    assert list(record.failed) == ["wrong-gcm(128)"]
    with pytest.raises(ProposalError, match="ENCR_WRONG_GCM_16 from plugin "
                                            "ipsec_test_plugins.wrong_vectors, which is not offered"):
        parse_esp("wronggcm128", catalog=registry.transforms)
    with pytest.raises(BackendError, match="its self-test failed"):
        registry.select("wrong-gcm", 128, backend="wrong")
    with pytest.raises(BackendError, match="no available backend offers wrong-gcm"):
        registry.select("wrong-gcm", 128)
    # the rest keeps working: the toy transform, the built-ins
    assert registry.transforms.by_id(toy_gcm.TOY_ID).state == OFFERED
    assert registry.select("toy-gcm", 128).name == "toy"
    assert registry.select("aes-gcm", 256).name == preferred(registry, "aes-gcm", 256)


def test_transform_on_a_builtin_family_added_after_the_backends_is_checked_against_them():
    # every available backend that offers AES-GCM with 128-bit keys (ipsecmb among them where
    # its extension is built) runs the new transform's vectors
    registry = plugin_registry()
    vectors = [dict(v, id=v["id"].replace("toy", "priv")) for v in toy_gcm.vectors()]
    spec = EncrTransform(id=1050, name="ENCR_PRIVATE_AES_GCM_16", keywords={"aes128gcm16priv": 128},
                         kind="aead", family="aes-gcm", key_bits=(128,), iv_bytes=8, block_bytes=4,
                         salt_bytes=4, icv_bytes=16, vectors=vectors)
    gcm128 = {r.name for r in registry.available() if r.offers("aes-gcm", 128)}
    assert {"reference", "aesni", "cryptodome"} <= gcm128
    record = registry.add_transform(spec, plugin="tests")
    assert record.state == OFFERED
    assert set(record.results) == gcm128
    assert all(r == {128: None} for r in record.results.values())
    assert all(not registry.records[n].failed for n in gcm128)
    assert "aes128gcm16priv" in esp_keywords_for("aes-gcm", (128,), catalog=registry.transforms)
    # a transform whose family no backend declares stays known, and an SA says why it fails
    spec2 = EncrTransform(id=1051, name="ENCR_NOBODY", keywords={"nobody128": 128}, kind="aead",
                          family="nobody-gcm", key_bits=(128,), iv_bytes=8, block_bytes=4,
                          salt_bytes=4, icv_bytes=16,
                          vectors=[dict(v, id=v["id"].replace("toy", "nobody")) for v in toy_gcm.vectors()])
    nobody = registry.add_transform(spec2, plugin="tests")
    assert nobody.state == NO_BACKEND and nobody.reason == "no available backend declares nobody-gcm"
    out_cfg, _ = sa_configs("nobody128", catalog=registry.transforms)
    with pytest.raises(BackendError, match="no available backend offers nobody-gcm with 128-bit keys"):
        SecurityAssociation(out_cfg, registry=registry, now=0.0)


def test_plain_int_transform_ids():
    assert EspProposal(20, 128).encr is EncrId.ENCR_AES_GCM_16
    assert EspProposal(12, 256, parse_esp("aes256-sha256").integ).keyword == "aes256-sha256"
    with pytest.raises(ProposalError, match="unknown ENCR transform id 999: not built in"):
        EspProposal(999, 128)


def test_feature_accepts_plugin_families_only_once_registered():
    with pytest.raises(ValueError, match="unknown primitive family 'never-registered'"):
        Feature("never-registered", (128,))
    plugin_registry(toy_gcm)
    assert Feature("toy-gcm", (128,)).kind.value == "aead"


# -- backend choice ---------------------------------------------------------------------------
def test_choose_hook_takes_part_in_the_choice_for_unnamed_backends(preferred):
    registry = plugin_registry(chooser)
    assert preferred(registry, "aes-gcm", 128) != "cryptodome"       # the hook changes the choice
    assert registry.select("aes-gcm", 128).name == "cryptodome"
    assert registry.select("aes-cbc", 128).name == preferred(registry, "aes-cbc", 128)  # no opinion
    assert registry.select("aes-gcm", 128, backend="aesni").name == "aesni"  # named: exactly it
    out_cfg, _ = sa_configs("aes128gcm16", catalog=registry.transforms)
    assert SecurityAssociation(out_cfg, registry=registry, now=0.0).engine.backend_names == "cryptodome"
    with registry.preferring("reference"):                            # asked before the others
        assert registry.select("aes-gcm", 128).name == "reference"
    assert registry.select("aes-gcm", 128).name == "cryptodome"


def test_a_choice_that_is_not_a_candidate_refuses_the_sa(preferred):
    registry = plugin_registry(bad_chooser)
    with pytest.raises(BackendError, match="plugin ipsec_test_plugins.bad_chooser chose backend "
                                           "'no-such-backend' for aes-gcm with 128-bit keys, which "
                                           "is not one of the candidates"):
        registry.select("aes-gcm", 128)
    assert registry.select("aes-cbc", 128).name == preferred(registry, "aes-cbc", 128)


def test_preferring_keeps_the_usual_choice_for_what_the_backend_lacks(preferred):
    registry = plugin_registry(hmac_only)
    assert preferred(registry, "hmac-sha256", None) != "stdlib-hmac"
    with registry.preferring("stdlib-hmac"):
        out_cfg, _ = sa_configs("aes128-sha256", catalog=registry.transforms)
        sa = SecurityAssociation(out_cfg, registry=registry, now=0.0)
    assert sa.engine.backend_names == f"{preferred(registry, 'aes-cbc', 128)},stdlib-hmac"
    with pytest.raises(BackendError, match="not installed"):
        with registry.preferring("nosuch"):
            pass


# -- the command line -------------------------------------------------------------------------
def test_plugins_json_lists_the_builtins(process_registry):
    result = invoke("plugins", "--json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    by_name = {r["name"]: r for r in rows}
    assert set(BUILTIN_PLUGINS) <= set(by_name)
    for row in rows:
        assert {"name", "distribution", "version", "hooks", "features"} <= set(row)
    aesni = by_name["ipsec_plugins.aesni"]
    assert aesni["hooks"] == ["ipsec_register_backends"] and aesni["builtin"] and aesni["loaded"]
    assert aesni["distribution"] in ("ipsec-suite", None)
    assert {f["selftest"] for f in aesni["features"]} == {"passed"}
    assert {f["feature"] for f in aesni["features"]} >= {"aes-gcm(128/192/256)", "hmac-sha256"}
    gpu = by_name["ipsec_plugins.gpu"]
    assert gpu["backends"][0]["name"] == "gpu"
    result = invoke("plugins")
    assert result.exit_code == 0 and "backend aesni" in " ".join(result.stdout.split())


def test_plugins_lists_broken_and_working_entry_points(fake_dist, process_registry):
    fake_dist("ipsec-broken", "0.0.1", {"broken": "ipsec_test_plugins.broken_import"})
    fake_dist("ipsec-toy", "3.1", {"toy": "ipsec_test_plugins.toy_gcm",
                                   "wrong": "ipsec_test_plugins.wrong_vectors"})
    result = invoke("plugins", "--json")
    assert result.exit_code == 0, result.output
    by_name = {r["name"]: r for r in json.loads(result.stdout)}
    broken = by_name["ipsec_test_plugins.broken_import"]
    assert (broken["distribution"], broken["version"], broken["loaded"]) == ("ipsec-broken", "0.0.1", False)
    assert broken["problems"][0].startswith("import failed: ModuleNotFoundError")
    toy = by_name["ipsec_test_plugins.toy_gcm"]
    assert (toy["distribution"], toy["version"], toy["entry_point"]) == ("ipsec-toy", "3.1", "toy")
    assert toy["hooks"] == ["ipsec_register_backends", "ipsec_register_transforms"]
    assert toy["features"] == [{"backend": "toy", "feature": "toy-gcm(128)", "family": "toy-gcm",
                                "key_bits": [128], "offered": True, "selftest": "passed",
                                "detail": ""}]
    assert toy["transforms"] == [{"id": 1025, "name": "ENCR_TOY_GCM_16", "keywords": ["toygcm128"],
                                  "family": "toy-gcm", "kind": "aead", "state": "offered",
                                  "reason": None}]
    wrong = by_name["ipsec_test_plugins.wrong_vectors"]
    assert wrong["features"][0]["selftest"] == "failed"
    assert wrong["transforms"][0]["state"] == "refused"
    assert wrong["problems"][0].startswith("transform ENCR_WRONG_GCM_16 refused")
    table = invoke("plugins")
    assert table.exit_code == 0
    assert "warning: plugin ipsec_test_plugins.broken_import (ipsec-broken 0.0.1): import failed" in table.stderr
    # the new transform is usable from the command line too
    backends = json.loads(invoke("backends", "--json").stdout)
    assert "toygcm128" in {b["name"]: b for b in backends}["toy"]["algorithms"]
    assert "toygcm128" in {b["name"]: b for b in backends}["toy"]["default_for"]
    result = invoke("selftest", "--backend", "toy", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["passed"] == len(toy_gcm.vectors())
    assert invoke("selftest", "--family", "toy-gcm").exit_code == 0


def test_backends_shows_which_backend_each_algorithm_gets(process_registry, preferred):
    result = invoke("backends", "--json")
    assert result.exit_code == 0
    by_name = {b["name"]: b for b in json.loads(result.stdout)}
    gets = {}
    for name, row in by_name.items():
        for algorithm in row["default_for"]:
            assert algorithm not in gets, f"{algorithm} is the default of {gets[algorithm]} and {name}"
            gets[algorithm] = name
    registry = get_registry()
    for algorithm, (family, bits, tag) in {
            "aes128gcm16": ("aes-gcm", 128, 16), "aes256": ("aes-cbc", 256, None),
            "chacha20poly1305": ("chacha20-poly1305", 256, 16), "sha256": ("hmac-sha256", None, None),
            "aescmac": ("aes-cmac", 128, None), "aes192ccm16": ("aes-ccm", 192, 16)}.items():
        assert gets[algorithm] == preferred(registry, family, bits, tag), algorithm
    assert by_name["reference"]["default_for"] == [] and by_name["gpu"]["default_for"] == []
    table = invoke("backends")
    assert "Default choice" in table.stdout


def test_selftest_unknown_family_lists_the_known_ones(process_registry):
    result = invoke("selftest", "--family", "aes-ocb")
    assert result.exit_code == 1
    assert "unknown family 'aes-ocb'; known: aes-cbc, aes-ccm" in result.stderr


def test_get_registry_is_not_reentrant():
    """A plugin hook calling get_registry() while the registry loads gets an error (reported as
    that plugin's problem), not an endless recursion."""
    import ipsec_core.crypto.registry as reg

    saved = reg._REGISTRY
    try:
        reg._REGISTRY, reg._LOADING = None, True
        with pytest.raises(RuntimeError, match="while the registry loads"):
            get_registry()
    finally:
        reg._REGISTRY, reg._LOADING = saved, False


def test_perf_measures_counter_mode_and_plugin_transforms(toy):
    from ipsec_core.tools.perf import measure

    rows = measure(backend="aesni", proposal="aes128ctr-sha256", size=64, count=40, batch=8,
                   repeats=1)
    assert {r.direction for r in rows} == {"protect", "unprotect"} and all(r.pps > 0 for r in rows)
    rows = measure(backend="toy", proposal="toygcm128", size=100, count=40, batch=8, repeats=1,
                   registry=toy)
    assert {r.backend_names for r in rows} == {"toy"}
    # a backend with a MAC only: the cipher comes from the usual choice, and perf says so
    hmac_registry = plugin_registry(hmac_only)
    with pytest.raises(BackendError, match="'stdlib-hmac' does not offer aes-cbc with 128-bit keys"):
        measure(backend="stdlib-hmac", proposal="aes128-sha256", size=64, count=8, batch=8,
                repeats=1, registry=hmac_registry)

