/* The CPU build of aes_gcm.cu: the kernel source itself, compiled as C++20 with host_shim.h and
 * exported with C entry points for ctypes (plugins/gpu/cpu_launcher.py builds and loads it).
 */
#include "host_shim.h"
#include "aes_gcm.cu"

extern "C" int ipsec_gpu_host_sa_bytes() { return GCM_SA_BYTES; }
extern "C" int ipsec_gpu_host_param_bytes() { return ESP_SA_PARAM_BYTES; }

static bool bad_geometry(unsigned block, int lanes_log2)
{
    return block == 0 || block > GCM_MAX_BLOCK_THREADS || lanes_log2 < 0 || lanes_log2 > 5 ||
           block % (1u << lanes_log2) != 0;
}

extern "C" int ipsec_gpu_host_install(unsigned grid, unsigned block, const u8 *keys,
                                      const u32 *key_bytes, const u32 *slots, u8 *sa_keys,
                                      u32 *sa_nr, int n)
{
    try {
        launch(dim3{grid}, dim3{block}, gcm_install, keys, key_bytes, slots, sa_keys, sa_nr, n);
    } catch (...) {
        return -1;
    }
    return 0;
}

extern "C" int ipsec_gpu_host_batch(unsigned grid, unsigned block, u8 *data, const u64 *offsets,
                                    const u32 *lengths, const u8 *nonces, const u8 *aad,
                                    const u64 *aad_offsets, const u32 *aad_lengths,
                                    const u32 *sa_slots, const u8 *sa_keys, const u32 *sa_nr,
                                    u8 *verdicts, int n_packets, int lanes_log2, int decrypt)
{
    if (bad_geometry(block, lanes_log2))
        return -2;
    try {
        launch(dim3{grid}, dim3{block}, gcm_batch, data, offsets, lengths, nonces, aad, aad_offsets,
               aad_lengths, sa_slots, sa_keys, sa_nr, verdicts, n_packets, lanes_log2, decrypt);
    } catch (...) {
        return -1;
    }
    return 0;
}

extern "C" int ipsec_gpu_host_seal(unsigned grid, unsigned block, const u8 *in, const u64 *in_off,
                                   const u32 *hdr_len, const u32 *pay_len, u8 *out, const u64 *out_off,
                                   const u64 *seqs, const u32 *idents, const u32 *sa_slots,
                                   const u8 *sa_params, const u8 *sa_keys, const u32 *sa_nr,
                                   u8 *verdicts, int n_packets, int lanes_log2)
{
    if (bad_geometry(block, lanes_log2))
        return -2;
    try {
        launch(dim3{grid}, dim3{block}, esp_seal, in, in_off, hdr_len, pay_len, out, out_off, seqs,
               idents, sa_slots, sa_params, sa_keys, sa_nr, verdicts, n_packets, lanes_log2);
    } catch (...) {
        return -1;
    }
    return 0;
}

extern "C" int ipsec_gpu_host_open(unsigned grid, unsigned block, const u8 *in, const u64 *off,
                                   const u32 *esp_at, const u32 *esp_len, u8 *out,
                                   const u64 *out_off, const u64 *seqs,
                                   const u32 *sa_slots, const u8 *sa_params, const u8 *sa_keys,
                                   const u32 *sa_nr, u8 *verdicts, u32 *trailers, int n_packets,
                                   int lanes_log2)
{
    if (bad_geometry(block, lanes_log2))
        return -2;
    try {
        launch(dim3{grid}, dim3{block}, esp_open, in, off, esp_at, esp_len, out, out_off, seqs, sa_slots,
               sa_params, sa_keys, sa_nr, verdicts, trailers, n_packets, lanes_log2);
    } catch (...) {
        return -1;
    }
    return 0;
}
