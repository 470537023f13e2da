/* Host stand-ins for the CUDA built-ins that aes_gcm.cu uses, so that the kernel's own source runs
 * on the CPU (adapted from shared/gpu-host-shim): each thread of a block is a host thread,
 * __syncthreads() a std::barrier, __shared__ a static (blocks run one after another, so one copy
 * serves every block).  Only the tests' CPU build includes this; CuPy never sees it.
 *
 * Differences from a GPU that matter: blocks never run concurrently, so nothing that depends on
 * ordering between blocks is exercised; and a thread that returns early while others still wait at
 * a __syncthreads() would deadlock here (the kernels never do that).
 */
#pragma once
#include <barrier>
#include <mutex>
#include <thread>
#include <vector>

struct dim3 {
    unsigned x = 1, y = 1, z = 1;
};
struct alignas(16) uint4 {
    unsigned x, y, z, w;
};
inline thread_local dim3 threadIdx, blockIdx;
inline dim3 blockDim, gridDim;
inline std::barrier<> *g_block_barrier;
inline std::mutex g_launch_mutex;    /* the __shared__ statics allow one launch at a time */

#define __global__
#define __device__
#define __forceinline__ inline
#define __restrict__ __restrict
#define __launch_bounds__(...)
#define __shared__ static

inline void __syncthreads() { g_block_barrier->arrive_and_wait(); }

/* Runs f<<<g, b>>>(a...): b.x host threads, each running its thread of every block in turn. */
template <class F, class... A>
void launch(dim3 g, dim3 b, F f, A... a)
{
    std::lock_guard<std::mutex> lock(g_launch_mutex);
    gridDim = g;
    blockDim = b;
    std::barrier<> bar(b.x), block_done(b.x);
    g_block_barrier = &bar;
    std::vector<std::thread> threads;
    threads.reserve(b.x);
    for (unsigned tx = 0; tx < b.x; ++tx)
        threads.emplace_back([=, &block_done] {
            threadIdx.x = tx;
            for (unsigned bx = 0; bx < g.x; ++bx) {
                blockIdx.x = bx;
                f(a...);
                block_done.arrive_and_wait();  /* nobody reuses __shared__ before the block ends */
            }
        });
    for (auto &t : threads)
        t.join();
}
