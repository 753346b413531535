// Top-k of rows of float scores on the device (ops.md section 6; the CPU's rules of
// cpu/topk.cpp, bit for bit): one CTA of 512 threads per row.
//
//  1. Every score becomes a 32-bit key that orders like the float (sign flipped into the top
//     bit; -0 and +0 one key, as they compare equal); -inf and NaN become 0, never chosen.
//     The row's keys are staged in shared memory when they fit.
//  2. Radix select from the top, digits of 12, 10 and 10 bits: a histogram of the keys that
//     match the digits chosen so far, and the bin where the count from the top reaches what is
//     still needed. It stops early once a whole bin is needed; after the last digit the bin is
//     one key value and only some of its (tied) entries are taken. A row that is not in shared
//     memory is read twice when the first digit's bin fits 4096 entries: once for the
//     histogram, once to take the entries above that bin and copy the bin's own entries, in
//     index order, to shared memory, where the other digits are found (a bin that does not
//     fit is looked at again after the next digit). Passes load 16 (first) or 8 entries per
//     thread before using them, so that the loads are in flight together.
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
constexpr int kUnrollFirst = 16;        // entries per thread loaded before use: first pass
constexpr int kUnroll = 8;              // other passes
constexpr int kHistBins = 4096;         // first digit: 12 bits; the others 10
constexpr int kCandidates = 4096;       // entries of the first digit's bin kept in shared memory
constexpr int kScanWords = 64;          // warp totals, the chosen bin, counters
// Slots of the scan area.
constexpr int kSlotBin = 32, kSlotAbove = 33, kSlotCount = 34, kSlotNeed = 35, kSlotAppend = 36;
constexpr unsigned kFull = 0xffffffffu;

// Order-preserving key of a score: 0 for NaN and -inf (never chosen); -0 as +0.
__device__ __forceinline__ uint32_t order_key(float x) {
    if (!(x > -INFINITY)) return 0u;
    const uint32_t u = __float_as_uint(x);
    if ((u & 0x7fffffffu) == 0) return 0x80000000u;
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

// Where a pass reads its entries: the row in global memory, its keys in shared memory, or the
// candidates copied to shared memory (keys with their indices, in index order).
struct Entries {
    const float *row;
    const uint32_t *keys;
    const uint32_t *idx;
    int64_t n;
    int mode;  // 0: row, 1: staged keys, 2: candidates
    __device__ __forceinline__ uint32_t key(int64_t j) const { return mode == 0 ? order_key(row[j]) : keys[j]; }
    __device__ __forceinline__ uint32_t index(int64_t j) const { return mode == 2 ? idx[j] : uint32_t(j); }
};

// Adds one to hist[bin] for every lane of the warp with `on`. When every such lane has the
// same bin (a row's scores crowd into few bins of the top digit) one lane adds them all:
// lane-by-lane atomics on one word would serialise. Every lane of the warp calls it.
__device__ __forceinline__ void count_key(uint32_t *hist, uint32_t bin, bool on) {
    const unsigned active = __ballot_sync(kFull, on);
    if (active == 0) return;
    const uint32_t first = __shfl_sync(kFull, bin, __ffs(active) - 1);
    if (__all_sync(kFull, !on || bin == first)) {
        if ((threadIdx.x & 31u) == 0) atomicAdd(&hist[first], uint32_t(__popc(active)));
    } else if (on) {
        atomicAdd(&hist[bin], 1u);
    }
}

// Histogram of digit (key >> shift) & (2^bits - 1) over the entries whose digits above it are
// `prefix` (none when shift + bits = 32).
__device__ void histogram(const Entries &e, uint32_t *hist, int shift, int bits, uint32_t prefix) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const uint32_t mask = (1u << bits) - 1u;
    for (int64_t base = int64_t(warp) * 32; base < e.n; base += int64_t(kTopkThreads) * kUnroll) {
        uint32_t keys[kUnroll];
#pragma unroll
        for (int u = 0; u < kUnroll; ++u) {
            const int64_t j = base + u * kTopkThreads + lane;
            keys[u] = j < e.n ? e.key(j) : 0u;
        }
#pragma unroll
        for (int u = 0; u < kUnroll; ++u) {
            const uint32_t k = keys[u];
            count_key(hist, (k >> shift) & mask, k && (uint64_t(k) >> (shift + bits)) == prefix);
        }
    }
}

// Finds the bin of `hist` (nbins counts, taken from the top bin down) where the running count
// reaches `want` (first: want = min(k, total of the histogram)). Writes the bin, the count
// above it, its own count and want to the scan slots. Called by every thread.
__device__ void find_bin(const uint32_t *hist, int nbins, uint32_t *scan, int64_t want_arg, bool first) {
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int per = nbins / kTopkThreads;  // 8 or 2 bins per thread, from the top
    uint32_t local[kHistBins / kTopkThreads];
    uint32_t sum = 0;
#pragma unroll
    for (int i = 0; i < kHistBins / kTopkThreads; ++i) {
        local[i] = i < per ? hist[nbins - 1 - (tid * per + i)] : 0u;
        sum += local[i];
    }
    uint32_t incl = sum;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
        const uint32_t u = __shfl_up_sync(kFull, incl, o);
        if (lane >= o) incl += u;
    }
    if (lane == 31) scan[warp] = incl;
    __syncthreads();
    uint32_t total = 0, before = 0;
#pragma unroll
    for (int w = 0; w < kTopkWarps; ++w) {
        total += scan[w];
        if (w < warp) before += scan[w];
    }
    const uint32_t want =
        first ? uint32_t(want_arg < int64_t(total) ? want_arg : int64_t(total)) : uint32_t(want_arg);
    uint32_t run = before + incl - sum;
#pragma unroll
    for (int i = 0; i < kHistBins / kTopkThreads; ++i) {
        if (i < per && run < want && want <= run + local[i]) {
            scan[kSlotBin] = uint32_t(nbins - 1 - (tid * per + i));
            scan[kSlotAbove] = run;
            scan[kSlotCount] = local[i];
        }
        run += local[i];
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

// Appends `entry` for every lane with `on` at slots taken from the shared counter (any order).
__device__ __forceinline__ void append(uint64_t *sel, uint32_t *counter, uint64_t entry, bool on) {
    const unsigned lane = threadIdx.x & 31u;
    const unsigned m = __ballot_sync(kFull, on);
    uint32_t slot = 0;
    if (lane == 0 && m) slot = atomicAdd(counter, uint32_t(__popc(m)));
    slot = __shfl_sync(kFull, slot, 0);
    if (on) sel[slot + __popc(m & ((1u << lane) - 1u))] = entry;
}

// Rank of this thread's flagged entry among the flagged entries of the block's round (in
// thread order), and the round's total; barriers inside (every thread calls it).
__device__ __forceinline__ uint32_t round_rank(bool flag, uint32_t *scan, uint32_t *total) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const unsigned e = __ballot_sync(kFull, flag);
    if (lane == 0) scan[warp] = uint32_t(__popc(e));
    __syncthreads();
    uint32_t before = 0, all = 0;
#pragma unroll
    for (int w = 0; w < kTopkWarps; ++w) {
        const uint32_t c = scan[w];
        all += c;
        if (w < warp) before += c;
    }
    __syncthreads();  // the counts are read before the next round writes them
    *total = all;
    return before + uint32_t(__popc(e & ((1u << lane) - 1u)));
}

// Two CTAs per SM (64 registers): the rows of a prefill are many and short.
__global__ void __launch_bounds__(kTopkThreads, 2) topk_kernel(const __grid_constant__ TopkArgs a) {
    extern __shared__ __align__(16) uint8_t smem[];
    uint64_t *sel = reinterpret_cast<uint64_t *>(smem);
    uint32_t *hist = reinterpret_cast<uint32_t *>(sel + a.sort_size);
    uint32_t *scan = hist + kHistBins;
    uint32_t *staged = scan + kScanWords;  // the row's keys, or the candidates' keys then indices
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;

    const int64_t i = blockIdx.x;
    const int64_t b = a.b0 + i / a.nt, t = a.t0 + i % a.nt;
    const float *src = a.scores + i * a.row_stride;
    const int64_t n = visible_keys(a.causal, a.s_q, a.n, t);
    int32_t *out_idx = a.indices + (b * a.s_q + t) * a.k;
    float *out_val = a.values ? a.values + (b * a.s_q + t) * a.k : nullptr;
    const bool cached = a.cache_rows != 0;

    // First digit: the keys staged (when they fit) and counted by their top 12 bits.
    for (int j = tid; j < kHistBins; j += kTopkThreads) hist[j] = 0;
    if (tid == 0) scan[kSlotAppend] = 0;
    __syncthreads();
    for (int64_t base = int64_t(warp) * 32; base < n; base += int64_t(kTopkThreads) * kUnrollFirst) {
        float v[kUnrollFirst];
#pragma unroll
        for (int u = 0; u < kUnrollFirst; ++u) {
            const int64_t j = base + u * kTopkThreads + lane;
            v[u] = j < n ? src[j] : -INFINITY;
        }
#pragma unroll
        for (int u = 0; u < kUnrollFirst; ++u) {
            const int64_t j = base + u * kTopkThreads + lane;
            const uint32_t key = order_key(v[u]);
            if (cached && j < n) staged[j] = key;
            count_key(hist, key >> 20, key != 0);
        }
    }
    __syncthreads();
    find_bin(hist, kHistBins, scan, a.k, true);
    const uint32_t need = scan[kSlotNeed];

    // The other digits. After the loop, entries with (key >> shift) > prefix are all taken,
    // and `remaining` of the `count` entries with (key >> shift) == prefix (all of them
    // unless the last digit was reached with tied keys).
    Entries e{src, staged, staged + kCandidates, n, cached ? 1 : 0};
    int shift = 20, bits = 12;
    uint32_t prefix = 0, remaining = need, count = 0;
    if (need > 0) {
        for (;;) {
            const uint32_t bin = scan[kSlotBin], above = scan[kSlotAbove];
            count = scan[kSlotCount];
            remaining -= above;
            prefix = (prefix << bits) | bin;
            if (count == remaining || shift == 0) break;
            __syncthreads();  // every thread has read the slots and the histogram
            if (e.mode == 0 && count <= uint32_t(kCandidates)) {
                // Row in global memory and a bin that fits: take the entries above the bin,
                // copy the bin's own entries (key, index) to shared memory in index order; the
                // other digits are found there.
                uint32_t *cand_key = staged, *cand_idx = staged + kCandidates;
                uint32_t running = 0;
                for (int64_t base = 0; base < n; base += int64_t(kTopkThreads) * kUnroll) {
                    uint32_t keys[kUnroll];
#pragma unroll
                    for (int u = 0; u < kUnroll; ++u) {
                        const int64_t j = base + u * kTopkThreads + tid;
                        keys[u] = j < n ? order_key(src[j]) : 0u;
                    }
#pragma unroll
                    for (int u = 0; u < kUnroll; ++u) {
                        const int64_t j = base + u * kTopkThreads + tid;
                        const uint32_t key = keys[u], top = key >> shift;
                        append(sel, &scan[kSlotAppend],
                               (uint64_t(key) << 32) | uint64_t(0xffffffffu - uint32_t(j)), key && top > prefix);
                        const bool in_bin = key && top == prefix;
                        uint32_t round_total;
                        const uint32_t rank = running + round_rank(in_bin, scan, &round_total);
                        if (in_bin) {
                            cand_key[rank] = key;
                            cand_idx[rank] = uint32_t(j);
                        }
                        running += round_total;
                    }
                }
                e.mode = 2;
                e.n = count;
            }
            shift -= 10;
            bits = 10;
            for (int j = tid; j < 1024; j += kTopkThreads) hist[j] = 0;
            __syncthreads();
            histogram(e, hist, shift, bits, prefix);
            __syncthreads();
            find_bin(hist, 1024, scan, remaining, false);
        }
    }

    // Selection, in rounds of one entry per thread. Entries above the threshold (and at it,
    // when all of those are taken) fill slots from the counter on, in any order; otherwise the
    // tied entries are ranked in index order across the rounds and the first `remaining` fill
    // the slots after all the ones above.
    const uint32_t above_total = need - remaining;
    const bool take_all = count == remaining;
    uint32_t running = 0;
    if (need > 0) {
        for (int64_t base = 0; base < e.n; base += int64_t(kTopkThreads) * kUnroll) {
            uint32_t keys[kUnroll];
#pragma unroll
            for (int u = 0; u < kUnroll; ++u) {
                const int64_t j = base + u * kTopkThreads + tid;
                keys[u] = j < e.n ? e.key(j) : 0u;
            }
#pragma unroll
            for (int u = 0; u < kUnroll; ++u) {
                const int64_t j = base + u * kTopkThreads + tid;
                const uint32_t key = keys[u], top = key >> shift;
                const bool above = key && (top > prefix || (take_all && top == prefix));
                const bool tie = key && !take_all && top == prefix;
                const uint64_t entry = (uint64_t(key) << 32) | uint64_t(0xffffffffu - (j < e.n ? e.index(j) : 0u));
                append(sel, &scan[kSlotAppend], entry, above);
                if (!take_all) {
                    uint32_t round_total;
                    const uint32_t rank = running + round_rank(tie, scan, &round_total);
                    if (tie && rank < remaining) sel[above_total + rank] = entry;
                    running += round_total;
                }
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
    const int64_t fixed = sort_slots(n, k) * 8 + (kHistBins + kScanWords) * 4;
    const bool fits = fixed + n * 4 <= smem_optin;
    if (cache_rows) *cache_rows = fits;
    return fits ? fixed + n * 4 : fixed + int64_t(kCandidates) * 8;
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
