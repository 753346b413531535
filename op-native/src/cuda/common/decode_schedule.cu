// Split-KV scheduler of the decode-shaped kernels, on the device: the lengths (cache_seqlens,
// topk_length) live in device memory, so the schedule is computed by one CTA in stream order
// instead of copying them to the host (no synchronisation, graph-capturable). See
// ScheduleArgs in decode_args.cuh.
#include "cuda/common/check.cuh"
#include "cuda/common/decode_launch.h"

namespace mla {
namespace cuda {
namespace {

constexpr int kScheduleThreads = 1024;

__global__ void __launch_bounds__(kScheduleThreads)
    decode_schedule_kernel(const __grid_constant__ DecodeArgs a) {
    const ScheduleArgs &s = a.sched;
    const int64_t units = a.units;
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    constexpr int kWarps = kScheduleThreads / 32;
    __shared__ int64_t warp_sum[kWarps];
    __shared__ int64_t carry;
    if (tid == 0) carry = 0;
    __syncthreads();

    // cum[u]: exclusive prefix sum of the unit costs, kScheduleThreads units per round.
    for (int64_t base = 0; base < units; base += kScheduleThreads) {
        const int64_t u = base + tid;
        int64_t cost = 0;
        if (u < units) cost = (unit_len(a, u) + s.tile - 1) / s.tile + s.overhead;
        int64_t x = cost;
        for (int o = 1; o < 32; o <<= 1) {
            int64_t y = __shfl_up_sync(0xffffffffu, x, o);
            if (lane >= o) x += y;
        }
        if (lane == 31) warp_sum[warp] = x;
        __syncthreads();
        if (warp == 0) {
            int64_t w = warp_sum[lane];
            for (int o = 1; o < 32; o <<= 1) {
                int64_t y = __shfl_up_sync(0xffffffffu, w, o);
                if (lane >= o) w += y;
            }
            warp_sum[lane] = w;  // inclusive over warps
        }
        __syncthreads();
        if (u < units) s.cum[u] = carry + x - cost + (warp > 0 ? warp_sum[warp - 1] : 0);
        __syncthreads();
        if (tid == 0) carry += warp_sum[kWarps - 1];
        __syncthreads();
    }
    const int64_t total = carry;
    if (tid == 0) s.cum[units] = total;
    __syncthreads();

    // Partition starts: the (unit, tile) at cost position floor(p * total / parts).
    for (int p = tid; p <= s.parts; p += kScheduleThreads) {
        int64_t u = units, t = 0;
        if (p < s.parts) {
            const int64_t x = int64_t(p) * total / s.parts;
            int64_t lo = 0, hi = units - 1;
            while (lo < hi) {
                const int64_t mid = (lo + hi + 1) >> 1;
                if (s.cum[mid] <= x)
                    lo = mid;
                else
                    hi = mid - 1;
            }
            u = lo;
            const int64_t n = unit_tiles(s, u);
            t = x - s.cum[u] - s.overhead;
            t = t < 0 ? 0 : (t > n ? n : t);
        }
        s.part[2 * p] = int32_t(u);
        s.part[2 * p + 1] = int32_t(t);
    }
}

}  // namespace

mla_status launch_decode_schedule(const DecodeArgs &a, cudaStream_t stream, const char *op) {
    decode_schedule_kernel<<<1, kScheduleThreads, 0, stream>>>(a);
    MLA_CUDA_LAUNCHED("decode_schedule_kernel launch");
    return MLA_OK;
}

}  // namespace cuda
}  // namespace mla
