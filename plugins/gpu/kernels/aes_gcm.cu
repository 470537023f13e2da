/* AES-GCM (NIST SP 800-38D) and whole ESP packets (RFC 4303, RFC 4106, RFC 4543) over a batch of
 * packets of one or more SAs, in one launch, in constant time with respect to keys and data.
 *
 * Owns: the device side of the `gpu` backend:
 *   gcm_install   key schedule (compressed bitsliced round keys) and the powers H^1..H^MAX of each SA;
 *   gcm_batch     AES-GCM seal/open of staged payloads (the AEAD interface: self-tests, offload);
 *   esp_seal      a whole outbound ESP packet per inner packet: outer IPv4/IPv6 header (tunnel) or
 *                 the inner header rewritten (transport), SPI, sequence number, IV, payload,
 *                 padding, pad length, next header, ICV;
 *   esp_open      ICV, padding and trailer of inbound ESP packets, one verdict per packet.
 * Must not: keep protocol state (sequence numbers, replay windows, lifetimes and counters are the
 * host core's), or use anything a CPU build cannot stand in for: no headers, no warp intrinsics,
 * no atomics, no __constant__.  The same file is compiled by NVRTC (CuPy RawModule), by
 * `nvcc -ptx -arch=sm_90` in the tests, and as C++20 with host_shim.h for the CPU build.
 *
 * Constant time: AES is bitsliced (the Boyar-Peralta S-box circuit and the two-block layout of
 * BearSSL's aes_ct, MIT licence, Thomas Pornin), so no memory address depends on a key or on
 * data; GHASH multiplies with integer multiplications whose operands have holes of three zero
 * bits (carries never reach a kept bit), accumulates 256-bit products without reducing
 * (deferred reduction, once per lane), and reads the power of H a block needs at an index given
 * by the block's position only.  Tags are compared without a data-dependent branch; the ESP
 * padding check reads a public number of bytes.  Secret values come only from `sa_keys`:
 * tests/crypto/test_gpu_ct.py follows them through the PTX and fails on any load, store or
 * branch whose address or predicate depends on them.  Round counts are template constants
 * (rounds unrolled, round keys in registers); the SA's round count comes from the public
 * `sa_nr` table, never from key material.
 *
 * Threads: 2^lanes_log2 consecutive threads ("lanes", 1..32) share a packet.  A lane takes every
 * T-th pair of counter blocks (one bitsliced AES call computes two blocks; the pair of lane 0
 * starts with J0, whose keystream masks the tag), and every T-th AAD block; block i of the n
 * GHASH blocks is multiplied by H^(n-i+1), so the lanes' sums simply add up: one xor reduction
 * in shared memory at the end.  Payload blocks are read and written with 128-bit loads where
 * they are 16-byte aligned (the host lays batches out so that they are).
 */

typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long long u64;

#ifdef __CUDACC__
#define GCM_UNROLL _Pragma("unroll")
#else
#define GCM_UNROLL
#endif

#define GCM_MAX_LANES 32
#define GCM_MAX_BLOCK_THREADS 256
/* Blocks per SM the compiler must make room for (registers per thread <= 64K / (256 x this)):
 * the device check compiles 1 and 2 and keeps the faster. */
#ifndef GCM_MIN_BLOCKS
#define GCM_MIN_BLOCKS 1
#endif
#define GCM_SKIP 0xffffffffu
#define GCM_VERDICT_OK 1
#define GCM_VERDICT_BAD_TAG 2
#define GCM_VERDICT_SKIPPED 3
#define GCM_VERDICT_BAD_PADDING 4

/* One slot of sa_keys, in bytes: the compressed bitsliced round keys (at most 60 words), then the
 * powers H^1..H^GCM_MAX_GHASH_BLOCKS, 16 bytes each, in the bit-reflected representation below. */
#define GCM_MAX_GHASH_BLOCKS 4112
#define GCM_SA_RK 0
#define GCM_SA_POWERS 256
#define GCM_SA_BYTES (GCM_SA_POWERS + 16 * GCM_MAX_GHASH_BLOCKS)

/* One slot of sa_params (public), in bytes. */
#define ESP_SA_PARAM_BYTES 64
#define ESP_P_SPI 0          /* 4 bytes, as on the wire */
#define ESP_P_SALT 4         /* 4 bytes */
#define ESP_P_FLAGS 8        /* u32 */
#define ESP_P_TTL 12         /* u32 */
#define ESP_P_BLOCK 16       /* u32: payload alignment (padding) */
#define ESP_P_SRC 20         /* 4 or 16 bytes */
#define ESP_P_DST 36
#define ESP_F_TUNNEL 1u
#define ESP_F_ESN 2u
#define ESP_F_GMAC 4u
#define ESP_F_OUTER_V6 8u
#define ESP_F_DF_SET 16u
#define ESP_F_DF_CLEAR 32u

/* ----------------------------------------------------------------------------------------------
 * Bit tools
 * -------------------------------------------------------------------------------------------- */
__device__ __forceinline__ u32 gcm_bswap32(u32 x)
{
#ifdef __CUDA_ARCH__
    return __byte_perm(x, 0, 0x0123);
#else
    return (x >> 24) | ((x >> 8) & 0xff00u) | ((x << 8) & 0xff0000u) | (x << 24);
#endif
}

/* Reverses the bits of each byte: a little-endian word of a GCM block <-> its reflected bits. */
__device__ __forceinline__ u32 gcm_rbytes(u32 x)
{
#ifdef __CUDA_ARCH__
    return __brev(__byte_perm(x, 0, 0x0123));
#else
    x = ((x >> 1) & 0x55555555u) | ((x & 0x55555555u) << 1);
    x = ((x >> 2) & 0x33333333u) | ((x & 0x33333333u) << 2);
    return ((x >> 4) & 0x0f0f0f0fu) | ((x & 0x0f0f0f0fu) << 4);
#endif
}

/* (hi:lo) >> (8 * a), low word; a in 0..3. */
__device__ __forceinline__ u32 gcm_funnel(u32 lo, u32 hi, u32 a)
{
#ifdef __CUDA_ARCH__
    return __funnelshift_r(lo, hi, 8 * a);
#else
    return a ? (lo >> (8 * a)) | (hi << (32 - 8 * a)) : lo;
#endif
}

__device__ __forceinline__ u32 gcm_le32(const u8 *p)
{
    return (u32)p[0] | ((u32)p[1] << 8) | ((u32)p[2] << 16) | ((u32)p[3] << 24);
}

/* n (<= 16) bytes at p as four little-endian words, zero padded: 128-bit loads when aligned. */
__device__ __forceinline__ void gcm_load16(const u8 *p, u32 n, u32 w[4])
{
    if (n >= 16 && (((u64)p) & 15) == 0) {
        const uint4 v = *(const uint4 *)p;
        w[0] = v.x; w[1] = v.y; w[2] = v.z; w[3] = v.w;
        return;
    }
GCM_UNROLL
    for (int k = 0; k < 4; ++k)
        w[k] = 0;
GCM_UNROLL
    for (int t = 0; t < 16; ++t)          /* unrolled: w stays in registers */
        if ((u32)t < n)
            w[t >> 2] |= (u32)p[t] << (8 * (t & 3));
}

__device__ __forceinline__ void gcm_store16(u8 *p, u32 n, const u32 w[4])
{
    if (n >= 16 && (((u64)p) & 15) == 0) {
        uint4 v;
        v.x = w[0]; v.y = w[1]; v.z = w[2]; v.w = w[3];
        *(uint4 *)p = v;
        return;
    }
GCM_UNROLL
    for (int t = 0; t < 16; ++t)
        if ((u32)t < n)
            p[t] = (u8)(w[t >> 2] >> (8 * (t & 3)));
}

/* 16 bytes from any address, as aligned 32-bit loads and funnel shifts (reads up to 3 bytes past
 * the end: the host leaves slack after each buffer). */
__device__ __forceinline__ void gcm_load16_any(const u8 *p, u32 w[4])
{
    const u32 a = (u32)((u64)p & 3);
    if (a == 0 && (((u64)p) & 15) == 0) {
        gcm_load16(p, 16, w);
        return;
    }
    const u32 *b = (const u32 *)(p - a);
    u32 x0 = b[0], x1 = b[1], x2 = b[2], x3 = b[3], x4 = a ? b[4] : 0;
    w[0] = gcm_funnel(x0, x1, a);
    w[1] = gcm_funnel(x1, x2, a);
    w[2] = gcm_funnel(x2, x3, a);
    w[3] = gcm_funnel(x3, x4, a);
}

/* ----------------------------------------------------------------------------------------------
 * Bitsliced AES, two blocks at a time (layout and S-box circuit of BearSSL aes_ct)
 * -------------------------------------------------------------------------------------------- */
__device__ __forceinline__ void aes_sbox(u32 *q)
{
    u32 x0, x1, x2, x3, x4, x5, x6, x7;
    u32 y1, y2, y3, y4, y5, y6, y7, y8, y9, y10, y11, y12, y13, y14, y15, y16, y17, y18, y19, y20, y21;
    u32 z0, z1, z2, z3, z4, z5, z6, z7, z8, z9, z10, z11, z12, z13, z14, z15, z16, z17;
    u32 t0, t1, t2, t3, t4, t5, t6, t7, t8, t9, t10, t11, t12, t13, t14, t15, t16, t17, t18, t19;
    u32 t20, t21, t22, t23, t24, t25, t26, t27, t28, t29, t30, t31, t32, t33, t34, t35, t36, t37;
    u32 t38, t39, t40, t41, t42, t43, t44, t45, t46, t47, t48, t49, t50, t51, t52, t53, t54, t55;
    u32 t56, t57, t58, t59, t60, t61, t62, t63, t64, t65, t66, t67;
    u32 s0, s1, s2, s3, s4, s5, s6, s7;
    x0 = q[7]; x1 = q[6]; x2 = q[5]; x3 = q[4]; x4 = q[3]; x5 = q[2]; x6 = q[1]; x7 = q[0];
    y14 = x3 ^ x5; y13 = x0 ^ x6; y9 = x0 ^ x3; y8 = x0 ^ x5; t0 = x1 ^ x2; y1 = t0 ^ x7;
    y4 = y1 ^ x3; y12 = y13 ^ y14; y2 = y1 ^ x0; y5 = y1 ^ x6; y3 = y5 ^ y8; t1 = x4 ^ y12;
    y15 = t1 ^ x5; y20 = t1 ^ x1; y6 = y15 ^ x7; y10 = y15 ^ t0; y11 = y20 ^ y9; y7 = x7 ^ y11;
    y17 = y10 ^ y11; y19 = y10 ^ y8; y16 = t0 ^ y11; y21 = y13 ^ y16; y18 = x0 ^ y16;
    t2 = y12 & y15; t3 = y3 & y6; t4 = t3 ^ t2; t5 = y4 & x7; t6 = t5 ^ t2; t7 = y13 & y16;
    t8 = y5 & y1; t9 = t8 ^ t7; t10 = y2 & y7; t11 = t10 ^ t7; t12 = y9 & y11; t13 = y14 & y17;
    t14 = t13 ^ t12; t15 = y8 & y10; t16 = t15 ^ t12; t17 = t4 ^ t14; t18 = t6 ^ t16;
    t19 = t9 ^ t14; t20 = t11 ^ t16; t21 = t17 ^ y20; t22 = t18 ^ y19; t23 = t19 ^ y21;
    t24 = t20 ^ y18; t25 = t21 ^ t22; t26 = t21 & t23; t27 = t24 ^ t26; t28 = t25 & t27;
    t29 = t28 ^ t22; t30 = t23 ^ t24; t31 = t22 ^ t26; t32 = t31 & t30; t33 = t32 ^ t24;
    t34 = t23 ^ t33; t35 = t27 ^ t33; t36 = t24 & t35; t37 = t36 ^ t34; t38 = t27 ^ t36;
    t39 = t29 & t38; t40 = t25 ^ t39; t41 = t40 ^ t37; t42 = t29 ^ t33; t43 = t29 ^ t40;
    t44 = t33 ^ t37; t45 = t42 ^ t41;
    z0 = t44 & y15; z1 = t37 & y6; z2 = t33 & x7; z3 = t43 & y16; z4 = t40 & y1; z5 = t29 & y7;
    z6 = t42 & y11; z7 = t45 & y17; z8 = t41 & y10; z9 = t44 & y12; z10 = t37 & y3;
    z11 = t33 & y4; z12 = t43 & y13; z13 = t40 & y5; z14 = t29 & y2; z15 = t42 & y9;
    z16 = t45 & y14; z17 = t41 & y8;
    t46 = z15 ^ z16; t47 = z10 ^ z11; t48 = z5 ^ z13; t49 = z9 ^ z10; t50 = z2 ^ z12;
    t51 = z2 ^ z5; t52 = z7 ^ z8; t53 = z0 ^ z3; t54 = z6 ^ z7; t55 = z16 ^ z17; t56 = z12 ^ t48;
    t57 = t50 ^ t53; t58 = z4 ^ t46; t59 = z3 ^ t54; t60 = t46 ^ t57; t61 = z14 ^ t57;
    t62 = t52 ^ t58; t63 = t49 ^ t58; t64 = z4 ^ t59; t65 = t61 ^ t62; t66 = z1 ^ t63;
    s0 = t59 ^ t63; s6 = t56 ^ ~t62; s7 = t48 ^ ~t60; t67 = t64 ^ t65; s3 = t53 ^ t66;
    s4 = t51 ^ t66; s5 = t47 ^ t65; s1 = t64 ^ ~s3; s2 = t55 ^ ~t67;
    q[7] = s0; q[6] = s1; q[5] = s2; q[4] = s3; q[3] = s4; q[2] = s5; q[1] = s6; q[0] = s7;
}

#define AES_SWAPN(cl, ch, s, x, y) do { u32 a_ = (x), b_ = (y); \
    (x) = (a_ & (u32)(cl)) | ((b_ & (u32)(cl)) << (s)); \
    (y) = ((a_ & (u32)(ch)) >> (s)) | (b_ & (u32)(ch)); } while (0)

__device__ __forceinline__ void aes_ortho(u32 *q)
{
    AES_SWAPN(0x55555555u, 0xAAAAAAAAu, 1, q[0], q[1]);
    AES_SWAPN(0x55555555u, 0xAAAAAAAAu, 1, q[2], q[3]);
    AES_SWAPN(0x55555555u, 0xAAAAAAAAu, 1, q[4], q[5]);
    AES_SWAPN(0x55555555u, 0xAAAAAAAAu, 1, q[6], q[7]);
    AES_SWAPN(0x33333333u, 0xCCCCCCCCu, 2, q[0], q[2]);
    AES_SWAPN(0x33333333u, 0xCCCCCCCCu, 2, q[1], q[3]);
    AES_SWAPN(0x33333333u, 0xCCCCCCCCu, 2, q[4], q[6]);
    AES_SWAPN(0x33333333u, 0xCCCCCCCCu, 2, q[5], q[7]);
    AES_SWAPN(0x0F0F0F0Fu, 0xF0F0F0F0u, 4, q[0], q[4]);
    AES_SWAPN(0x0F0F0F0Fu, 0xF0F0F0F0u, 4, q[1], q[5]);
    AES_SWAPN(0x0F0F0F0Fu, 0xF0F0F0F0u, 4, q[2], q[6]);
    AES_SWAPN(0x0F0F0F0Fu, 0xF0F0F0F0u, 4, q[3], q[7]);
}

__device__ __forceinline__ void aes_shift_rows(u32 *q)
{
GCM_UNROLL
    for (int i = 0; i < 8; ++i) {
        const u32 x = q[i];
        q[i] = (x & 0x000000FFu) | ((x & 0x0000FC00u) >> 2) | ((x & 0x00000300u) << 6)
             | ((x & 0x00F00000u) >> 4) | ((x & 0x000F0000u) << 4)
             | ((x & 0xC0000000u) >> 6) | ((x & 0x3F000000u) << 2);
    }
}

__device__ __forceinline__ u32 aes_rotr16(u32 x) { return (x << 16) | (x >> 16); }

__device__ __forceinline__ void aes_mix_columns(u32 *q)
{
    const u32 q0 = q[0], q1 = q[1], q2 = q[2], q3 = q[3], q4 = q[4], q5 = q[5], q6 = q[6], q7 = q[7];
    const u32 r0 = (q0 >> 8) | (q0 << 24), r1 = (q1 >> 8) | (q1 << 24), r2 = (q2 >> 8) | (q2 << 24);
    const u32 r3 = (q3 >> 8) | (q3 << 24), r4 = (q4 >> 8) | (q4 << 24), r5 = (q5 >> 8) | (q5 << 24);
    const u32 r6 = (q6 >> 8) | (q6 << 24), r7 = (q7 >> 8) | (q7 << 24);
    q[0] = q7 ^ r7 ^ r0 ^ aes_rotr16(q0 ^ r0);
    q[1] = q0 ^ r0 ^ q7 ^ r7 ^ r1 ^ aes_rotr16(q1 ^ r1);
    q[2] = q1 ^ r1 ^ r2 ^ aes_rotr16(q2 ^ r2);
    q[3] = q2 ^ r2 ^ q7 ^ r7 ^ r3 ^ aes_rotr16(q3 ^ r3);
    q[4] = q3 ^ r3 ^ q7 ^ r7 ^ r4 ^ aes_rotr16(q4 ^ r4);
    q[5] = q4 ^ r4 ^ r5 ^ aes_rotr16(q5 ^ r5);
    q[6] = q5 ^ r5 ^ r6 ^ aes_rotr16(q6 ^ r6);
    q[7] = q6 ^ r6 ^ r7 ^ aes_rotr16(q7 ^ r7);
}

/* Round key r from its four compressed words (BearSSL br_aes_ct_skey_expand, one round). */
__device__ __forceinline__ void aes_add_round_key(u32 *q, const u32 *ck)
{
GCM_UNROLL
    for (int u = 0; u < 4; ++u) {
        const u32 x = ck[u] & 0x55555555u, y = ck[u] & 0xAAAAAAAAu;
        q[2 * u] ^= x | (x << 1);
        q[2 * u + 1] ^= y | (y >> 1);
    }
}

/* Encrypts two blocks: q[0,2,4,6] (block A) and q[1,3,5,7] (block B) as little-endian words in,
 * keystream out.  ck: the 4 (NR + 1) compressed round-key words, held in registers. */
/* Rounds R..NR-1, unrolled by the template itself (a loop nvcc may keep rolled would index the
 * round keys with a counter and move them to local memory). */
template <int R, int NR>
struct aes_rounds {
    static __device__ __forceinline__ void run(const u32 *ck, u32 *q)
    {
        aes_sbox(q);
        aes_shift_rows(q);
        aes_mix_columns(q);
        aes_add_round_key(q, ck + 4 * R);
        aes_rounds<R + 1, NR>::run(ck, q);
    }
};

template <int NR>
struct aes_rounds<NR, NR> {
    static __device__ __forceinline__ void run(const u32 *, u32 *) {}
};

template <int NR>
__device__ __forceinline__ void aes_encrypt2(const u32 *ck, u32 *q)
{
    aes_ortho(q);
    aes_add_round_key(q, ck);
    aes_rounds<1, NR>::run(ck, q);
    aes_sbox(q);
    aes_shift_rows(q);
    aes_add_round_key(q, ck + 4 * NR);
    aes_ortho(q);
}

__device__ __forceinline__ u32 aes_sub_word(u32 x)
{
    u32 q[8];
GCM_UNROLL
    for (int i = 0; i < 8; ++i)
        q[i] = x;
    aes_ortho(q);
    aes_sbox(q);
    aes_ortho(q);
    return q[0];
}

/* ----------------------------------------------------------------------------------------------
 * GHASH: elements are (lo, hi) 64-bit halves of the 128-bit value whose bit i is the coefficient
 * of x^i (GCM's bit order reflected), so that carry-less products need no shifts by one.
 * -------------------------------------------------------------------------------------------- */
struct gf128 {
    u64 lo, hi;
};

/* Carry-less 32 x 32 -> 64: four interleaved classes of bits, each multiplied with integer
 * multiplications; at most 8 set bits per class keep every sum under 16, so carries stay out
 * of the bits of the class kept. */
__device__ __forceinline__ u64 gcm_mulwide(u32 a, u32 b)
{
#ifdef __CUDA_ARCH__
    u64 r;            /* one IMAD.WIDE: nvcc otherwise widens first and multiplies in 64 bits */
    asm("mul.wide.u32 %0, %1, %2;" : "=l"(r) : "r"(a), "r"(b));
    return r;
#else
    return (u64)a * b;
#endif
}

__device__ __forceinline__ u64 gcm_clmul32(u32 x, u32 y)
{
    const u32 x0 = x & 0x11111111u, x1 = x & 0x22222222u, x2 = x & 0x44444444u, x3 = x & 0x88888888u;
    const u32 y0 = y & 0x11111111u, y1 = y & 0x22222222u, y2 = y & 0x44444444u, y3 = y & 0x88888888u;
    const u64 z0 = gcm_mulwide(x0, y0) ^ gcm_mulwide(x1, y3) ^ gcm_mulwide(x2, y2) ^ gcm_mulwide(x3, y1);
    const u64 z1 = gcm_mulwide(x0, y1) ^ gcm_mulwide(x1, y0) ^ gcm_mulwide(x2, y3) ^ gcm_mulwide(x3, y2);
    const u64 z2 = gcm_mulwide(x0, y2) ^ gcm_mulwide(x1, y1) ^ gcm_mulwide(x2, y0) ^ gcm_mulwide(x3, y3);
    const u64 z3 = gcm_mulwide(x0, y3) ^ gcm_mulwide(x1, y2) ^ gcm_mulwide(x2, y1) ^ gcm_mulwide(x3, y0);
    return (z0 & 0x1111111111111111ull) | (z1 & 0x2222222222222222ull)
         | (z2 & 0x4444444444444444ull) | (z3 & 0x8888888888888888ull);
}

/* Carry-less 64 x 64 -> 128 (Karatsuba over 32-bit halves). */
__device__ __forceinline__ void gcm_clmul64(u64 a, u64 b, u64 &lo, u64 &hi)
{
    const u32 a0 = (u32)a, a1 = (u32)(a >> 32), b0 = (u32)b, b1 = (u32)(b >> 32);
    const u64 l = gcm_clmul32(a0, b0), h = gcm_clmul32(a1, b1);
    const u64 m = gcm_clmul32(a0 ^ a1, b0 ^ b1) ^ l ^ h;
    lo = l ^ (m << 32);
    hi = h ^ (m >> 32);
}

/* z (256 bits, unreduced) ^= a * b (Karatsuba over 64-bit halves). */
__device__ __forceinline__ void gcm_mul_acc(gf128 a, gf128 b, u64 z[4])
{
    u64 l0, l1, h0, h1, m0, m1;
    gcm_clmul64(a.lo, b.lo, l0, l1);
    gcm_clmul64(a.hi, b.hi, h0, h1);
    gcm_clmul64(a.lo ^ a.hi, b.lo ^ b.hi, m0, m1);
    m0 ^= l0 ^ h0;
    m1 ^= l1 ^ h1;
    z[0] ^= l0;
    z[1] ^= l1 ^ m0;
    z[2] ^= h0 ^ m1;
    z[3] ^= h1;
}

/* z mod x^128 + x^7 + x^2 + x + 1. */
__device__ __forceinline__ gf128 gcm_reduce(const u64 z[4])
{
    const u64 h0 = z[2], h1 = z[3];
    u64 lo = h0 ^ (h0 << 1) ^ (h0 << 2) ^ (h0 << 7);
    const u64 hi = h1 ^ ((h1 << 1) | (h0 >> 63)) ^ ((h1 << 2) | (h0 >> 62)) ^ ((h1 << 7) | (h0 >> 57));
    const u64 o = (h1 >> 63) ^ (h1 >> 62) ^ (h1 >> 57);
    lo ^= o ^ (o << 1) ^ (o << 2) ^ (o << 7);
    gf128 r;
    r.lo = z[0] ^ lo;
    r.hi = z[1] ^ hi;
    return r;
}

__device__ __forceinline__ gf128 gcm_mul(gf128 a, gf128 b)
{
    u64 z[4] = {0, 0, 0, 0};
    gcm_mul_acc(a, b, z);
    return gcm_reduce(z);
}

/* A block's four little-endian words -> field element, and back. */
__device__ __forceinline__ gf128 gcm_elem(const u32 w[4])
{
    gf128 e;
    e.lo = ((u64)gcm_rbytes(w[1]) << 32) | gcm_rbytes(w[0]);
    e.hi = ((u64)gcm_rbytes(w[3]) << 32) | gcm_rbytes(w[2]);
    return e;
}

__device__ __forceinline__ void gcm_words(gf128 e, u32 w[4])
{
    w[0] = gcm_rbytes((u32)e.lo);
    w[1] = gcm_rbytes((u32)(e.lo >> 32));
    w[2] = gcm_rbytes((u32)e.hi);
    w[3] = gcm_rbytes((u32)(e.hi >> 32));
}

__device__ __forceinline__ gf128 gcm_power(const u8 *sa, u32 index)   /* H^(index + 1) */
{
    const uint4 v = ((const uint4 *)(sa + GCM_SA_POWERS))[index];
    gf128 e;
    e.lo = ((u64)v.y << 32) | v.x;
    e.hi = ((u64)v.w << 32) | v.z;
    return e;
}

/* ----------------------------------------------------------------------------------------------
 * SA install
 * -------------------------------------------------------------------------------------------- */
/* Installs n SAs: thread i expands keys[32 i ..] (key_bytes[i] = 16, 24 or 32) into slot slots[i]
 * of sa_keys, writes the round count to sa_nr (0: bad key size) and the powers of H. */
extern "C" __global__ void gcm_install(const u8 *__restrict__ keys, const u32 *__restrict__ key_bytes,
                                       const u32 *__restrict__ slots, u8 *__restrict__ sa_keys,
                                       u32 *__restrict__ sa_nr, int n)
{
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n)
        return;
    u8 *sa = sa_keys + (u64)slots[i] * GCM_SA_BYTES;
    u32 *ck = (u32 *)(sa + GCM_SA_RK);
    const u8 *key = keys + 32 * (u64)i;
    const u32 nk = key_bytes[i] / 4;
    for (int w = 0; w < 64; ++w)
        ck[w] = 0;
    sa_nr[slots[i]] = 0;
    if (nk != 4 && nk != 6 && nk != 8)
        return;
    const u32 nr = nk + 6;
    const u32 words = 4 * (nr + 1);
    u32 skey[120];
    u32 tmp = 0;
    for (u32 w = 0; w < nk; ++w) {
        tmp = gcm_le32(key + 4 * w);
        skey[2 * w] = tmp;
        skey[2 * w + 1] = tmp;
    }
    u32 rcon = 1, j = 0;
    for (u32 w = nk; w < words; ++w) {
        if (j == 0) {
            tmp = (tmp << 24) | (tmp >> 8);
            tmp = aes_sub_word(tmp) ^ rcon;
            rcon = (rcon << 1) ^ ((rcon >> 7) * 0x11bu);
        } else if (nk > 6 && j == 4) {
            tmp = aes_sub_word(tmp);
        }
        tmp ^= skey[2 * (w - nk)];
        skey[2 * w] = tmp;
        skey[2 * w + 1] = tmp;
        if (++j == nk)
            j = 0;
    }
    for (u32 w = 0; w < words; w += 4)
        aes_ortho(skey + 2 * w);
    for (u32 w = 0; w < words; ++w)
        ck[w] = (skey[2 * w] & 0x55555555u) | (skey[2 * w + 1] & 0xAAAAAAAAu);
    for (u32 w = 0; w < 120; ++w)
        skey[w] = 0;

    u32 q[8] = {0, 0, 0, 0, 0, 0, 0, 0};       /* H = AES_K(0^128) */
    if (nr == 10)
        aes_encrypt2<10>(ck, q);
    else if (nr == 12)
        aes_encrypt2<12>(ck, q);
    else
        aes_encrypt2<14>(ck, q);
    const u32 hw[4] = {q[0], q[2], q[4], q[6]};
    const gf128 h = gcm_elem(hw);
    gf128 p = h;
    uint4 *powers = (uint4 *)(sa + GCM_SA_POWERS);
    for (int k = 0; k < GCM_MAX_GHASH_BLOCKS; ++k) {
        uint4 v;
        v.x = (u32)p.lo; v.y = (u32)(p.lo >> 32); v.z = (u32)p.hi; v.w = (u32)(p.hi >> 32);
        powers[k] = v;
        p = gcm_mul(p, h);
    }
    sa_nr[slots[i]] = nr;
}

/* ----------------------------------------------------------------------------------------------
 * One packet's AES-GCM, shared by the three batch kernels
 * -------------------------------------------------------------------------------------------- */
struct gcm_job {
    const u8 *src;         /* payload in: plaintext (seal) or ciphertext (open) */
    u8 *data;              /* payload out (may be src: in place) */
    u32 len;
    const u8 *aad;         /* AAD after the prefix */
    u32 alen;
    u32 pre[4];            /* AAD prefix bytes, little-endian words (ESP header fields) */
    u32 plen;              /* prefix bytes, 0..16 */
    u32 n0, n1, n2;        /* nonce, little-endian words */
};

/* AAD block k of prefix || aad, zero padded. */
__device__ __forceinline__ void gcm_aad_block(const gcm_job &j, u32 k, u32 w[4])
{
    const u32 start = 16 * k, total = j.plen + j.alen;
    if (start >= j.plen) {
        const u32 n = total - start < 16 ? total - start : 16;
        gcm_load16(j.aad + (start - j.plen), n, w);
        return;
    }
GCM_UNROLL
    for (int t = 0; t < 16; ++t) {                       /* k == 0 with a prefix */
        u32 b = 0;
        if ((u32)t < j.plen)
            b = (j.pre[t >> 2] >> (8 * (t & 3))) & 0xffu;
        else if ((u32)t < total)
            b = j.aad[t - j.plen];
        if ((t & 3) == 0)
            w[t >> 2] = 0;
        w[t >> 2] |= b << (8 * (t & 3));
    }
}

/* Payload block jb: keystream ks applied in place; its GHASH term added to z. */
__device__ __forceinline__ void gcm_payload_block(const gcm_job &j, const u8 *sa, u32 jb, u32 c_blocks,
                                                  const u32 ks[4], int decrypt, u64 z[4])
{
    const u32 n = j.len - 16 * jb < 16 ? j.len - 16 * jb : 16;
    u8 *p = j.data + 16 * (u64)jb;
    const u8 *s = j.src + 16 * (u64)jb;
    u32 in[4], out[4], x[4];
    if (n == 16)
        gcm_load16_any(s, in);
    else
        gcm_load16(s, n, in);
GCM_UNROLL
    for (int k = 0; k < 4; ++k) {
        const u32 keep = n >= 4u * k + 4 ? 0xffffffffu : (n <= 4u * k ? 0u : (1u << (8 * (n - 4 * k))) - 1);
        out[k] = (in[k] ^ ks[k]) & keep;
        x[k] = decrypt ? in[k] : out[k];
    }
    gcm_store16(p, n, out);
    gcm_mul_acc(gcm_elem(x), gcm_power(sa, c_blocks - jb), z);
}

/* This lane's share of one packet: its counter-block pairs and AAD blocks, and (lane 0) the
 * length block; returns the lane's reduced GHASH sum, and on lane 0 E_K(J0) in ek0. */
template <int NR>
__device__ gf128 gcm_lane(const gcm_job &j, const u8 *sa, int decrypt, u32 lane, u32 lanes, u32 ek0[4])
{
    u32 ck[4 * (NR + 1)];
    const u32 *ckg = (const u32 *)(sa + GCM_SA_RK);
GCM_UNROLL
    for (int w = 0; w < 4 * (NR + 1); ++w)
        ck[w] = ckg[w];
    const u32 a_blocks = (j.plen + j.alen + 15) >> 4;
    const u32 c_blocks = (j.len + 15) >> 4;
    const u32 m = a_blocks + c_blocks + 1;
    u64 z[4] = {0, 0, 0, 0};
    for (u32 k = lane; k < a_blocks; k += lanes) {
        u32 w[4];
        gcm_aad_block(j, k, w);
        gcm_mul_acc(gcm_elem(w), gcm_power(sa, m - k - 1), z);
    }
    const u32 pairs = (c_blocks + 2) >> 1;          /* counters 1 (J0) .. c_blocks + 1 */
    for (u32 u = lane; u < pairs; u += lanes) {
        u32 q[8];
        q[0] = q[1] = j.n0;
        q[2] = q[3] = j.n1;
        q[4] = q[5] = j.n2;
        q[6] = gcm_bswap32(2 * u + 1);
        q[7] = gcm_bswap32(2 * u + 2);
        aes_encrypt2<NR>(ck, q);
        const u32 ka[4] = {q[0], q[2], q[4], q[6]}, kb[4] = {q[1], q[3], q[5], q[7]};
        if (u == 0) {
GCM_UNROLL
            for (int k = 0; k < 4; ++k)
                ek0[k] = ka[k];
        } else {
            gcm_payload_block(j, sa, 2 * u - 1, c_blocks, ka, decrypt, z);
        }
        if (2 * u < c_blocks)
            gcm_payload_block(j, sa, 2 * u, c_blocks, kb, decrypt, z);
    }
    if (lane == 0) {
        const u64 abits = 8 * (u64)(j.plen + j.alen), cbits = 8 * (u64)j.len;
        const u32 w[4] = {gcm_bswap32((u32)(abits >> 32)), gcm_bswap32((u32)abits),
                          gcm_bswap32((u32)(cbits >> 32)), gcm_bswap32((u32)cbits)};
        gcm_mul_acc(gcm_elem(w), gcm_power(sa, 0), z);
    }
GCM_UNROLL
    for (int k = 0; k < 4; ++k)
        ck[k] = 0;
    return gcm_reduce(z);
}

__device__ __forceinline__ gf128 gcm_lane_any(u32 nr, const gcm_job &j, const u8 *sa, int decrypt,
                                              u32 lane, u32 lanes, u32 ek0[4])
{
    if (nr == 14)
        return gcm_lane<14>(j, sa, decrypt, lane, lanes, ek0);
    if (nr == 12)
        return gcm_lane<12>(j, sa, decrypt, lane, lanes, ek0);
    return gcm_lane<10>(j, sa, decrypt, lane, lanes, ek0);
}

/* Xor of the lanes' sums, in shared memory; every thread of the block must call it. */
__device__ __forceinline__ gf128 gcm_lanes_sum(gf128 s, u32 lane, u32 lanes, u64 *red_lo, u64 *red_hi)
{
    const u32 tid = threadIdx.x;
    red_lo[tid] = s.lo;
    red_hi[tid] = s.hi;
    __syncthreads();
    for (u32 d = lanes >> 1; d > 0; d >>= 1) {
        if (lane < d) {
            red_lo[tid] ^= red_lo[tid + d];
            red_hi[tid] ^= red_hi[tid + d];
        }
        __syncthreads();
    }
    gf128 r;
    r.lo = red_lo[tid];
    r.hi = red_hi[tid];
    return r;
}

/* The tag (E_K(J0) xor S) as four little-endian words. */
__device__ __forceinline__ void gcm_tag(gf128 s, const u32 ek0[4], u32 t[4])
{
    gcm_words(s, t);
GCM_UNROLL
    for (int k = 0; k < 4; ++k)
        t[k] ^= ek0[k];
}

/* 1 when the 16 bytes at p differ from t, without a data-dependent branch. */
__device__ __forceinline__ u32 gcm_tag_differs(const u8 *p, const u32 t[4])
{
    u32 g[4], diff = 0;
    gcm_load16(p, 16, g);
GCM_UNROLL
    for (int k = 0; k < 4; ++k)
        diff |= g[k] ^ t[k];
    return (diff | (0u - diff)) >> 31;
}

/* ----------------------------------------------------------------------------------------------
 * gcm_batch: the AEAD interface
 * -------------------------------------------------------------------------------------------- */
/* Batch layout (device memory, entry p per packet):
 *   data[offsets[p] ...]     payload (lengths[p] bytes), then its 16-byte tag slot; in place.
 *                            lengths[p] == GCM_SKIP: nothing to do, verdict SKIPPED.
 *   nonces[12 p ...]         nonce; aad[aad_offsets[p] ...] aad_lengths[p] bytes
 *   sa_slots[p]              slot in sa_keys / sa_nr;  verdicts[p] out: OK, BAD_TAG or SKIPPED */
extern "C" __global__ void __launch_bounds__(GCM_MAX_BLOCK_THREADS, GCM_MIN_BLOCKS)
gcm_batch(u8 *__restrict__ data, const u64 *__restrict__ offsets, const u32 *__restrict__ lengths,
          const u8 *__restrict__ nonces, const u8 *__restrict__ aad, const u64 *__restrict__ aad_offsets,
          const u32 *__restrict__ aad_lengths, const u32 *__restrict__ sa_slots,
          const u8 *__restrict__ sa_keys, const u32 *__restrict__ sa_nr, u8 *__restrict__ verdicts,
          int n_packets, int lanes_log2, int decrypt)
{
    __shared__ u64 red_lo[GCM_MAX_BLOCK_THREADS];
    __shared__ u64 red_hi[GCM_MAX_BLOCK_THREADS];
    const u32 lanes = 1u << lanes_log2;
    const u32 lane = threadIdx.x & (lanes - 1);
    const u64 pkt = ((u64)blockIdx.x * blockDim.x + threadIdx.x) >> lanes_log2;
    const bool in_batch = pkt < (u64)n_packets;
    const u32 len = in_batch ? lengths[pkt] : GCM_SKIP;
    const bool active = len != GCM_SKIP;

    gf128 s;
    s.lo = 0;
    s.hi = 0;
    u32 ek0[4] = {0, 0, 0, 0};
    gcm_job j;
    j.data = data;
    j.len = 0;
    if (active) {
        const u32 slot = sa_slots[pkt];
        const u8 *sa = sa_keys + (u64)slot * GCM_SA_BYTES;
        const u8 *nonce = nonces + 12 * pkt;
        j.data = data + offsets[pkt];
        j.src = j.data;
        j.len = len;
        j.aad = aad + aad_offsets[pkt];
        j.alen = aad_lengths[pkt];
        j.plen = 0;
        j.pre[0] = j.pre[1] = j.pre[2] = j.pre[3] = 0;
        j.n0 = gcm_le32(nonce);
        j.n1 = gcm_le32(nonce + 4);
        j.n2 = gcm_le32(nonce + 8);
        s = gcm_lane_any(sa_nr[slot], j, sa, decrypt, lane, lanes, ek0);
    }
    s = gcm_lanes_sum(s, lane, lanes, red_lo, red_hi);
    if (in_batch && lane == 0) {
        if (!active) {
            verdicts[pkt] = GCM_VERDICT_SKIPPED;
        } else {
            u32 t[4];
            gcm_tag(s, ek0, t);
            if (decrypt) {
                verdicts[pkt] = (u8)(GCM_VERDICT_OK + gcm_tag_differs(j.data + len, t));
            } else {
                gcm_store16(j.data + len, 16, t);
                verdicts[pkt] = GCM_VERDICT_OK;
            }
        }
    }
}

/* ----------------------------------------------------------------------------------------------
 * ESP framing
 * -------------------------------------------------------------------------------------------- */
__device__ __forceinline__ void esp_put16(u8 *p, u32 v) { p[0] = (u8)(v >> 8); p[1] = (u8)v; }
__device__ __forceinline__ void esp_put32(u8 *p, u32 v)
{
    p[0] = (u8)(v >> 24); p[1] = (u8)(v >> 16); p[2] = (u8)(v >> 8); p[3] = (u8)v;
}

/* The IPv4 header checksum of the ihl bytes at h (checksum field taken as zero). */
__device__ __forceinline__ u32 esp_ipv4_checksum(const u8 *h, u32 ihl)
{
    u32 sum = 0;
    for (u32 k = 0; k < ihl; k += 2)
        sum += k == 10 ? 0 : ((u32)h[k] << 8) | h[k + 1];
    while (sum >> 16)
        sum = (sum & 0xffffu) + (sum >> 16);
    return ~sum & 0xffffu;
}

/* The AEAD job of one ESP packet whose ESP header starts at esp; body = bytes after the IV
 * (payload, padding, trailer), then the ICV.  GMAC: everything goes into the AAD. */
__device__ __forceinline__ void esp_job(gcm_job &j, u8 *esp, u32 body, const u8 *params, u32 flags,
                                        u64 seq)
{
    j.n0 = gcm_le32(params + ESP_P_SALT);
    j.n1 = gcm_le32(esp + 8);
    j.n2 = gcm_le32(esp + 12);
    j.pre[0] = gcm_le32(params + ESP_P_SPI);
    j.pre[1] = gcm_bswap32((u32)(seq >> 32));
    j.pre[2] = gcm_bswap32((u32)seq);
    j.pre[3] = 0;
    const bool esn = (flags & ESP_F_ESN) != 0;
    if (flags & ESP_F_GMAC) {
        j.data = esp + 16 + body;
        j.src = j.data;
        j.len = 0;
        j.plen = esn ? 12 : 0;
        j.aad = esn ? esp + 8 : esp;
        j.alen = esn ? 8 + body : 16 + body;
    } else {
        j.data = esp + 16;
        j.src = j.data;
        j.len = body;
        j.plen = esn ? 12 : 0;
        j.aad = esp;
        j.alen = esn ? 0 : 8;
    }
}

/* Seals n packets.  Per packet p: the inner packet in[in_off[p] ...]; hdr_len[p] bytes of it
 * that stay in front (transport mode: its IP header; tunnel mode: 0); pay_len[p] payload bytes
 * after them; the output packet at out[out_off[p] ...]; its sequence number seqs[p], IPv4
 * identification idents[p] (tunnel mode over IPv4), SA slots[p].  The host has checked every
 * packet (version, header lengths, fragments, the 65535-byte limit) and placed out_off so the
 * GHASH input of each packet is 16-byte aligned. */
extern "C" __global__ void __launch_bounds__(GCM_MAX_BLOCK_THREADS, GCM_MIN_BLOCKS)
esp_seal(const u8 *__restrict__ in, const u64 *__restrict__ in_off, const u32 *__restrict__ hdr_len,
         const u32 *__restrict__ pay_len, u8 *__restrict__ out, const u64 *__restrict__ out_off,
         const u64 *__restrict__ seqs, const u32 *__restrict__ idents, const u32 *__restrict__ sa_slots,
         const u8 *__restrict__ sa_params, const u8 *__restrict__ sa_keys, const u32 *__restrict__ sa_nr,
         u8 *__restrict__ verdicts, int n_packets, int lanes_log2)
{
    __shared__ u64 red_lo[GCM_MAX_BLOCK_THREADS];
    __shared__ u64 red_hi[GCM_MAX_BLOCK_THREADS];
    const u32 lanes = 1u << lanes_log2;
    const u32 lane = threadIdx.x & (lanes - 1);
    const u64 pkt = ((u64)blockIdx.x * blockDim.x + threadIdx.x) >> lanes_log2;
    const bool active = pkt < (u64)n_packets;

    u32 slot = 0, flags = 0, body = 0;
    u64 seq = 0;
    const u8 *params = sa_params;
    u8 *esp = out;
    if (active) {
        slot = sa_slots[pkt];
        params = sa_params + (u64)slot * ESP_SA_PARAM_BYTES;
        flags = *(const u32 *)(params + ESP_P_FLAGS);
        const u32 block = *(const u32 *)(params + ESP_P_BLOCK);
        seq = seqs[pkt];
        const u8 *inner = in + in_off[pkt];
        const u32 hl = hdr_len[pkt], plen = pay_len[pkt];
        const bool tunnel = (flags & ESP_F_TUNNEL) != 0;
        const u32 version = inner[0] >> 4;
        const u32 ohl = tunnel ? ((flags & ESP_F_OUTER_V6) ? 40 : 20) : hl;
        const u32 pad = (block - (plen + 2) % block) % block;
        body = plen + pad + 2;
        const u32 esp_len = 16 + body + 16;
        u8 *pkt_out = out + out_off[pkt];
        esp = pkt_out + ohl;
        const u32 nh = tunnel ? (version == 4 ? 4 : 41) : (version == 4 ? inner[9] : inner[6]);
        if (lane == 0) {
            if (tunnel) {
                const u32 tos = version == 4 ? inner[1] : ((inner[0] & 0x0fu) << 4) | (inner[1] >> 4);
                u32 df = version == 4 ? (inner[6] & 0x40u) : 0;
                if (flags & ESP_F_DF_SET)
                    df = 0x40;
                if (flags & ESP_F_DF_CLEAR)
                    df = 0;
                const u32 ttl = *(const u32 *)(params + ESP_P_TTL);
                if (flags & ESP_F_OUTER_V6) {
                    pkt_out[0] = (u8)(0x60 | (tos >> 4));
                    pkt_out[1] = (u8)((tos & 0x0f) << 4);
                    pkt_out[2] = 0;
                    pkt_out[3] = 0;
                    esp_put16(pkt_out + 4, esp_len);
                    pkt_out[6] = 50;
                    pkt_out[7] = (u8)ttl;
                    for (int k = 0; k < 16; ++k) {
                        pkt_out[8 + k] = params[ESP_P_SRC + k];
                        pkt_out[24 + k] = params[ESP_P_DST + k];
                    }
                } else {
                    pkt_out[0] = 0x45;
                    pkt_out[1] = (u8)tos;
                    esp_put16(pkt_out + 2, 20 + esp_len);
                    esp_put16(pkt_out + 4, idents[pkt]);
                    pkt_out[6] = (u8)df;
                    pkt_out[7] = 0;
                    pkt_out[8] = (u8)ttl;
                    pkt_out[9] = 50;
                    for (int k = 0; k < 4; ++k) {
                        pkt_out[12 + k] = params[ESP_P_SRC + k];
                        pkt_out[16 + k] = params[ESP_P_DST + k];
                    }
                    esp_put16(pkt_out + 10, esp_ipv4_checksum(pkt_out, 20));
                }
            } else {
                for (u32 k = 0; k < hl; ++k)
                    pkt_out[k] = inner[k];
                if (version == 4) {
                    pkt_out[9] = 50;
                    esp_put16(pkt_out + 2, hl + esp_len);
                    esp_put16(pkt_out + 10, esp_ipv4_checksum(pkt_out, hl));
                } else {
                    pkt_out[6] = 50;
                    esp_put16(pkt_out + 4, hl - 40 + esp_len);
                }
            }
            for (int k = 0; k < 4; ++k)
                esp[k] = params[ESP_P_SPI + k];
            esp_put32(esp + 4, (u32)seq);
            esp_put32(esp + 8, (u32)(seq >> 32));
            esp_put32(esp + 12, (u32)seq);
        }
        /* the plaintext: payload, padding 1, 2, ..., pad length, next header */
        const u8 *src = inner + hl;
        u8 *dst = esp + 16;
        const u32 chunks = (body + 15) >> 4;
        for (u32 c = lane; c < chunks; c += lanes) {
            const u32 at = 16 * c;
            u32 w[4];
            if (at + 16 <= plen) {
                gcm_load16_any(src + at, w);
            } else {
GCM_UNROLL
                for (int k = 0; k < 4; ++k)
                    w[k] = 0;
GCM_UNROLL
                for (int t = 0; t < 16; ++t) {
                    const u32 i = at + t;
                    if (i < body) {
                        const u32 b = i < plen ? src[i] : (i < plen + pad ? i - plen + 1 : (i == plen + pad ? pad : nh));
                        w[t >> 2] |= b << (8 * (t & 3));
                    }
                }
            }
            gcm_store16(dst + at, body - at < 16 ? body - at : 16, w);
        }
    }
    __syncthreads();                         /* headers and plaintext written: GMAC reads them */

    gf128 s;
    s.lo = 0;
    s.hi = 0;
    u32 ek0[4] = {0, 0, 0, 0};
    gcm_job j;
    j.data = esp;
    j.len = 0;
    if (active) {
        esp_job(j, esp, body, params, flags, seq);
        const u8 *sa = sa_keys + (u64)slot * GCM_SA_BYTES;
        s = gcm_lane_any(sa_nr[slot], j, sa, 0, lane, lanes, ek0);
    }
    s = gcm_lanes_sum(s, lane, lanes, red_lo, red_hi);
    if (active && lane == 0) {
        u32 t[4];
        gcm_tag(s, ek0, t);
        gcm_store16(esp + 16 + body, 16, t);
        verdicts[pkt] = GCM_VERDICT_OK;
    }
}

/* Opens n packets.  Per packet p: its ESP header at in[off[p] + esp_at[p]], esp_len[p] bytes of
 * ESP (header, IV, body, ICV; at least 36), its full sequence number seqs[p] (the host's
 * estimate, for ESN), SA slots[p].  The decrypted body goes to out[out_off[p] ...] (GMAC: the
 * body is plaintext already and stays where it is).  Writes verdicts[p] (OK, BAD_TAG or
 * BAD_PADDING) and trailers[p] = pad length | next header << 8. */
extern "C" __global__ void __launch_bounds__(GCM_MAX_BLOCK_THREADS, GCM_MIN_BLOCKS)
esp_open(const u8 *__restrict__ in, const u64 *__restrict__ off, const u32 *__restrict__ esp_at,
         const u32 *__restrict__ esp_len, u8 *__restrict__ out, const u64 *__restrict__ out_off,
         const u64 *__restrict__ seqs, const u32 *__restrict__ sa_slots,
         const u8 *__restrict__ sa_params, const u8 *__restrict__ sa_keys, const u32 *__restrict__ sa_nr,
         u8 *__restrict__ verdicts, u32 *__restrict__ trailers, int n_packets, int lanes_log2)
{
    __shared__ u64 red_lo[GCM_MAX_BLOCK_THREADS];
    __shared__ u64 red_hi[GCM_MAX_BLOCK_THREADS];
    const u32 lanes = 1u << lanes_log2;
    const u32 lane = threadIdx.x & (lanes - 1);
    const u64 pkt = ((u64)blockIdx.x * blockDim.x + threadIdx.x) >> lanes_log2;
    const bool active = pkt < (u64)n_packets;

    gf128 s;
    s.lo = 0;
    s.hi = 0;
    u32 ek0[4] = {0, 0, 0, 0};
    const u8 *esp = in;
    const u8 *pt = in;
    u32 body = 0;
    if (active) {
        const u32 slot = sa_slots[pkt];
        const u8 *params = sa_params + (u64)slot * ESP_SA_PARAM_BYTES;
        const u32 flags = *(const u32 *)(params + ESP_P_FLAGS);
        esp = in + off[pkt] + esp_at[pkt];
        body = esp_len[pkt] - 32;
        gcm_job j;
        esp_job(j, (u8 *)esp, body, params, flags, seqs[pkt]);
        if (!(flags & ESP_F_GMAC)) {
            j.src = esp + 16;
            j.data = out + out_off[pkt];
        }
        pt = (flags & ESP_F_GMAC) ? esp + 16 : j.data;
        const u8 *sa = sa_keys + (u64)slot * GCM_SA_BYTES;
        s = gcm_lane_any(sa_nr[slot], j, sa, (flags & ESP_F_GMAC) ? 0 : 1, lane, lanes, ek0);
    }
    s = gcm_lanes_sum(s, lane, lanes, red_lo, red_hi);      /* also: every lane's plaintext written */
    if (active && lane == 0) {
        u32 t[4];
        gcm_tag(s, ek0, t);
        const u32 bad_tag = gcm_tag_differs(esp + 16 + body, t);
        const u32 pad = pt[body - 2], nh = pt[body - 1];
        const u32 avail = body - 2;                         /* body >= 4: the host checked */
        u32 bad = (avail - pad) >> 31;                      /* pad > avail */
        for (u32 k = 0; k < 255 && k < avail; ++k) {
            const u32 in_pad = (k - pad) >> 31;             /* k < pad */
            const u32 differs = ((((u32)pt[body - 3 - k] ^ (pad - k)) + 0xffu) >> 8) & 1u;
            bad |= in_pad & differs;
        }
        /* OK = 1, BAD_TAG = 2, BAD_PADDING = 4, chosen without a branch */
        verdicts[pkt] = (u8)(GCM_VERDICT_OK + bad_tag + 3 * (bad & (bad_tag ^ 1u)));
        trailers[pkt] = pad | (nh << 8);
    }
}
