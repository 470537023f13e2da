"""`ipsec demo`: the whole stack in one process, no root, no configuration file.

Owns: the demo's embedded connection pair (PSK, one CHILD SA 198.51.100.0/24 === 203.0.113.0/24,
forced UDP encapsulation), its script (IKE_SA_INIT + IKE_AUTH, packets through ESP both ways,
a CHILD SA rekey, packets through the new SA, a delete) and the report in words or JSON.
Must not: touch the host's network: the peers talk over loopback UDP on free ports (127.0.0.1
and 127.0.0.2, so both can bind the same port pair, as IKE's NAT-T port is one number for both
ends), and their inner interfaces are lists in memory (`MemoryInterface`), not TUN devices.
"""
from __future__ import annotations

import asyncio
import logging
import secrets
import struct
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from ipsec_core.cli._common import handle_errors, print_json

INITIATOR_HOST, RESPONDER_HOST = "127.0.0.1", "127.0.0.2"
INITIATOR_INNER, RESPONDER_INNER = "198.51.100.1", "203.0.113.1"
INITIATOR_NET, RESPONDER_NET = "198.51.100.0/24", "203.0.113.0/24"
INITIATOR_ID, RESPONDER_ID = "a.example.org", "b.example.org"
DEFAULT_IKE_PROPOSAL = "aes128gcm16-prfsha256-ecp256"
DEFAULT_ESP_PROPOSAL = "aes128gcm16"
CONNECTION, CHILD = "demo", "net"
#: Packets sent each way, before and again after the rekey.
PACKETS_EACH_WAY = 8
STEP_TIMEOUT_S = 10.0


class DemoFailed(Exception):
    """A step of the demo did not happen in time; the message says which."""


def udp_packet(src: str, dst: str, sport: int, dport: int, payload: bytes) -> bytes:
    """An IPv4/UDP packet (UDP checksum 0: allowed over IPv4)."""
    from ipaddress import ip_address

    from ipsec_core.wire.ip import build_ipv4

    udp = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    return build_ipv4(src=ip_address(src).packed, dst=ip_address(dst).packed, proto=17,
                      payload_len=len(udp)) + udp


def free_udp_ports(hosts: list[str]) -> tuple[int, int]:
    """An IKE port and a NAT-T port free on every address of `hosts` (just now)."""
    from ipsec_core.vpn.udp import UdpEndpoint

    class _Ignore:
        def ike_received(self, *a, **k):
            pass

        def esp_received(self, *a, **k):
            pass

    with UdpEndpoint(_Ignore(), local_addresses=hosts, ike_port=0, nat_t_port=0) as probe:
        return probe.ike_port, probe.nat_t_port


def demo_configs(*, ike_port: int, nat_t_port: int, proposal: str, esp_proposal: str,
                 psk: bytes):
    """The initiator's and the responder's connection."""
    import ipaddress

    from ipsec_core.ike.config import ChildConfig, IkeConfig, TrafficSelectorSpec

    def ts(net: str) -> tuple[TrafficSelectorSpec, ...]:
        return (TrafficSelectorSpec(ipaddress.ip_network(net)),)

    def side(name_local, name_remote, host, peer, lid, rid, lnet, rnet, start):
        child = ChildConfig(CHILD, local_ts=ts(lnet), remote_ts=ts(rnet), esp_proposals=(esp_proposal,),
                            start_action=start)
        return IkeConfig(CONNECTION, local_addrs=(host,), remote_addrs=(peer,), local_id=lid,
                         remote_id=rid, psk=psk, proposals=(proposal,), encap=True,
                         children=(child,), local_port=ike_port, remote_port=ike_port,
                         nat_t_port=nat_t_port)

    a = side("a", "b", INITIATOR_HOST, RESPONDER_HOST, INITIATOR_ID, RESPONDER_ID,
             INITIATOR_NET, RESPONDER_NET, "start")
    b = side("b", "a", RESPONDER_HOST, INITIATOR_HOST, RESPONDER_ID, INITIATOR_ID,
             RESPONDER_NET, INITIATOR_NET, "none")
    return a, b


async def _event(driver, predicate, what: str, *, timeout: float = STEP_TIMEOUT_S):
    """The first event of `driver` (already seen, or coming) that `predicate` accepts."""
    from ipsec_core.ike import events as ev

    for event in driver.events:
        if predicate(event):
            return event
    failures = (ev.IkeSaFailed, ev.ChildSaFailed)

    def wanted(event):
        return predicate(event) or isinstance(event, failures)

    try:
        event = await driver.wait_for(wanted, timeout=timeout)
    except asyncio.TimeoutError:
        raise DemoFailed(f"{what}: nothing after {timeout:g} s") from None
    if isinstance(event, failures) and not predicate(event):
        raise DemoFailed(f"{what}: {event.reason}")
    return event


async def _exchange(a_inner, b_inner, *, tag: str, count: int) -> tuple[int, int]:
    """Send `count` packets each way; return how many arrived intact each way."""
    forward = [udp_packet(INITIATOR_INNER, RESPONDER_INNER, 40000 + i, 7, f"{tag} ping {i}".encode())
               for i in range(count)]
    start_b = len(b_inner.received)
    a_inner.inject(forward)
    try:
        await b_inner.wait_received(start_b + count, timeout=STEP_TIMEOUT_S)
    except asyncio.TimeoutError:
        raise DemoFailed(f"{tag}: {len(b_inner.received) - start_b} of {count} packets reached "
                         "the responder") from None
    back = [udp_packet(RESPONDER_INNER, INITIATOR_INNER, 7, 40000 + i, f"{tag} pong {i}".encode())
            for i in range(count)]
    start_a = len(a_inner.received)
    b_inner.inject(back)
    try:
        await a_inner.wait_received(start_a + count, timeout=STEP_TIMEOUT_S)
    except asyncio.TimeoutError:
        raise DemoFailed(f"{tag}: {len(a_inner.received) - start_a} of {count} packets reached "
                         "the initiator") from None
    got_fwd = sum(p in forward for p in b_inner.received[start_b:])
    got_back = sum(p in back for p in a_inner.received[start_a:])
    return got_fwd, got_back


def _child_info(driver, spi_in: int) -> dict:
    child = next(c for c in driver.children if c.inbound.spi == spi_in)
    return {"spi_in": f"{child.inbound.spi:08x}", "spi_out": f"{child.outbound.spi:08x}",
            "backend": child.inbound.engine.backend_names}


async def run_demo(*, proposal: str = DEFAULT_IKE_PROPOSAL, esp_proposal: str = DEFAULT_ESP_PROPOSAL,
                   save_keys: Path | None = None, packets: int = PACKETS_EACH_WAY,
                   endpoint_factory=None, registry=None) -> dict:
    """Run the demo; return what happened (the `--json` object).  Raises DemoFailed."""
    from ipsec_core.ike import events as ev
    from ipsec_core.vpn.driver import Driver, MemoryInterface

    ike_port, nat_t_port = free_udp_ports([INITIATOR_HOST, RESPONDER_HOST])
    cfg_a, cfg_b = demo_configs(ike_port=ike_port, nat_t_port=nat_t_port, proposal=proposal,
                                esp_proposal=esp_proposal, psk=secrets.token_bytes(32))
    a_inner = MemoryInterface("demo-a", addresses=[INITIATOR_INNER])
    b_inner = MemoryInterface("demo-b", addresses=[RESPONDER_INNER])
    common = dict(endpoint_factory=endpoint_factory, registry=registry)
    a = Driver([cfg_a], inner=a_inner, save_keys=save_keys, **common)
    b = Driver([cfg_b], inner=b_inner, initiate=[], **common)
    result: dict = {"initiator": f"{INITIATOR_HOST}[{ike_port}]",
                    "responder": f"{RESPONDER_HOST}[{ike_port}]", "nat_t_port": nat_t_port}
    await b.start()
    try:
        await a.start()
        ike = await _event(a, lambda e: isinstance(e, ev.IkeSaEstablished), "IKE SA")
        await _event(b, lambda e: isinstance(e, ev.IkeSaEstablished), "IKE SA (responder)")
        first = await _event(a, lambda e: isinstance(e, ev.ChildSaInstalled), "CHILD SA")
        first_b = await _event(b, lambda e: isinstance(e, ev.ChildSaInstalled), "CHILD SA (responder)")
        result["proposal"] = {"ike": ike.proposal, "esp": first.proposal}
        result["ike_sa"] = {"spi_i": f"{ike.spi_i:016x}", "spi_r": f"{ike.spi_r:016x}",
                            "backend": ike.backend}
        result["traffic_selectors"] = {"initiator": list(first.local_ts),
                                       "responder": list(first.remote_ts)}
        before = {"initiator": _child_info(a, first.inbound.spi),
                  "responder": _child_info(b, first_b.inbound.spi)}
        fwd1, back1 = await _exchange(a_inner, b_inner, tag="before rekey", count=packets)

        a.rekey_child(CONNECTION, CHILD)
        rekeyed = await _event(a, lambda e: isinstance(e, ev.ChildSaInstalled) and e.rekeyed is not None,
                               "CHILD SA rekey")
        rekeyed_b = await _event(b, lambda e: isinstance(e, ev.ChildSaInstalled) and e.rekeyed is not None,
                                 "CHILD SA rekey (responder)")
        after = {"initiator": _child_info(a, rekeyed.inbound.spi),
                 "responder": _child_info(b, rekeyed_b.inbound.spi)}
        old_gone = await _event(a, lambda e: isinstance(e, ev.ChildSaDeleted)
                                and e.inbound_spi == first.inbound.spi, "old CHILD SA delete")
        fwd2, back2 = await _exchange(a_inner, b_inner, tag="after rekey", count=packets)
        new_child = next(c for c in a.children if c.inbound.spi == rekeyed.inbound.spi)
        result["child_sas"] = [before, after]
        result["spis"] = {"before_rekey": before["initiator"], "after_rekey": after["initiator"]}
        result["backends"] = {"ike": ike.backend, "esp": {"initiator": after["initiator"]["backend"],
                                                          "responder": after["responder"]["backend"]}}
        result["packets"] = {"initiator_to_responder": fwd1 + fwd2,
                             "responder_to_initiator": back1 + back2,
                             "sent_each_way": 2 * packets,
                             "through_new_sa": {"in": new_child.inbound.stats.packets,
                                                "out": new_child.outbound.stats.packets}}
        result["rekeyed"] = old_gone.reason

        a.terminate(CONNECTION)
        gone = await _event(a, lambda e: isinstance(e, ev.IkeSaDeleted), "IKE SA delete")
        gone_b = await _event(b, lambda e: isinstance(e, ev.IkeSaDeleted), "IKE SA delete (responder)")
        result["deleted"] = {"initiator": gone.reason, "responder": gone_b.reason}
        result["drops"] = {"initiator": dict(a.stats.drops), "responder": dict(b.stats.drops)}
    finally:
        a.stop()
        b.stop()
        await asyncio.gather(a.wait_stopped(), b.wait_stopped())
    result["rekeyed"] = bool(result.get("rekeyed"))
    result["deleted"] = bool(result.get("deleted")) and not a.endpoint.active() and not b.endpoint.active()
    if save_keys is not None:
        result["keys"] = {"folder": str(save_keys), "tshark_args": a.keys.tshark_args()}
    return result


def report(result: dict) -> str:
    """The demo's result in words."""
    before, after = result["child_sas"]
    pk = result["packets"]
    ts = result["traffic_selectors"]
    lines = [
        f"Two IKEv2 peers in this process, over loopback UDP: initiator {result['initiator']}, "
        f"responder {result['responder']} (NAT-T port {result['nat_t_port']}), PSK authentication.",
        f"IKE SA established: {result['proposal']['ike']}, SPIs {result['ike_sa']['spi_i']}_i "
        f"{result['ike_sa']['spi_r']}_r, IKE crypto by {result['ike_sa']['backend']}.",
        f"CHILD SA installed: {result['proposal']['esp']}, ESP in UDP, "
        f"{', '.join(ts['initiator'])} === {', '.join(ts['responder'])}; initiator SPIs "
        f"{before['initiator']['spi_in']} in / {before['initiator']['spi_out']} out "
        f"(backend {before['initiator']['backend']}), responder SPIs {before['responder']['spi_in']} in / "
        f"{before['responder']['spi_out']} out (backend {before['responder']['backend']}).",
        f"CHILD SA rekeyed (CREATE_CHILD_SA): new initiator SPIs {after['initiator']['spi_in']} in / "
        f"{after['initiator']['spi_out']} out; the old SA was deleted.",
        f"Packets through ESP, each decrypted, replay-checked and checked against the SA's "
        f"selectors: {pk['initiator_to_responder']} of {pk['sent_each_way']} initiator -> responder, "
        f"{pk['responder_to_initiator']} of {pk['sent_each_way']} responder -> initiator "
        f"(half before the rekey, half after).",
        "IKE SA deleted (INFORMATIONAL delete from the initiator, confirmed by the responder).",
    ]
    if "keys" in result:
        lines.append(f"Keys for Wireshark in {result['keys']['folder']} (ikev2_decryption_table, "
                     f"esp_sa): WIRESHARK_CONFIG_DIR={result['keys']['folder']} tshark -r CAPTURE")
    return "\n".join(lines)


@handle_errors
def demo(
    json_out: Annotated[bool, typer.Option("--json", help="One JSON object on stdout, for scripts.")] = False,
    save_keys: Annotated[Optional[Path], typer.Option(
        "--save-keys", metavar="DIR", file_okay=False,
        help="Write Wireshark's ikev2_decryption_table and esp_sa (and the preferences and "
             "decode-as entries for the demo's ports) into DIR, so tshark decrypts a capture of "
             "the loopback traffic.")] = None,
    proposal: Annotated[str, typer.Option("--proposal", metavar="IKE",
                                          help="IKE proposal (strongSwan keywords).")] = DEFAULT_IKE_PROPOSAL,
    esp_proposal: Annotated[str, typer.Option("--esp-proposal", metavar="ESP",
                                              help="ESP proposal of the CHILD SA.")] = DEFAULT_ESP_PROPOSAL,
    verbose: Annotated[int, typer.Option("--verbose", "-v", count=True,
                                         help="Show the log lines of both peers (-vv: exchange detail).")] = 0,
) -> None:
    """Two IKEv2 peers in this process over loopback UDP: IKE SA, CHILD SA, packets through ESP
    both ways, a CHILD SA rekey, a delete.  No root, no configuration.
    """
    from ipsec_core.cli.up import setup_logging

    setup_logging({0: logging.WARNING, 1: logging.INFO}.get(verbose, logging.DEBUG))
    try:
        result = asyncio.run(run_demo(proposal=proposal, esp_proposal=esp_proposal, save_keys=save_keys))
    except DemoFailed as exc:
        from ipsec_core.cli._common import fail

        fail(f"demo failed: {exc}")
    if json_out:
        print_json(result)
    else:
        sys.stdout.write(report(result) + "\n")


__all__ = ["demo", "run_demo", "report", "demo_configs", "free_udp_ports", "DemoFailed"]
