"""SA bundles (RFC 4301 4.3): AH and ESP on one packet.

Owns: the order of the two SAs.  Outbound, ESP (transport mode) is applied first and AH around
it, so AH's ICV covers the ESP packet and the IP header (RFC 4301 4.3 / RFC 4302 3.1: "ESP inside
AH"); inbound, AH is verified and removed first, then ESP.  AH may be in transport mode (host to
host) or tunnel mode (the ESP-protected packet travels inside the tunnel).
Must not: hide which SA dropped a packet: each SA counts its own drops and keeps its own
sequence numbers and replay window; PacketDropped comes out unchanged.  An AH SA whose check
passed has updated its replay window even when the ESP SA then drops the packet, as RFC 4301
5.2 processes each SA in turn.
"""
from __future__ import annotations

from ipsec_core.errors import LocalError
from ipsec_core.dataplane.sa import Mode, SecurityAssociation


class SaBundle:
    """An AH SA and an ESP SA (transport mode) of one direction, applied to the same packets."""

    def __init__(self, ah: SecurityAssociation, esp: SecurityAssociation):
        if ah.config.protocol != "ah" or esp.config.protocol != "esp":
            raise LocalError("SaBundle(ah, esp): the first SA must be AH and the second ESP, "
                             f"got {ah.config.protocol} and {esp.config.protocol}")
        if ah.direction != esp.direction:
            raise LocalError(f"SaBundle: SA {ah.name} is {ah.direction.value}, SA {esp.name} is "
                             f"{esp.direction.value}; a bundle's SAs share a direction")
        if esp.mode != Mode.TRANSPORT:
            raise LocalError(f"SaBundle: ESP SA {esp.name} must be in transport mode (ESP inside AH)")
        self.ah = ah
        self.esp = esp
        self.direction = ah.direction
        self.name = f"{ah.name}+{esp.name}"

    def protect(self, packet: bytes, *, now: float) -> bytes:
        """ESP, then AH around it.  AH's lifetime is checked first, so a packet AH would refuse
        does not use an ESP sequence number."""
        self.ah.check_lifetime(now)
        return self.ah.protect(self.esp.protect(packet, now=now), now=now)

    def unprotect(self, packet: bytes, *, now: float) -> bytes:
        """AH checked and removed, then ESP.  PacketDropped from either SA (counted there)."""
        return self.esp.unprotect(self.ah.unprotect(packet, now=now), now=now)

    def __repr__(self) -> str:
        return f"<SaBundle {self.ah!r} around {self.esp!r}>"


__all__ = ["SaBundle"]
