// Synchronisation and data movement of the sm_90a producer / consumer kernels beyond
// wgmma.cuh: plain mbarrier arrivals (local and on a peer CTA of the cluster), distributed
// shared memory stores, the cluster barrier, register reallocation between warpgroups, and
// read-only global loads. sm_90a only (guarded like wgmma.cuh).
#pragma once
#include <cstdint>
#include "cuda/sm90/wgmma.cuh"

namespace mla {
namespace cuda {
namespace sm90 {

#ifdef MLA_SM90_WGMMA

// This thread's arrival on an mbarrier of its own CTA (release: its earlier writes are
// visible to the threads that see the phase complete).
__device__ __forceinline__ void mbar_arrive(uint32_t bar) {
    asm volatile("mbarrier.arrive.release.cta.shared::cta.b64 _, [%0];\n" ::"r"(bar) : "memory");
}

// The address of the same shared-memory location in CTA `rank` of the cluster.
__device__ __forceinline__ uint32_t map_to_rank(uint32_t addr, uint32_t rank) {
    uint32_t out;
    asm volatile("mapa.shared::cluster.u32 %0, %1, %2;\n" : "=r"(out) : "r"(addr), "r"(rank));
    return out;
}

// Arrival on an mbarrier at a cluster address (map_to_rank), release at cluster scope.
__device__ __forceinline__ void mbar_arrive_cluster(uint32_t cluster_bar) {
    asm volatile("mbarrier.arrive.release.cluster.shared::cluster.b64 _, [%0];\n" ::"r"(cluster_bar)
                 : "memory");
}

// One test of a phase with acquire at cluster scope (the arrivals may come from a peer CTA).
__device__ __forceinline__ bool mbar_try_wait_cluster(uint32_t bar, uint32_t parity) {
    uint32_t done;
    asm volatile(
        "{\n.reg .pred p;\n"
        "mbarrier.try_wait.parity.acquire.cluster.shared::cta.b64 p, [%1], %2;\n"
        "selp.u32 %0, 1, 0, p;\n}\n"
        : "=r"(done)
        : "r"(bar), "r"(parity)
        : "memory");
    return done != 0;
}

// With MLA4J_WATCHDOG (a build option for test hosts), a wait that lasts more than 4 seconds
// traps: a lost arrival becomes a launch failure instead of a hang.
struct Watchdog {
#ifdef MLA4J_WATCHDOG
    uint64_t start = 0;
    uint32_t polls = 0;
    __device__ __forceinline__ void tick() {
        if ((++polls & 1023u) != 0) return;
        uint64_t now;
        asm volatile("mov.u64 %0, %%globaltimer;\n" : "=l"(now));
        if (!start)
            start = now;
        else if (now - start > 4000000000ull)
            __trap();
    }
#else
    __device__ __forceinline__ void tick() {}
#endif
};

// Waits for a phase with acquire at cluster scope.
__device__ __forceinline__ void mbar_wait_cluster(uint32_t bar, uint32_t parity) {
    Watchdog w;
    while (!mbar_try_wait_cluster(bar, parity)) w.tick();
}

// 16 bytes into shared memory at a cluster address (own or peer CTA).
__device__ __forceinline__ void st_cluster_v4(uint32_t cluster_addr, uint4 v) {
    asm volatile("st.shared::cluster.v4.u32 [%0], {%1, %2, %3, %4};\n" ::"r"(cluster_addr),
                 "r"(v.x), "r"(v.y), "r"(v.z), "r"(v.w)
                 : "memory");
}

__device__ __forceinline__ uint32_t cluster_rank() {
    uint32_t r;
    asm volatile("mov.u32 %0, %%cluster_ctarank;\n" : "=r"(r));
    return r;
}

// Every thread of every CTA of the cluster: earlier writes (shared memory of any CTA of the
// cluster included) are visible to every thread after it.
__device__ __forceinline__ void cluster_sync() {
    asm volatile("barrier.cluster.arrive.release.aligned;\nbarrier.cluster.wait.acquire.aligned;\n" ::
                     : "memory");
}

// Initialised mbarriers visible to the cluster's other CTAs (before their first arrival).
__device__ __forceinline__ void fence_mbarrier_init() {
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
}

// Generic-proxy writes to shared memory of this CTA or the cluster made visible to the async
// proxy (wgmma operand reads).
__device__ __forceinline__ void fence_proxy_async_all() {
    asm volatile("fence.proxy.async;\n" ::: "memory");
}

// Register reallocation between warpgroups (needs a register cap at entry: launch bounds with
// a minimum of one block).
template <int N>
__device__ __forceinline__ void regs_increase() {
    asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(N));
}
template <int N>
__device__ __forceinline__ void regs_decrease() {
    asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(N));
}

// 16 / 8 bytes of read-only global memory, not kept in L1 (each row is read once per CTA).
__device__ __forceinline__ uint4 ld_nc_v4(const void *p) {
    uint4 v;
    asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
                 : "l"(p));
    return v;
}
__device__ __forceinline__ uint2 ld_nc_v2(const void *p) {
    uint2 v;
    asm volatile("ld.global.nc.L1::no_allocate.v2.u32 {%0, %1}, [%2];\n"
                 : "=r"(v.x), "=r"(v.y)
                 : "l"(p));
    return v;
}

// Shared-memory counter: add with release at cluster scope (own or peer CTA), read with
// acquire.
__device__ __forceinline__ void counter_add_cluster(uint32_t cluster_addr, uint32_t v) {
    asm volatile("red.release.cluster.shared::cluster.add.u32 [%0], %1;\n" ::"r"(cluster_addr), "r"(v)
                 : "memory");
}
__device__ __forceinline__ uint32_t counter_load(uint32_t addr) {
    uint32_t v;
    asm volatile("ld.acquire.cluster.shared::cta.u32 %0, [%1];\n" : "=r"(v) : "r"(addr) : "memory");
    return v;
}

#endif  // MLA_SM90_WGMMA

}  // namespace sm90
}  // namespace cuda
}  // namespace mla
