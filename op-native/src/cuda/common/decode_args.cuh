// The one parameter struct of the decode-shaped attention kernels (dense decode, ops.md
// section 1; sparse decode, section 2; sparse prefill forward, section 3), built on the host
// by the op family's plan and passed by value as a __grid_constant__ kernel parameter; plus
// the device helpers every kernel shares: element conversion, units and their rows, key
// addressing (paged through a block table, or through index lists) and FP8 dequantisation.
//
// A unit is a set of query rows that attend the same keys:
//   dense decode:  (request b, KV head)            rows query * group + head (s_q * group rows)
//   sparse:        (request b, query j, KV head)   rows head in group         (group rows)
// Sparse prefill runs as sparse decode with b = s_q and one query per request, so its lse and
// max_logit layouts [s_q, h_q] are decode's [b, h_q, 1].
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cstdint>
#include "mla/mla.h"
#include "cuda/common/convert.cuh"

namespace mla {
namespace cuda {

// Query rows of one main-kernel CTA (an m-block); partial results are kept per m-block.
constexpr int kBlockRows = 64;
// Rotation frequencies travel in the parameter block: rope_dim <= 2 * kMaxRopePairs.
constexpr int kMaxRopePairs = 128;

struct RotationArgs {
    const int32_t *positions;   // NULL: no rotation; [b * s_q]
    const float *cos_table;     // NULL: angles from freqs
    const float *sin_table;
    int64_t table_len;
    int32_t rope_dim, start, style;
    double freqs[kMaxRopePairs];
};

// Split-KV schedule (common/decode_schedule.cu). Unit u has n_u = ceil(len_u / tile) key
// tiles; its cost is n_u + overhead. cum[u] is the cost before u, cum[units] the total C.
// Partition p of `parts` owns the cost range [floor(p C / parts), floor((p + 1) C / parts)),
// i.e. the (unit, tile) pairs from part[2p], part[2p + 1] up to part[2p + 2], part[2p + 3]
// (exclusive, lexicographic). A unit whose tiles fall in more than one partition is split:
// each piece leaves a partial (out / l, lse, and the row maximum when max_logit is asked for)
// in slot ((m_block * parts + p) * 2 + (piece is the partition's first ? 0 : 1)), and the
// combine kernel merges them.
struct ScheduleArgs {
    int64_t *cum;        // [units + 1]
    int32_t *part;       // [2 * (parts + 1)]
    float *part_o;       // [n_mblocks * parts * 2][kBlockRows][d_v]
    float *part_lse;     // [n_mblocks * parts * 2][kBlockRows], natural log, -inf: no key
    float *part_max;     // same shape; only when max_logit is set
    int32_t parts;
    int32_t overhead;    // cost of a unit's setup and epilogue, in tiles
    int32_t tile;        // keys per tile of the main kernel
};

// An FP8 cache (V32 or MODEL1, one KV head; common/cache.h): its byte geometry, and where the
// sm80 kernel stages a raw row inside the shared-memory slot of its dequantised row.
struct Fp8Args {
    int32_t d_nope, d_rope, tile, n_scales;
    int64_t data_row_bytes;   // V32: the whole token row; MODEL1: fp8 + bf16 part
    int64_t scale_row_bytes;  // MODEL1 only
    int64_t block_bytes;
    int32_t rope_at;          // byte offset of the bf16 part in the (raw) data row
    int32_t raw_at;           // sm80 kernel: byte offset of the raw row in a K row slot
};

// A paged cache: PLAIN rows of `dtype` (element strides) or FP8 rows (kind V32 / MODEL1).
struct CacheArgs {
    int32_t kind;        // mla_cache_kind
    int32_t dtype;       // PLAIN: element type
    Fp8Args fp8;         // V32 / MODEL1
    const void *data;
    int64_t num_blocks, block_size, block_stride, token_stride, head_stride;
};

// One key set of the sparse ops: a cache and, per (request, query, KV head), a list of
// `topk` indices block * block_size + offset (invalid ones skipped), of which the first
// length[request] count when `length` is set.
struct KeySetArgs {
    CacheArgs cache;
    const int32_t *indices;     // NULL: the set is absent (topk 0)
    int64_t istride[3];         // elements between requests, queries, KV heads
    int64_t topk;
    const int32_t *length;      // optional [b]
};

struct DecodeArgs {
    int32_t dtype;       // q and out
    int32_t sparse;      // 0: dense decode (kv, block_table, seqlens); 1: sparse (set[])
    int64_t b, s_q, h_q, h_kv, group, d_qk, d_v;
    int64_t units;       // dense: b * h_kv; sparse: b * s_q * h_kv
    int64_t rows;        // query rows of a unit: dense s_q * group, sparse group
    int32_t n_mblocks;   // ceil(rows / kBlockRows)
    int32_t row_alloc;   // elements of a shared-memory row of Q / K (sm80 kernel)
    const void *q;
    int64_t q_stride[3];
    // dense decode
    CacheArgs kv;
    const int32_t *block_table;
    int64_t block_table_stride, max_blocks_per_seq;
    const int32_t *seqlens;
    int32_t causal;
    // sparse: set[0] the required key set, set[1] the extra one (indices NULL when absent)
    KeySetArgs set[2];
    float scale, scale_log2;
    const float *sink;
    RotationArgs rot;
    void *out;
    int64_t out_stride[3];
    float *lse;          // [b, h_q, s_q]
    float *max_logit;    // optional, same layout (sparse prefill)
    ScheduleArgs sched;
};

// ---- element conversion ------------------------------------------------------------------

__device__ __forceinline__ float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }
__device__ __forceinline__ float to_float(__half v) { return __half2float(v); }

// Element i of a buffer of runtime dtype (float types of mla_dtype).
template <typename Acc>
__device__ __forceinline__ Acc load_elem(const void *p, int32_t dtype, int64_t i) {
    switch (dtype) {
        case MLA_FLOAT64: return Acc(static_cast<const double *>(p)[i]);
        case MLA_FLOAT32: return Acc(static_cast<const float *>(p)[i]);
        case MLA_FLOAT16: return Acc(__half2float(static_cast<const __half *>(p)[i]));
        default: return Acc(__bfloat162float(static_cast<const __nv_bfloat16 *>(p)[i]));
    }
}

template <typename Acc>
__device__ __forceinline__ void store_elem(void *p, int32_t dtype, int64_t i, Acc v) {
    switch (dtype) {
        case MLA_FLOAT64: static_cast<double *>(p)[i] = double(v); break;
        case MLA_FLOAT32: static_cast<float *>(p)[i] = float(v); break;
        case MLA_FLOAT16: static_cast<__half *>(p)[i] = __float2half_rn(float(v)); break;
        default: static_cast<__nv_bfloat16 *>(p)[i] = __float2bfloat16_rn(float(v)); break;
    }
}

__device__ __forceinline__ int64_t min64(int64_t x, int64_t y) { return x < y ? x : y; }

// ---- units and rows --------------------------------------------------------------------------

// Keys of request b (dense decode): cache_seqlens[b] clamped to what its block-table row can
// address.
__device__ __forceinline__ int64_t seq_len(const DecodeArgs &a, int64_t b) {
    int64_t len = a.seqlens[b];
    int64_t cap = a.max_blocks_per_seq * a.kv.block_size;
    return len < 0 ? 0 : (len > cap ? cap : len);
}

// Entries of key set s that count for request b.
__device__ __forceinline__ int64_t set_count(const DecodeArgs &a, int s, int64_t b) {
    const KeySetArgs &k = a.set[s];
    if (!k.indices) return 0;
    if (!k.length) return k.topk;
    const int64_t n = k.length[b];
    return n < 0 ? 0 : (n > k.topk ? k.topk : n);
}

// Request, query and KV head of a sparse unit.
__device__ __forceinline__ int64_t sparse_request(const DecodeArgs &a, int64_t u) {
    return u / (a.s_q * a.h_kv);
}

// Keys of unit u: the sequence of dense decode, the two key lists of sparse.
__device__ __forceinline__ int64_t unit_len(const DecodeArgs &a, int64_t u) {
    if (!a.sparse) return seq_len(a, u / a.h_kv);
    const int64_t b = sparse_request(a, u);
    return set_count(a, 0, b) + set_count(a, 1, b);
}

// Request, query and head of row `r` of m-block mb of unit u.
struct RowId {
    int64_t b, j, h;
};

__device__ __forceinline__ RowId row_id(const DecodeArgs &a, int64_t u, int mb, int r) {
    const int64_t rin = int64_t(mb) * kBlockRows + r;
    RowId id;
    if (a.sparse) {
        id.b = sparse_request(a, u);
        id.j = (u / a.h_kv) % a.s_q;
        id.h = (u % a.h_kv) * a.group + rin;
    } else {
        id.b = u / a.h_kv;
        id.j = rin / a.group;
        id.h = (u % a.h_kv) * a.group + rin % a.group;
    }
    return id;
}

// Tiles of unit u in the schedule.
__device__ __forceinline__ int64_t unit_tiles(const ScheduleArgs &s, int64_t u) {
    return s.cum[u + 1] - s.cum[u] - s.overhead;
}

// ---- key addressing ----------------------------------------------------------------------------

// Element offset of token t of request b, KV head kvh (dense decode); -1 when its block id is
// outside the cache (nothing is read then).
__device__ __forceinline__ int64_t key_offset(const DecodeArgs &a, int64_t b, int64_t kvh,
                                              int64_t t) {
    const CacheArgs &c = a.kv;
    int64_t blk = a.block_table[b * a.block_table_stride + t / c.block_size];
    if (blk < 0 || blk >= c.num_blocks) return -1;
    return blk * c.block_stride + (t % c.block_size) * c.token_stride + kvh * c.head_stride;
}

// Slot of token t of request b in a cache of one KV head (dense decode), packed as block id
// << 32 | offset in the block; -1 when its block id is outside the cache.
__device__ __forceinline__ int64_t key_slot(const DecodeArgs &a, int64_t b, int64_t t) {
    const CacheArgs &c = a.kv;
    int64_t blk = a.block_table[b * a.block_table_stride + t / c.block_size];
    if (blk < 0 || blk >= c.num_blocks) return -1;
    return (blk << 32) | (t % c.block_size);
}

// Key k of sparse unit u, whose first key set holds n0 of the unit's keys: the cache set it
// lives in (*set) and its element offset (PLAIN, KV head included) or packed slot (FP8); -1
// when the entry is invalid (negative, or not below the set's num_blocks * block_size) or
// past the unit's keys. Nothing of the cache is read.
__device__ __forceinline__ int64_t sparse_key(const DecodeArgs &a, int64_t u, int64_t n0,
                                              int64_t n_keys, int64_t k, int *set) {
    *set = k < n0 ? 0 : 1;
    if (k >= n_keys) return -1;
    const KeySetArgs &ks = a.set[*set];
    const int64_t e = k < n0 ? k : k - n0;
    const int64_t b = sparse_request(a, u), j = (u / a.h_kv) % a.s_q, kvh = u % a.h_kv;
    const int64_t idx = ks.indices[b * ks.istride[0] + j * ks.istride[1] + kvh * ks.istride[2] + e];
    const CacheArgs &c = ks.cache;
    if (idx < 0 || idx >= c.num_blocks * c.block_size) return -1;
    const int64_t blk = idx / c.block_size, off = idx % c.block_size;
    if (c.kind != MLA_CACHE_PLAIN) return (blk << 32) | off;
    return blk * c.block_stride + off * c.token_stride + kvh * c.head_stride;
}

// Byte offsets of the data row and the scales of an FP8 cache slot (key_slot's packing).
__device__ __forceinline__ int64_t fp8_row_offset(const CacheArgs &c, int64_t slot) {
    const int64_t blk = slot >> 32, off = slot & 0xffffffff;
    return c.kind == MLA_CACHE_V32 ? (blk * c.block_size + off) * c.fp8.data_row_bytes
                                   : blk * c.fp8.block_bytes + off * c.fp8.data_row_bytes;
}
__device__ __forceinline__ int64_t fp8_scale_offset(const CacheArgs &c, int64_t slot) {
    const int64_t blk = slot >> 32, off = slot & 0xffffffff;
    return c.kind == MLA_CACHE_V32
               ? (blk * c.block_size + off) * c.fp8.data_row_bytes + c.fp8.d_nope
               : blk * c.fp8.block_bytes + c.block_size * c.fp8.data_row_bytes +
                     off * c.fp8.scale_row_bytes;
}

// float8_e4m3fn -> float, exact (0x7f / 0xff are NaN): the append's codec.
__device__ __forceinline__ float fp8_e4m3_value(uint32_t v) {
    return conv::fp8_e4m3_to_float(uint8_t(v));
}

// A UE8M0 scale byte e: 2^(e - 127), the float with exponent field e (0: 2^-127).
__device__ __forceinline__ float ue8m0_value(uint32_t e) {
    return __uint_as_float(e ? e << 23 : 0x00400000u);
}

// Scale of FP8 tile `t` of a row whose scales start at byte `sc`: V32 a float32, MODEL1 a
// UE8M0 byte (2^(byte - 127)). Byte loads: a V32 row may sit at any address.
__device__ __forceinline__ float fp8_scale(const CacheArgs &c, const uint8_t *sc, int64_t t) {
    if (c.kind == MLA_CACHE_V32) {
        const uint8_t *p = sc + 4 * t;
        return __uint_as_float(uint32_t(p[0]) | uint32_t(p[1]) << 8 | uint32_t(p[2]) << 16 |
                               uint32_t(p[3]) << 24);
    }
    return ue8m0_value(sc[t]);
}

// Dim d of an FP8 cache row, dequantised as the CPU's read_token does (fp8 * scale in float,
// the RoPE part from bf16). `row` and `sc` from fp8_row_offset / fp8_scale_offset.
template <typename Acc>
__device__ __forceinline__ Acc fp8_elem(const CacheArgs &c, const uint8_t *row,
                                        const uint8_t *sc, int64_t d) {
    if (d < c.fp8.d_nope)
        return Acc(fp8_e4m3_value(row[d]) * fp8_scale(c, sc, d / c.fp8.tile));
    const uint8_t *r = row + c.fp8.rope_at + 2 * (d - c.fp8.d_nope);
    return Acc(__uint_as_float((uint32_t(r[0]) | uint32_t(r[1]) << 8) << 16));
}

// Last key query j of a request of `len` keys may attend (-1: none); dense decode.
__device__ __forceinline__ int64_t last_key(const DecodeArgs &a, int64_t len, int64_t j) {
    int64_t hi = len - 1;
    if (a.causal) {
        int64_t c = len - a.s_q + j;
        hi = c < hi ? c : hi;
    }
    return hi;
}

// ---- epilogue --------------------------------------------------------------------------------

// Writes output row (request b, query j, head h) from row[0, d_v) (shared memory, the
// attention output already divided by its normaliser), its lse (natural log, +inf when the
// query attended no key, NaN when it saw a NaN key: the row is NaN then and stays NaN) and,
// when asked for, its largest logit (natural units), in the order of the CPU kernel: sink
// factor, VVPA rotation by R(-position), store in out's dtype. One warp; row is modified in
// place.
template <typename Acc>
__device__ void write_row(const DecodeArgs &a, Acc *row, int64_t b, int64_t j, int64_t h,
                          Acc lse, float max_logit, int lane) {
    const bool none = lse == Acc(INFINITY);
    Acc factor = Acc(1);
    if (!none && a.sink) {
        const Acc s = Acc(a.sink[h]);
        if (s == Acc(INFINITY))
            factor = Acc(0);
        else if (s != -Acc(INFINITY))
            factor = Acc(1) / (Acc(1) + exp(s - lse));
    }
    for (int64_t c = lane; c < a.d_v; c += 32) row[c] = none ? Acc(0) : row[c] * factor;
    __syncwarp();
    const RotationArgs &r = a.rot;
    if (r.positions) {
        const int64_t pos = r.positions[b * a.s_q + j];
        const int half = r.rope_dim / 2;
        const bool in_table = !r.cos_table || (pos >= 0 && pos < r.table_len);
        for (int i = lane; i < half; i += 32) {
            double c = 0, s = 0;
            if (r.cos_table) {
                if (in_table) {
                    c = r.cos_table[pos * half + i];
                    s = r.sin_table[pos * half + i];
                }
            } else {
                sincos(double(pos) * r.freqs[i], &s, &c);
            }
            s = -s;  // R(-position)
            int i0, i1;
            if (r.style == MLA_ROPE_INTERLEAVED) {
                i0 = r.start + 2 * i;
                i1 = i0 + 1;
            } else {
                i0 = r.start + i;
                i1 = i0 + half;
            }
            const double x0 = row[i0], x1 = row[i1];
            row[i0] = in_table ? Acc(x0 * c - x1 * s) : Acc(NAN);
            row[i1] = in_table ? Acc(x0 * s + x1 * c) : Acc(NAN);
        }
        __syncwarp();
    }
    const int64_t base = b * a.out_stride[0] + j * a.out_stride[1] + h * a.out_stride[2];
    for (int64_t c = lane; c < a.d_v; c += 32) store_elem<Acc>(a.out, a.dtype, base + c, row[c]);
    if (lane == 0) {
        const int64_t at = (b * a.h_q + h) * a.s_q + j;
        a.lse[at] = float(lse);
        if (a.max_logit) a.max_logit[at] = none ? -INFINITY : max_logit;
    }
    __syncwarp();
}

}  // namespace cuda
}  // namespace mla
