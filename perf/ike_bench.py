"""IKE responder cost: handshakes per second (IKE_SA_INIT + IKE_AUTH with one CHILD SA) and
memory per established IKE SA, per key exchange group and authentication method.

Both peers run in memory (sans-I/O `IkeEndpoint`s, no sockets); only the responder's work is
timed: the wall time and the thread CPU time of its `receive_datagram` calls.  Memory per IKE
SA: tracemalloc's growth while a responder holds N established IKE SAs (each with one CHILD SA),
divided by N.

    python3 perf/ike_bench.py                  # writes perf/results/ike.json, prints a table
    python3 perf/ike_bench.py --handshakes 50 --groups ecp256 x25519
    python3 perf/ike_bench.py --methods ecdsa-p256 rsa2048 --groups ecp256

An authentication method is a function in METHODS that returns (initiator config, responder
config) for a proposal: a pre-shared key, or certificates (RFC 7427 signatures) with an ECDSA
P-256 or an RSA-2048 key on each side, issued by one CA both trust (made here with
`cryptography` once per run; their validity periods are not judged: no wall clock in memory).
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import gc
import ipaddress
import json
import platform
import statistics
import sys
import time
import tracemalloc
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from ipsec_core.crypto.registry import get_registry
from ipsec_core.testing import issue_certificate
from ipsec_core.ike.config import ChildConfig, IkeConfig, TrafficSelectorSpec
from ipsec_core.ike.endpoint import IkeEndpoint
from ipsec_core.ike.events import IkeSaEstablished

GROUPS = {"ecp256": "aes128gcm16-prfsha256-ecp256", "x25519": "aes128gcm16-prfsha256-x25519",
          "modp2048": "aes128gcm16-prfsha256-modp2048", "modp3072": "aes128gcm16-prfsha256-modp3072"}
RESULTS = Path(__file__).parent / "results" / "ike.json"


def _ts(net: str):
    return (TrafficSelectorSpec(ipaddress.ip_network(net)),)


def psk_configs(proposal: str) -> tuple[IkeConfig, IkeConfig]:
    def side(name, local, remote, lnet, rnet, start):
        child = ChildConfig("net", _ts(lnet), _ts(rnet), esp_proposals=("aes128gcm16",), start_action=start)
        return IkeConfig(name, (local,), (remote,), local_id=f"{name}.example.org",
                         psk=b"a benchmark secret, long enough", proposals=(proposal,), encap=True,
                         children=(child,), fragmentation="no")
    return (side("i", "192.0.2.1", "192.0.2.2", "198.51.100.0/24", "203.0.113.0/24", "start"),
            side("r", "192.0.2.2", "%any", "203.0.113.0/24", "198.51.100.0/24", "none"))


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _issue(cn: str, key, issuer_cn: str, issuer_key, *, ca: bool) -> bytes:
    cert = issue_certificate(_name(cn), key, _name(issuer_cn), issuer_key, ca=ca,
                             san=() if ca else [x509.DNSName(cn)])
    return cert.public_bytes(serialization.Encoding.DER)


@functools.lru_cache(maxsize=None)
def _pki(kind: str) -> tuple[bytes, dict[str, tuple[bytes, bytes]]]:
    """A CA (DER) and, for "i" and "r", (certificate DER, PKCS#8 key DER) of `kind` keys."""
    def new_key():
        if kind == "rsa2048":
            return rsa.generate_private_key(public_exponent=65537, key_size=2048)
        return ec.generate_private_key(ec.SECP256R1())
    ca_key = new_key()
    ca = _issue("Bench CA", ca_key, "Bench CA", ca_key, ca=True)
    peers = {}
    for name in ("i", "r"):
        key = new_key()
        peers[name] = (_issue(f"{name}.example.org", key, "Bench CA", ca_key, ca=False),
                       key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                         serialization.NoEncryption()))
    return ca, peers


def cert_configs(kind: str):
    def configs(proposal: str) -> tuple[IkeConfig, IkeConfig]:
        ca, peers = _pki(kind)
        init_cfg, resp_cfg = psk_configs(proposal)
        return tuple(dataclasses.replace(c, auth="pubkey", psk=b"", certs=(peers[n][0],),
                                         private_key=peers[n][1], cacerts=(ca,),
                                         remote_id=f"{'r' if n == 'i' else 'i'}.example.org")
                     for c, n in ((init_cfg, "i"), (resp_cfg, "r")))
    return configs


METHODS = {"psk": psk_configs, "ecdsa-p256": cert_configs("ecdsa-p256"),
           "rsa2048": cert_configs("rsa2048")}


class _Timed:
    """Wall time and this thread's CPU time of the responder's calls: on a shared machine the
    CPU figure is the steadier one (the wall time includes waiting for a core)."""

    def __init__(self, endpoint):
        self.endpoint, self.seconds, self.cpu_seconds = endpoint, 0.0, 0.0

    def receive(self, d):
        start, cpu = time.perf_counter(), time.thread_time()
        self.endpoint.receive_datagram(d.data, remote=d.local, local=d.remote, nat_t=d.nat_t, now=0.0)
        self.cpu_seconds += time.thread_time() - cpu
        self.seconds += time.perf_counter() - start


def handshakes(method: str, group: str, count: int, *, registry) -> tuple[float, float, int]:
    """(responder wall seconds, responder CPU seconds for `count` handshakes, established count)."""
    init_cfg, resp_cfg = METHODS[method](GROUPS[group])
    responder = IkeEndpoint([resp_cfg], registry=registry, now=0.0, cookie_threshold=10 ** 9,
                            cookie_threshold_ip=0, block_threshold=0)
    initiator = IkeEndpoint([init_cfg], registry=registry, now=0.0)
    timed = _Timed(responder)
    for _ in range(count):
        initiator.initiate("i", now=0.0)
        moved = True
        while moved:
            moved = False
            for d in initiator.datagrams_to_send(now=0.0):
                moved = True
                timed.receive(d)
            for d in responder.datagrams_to_send(now=0.0):
                moved = True
                initiator.receive_datagram(d.data, remote=d.local, local=d.remote, nat_t=d.nat_t, now=0.0)
    done = 0
    while (e := responder.next_event()) is not None:
        done += isinstance(e, IkeSaEstablished)
    return timed.seconds, timed.cpu_seconds, done


def memory_per_sa(method: str, group: str, count: int, *, registry) -> float:
    init_cfg, resp_cfg = METHODS[method](GROUPS[group])
    initiator = IkeEndpoint([init_cfg], registry=registry, now=0.0)
    gc.collect()
    tracemalloc.start()
    try:
        responder = IkeEndpoint([resp_cfg], registry=registry, now=0.0, cookie_threshold=10 ** 9,
                                cookie_threshold_ip=0, block_threshold=0)
        gc.collect()
        base = tracemalloc.get_traced_memory()[0]
        for _ in range(count):
            initiator.initiate("i", now=0.0)
            moved = True
            while moved:
                moved = False
                for d in initiator.datagrams_to_send(now=0.0):
                    moved = True
                    responder.receive_datagram(d.data, remote=d.local, local=d.remote, nat_t=d.nat_t, now=0.0)
                for d in responder.datagrams_to_send(now=0.0):
                    moved = True
                    initiator.receive_datagram(d.data, remote=d.local, local=d.remote, nat_t=d.nat_t, now=0.0)
            while responder.next_event() is not None:
                pass
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    assert len(responder.sessions()) == count
    return grown / count


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--handshakes", type=int, default=100)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--memory-sas", type=int, default=200)
    ap.add_argument("--groups", nargs="+", default=list(GROUPS), choices=list(GROUPS))
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    registry = get_registry()
    rows = []
    for method in args.methods:
        for group in args.groups:
            rates, cpu_rates = [], []
            for _ in range(args.runs):
                seconds, cpu, done = handshakes(method, group, args.handshakes, registry=registry)
                assert done == args.handshakes, f"{done} of {args.handshakes} established"
                rates.append(done / seconds)
                cpu_rates.append(done / cpu)
            mem = memory_per_sa(method, group, args.memory_sas, registry=registry)
            rows.append({"method": method, "group": group, "proposal": GROUPS[group],
                         "handshakes_per_s": round(statistics.median(rates), 1),
                         "runs": [round(r, 1) for r in rates],
                         "handshakes_per_cpu_s": round(statistics.median(cpu_rates), 1),
                         "cpu_runs": [round(r, 1) for r in cpu_rates], "bytes_per_ike_sa": round(mem)})
            print(f"{method:10} {group:9} {rows[-1]['handshakes_per_s']:8.1f} handshakes/s "
                  f"{rows[-1]['handshakes_per_cpu_s']:8.1f} per CPU-s "
                  f"{rows[-1]['bytes_per_ike_sa']:8d} B/IKE SA", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": platform.platform(), "python": sys.version.split()[0],
                                    "handshakes": args.handshakes, "runs": args.runs,
                                    "memory_sas": args.memory_sas, "rows": rows}, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
