// The one parameter struct of the dense decode kernels (scheduler, main kernels, combine,
// CUDA-core kernel), built on the host from mla_dense_decode_params by dense_decode.cu and
// passed by value as a __grid_constant__ kernel parameter; plus the device helpers every
// kernel shares: element conversion, key addressing and the output epilogue (sink, VVPA
// rotation, store, lse).
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cstdint>
#include "mla/mla.h"
#include "cuda/common/convert.cuh"

namespace mla {
namespace cuda {

// Query rows of one main-kernel CTA (an m-block): rows of a (request, KV head) unit are
// row = query * group + head, as in the CPU kernel; partial results are kept per m-block.
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

// Split-KV schedule (common/decode_schedule.cu). A unit u = request * h_kv + kv_head has
// n_u = ceil(len / tile) key tiles; its cost is n_u + overhead. cum[u] is the cost before u,
// cum[U] the total C. Partition p of `parts` owns the cost range [floor(p C / parts),
// floor((p + 1) C / parts)), i.e. the (unit, tile) pairs from part[2p], part[2p + 1] up to
// part[2p + 2], part[2p + 3] (exclusive, lexicographic). A unit whose tiles fall in more than
// one partition is split: each piece leaves a partial (out / l, lse) in slot
// ((m_block * parts + p) * 2 + (piece is the partition's first ? 0 : 1)), and the combine
// kernel merges them.
struct ScheduleArgs {
    int64_t *cum;        // [U + 1]
    int32_t *part;       // [2 * (parts + 1)]
    float *part_o;       // [n_mblocks * parts * 2][kBlockRows][d_v]
    float *part_lse;     // [n_mblocks * parts * 2][kBlockRows], natural log, -inf: no key
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

struct DecodeArgs {
    int32_t dtype;       // q and out
    int32_t kv_dtype;    // elements of the plain cache
    int32_t kv_kind;     // mla_cache_kind
    Fp8Args fp8;         // kv_kind V32 / MODEL1
    int64_t b, s_q, h_q, h_kv, group, d_qk, d_v;
    int64_t rows;        // s_q * group: query rows of a unit
    int32_t n_mblocks;   // ceil(rows / kBlockRows)
    int32_t row_alloc;   // elements of a shared-memory row of Q / K (main kernels)
    const void *q;
    int64_t q_stride[3];
    const void *kv;
    int64_t num_blocks, block_size, block_stride, token_stride, head_stride;
    const int32_t *block_table;
    int64_t block_table_stride, max_blocks_per_seq;
    const int32_t *seqlens;
    float scale, scale_log2;
    int32_t causal;
    const float *sink;
    RotationArgs rot;
    void *out;
    int64_t out_stride[3];
    float *lse;
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

// ---- addressing ----------------------------------------------------------------------------

// Keys of request b: cache_seqlens[b] clamped to what its block-table row can address.
__device__ __forceinline__ int64_t seq_len(const DecodeArgs &a, int64_t b) {
    int64_t len = a.seqlens[b];
    int64_t cap = a.max_blocks_per_seq * a.block_size;
    return len < 0 ? 0 : (len > cap ? cap : len);
}

// Element offset of token t of request b, KV head kvh; -1 when its block id is outside the
// cache (nothing is read then).
__device__ __forceinline__ int64_t key_offset(const DecodeArgs &a, int64_t b, int64_t kvh,
                                              int64_t t) {
    int64_t blk = a.block_table[b * a.block_table_stride + t / a.block_size];
    if (blk < 0 || blk >= a.num_blocks) return -1;
    return blk * a.block_stride + (t % a.block_size) * a.token_stride + kvh * a.head_stride;
}

// Slot of token t of request b in a cache of one KV head, packed as block id << 32 | offset
// in the block; -1 when its block id is outside the cache (nothing is read then).
__device__ __forceinline__ int64_t key_slot(const DecodeArgs &a, int64_t b, int64_t t) {
    int64_t blk = a.block_table[b * a.block_table_stride + t / a.block_size];
    if (blk < 0 || blk >= a.num_blocks) return -1;
    return (blk << 32) | (t % a.block_size);
}

// Byte offsets of the data row and the scales of an FP8 cache slot (key_slot's packing).
__device__ __forceinline__ int64_t fp8_row_offset(const DecodeArgs &a, int64_t slot) {
    const int64_t blk = slot >> 32, off = slot & 0xffffffff;
    return a.kv_kind == MLA_CACHE_V32 ? (blk * a.block_size + off) * a.fp8.data_row_bytes
                                      : blk * a.fp8.block_bytes + off * a.fp8.data_row_bytes;
}
__device__ __forceinline__ int64_t fp8_scale_offset(const DecodeArgs &a, int64_t slot) {
    const int64_t blk = slot >> 32, off = slot & 0xffffffff;
    return a.kv_kind == MLA_CACHE_V32
               ? (blk * a.block_size + off) * a.fp8.data_row_bytes + a.fp8.d_nope
               : blk * a.fp8.block_bytes + a.block_size * a.fp8.data_row_bytes +
                     off * a.fp8.scale_row_bytes;
}

// float8_e4m3fn -> float, exact (0x7f / 0xff are NaN): the append's codec.
__device__ __forceinline__ float fp8_e4m3_value(uint32_t v) {
    return conv::fp8_e4m3_to_float(uint8_t(v));
}

// Scale of FP8 tile `t` of a row whose scales start at byte `sc`: V32 a float32, MODEL1 a
// UE8M0 byte (2^(byte - 127)). Byte loads: a V32 row may sit at any address.
__device__ __forceinline__ float fp8_scale(const DecodeArgs &a, const uint8_t *sc, int64_t t) {
    if (a.kv_kind == MLA_CACHE_V32) {
        const uint8_t *p = sc + 4 * t;
        return __uint_as_float(uint32_t(p[0]) | uint32_t(p[1]) << 8 | uint32_t(p[2]) << 16 |
                               uint32_t(p[3]) << 24);
    }
    const uint32_t e = sc[t];  // 2^(e - 127): the float with exponent field e (0: 2^-127)
    return __uint_as_float(e ? e << 23 : 0x00400000u);
}

// Dim d of an FP8 cache row, dequantised as the CPU's read_token does (fp8 * scale in float,
// the RoPE part from bf16). `row` and `sc` from fp8_row_offset / fp8_scale_offset.
template <typename Acc>
__device__ __forceinline__ Acc fp8_elem(const DecodeArgs &a, const uint8_t *row,
                                        const uint8_t *sc, int64_t d) {
    if (d < a.fp8.d_nope)
        return Acc(fp8_e4m3_value(row[d]) * fp8_scale(a, sc, d / a.fp8.tile));
    const uint8_t *r = row + a.fp8.rope_at + 2 * (d - a.fp8.d_nope);
    return Acc(__uint_as_float((uint32_t(r[0]) | uint32_t(r[1]) << 8) << 16));
}

// Last key query j of a request of `len` keys may attend (-1: none).
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
// attention output already divided by its normaliser) and its lse (natural log, +inf when the
// query attended no key, NaN when it saw a NaN key: the row is NaN then and stays NaN), in the
// order of the CPU kernel: sink factor, VVPA rotation by R(-position), store in out's dtype.
// One warp; row is modified in place.
template <typename Acc>
__device__ void write_row(const DecodeArgs &a, Acc *row, int64_t b, int64_t j, int64_t h,
                          Acc lse, int lane) {
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
    if (lane == 0) a.lse[(b * a.h_q + h) * a.s_q + j] = float(lse);
    __syncwarp();
}

// Request, query and head of row `row_in_block` of m-block mb of unit u.
struct RowId {
    int64_t b, j, h;
};

__device__ __forceinline__ RowId row_id(const DecodeArgs &a, int64_t u, int mb, int r) {
    const int64_t rin = int64_t(mb) * kBlockRows + r;
    RowId id;
    id.b = u / a.h_kv;
    id.j = rin / a.group;
    id.h = (u % a.h_kv) * a.group + rin % a.group;
    return id;
}

// Tiles of unit u in the schedule.
__device__ __forceinline__ int64_t unit_tiles(const ScheduleArgs &s, int64_t u) {
    return s.cum[u + 1] - s.cum[u] - s.overhead;
}

}  // namespace cuda
}  // namespace mla
