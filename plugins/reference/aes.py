"""AES, the block cipher of FIPS 197, table driven, plus the two plain modes CBC and CTR.

Owns: the AES key schedule and the forward/inverse block functions; the `aes-cbc` and `aes-ctr`
cipher families (SP 800-38A sections 6.2 and 6.5) on top of them.
Must not: hold any protocol rule (IV policy, padding, nonce layout belong to `ipsec_core.dataplane.esp.engine`).

The block function is the classic "T-table" formulation (FIPS 197 section 5.1, with SubBytes,
ShiftRows and MixColumns of one round folded into four 256-entry tables of 32-bit words, as in
the Rijndael reference code).  The state is four 32-bit big-endian words, one per column: word c
holds bytes in[4c .. 4c+3] (FIPS 197 section 3.4).

This backend is the project's test oracle: it is written to be read and checked, not to be fast
or side-channel resistant.  Table lookups indexed by secret data leak through the cache; never
use it where timing attacks matter.
"""
from __future__ import annotations

import struct

_BLOCK = struct.Struct(">4I")
_MASK32 = 0xFFFFFFFF
_MASK128 = (1 << 128) - 1

# ---------------------------------------------------------------------------------------------
# GF(2^8) arithmetic and the S-box (FIPS 197 sections 4.2 and 5.1.1), computed at import time.
# ---------------------------------------------------------------------------------------------


def _xtime(a: int) -> int:
    """Multiply by x (that is {02}) modulo m(x) = x^8 + x^4 + x^3 + x + 1 (FIPS 197 4.2.1)."""
    a <<= 1
    return (a ^ 0x11B) if a & 0x100 else a


def _gf_mul(a: int, b: int) -> int:
    """Multiply two elements of GF(2^8) by repeated xtime (FIPS 197 4.2.1)."""
    product = 0
    while b:
        if b & 1:
            product ^= a
        a = _xtime(a)
        b >>= 1
    return product


def _build_sbox() -> tuple[list[int], list[int]]:
    """SubBytes (FIPS 197 5.1.1): the multiplicative inverse in GF(2^8) ({00} maps to {00}),
    followed by the affine transformation b'_i = b_i ^ b_(i+4) ^ b_(i+5) ^ b_(i+6) ^ b_(i+7) ^ c_i
    with c = {63}.  Inverses come from exp/log tables to the generator {03}."""
    exp = [0] * 255
    log = [0] * 256
    value = 1
    for i in range(255):
        exp[i] = value
        log[value] = i
        value ^= _xtime(value)  # value * {03}
    sbox = [0] * 256
    for a in range(256):
        b = 0 if a == 0 else exp[(255 - log[a]) % 255]
        s = b
        for shift in range(1, 5):  # b ^ rotl(b,1) ^ rotl(b,2) ^ rotl(b,3) ^ rotl(b,4)
            s ^= ((b << shift) | (b >> (8 - shift))) & 0xFF
        sbox[a] = s ^ 0x63
    inv_sbox = [0] * 256
    for a, s in enumerate(sbox):
        inv_sbox[s] = a
    return sbox, inv_sbox


SBOX, INV_SBOX = _build_sbox()


def _ror8(word: int) -> int:
    return ((word >> 8) | (word << 24)) & _MASK32


def _build_tables() -> tuple[list[list[int]], list[list[int]]]:
    """The encryption tables Te0..Te3 and decryption tables Td0..Td3.

    Te0[a] is column 0 of the MixColumns matrix (FIPS 197 5.1.3: {02},{01},{01},{03}) times
    S[a]; Te1..Te3 are the same word rotated right by 8, 16, 24 bits (matrix columns 1..3).
    Td0[a] is column 0 of the InvMixColumns matrix (FIPS 197 5.3.3: {0e},{09},{0d},{0b}) times
    InvS[a]; Td1..Td3 rotated likewise.
    """
    te0, td0 = [], []
    for a in range(256):
        s = SBOX[a]
        te0.append((_gf_mul(s, 2) << 24) | (s << 16) | (s << 8) | _gf_mul(s, 3))
        i = INV_SBOX[a]
        td0.append((_gf_mul(i, 0x0E) << 24) | (_gf_mul(i, 0x09) << 16)
                   | (_gf_mul(i, 0x0D) << 8) | _gf_mul(i, 0x0B))
    te, td = [te0], [td0]
    for _ in range(3):
        te.append([_ror8(w) for w in te[-1]])
        td.append([_ror8(w) for w in td[-1]])
    return te, td


(TE0, TE1, TE2, TE3), (TD0, TD1, TD2, TD3) = _build_tables()

#: Round constants Rcon[i] = x^(i-1) in GF(2^8), in the top byte of a word (FIPS 197 5.2).
_RCON = [0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80, 0x1B, 0x36]


def _sub_word(w: int) -> int:
    return (SBOX[w >> 24] << 24) | (SBOX[(w >> 16) & 0xFF] << 16) | (SBOX[(w >> 8) & 0xFF] << 8) | SBOX[w & 0xFF]


def _inv_mix_column(w: int) -> int:
    """InvMixColumns of one column word (FIPS 197 5.3.3), by the Td tables: Td[S[b]] = InvMix(b)."""
    return (TD0[SBOX[w >> 24]] ^ TD1[SBOX[(w >> 16) & 0xFF]]
            ^ TD2[SBOX[(w >> 8) & 0xFF]] ^ TD3[SBOX[w & 0xFF]])


class AES:
    """One AES key: the key schedule is expanded once here, then any number of blocks go through
    `encrypt_words` / `decrypt_words` (four 32-bit words) or the byte/int wrappers."""

    __slots__ = ("key_bits", "rounds", "_ek", "_dk")

    def __init__(self, key: bytes):
        key = bytes(key)
        if len(key) not in (16, 24, 32):
            raise ValueError(f"AES key must be 16, 24 or 32 bytes (128/192/256 bits), got {len(key)} bytes")
        nk = len(key) // 4                      # Nk: key length in words (FIPS 197 5, fig. 4)
        self.rounds = nr = nk + 6               # Nr: 10, 12 or 14
        self.key_bits = 32 * nk
        # KeyExpansion (FIPS 197 5.2, fig. 11): 4 * (Nr + 1) words.
        w = list(struct.unpack(f">{nk}I", key))
        for i in range(nk, 4 * (nr + 1)):
            temp = w[i - 1]
            if i % nk == 0:
                rot = ((temp << 8) | (temp >> 24)) & _MASK32          # RotWord
                temp = _sub_word(rot) ^ (_RCON[i // nk - 1] << 24)   # SubWord, Rcon[i/Nk]
            elif nk > 6 and i % nk == 4:
                temp = _sub_word(temp)
            w.append(w[i - nk] ^ temp)
        self._ek = w
        # Equivalent inverse cipher key schedule (FIPS 197 5.3.5, fig. 15): the round keys in
        # reverse order, with InvMixColumns applied to those of rounds 1 .. Nr-1.
        dk: list[int] = []
        for rnd in range(nr, -1, -1):
            words = w[4 * rnd: 4 * rnd + 4]
            if 0 < rnd < nr:
                words = [_inv_mix_column(x) for x in words]
            dk.extend(words)
        self._dk = dk

    # -- the block functions ------------------------------------------------------------------
    def encrypt_words(self, s0: int, s1: int, s2: int, s3: int) -> tuple[int, int, int, int]:
        """Cipher() of FIPS 197 5.1 (fig. 5) on a state of four column words."""
        rk = self._ek
        te0, te1, te2, te3 = TE0, TE1, TE2, TE3
        # AddRoundKey with round key 0
        s0 ^= rk[0]
        s1 ^= rk[1]
        s2 ^= rk[2]
        s3 ^= rk[3]
        k = 4
        for _ in range(self.rounds - 1):
            # SubBytes + ShiftRows (row r comes from column c+r) + MixColumns + AddRoundKey
            t0 = te0[s0 >> 24] ^ te1[(s1 >> 16) & 255] ^ te2[(s2 >> 8) & 255] ^ te3[s3 & 255] ^ rk[k]
            t1 = te0[s1 >> 24] ^ te1[(s2 >> 16) & 255] ^ te2[(s3 >> 8) & 255] ^ te3[s0 & 255] ^ rk[k + 1]
            t2 = te0[s2 >> 24] ^ te1[(s3 >> 16) & 255] ^ te2[(s0 >> 8) & 255] ^ te3[s1 & 255] ^ rk[k + 2]
            t3 = te0[s3 >> 24] ^ te1[(s0 >> 16) & 255] ^ te2[(s1 >> 8) & 255] ^ te3[s2 & 255] ^ rk[k + 3]
            s0, s1, s2, s3 = t0, t1, t2, t3
            k += 4
        # Final round: no MixColumns.
        sb = SBOX
        return (
            ((sb[s0 >> 24] << 24) | (sb[(s1 >> 16) & 255] << 16) | (sb[(s2 >> 8) & 255] << 8) | sb[s3 & 255]) ^ rk[k],
            ((sb[s1 >> 24] << 24) | (sb[(s2 >> 16) & 255] << 16) | (sb[(s3 >> 8) & 255] << 8) | sb[s0 & 255]) ^ rk[k + 1],
            ((sb[s2 >> 24] << 24) | (sb[(s3 >> 16) & 255] << 16) | (sb[(s0 >> 8) & 255] << 8) | sb[s1 & 255]) ^ rk[k + 2],
            ((sb[s3 >> 24] << 24) | (sb[(s0 >> 16) & 255] << 16) | (sb[(s1 >> 8) & 255] << 8) | sb[s2 & 255]) ^ rk[k + 3],
        )

    def decrypt_words(self, s0: int, s1: int, s2: int, s3: int) -> tuple[int, int, int, int]:
        """EqInvCipher() of FIPS 197 5.3.5 (fig. 14): InvShiftRows takes row r from column c-r."""
        rk = self._dk
        td0, td1, td2, td3 = TD0, TD1, TD2, TD3
        s0 ^= rk[0]
        s1 ^= rk[1]
        s2 ^= rk[2]
        s3 ^= rk[3]
        k = 4
        for _ in range(self.rounds - 1):
            t0 = td0[s0 >> 24] ^ td1[(s3 >> 16) & 255] ^ td2[(s2 >> 8) & 255] ^ td3[s1 & 255] ^ rk[k]
            t1 = td0[s1 >> 24] ^ td1[(s0 >> 16) & 255] ^ td2[(s3 >> 8) & 255] ^ td3[s2 & 255] ^ rk[k + 1]
            t2 = td0[s2 >> 24] ^ td1[(s1 >> 16) & 255] ^ td2[(s0 >> 8) & 255] ^ td3[s3 & 255] ^ rk[k + 2]
            t3 = td0[s3 >> 24] ^ td1[(s2 >> 16) & 255] ^ td2[(s1 >> 8) & 255] ^ td3[s0 & 255] ^ rk[k + 3]
            s0, s1, s2, s3 = t0, t1, t2, t3
            k += 4
        ib = INV_SBOX
        return (
            ((ib[s0 >> 24] << 24) | (ib[(s3 >> 16) & 255] << 16) | (ib[(s2 >> 8) & 255] << 8) | ib[s1 & 255]) ^ rk[k],
            ((ib[s1 >> 24] << 24) | (ib[(s0 >> 16) & 255] << 16) | (ib[(s3 >> 8) & 255] << 8) | ib[s2 & 255]) ^ rk[k + 1],
            ((ib[s2 >> 24] << 24) | (ib[(s1 >> 16) & 255] << 16) | (ib[(s0 >> 8) & 255] << 8) | ib[s3 & 255]) ^ rk[k + 2],
            ((ib[s3 >> 24] << 24) | (ib[(s2 >> 16) & 255] << 16) | (ib[(s1 >> 8) & 255] << 8) | ib[s0 & 255]) ^ rk[k + 3],
        )

    # -- convenience wrappers --------------------------------------------------------------
    def encrypt_block(self, block: bytes) -> bytes:
        if len(block) != 16:
            raise ValueError(f"AES block must be 16 bytes, got {len(block)}")
        return _BLOCK.pack(*self.encrypt_words(*_BLOCK.unpack(block)))

    def decrypt_block(self, block: bytes) -> bytes:
        if len(block) != 16:
            raise ValueError(f"AES block must be 16 bytes, got {len(block)}")
        return _BLOCK.pack(*self.decrypt_words(*_BLOCK.unpack(block)))

    def encrypt_int(self, x: int) -> int:
        """Encrypt a block given as a 128-bit big-endian integer."""
        a, b, c, d = self.encrypt_words(x >> 96, (x >> 64) & _MASK32, (x >> 32) & _MASK32, x & _MASK32)
        return (a << 96) | (b << 64) | (c << 32) | d


def xor_bytes(a: bytes, b: bytes) -> bytes:
    """a XOR b for equal lengths, through Python's big integers (one C-level operation)."""
    n = len(a)
    return (int.from_bytes(a, "big") ^ int.from_bytes(b, "big")).to_bytes(n, "big")


def check_key(family: str, key: bytes, sizes: tuple[int, ...] = (16, 24, 32)) -> bytes:
    key = bytes(key)
    if len(key) not in sizes:
        want = ", ".join(f"{s} ({8 * s}-bit)" for s in sizes)
        raise ValueError(f"{family} key must be {want} bytes long, got {len(key)} bytes")
    return key


# ---------------------------------------------------------------------------------------------
# The cipher families aes-cbc and aes-ctr (NIST SP 800-38A).
# ---------------------------------------------------------------------------------------------


class AesCbc:
    """AES-CBC, SP 800-38A 6.2, as used by ESP (RFC 3602): caller-chosen 16-byte IV, data a
    multiple of 16 bytes, no padding (ESP pads in the core, RFC 4303 2.4)."""

    family = "aes-cbc"

    def __init__(self, key: bytes):
        self._aes = AES(check_key(self.family, key))

    @staticmethod
    def _check(iv: bytes, data: bytes) -> None:
        if len(iv) != 16:
            raise ValueError(f"aes-cbc iv must be 16 bytes, got {len(iv)}")
        if len(data) % 16:
            raise ValueError(f"aes-cbc data must be a multiple of 16 bytes (no padding), got {len(data)}")

    def encrypt(self, iv: bytes, data: bytes) -> bytes:
        """C_1 = CIPH_K(P_1 ^ IV); C_j = CIPH_K(P_j ^ C_(j-1))."""
        self._check(iv, data)
        enc = self._aes.encrypt_words
        unpack, pack = _BLOCK.unpack_from, _BLOCK.pack
        c0, c1, c2, c3 = _BLOCK.unpack(iv)
        out = []
        for off in range(0, len(data), 16):
            p0, p1, p2, p3 = unpack(data, off)
            c0, c1, c2, c3 = enc(p0 ^ c0, p1 ^ c1, p2 ^ c2, p3 ^ c3)
            out.append(pack(c0, c1, c2, c3))
        return b"".join(out)

    def decrypt(self, iv: bytes, data: bytes) -> bytes:
        """P_1 = CIPH^-1_K(C_1) ^ IV; P_j = CIPH^-1_K(C_j) ^ C_(j-1)."""
        self._check(iv, data)
        dec = self._aes.decrypt_words
        unpack, pack = _BLOCK.unpack_from, _BLOCK.pack
        v0, v1, v2, v3 = _BLOCK.unpack(iv)
        out = []
        for off in range(0, len(data), 16):
            c0, c1, c2, c3 = unpack(data, off)
            d0, d1, d2, d3 = dec(c0, c1, c2, c3)
            out.append(pack(d0 ^ v0, d1 ^ v1, d2 ^ v2, d3 ^ v3))
            v0, v1, v2, v3 = c0, c1, c2, c3
        return b"".join(out)


def ctr_keystream(aes: AES, counter: int, nbytes: int, *, width: int = 128) -> bytes:
    """`nbytes` of key stream: CIPH_K(T_1) || CIPH_K(T_2) || ... (SP 800-38A 6.5), where
    T_1 = counter and T_(j+1) = T_j + 1 modulo 2^width in the low `width` bits (SP 800-38A
    appendix B.1, the "standard incrementing function"; GCM uses width 32, SP 800-38D 6.2)."""
    enc = aes.encrypt_words
    pack = _BLOCK.pack
    low_mask = (1 << width) - 1
    high = counter & ~low_mask & _MASK128
    low = counter & low_mask
    blocks = []
    for _ in range((nbytes + 15) // 16):
        t = high | low
        blocks.append(pack(*enc(t >> 96, (t >> 64) & _MASK32, (t >> 32) & _MASK32, t & _MASK32)))
        low = (low + 1) & low_mask
    return b"".join(blocks)[:nbytes]


class AesCtr:
    """AES-CTR, SP 800-38A 6.5.  The iv is the whole initial counter block T_1 (for ESP, RFC 3686
    section 4: nonce || IV || 00000001, built by the core), incremented as a 128-bit big-endian
    integer per block.  Encryption and decryption are the same operation."""

    family = "aes-ctr"

    def __init__(self, key: bytes):
        self._aes = AES(check_key(self.family, key))

    def encrypt(self, iv: bytes, data: bytes) -> bytes:
        if len(iv) != 16:
            raise ValueError(f"aes-ctr iv (initial counter block) must be 16 bytes, got {len(iv)}")
        if not data:
            return b""
        stream = ctr_keystream(self._aes, int.from_bytes(iv, "big"), len(data))
        return xor_bytes(data, stream)

    decrypt = encrypt
