"""IKE responder cost: handshakes per second (IKE_SA_INIT + IKE_AUTH with one CHILD SA) and
memory per established IKE SA, per key exchange group and authentication method.

Both peers run in memory (sans-I/O `IkeEndpoint`s, no sockets); only the responder's work is
timed: the wall time of its `receive_datagram` calls.  Memory per IKE SA: tracemalloc's growth
while a responder holds N established IKE SAs (each with one CHILD SA), divided by N.

    python3 perf/ike_bench.py                  # writes perf/results/ike.json, prints a table
    python3 perf/ike_bench.py --handshakes 50 --groups ecp256 x25519

An authentication method is a function in METHODS that returns (initiator config, responder
config) for a proposal; certificates (ECDSA, RSA) are added there when they exist.
"""
from __future__ import annotations

import argparse
import gc
import ipaddress
import json
import platform
import statistics
import sys
import time
import tracemalloc
from pathlib import Path

from ipsec_core.crypto.registry import get_registry
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


METHODS = {"psk": psk_configs}


class _Timed:
    def __init__(self, endpoint):
        self.endpoint, self.seconds = endpoint, 0.0

    def receive(self, d):
        start = time.perf_counter()
        self.endpoint.receive_datagram(d.data, remote=d.local, local=d.remote, nat_t=d.nat_t, now=0.0)
        self.seconds += time.perf_counter() - start


def handshakes(method: str, group: str, count: int, *, registry) -> tuple[float, int]:
    """(responder seconds for `count` handshakes, established count)."""
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
    return timed.seconds, done


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
            rates = []
            for _ in range(args.runs):
                seconds, done = handshakes(method, group, args.handshakes, registry=registry)
                assert done == args.handshakes, f"{done} of {args.handshakes} established"
                rates.append(done / seconds)
            mem = memory_per_sa(method, group, args.memory_sas, registry=registry)
            rows.append({"method": method, "group": group, "proposal": GROUPS[group],
                         "handshakes_per_s": round(statistics.median(rates), 1),
                         "runs": [round(r, 1) for r in rates], "bytes_per_ike_sa": round(mem)})
            print(f"{method:6} {group:9} {rows[-1]['handshakes_per_s']:8.1f} handshakes/s "
                  f"{rows[-1]['bytes_per_ike_sa']:8d} B/IKE SA", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": platform.platform(), "python": sys.version.split()[0],
                                    "handshakes": args.handshakes, "runs": args.runs,
                                    "memory_sas": args.memory_sas, "rows": rows}, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
