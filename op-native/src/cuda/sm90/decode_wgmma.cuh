// sm_90a dense decode with warpgroup MMA (HGMMA): the schedule, epilogue and partial format
// of the sm80 kernel (decode_mma.cuh), with the two matrix products on wgmma:
//   S = Q K^T     warpgroup w: all 64 rows x keys 32 w .. +32 of the tile, m64n32k16 over d_qk
//                 (Q and K K-major in shared memory)
//   online softmax in log2 units; the warpgroups swap row maxima through shared memory and
//   write their half of P (bf16 / fp16) into one 64 x 64 tile
//   O += P V      warpgroup w: all 64 rows x value columns 256 w .. +256, m64n256k16 over the
//                 64 keys (P K-major, V = the K tile read MN-major: no transposed copy)
// Key rows arrive by cp.async, addressed row by row through the block table (any
// block_size), into two stages; S of tile t + 1 is issued right behind P V of tile t, and the
// stage of tile t refills (tile t + 2) as soon as P V(t) is done. Q, K and P live in the
// 128-byte-swizzled layout that wgmma reads: column block cb (64 elements) of row r at
// cb * rows * 128 + r * 128, its 16-byte chunk c at c ^ (r % 8).
#pragma once
#include "cuda/common/check.cuh"
#include "cuda/common/decode_args.cuh"
#include "cuda/common/ptx.cuh"
#include "cuda/sm90/config.h"
#include "cuda/sm90/decode_wgmma.h"
#include "cuda/sm90/wgmma.cuh"

namespace mla {
namespace cuda {
namespace sm90 {

// Byte offsets from a 1024-byte aligned base (the dynamic allocation carries 1024 bytes of
// slack to reach it). The epilogue stages float [64][d_v + 8] over Q and K.
struct WgmmaSmem {
    int64_t q, k, k_stage, p, max, l, lse, total;
};

__host__ __device__ inline WgmmaSmem wgmma_smem_layout(int64_t d_qk, int64_t d_v) {
    WgmmaSmem s;
    s.q = 0;
    s.k = kBlockRows * d_qk * 2;        // 64 rows of d_qk two-byte elements
    s.k_stage = kTileKeys * d_qk * 2;
    const int64_t qk = s.k + 2 * s.k_stage;
    const int64_t stage = kBlockRows * (d_v + 8) * 4;
    int64_t at = ((qk > stage ? qk : stage) + 1023) / 1024 * 1024;
    s.p = at;
    at += kBlockRows * kTileKeys * 2;
    s.max = at;
    at += 2 * kBlockRows * 4;
    s.l = at;
    at += 2 * kBlockRows * 4;
    s.lse = at;
    at += kBlockRows * 4;
    s.total = at + 1024;
    return s;
}

// Bytes of one column block (64 elements) of a 64-row region: Q, a K stage, P.
constexpr uint32_t kColBlockBytes = 64 * 128;
static_assert(kBlockRows == 64 && kTileKeys == 64, "64-row regions");

// Swizzled byte offset of the 16-byte chunk holding elements 8 c .. 8 c + 7 of row r, in a
// region of `rows` rows.
__device__ __forceinline__ uint32_t swz128(int r, int c, int rows) {
    return uint32_t((c >> 3) * rows * 128 + r * 128 + (((c & 7) ^ (r & 7)) << 4));
}

// DQK: d_qk at compile time (512 or 576): the S loop must be unrolled for the wgmma
// instructions to stay pipelined (a run-time loop makes ptxas serialise them, warning C7515).
template <typename T, int DQK>
__global__ void __launch_bounds__(kThreads, 1)
    decode_wgmma_kernel(const __grid_constant__ DecodeArgs a) {
#ifdef MLA_SM90_WGMMA
    static_assert(DQK % 64 == 0 && DQK >= kHeadDimV && DQK <= kMaxHeadDimQK, "d_qk");
    constexpr int kSteps = DQK / 16, kChunks = DQK / 8;
    constexpr int kOTiles = kColsPerWarpgroup / 8;  // n8 column groups of a thread's O
    constexpr int kLoadRows = kTileKeys / 8;        // key rows each warp loads per tile
    constexpr float kLn2 = 0.69314718055994531f;

    extern __shared__ __align__(1024) unsigned char smem_raw[];
    const ScheduleArgs &sc = a.sched;
    const int part = blockIdx.x, mb = blockIdx.y;
    const int32_t *pp = sc.part + 2 * part;
    const int64_t us = pp[0], ts = pp[1], ue = pp[2], te = pp[3];
    if (us == ue && ts == te) return;  // empty partition

    const uint32_t raw = ptx::smem_addr(smem_raw);
    const uint32_t pad = ((raw + 1023) & ~1023u) - raw;
    unsigned char *smem = smem_raw + pad;
    const WgmmaSmem L = wgmma_smem_layout(a.d_qk, a.d_v);
    const uint32_t sQ = raw + pad + uint32_t(L.q), sK = raw + pad + uint32_t(L.k);
    const uint32_t sP = raw + pad + uint32_t(L.p);
    const uint32_t k_stage = uint32_t(L.k_stage);
    float *s_max = reinterpret_cast<float *>(smem + L.max);
    float *s_l = reinterpret_cast<float *>(smem + L.l);
    float *s_lse = reinterpret_cast<float *>(smem + L.lse);
    float *stage = reinterpret_cast<float *>(smem);

    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    const int wg = tid >> 7, wq = warp & 3;  // warpgroup, warp within it (16 rows)
    const int g = lane >> 2, q4 = lane & 3;
    const int row0 = wq * 16 + g, row1 = row0 + 8;
    const int rows_blk = int(min64(kBlockRows, a.rows - int64_t(mb) * kBlockRows));
    const int dv = int(a.d_v), stage_ld = dv + 8;
    const T *qg = static_cast<const T *>(a.q);
    const T *kvg = static_cast<const T *>(a.kv);
    // This thread's cp.async destination within a stage (see load_k), and the wgmma
    // descriptors at k-step 0: Q and this warpgroup's keys (S), P and its value columns (PV).
    const uint32_t k_dst =
        uint32_t((lane >> 3) * kColBlockBytes + warp * 128 + (((lane & 7) ^ (warp & 7)) << 4));
    const uint32_t desc_q0 = desc_lo(sQ, 16);
    const uint32_t desc_k0 = desc_lo(sK + uint32_t(wg) * (kKeysPerWarpgroup * 128), 16);
    const uint32_t desc_p0 = desc_lo(sP, 16);
    const uint32_t desc_v0 =
        desc_lo(sK + uint32_t(wg) * (kColsPerWarpgroup / 64) * kColBlockBytes, kColBlockBytes);

    for (int64_t u = us; u < ue || (u == ue && te > 0); ++u) {
        const int n_u = int(unit_tiles(sc, u));
        const int t0 = u == us ? int(ts) : 0, t1 = u == ue ? int(te) : n_u;
        const bool complete = t0 == 0 && t1 == n_u;
        const int64_t b = u / a.h_kv, kvh = u % a.h_kv;
        const int len = int(seq_len(a, b));

        float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};
        float o[kOTiles * 4];
#pragma unroll
        for (int i = 0; i < kOTiles * 4; ++i) o[i] = 0.f;

        // Key rows of a tile: lanes < kLoadRows look up their row's cache offset (block table
        // read one tile ahead, so the load latency hides behind a tile of work), then the warp
        // copies its kLoadRows rows into a stage.
        auto fetch_offsets = [&](int t) -> int64_t {
            int64_t off = -1;
            const int tok = t * kTileKeys + warp + 8 * lane;
            if (lane < kLoadRows && t < t1 && tok < len) off = key_offset(a, b, kvh, tok);
            return off;
        };
        // Row warp + 8 i, chunk lane + 32 j lands at k_dst + i * 1024 + j * 4 * kColBlockBytes
        // in the stage: (warp + 8 i) % 8 = warp % 8, so one swizzle serves all of a thread's
        // copies.
        auto load_k = [&](int buf, int64_t my_off) {
            const uint32_t kb = sK + uint32_t(buf) * k_stage + k_dst;
#pragma unroll 1
            for (int i = 0; i < kLoadRows; ++i) {
                const int64_t off = __shfl_sync(0xffffffffu, my_off, i);
                const T *src = (off >= 0 ? kvg + off : kvg) + lane * 8;
                const int bytes = off >= 0 ? 16 : 0;  // past the sequence: zeros, no read
#pragma unroll
                for (int j = 0; j < (kChunks + 31) / 32; ++j)
                    if (j * 32 + 32 <= kChunks || lane + j * 32 < kChunks)
                        ptx::cp_async_16(kb + uint32_t(i * 1024 + j * 4 * kColBlockBytes),
                                         src + j * 256, bytes);
            }
        };
        // S = Q K^T for the tile in stage buf: 64 rows x this warpgroup's 32 keys, issued
        // asynchronously (one commit group) into two accumulator chains (even and odd k-steps,
        // summed after the wait: half the dependent chain length of one). Descriptors advance
        // by compile-time constants (16-byte units): k-step ks is 32 bytes into column block
        // ks / 4.
        float s[16], s2[16];
        auto kofs = [](int ks) {
            return uint32_t(((ks >> 2) * kColBlockBytes + (ks & 3) * 32) >> 4);
        };
        auto issue_s = [&](int buf) {
            const uint32_t dk = desc_k0 + ((uint32_t(buf) * k_stage) >> 4);
            wgmma_fence();
#pragma unroll
            for (int ks = 0; ks < kSteps; ks += 2) {
                wgmma_m64n32k16<T, 0>(s, desc(desc_q0 + kofs(ks)), desc(dk + kofs(ks)), ks > 0);
                wgmma_m64n32k16<T, 0>(s2, desc(desc_q0 + kofs(ks + 1)), desc(dk + kofs(ks + 1)),
                                      ks > 0);
            }
            wgmma_commit();
        };

        if (t0 < t1) {
            for (int r = warp; r < kBlockRows; r += 8) {
                const bool valid = r < rows_blk;
                const T *src = qg;
                if (valid) {
                    const RowId id = row_id(a, u, mb, r);
                    src += id.b * a.q_stride[0] + id.j * a.q_stride[1] + id.h * a.q_stride[2];
                }
#pragma unroll
                for (int c = lane; c < kChunks; c += 32)
                    ptx::cp_async_16(sQ + swz128(r, c, kBlockRows), src + c * 8, valid ? 16 : 0);
            }
            load_k(0, fetch_offsets(t0));
            ptx::cp_async_commit();
            if (t0 + 1 < t1) load_k(1, fetch_offsets(t0 + 1));
            ptx::cp_async_commit();
            int64_t next_off = fetch_offsets(t0 + 2);

            int lim[2];
#pragma unroll
            for (int i = 0; i < 2; ++i) {
                const int64_t rin = int64_t(mb) * kBlockRows + row0 + 8 * i;
                lim[i] = int(last_key(a, len, rin / a.group));
            }
            const int min_lim = a.causal ? len - int(a.s_q) : len - 1;

            ptx::cp_async_wait<1>();  // Q and the first tile
            fence_proxy_async();      // cp.async data -> wgmma operand reads
            __syncthreads();
            issue_s(0);
            wgmma_wait<0>();
            fence_regs(s);
            fence_regs(s2);
#pragma unroll
            for (int i = 0; i < 16; ++i) s[i] += s2[i];

            // Pipeline per tile t (stage buf): softmax(t) -> PV(t) issued -> S(t + 1) issued on
            // the other stage -> PV(t) done -> stage buf refilled with tile t + 2 -> S(t + 1) done.
            for (int t = t0; t < t1; ++t) {
                const int buf = (t - t0) & 1;

                // Scale to log2 units, mask, row maxima over both warpgroups.
                const bool masked = (t + 1) * kTileKeys - 1 > min_lim;
                const int key0 = t * kTileKeys + wg * kKeysPerWarpgroup + q4 * 2;
                float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
                for (int nt = 0; nt < 4; ++nt)
#pragma unroll
                    for (int e = 0; e < 4; ++e) {
                        float v = s[nt * 4 + e] * a.scale_log2;
                        if (masked && key0 + nt * 8 + (e & 1) > lim[e >> 1]) v = -INFINITY;
                        s[nt * 4 + e] = v;
                        mx[e >> 1] = fmaxf(mx[e >> 1], v);
                    }
#pragma unroll
                for (int i = 0; i < 2; ++i) {
                    mx[i] = fmaxf(mx[i], __shfl_xor_sync(0xffffffffu, mx[i], 1));
                    mx[i] = fmaxf(mx[i], __shfl_xor_sync(0xffffffffu, mx[i], 2));
                }
                if (q4 == 0) {
                    s_max[wg * kBlockRows + row0] = mx[0];
                    s_max[wg * kBlockRows + row1] = mx[1];
                }
                ptx::named_barrier(1, kThreads);  // also: both warpgroups' S(t) reads are done

                // Keys past min_lim are hidden from some rows by the causal mask: zero the
                // non-finite values of their value dims before P V reads them (ptx.cuh says why).
                if (masked && a.causal && a.s_q > 1) {
                    const int z0 = max(min_lim + 1, t * kTileKeys);
                    const int z1 = min(len, (t + 1) * kTileKeys);
                    const int words = (dv + 7) / 8 * 4;  // 4-byte words of the value chunks
#pragma unroll 1
                    for (int i = tid; i < (z1 - z0) * words; i += kThreads) {
                        const int r = z0 - t * kTileKeys + i / words, w = i % words;
                        uint32_t *word = reinterpret_cast<uint32_t *>(
                            smem + L.k + int64_t(buf) * k_stage + swz128(r, w >> 2, kBlockRows) +
                            (w & 3) * 4);
                        *word = ptx::zero_nonfinite2<T>(*word, true, true);
                    }
                }

                float mu[2], alpha[2];
#pragma unroll
                for (int i = 0; i < 2; ++i) {
                    const int r = row0 + 8 * i;
                    const float mn = fmaxf(m[i], fmaxf(s_max[r], s_max[kBlockRows + r]));
                    mu[i] = mn == -INFINITY ? 0.f : mn;
                    alpha[i] = exp2f(m[i] - mu[i]);
                    m[i] = mn;
                }
                float rs[2] = {0.f, 0.f};
#pragma unroll
                for (int nt = 0; nt < 4; ++nt) {
                    const float p0 = exp2f(s[nt * 4 + 0] - mu[0]);
                    const float p1 = exp2f(s[nt * 4 + 1] - mu[0]);
                    const float p2 = exp2f(s[nt * 4 + 2] - mu[1]);
                    const float p3 = exp2f(s[nt * 4 + 3] - mu[1]);
                    rs[0] += p0 + p1;
                    rs[1] += p2 + p3;
                    const int c = wg * (kKeysPerWarpgroup / 8) + nt;  // 16-byte chunk of P's row
                    const uint32_t a0 = sP + swz128(row0, c, kBlockRows) + q4 * 4;
                    const uint32_t a1 = sP + swz128(row1, c, kBlockRows) + q4 * 4;
                    asm volatile("st.shared.u32 [%0], %1;\n" ::"r"(a0), "r"(ptx::pack2<T>(p0, p1)));
                    asm volatile("st.shared.u32 [%0], %1;\n" ::"r"(a1), "r"(ptx::pack2<T>(p2, p3)));
                }
#pragma unroll
                for (int i = 0; i < 2; ++i) l[i] = l[i] * alpha[i] + rs[i];
                if (__any_sync(0xffffffffu, alpha[0] != 1.f || alpha[1] != 1.f)) {
#pragma unroll
                    for (int nt = 0; nt < kOTiles; ++nt) {
                        o[nt * 4 + 0] *= alpha[0];
                        o[nt * 4 + 1] *= alpha[0];
                        o[nt * 4 + 2] *= alpha[1];
                        o[nt * 4 + 3] *= alpha[1];
                    }
                }
                fence_proxy_async();  // P stores -> wgmma operand reads
                ptx::named_barrier(2, kThreads);

                // O += P V: 64 rows x this warpgroup's 256 value columns, over the 64 keys.
                wgmma_fence();
                const uint32_t desc_v = desc_v0 + ((uint32_t(buf) * k_stage) >> 4);
#pragma unroll
                for (int ks = 0; ks < kTileKeys / 16; ++ks)  // 16 keys: 32 bytes of P, 2 KB of V
                    wgmma_m64n256k16<T, 1>(o, desc(desc_p0 + ks * 2), desc(desc_v + ks * 128), 1);
                wgmma_commit();

                if (t + 1 < t1) {
                    ptx::cp_async_wait<0>();  // tile t + 1 (this thread's copies)
                    fence_proxy_async();
                    ptx::named_barrier(3, kThreads);  // ... and everyone's
                    issue_s(buf ^ 1);
                    wgmma_wait<1>();  // PV(t) of this warpgroup
                    fence_regs(o);
                    ptx::named_barrier(4, kThreads);  // both: stage buf and P are free
                    if (t + 2 < t1) load_k(buf, next_off);  // tile t + 2
                    ptx::cp_async_commit();
                    next_off = fetch_offsets(t + 3);
                    wgmma_wait<0>();
                    fence_regs(s);
                    fence_regs(s2);
#pragma unroll
                    for (int i = 0; i < 16; ++i) s[i] += s2[i];
                } else {
                    wgmma_wait<0>();
                    fence_regs(o);
                }
            }
        }

        // Epilogue: the row normaliser over both warpgroups, then the rows or the partial.
#pragma unroll
        for (int i = 0; i < 2; ++i) {
            l[i] += __shfl_xor_sync(0xffffffffu, l[i], 1);
            l[i] += __shfl_xor_sync(0xffffffffu, l[i], 2);
        }
        if (q4 == 0) {
            s_l[wg * kBlockRows + row0] = l[0];
            s_l[wg * kBlockRows + row1] = l[1];
        }
        ptx::named_barrier(1, kThreads);
        float lse[2], inv[2];
#pragma unroll
        for (int i = 0; i < 2; ++i) {
            const int r = row0 + 8 * i;
            const float lt = s_l[r] + s_l[kBlockRows + r];
            // NaN lt: the row saw a NaN key; lse and out stay NaN, through the combine too.
            lse[i] = !(lt <= 0.f) ? m[i] * kLn2 + logf(lt)
                                  : (complete ? INFINITY : -INFINITY);
            inv[i] = !(lt <= 0.f) ? 1.f / lt : 0.f;
        }
        if (complete) {
            ptx::cp_async_wait<0>();
            __syncthreads();  // the staging area overlays Q and K
#pragma unroll
            for (int nt = 0; nt < kOTiles; ++nt) {
                const int col = wg * kColsPerWarpgroup + nt * 8 + q4 * 2;
                if (col < dv) {
                    *reinterpret_cast<float2 *>(stage + row0 * stage_ld + col) =
                        make_float2(o[nt * 4 + 0] * inv[0], o[nt * 4 + 1] * inv[0]);
                    *reinterpret_cast<float2 *>(stage + row1 * stage_ld + col) =
                        make_float2(o[nt * 4 + 2] * inv[1], o[nt * 4 + 3] * inv[1]);
                }
            }
            if (wg == 0 && q4 == 0) {
                s_lse[row0] = lse[0];
                s_lse[row1] = lse[1];
            }
            __syncthreads();
            for (int r = warp; r < rows_blk; r += 8) {
                const RowId id = row_id(a, u, mb, r);
                write_row<float>(a, stage + r * stage_ld, id.b, id.j, id.h, s_lse[r], lane);
            }
            __syncthreads();
        } else {
            const int64_t slot = (int64_t(mb) * sc.parts + part) * 2 + (u == us ? 0 : 1);
            float *po = sc.part_o + slot * kBlockRows * a.d_v;
#pragma unroll
            for (int nt = 0; nt < kOTiles; ++nt) {
                const int col = wg * kColsPerWarpgroup + nt * 8 + q4 * 2;
                if (col < dv) {
                    if (row0 < rows_blk)
                        *reinterpret_cast<float2 *>(po + row0 * dv + col) =
                            make_float2(o[nt * 4 + 0] * inv[0], o[nt * 4 + 1] * inv[0]);
                    if (row1 < rows_blk)
                        *reinterpret_cast<float2 *>(po + row1 * dv + col) =
                            make_float2(o[nt * 4 + 2] * inv[1], o[nt * 4 + 3] * inv[1]);
                }
            }
            if (wg == 0 && q4 == 0) {
                sc.part_lse[slot * kBlockRows + row0] = lse[0];
                sc.part_lse[slot * kBlockRows + row1] = lse[1];
            }
            __syncthreads();  // s_l is rewritten by the next unit's epilogue
        }
    }
#else
    __trap();  // built for another architecture: the dispatcher launches this on sm_90 only
#endif
}

template <typename T, int DQK>
mla_status launch_dqk(const DecodeArgs &a, cudaStream_t stream, const char *op) {
    const int64_t smem = decode_wgmma_smem(a);
    MLA_CUDA_TRY(cudaFuncSetAttribute(decode_wgmma_kernel<T, DQK>,
                                      cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
    const dim3 grid(unsigned(a.sched.parts), unsigned(a.n_mblocks));
    decode_wgmma_kernel<T, DQK><<<grid, kThreads, size_t(smem), stream>>>(a);
    MLA_CUDA_LAUNCHED("decode_wgmma_kernel launch");
    return MLA_OK;
}

template <typename T>
mla_status launch_decode_wgmma(const DecodeArgs &a, cudaStream_t stream, const char *op) {
    return a.d_qk == 576 ? launch_dqk<T, 576>(a, stream, op) : launch_dqk<T, 512>(a, stream, op);
}

}  // namespace sm90
}  // namespace cuda
}  // namespace mla

#define MLA_INSTANTIATE_DECODE_WGMMA(T)                                                  \
    template mla_status mla::cuda::sm90::launch_decode_wgmma<T>(const mla::cuda::DecodeArgs &, \
                                                                  cudaStream_t, const char *);
