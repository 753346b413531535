// sm_80+ tensor-core dense decode: one CTA per (partition of the split-KV schedule, m-block of
// 64 query rows) walks its (unit, key tile) range. Per key tile the CTA loads the BN key rows
// once (cp.async, two stages, addressed row by row through the block table so any block_size
// works) and all 64 query rows (heads x queries of one KV head: the MQA sharing) use them:
//   S = Q K^T     warp (rg, kh): rows 16 rg .. +16, keys kh BN/2 .. +BN/2   (mma.sync m16n8k16)
//   online softmax in log2 units; the two key halves of a row group swap row maxima and P
//   through shared memory (named barrier per warp pair)
//   O += P V      warp (rg, kh): rows 16 rg .. +16, value columns kh DV/2 .. +DV/2; V is the
//                 first d_v columns of the same K tile (ldmatrix.trans)
// A unit finished inside the CTA is written through the shared epilogue (write_row); a piece
// of a split unit leaves (out / l, lse) in its slot for the combine kernel.
// Shared-memory rows of Q and K are row_alloc (d_qk rounded up to 64) elements with their
// 16-byte chunks XOR-swizzled by (row & 7), so ldmatrix is free of bank conflicts.
// FP8 caches (FP8 = true): a tile's raw rows are copied a tile ahead into the stage that will
// hold them and each warp dequantises its rows there after its work on the current tile
// (fp8_rows.cuh); the rest of the kernel is the same.
#pragma once
#include "cuda/common/check.cuh"
#include "cuda/common/decode_args.cuh"
#include "cuda/common/decode_epilogue.cuh"
#include "cuda/common/ptx.cuh"
#include "cuda/sm80/config.h"
#include "cuda/sm80/decode_mma.h"
#include "cuda/sm80/fp8_rows.cuh"

namespace mla {
namespace cuda {
namespace sm80 {

// Byte offsets of the shared-memory regions. The epilogue stages a finished block of rows as
// float [64][d_v + 8] over the Q and K regions (the padding spreads rows across banks).
struct MmaSmem {
    int64_t q, k, p, max, l, lse, total;
};

__host__ __device__ inline MmaSmem mma_smem_layout(int64_t row_alloc, int64_t d_v, int bn,
                                                   int elem_bytes) {
    MmaSmem s;
    s.q = 0;
    s.k = kBlockRows * row_alloc * elem_bytes;
    const int64_t qk = s.k + 2 * bn * row_alloc * elem_bytes;
    const int64_t stage = kBlockRows * (d_v + 8) * 4;
    int64_t at = ((qk > stage ? qk : stage) + 127) / 128 * 128;
    s.p = at;
    at += kBlockRows * bn * elem_bytes;
    s.max = at;
    at += 2 * kBlockRows * 4;
    s.l = at;
    at += 2 * kBlockRows * 4;
    s.lse = at;
    at += kBlockRows * 4;
    s.total = at;
    return s;
}

template <typename T, int DV, int BN, bool FP8>
__global__ void __launch_bounds__(kThreads, 1)
    decode_mma_kernel(const __grid_constant__ DecodeArgs a) {
    static_assert(BN == 32 || BN == 64, "key tile");
    static_assert(DV % 32 == 0 && DV >= 64, "value tier");
    constexpr int kKeysPerWarp = BN / 2;        // S columns of one warp
    constexpr int kSTiles = kKeysPerWarp / 8;   // their n8 tiles
    constexpr int kOwnSteps = kKeysPerWarp / 16;
    constexpr int kPvSteps = BN / 16;
    constexpr int kOCols = DV / 2;              // O columns of one warp
    constexpr int kOTiles = kOCols / 8;
    constexpr int kLoadRows = BN / kWarps;      // key rows each warp loads per tile

    extern __shared__ __align__(128) unsigned char smem[];
    const ScheduleArgs &sc = a.sched;
    const int part = blockIdx.x, mb = blockIdx.y;
    const int32_t *pp = sc.part + 2 * part;
    const int64_t us = pp[0], ts = pp[1], ue = pp[2], te = pp[3];
    if (us == ue && ts == te) return;  // empty partition

    const MmaSmem L = mma_smem_layout(a.row_alloc, a.d_v, BN, int(sizeof(T)));
    const uint32_t s_base = ptx::smem_addr(smem);
    const uint32_t sQ = s_base + uint32_t(L.q), sK = s_base + uint32_t(L.k);
    const uint32_t sP = s_base + uint32_t(L.p);
    float *s_max = reinterpret_cast<float *>(smem + L.max);
    float *s_l = reinterpret_cast<float *>(smem + L.l);
    float *s_lse = reinterpret_cast<float *>(smem + L.lse);
    float *stage = reinterpret_cast<float *>(smem);
    const int ra = a.row_alloc;
    const uint32_t k_stage_bytes = uint32_t(BN * ra * sizeof(T));

    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    const int rg = warp % kRowGroups, kh = warp / kRowGroups;
    const int g = lane >> 2, q4 = lane & 3;
    const int rows_blk = int(min64(kBlockRows, a.rows - int64_t(mb) * kBlockRows));
    const bool active = rg * kRowsPerWarp < rows_blk;  // same for both warps of a pair
    const int row0 = rg * kRowsPerWarp + g, row1 = row0 + 8;
    const int dchunks = int(a.d_qk / 8), ksteps = int(a.d_qk / 16);
    const int dv = int(a.d_v), stage_ld = dv + 8;
    const T *qg = static_cast<const T *>(a.q);
    const T *kvg = static_cast<const T *>(a.kv.data);

    // Byte offset of 16-byte chunk c of row r: Q / K rows, and P rows (BN / 8 chunks).
    auto swz = [&](int r, int c) -> uint32_t { return swizzled(r, c, ra, int(sizeof(T))); };
    auto swz_p = [&](int r, int c) -> uint32_t {
        const int x = BN == 64 ? (r & 7) : ((r >> 1) & 3);
        return uint32_t((r * BN + ((c ^ x) << 3)) * int(sizeof(T)));
    };

    for (int64_t u = us; u < ue || (u == ue && te > 0); ++u) {
        // Token and tile indices fit 32 bits: a request holds < 2^31 keys.
        const int n_u = int(unit_tiles(sc, u));
        const int t0 = u == us ? int(ts) : 0, t1 = u == ue ? int(te) : n_u;
        const bool complete = t0 == 0 && t1 == n_u;
        const int64_t b = u / a.h_kv, kvh = u % a.h_kv;
        const int len = int(seq_len(a, b));

        float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};
        float o[kOTiles][4];
#pragma unroll
        for (int nt = 0; nt < kOTiles; ++nt) o[nt][0] = o[nt][1] = o[nt][2] = o[nt][3] = 0.f;

        // Key rows of a tile: lanes < kLoadRows look up their row's cache offset (block table
        // read one tile ahead, so its latency hides behind a tile of work), then the warp
        // copies its kLoadRows rows into a stage. FP8 caches: the row's slot (fp8_rows.cuh).
        auto fetch_offsets = [&](int t) -> int64_t {
            int64_t off = -1;
            const int tok = t * BN + warp + kWarps * lane;
            if (lane < kLoadRows && t < t1 && tok < len)
                off = FP8 ? key_slot(a, b, tok) : key_offset(a, b, kvh, tok);
            return off;
        };
        auto load_k = [&](int buf, int64_t my_off) {
            const uint32_t kb = sK + uint32_t(buf) * k_stage_bytes;
#pragma unroll
            for (int i = 0; i < kLoadRows; ++i) {
                const int64_t off = __shfl_sync(0xffffffffu, my_off, i);
                const int r = warp + kWarps * i;
                const T *src = off >= 0 ? kvg + off : kvg;
                const int bytes = off >= 0 ? 16 : 0;  // past the sequence: zeros, no read
                for (int c = lane; c < dchunks; c += 32)
                    ptx::cp_async_16(kb + swz(r, c), src + c * 8, bytes);
            }
        };
        // FP8: the raw rows of a tile into a stage, and their dequantisation in place (each
        // warp its own rows; the copy must have landed).
        auto copy_raw = [&](int buf, int64_t my_slot) {
            const uint32_t kb = sK + uint32_t(buf) * k_stage_bytes;
#pragma unroll
            for (int i = 0; i < kLoadRows; ++i) {
                const int64_t slot = __shfl_sync(0xffffffffu, my_slot, i);
                const int r = warp + kWarps * i;
                fp8_copy_row(a, kb + uint32_t(r * ra * int(sizeof(T))), slot, lane);
            }
        };
        auto dequant = [&](int buf, int64_t my_slot) {
            const uint32_t kb = sK + uint32_t(buf) * k_stage_bytes;
#pragma unroll
            for (int i = 0; i < kLoadRows; ++i) {
                const int64_t slot = __shfl_sync(0xffffffffu, my_slot, i);
                fp8_dequant_row<T>(a, kb, warp + kWarps * i, ra, slot, lane);
            }
        };

        if (t0 < t1) {
            for (int r = warp; r < kBlockRows; r += kWarps) {
                const bool valid = r < rows_blk;
                const T *src = qg;
                if (valid) {
                    const RowId id = row_id(a, u, mb, r);
                    src += id.b * a.q_stride[0] + id.j * a.q_stride[1] + id.h * a.q_stride[2];
                }
                for (int c = lane; c < dchunks; c += 32)
                    ptx::cp_async_16(sQ + swz(r, c), src + c * 8, valid ? 16 : 0);
            }
            if constexpr (FP8) {
                const int64_t first = fetch_offsets(t0);
                copy_raw(0, first);
                ptx::cp_async_commit();
                ptx::cp_async_wait<0>();
                __syncwarp();
                dequant(0, first);
            } else {
                load_k(0, fetch_offsets(t0));
                ptx::cp_async_commit();
            }
            int64_t next_off = fetch_offsets(t0 + 1);

            int lim[2];
#pragma unroll
            for (int i = 0; i < 2; ++i) {
                const int64_t rin = int64_t(mb) * kBlockRows + row0 + 8 * i;
                lim[i] = int(last_key(a, len, rin / a.group));
            }
            const int min_lim = a.causal ? len - int(a.s_q) : len - 1;

            for (int t = t0; t < t1; ++t) {
                const int buf = (t - t0) & 1;
                if (t + 1 < t1) {
                    if constexpr (FP8)
                        copy_raw(buf ^ 1, next_off);
                    else
                        load_k(buf ^ 1, next_off);
                }
                ptx::cp_async_commit();
                [[maybe_unused]] const int64_t staged_off = next_off;  // FP8: rows of tile t + 1
                next_off = fetch_offsets(t + 2);
                ptx::cp_async_wait<1>();
                __syncthreads();

                if (active) {
                    const uint32_t kb = sK + uint32_t(buf) * k_stage_bytes;
                    // S = Q K^T for this warp's 16 rows x kKeysPerWarp keys.
                    float s[kSTiles][4];
#pragma unroll
                    for (int nt = 0; nt < kSTiles; ++nt)
                        s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.f;
                    const int ar = rg * kRowsPerWarp + (lane & 15), ac = lane >> 4;
                    const int br = kh * kKeysPerWarp + ((lane >> 4) << 3) + (lane & 7);
                    const int bc = (lane >> 3) & 1;
#pragma unroll 2
                    for (int ks = 0; ks < ksteps; ++ks) {
                        uint32_t af[4];
                        ptx::ldmatrix_x4(af, sQ + swz(ar, 2 * ks + ac));
#pragma unroll
                        for (int np = 0; np < kSTiles / 2; ++np) {
                            uint32_t bf[4];
                            ptx::ldmatrix_x4(bf, kb + swz(br + np * 16, 2 * ks + bc));
                            ptx::mma_16816<T>(s[2 * np], af, bf[0], bf[1]);
                            ptx::mma_16816<T>(s[2 * np + 1], af, bf[2], bf[3]);
                        }
                    }

                    // Scale to log2 units, mask, row maxima over both key halves.
                    const bool masked = (t + 1) * BN - 1 > min_lim;
                    const int key0 = t * BN + kh * kKeysPerWarp + q4 * 2;
                    float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
                    for (int nt = 0; nt < kSTiles; ++nt)
#pragma unroll
                        for (int e = 0; e < 4; ++e) {
                            float v = s[nt][e] * a.scale_log2;
                            if (masked && key0 + nt * 8 + (e & 1) > lim[e >> 1]) v = -INFINITY;
                            s[nt][e] = v;
                            mx[e >> 1] = fmaxf(mx[e >> 1], v);
                        }
#pragma unroll
                    for (int i = 0; i < 2; ++i) {
                        mx[i] = fmaxf(mx[i], __shfl_xor_sync(0xffffffffu, mx[i], 1));
                        mx[i] = fmaxf(mx[i], __shfl_xor_sync(0xffffffffu, mx[i], 2));
                    }
                    if (q4 == 0) {
                        s_max[kh * kBlockRows + row0] = mx[0];
                        s_max[kh * kBlockRows + row1] = mx[1];
                    }
                    ptx::named_barrier(1 + rg, 64);

                    float mu[2], alpha[2];
#pragma unroll
                    for (int i = 0; i < 2; ++i) {
                        const int r = row0 + 8 * i;
                        const float mn = fmaxf(m[i], fmaxf(s_max[r], s_max[kBlockRows + r]));
                        mu[i] = mn == -INFINITY ? 0.f : mn;
                        alpha[i] = exp2f(m[i] - mu[i]);
                        m[i] = mn;
                    }
                    // P = 2^(s - m): kept as A fragments for the own key half, and shared.
                    uint32_t pa[kOwnSteps][4];
                    float rs[2] = {0.f, 0.f};
#pragma unroll
                    for (int nt = 0; nt < kSTiles; ++nt) {
                        const float p0 = exp2f(s[nt][0] - mu[0]), p1 = exp2f(s[nt][1] - mu[0]);
                        const float p2 = exp2f(s[nt][2] - mu[1]), p3 = exp2f(s[nt][3] - mu[1]);
                        rs[0] += p0 + p1;
                        rs[1] += p2 + p3;
                        const uint32_t lo = ptx::pack2<T>(p0, p1), hi = ptx::pack2<T>(p2, p3);
                        pa[nt / 2][(nt & 1) * 2] = lo;
                        pa[nt / 2][(nt & 1) * 2 + 1] = hi;
                        const int chunk = kh * kSTiles + nt;
                        const uint32_t a0 = sP + swz_p(row0, chunk) + q4 * 4;
                        const uint32_t a1 = sP + swz_p(row1, chunk) + q4 * 4;
                        asm volatile("st.shared.u32 [%0], %1;\n" ::"r"(a0), "r"(lo));
                        asm volatile("st.shared.u32 [%0], %1;\n" ::"r"(a1), "r"(hi));
                    }
#pragma unroll
                    for (int i = 0; i < 2; ++i) l[i] = l[i] * alpha[i] + rs[i];
#pragma unroll
                    for (int nt = 0; nt < kOTiles; ++nt) {
                        o[nt][0] *= alpha[0];
                        o[nt][1] *= alpha[0];
                        o[nt][2] *= alpha[1];
                        o[nt][3] *= alpha[1];
                    }
                    ptx::named_barrier(1 + rg, 64);

                    // O += P V over the tile's keys, this warp's value columns. Keys past
                    // min_lim are hidden from some rows of the block by the causal mask.
                    const bool hidden_zone = masked && a.causal && a.s_q > 1;
                    const int vr = ((lane >> 3) & 1) * 8 + (lane & 7), vc = lane >> 4;
#pragma unroll
                    for (int ks = 0; ks < kPvSteps; ++ks) {
                        uint32_t af[4];
                        if (ks / kOwnSteps == kh) {
#pragma unroll
                            for (int i = 0; i < 4; ++i) af[i] = pa[ks % kOwnSteps][i];
                        } else {
                            ptx::ldmatrix_x4(af, sP + swz_p(rg * kRowsPerWarp + (lane & 15),
                                                            2 * ks + (lane >> 4)));
                        }
#pragma unroll
                        for (int np = 0; np < kOTiles / 2; ++np) {
                            const int col0 = kh * kOCols + np * 16;
                            if (col0 < dv) {
                                uint32_t bf[4];
                                ptx::ldmatrix_x4_trans(bf,
                                                       kb + swz(ks * 16 + vr, (col0 >> 3) + vc));
                                if (hidden_zone) {  // see ptx::zero_nonfinite2
#pragma unroll
                                    for (int i = 0; i < 4; ++i) {
                                        const int key = t * BN + ks * 16 + (i & 1) * 8 + q4 * 2;
                                        bf[i] = ptx::zero_nonfinite2<T>(bf[i], key > min_lim,
                                                                        key + 1 > min_lim);
                                    }
                                }
                                ptx::mma_16816<T>(o[2 * np], af, bf[0], bf[1]);
                                ptx::mma_16816<T>(o[2 * np + 1], af, bf[2], bf[3]);
                            }
                        }
                    }
                }
                if constexpr (FP8) {
                    // Tile t + 1 into T while other warps may still work on tile t.
                    if (t + 1 < t1) {
                        ptx::cp_async_wait<0>();
                        __syncwarp();
                        dequant(buf ^ 1, staged_off);
                    }
                }
                __syncthreads();  // the stage just read is refilled next iteration
            }
        }

        // Epilogue: the row normaliser over both key halves, then the rows or the partial.
        float lse[2] = {INFINITY, INFINITY}, inv[2] = {0.f, 0.f};
        if (active) {
#pragma unroll
            for (int i = 0; i < 2; ++i) {
                l[i] += __shfl_xor_sync(0xffffffffu, l[i], 1);
                l[i] += __shfl_xor_sync(0xffffffffu, l[i], 2);
            }
            if (q4 == 0) {
                s_l[kh * kBlockRows + row0] = l[0];
                s_l[kh * kBlockRows + row1] = l[1];
            }
            ptx::named_barrier(1 + rg, 64);
#pragma unroll
            for (int i = 0; i < 2; ++i) {
                const int r = row0 + 8 * i;
                // NaN sums: the row saw a NaN key; lse and out stay NaN, through the combine too.
                const RowResult res = row_result(m[i], s_l[r] + s_l[kBlockRows + r], complete);
                lse[i] = res.lse;
                inv[i] = res.inv;
            }
        }
        if (complete) {
            ptx::cp_async_wait<0>();
            __syncthreads();  // the staging area overlays Q and K
            if (active) {
                store_o_rows<kOTiles>([&](int nt, int e) { return o[nt][e]; }, inv, stage, stage_ld, row0,
                                      row1, q4, kh * kOCols, dv, kBlockRows);
                if (kh == 0 && q4 == 0) {
                    s_lse[row0] = lse[0];
                    s_lse[row1] = lse[1];
                }
            }
            __syncthreads();
            for (int r = warp; r < rows_blk; r += kWarps) {
                const RowId id = row_id(a, u, mb, r);
                write_row<float>(a, stage + r * stage_ld, id.b, id.j, id.h, s_lse[r], 0.f, lane);
            }
            __syncthreads();
        } else if (active) {
            const int64_t slot = (int64_t(mb) * sc.parts + part) * 2 + (u == us ? 0 : 1);
            store_o_rows<kOTiles>([&](int nt, int e) { return o[nt][e]; }, inv,
                                  sc.part_o + slot * kBlockRows * a.d_v, dv, row0, row1, q4, kh * kOCols,
                                  dv, rows_blk);
            if (kh == 0 && q4 == 0) {
                sc.part_lse[slot * kBlockRows + row0] = lse[0];
                sc.part_lse[slot * kBlockRows + row1] = lse[1];
            }
        }
        if (!complete) __syncthreads();  // s_l is rewritten by the next unit's epilogue
    }
}

template <typename T, int DV, int BN, bool FP8>
mla_status launch_decode_mma(const DecodeArgs &a, cudaStream_t stream, const char *op) {
    const int64_t smem = decode_mma_smem(a, BN, int(sizeof(T)));
    MLA_CUDA_TRY(cudaFuncSetAttribute(decode_mma_kernel<T, DV, BN, FP8>,
                                      cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
    const dim3 grid(unsigned(a.sched.parts), unsigned(a.n_mblocks));
    decode_mma_kernel<T, DV, BN, FP8><<<grid, kThreads, size_t(smem), stream>>>(a);
    MLA_CUDA_LAUNCHED("decode_mma_kernel launch");
    return MLA_OK;
}

}  // namespace sm80
}  // namespace cuda
}  // namespace mla

// FP8: false for a plain cache of T, true for the V32 / MODEL1 layouts (fp8_rows.cuh).
#define MLA_INSTANTIATE_DECODE_MMA(T, DV, BN, FP8)                                      \
    template mla_status mla::cuda::sm80::launch_decode_mma<T, DV, BN, FP8>(             \
        const mla::cuda::DecodeArgs &, cudaStream_t, const char *);
