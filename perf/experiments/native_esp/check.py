import sys, os
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "build"))
import espnative
from ipsec_core.tools import perf

def params(out):
    k = out.config.enc_key
    return (k[:16], k[-4:], out.config.spi, out.seq, out.engine.ident, out.engine.src, out.engine.dst)

ok = True
for size in (1400, 64, 65, 66, 67, 28):
    out, inbound = perf.sa_pair("aes128gcm16", backend="aesni")
    pk = perf.make_packets(size, 256)
    # vary TOS / DF on some packets to exercise copying (fix checksum not needed for ESP path)
    for _ in range(3):   # several consecutive batches: seq/ident continue
        key, salt, spi, seq0, ident0, src, dst = params(out)
        mine = espnative.seal_batch(key, salt, spi, seq0, ident0, bytes(src), bytes(dst), pk)
        ref = out.protect_batch(pk, now=0.0)
        same = mine == ref
        back = espnative.open_batch(key, salt, mine)
        rt = back == pk
        inb = inbound()
        proj = inb.unprotect_batch(mine, now=0.0)
        ok &= same and rt and proj == pk
        print(size, "seal==protect_batch", same, "open roundtrip", rt, "project unprotects ours", proj == pk)
# tamper
out, inbound = perf.sa_pair("aes128gcm16", backend="aesni")
pk = perf.make_packets(1400, 8)
key, salt, spi, seq0, ident0, src, dst = params(out)
w = espnative.seal_batch(key, salt, spi, seq0, ident0, bytes(src), bytes(dst), pk)
w[3] = w[3][:-1] + bytes([w[3][-1] ^ 1])
r = espnative.open_batch(key, salt, w)
print("tamper ->", [x is None for x in r]); ok &= [x is None for x in r] == [i == 3 for i in range(8)]
print("ALL OK" if ok else "FAIL")
