"""What an IKE connection is configured to do: typed, validated objects, no file format.

Owns: `IkeConfig` (one connection: addresses, identities, authentication, IKE proposals,
timers) and `ChildConfig` (one CHILD SA template: traffic selectors, ESP proposals, mode,
start action, backend, lifetimes).  The TOML loader (`ipsec_core.connections.load_connections`)
builds them; tests and `ipsec demo` build them directly.
Must not: read files, parse TOML, or touch the crypto registry.

Names and defaults follow swanctl.conf, so strongSwan users recognise them.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: strongSwan's retransmission defaults (charon.retransmit_timeout/base/tries).
RETRANSMIT_TIMEOUT = 4.0
RETRANSMIT_BASE = 1.8
RETRANSMIT_TRIES = 5
#: swanctl.conf defaults.
IKE_REKEY_TIME = 4 * 3600.0
CHILD_REKEY_TIME = 3600.0
NAT_KEEPALIVE_INTERVAL = 20.0
#: strongSwan's charon.fragment_size: the largest IP datagram an IKE fragment may fill.
FRAGMENT_SIZE = 1280
DPD_ACTIONS = ("clear", "restart", "trap")
FRAGMENTATION_MODES = ("yes", "accept", "no")
CHILDLESS_MODES = ("allow", "force", "never")
IKE_PORT = 500
NAT_T_PORT = 4500


@dataclass(frozen=True, slots=True)
class TrafficSelectorSpec:
    """One traffic selector as configured: an address prefix, optionally narrowed to an IP
    protocol (0 = any) and a port range (0..65535 = any)."""

    network: IpNetwork
    protocol: int = 0
    start_port: int = 0
    end_port: int = 65535

    def __str__(self) -> str:
        text = str(self.network)
        if self.protocol or (self.start_port, self.end_port) != (0, 65535):
            ports = (str(self.start_port) if self.start_port == self.end_port
                     else f"{self.start_port}-{self.end_port}")
            text += f"[{self.protocol or 'any'}/{ports}]"
        return text


@dataclass(frozen=True, slots=True)
class ChildConfig:
    name: str
    local_ts: tuple[TrafficSelectorSpec, ...]
    remote_ts: tuple[TrafficSelectorSpec, ...]
    esp_proposals: tuple[str, ...] = ("aes128gcm16", "aes128-sha256")
    mode: str = "tunnel"                  # "tunnel" or "transport"
    start_action: str = "none"            # "start": initiate with the IKE SA; "none": wait
    backend: str | None = None            # crypto backend for this CHILD SA's ESP
    rekey_time: float = CHILD_REKEY_TIME  # seconds; 0 disables
    life_time: float | None = None        # hard lifetime; default rekey_time * 1.1
    rekey_bytes: int = 0
    rekey_packets: int = 0
    replay_window: int = 32
    rand_time: float | None = None        # rekey up to this much early; default life - rekey
    dpd_action: str = "clear"             # when the peer is found dead: clear, restart, trap

    @property
    def hard_time(self) -> float | None:
        if self.life_time is not None:
            return self.life_time
        return self.rekey_time * 1.1 if self.rekey_time else None

    @property
    def jitter(self) -> float:
        """The most a rekey comes early (swanctl's rand_time; default life_time - rekey_time),
        so two peers with one configuration rarely rekey at once."""
        if self.rand_time is not None:
            return self.rand_time
        hard = self.hard_time
        return max(0.0, hard - self.rekey_time) if hard and self.rekey_time else 0.0


@dataclass(frozen=True, slots=True)
class IkeConfig:
    name: str
    local_addrs: tuple[str, ...]
    remote_addrs: tuple[str, ...]
    local_id: str | None = None           # None: the local address
    remote_id: str | None = None          # None: accept any identity the PSK authenticates
    auth: str = "psk"                     # "psk" or "pubkey" (certificates)
    psk: bytes = field(default=b"", repr=False)
    certs: tuple[bytes, ...] = ()         # pubkey: our certificate (DER) first, then intermediates
    cacerts: tuple[bytes, ...] = ()       # pubkey: CA certificates (DER) we trust for the peer's
    private_key: bytes = field(default=b"", repr=False)  # pubkey: DER PKCS#8, RSA or EC
    rsa_pss: bool = False                 # pubkey with an RSA key: sign with PSS, not PKCS#1 v1.5
    proposals: tuple[str, ...] = ("aes128gcm16-prfsha256-ecp256", "aes256-sha256-modp2048")
    encap: bool = False                   # force UDP encapsulation (fake NAT, as strongSwan)
    udp_gso: bool = True                  # ESP to this peer in UDP_SEGMENT runs (False: one each)
    children: tuple[ChildConfig, ...] = ()
    local_port: int = IKE_PORT
    remote_port: int = IKE_PORT
    nat_t_port: int = NAT_T_PORT          # local and remote port after the move to NAT-T
    backend: str | None = None            # crypto backend for the IKE SA itself
    rekey_time: float = IKE_REKEY_TIME
    reauth_time: float = 0.0              # 0: never reauthenticate (a new IKE SA from scratch)
    over_time: float | None = None        # hard end after rekey/reauth; default 10% of it
    rand_time: float | None = None        # rekey/reauth up to this much early; default over_time
    dpd_delay: float = 0.0                # 0: no liveness checks of an idle peer
    dpd_timeout: float = 0.0              # 0: a liveness check fails as any request does
    fragmentation: str = "yes"            # RFC 7383: "yes", "accept" (receive only), "no"
    fragment_size: int = FRAGMENT_SIZE    # the largest IP datagram of an IKE fragment
    childless: str = "allow"              # RFC 6023: "allow", "force", "never"
    keepalive_interval: float = NAT_KEEPALIVE_INTERVAL
    retransmit_timeout: float = RETRANSMIT_TIMEOUT
    retransmit_base: float = RETRANSMIT_BASE
    retransmit_tries: int = RETRANSMIT_TRIES

    @property
    def ike_over_time(self) -> float:
        if self.over_time is not None:
            return self.over_time
        return 0.1 * max(self.rekey_time, self.reauth_time)

    @property
    def ike_jitter(self) -> float:
        return self.rand_time if self.rand_time is not None else self.ike_over_time

    def child(self, name: str) -> ChildConfig:
        for c in self.children:
            if c.name == name:
                return c
        raise KeyError(f"connection {self.name!r} has no child {name!r}")


__all__ = ["ChildConfig", "IkeConfig", "TrafficSelectorSpec", "IpNetwork", "RETRANSMIT_TIMEOUT",
           "RETRANSMIT_BASE", "RETRANSMIT_TRIES", "IKE_PORT", "NAT_T_PORT", "FRAGMENT_SIZE",
           "DPD_ACTIONS", "FRAGMENTATION_MODES", "CHILDLESS_MODES"]
