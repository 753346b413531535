// Top-k of rows of float scores on the device (ops.md section 6; the CPU's rules of
// cpu/topk.cpp, bit for bit): one CTA of 512 threads per row.
//
//  1. Every score becomes a 32-bit key that orders like the float (sign flipped into the top
//     bit; -0 and +0 one key, as they compare equal); -inf and NaN become 0, never chosen.
//     The row's keys are staged in shared memory when they fit, else every pass re-reads the
//     row (from L2 after the first).
//  2. Radix select, 8 bits per pass from the top: a 256-bin histogram of the keys that match
//     the digits chosen so far, and the bin where the count from the top reaches what is still
//     needed. It stops early once a whole bin is needed; after four passes the bin is one key
//     value and only some of its (tied) entries are taken.
//  3. Selection: keys above the threshold go anywhere in the first slots; tied keys at the
//     threshold (only when some but not all of them are taken) are ranked in index order, so
//     the lowest indices win, as on the CPU.
//  4. Bitonic sort of the chosen (key, ~index) pairs, descending: larger score first, then the
//     lower index. The output is written with -1 (and -inf values) past the chosen ones.
#include <cstdint>
#include "cuda/common/check.cuh"
#include "cuda/indexer/launch.h"

namespace mla {
namespace cuda {
namespace indexer {
namespace {

constexpr int kTopkThreads = 512;
constexpr int kTopkWarps = kTopkThreads / 32;
constexpr int kScanWords = 64;  // warp totals, the chosen bin, counters
// Slots of the scan area.
constexpr int kSlotBin = 32, kSlotAbove = 33, kSlotCount = 34, kSlotNeed = 35, kSlotAppend = 36;

// Order-preserving key of a score: 0 for NaN and -inf (never chosen); -0 as +0.
__device__ __forceinline__ uint32_t order_key(float x) {
    if (!(x > -INFINITY)) return 0u;
    const uint32_t u = __float_as_uint(x);
    if ((u & 0x7fffffffu) == 0) return 0x80000000u;
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

// Finds the bin of `hist` (256 counts, taken from the top bin down) where the running count
// reaches `want` (first: want = min(k, total of the histogram)). Writes the bin, the count
// above it, its own count and want to the scan slots. Called by every thread.
__device__ void find_bin(const uint32_t *hist, uint32_t *scan, int64_t want_arg, bool first) {
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    uint32_t v = 0, incl = 0;
    if (tid < 256) {
        v = hist[255 - tid];
        incl = v;
#pragma unroll
        for (int o = 1; o < 32; o <<= 1) {
            const uint32_t u = __shfl_up_sync(0xffffffffu, incl, o);
            if (lane >= o) incl += u;
        }
        if (lane == 31) scan[warp] = incl;
    }
    __syncthreads();
    uint32_t total = 0, before = 0;
#pragma unroll
    for (int w = 0; w < 8; ++w) {
        total += scan[w];
        if (w < warp) before += scan[w];
    }
    const uint32_t want =
        first ? uint32_t(want_arg < int64_t(total) ? want_arg : int64_t(total)) : uint32_t(want_arg);
    if (tid < 256) {
        incl += before;
        const uint32_t excl = incl - v;
        if (excl < want && want <= incl) {
            scan[kSlotBin] = 255 - tid;
            scan[kSlotAbove] = excl;
            scan[kSlotCount] = v;
        }
    }
    if (tid == 0) scan[kSlotNeed] = want;
    __syncthreads();
}

// Sorts v[0, p) descending (p a power of two).
__device__ void bitonic_sort_desc(uint64_t *v, int p) {
    for (int size = 2; size <= p; size <<= 1) {
        for (int stride = size >> 1; stride > 0; stride >>= 1) {
            for (int q = threadIdx.x; q < p / 2; q += kTopkThreads) {
                const int lo = 2 * stride * (q / stride) + (q % stride);
                const int hi = lo + stride;
                const uint64_t x = v[lo], y = v[hi];
                const bool desc = (lo & size) == 0;
                if (desc ? x < y : x > y) {
                    v[lo] = y;
                    v[hi] = x;
                }
            }
            __syncthreads();
        }
    }
}

// Adds one to hist[bin] for every lane of the warp with `on`, one atomic per distinct bin (most
// scores of a row share a few top-byte bins; lane-by-lane atomics on one word serialise).
// Every lane of the warp calls it.
__device__ __forceinline__ void warp_count(uint32_t *hist, uint32_t bin, bool on) {
    const unsigned lane = threadIdx.x & 31u;
    const unsigned peers = __match_any_sync(0xffffffffu, on ? bin : 0x100u + lane);
    if (on && lane == unsigned(__ffs(peers) - 1)) atomicAdd(&hist[bin], uint32_t(__popc(peers)));
}

__global__ void __launch_bounds__(kTopkThreads) topk_kernel(const __grid_constant__ TopkArgs a) {
    extern __shared__ __align__(16) uint8_t smem[];
    uint64_t *sel = reinterpret_cast<uint64_t *>(smem);
    uint32_t *hist = reinterpret_cast<uint32_t *>(sel + a.sort_size);
    uint32_t *scan = hist + 256;
    uint32_t *cache = scan + kScanWords;
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const unsigned lanes_below = (1u << lane) - 1u;

    const int64_t i = blockIdx.x;
    const int64_t b = a.b0 + i / a.nt, t = a.t0 + i % a.nt;
    const float *src = a.scores + i * a.row_stride;
    const int64_t n = visible_keys(a.causal, a.s_q, a.n, t);
    int32_t *out_idx = a.indices + (b * a.s_q + t) * a.k;
    float *out_val = a.values ? a.values + (b * a.s_q + t) * a.k : nullptr;
    const bool cached = a.cache_rows != 0;
    auto key_at = [&](int64_t j) -> uint32_t { return cached ? cache[j] : order_key(src[j]); };

    // Pass 1: stage the keys, histogram of the top byte of the choosable ones. Loops step by
    // whole warps (j = base + lane) so that the warp-wide operations see every lane.
    for (int j = tid; j < 256; j += kTopkThreads) hist[j] = 0;
    if (tid == 0) scan[kSlotAppend] = 0;
    __syncthreads();
    for (int64_t base = int64_t(warp) * 32; base < n; base += kTopkThreads) {
        const int64_t j = base + lane;
        const uint32_t key = j < n ? order_key(src[j]) : 0u;
        if (cached && j < n) cache[j] = key;
        warp_count(hist, key >> 24, key != 0);
    }
    __syncthreads();
    find_bin(hist, scan, a.k, true);
    const uint32_t need = scan[kSlotNeed];

    // Radix select: after the loop, entries with (key >> shift) > prefix are all taken, and
    // `remaining` of the `count` entries with (key >> shift) == prefix (all of them unless
    // shift reached 0 with tied keys).
    int shift = 24;
    uint32_t prefix = 0, remaining = need, count = 0;
    if (need > 0) {
        for (;;) {
            const uint32_t bin = scan[kSlotBin], above = scan[kSlotAbove];
            count = scan[kSlotCount];
            remaining -= above;
            prefix = (prefix << 8) | bin;
            if (count == remaining || shift == 0) break;
            shift -= 8;
            __syncthreads();  // every thread has read the slots and the histogram
            for (int j = tid; j < 256; j += kTopkThreads) hist[j] = 0;
            __syncthreads();
            for (int64_t base = int64_t(warp) * 32; base < n; base += kTopkThreads) {
                const int64_t j = base + lane;
                const uint32_t key = j < n ? key_at(j) : 0u;
                warp_count(hist, (key >> shift) & 255u, key && (key >> (shift + 8)) == prefix);
            }
            __syncthreads();
            find_bin(hist, scan, remaining, false);
        }
    }

    // Selection, in rounds of one entry per thread. Entries above the threshold (and at it,
    // when all of those are taken) fill slots from 0 in any order; otherwise the tied entries
    // are ranked in index order across the rounds and the first `remaining` fill the slots
    // after the ones above.
    const uint32_t above_total = need - remaining;
    const bool take_all = count == remaining;
    uint32_t running = 0;
    if (need > 0) {
        for (int64_t base = 0; base < n; base += kTopkThreads) {
            const int64_t j = base + tid;
            const uint32_t key = j < n ? key_at(j) : 0u;
            const uint32_t top = key >> shift;
            const bool above = key && (top > prefix || (take_all && top == prefix));
            const bool tie = key && !take_all && top == prefix;
            const uint64_t entry = (uint64_t(key) << 32) | uint64_t(0xffffffffu - uint32_t(j));
            const unsigned m = __ballot_sync(0xffffffffu, above);
            uint32_t slot = 0;
            if (lane == 0 && m) slot = atomicAdd(&scan[kSlotAppend], uint32_t(__popc(m)));
            slot = __shfl_sync(0xffffffffu, slot, 0);
            if (above) sel[slot + __popc(m & lanes_below)] = entry;
            if (!take_all) {
                const unsigned e = __ballot_sync(0xffffffffu, tie);
                if (lane == 0) scan[warp] = uint32_t(__popc(e));
                __syncthreads();
                uint32_t before = 0, total = 0;
#pragma unroll
                for (int w = 0; w < kTopkWarps; ++w) {
                    const uint32_t c = scan[w];
                    total += c;
                    if (w < warp) before += c;
                }
                const uint32_t rank = running + before + uint32_t(__popc(e & lanes_below));
                if (tie && rank < remaining) sel[above_total + rank] = entry;
                running += total;
                __syncthreads();
            }
        }
    }
    // Only the chosen entries need sorting: the smallest power of two that holds them, the
    // slots past them zero (below every chosen key).
    int p = 1;
    while (p < int(need)) p <<= 1;
    __syncthreads();
    for (int j = int(need) + tid; j < p; j += kTopkThreads) sel[j] = 0;
    __syncthreads();
    if (need > 1) bitonic_sort_desc(sel, p);

    for (int64_t j = tid; j < a.k; j += kTopkThreads) {
        if (j < int64_t(need)) {
            const uint32_t idx = 0xffffffffu - uint32_t(sel[j]);
            out_idx[j] = int32_t(idx);
            if (out_val) out_val[j] = src[idx];
        } else {
            out_idx[j] = -1;
            if (out_val) out_val[j] = -INFINITY;
        }
    }
}

// Slots of the sort buffer: the smallest power of two >= min(n, k) (at least 1).
int64_t sort_slots(int64_t n, int64_t k) {
    const int64_t m = n < k ? n : k;
    int64_t p = 1;
    while (p < m) p <<= 1;
    return p;
}

}  // namespace

int64_t topk_smem(int64_t n, int64_t k, int64_t smem_optin, bool *cache_rows) {
    const int64_t fixed = sort_slots(n, k) * 8 + (256 + kScanWords) * 4;
    const bool fits = fixed + n * 4 <= smem_optin;
    if (cache_rows) *cache_rows = fits;
    return fits ? fixed + n * 4 : fixed;
}

mla_status launch_topk(const TopkArgs &a, cudaStream_t s, const char *op) {
    if (a.rows == 0 || a.k == 0) return MLA_OK;
    MLA_REQUIRE(a.rows <= 0x7fffffff, "%s: too many rows for one launch (%lld)", op,
                (long long)a.rows);
    int dev = 0;
    int optin = 0;
    MLA_CUDA_TRY(cudaGetDevice(&dev));
    MLA_CUDA_TRY(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
    bool cache = false;
    const int64_t smem = topk_smem(a.n, a.k, optin, &cache);
    MLA_REQUIRE(smem <= optin, "%s: top-k of %lld needs %lld bytes of shared memory, the device "
                "has %d", op, (long long)(a.n < a.k ? a.n : a.k), (long long)smem, optin);
    TopkArgs args = a;
    args.cache_rows = cache ? 1 : 0;
    args.sort_size = int32_t(sort_slots(a.n, a.k));
    MLA_CUDA_TRY(cudaFuncSetAttribute(topk_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                      int(smem)));
    topk_kernel<<<unsigned(a.rows), kTopkThreads, size_t(smem), s>>>(args);
    MLA_CUDA_LAUNCHED("topk_kernel launch");
    return MLA_OK;
}

}  // namespace indexer
}  // namespace cuda
}  // namespace mla
