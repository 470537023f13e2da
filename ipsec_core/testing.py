"""Conformance kit for crypto backends: what a plugin's own test suite calls to check its backend
the way the built-in backends are checked.

Owns: the checks, each a named zero-argument callable that raises `ConformanceError` (an
AssertionError) with what is wrong:

- ``registered``: the backend loads, is available, every feature it declares passed its
  self-test, its plugin reported no problem and every transform it brought is offered;
- ``vectors[FAMILY]``: every known-answer vector of each declared family (packaged RFC and
  Wycheproof ones, and those of plugin transforms) through `selftest.run_all`, with at least one
  vector for each declared key size;
- ``differential[FAMILY]``: random keys, nonces, AADs and lengths against the pure-Python
  `reference` backend, for the families it has too (key exchange: a fixed private key gives
  the same public value, and fresh keys on both sides agree);
- ``bad-input[FAMILY]``: AEADs must raise `AuthenticationError` (and nothing else) for a forged
  tag, a flipped ciphertext or AAD bit, a truncated input and one shorter than the tag;
- ``esp[PROPOSAL]``: a real SA pair bound to the backend: tunnel and transport, IPv4 and IPv6
  round trips; forged, truncated and replayed packets dropped with the right reason and the SA
  left as it was;
- ``batch[PROPOSAL]``: `protect_batch` / `unprotect_batch` give what one-by-one processing gives
  (bytes where the transform is deterministic, verdicts and SA state always).

Use it from plain code (`check_backend("mine", plugins=["my_plugin"])`), from a parametrized
test (`conformance_params`), or as a pytest plugin: ``pytest_plugins = ["ipsec_core.testing"]``
in the plugin's top-level conftest.py gives the marker ``ipsec_backend(name, plugins=[...])``
and parametrizes a test's ``ipsec_check`` argument with every check (see README, "Writing a
plugin").  ESP checks force the backend under test with an `ipsec_choose_backend` plugin of
their own (`Registry.preferring`), so integrity comes from the best other backend when it has
no MAC.
Must not: be imported by the library or the data plane; it is for tests.
"""
from __future__ import annotations

import ipaddress
import random
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

from ipsec_core.crypto.base import FeatureKind, family_kind
from ipsec_core.errors import AuthenticationError, PacketDropped
from ipsec_core.transforms.iana import ENCR_INFO, INTEG_INFO, CipherKind

#: Integrity keyword used with cipher proposals when the backend under test has no MAC.
DEFAULT_INTEG = "sha256"
REFERENCE = "reference"
_V4 = (ipaddress.ip_address("192.0.2.1"), ipaddress.ip_address("192.0.2.2"))
_V6 = (ipaddress.ip_address("2001:db8::1"), ipaddress.ip_address("2001:db8::2"))
#: The data plane's `now` for the kit's SAs: they have no lifetimes, so one instant will do.
_NOW = 0.0


class ConformanceError(AssertionError):
    """A backend does not behave as the core's contract says."""


@dataclass(frozen=True)
class Check:
    """One conformance check: `id` names it (for test ids), calling it runs it."""

    id: str
    func: Callable[[], None]

    def __call__(self) -> None:
        self.func()

    def __str__(self) -> str:
        return self.id


#: A TCP server for end-to-end tests through a tunnel, run as `python3 -c TCP_HASH_SERVER SIZE
#: ADDRESS REPLY`: it takes SIZE bytes on ADDRESS port 5399, sends back bytes(range(251)) * REPLY,
#: and prints "ready", then the SHA-256 of what it got and how many bytes it missed.
TCP_HASH_SERVER = r"""
import hashlib, socket, sys
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind((sys.argv[2], 5399)); srv.listen(1); print("ready", flush=True)
conn, _ = srv.accept()
h, left = hashlib.sha256(), int(sys.argv[1])
while left:
    chunk = conn.recv(min(left, 1 << 16))
    if not chunk:
        break
    h.update(chunk); left -= len(chunk)
conn.sendall(bytes(range(251)) * int(sys.argv[3])); conn.shutdown(socket.SHUT_WR)
print(h.hexdigest(), left, flush=True)
"""

#: Its client, `python3 -c TCP_HASH_CLIENT SIZE SERVER SOURCE`: sends SIZE seeded random bytes
#: from SOURCE, prints the SHA-256 of what it sent, of what came back, and how many bytes came.
TCP_HASH_CLIENT = r"""
import hashlib, random, socket, sys
data = random.Random(7).randbytes(int(sys.argv[1]))
c = socket.create_connection((sys.argv[2], 5399), timeout=30, source_address=(sys.argv[3], 0))
c.sendall(data); c.shutdown(socket.SHUT_WR)
h, got = hashlib.sha256(), 0
while chunk := c.recv(1 << 16):
    h.update(chunk); got += len(chunk)
print(hashlib.sha256(data).hexdigest(), h.hexdigest(), got, flush=True)
"""


def issue_certificate(subject, key, issuer, issuer_key, *, ca: bool, san=(), days=(-1, 30),
                      now=None):
    """An X.509 certificate for tests and benchmarks: `subject` / `issuer` (x509.Name), the
    subject's and issuer's private keys, basic constraints (`ca`), key identifiers, key usage
    for a CA, subject alternative names `san` (x509.GeneralName), valid from now + days[0] to
    now + days[1]; signed with SHA-384 by a P-384 or P-521 issuer, SHA-256 otherwise."""
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    now = now or dt.datetime.now(dt.timezone.utc)
    pub = key.public_key()
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
               .public_key(pub).serial_number(x509.random_serial_number())
               .not_valid_before(now + dt.timedelta(days=days[0]))
               .not_valid_after(now + dt.timedelta(days=days[1]))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(pub), critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                   issuer_key.public_key()), critical=False))
    if ca:
        builder = builder.add_extension(x509.KeyUsage(
            digital_signature=False, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
            encipher_only=False, decipher_only=False), critical=True)
    if san:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(san)), critical=False)
    digest = hashes.SHA384() if isinstance(issuer_key, ec.EllipticCurvePrivateKey) and \
        issuer_key.curve.key_size > 256 else hashes.SHA256()
    return builder.sign(issuer_key, digest)


class CountingBatchAead:
    """An AEAD with the whole-batch calls a GPU backend has (`encrypt_batch` / `decrypt_batch`,
    `ipsec_core.crypto.base`), over another backend's AEAD, counting the calls of each kind."""

    def __init__(self, inner):
        self.inner, self.tag_bytes = inner, inner.tag_bytes
        self.batch_calls = self.single_calls = 0
        self.batch_sizes: list[int] = []

    def encrypt(self, nonce, pt, aad):
        self.single_calls += 1
        return self.inner.encrypt(nonce, pt, aad)

    def decrypt(self, nonce, data, aad):
        self.single_calls += 1
        return self.inner.decrypt(nonce, data, aad)

    def encrypt_batch(self, nonces, pts, aads):
        self.batch_calls += 1
        self.batch_sizes.append(len(pts))
        return [self.inner.encrypt(n, p, a) for n, p, a in zip(nonces, pts, aads)]

    def decrypt_batch(self, nonces, datas, aads):
        self.batch_calls += 1
        self.batch_sizes.append(len(datas))
        out = []
        for n, d, a in zip(nonces, datas, aads):
            try:
                out.append(self.inner.decrypt(n, d, a))
            except Exception:
                out.append(None)
        return out


def batch_backend(real, *, name: str = "batchy", priority: int = 1):
    """A backend offering AES-GCM through `CountingBatchAead` over `real` (another backend):
    what the data plane and drivers do with a whole-batch backend, without a GPU."""
    from ipsec_core.crypto.base import Backend, Feature

    class _BatchBackend(Backend):
        def features(self):
            return [Feature("aes-gcm", (128, 256))]

        def aead(self, family, key, *, tag_bytes, nonce_bytes):
            return CountingBatchAead(real.aead(family, key, tag_bytes=tag_bytes, nonce_bytes=nonce_bytes))

    backend = _BatchBackend()
    backend.name, backend.priority = name, priority
    return backend


def plugin_registry(*plugins, selftest: bool = True):
    """A fresh registry with the built-in backends and the given plugin modules (objects or
    dotted names), whatever is installed and whatever IPSEC_PLUGINS says."""
    from ipsec_core.crypto.registry import Registry

    return Registry(load_entry_points=False, selftest=selftest, plugins=plugins)


def _fail(what: str, problems: Sequence[str]) -> None:
    if problems:
        shown = "; ".join(problems[:5])
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        raise ConformanceError(f"{what}: {shown}{more}")


# -- the checks -------------------------------------------------------------------------------
def check_registered(registry, backend: str) -> None:
    record = registry.records.get(backend)
    if record is None:
        raise ConformanceError(f"backend {backend!r} is not registered (registered: "
                               f"{', '.join(sorted(registry.records))}; problems: "
                               f"{'; '.join(map(str, registry.problems)) or 'none'})")
    if not record.available:
        raise ConformanceError(f"backend {backend!r} is unavailable: {record.reason}")
    problems = [f"{k} not offered: {v}" for k, v in record.failed.items()]
    problems += [str(p) for p in registry.problems if p.plugin == record.plugin]
    problems += [f"transform {t.name}: {t.state} ({t.reason})" for t in registry.transforms
                 if t.plugin == record.plugin and t.state != "offered"]
    problems += [f"transform {t.name} refused: {t.reason}" for t in registry.transforms.refused
                 if t.plugin == record.plugin]
    if not record.declared:
        problems.append("declares no feature")
    _fail(f"backend {backend!r}", problems)


def check_vectors(registry, backend: str, family: str) -> None:
    from ipsec_core.crypto import selftest

    record = registry.get(backend)
    results = selftest.run_all(record.backend, family, catalog=registry.transforms)
    failed = [f"{r.id}: {r.detail}" for r in results if not r.passed]
    _fail(f"{backend} on {family} vectors ({len(failed)} of {len(results)} failed)", failed)
    ran = {c.key_bits for c in selftest.iter_cases(family, catalog=registry.transforms)
           if any(r.id == c.id for r in results)}
    for feature in record.declared:
        if feature.family == family:
            missing = [b for b in feature.key_bits if b not in ran]
            _fail(f"{backend} declares {feature}", [f"no vector ran with {b}-bit keys" for b in missing])
    if not results:
        raise ConformanceError(f"{backend}: no {family} vector ran")


def _esp_sizes(registry, family: str) -> tuple[list[int], list[int]]:
    """(tag sizes, nonce sizes) ESP uses for an AEAD family."""
    infos = [i for i in ENCR_INFO.values() if i.family == family]
    infos += [t.info for t in registry.transforms.of_family(family)]
    tags = sorted({i.icv_bytes for i in infos}) or [16]
    nonces = sorted({i.salt_bytes + i.iv_bytes for i in infos}) or [12]
    return tags, nonces


def _key_sizes(registry, backend: str, family: str, *, declared: bool = True) -> list[int]:
    record = registry.get(backend)
    sizes: set[int] = set()
    for f in record.declared if declared else record.features:
        if f.family == family:
            sizes |= set(f.key_bits)
    return sorted(sizes)


def check_differential(registry, backend: str, family: str, *, rounds: int = 3, seed: int = 1) -> None:
    """Random inputs through `backend` and `reference`: the same outputs, and round trips."""
    rng = random.Random(f"{seed}:{backend}:{family}")
    ours, ref = registry.get(backend).backend, registry.get(REFERENCE).backend
    kind = family_kind(family)
    problems: list[str] = []
    lengths = [0, 1, 15, 16, 17, 64, 255, 1024]
    mine = _key_sizes(registry, backend, family)
    ref_sizes = _key_sizes(registry, REFERENCE, family, declared=False)
    sizes = [b for b in mine if b in ref_sizes] if mine else [None]

    def blob(n: int) -> bytes:
        return rng.randbytes(n)

    if kind is FeatureKind.AEAD:
        tags, nonces = _esp_sizes(registry, family)
        if family == "aes-ccm":
            nonces = sorted(set(nonces) | {12, 13})
        for bits in sizes:
            for tag in tags:
                for nonce_len in nonces:
                    key = blob(bits // 8)
                    a = ours.aead(family, key, tag_bytes=tag, nonce_bytes=nonce_len)
                    b = ref.aead(family, key, tag_bytes=tag, nonce_bytes=nonce_len)
                    for n in rng.sample(lengths, rounds):
                        nonce, aad, pt = blob(nonce_len), blob(rng.choice((0, 8, 12, 20))), blob(n)
                        got, want = a.encrypt(nonce, pt, aad), b.encrypt(nonce, pt, aad)
                        where = f"{bits}-bit key, tag {tag}, nonce {nonce_len}, {n} bytes"
                        if got != want:
                            problems.append(f"encrypt differs from reference ({where})")
                        elif a.decrypt(nonce, want, aad) != pt:
                            problems.append(f"decrypt of the reference's output is wrong ({where})")
    elif kind is FeatureKind.CIPHER:
        whole = family.endswith("-cbc")
        for bits in sizes:
            key = blob(bits // 8)
            a, b = ours.cipher(family, key), ref.cipher(family, key)
            for n in rng.sample(lengths, rounds + 1):
                n = n - n % 16 if whole else n
                iv, data = blob(16), blob(n)
                got, want = a.encrypt(iv, data), b.encrypt(iv, data)
                if got != want:
                    problems.append(f"encrypt differs from reference ({bits}-bit key, {n} bytes)")
                elif a.decrypt(iv, want) != data:
                    problems.append(f"decrypt of the reference's output is wrong ({bits}-bit key, {n} bytes)")
    elif kind is FeatureKind.PRF:
        for _ in range(rounds + 1):
            key_len = rng.choice((0, 10, 16, 20, 32, 64, 100, 200))   # the AES PRFs' key rule too
            key, msg = blob(key_len), blob(rng.choice(lengths))
            if ours.prf(family, key).prf(msg) != ref.prf(family, key).prf(msg):
                problems.append(f"PRF differs from reference ({key_len}-byte key, {len(msg)} bytes)")
    elif kind is FeatureKind.KE:
        problems += _ke_differential(ours, ref, family, blob)
    elif kind is FeatureKind.SIGNATURE:
        problems += _signature_differential(ours, ref, family, blob, rounds=rounds)
    else:
        for bits in sizes:
            for _ in range(rounds):
                key_len = bits // 8 if bits else rng.choice((0, 20, 32, 64, 100, 200))
                key, msg = blob(key_len), blob(rng.choice(lengths))
                if ours.mac(family, key).mac(msg) != ref.mac(family, key).mac(msg):
                    problems.append(f"MAC differs from reference ({key_len}-byte key, {len(msg)} bytes)")
    _fail(f"{backend} against reference on {family}", problems)


def _ke_differential(ours, ref, family: str, blob) -> list[str]:
    """A fixed private key gives the reference's public value; fresh keys on both sides agree."""
    from ipsec_core.crypto.kex import ke_family
    from ipsec_core.transforms.iana import KeKind

    spec = ke_family(family)
    if spec.kind is KeKind.MODP:
        private = bytes([0x80]) + blob(31)                    # a 256-bit exponent, in range
    elif spec.kind is KeKind.ECP:
        private = b"\x00" + blob(spec.private_bytes - 2) + b"\x01"   # below n, not zero
    else:
        private = blob(spec.private_bytes)
    problems = []
    a, b = ours.key_exchange(family, private_key=private), ref.key_exchange(family, private_key=private)
    if a.public_bytes != b.public_bytes:
        problems.append("the public value of a fixed private key differs from reference")
    mine, theirs = ours.key_exchange(family), ref.key_exchange(family)
    if mine.shared_secret(theirs.public_bytes) != theirs.shared_secret(mine.public_bytes):
        problems.append("fresh keys: the shared secret differs from reference's")
    return problems


def _signature_differential(ours, ref, family: str, blob, *, rounds: int) -> list[str]:
    """With the packaged test key of `family`: each side's signatures verify on the other, and
    a deterministic scheme (PKCS#1 v1.5) signs exactly as reference does."""
    from ipsec_core.crypto import selftest

    case = next(c for c in selftest.iter_cases(family) if getattr(c, "private_key", b""))
    problems = []
    for _ in range(rounds):
        msg = blob(random.choice((0, 1, 64, 1000)))
        mine = ours.signer(family, case.private_key).sign(msg)
        theirs = ref.signer(family, case.private_key).sign(msg)
        if not ref.verifier(family, case.public_key).verify(msg, mine):
            problems.append(f"reference refuses the signature of a {len(msg)}-byte message")
        if not ours.verifier(family, case.public_key).verify(msg, theirs):
            problems.append(f"refuses reference's signature of a {len(msg)}-byte message")
        if case.deterministic and mine != theirs:
            problems.append(f"the signature of a {len(msg)}-byte message differs from reference")
    return problems


def check_bad_input(registry, backend: str, family: str, *, seed: int = 2) -> None:
    """An AEAD must raise AuthenticationError, and nothing else, for every kind of bad input."""
    rng = random.Random(f"{seed}:{backend}:{family}")
    ours = registry.get(backend).backend
    tags, nonces = _esp_sizes(registry, family)
    problems: list[str] = []
    for bits in _key_sizes(registry, backend, family):
        for tag in tags:
            nonce_len = nonces[0]
            aead = ours.aead(family, rng.randbytes(bits // 8), tag_bytes=tag, nonce_bytes=nonce_len)
            nonce, aad, pt = rng.randbytes(nonce_len), rng.randbytes(8), rng.randbytes(37)
            sealed = aead.encrypt(nonce, pt, aad)
            if len(sealed) != len(pt) + tag:
                problems.append(f"encrypt gave {len(sealed)} bytes for {len(pt)} + a {tag}-byte tag")
                continue
            bad = {
                "forged tag": (sealed[:-1] + bytes([sealed[-1] ^ 0x01]), aad),
                "flipped ciphertext": (bytes([sealed[0] ^ 0x80]) + sealed[1:], aad),
                "flipped aad": (sealed, bytes([aad[0] ^ 0x01]) + aad[1:]),
                "truncated by one byte": (sealed[:-1], aad),
                "shorter than the tag": (sealed[:tag - 1], aad),
                "empty": (b"", aad),
            }
            for what, (data, a) in bad.items():
                try:
                    aead.decrypt(nonce, data, a)
                except AuthenticationError:
                    continue
                except Exception as exc:
                    problems.append(f"{bits}-bit key, tag {tag}: {what} raised "
                                    f"{exc.__class__.__name__} instead of AuthenticationError")
                    continue
                problems.append(f"{bits}-bit key, tag {tag}: {what} was accepted")
    _fail(f"{backend} on bad {family} input", problems)


def _packets(rng: random.Random) -> list[bytes]:
    """IPv4 and IPv6 UDP packets of sizes around block and pad boundaries."""
    from ipsec_core.wire.ip import IPPROTO_UDP, build_ipv4, build_ipv6

    out = []
    src4, dst4 = bytes((198, 51, 100, 1)), bytes((203, 0, 113, 1))
    src6, dst6 = bytes.fromhex("20010db8000a" + "00" * 9 + "01"), bytes.fromhex("20010db8000b" + "00" * 9 + "01")
    for i, size in enumerate((28, 29, 30, 31, 44, 45, 60, 61, 100, 255, 256, 576, 1000, 1400)):
        body = rng.randbytes(size - 28)
        udp = (40000 + i).to_bytes(2, "big") + b"\x00\x35" + (size - 20).to_bytes(2, "big") + b"\0\0"
        out.append(build_ipv4(src=src4, dst=dst4, proto=IPPROTO_UDP, payload_len=size - 20,
                              ident=i, tos=rng.choice((0, 0x10, 0xb8))) + udp + body)
    for i, size in enumerate((48, 49, 120, 1280)):
        body = rng.randbytes(size - 48)
        udp = (41000 + i).to_bytes(2, "big") + b"\x00\x35" + (size - 40).to_bytes(2, "big") + b"\0\0"
        out.append(build_ipv6(src=src6, dst=dst6, next_header=IPPROTO_UDP, payload_len=size - 40)
                   + udp + body)
    return out


def _sa_pair(registry, proposal: str, *, mode: str = "tunnel", outer=_V4, seed: int = 3):
    from ipsec_core.transforms.keywords import parse_esp
    from ipsec_core.dataplane.sa import Direction, Mode, SaConfig

    prop = parse_esp(proposal, catalog=registry.transforms)
    rng = random.Random(f"{seed}:{proposal}:{mode}")
    key = rng.randbytes(prop.enc_key_bytes) if prop.key_bits else b""
    integ = rng.randbytes(prop.integ_info.key_bytes) if prop.integ_info else b""
    common = dict(spi=0x1CEC0DE5, mode=Mode(mode), proposal=prop, enc_key=key, integ_key=integ,
                  replay_window=64)
    if mode == "tunnel":
        out = SaConfig(name="kit-out", direction=Direction.OUT, local=outer[0], remote=outer[1], **common)
        inb = SaConfig(name="kit-in", direction=Direction.IN, local=outer[1], remote=outer[0], **common)
    else:
        out = SaConfig(name="kit-out", direction=Direction.OUT, **common)
        inb = SaConfig(name="kit-in", direction=Direction.IN, **common)
    return out, inb


def _install(registry, backend: str, config):
    from ipsec_core.dataplane.sa import SecurityAssociation

    with registry.preferring(backend):
        sa = SecurityAssociation(config, registry=registry, now=_NOW)
    if backend not in sa.engine.backend_names.split(","):
        raise ConformanceError(f"{config.proposal.keyword}: the SA bound {sa.engine.backend_names}, "
                               f"not {backend}")
    return sa


def _forge(packet: bytes, at: int) -> bytes:
    at = at % len(packet)
    return packet[:at] + bytes([packet[at] ^ 0x01]) + packet[at + 1:]


def check_esp(registry, backend: str, proposal: str, *, seed: int = 4) -> None:
    """Round trips through a real SA pair, and forged / truncated / replayed packets dropped."""
    rng = random.Random(f"{seed}:{backend}:{proposal}")
    packets = _packets(rng)
    problems: list[str] = []
    for mode, outer in (("tunnel", _V4), ("tunnel", _V6), ("transport", None)):
        out_cfg, in_cfg = _sa_pair(registry, proposal, mode=mode, outer=outer or _V4)
        out, inb = _install(registry, backend, out_cfg), _install(registry, backend, in_cfg)
        where = f"{mode}" + (f" over IPv{outer[0].version}" if outer else "")
        wire = [out.protect(p, now=_NOW) for p in packets]
        for p, w in zip(packets, wire):
            try:
                got = inb.unprotect(w, now=_NOW)
            except PacketDropped as drop:
                problems.append(f"{where}: a {len(p)}-byte packet was dropped ({drop})")
                continue
            if got != p:
                problems.append(f"{where}: a {len(p)}-byte packet came back different")
        # Bad packets: each is dropped, and the SA is as before (a fresh genuine one passes).
        extra = [out.protect(p, now=_NOW) for p in packets[:3]]
        before = inb.replay.snapshot()
        ip_len = (extra[1][0] & 15) * 4 if extra[1][0] >> 4 == 4 else 40
        bad = {
            "forged ICV": (_forge(extra[0], -1), ("auth_failed",)),
            "flipped ciphertext": (_forge(extra[0], len(extra[0]) - 20), ("auth_failed",)),
            "truncated by one byte": (extra[1][:-1], ("auth_failed", "truncated", "malformed")),
            "truncated after the ESP header": (extra[1][:ip_len + 12],
                                               ("auth_failed", "truncated", "malformed")),
            "replayed": (wire[0], ("replay",)),
        }
        for what, (packet, reasons) in bad.items():
            try:
                inb.unprotect(packet, now=_NOW)
            except PacketDropped as drop:
                if drop.reason.value not in reasons:
                    problems.append(f"{where}: {what} dropped as {drop.reason.value}, expected "
                                    f"{' or '.join(reasons)}")
                continue
            problems.append(f"{where}: {what} packet was accepted")
        if inb.replay.snapshot() != before:
            problems.append(f"{where}: a dropped packet changed the replay window")
        for p, w in zip(packets[:3], extra):
            try:
                if inb.unprotect(w, now=_NOW) != p:
                    problems.append(f"{where}: a genuine packet after the bad ones came back different")
            except PacketDropped as drop:
                problems.append(f"{where}: a genuine packet after the bad ones was dropped ({drop})")
    _fail(f"{backend} in ESP {proposal}", problems)


def check_batch(registry, backend: str, proposal: str, *, seed: int = 5) -> None:
    """protect_batch / unprotect_batch against one-by-one processing on twin SAs."""
    rng = random.Random(f"{seed}:{backend}:{proposal}")
    packets = _packets(rng) * 3
    out_cfg, in_cfg = _sa_pair(registry, proposal)
    one_out, many_out = _install(registry, backend, out_cfg), _install(registry, backend, out_cfg)
    many_out.engine.ident = one_out.engine.ident
    problems: list[str] = []
    single = [one_out.protect(p, now=_NOW) for p in packets]
    batch = many_out.protect_batch(packets[:20], now=_NOW) + many_out.protect_batch(packets[20:], now=_NOW)
    info = out_cfg.proposal.encr_info
    deterministic = not (info.kind is CipherKind.CIPHER and not info.counter)  # CBC: random IVs
    if deterministic and batch != single:
        problems.append("protect_batch gave other bytes than protect")
    if one_out.state() != many_out.state():
        problems.append(f"protect_batch left the SA as {many_out.state()}, protect as {one_out.state()}")
    for source, wire in (("protect", single), ("protect_batch", batch)):
        stream = wire[:10] + [wire[3], _forge(wire[11], -2), wire[12][:-1]] + wire[10:]
        one_in, many_in = _install(registry, backend, in_cfg), _install(registry, backend, in_cfg)
        verdicts_one = []
        for w in stream:
            try:
                verdicts_one.append(one_in.unprotect(w, now=_NOW))
            except PacketDropped as drop:
                verdicts_one.append(drop.reason.value)
        verdicts_many = [v.reason.value if isinstance(v, PacketDropped) else v
                         for v in (many_in.unprotect_batch(stream[:15], now=_NOW)
                                   + many_in.unprotect_batch(stream[15:], now=_NOW))]
        if verdicts_many != verdicts_one:
            diff = next(i for i, (a, b) in enumerate(zip(verdicts_one, verdicts_many)) if a != b)
            problems.append(f"unprotect_batch of {source}'s packets differs from unprotect at "
                            f"packet {diff}")
        if one_in.state() != many_in.state():
            problems.append(f"unprotect_batch of {source}'s packets left another SA state")
        accepted = [v for v in verdicts_one if isinstance(v, bytes)]
        if accepted[:10] != packets[:10]:
            problems.append(f"the packets of {source} do not decrypt to the originals")
    _fail(f"{backend} batch vs single in {proposal}", problems)


# -- which checks -----------------------------------------------------------------------------
def esp_proposals(registry, backend: str) -> list[str]:
    """One ESP proposal per transform and key size that the backend's offered features make
    possible (ciphers with -sha256, MACs as null-MAC)."""
    from ipsec_core.transforms.keywords import _INTEG_NAME, esp_keywords_for

    record = registry.get(backend)
    out: list[str] = []
    for feature in record.features:
        kind = feature.kind
        if kind is FeatureKind.MAC:
            for integ in INTEG_INFO.values():
                if integ.family == feature.family:
                    out.append(f"null-{_INTEG_NAME[integ.id]}")
            continue
        for keyword in esp_keywords_for(feature.family, feature.key_bits, catalog=registry.transforms):
            from ipsec_core.transforms.keywords import parse_esp

            prop = parse_esp(keyword + "-" + DEFAULT_INTEG if _needs_integ(registry, keyword) else keyword,
                             catalog=registry.transforms)
            out.append(prop.keyword)
    return list(dict.fromkeys(out))


def _needs_integ(registry, keyword: str) -> bool:
    from ipsec_core.errors import ProposalError
    from ipsec_core.transforms.keywords import parse_esp

    try:
        parse_esp(keyword, catalog=registry.transforms)
    except ProposalError as exc:
        return "needs an integrity" in str(exc)
    return False


def conformance_checks(backend: str, *, plugins: Iterable = (), registry=None,
                       proposals: Sequence[str] | None = None) -> list[Check]:
    """Every check for `backend`, in a registry of the built-ins plus `plugins` (or the given
    registry)."""
    registry = registry if registry is not None else plugin_registry(*plugins)
    out = [Check(f"{backend}:registered", lambda: check_registered(registry, backend))]
    record = registry.records.get(backend)
    if record is None or not record.available:
        return out
    families = list(dict.fromkeys(f.family for f in record.declared))
    reference = registry.records.get(REFERENCE)
    for family in families:
        out.append(Check(f"{backend}:vectors[{family}]",
                         lambda f=family: check_vectors(registry, backend, f)))
        if (backend != REFERENCE and reference is not None and reference.available
                and any(f.family == family for f in reference.features)):
            out.append(Check(f"{backend}:differential[{family}]",
                             lambda f=family: check_differential(registry, backend, f)))
        if family_kind(family) is FeatureKind.AEAD:
            out.append(Check(f"{backend}:bad-input[{family}]",
                             lambda f=family: check_bad_input(registry, backend, f)))
    for proposal in proposals if proposals is not None else esp_proposals(registry, backend):
        out.append(Check(f"{backend}:esp[{proposal}]",
                         lambda p=proposal: check_esp(registry, backend, p)))
        out.append(Check(f"{backend}:batch[{proposal}]",
                         lambda p=proposal: check_batch(registry, backend, p)))
    return out


def check_backend(backend: str, **kwargs) -> None:
    """Run every check; raise one ConformanceError listing all that failed."""
    failures = []
    for check in conformance_checks(backend, **kwargs):
        try:
            check()
        except ConformanceError as exc:
            failures.append(f"{check.id}: {exc}")
    if failures:
        raise ConformanceError("\n".join(failures))


def conformance_params(backend: str, **kwargs) -> list:
    """The checks as `pytest.param`s with readable ids, for `@pytest.mark.parametrize`."""
    import pytest

    return [pytest.param(check, id=check.id) for check in conformance_checks(backend, **kwargs)]


# -- pytest plugin: pytest_plugins = ["ipsec_core.testing"] -----------------------------------
_CACHE: dict[tuple, list[Check]] = {}


def pytest_configure(config) -> None:
    config.addinivalue_line(
        "markers", "ipsec_backend(name, plugins=(), proposals=None): run the ipsec-suite "
                   "conformance checks of backend `name` (loading `plugins`) as the parameters "
                   "of the test's `ipsec_check` argument")


def pytest_generate_tests(metafunc) -> None:
    if "ipsec_check" not in metafunc.fixturenames:
        return
    marker = metafunc.definition.get_closest_marker("ipsec_backend")
    if marker is None or not marker.args:
        raise ValueError(f"{metafunc.definition.nodeid}: a test taking `ipsec_check` needs "
                         "@pytest.mark.ipsec_backend('backend-name', plugins=[...])")
    backend = marker.args[0]
    plugins = tuple(marker.kwargs.get("plugins", ()))
    proposals = marker.kwargs.get("proposals")
    key = (backend, plugins, tuple(proposals) if proposals is not None else None)
    if key not in _CACHE:
        _CACHE[key] = conformance_checks(backend, plugins=plugins, proposals=proposals)
    checks = _CACHE[key]
    metafunc.parametrize("ipsec_check", checks, ids=[c.id for c in checks])


__all__ = ["Check", "ConformanceError", "check_backend", "check_bad_input", "check_batch",
           "check_differential", "check_esp", "check_registered", "check_vectors",
           "conformance_checks", "conformance_params", "esp_proposals", "plugin_registry"]
