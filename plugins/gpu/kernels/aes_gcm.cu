/* AES-GCM (NIST SP 800-38D) over a whole batch of ESP packets (RFC 4106), in one launch.
 *
 * Owns: the device side of the `gpu` backend: AES (FIPS 197, T-table form) in counter mode for every
 * 16-byte block of every packet, GHASH per packet as a parallel sum over powers of H, the tag, and
 * for decryption a constant-time tag compare with one verdict per packet.
 * Must not: know about ESP (the host hands over nonce = salt || IV, and the AAD), or use anything a
 * CPU build cannot stand in for: no headers, no warp intrinsics, no atomics, no __constant__.  The
 * same file is compiled by NVRTC (CuPy RawModule), by `nvcc -ptx -arch=sm_90` in the tests, and as
 * C++20 with host_shim.h for the CPU build the tests run against the vectors.
 *
 * Batch layout (all in device memory, one entry per packet p):
 *   data[offsets[p] ...]      the packet's payload (lengths[p] bytes) followed by its 16-byte tag
 *                             slot: plaintext in / ciphertext out and the tag written (seal), or
 *                             ciphertext in / plaintext out, the tag read (open).  In place.
 *                             lengths[p] == GCM_SKIP: no work, verdict GCM_VERDICT_SKIPPED.
 *   nonces[12 p ...]          12-byte nonce (ESP: 4-byte salt || 8-byte IV)
 *   aad[aad_offsets[p] ...]   aad_lengths[p] bytes (ESP: SPI || seq, or SPI || seq_hi || seq_lo)
 *   sa_slots[p]               index into sa_table (a batch may mix SAs)
 *   verdicts[p]               out: GCM_VERDICT_OK, _BAD_TAG or _SKIPPED
 *
 * Threads: 2^lanes_log2 consecutive threads ("lanes", 1..32) share a packet.  GHASH input blocks
 * X_1..X_m (AAD blocks, ciphertext blocks, the length block) give
 *     S = sum_i X_i * H^(m-i+1);   with r = m - i, lane t takes every r = t (mod T):
 *     S_t = H^(t+1) * sum_k X_(m-t-kT) * (H^T)^k      (Horner in H^T),   S = xor of all S_t
 * so each lane works alone on the blocks it encrypts (adjacent lanes touch adjacent blocks) and
 * the lanes meet once, in a shared-memory xor reduction.  Multiplications use 4-bit Shoup tables
 * of H^1..H^32, computed per SA at install (gcm_install).
 *
 * Timing: the tag compare has no data-dependent branch.  T-table lookups (as in the `reference`
 * backend) are not constant-time with respect to shared-memory bank conflicts; a bitsliced AES
 * would be.
 */

typedef unsigned char u8;
typedef unsigned int u32;
typedef unsigned long long u64;

#ifdef __CUDACC__
#define GCM_UNROLL _Pragma("unroll")
#else
#define GCM_UNROLL
#endif

#define GCM_MAX_LANES 32
#define GCM_MAX_BLOCK_THREADS 256
#define GCM_SKIP 0xffffffffu
#define GCM_VERDICT_OK 1
#define GCM_VERDICT_BAD_TAG 2
#define GCM_VERDICT_SKIPPED 3

/* One SA slot of sa_table, in bytes: round keys (60 big-endian words), the round count, then the
 * Shoup tables of H^p, p = 1..32: HL[p-1][16], then HH[p-1][16] (low / high 64-bit halves). */
#define GCM_SA_RK 0
#define GCM_SA_NR 240
#define GCM_SA_HL 256
#define GCM_SA_HH (GCM_SA_HL + GCM_MAX_LANES * 16 * 8)
#define GCM_SA_BYTES (GCM_SA_HH + GCM_MAX_LANES * 16 * 8)

/* FIPS 197 T-table Te0 (SubBytes, ShiftRows column and MixColumns folded); Te1..Te3 are its byte
 * rotations, and the S-box is its second byte: S[x] = (Te0[x] >> 8) & 0xff. */
__device__ const u32 GCM_TE0[256] = {
    0xc66363a5u, 0xf87c7c84u, 0xee777799u, 0xf67b7b8du, 0xfff2f20du, 0xd66b6bbdu, 0xde6f6fb1u, 0x91c5c554u,
    0x60303050u, 0x02010103u, 0xce6767a9u, 0x562b2b7du, 0xe7fefe19u, 0xb5d7d762u, 0x4dababe6u, 0xec76769au,
    0x8fcaca45u, 0x1f82829du, 0x89c9c940u, 0xfa7d7d87u, 0xeffafa15u, 0xb25959ebu, 0x8e4747c9u, 0xfbf0f00bu,
    0x41adadecu, 0xb3d4d467u, 0x5fa2a2fdu, 0x45afafeau, 0x239c9cbfu, 0x53a4a4f7u, 0xe4727296u, 0x9bc0c05bu,
    0x75b7b7c2u, 0xe1fdfd1cu, 0x3d9393aeu, 0x4c26266au, 0x6c36365au, 0x7e3f3f41u, 0xf5f7f702u, 0x83cccc4fu,
    0x6834345cu, 0x51a5a5f4u, 0xd1e5e534u, 0xf9f1f108u, 0xe2717193u, 0xabd8d873u, 0x62313153u, 0x2a15153fu,
    0x0804040cu, 0x95c7c752u, 0x46232365u, 0x9dc3c35eu, 0x30181828u, 0x379696a1u, 0x0a05050fu, 0x2f9a9ab5u,
    0x0e070709u, 0x24121236u, 0x1b80809bu, 0xdfe2e23du, 0xcdebeb26u, 0x4e272769u, 0x7fb2b2cdu, 0xea75759fu,
    0x1209091bu, 0x1d83839eu, 0x582c2c74u, 0x341a1a2eu, 0x361b1b2du, 0xdc6e6eb2u, 0xb45a5aeeu, 0x5ba0a0fbu,
    0xa45252f6u, 0x763b3b4du, 0xb7d6d661u, 0x7db3b3ceu, 0x5229297bu, 0xdde3e33eu, 0x5e2f2f71u, 0x13848497u,
    0xa65353f5u, 0xb9d1d168u, 0x00000000u, 0xc1eded2cu, 0x40202060u, 0xe3fcfc1fu, 0x79b1b1c8u, 0xb65b5bedu,
    0xd46a6abeu, 0x8dcbcb46u, 0x67bebed9u, 0x7239394bu, 0x944a4adeu, 0x984c4cd4u, 0xb05858e8u, 0x85cfcf4au,
    0xbbd0d06bu, 0xc5efef2au, 0x4faaaae5u, 0xedfbfb16u, 0x864343c5u, 0x9a4d4dd7u, 0x66333355u, 0x11858594u,
    0x8a4545cfu, 0xe9f9f910u, 0x04020206u, 0xfe7f7f81u, 0xa05050f0u, 0x783c3c44u, 0x259f9fbau, 0x4ba8a8e3u,
    0xa25151f3u, 0x5da3a3feu, 0x804040c0u, 0x058f8f8au, 0x3f9292adu, 0x219d9dbcu, 0x70383848u, 0xf1f5f504u,
    0x63bcbcdfu, 0x77b6b6c1u, 0xafdada75u, 0x42212163u, 0x20101030u, 0xe5ffff1au, 0xfdf3f30eu, 0xbfd2d26du,
    0x81cdcd4cu, 0x180c0c14u, 0x26131335u, 0xc3ecec2fu, 0xbe5f5fe1u, 0x359797a2u, 0x884444ccu, 0x2e171739u,
    0x93c4c457u, 0x55a7a7f2u, 0xfc7e7e82u, 0x7a3d3d47u, 0xc86464acu, 0xba5d5de7u, 0x3219192bu, 0xe6737395u,
    0xc06060a0u, 0x19818198u, 0x9e4f4fd1u, 0xa3dcdc7fu, 0x44222266u, 0x542a2a7eu, 0x3b9090abu, 0x0b888883u,
    0x8c4646cau, 0xc7eeee29u, 0x6bb8b8d3u, 0x2814143cu, 0xa7dede79u, 0xbc5e5ee2u, 0x160b0b1du, 0xaddbdb76u,
    0xdbe0e03bu, 0x64323256u, 0x743a3a4eu, 0x140a0a1eu, 0x924949dbu, 0x0c06060au, 0x4824246cu, 0xb85c5ce4u,
    0x9fc2c25du, 0xbdd3d36eu, 0x43acacefu, 0xc46262a6u, 0x399191a8u, 0x319595a4u, 0xd3e4e437u, 0xf279798bu,
    0xd5e7e732u, 0x8bc8c843u, 0x6e373759u, 0xda6d6db7u, 0x018d8d8cu, 0xb1d5d564u, 0x9c4e4ed2u, 0x49a9a9e0u,
    0xd86c6cb4u, 0xac5656fau, 0xf3f4f407u, 0xcfeaea25u, 0xca6565afu, 0xf47a7a8eu, 0x47aeaee9u, 0x10080818u,
    0x6fbabad5u, 0xf0787888u, 0x4a25256fu, 0x5c2e2e72u, 0x381c1c24u, 0x57a6a6f1u, 0x73b4b4c7u, 0x97c6c651u,
    0xcbe8e823u, 0xa1dddd7cu, 0xe874749cu, 0x3e1f1f21u, 0x964b4bddu, 0x61bdbddcu, 0x0d8b8b86u, 0x0f8a8a85u,
    0xe0707090u, 0x7c3e3e42u, 0x71b5b5c4u, 0xcc6666aau, 0x904848d8u, 0x06030305u, 0xf7f6f601u, 0x1c0e0e12u,
    0xc26161a3u, 0x6a35355fu, 0xae5757f9u, 0x69b9b9d0u, 0x17868691u, 0x99c1c158u, 0x3a1d1d27u, 0x279e9eb9u,
    0xd9e1e138u, 0xebf8f813u, 0x2b9898b3u, 0x22111133u, 0xd26969bbu, 0xa9d9d970u, 0x078e8e89u, 0x339494a7u,
    0x2d9b9bb6u, 0x3c1e1e22u, 0x15878792u, 0xc9e9e920u, 0x87cece49u, 0xaa5555ffu, 0x50282878u, 0xa5dfdf7au,
    0x038c8c8fu, 0x59a1a1f8u, 0x09898980u, 0x1a0d0d17u, 0x65bfbfdau, 0xd7e6e631u, 0x844242c6u, 0xd06868b8u,
    0x824141c3u, 0x299999b0u, 0x5a2d2d77u, 0x1e0f0f11u, 0x7bb0b0cbu, 0xa85454fcu, 0x6dbbbbd6u, 0x2c16163au,
};

/* Reduction constants of the 4-bit Shoup multiplication (as in mbed TLS gcm.c). */
__device__ const u64 GCM_LAST4[16] = {
    0x0000ull, 0x1c20ull, 0x3840ull, 0x2460ull, 0x7080ull, 0x6ca0ull, 0x48c0ull, 0x54e0ull,
    0xe100ull, 0xfd20ull, 0xd940ull, 0xc560ull, 0x9180ull, 0x8da0ull, 0xa9c0ull, 0xb5e0ull
};

__device__ __forceinline__ u32 gcm_ror8(u32 x) { return (x >> 8) | (x << 24); }
__device__ __forceinline__ u32 gcm_ror16(u32 x) { return (x >> 16) | (x << 16); }
__device__ __forceinline__ u32 gcm_ror24(u32 x) { return (x >> 24) | (x << 8); }

__device__ __forceinline__ u32 gcm_bswap32(u32 x)
{
#ifdef __CUDA_ARCH__
    return __byte_perm(x, 0, 0x0123);
#else
    return (x >> 24) | ((x >> 8) & 0xff00u) | ((x << 8) & 0xff0000u) | (x << 24);
#endif
}

__device__ __forceinline__ u32 gcm_sbox(const u32 *te, u32 x) { return (te[x & 0xffu] >> 8) & 0xffu; }

/* One AES block, state as four big-endian column words; rk holds 4 * (nr + 1) words. */
__device__ __forceinline__ void gcm_aes_block(const u32 *__restrict__ rk, u32 nr, const u32 *te,
                                              u32 &s0, u32 &s1, u32 &s2, u32 &s3)
{
    s0 ^= rk[0]; s1 ^= rk[1]; s2 ^= rk[2]; s3 ^= rk[3];
    for (u32 r = 1; r < nr; ++r) {
        const u32 *k = rk + 4 * r;
        u32 t0 = te[s0 >> 24] ^ gcm_ror8(te[(s1 >> 16) & 0xff]) ^ gcm_ror16(te[(s2 >> 8) & 0xff]) ^ gcm_ror24(te[s3 & 0xff]) ^ k[0];
        u32 t1 = te[s1 >> 24] ^ gcm_ror8(te[(s2 >> 16) & 0xff]) ^ gcm_ror16(te[(s3 >> 8) & 0xff]) ^ gcm_ror24(te[s0 & 0xff]) ^ k[1];
        u32 t2 = te[s2 >> 24] ^ gcm_ror8(te[(s3 >> 16) & 0xff]) ^ gcm_ror16(te[(s0 >> 8) & 0xff]) ^ gcm_ror24(te[s1 & 0xff]) ^ k[2];
        u32 t3 = te[s3 >> 24] ^ gcm_ror8(te[(s0 >> 16) & 0xff]) ^ gcm_ror16(te[(s1 >> 8) & 0xff]) ^ gcm_ror24(te[s2 & 0xff]) ^ k[3];
        s0 = t0; s1 = t1; s2 = t2; s3 = t3;
    }
    const u32 *k = rk + 4 * nr;
    u32 t0 = (gcm_sbox(te, s0 >> 24) << 24) ^ (gcm_sbox(te, s1 >> 16) << 16) ^ (gcm_sbox(te, s2 >> 8) << 8) ^ gcm_sbox(te, s3) ^ k[0];
    u32 t1 = (gcm_sbox(te, s1 >> 24) << 24) ^ (gcm_sbox(te, s2 >> 16) << 16) ^ (gcm_sbox(te, s3 >> 8) << 8) ^ gcm_sbox(te, s0) ^ k[1];
    u32 t2 = (gcm_sbox(te, s2 >> 24) << 24) ^ (gcm_sbox(te, s3 >> 16) << 16) ^ (gcm_sbox(te, s0 >> 8) << 8) ^ gcm_sbox(te, s1) ^ k[2];
    u32 t3 = (gcm_sbox(te, s3 >> 24) << 24) ^ (gcm_sbox(te, s0 >> 16) << 16) ^ (gcm_sbox(te, s1 >> 8) << 8) ^ gcm_sbox(te, s2) ^ k[3];
    s0 = t0; s1 = t1; s2 = t2; s3 = t3;
}

/* Z = X * P in GF(2^128) (GCM bit order), with the Shoup tables (hl, hh) of P. */
__device__ __forceinline__ void gcm_mul_table(const u64 *__restrict__ hl, const u64 *__restrict__ hh,
                                              const u64 *last4, u64 &xh, u64 &xl)
{
    u64 zh = hh[xl & 0xf], zl = hl[xl & 0xf];
GCM_UNROLL
    for (int i = 15; i >= 0; --i) {
        const u32 b = (u32)((i < 8 ? (xh >> (56 - 8 * i)) : (xl >> (120 - 8 * i))) & 0xff);
        u32 rem;
        if (i != 15) {
            rem = (u32)(zl & 0xf);
            zl = (zh << 60) | (zl >> 4);
            zh = (zh >> 4) ^ (last4[rem] << 48) ^ hh[b & 0xf];
            zl ^= hl[b & 0xf];
        }
        rem = (u32)(zl & 0xf);
        zl = (zh << 60) | (zl >> 4);
        zh = (zh >> 4) ^ (last4[rem] << 48) ^ hh[b >> 4];
        zl ^= hl[b >> 4];
    }
    xh = zh;
    xl = zl;
}

/* Z = X * Y in GF(2^128), bit by bit (SP 800-38D algorithm 1); only used at SA install. */
__device__ void gcm_mul_bitwise(u64 xh, u64 xl, u64 yh, u64 yl, u64 &zh, u64 &zl)
{
    u64 vh = yh, vl = yl;
    zh = 0;
    zl = 0;
    for (int i = 0; i < 128; ++i) {
        const u64 bit = i < 64 ? (xh >> (63 - i)) & 1 : (xl >> (127 - i)) & 1;
        zh ^= vh & (0 - bit);
        zl ^= vl & (0 - bit);
        const u64 lsb = vl & 1;
        vl = (vl >> 1) | (vh << 63);
        vh = (vh >> 1) ^ (0xe100000000000000ull & (0 - lsb));
    }
}

/* Shoup 4-bit table of P: entry n = sum over the bits of n of P * x^j, the nibble's top bit being
 * the coefficient of x^0 (GCM's reflected order), as mbed TLS gcm_gen_table builds it. */
__device__ void gcm_make_table(u64 vh, u64 vl, u64 *hl, u64 *hh)
{
    hl[0] = 0; hh[0] = 0;
    hl[8] = vl; hh[8] = vh;
    for (int i = 4; i > 0; i >>= 1) {
        const u64 lsb = vl & 1;
        vl = (vh << 63) | (vl >> 1);
        vh = (vh >> 1) ^ (0xe100000000000000ull & (0 - lsb));
        hl[i] = vl;
        hh[i] = vh;
    }
    for (int i = 2; i <= 8; i *= 2)
        for (int j = 1; j < i; ++j) {
            hl[i + j] = hl[i] ^ hl[j];
            hh[i + j] = hh[i] ^ hh[j];
        }
}

__device__ __forceinline__ u32 gcm_load_be32(const u8 *p)
{
    return ((u32)p[0] << 24) | ((u32)p[1] << 16) | ((u32)p[2] << 8) | (u32)p[3];
}

/* n (<= 16) bytes at p as a big-endian 128-bit block, zero padded. */
__device__ __forceinline__ void gcm_load_block(const u8 *p, u32 n, u64 &h, u64 &l)
{
    if (n >= 16 && (((u64)p) & 3) == 0) {
        const u32 *w = (const u32 *)p;
        h = ((u64)gcm_bswap32(w[0]) << 32) | gcm_bswap32(w[1]);
        l = ((u64)gcm_bswap32(w[2]) << 32) | gcm_bswap32(w[3]);
        return;
    }
    h = 0;
    l = 0;
    for (u32 k = 0; k < 16; ++k) {
        const u64 b = k < n ? (u64)p[k] : 0;
        if (k < 8)
            h |= b << (56 - 8 * k);
        else
            l |= b << (120 - 8 * k);
    }
}

__device__ __forceinline__ void gcm_store_block(u8 *p, u32 n, u64 h, u64 l)
{
    if (n >= 16 && (((u64)p) & 3) == 0) {
        u32 *w = (u32 *)p;
        w[0] = gcm_bswap32((u32)(h >> 32));
        w[1] = gcm_bswap32((u32)h);
        w[2] = gcm_bswap32((u32)(l >> 32));
        w[3] = gcm_bswap32((u32)l);
        return;
    }
    for (u32 k = 0; k < n && k < 16; ++k)
        p[k] = (u8)(k < 8 ? h >> (56 - 8 * k) : l >> (120 - 8 * k));
}

/* Installs n SAs: thread i expands keys[32 i ..] (key_bytes[i] = 16, 24 or 32) into slot
 * slots[i] of sa_table and computes H = AES_K(0^128) and the tables of H^1..H^32. */
extern "C" __global__ void gcm_install(const u8 *__restrict__ keys, const u32 *__restrict__ key_bytes,
                                       const u32 *__restrict__ slots, u8 *__restrict__ sa_table, int n)
{
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n)
        return;
    u8 *sa = sa_table + (u64)slots[i] * GCM_SA_BYTES;
    u32 *rk = (u32 *)(sa + GCM_SA_RK);
    const u8 *key = keys + 32 * (u64)i;
    const u32 nk = key_bytes[i] / 4;
    for (int w = 0; w < 64; ++w)
        rk[w] = 0;                       /* also the round count and the padding after it */
    if (nk != 4 && nk != 6 && nk != 8)
        return;                          /* the host checks key sizes; nr = 0 marks a bad slot */
    const u32 nr = nk + 6;
    const u32 words = 4 * (nr + 1);
    for (u32 w = 0; w < nk; ++w)
        rk[w] = gcm_load_be32(key + 4 * w);
    u32 rcon = 1;
    for (u32 w = nk; w < words; ++w) {
        u32 t = rk[w - 1];
        if (w % nk == 0) {
            t = (t << 8) | (t >> 24);    /* RotWord, then SubWord, then Rcon */
            t = (gcm_sbox(GCM_TE0, t >> 24) << 24) | (gcm_sbox(GCM_TE0, t >> 16) << 16) |
                (gcm_sbox(GCM_TE0, t >> 8) << 8) | gcm_sbox(GCM_TE0, t);
            t ^= rcon << 24;
            rcon = (rcon << 1) ^ ((rcon >> 7) * 0x11bu);
        } else if (nk > 6 && w % nk == 4) {
            t = (gcm_sbox(GCM_TE0, t >> 24) << 24) | (gcm_sbox(GCM_TE0, t >> 16) << 16) |
                (gcm_sbox(GCM_TE0, t >> 8) << 8) | gcm_sbox(GCM_TE0, t);
        }
        rk[w] = rk[w - nk] ^ t;
    }
    *(u32 *)(sa + GCM_SA_NR) = nr;
    u32 s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    gcm_aes_block(rk, nr, GCM_TE0, s0, s1, s2, s3);
    const u64 hh = ((u64)s0 << 32) | s1, hl = ((u64)s2 << 32) | s3;
    u64 *tl = (u64 *)(sa + GCM_SA_HL), *th = (u64 *)(sa + GCM_SA_HH);
    u64 ph = hh, pl = hl;                /* H^p */
    for (int p = 1; p <= GCM_MAX_LANES; ++p) {
        gcm_make_table(ph, pl, tl + 16 * (p - 1), th + 16 * (p - 1));
        u64 nh, nl;
        gcm_mul_bitwise(ph, pl, hh, hl, nh, nl);
        ph = nh;
        pl = nl;
    }
}

/* Seals (decrypt == 0) or opens (decrypt != 0) n_packets packets; see the header comment. */
extern "C" __global__ void __launch_bounds__(GCM_MAX_BLOCK_THREADS)
gcm_batch(u8 *__restrict__ data, const u64 *__restrict__ offsets, const u32 *__restrict__ lengths,
          const u8 *__restrict__ nonces, const u8 *__restrict__ aad, const u64 *__restrict__ aad_offsets,
          const u32 *__restrict__ aad_lengths, const u32 *__restrict__ sa_slots,
          const u8 *__restrict__ sa_table, u8 *__restrict__ verdicts,
          int n_packets, int lanes_log2, int decrypt)
{
    __shared__ u32 te[256];
    __shared__ u64 last4[16];
    __shared__ u64 red_h[GCM_MAX_BLOCK_THREADS];
    __shared__ u64 red_l[GCM_MAX_BLOCK_THREADS];

    const u32 tid = threadIdx.x;
    for (u32 i = tid; i < 256; i += blockDim.x)
        te[i] = GCM_TE0[i];
    for (u32 i = tid; i < 16; i += blockDim.x)
        last4[i] = GCM_LAST4[i];
    __syncthreads();

    const u32 lanes = 1u << lanes_log2;
    const u32 lane = tid & (lanes - 1);
    const u64 pkt = ((u64)blockIdx.x * blockDim.x + tid) >> lanes_log2;
    const bool in_batch = pkt < (u64)n_packets;
    const u32 len = in_batch ? lengths[pkt] : GCM_SKIP;
    const bool active = len != GCM_SKIP;

    /* Every thread reaches every barrier below: no early return. */
    u64 acc_h = 0, acc_l = 0;
    const u32 *rk = 0;
    u32 nr = 0, n0 = 0, n1 = 0, n2 = 0;
    u8 *body = data;
    if (active) {
        const u8 *sa = sa_table + (u64)sa_slots[pkt] * GCM_SA_BYTES;
        rk = (const u32 *)(sa + GCM_SA_RK);
        nr = *(const u32 *)(sa + GCM_SA_NR);
        const u8 *nonce = nonces + 12 * pkt;
        n0 = gcm_load_be32(nonce);
        n1 = gcm_load_be32(nonce + 4);
        n2 = gcm_load_be32(nonce + 8);
        body = data + offsets[pkt];
        const u8 *ad = aad + aad_offsets[pkt];
        const u32 alen = aad_lengths[pkt];
        const u32 a_blocks = (alen + 15) >> 4;
        const u32 c_blocks = (len + 15) >> 4;
        const u32 m = a_blocks + c_blocks + 1;               /* GHASH blocks, length block last */
        const u64 *hl = (const u64 *)(sa + GCM_SA_HL);
        const u64 *hh = (const u64 *)(sa + GCM_SA_HH);
        const u64 *step_l = hl + 16 * (lanes - 1), *step_h = hh + 16 * (lanes - 1);   /* H^T */
        if (lane < m) {
            /* r runs over lane, lane + T, ... (< m) from the top: block index i = m - r rises. */
            u32 r = lane + (((m - 1 - lane) >> lanes_log2) << lanes_log2);
            bool first = true;
            for (;;) {
                const u32 i = m - r;                            /* 1-based */
                u64 xh, xl;
                if (i <= a_blocks) {
                    const u32 at = 16 * (i - 1);
                    gcm_load_block(ad + at, alen - at < 16 ? alen - at : 16, xh, xl);
                } else if (i < m) {
                    const u32 j = i - a_blocks - 1;             /* payload block, counter j + 2 */
                    const u32 n = len - 16 * j < 16 ? len - 16 * j : 16;
                    u8 *p = body + 16 * (u64)j;
                    u64 ih, il;
                    gcm_load_block(p, n, ih, il);
                    u32 k0 = n0, k1 = n1, k2 = n2, k3 = j + 2;
                    gcm_aes_block(rk, nr, te, k0, k1, k2, k3);
                    u64 oh = ih ^ (((u64)k0 << 32) | k1);
                    u64 ol = il ^ (((u64)k2 << 32) | k3);
                    gcm_store_block(p, n, oh, ol);
                    if (decrypt) {
                        xh = ih;                                /* GHASH runs over the ciphertext */
                        xl = il;
                    } else {                                    /* the ciphertext, zero padded */
                        const u32 pad_bits = 8 * (16 - n);
                        const u64 mask_h = pad_bits >= 64 ? (pad_bits >= 128 ? 0 : ~0ull << (pad_bits - 64)) : ~0ull;
                        const u64 mask_l = pad_bits >= 64 ? 0 : (pad_bits == 0 ? ~0ull : ~0ull << pad_bits);
                        xh = oh & mask_h;
                        xl = ol & mask_l;
                    }
                } else {
                    xh = (u64)alen * 8;                         /* len(A) || len(C) in bits */
                    xl = (u64)len * 8;
                }
                if (first) {
                    acc_h = xh;
                    acc_l = xl;
                    first = false;
                } else {
                    gcm_mul_table(step_l, step_h, last4, acc_h, acc_l);
                    acc_h ^= xh;
                    acc_l ^= xl;
                }
                if (r == lane)
                    break;
                r -= lanes;
            }
            gcm_mul_table(hl + 16 * lane, hh + 16 * lane, last4, acc_h, acc_l);   /* * H^(lane+1) */
        }
    }

    red_h[tid] = acc_h;
    red_l[tid] = acc_l;
    __syncthreads();
    for (u32 s = lanes >> 1; s > 0; s >>= 1) {
        if (lane < s) {
            red_h[tid] ^= red_h[tid + s];
            red_l[tid] ^= red_l[tid + s];
        }
        __syncthreads();
    }

    if (in_batch && lane == 0) {
        if (!active) {
            verdicts[pkt] = GCM_VERDICT_SKIPPED;
        } else {
            u32 k0 = n0, k1 = n1, k2 = n2, k3 = 1;              /* E_K(J0), J0 = nonce || 1 */
            gcm_aes_block(rk, nr, te, k0, k1, k2, k3);
            const u64 th = red_h[tid] ^ (((u64)k0 << 32) | k1);
            const u64 tl = red_l[tid] ^ (((u64)k2 << 32) | k3);
            u8 *tag = body + len;
            if (decrypt) {
                u64 gh, gl;
                gcm_load_block(tag, 16, gh, gl);
                const u64 diff = (th ^ gh) | (tl ^ gl);          /* no data-dependent branch */
                const u32 bad = (u32)((diff | (0 - diff)) >> 63);
                verdicts[pkt] = (u8)(GCM_VERDICT_OK + bad);     /* OK = 1, BAD_TAG = 2 */
            } else {
                gcm_store_block(tag, 16, th, tl);
                verdicts[pkt] = GCM_VERDICT_OK;
            }
        }
    }
}
