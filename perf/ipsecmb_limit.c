/* The intel-ipsec-mb library's own rate on this machine, from C, one core: the limit the
 * ipsecmb backend's ESP path is compared with (perf/RESULTS.md).
 *
 * For each inner packet size (64, 576, 1400 bytes) it times the crypto work ESP does per
 * packet: the ESP payload (inner packet, padding, pad length, next header) sealed or opened
 * with AES-128-GCM (16-byte tag, 8-byte AAD) and ChaCha20-Poly1305 through the direct API,
 * and AES-128-CBC + HMAC-SHA-256-128 over ESP header, IV and cipher text through the
 * multi-buffer job API (256 packets in flight, as the backend's batch call submits them).
 * Output: one JSON object per line.  Built and run by perf/ipsecmb_limit.sh.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <intel-ipsec-mb.h>

#define BATCH 256

static double
now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static void
report(const char *alg, int size, const char *dir, long count, double secs)
{
    printf("{\"alg\": \"%s\", \"size\": %d, \"direction\": \"%s\", \"count\": %ld, "
           "\"ns_per_packet\": %.1f, \"pps\": %.0f}\n", alg, size, dir, count,
           secs / count * 1e9, count / secs);
    fflush(stdout);
}

static uint8_t bufs[BATCH][2048];
static uint8_t tags[BATCH][64];

static void
gcm(IMB_MGR *mgr, int size, long count)
{
    struct gcm_key_data key __attribute__((aligned(64)));
    struct gcm_context_data ctx;
    uint8_t k[16] = {1}, iv[12] = {2}, aad[8] = {3}, tag[16];
    IMB_AES128_GCM_PRE(mgr, k, &key);
    int len = size + 2 + ((4 - (size + 2) % 4) % 4);
    for (int dir = 0; dir < 2; dir++) {
        double t = now();
        for (long i = 0; i < count; i++) {
            uint8_t *m = bufs[i % BATCH];
            if (dir == 0)
                IMB_AES128_GCM_ENC(mgr, &key, &ctx, m, m, len, iv, aad, 8, tag, 16);
            else
                IMB_AES128_GCM_DEC(mgr, &key, &ctx, m, m, len, iv, aad, 8, tag, 16);
        }
        report("aes128gcm16", size, dir ? "unprotect" : "protect", count, now() - t);
    }
}

static void
chacha(IMB_MGR *mgr, int size, long count)
{
    struct chacha20_poly1305_context_data ctx;
    uint8_t k[32] = {1}, iv[12] = {2}, aad[8] = {3}, tag[16];
    int len = size + 2 + ((4 - (size + 2) % 4) % 4);
    for (int dir = 0; dir < 2; dir++) {
        double t = now();
        for (long i = 0; i < count; i++) {
            uint8_t *m = bufs[i % BATCH];
            IMB_CHACHA20_POLY1305_INIT(mgr, k, &ctx, iv, aad, 8);
            if (dir == 0) {
                IMB_CHACHA20_POLY1305_ENC_UPDATE(mgr, k, &ctx, m, m, len);
                IMB_CHACHA20_POLY1305_ENC_FINALIZE(mgr, &ctx, tag, 16);
            } else {
                IMB_CHACHA20_POLY1305_DEC_UPDATE(mgr, k, &ctx, m, m, len);
                IMB_CHACHA20_POLY1305_DEC_FINALIZE(mgr, &ctx, tag, 16);
            }
        }
        report("chacha20poly1305", size, dir ? "unprotect" : "protect", count, now() - t);
    }
}

static void
cbc_hmac(IMB_MGR *mgr, int size, long count)
{
    uint8_t enc[16 * 15] __attribute__((aligned(16))), dec[16 * 15] __attribute__((aligned(16)));
    uint8_t k[16] = {1}, iv[16] = {2}, mk[32] = {4};
    uint8_t ipad[64] = {0}, opad[64] = {0}, bi[64], bo[64];
    IMB_AES_KEYEXP_128(mgr, k, enc, dec);
    for (int i = 0; i < 64; i++) {
        bi[i] = (i < 32 ? mk[i] : 0) ^ 0x36;
        bo[i] = (i < 32 ? mk[i] : 0) ^ 0x5c;
    }
    IMB_SHA256_ONE_BLOCK(mgr, bi, ipad);
    IMB_SHA256_ONE_BLOCK(mgr, bo, opad);
    int ct = size + 2 + ((16 - (size + 2) % 16) % 16);
    int at = 8 + 16;                      /* ESP header and IV before the cipher text */
    for (int dir = 0; dir < 2; dir++) {
        double t = now();
        for (long i = 0; i < count; i++) {
            uint8_t *m = bufs[i % BATCH];
            IMB_JOB *job = IMB_GET_NEXT_JOB(mgr);
            job->cipher_mode = IMB_CIPHER_CBC;
            job->cipher_direction = dir ? IMB_DIR_DECRYPT : IMB_DIR_ENCRYPT;
            job->chain_order = dir ? IMB_ORDER_HASH_CIPHER : IMB_ORDER_CIPHER_HASH;
            job->enc_keys = enc;
            job->dec_keys = dec;
            job->key_len_in_bytes = 16;
            job->iv = iv;
            job->iv_len_in_bytes = 16;
            job->src = m;
            job->dst = m + at;
            job->cipher_start_src_offset_in_bytes = at;
            job->msg_len_to_cipher_in_bytes = ct;
            job->hash_alg = IMB_AUTH_HMAC_SHA_256;
            job->hash_start_src_offset_in_bytes = 0;
            job->msg_len_to_hash_in_bytes = at + ct;
            job->auth_tag_output = tags[i % BATCH];
            job->auth_tag_output_len_in_bytes = 16;
            job->u.HMAC._hashed_auth_key_xor_ipad = ipad;
            job->u.HMAC._hashed_auth_key_xor_opad = opad;
            job = IMB_SUBMIT_JOB(mgr);
            while (job != NULL) {
                if (job->status != IMB_STATUS_COMPLETED) {
                    fprintf(stderr, "job failed: %s\n", imb_get_strerror(imb_get_errno(mgr)));
                    exit(1);
                }
                job = IMB_GET_COMPLETED_JOB(mgr);
            }
        }
        while (IMB_FLUSH_JOB(mgr) != NULL)
            ;
        report("aes128-sha256", size, dir ? "unprotect" : "protect", count, now() - t);
    }
}

int
main(int argc, char **argv)
{
    long count = argc > 1 ? atol(argv[1]) : 400000;
    IMB_MGR *mgr = alloc_mb_mgr(0);
    if (mgr == NULL)
        return 1;
    init_mb_mgr_auto(mgr, NULL);
    const char *arch[] = {"none", "no-aesni", "sse", "avx", "avx2", "avx512"};
    printf("{\"library\": \"%s\", \"arch\": \"%s\"}\n", imb_get_version_str(),
           (int)mgr->used_arch < 6 ? arch[mgr->used_arch] : "unknown");
    memset(bufs, 7, sizeof bufs);
    int sizes[] = {64, 576, 1400};
    for (int s = 0; s < 3; s++) {
        gcm(mgr, sizes[s], count);
        cbc_hmac(mgr, sizes[s], count / 4);
        chacha(mgr, sizes[s], count / 2);
    }
    free_mb_mgr(mgr);
    return 0;
}
