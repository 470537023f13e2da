/* The CPU build of aes_gcm.cu: the kernel source itself, compiled as C++20 with host_shim.h and
 * exported with C entry points for ctypes (plugins/gpu/cpu_launcher.py builds and loads it).
 * Built with: g++ -std=c++20 -O2 -shared -fPIC -pthread host_launch.cpp -o libipsec_gpu_host.so
 */
#include "host_shim.h"
#include "aes_gcm.cu"

extern "C" int ipsec_gpu_host_sa_bytes() { return GCM_SA_BYTES; }

extern "C" int ipsec_gpu_host_install(unsigned grid, unsigned block, const u8 *keys,
                                      const u32 *key_bytes, const u32 *slots, u8 *sa_table, int n)
{
    try {
        launch(dim3{grid}, dim3{block}, gcm_install, keys, key_bytes, slots, sa_table, n);
    } catch (...) {
        return -1;
    }
    return 0;
}

extern "C" int ipsec_gpu_host_batch(unsigned grid, unsigned block, u8 *data, const u64 *offsets,
                                    const u32 *lengths, const u8 *nonces, const u8 *aad,
                                    const u64 *aad_offsets, const u32 *aad_lengths,
                                    const u32 *sa_slots, const u8 *sa_table, u8 *verdicts,
                                    int n_packets, int lanes_log2, int decrypt)
{
    if (block == 0 || block > GCM_MAX_BLOCK_THREADS || lanes_log2 < 0 || lanes_log2 > 5 ||
        block % (1u << lanes_log2) != 0)
        return -2;
    try {
        launch(dim3{grid}, dim3{block}, gcm_batch, data, offsets, lengths, nonces, aad, aad_offsets,
               aad_lengths, sa_slots, sa_table, verdicts, n_packets, lanes_log2, decrypt);
    } catch (...) {
        return -1;
    }
    return 0;
}
