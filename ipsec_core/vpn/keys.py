"""`--save-keys DIR`: Wireshark's key tables for every IKE and CHILD SA this process sets up,
as strongSwan's save-keys plugin writes them, so tshark decrypts the IKE exchanges and the ESP.

Owns: `KeyTables` (the folder, its files, what went into them) and the IKEv2 algorithm labels
of Wireshark 4.0's `ikev2_decryption_table` (packet-isakmp.c value strings, checked with
`strings libwireshark.so.16` against Debian 12's tshark 4.0.17).  ESP rows come from
`ipsec_core.tools.wireshark.esp_sa_rows`, the same rows `ipsec wireshark-keys` prints.
Must not: log a key, or leave a key file readable by others: every file is written 0600, the
folder is made 0700, and each rewrite goes through a temporary file renamed into place.

Files (Wireshark 4.0 UAT formats; use the folder as `WIRESHARK_CONFIG_DIR=DIR tshark ...`):
  ikev2_decryption_table  SPIi,SPIr,SK_ei,SK_er,"Encryption algorithm",SK_ai,SK_ar,"Integrity
                          algorithm" (hex unquoted: quoted hex is read as text by Wireshark)
  esp_sa                  "Protocol","Src IP","Dest IP","SPI","Encryption","Encryption Key",
                          "Authentication","Authentication Key"
  preferences             ESP decryption and ICV checking on (both default to off)
  decode_as_entries       only when IKE or ESP-in-UDP runs on ports Wireshark does not watch
Rows accumulate: an SA that was rekeyed or deleted keeps its row, since a capture made while it
lived still needs it (strongSwan's plugin appends for the same reason).
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Iterable

from ipsec_core.tools.wireshark import (UAT_HEADER, WIRESHARK_PREFERENCES, WIRESHARK_UDPENCAP_PORT,
                                        EspSaRow, esp_sa_rows)

log = logging.getLogger("ipsec")

IKE_TABLE = "ikev2_decryption_table"
ESP_TABLE = "esp_sa"
PREFERENCES = "preferences"
DECODE_AS = "decode_as_entries"
#: Wireshark's ISAKMP dissector watches these UDP ports by itself.
WIRESHARK_IKE_PORTS = (500, 4500)

# IANA ENCR ids -> Wireshark 4.0 IKEv2 labels (key bits filled in).
_AES_CBC, _AES_CTR = 12, 13
_AES_CCM = {14: 8, 15: 12, 16: 16}
_AES_GCM = {18: 8, 19: 12, 20: 16}
_3DES = 3
#: IANA INTEG ids -> Wireshark 4.0 IKEv2 labels.
IKE_INTEG_LABELS = {
    0: "NONE [RFC4306]",
    1: "HMAC_MD5_96 [RFC2403]",
    2: "HMAC_SHA1_96 [RFC2404]",
    12: "HMAC_SHA2_256_128 [RFC4868]",
    13: "HMAC_SHA2_384_192 [RFC4868]",
    14: "HMAC_SHA2_512_256 [RFC4868]",
}


def ike_encr_label(encr_id: int, key_bits: int) -> str | None:
    """Wireshark 4.0's label for an IKE encryption transform, or None when it cannot decrypt it
    (ChaCha20-Poly1305, Camellia, ...)."""
    if encr_id == _AES_CBC:
        return f"AES-CBC-{key_bits} [RFC3602]"
    if encr_id == _AES_CTR:
        return f"AES-CTR-{key_bits} [RFC5930]"
    if encr_id in _AES_GCM:
        return f"AES-GCM-{key_bits} with {_AES_GCM[encr_id]} octet ICV [RFC5282]"
    if encr_id in _AES_CCM:
        return f"AES-CCM-{key_bits} with {_AES_CCM[encr_id]} octet ICV [RFC5282]"
    if encr_id == _3DES:
        return "3DES [RFC2451]"
    return None


def _spi(value) -> int:
    """An IKE SPI as given by `IkeKeys` (8 bytes) or as an int."""
    return int.from_bytes(value, "big") if isinstance(value, (bytes, bytearray)) else int(value)


def ike_row(keys) -> str | None:
    """One `ikev2_decryption_table` line for an `IkeKeys`, or None if Wireshark 4.0 cannot
    decrypt that IKE SA."""
    encr = ike_encr_label(int(keys.encr_id), int(keys.encr_key_bits))
    integ = IKE_INTEG_LABELS.get(int(keys.integ_id))
    if encr is None or integ is None:
        return None
    return (f'{_spi(keys.spi_i):016x},{_spi(keys.spi_r):016x},{bytes(keys.sk_ei).hex()},{bytes(keys.sk_er).hex()},'
            f'"{encr}",{bytes(keys.sk_ai or b"").hex()},{bytes(keys.sk_ar or b"").hex()},"{integ}"')


def _write_private(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.fchmod(fd, 0o600)          # whatever the umask, and if tmp was left over
        os.write(fd, text.encode())
    finally:
        os.close(fd)
    os.replace(tmp, path)


class KeyTables:
    """The key files in `directory`, rewritten whenever an SA is added.

    `ike_ports`: the UDP ports this process runs IKE on (IKE and NAT-T); ports Wireshark does
    not watch get `decode_as_entries` lines, so the folder alone makes tshark decode and decrypt.
    """

    def __init__(self, directory: Path, *, ike_ports: Iterable[int] = WIRESHARK_IKE_PORTS):
        self.directory = Path(directory)
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.ike_rows: dict[tuple[int, int], str] = {}
        self.esp_rows: list[EspSaRow] = []
        self.udpencap_ports: list[int] = []
        self.ike_ports = [p for p in ike_ports if p not in WIRESHARK_IKE_PORTS]
        self._write_all()

    def set_ports(self, *, ike_port: int, nat_t_port: int) -> None:
        """The ports this process binds (known once the sockets are open)."""
        self.ike_ports = [p for p in (ike_port, nat_t_port) if p not in WIRESHARK_IKE_PORTS]
        if nat_t_port != WIRESHARK_UDPENCAP_PORT and nat_t_port not in self.udpencap_ports:
            self.udpencap_ports.append(nat_t_port)
        self._write_all()

    def add_ike(self, keys: Iterable) -> None:
        """Add the IKE SAs of `IkeEndpoint.ike_keys()` not yet in the table."""
        changed = False
        for k in keys:
            spis = (_spi(k.spi_i), _spi(k.spi_r))
            if spis in self.ike_rows or not spis[1]:
                continue
            row = ike_row(k)
            if row is None:
                log.warning("IKE SA %016x_i %016x_r: Wireshark 4.0 cannot decrypt its encryption "
                            "(ENCR %s) or integrity (INTEG %s); not in %s", *spis,
                            k.encr_id, k.integ_id, IKE_TABLE)
                self.ike_rows[spis] = ""
                continue
            self.ike_rows[spis] = row
            changed = True
        if changed:
            self._write(IKE_TABLE)

    def add_esp(self, configs: Iterable) -> None:
        """Add the ESP SAs (`SaConfig`s, both directions of a CHILD SA)."""
        changed = False
        for cfg in configs:
            rows, warnings = esp_sa_rows(cfg)
            for text in warnings:
                log.warning("%s", text)
            for row in rows:
                if row not in self.esp_rows:
                    self.esp_rows.append(row)
                    changed = True
        if changed:
            self._write(ESP_TABLE)

    def _text(self, name: str) -> str:
        if name == IKE_TABLE:
            return "\n".join([UAT_HEADER, *(r for r in self.ike_rows.values() if r)]) + "\n"
        if name == ESP_TABLE:
            return "\n".join([UAT_HEADER, *(r.uat() for r in self.esp_rows)]) + "\n"
        if name == PREFERENCES:
            return "".join(f"{k}: {v}\n" for k, v in WIRESHARK_PREFERENCES.items())
        lines = [f"decode_as_entry: udp.port,{p},(none),ISAKMP\n" for p in self.ike_ports
                 if p not in self.udpencap_ports]
        lines += [f"decode_as_entry: udp.port,{p},(none),UDPENCAP\n" for p in self.udpencap_ports]
        return "".join(lines)

    def _write(self, name: str) -> None:
        _write_private(self.directory / name, self._text(name))

    def _write_all(self) -> None:
        for name in (IKE_TABLE, ESP_TABLE, PREFERENCES):
            self._write(name)
        if self.ike_ports or self.udpencap_ports:
            self._write(DECODE_AS)

    def tshark_args(self) -> list[str]:
        """tshark arguments equivalent to the folder (for a capture read elsewhere)."""
        args: list[str] = []
        for key, value in WIRESHARK_PREFERENCES.items():
            args += ["-o", f"{key}:{value}"]
        for port in self.udpencap_ports:
            args += ["-d", f"udp.port=={port},udpencap"]
        for port in self.ike_ports:
            if port not in self.udpencap_ports:
                args += ["-d", f"udp.port=={port},isakmp"]
        for row in self.esp_rows:
            args += ["-o", row.tshark_arg()]
        for row in self.ike_rows.values():
            if row:
                args += ["-o", f"uat:{IKE_TABLE}:{row}"]
        return args


__all__ = ["KeyTables", "ike_encr_label", "ike_row", "IKE_TABLE", "ESP_TABLE", "IKE_INTEG_LABELS"]
