#!/usr/bin/env python3
"""Capture real IKEv2 exchanges between two strongSwan charons into tests/ike/data/strongswan-*.json.

For each suite it brings up strongSwan-to-strongSwan (PSK, kernel-libipsec, see strongswan.py),
runs tcpdump on the initiator's veth, and drives: IKE_SA_INIT, IKE_AUTH, one ping through the
tunnel, a CHILD SA rekey (`swanctl --rekey --child`: CREATE_CHILD_SA, then the INFORMATIONAL that
deletes the old CHILD SA), one more ping, and a terminate (INFORMATIONAL delete of the IKE SA).
The pcap is parsed here (classic pcap, Ethernet, IPv4/IPv6, UDP) into JSON with every IKE
datagram in order, the ESP datagrams, the keys charon logged at level 4, and the SPIs.

Before writing, the file is checked against itself: every SK payload must decrypt and
authenticate with the logged SK_e/SK_a, every ESP packet with the logged CHILD SA keys, and the
IKE/ESP SPIs must match what swanctl lists.  A capture that fails a check is not written.

Usage (root; needs the packages of tests/setup-system.sh):
    python3 tests/interop/capture_strongswan.py                 # all suites -> tests/ike/data/
    python3 tests/interop/capture_strongswan.py --suite aes128gcm16 --keep /tmp/cap
"""
from __future__ import annotations

import argparse
import hashlib
import hmac
import ipaddress
import json
import signal
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

sys.path.insert(0, str(Path(__file__).resolve().parent))
import strongswan as ss  # noqa: E402

DATA_DIR = Path(__file__).resolve().parents[1] / "ike" / "data"

# file name -> (IKE proposal, ESP proposal)
SUITES = {
    "aes128gcm16": ("aes128gcm16-prfsha256-ecp256", "aes128gcm16"),
    "aes256-sha256": ("aes256-sha256-modp2048", "aes256-sha256"),
    "chacha20poly1305": ("chacha20poly1305-prfsha256-x25519", "chacha20poly1305"),
}

A_ID, B_ID = "a.example.org", "b.example.org"
A_NET, B_NET = "198.51.100.0/24", "203.0.113.0/24"

EXCHANGES = {34: "IKE_SA_INIT", 35: "IKE_AUTH", 36: "CREATE_CHILD_SA", 37: "INFORMATIONAL"}
PAYLOADS = {33: "SA", 34: "KE", 35: "IDi", 36: "IDr", 37: "CERT", 38: "CERTREQ", 39: "AUTH", 40: "Nonce",
            41: "N", 42: "D", 43: "V", 44: "TSi", 45: "TSr", 46: "SK", 47: "CP", 48: "EAP", 53: "SKF"}
NOTIFIES = {7: "INVALID_SYNTAX", 14: "NO_PROPOSAL_CHOSEN", 17: "INVALID_KE_PAYLOAD",
            24: "AUTHENTICATION_FAILED", 35: "NO_ADDITIONAL_SAS", 38: "TS_UNACCEPTABLE", 43: "TEMPORARY_FAILURE",
            44: "CHILD_SA_NOT_FOUND",
            16384: "INITIAL_CONTACT", 16385: "SET_WINDOW_SIZE", 16386: "ADDITIONAL_TS_POSSIBLE",
            16387: "IPCOMP_SUPPORTED", 16388: "NAT_DETECTION_SOURCE_IP", 16389: "NAT_DETECTION_DESTINATION_IP",
            16390: "COOKIE", 16391: "USE_TRANSPORT_MODE", 16392: "HTTP_CERT_LOOKUP_SUPPORTED",
            16393: "REKEY_SA", 16394: "ESP_TFC_PADDING_NOT_SUPPORTED", 16395: "NON_FIRST_FRAGMENTS_ALSO",
            16396: "MOBIKE_SUPPORTED", 16397: "ADDITIONAL_IP4_ADDRESS", 16398: "ADDITIONAL_IP6_ADDRESS",
            16399: "NO_ADDITIONAL_ADDRESSES", 16400: "UPDATE_SA_ADDRESSES",
            16404: "MULTIPLE_AUTH_SUPPORTED", 16405: "ANOTHER_AUTH_FOLLOWS",
            16406: "REDIRECT_SUPPORTED", 16417: "EAP_ONLY_AUTHENTICATION", 16418: "CHILDLESS_IKEV2_SUPPORTED",
            16420: "IKEV2_MESSAGE_ID_SYNC_SUPPORTED",
            16430: "IKEV2_FRAGMENTATION_SUPPORTED", 16431: "SIGNATURE_HASH_ALGORITHMS",
            16432: "CLONE_IKE_SA_SUPPORTED", 16433: "CLONE_IKE_SA", 16434: "PUZZLE", 16435: "USE_PPK",
            16438: "INTERMEDIATE_EXCHANGE_SUPPORTED"}

# the labels of charon's level-4 dumps that a key-derivation test wants, by our key name
IKE_KEY_LABELS = {"shared_dh_secret": "shared Diffie Hellman secret", "skeyseed": "SKEYSEED",
                  "sk_d": "Sk_d secret", "sk_ai": "Sk_ai secret", "sk_ar": "Sk_ar secret",
                  "sk_ei": "Sk_ei secret", "sk_er": "Sk_er secret", "sk_pi": "Sk_pi secret",
                  "sk_pr": "Sk_pr secret", "psk": "secret"}
CHILD_KEY_LABELS = ("seed", "encryption initiator key", "encryption responder key",
                    "integrity initiator key", "integrity responder key")


# ---------------------------------------------------------------------------- pcap

def read_pcap(path: Path) -> list[dict]:
    """UDP datagrams of a classic pcap (Ethernet link type): src, dst, sport, dport, payload."""
    data = path.read_bytes()
    magic = data[:4]
    endian = {b"\xd4\xc3\xb2\xa1": "<", b"\xa1\xb2\xc3\xd4": ">",
              b"\x4d\x3c\xb2\xa1": "<", b"\xa1\xb2\x3c\x4d": ">"}.get(magic)
    if endian is None:
        raise ValueError(f"{path}: not a classic pcap file (magic {magic.hex()})")
    linktype = struct.unpack(endian + "I", data[20:24])[0]
    if linktype != 1:
        raise ValueError(f"{path}: link type {linktype}, expected 1 (Ethernet)")
    out, pos = [], 24
    while pos + 16 <= len(data):
        _, _, incl, orig = struct.unpack(endian + "IIII", data[pos:pos + 16])
        frame = data[pos + 16:pos + 16 + incl]
        pos += 16 + incl
        if incl != orig:
            raise ValueError("truncated frame in capture (snaplen)")
        ethertype, l3 = struct.unpack("!H", frame[12:14])[0], frame[14:]
        if ethertype == 0x0800 and l3[9] == 17:
            ihl = (l3[0] & 0x0F) * 4
            src, dst = ipaddress.IPv4Address(l3[12:16]), ipaddress.IPv4Address(l3[16:20])
            udp = l3[ihl:struct.unpack("!H", l3[2:4])[0]]
        elif ethertype == 0x86DD and l3[6] == 17:
            src, dst = ipaddress.IPv6Address(l3[8:24]), ipaddress.IPv6Address(l3[24:40])
            udp = l3[40:40 + struct.unpack("!H", l3[4:6])[0]]
        else:
            continue
        sport, dport, ulen = struct.unpack("!HHH", udp[:6])
        out.append({"src": str(src), "dst": str(dst), "sport": sport, "dport": dport, "payload": udp[8:ulen]})
    return out


# ---------------------------------------------------------------------------- IKE

def walk_payloads(first: int, body: bytes) -> list[tuple[int, bytes]]:
    """[(payload type, payload body without the generic header)] of a payload chain."""
    out, pos, ptype = [], 0, first
    while ptype != 0:
        nxt, _, length = struct.unpack("!BBH", body[pos:pos + 4])
        out.append((ptype, body[pos + 4:pos + length]))
        if ptype in (46, 53):  # SK/SKF: the rest is encrypted, nxt names the first inner payload
            break
        pos, ptype = pos + length, nxt
    return out


def describe(payloads: list[tuple[int, bytes]]) -> list[str]:
    """Readable names: "SA", "N(NAT_DETECTION_SOURCE_IP)", "V(882fe56d6fd20dbc2251613b2ebe5beb)"..."""
    names = []
    for ptype, body in payloads:
        name = PAYLOADS.get(ptype, str(ptype))
        if ptype == 41:
            ntype = struct.unpack("!H", body[2:4])[0]
            name = f"N({NOTIFIES.get(ntype, ntype)})"
        elif ptype == 43:
            name = f"V({body.hex()})"
        elif ptype == 42:
            name = f"D(protocol {body[0]})"
        names.append(name)
    return names


def sk_decrypt(msg: bytes, sk_offset: int, *, encr: str, sk_e: bytes, sk_a: bytes | None) -> bytes:
    """Inner payloads of the SK payload at `sk_offset` (its generic header); raises if it fails."""
    length = struct.unpack("!H", msg[sk_offset + 2:sk_offset + 4])[0]
    if sk_offset + length != len(msg):
        raise ValueError("SK payload is not the last one")
    if encr in ("AES_GCM_16", "CHACHA20_POLY1305"):
        key, salt = sk_e[:-4], sk_e[-4:]
        iv = msg[sk_offset + 4:sk_offset + 12]
        aead = AESGCM(key) if encr == "AES_GCM_16" else ChaCha20Poly1305(key)
        plain = aead.decrypt(salt + iv, msg[sk_offset + 12:], msg[:sk_offset + 4])
    elif encr == "AES_CBC":
        icv = msg[-16:]
        if not hmac.compare_digest(hmac.new(sk_a, msg[:-16], hashlib.sha256).digest()[:16], icv):
            raise ValueError("SK integrity check failed")
        iv, ct = msg[sk_offset + 4:sk_offset + 20], msg[sk_offset + 20:-16]
        dec = Cipher(algorithms.AES(sk_e), modes.CBC(iv)).decryptor()
        plain = dec.update(ct) + dec.finalize()
    else:
        raise ValueError(f"no decryption for {encr}")
    pad = plain[-1]
    return plain[:-(pad + 1)]


def esp_decrypt(packet: bytes, *, encr: str, key: bytes, integ_key: bytes | None) -> bytes:
    """Inner IP packet of an ESP packet (RFC 4106 / 7634 / 3602+4868); raises if it fails."""
    if encr in ("AES_GCM_16", "CHACHA20_POLY1305"):
        aead = AESGCM(key[:-4]) if encr == "AES_GCM_16" else ChaCha20Poly1305(key[:-4])
        plain = aead.decrypt(key[-4:] + packet[8:16], packet[16:], packet[:8])
    else:
        if not hmac.compare_digest(hmac.new(integ_key, packet[:-16], hashlib.sha256).digest()[:16], packet[-16:]):
            raise ValueError("ESP ICV check failed")
        dec = Cipher(algorithms.AES(key), modes.CBC(packet[8:24])).decryptor()
        plain = dec.update(packet[24:-16]) + dec.finalize()
    pad_len = plain[-2]
    return plain[:-(pad_len + 2)]


# ---------------------------------------------------------------------------- capture

def start_tcpdump(netns: str, iface: str, path: Path) -> subprocess.Popen:
    err = path.with_suffix(".tcpdump.log")
    with open(err, "wb") as f:
        # --immediate-mode: without it packets wait in a TPACKET_V3 block and the last ones are
        # lost when tcpdump is stopped
        proc = subprocess.Popen(["ip", "netns", "exec", netns, "tcpdump", "-i", iface, "--immediate-mode", "-U",
                                 "-n", "-s", "0", "-w", str(path), "udp port 500 or udp port 4500"],
                                stdout=subprocess.DEVNULL, stderr=f, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while b"listening on" not in err.read_bytes():
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_process(proc)
            raise ss.StrongswanError("tcpdump did not start: " + err.read_text(errors="replace"))
        time.sleep(0.05)
    return proc


def stop_process(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def only_child(sa: dict) -> dict:
    kids = [c for c in sa["child-sas"] if c["state"] == "INSTALLED"]
    if len(kids) != 1:
        raise ss.StrongswanError(f"expected one installed CHILD SA, got {kids}")
    return kids[0]


def wait_rekeyed(charon: ss.Charon, old_spi: str, timeout: float = 10.0) -> dict:
    """Wait until a new CHILD SA is installed and the old one deleted (charon lists a deleted
    CHILD SA for a few seconds more, in state DELETED); return the new one."""
    deadline = time.monotonic() + timeout
    while True:
        sas = charon.list_sas()
        kids = sas[0]["child-sas"] if sas else []
        new = [c for c in kids if c["state"] == "INSTALLED" and c["spi-in"] != old_spi]
        if len(new) == 1 and all(c["state"] == "DELETED" for c in kids if c is not new[0]):
            return new[0]
        if time.monotonic() > deadline:
            raise ss.StrongswanError(f"CHILD SA rekey did not finish: {sas}\n{charon.log_tail()}")
        time.sleep(0.05)


def capture_suite(name: str, ike_proposal: str, esp_proposal: str, workdir: Path) -> dict:
    conn_a = {"proposals": ike_proposal, "esp_proposals": esp_proposal, "local_ts": A_NET, "remote_ts": B_NET}
    conn_b = {"proposals": ike_proposal, "esp_proposals": esp_proposal, "local_ts": B_NET, "remote_ts": A_NET}
    with ss.StrongswanPair(conn_a=conn_a, conn_b=conn_b, a_id=A_ID, b_id=B_ID, workdir=workdir,
                           keep_workdir=True) as pair:
        net = pair.net
        pcap = workdir / f"{name}.pcap"
        tcpdump = start_tcpdump(net.a.netns, net.a.veth, pcap)
        try:
            ping = ["ping", "-c", "1", "-W", "2", "-I", net.a.inner_ip, net.b.inner_ip]
            ike = pair.initiate(timeout=10)
            pair.b.wait_established(ike="net", child="net", timeout=5)
            child1 = only_child(ike)
            net.exec(net.a, ping)
            pair.a.rekey(child="net")
            child2 = wait_rekeyed(pair.a, child1["spi-in"])
            wait_rekeyed(pair.b, child1["spi-out"])
            net.exec(net.a, ping)
            ike_after = pair.a.list_sas()[0]
            pair.a.terminate(ike="net")
            time.sleep(0.5)  # the last response on the wire and through tcpdump before it stops
        finally:
            stop_process(tcpdump)
        datagrams = read_pcap(pcap)
        logs = {"initiator": pair.a.log(), "responder": pair.b.log()}
        swanctl = {"initiator": (pair.a.workdir / "swanctl.conf").read_text(),
                   "responder": (pair.b.workdir / "swanctl.conf").read_text()}
        version = " ".join(pair.a.swanctl("--version", "--daemon").stdout.split())
        a_ip, b_ip = net.a.ip, net.b.ip
    return build_record(name=name, ike_proposal=ike_proposal, esp_proposal=esp_proposal, ike=ike,
                        ike_after=ike_after, children=[child1, child2], datagrams=datagrams, logs=logs,
                        swanctl=swanctl, version=version, a_ip=a_ip, b_ip=b_ip, psk=pair.psk)


def build_record(*, name, ike_proposal, esp_proposal, ike, ike_after, children, datagrams, logs, swanctl,
                 version, a_ip, b_ip, psk) -> dict:
    dumps = {side: ss.parse_hexdumps(text) for side, text in logs.items()}
    init_dumps = dumps["initiator"]

    def first(label, subsystem="IKE"):
        hits = [d for s, lab, d in init_dumps if s == subsystem and lab == label]
        return hits[0].hex() if hits else None

    keys = {k: first(label) for k, label in IKE_KEY_LABELS.items()}
    keys = {k: v for k, v in keys.items() if v is not None}
    child_dumps = [(lab, d) for s, lab, d in init_dumps if s == "CHD" and lab in CHILD_KEY_LABELS]
    per_child: list[dict] = []
    for lab, d in child_dumps:
        if lab == "seed":
            per_child.append({})
        per_child[-1][lab] = d.hex()
    if len(per_child) != 2:
        raise ValueError(f"expected key dumps for 2 CHILD SAs in the initiator log, got {len(per_child)}")
    child_sas = []
    for exchange, sa, k in zip(("IKE_AUTH", "CREATE_CHILD_SA"), children, per_child):
        child_sas.append({
            "exchange": exchange, "encr_alg": sa["encr-alg"], "encr_keysize": sa.get("encr-keysize"),
            "integ_alg": sa.get("integ-alg"), "mode": sa["mode"], "encap": sa["encap"] == "yes",
            "seed": k["seed"],
            "i_to_r": {"spi": sa["spi-out"], "encr_key": k["encryption initiator key"],
                       "integ_key": k.get("integrity initiator key")},
            "r_to_i": {"spi": sa["spi-in"], "encr_key": k["encryption responder key"],
                       "integ_key": k.get("integrity responder key")},
        })
    spi_i, spi_r = ike["initiator-spi"], ike["responder-spi"]

    ike_msgs, esp_msgs, keepalives, nonces = [], [], 0, {}
    for dg in datagrams:
        direction = "i->r" if dg["src"] == a_ip else "r->i"
        payload = dg["payload"]
        marker = False
        if 4500 in (dg["sport"], dg["dport"]):
            if payload == b"\xff":
                keepalives += 1
                continue
            if payload[:4] != b"\0\0\0\0":
                esp_msgs.append((direction, dg))
                continue
            payload, marker = payload[4:], True
        spii, spir, nxt, ver, xchg, flags, msgid, length = struct.unpack("!8s8sBBBBII", payload[:28])
        if length != len(payload):
            raise ValueError("IKE length field disagrees with the datagram")
        chain = walk_payloads(nxt, payload[28:])
        record = {"direction": direction, "src": dg["src"], "sport": dg["sport"], "dst": dg["dst"],
                  "dport": dg["dport"], "non_esp_marker": marker,
                  "exchange": EXCHANGES.get(xchg, str(xchg)), "message_id": msgid,
                  "response": bool(flags & 0x20), "initiator_flag": bool(flags & 0x08),
                  "payloads": describe(chain)}
        if chain and chain[-1][0] == 46:
            sender_i = bool(flags & 0x08)
            sk_offset = 28 + sum(4 + len(b) for _, b in chain[:-1])
            inner_first = payload[sk_offset]
            inner = sk_decrypt(payload, sk_offset, encr=ike["encr-alg"],
                               sk_e=bytes.fromhex(keys["sk_ei" if sender_i else "sk_er"]),
                               sk_a=bytes.fromhex(keys["sk_ai" if sender_i else "sk_ar"])
                               if "sk_ai" in keys else None)
            inner_chain = walk_payloads(inner_first, inner)
            record["sk_first_payload"] = inner_first
            record["sk_plaintext"] = inner.hex()
            record["inner_payloads"] = describe(inner_chain)
            chain = inner_chain
        for ptype, body in chain:
            if ptype == 40 and record["exchange"] in ("IKE_SA_INIT", "CREATE_CHILD_SA"):
                nonces.setdefault(record["exchange"], {})["nr" if record["response"] else "ni"] = body.hex()
        record["hex"] = payload.hex()
        first_request = record["exchange"] == "IKE_SA_INIT" and not record["response"]
        if spii.hex() != spi_i or spir.hex() != ("0" * 16 if first_request else spi_r):
            raise ValueError(f"IKE SPIs {spii.hex()}/{spir.hex()} differ from swanctl's {spi_i}/{spi_r}")
        ike_msgs.append(record)

    # every ESP packet must open with the CHILD SA keys of its SPI
    by_spi = {}
    for c in child_sas:
        by_spi[c["i_to_r"]["spi"]] = c["i_to_r"]
        by_spi[c["r_to_i"]["spi"]] = c["r_to_i"]
    esp_records = []
    for direction, dg in esp_msgs:
        spi = dg["payload"][:4].hex()
        sa = by_spi[spi]
        inner = esp_decrypt(dg["payload"], encr=children[0]["encr-alg"], key=bytes.fromhex(sa["encr_key"]),
                            integ_key=bytes.fromhex(sa["integ_key"]) if sa["integ_key"] else None)
        esp_records.append({"direction": direction, "src": dg["src"], "sport": dg["sport"], "dst": dg["dst"],
                            "dport": dg["dport"], "spi": spi, "seq": struct.unpack("!I", dg["payload"][4:8])[0],
                            "hex": dg["payload"].hex(), "inner_hex": inner.hex()})

    sequence = [(m["exchange"], m["response"]) for m in ike_msgs]
    for wanted in (("IKE_SA_INIT", False), ("IKE_SA_INIT", True), ("IKE_AUTH", False), ("IKE_AUTH", True),
                   ("CREATE_CHILD_SA", False), ("CREATE_CHILD_SA", True)):
        if wanted not in sequence:
            raise ValueError(f"capture lacks {wanted}: {sequence}")
    if sum(1 for m in ike_msgs if m["exchange"] == "INFORMATIONAL") < 4:
        raise ValueError(f"expected two INFORMATIONAL exchanges (CHILD SA delete, IKE SA delete): {sequence}")
    if len(esp_records) < 4:
        raise ValueError(f"expected 4 ESP packets (2 pings), got {len(esp_records)}")

    return {
        "description": f"strongSwan-to-strongSwan IKEv2 PSK capture, suite {name}: IKE_SA_INIT, IKE_AUTH, "
                       "CHILD SA rekey (CREATE_CHILD_SA + INFORMATIONAL delete of the old CHILD SA), "
                       "IKE SA delete; seen on the initiator's veth; regenerate with "
                       "tests/interop/capture_strongswan.py",
        "strongswan_version": version,
        "ike_proposal": ike_proposal,
        "esp_proposal": esp_proposal,
        "selected": {"encr_alg": ike["encr-alg"], "encr_keysize": ike.get("encr-keysize"),
                     "integ_alg": ike.get("integ-alg"), "prf_alg": ike["prf-alg"], "dh_group": ike["dh-group"]},
        "config": {
            "psk": psk,
            "initiator": {"id": A_ID, "id_type": "FQDN", "address": a_ip, "ts": A_NET},
            "responder": {"id": B_ID, "id_type": "FQDN", "address": b_ip, "ts": B_NET},
            "mode": "tunnel", "encap": True,
            "swanctl_conf": swanctl,
        },
        "ike_spis": {"initiator": spi_i, "responder": spi_r},
        "nonces": nonces,
        "keys": keys,
        "child_sas": child_sas,
        "datagrams": ike_msgs,
        "esp": esp_records,
        "nat_keepalives": keepalives,
        "charon_log_hexdumps": {side: [[s, lab, d.hex()] for s, lab, d in ds] for side, ds in dumps.items()},
        "ike_sa_after_rekey": {k: v for k, v in ike_after.items() if k != "child-sas"},
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--suite", action="append", choices=sorted(SUITES), help="default: all")
    ap.add_argument("--out", type=Path, default=DATA_DIR)
    ap.add_argument("--keep", type=Path, help="keep logs/pcaps/configs in this directory")
    args = ap.parse_args(argv)
    reason = ss.skip_reason() or ss.tool_missing("tcpdump", "ping")
    if reason:
        print(f"capture_strongswan: cannot run: {reason}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    for name in args.suite or SUITES:
        ike_proposal, esp_proposal = SUITES[name]
        with tempfile.TemporaryDirectory(prefix=f"capture-{name}-", dir="/tmp") as tmp:
            workdir = (args.keep / name) if args.keep else Path(tmp)
            record = capture_suite(name, ike_proposal, esp_proposal, workdir)
        path = args.out / f"strongswan-{name}.json"
        text = json.dumps(record, indent=1) + "\n"
        path.write_text(text)
        print(f"{path}: {len(record['datagrams'])} IKE datagrams, {len(record['esp'])} ESP, "
              f"{len(text) // 1024} KiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
