// sm_90a dense decode with warpgroup MMA (HGMMA): the schedule, epilogue and partial format
// of the sm80 kernel (decode_mma.cuh), with the two matrix products on wgmma and the two
// warpgroups out of phase ("seesaw"). Key tiles come in pairs (a, b): stage 0 holds a, stage 1
// holds b. Warpgroup 0 owns value columns 0..255 of O, warpgroup 1 columns 256..511.
//   WG0: S_a = Q K_a^T (m64n64k16, all 64 rows x 64 keys), softmax of a -> P_a, m_a;
//        O_L += P_a V_a[:, 0:256] (P_a from registers, also stored for WG1); then, once WG1 has published P_b, O_L += P_b V_b[:, 0:256]
//   WG1: S_b = Q K_b^T; once WG0 has published m_a: O_R += P_a V_a[:, 256:512], softmax of b
//        from the running maximum m_a -> P_b, m_b; O_R += P_b V_b[:, 256:512]
// so one warpgroup's softmax runs while the other's matrix products keep the tensor cores
// busy, and every S is a whole-tile m64n64 (Q read from shared memory once per tile, not once
// per warpgroup). P is written as bf16 / fp16 into shared memory (K-major A operand of
// m64n256k16); V is the K tile read MN-major (no transposed copy). O is rescaled only when a
// row's maximum moved. Each warpgroup waits for its P_a V_a before P_b V_b (O may need the
// rescale by m_a -> m_b in between) and refills its part of stage 0 right then.
// Key tiles arrive by tensor copies (TMA) when block_size is a multiple of 64 and the tile is
// whole, otherwise by cp.async, addressed row by row through the block table (any
// block_size); each warpgroup loads its 256 value columns (and the rope columns of the tile
// whose S it computes) as soon as its own products on that stage are done; a stage's
// completion is an mbarrier phase (cp.async.mbarrier.arrive, plus the tensor copies' bytes).
// Q, K and P live in the
// 128-byte-swizzled layout that wgmma reads: column block cb (64 elements) of row r at
// cb * rows * 128 + r * 128, its 16-byte chunk c at c ^ (r % 8).
#pragma once
#include <cuda.h>
#include <cstdlib>
#include <cstring>
#include <type_traits>
#include "cuda/common/check.cuh"
#include "cuda/common/decode_args.cuh"
#include "cuda/common/ptx.cuh"
#include "cuda/sm90/attend_pieces.cuh"
#include "cuda/sm90/config.h"
#include "cuda/sm90/decode_wgmma.h"
#include "cuda/sm90/wgmma.cuh"

namespace mla {
namespace cuda {
namespace sm90 {

// Byte offsets from a 1024-byte aligned base (the dynamic allocation carries 1024 bytes of
// slack to reach it). P_b, read only by the P V products of tile b, lives in the rope column
// block of stage 1 when d_qk > d_v (that block is only read by S_b, done by then); P_a has
// its own 8 KB. The epilogue stages float [64][d_v + 8] over Q and K.
struct WgmmaSmem {
    int64_t q, k, k_stage, pa, pb, max, l, lse, bar, total;
};

__host__ __device__ inline WgmmaSmem wgmma_smem_layout(int64_t d_qk, int64_t d_v) {
    WgmmaSmem s;
    s.q = 0;
    s.k = kBlockRows * d_qk * 2;        // 64 rows of d_qk two-byte elements
    s.k_stage = kTileKeys * d_qk * 2;
    const int64_t qk = s.k + 2 * s.k_stage;
    const int64_t stage = kBlockRows * (d_v + 8) * 4;
    int64_t at = ((qk > stage ? qk : stage) + 1023) / 1024 * 1024;
    const int64_t p_tile = kBlockRows * kTileKeys * 2;
    s.pa = at;
    at += p_tile;
    if (d_qk > d_v) {
        s.pb = s.k + s.k_stage + (d_qk / 64 - 1) * (kTileKeys * 128);
    } else {
        s.pb = at;
        at += p_tile;
    }
    s.max = at;
    at += 2 * kBlockRows * 4;
    s.l = at;
    at += 2 * kBlockRows * 4;
    s.lse = at;
    at += kBlockRows * 4;
    s.bar = at;  // four mbarriers (8 bytes each): stage s, warpgroup w's copies landed
    at += 32;
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
//
// Synchronisation between the warpgroups (named barriers; 256 = both, 128 = one):
//   1 (256)  WG0 arrives when P_a and m_a are in shared memory, WG1 waits
//   2 (256)  WG1 arrives when P_b and m_b are there, WG0 waits
//   5 (256)  WG0 arrives when its P_b V_b product is done (P_b and stage 1 may be
//            overwritten by WG1's next copies), WG1 waits
//   3, 6 (128) inside WG0 / WG1: a warpgroup's own shared-memory writes before its wgmma
//   4 (128)  inside WG1: P_b before its own wgmma
// Loads: mbarrier full[s][w] completes a phase when the 128 threads of warpgroup w have their
// copies of the tile in stage s landed (part w: value columns 256 w .. +256, and the rope
// columns of stage w). A thread waits on each phase of the parts it reads (phase bits in
// `phase`): WG0 on [0][0], [0][1], [1][0]; WG1 on [1][0], [1][1], [0][1].
//
// p_regs (MLA4J_SM90_PA_REGS=0 turns it off): WG0's own P_a V_a takes P_a from registers
// (register A operand) instead of shared memory, without the barrier of its warps before it.
//
// tmap / use_tma: when block_size is a multiple of 64 (a tile lies in one cache block) and the
// host could describe the cache as a 4-d tensor (d_qk, token in block, KV head, block) with a
// 64 x 64 box and the 128-byte swizzle, every whole tile arrives by tensor copies (TMA): one
// thread of a warpgroup issues its part (4 or 5 column blocks of 8 KB) after a barrier of
// the warpgroup and adds the bytes to full[st][w]; the other threads only arrive. A block
// id outside the cache is given as coordinate num_blocks, which the copy fills with zeros.
// The last tile of a sequence, when partial, still takes the cp.async path (zeros past the
// sequence, not the cache's contents).
template <typename T, int DQK>
__global__ void __launch_bounds__(kThreads, 1)
    decode_wgmma_kernel(const __grid_constant__ DecodeArgs a, const __grid_constant__ CUtensorMap tmap,
                        int use_tma, int p_regs) {
#ifdef MLA_SM90_WGMMA
    static_assert(DQK % 64 == 0 && DQK >= kHeadDimV && DQK <= kMaxHeadDimQK, "d_qk");
    static_assert(kWarpgroups == 2 && kColsPerWarpgroup == 256, "two warpgroups, O halves");
    constexpr int kSteps = DQK / 16, kChunks = DQK / 8;
    constexpr bool kRope = DQK > kHeadDimV;        // a column block that only S reads
    constexpr int kOTiles = kColsPerWarpgroup / 8;  // n8 column groups of a thread's O

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
    const uint32_t base = raw + pad;
    const uint32_t sQ = base + uint32_t(L.q), sK = base + uint32_t(L.k);
    const uint32_t k_stage = uint32_t(L.k_stage);
    const uint32_t bar_full = base + uint32_t(L.bar);
    float *s_max = reinterpret_cast<float *>(smem + L.max);  // [0]: m after a, [64]: after b
    float *s_l = reinterpret_cast<float *>(smem + L.l);
    float *s_lse = reinterpret_cast<float *>(smem + L.lse);
    float *stage = reinterpret_cast<float *>(smem);

    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    const int wg = tid >> 7, wq = warp & 3, wtid = tid & 127;  // warpgroup, warp in it
    const int g = lane >> 2, q4 = lane & 3;
    const int row0 = wq * 16 + g, row1 = row0 + 8;
    const int rows_blk = int(min64(kBlockRows, a.rows - int64_t(mb) * kBlockRows));
    const int dv = int(a.d_v), stage_ld = dv + 8;
    const T *qg = static_cast<const T *>(a.q);
    const T *kvg = static_cast<const T *>(a.kv.data);
    // wgmma descriptors at k-step 0: Q, stage 0's keys (S), P_a / P_b and this warpgroup's
    // value columns of stage 0 (P V). Stage 1: + k_stage / 16.
    const uint32_t desc_q0 = desc_lo(sQ, 16);
    const uint32_t desc_k0 = desc_lo(sK, 16);
    const uint32_t desc_pa = desc_lo(base + uint32_t(L.pa), 16);
    const uint32_t desc_pb = desc_lo(base + uint32_t(L.pb), 16);
    const uint32_t desc_v0 =
        desc_lo(sK + uint32_t(wg) * (kColsPerWarpgroup / 64) * kColBlockBytes, kColBlockBytes);
    const uint32_t stage_desc = k_stage >> 4;

    if (tid == 0) {
#pragma unroll
        for (int i = 0; i < 4; ++i) mbar_init(bar_full + 8 * i, 128);
    }
    __syncthreads();
    uint32_t phase = 0;  // bit 2 s + w: parity of the next phase of full[s][w] to wait for

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

        // Key rows of a tile: warp wq of each warpgroup copies rows 16 wq .. +15; lane i < 16
        // looks up row 16 wq + i's cache offset (one pair of tiles ahead, so the block-table
        // read hides behind a pair of work).
        // With TMA for tile t, thread 0 of each warpgroup looks up the tile's cache block
        // instead (num_blocks: outside the cache).
        auto tma_tile = [&](int t) { return use_tma && (t + 1) * kTileKeys <= len; };
        auto fetch_offsets = [&](int t) -> int64_t {
            int64_t off = -1;
            if (tma_tile(t)) {
                if (wtid == 0 && t < t1) {
                    const int64_t blk =
                        a.block_table[b * a.block_table_stride + int64_t(t) * kTileKeys / a.kv.block_size];
                    off = blk < 0 || blk >= a.kv.num_blocks ? a.kv.num_blocks : blk;
                }
                return off;
            }
            const int tok = t * kTileKeys + wq * 16 + lane;
            if (lane < 16 && t < t1 && tok < len) off = key_offset(a, b, kvh, tok);
            return off;
        };
        // This warpgroup's share of a tile into stage st: its 256 value columns (one 16-byte
        // chunk per lane and row) and, with rope, the columns past d_v (8 chunks per row, four
        // rows per instruction); then this thread's arrival on full[st][wg].
        auto load_tile = [&](int st, int t, int64_t my_off, bool rope) {
            const uint32_t kb = sK + uint32_t(st) * k_stage;
            const uint32_t bar = bar_full + 8 * (2 * st + wg);
            if (tma_tile(t)) {
                // Every warp of the warpgroup is past its own products on this part.
                ptx::named_barrier(7 + wg, 128);
                if (wtid == 0) {
                    const int nb = kRope && rope ? 5 : 4;
                    mbar_expect_tx(bar, uint32_t(nb) * kColBlockBytes);
                    const int tok = int((int64_t(t) * kTileKeys) % a.kv.block_size);
                    const int blk = int(my_off), h = int(kvh);
#pragma unroll
                    for (int j = 0; j < 4; ++j) {
                        const int cb = wg * (kColsPerWarpgroup / 64) + j;
                        tma_load_4d(kb + uint32_t(cb) * kColBlockBytes, &tmap, cb * 64, tok, h, blk, bar);
                    }
                    if (kRope && rope)
                        tma_load_4d(kb + uint32_t(kHeadDimV / 64) * kColBlockBytes, &tmap, kHeadDimV, tok,
                                    h, blk, bar);
                }
                mbar_arrive_cp_async(bar);  // also covers this thread's earlier cp.async (Q)
                return;
            }
            const int c = wg * 32 + lane;  // chunk of the row
#pragma unroll 4
            for (int i = 0; i < 16; ++i) {
                const int64_t off = __shfl_sync(0xffffffffu, my_off, i);
                const T *src = (off >= 0 ? kvg + off : kvg) + c * 8;
                const int r = wq * 16 + i;
                ptx::cp_async_16(kb + uint32_t((c >> 3) * kColBlockBytes + r * 128 +
                                               (((c & 7) ^ (i & 7)) << 4)),
                                 src, off >= 0 ? 16 : 0);  // past the sequence: zeros, no read
            }
            if (kRope && rope) {
                const int cr = 2 * kColsPerWarpgroup / 8 + (lane & 7);
#pragma unroll
                for (int k = 0; k < 4; ++k) {
                    const int i = 4 * k + (lane >> 3);
                    const int64_t off = __shfl_sync(0xffffffffu, my_off, i);
                    const int r = wq * 16 + i;
                    if (cr < kChunks)
                        ptx::cp_async_16(kb + uint32_t((cr >> 3) * kColBlockBytes + r * 128 +
                                                       (((cr & 7) ^ (r & 7)) << 4)),
                                         (off >= 0 ? kvg + off : kvg) + cr * 8, off >= 0 ? 16 : 0);
                }
            }
            mbar_arrive_cp_async(bar);
        };
        auto wait_part = [&](int st, int w) {
            const int i = 2 * st + w;
            mbar_wait(bar_full + 8 * i, (phase >> i) & 1u);
            phase ^= 1u << i;
            fence_proxy_async();  // cp.async data -> wgmma operand reads
        };
        // S = Q K^T for the tile in stage st: 64 rows x 64 keys, one commit group, over the
        // column blocks of part 0 as soon as they have landed, then those of part 1 (the rope
        // block belongs to part st). Descriptors advance by compile-time constants (16-byte
        // units): k-step ks is 32 bytes into column block ks / 4.
        float s[32];
        auto kofs = [](int ks) {
            return uint32_t(((ks >> 2) * kColBlockBytes + (ks & 3) * 32) >> 4);
        };
        auto part_of = [](int cb, int st) { return cb < 4 ? 0 : (cb < 8 ? 1 : st); };
        auto issue_s = [&](int st) {
            const uint32_t dk = desc_k0 + uint32_t(st) * stage_desc;
            wait_part(st, 0);
            wgmma_fence();
#pragma unroll
            for (int ks = 0; ks < kSteps; ++ks)
                if (part_of(ks >> 2, st) == 0)
                    wgmma_m64n64k16<T, 0>(s, desc(desc_q0 + kofs(ks)), desc(dk + kofs(ks)), ks > 0);
            wait_part(st, 1);
            wgmma_fence();
#pragma unroll
            for (int ks = 0; ks < kSteps; ++ks)
                if (part_of(ks >> 2, st) == 1)
                    wgmma_m64n64k16<T, 0>(s, desc(desc_q0 + kofs(ks)), desc(dk + kofs(ks)), 1);
            wgmma_commit();
        };
        // O += P V over the 64 keys of stage st: 64 rows x this warpgroup's 256 value columns.
        auto issue_pv = [&](uint32_t desc_p, int st) {
            const uint32_t dvs = desc_v0 + uint32_t(st) * stage_desc;
            wgmma_fence();
#pragma unroll
            for (int ks = 0; ks < kTileKeys / 16; ++ks)  // 16 keys: 32 bytes of P, 2 KB of V
                wgmma_m64n256k16<T, 1>(o, desc(desc_p + ks * 2), desc(dvs + ks * 128), 1);
            wgmma_commit();
        };
        // The same with P from registers (pr: exp_store's pairs).
        auto issue_pv_regs = [&](const uint32_t (&pr)[16], int st) {
            const uint32_t dvs = desc_v0 + uint32_t(st) * stage_desc;
            wgmma_fence();
#pragma unroll
            for (int ks = 0; ks < kTileKeys / 16; ++ks) {
                const uint32_t ak[4] = {pr[ks * 4], pr[ks * 4 + 1], pr[ks * 4 + 2], pr[ks * 4 + 3]};
                wgmma_m64n256k16_rs<T>(o, ak, desc(dvs + ks * 128), 1);
            }
            wgmma_commit();
        };
        auto rescale_o = [&](const float (&al)[2]) {
            if (__any_sync(0xffffffffu, al[0] != 1.f || al[1] != 1.f)) {
#pragma unroll
                for (int nt = 0; nt < kOTiles; ++nt) {
                    o[nt * 4 + 0] *= al[0];
                    o[nt * 4 + 1] *= al[0];
                    o[nt * 4 + 2] *= al[1];
                    o[nt * 4 + 3] *= al[1];
                }
            }
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
            // Q's copies precede every thread's arrivals on both stages.
            load_tile(0, t0, fetch_offsets(t0), wg == 0);
            if (t0 + 1 < t1) load_tile(1, t0 + 1, fetch_offsets(t0 + 1), wg == 1);
            int64_t off_a = fetch_offsets(t0 + 2), off_b = fetch_offsets(t0 + 3);

            int lim[2];
#pragma unroll
            for (int i = 0; i < 2; ++i) {
                const int64_t rin = int64_t(mb) * kBlockRows + row0 + 8 * i;
                lim[i] = int(last_key(a, len, rin / a.group));
            }
            const int min_lim = a.causal ? len - int(a.s_q) : len - 1;
            const bool hide = a.causal && a.s_q > 1;

            // Scale to log2 units, mask, row maxima of this thread's rows (quad-reduced).
            auto scale_mask = [&](int t, float (&mx)[2]) {
                const bool masked = (t + 1) * kTileKeys - 1 > min_lim;
                const int key0 = t * kTileKeys + q4 * 2;
                mx[0] = mx[1] = -INFINITY;
#pragma unroll
                for (int nt = 0; nt < 8; ++nt)
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
            };
            // The new running maximum from m and a tile's row maxima: mu (the exponent's
            // offset, 0 while no key is visible) and the factor al of what was summed so far.
            auto advance_max = [&](const float (&mn)[2], float (&mu)[2], float (&al)[2]) {
#pragma unroll
                for (int i = 0; i < 2; ++i) {
                    mu[i] = mn[i] == -INFINITY ? 0.f : mn[i];
                    al[i] = ex2_ftz(m[i] - mu[i]);
                    m[i] = mn[i];
                }
            };
            // P = 2^(s - mu) as T into the 64 x 64 tile at p_addr; rs = this thread's row sums;
            // pr = the same pairs as the register A operand of P V (k-step ks: n8 groups 2 ks
            // and 2 ks + 1, rows row0 / row1).
            auto exp_store = [&](uint32_t p_addr, const float (&mu)[2], float (&rs)[2],
                                 uint32_t (&pr)[16]) {
                rs[0] = rs[1] = 0.f;
#pragma unroll
                for (int nt = 0; nt < 8; ++nt) {
                    const float p0 = ex2_ftz(s[nt * 4 + 0] - mu[0]);
                    const float p1 = ex2_ftz(s[nt * 4 + 1] - mu[0]);
                    const float p2 = ex2_ftz(s[nt * 4 + 2] - mu[1]);
                    const float p3 = ex2_ftz(s[nt * 4 + 3] - mu[1]);
                    rs[0] += p0 + p1;
                    rs[1] += p2 + p3;
                    const uint32_t a0 = p_addr + swz128(row0, nt, kBlockRows) + q4 * 4;
                    const uint32_t a1 = p_addr + swz128(row1, nt, kBlockRows) + q4 * 4;
                    pr[(nt >> 1) * 4 + (nt & 1) * 2 + 0] = ptx::pack2<T>(p0, p1);
                    pr[(nt >> 1) * 4 + (nt & 1) * 2 + 1] = ptx::pack2<T>(p2, p3);
                    asm volatile("st.shared.u32 [%0], %1;\n" ::"r"(a0), "r"(pr[(nt >> 1) * 4 + (nt & 1) * 2]));
                    asm volatile("st.shared.u32 [%0], %1;\n" ::"r"(a1),
                                 "r"(pr[(nt >> 1) * 4 + (nt & 1) * 2 + 1]));
                }
            };
            // Keys past min_lim are hidden from some rows by the causal mask: zero the
            // non-finite values of this warpgroup's value columns of tile t (stage st) before
            // its P V reads them, after S(t) has read them (ptx.cuh says why).
            auto zero_hidden = [&](int t, int st) {
                const int z0 = max(min_lim + 1, t * kTileKeys);
                const int z1 = min(len, (t + 1) * kTileKeys);
                constexpr int kWords = kColsPerWarpgroup / 2;  // 4-byte words of 256 columns
#pragma unroll 1
                for (int i = wtid; i < (z1 - z0) * kWords; i += 128) {
                    const int r = z0 - t * kTileKeys + i / kWords, w = i % kWords;
                    uint32_t *word = reinterpret_cast<uint32_t *>(
                        smem + L.k + int64_t(st) * k_stage +
                        swz128(r, wg * (kColsPerWarpgroup / 8) + (w >> 2), kBlockRows) + (w & 3) * 4);
                    *word = ptx::zero_nonfinite2<T>(*word, true, true);
                }
            };

            for (int ta = t0; ta < t1; ta += 2) {
                const int tb = ta + 1;
                const bool has_b = tb < t1;
                const bool zero_a = hide && (ta + 1) * kTileKeys - 1 > min_lim;
                const bool zero_b = hide && (tb + 1) * kTileKeys - 1 > min_lim;
                if (wg == 0) {
                    issue_s(0);
                    wgmma_wait<0>();
                    fence_regs(s);
                    float mx[2], mu[2], al[2], rs[2];
                    uint32_t pr[16];
                    scale_mask(ta, mx);
                    const float mn[2] = {fmaxf(m[0], mx[0]), fmaxf(m[1], mx[1])};
                    advance_max(mn, mu, al);
                    exp_store(base + uint32_t(L.pa), mu, rs, pr);
#pragma unroll
                    for (int i = 0; i < 2; ++i) l[i] = l[i] * al[i] + rs[i];
                    if (q4 == 0) {
                        s_max[row0] = m[0];
                        s_max[row1] = m[1];
                    }
                    if (zero_a) zero_hidden(ta, 0);
                    fence_proxy_async();  // P stores -> wgmma operand reads
                    bar_arrive(1, kThreads);
                    // p_regs: the own P_a from registers; the warpgroup's barrier only orders
                    // zero_hidden's writes before the product.
                    if (!p_regs || zero_a) ptx::named_barrier(3, 128);
                    rescale_o(al);
                    if (p_regs)
                        issue_pv_regs(pr, 0);
                    else
                        issue_pv(desc_pa, 0);
                    wgmma_wait<0>();  // P_a V_a: stage 0's part 0 is free: refill it now
                    fence_regs(o);
                    if (ta + 2 < t1) load_tile(0, ta + 2, off_a, true);
                    if (has_b) {
                        ptx::named_barrier(2, kThreads);
                        const float mnb[2] = {s_max[kBlockRows + row0], s_max[kBlockRows + row1]};
                        float al2[2];
                        advance_max(mnb, mu, al2);
#pragma unroll
                        for (int i = 0; i < 2; ++i) l[i] *= al2[i];
                        wait_part(1, 0);
                        if (zero_b) {
                            zero_hidden(tb, 1);
                            fence_proxy_async();
                            ptx::named_barrier(3, 128);
                        }
                        rescale_o(al2);  // P_a V_a is done
                        issue_pv(desc_pb, 1);
                        wgmma_wait<0>();
                        fence_regs(o);
                        bar_arrive(5, kThreads);
                        if (tb + 2 < t1) load_tile(1, tb + 2, off_b, false);
                        off_a = fetch_offsets(ta + 4);
                        off_b = fetch_offsets(tb + 4);
                    }
                } else {
                    float mx[2] = {-INFINITY, -INFINITY};
                    if (has_b) {
                        issue_s(1);
                        wgmma_wait<0>();
                        fence_regs(s);
                        scale_mask(tb, mx);
                    }
                    ptx::named_barrier(1, kThreads);
                    float mu[2], al[2];
                    const float mna[2] = {s_max[row0], s_max[row1]};
                    advance_max(mna, mu, al);
#pragma unroll
                    for (int i = 0; i < 2; ++i) l[i] *= al[i];
                    wait_part(0, 1);
                    if (zero_a) {
                        zero_hidden(ta, 0);
                        fence_proxy_async();
                        ptx::named_barrier(6, 128);
                    }
                    rescale_o(al);
                    issue_pv(desc_pa, 0);
                    if (has_b) {
                        const float mn[2] = {fmaxf(m[0], mx[0]), fmaxf(m[1], mx[1])};
                        float al2[2], rs[2];
                        uint32_t pr[16];
                        advance_max(mn, mu, al2);
                        exp_store(base + uint32_t(L.pb), mu, rs, pr);
#pragma unroll
                        for (int i = 0; i < 2; ++i) l[i] = l[i] * al2[i] + rs[i];
                        if (q4 == 0) {
                            s_max[kBlockRows + row0] = m[0];
                            s_max[kBlockRows + row1] = m[1];
                        }
                        if (zero_b) zero_hidden(tb, 1);
                        fence_proxy_async();
                        ptx::named_barrier(4, 128);  // P_b for this warpgroup's wgmma
                        bar_arrive(2, kThreads);
                        wgmma_wait<0>();  // P_a V_a: stage 0's part 1 is free: refill it now
                        fence_regs(o);
                        if (ta + 2 < t1) load_tile(0, ta + 2, off_a, false);
                        rescale_o(al2);
                        issue_pv(desc_pb, 1);
                        wgmma_wait<0>();
                        fence_regs(o);
                        ptx::named_barrier(5, kThreads);  // WG0's P_b V_b is done too
                        if (tb + 2 < t1) load_tile(1, tb + 2, off_b, true);
                        off_a = fetch_offsets(ta + 4);
                        off_b = fetch_offsets(tb + 4);
                    } else {
                        wgmma_wait<0>();
                        fence_regs(o);
                    }
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
        __syncthreads();
        float lse[2], inv[2];
#pragma unroll
        for (int i = 0; i < 2; ++i) {
            const int r = row0 + 8 * i;
            // NaN sums: the row saw a NaN key; lse and out stay NaN, through the combine too.
            const RowResult res = row_result(m[i], s_l[r] + s_l[kBlockRows + r], complete);
            lse[i] = res.lse;
            inv[i] = res.inv;
        }
        if (complete) {
            asm volatile("cp.async.wait_all;\n" ::: "memory");
            __syncthreads();  // the staging area overlays Q and K
            store_o_rows(o, inv, stage, stage_ld, row0, row1, q4, wg * kColsPerWarpgroup, dv, kBlockRows);
            if (wg == 0 && q4 == 0) {
                s_lse[row0] = lse[0];
                s_lse[row1] = lse[1];
            }
            __syncthreads();
            for (int r = warp; r < rows_blk; r += 8) {
                const RowId id = row_id(a, u, mb, r);
                write_row<float>(a, stage + r * stage_ld, id.b, id.j, id.h, s_lse[r], 0.f, lane);
            }
            fence_proxy_async();  // the staging writes before the next unit's tensor copies
            __syncthreads();
        } else {
            const int64_t slot = (int64_t(mb) * sc.parts + part) * 2 + (u == us ? 0 : 1);
            store_o_rows(o, inv, sc.part_o + slot * kBlockRows * a.d_v, dv, row0, row1, q4,
                         wg * kColsPerWarpgroup, dv, rows_blk);
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

// The cache as a tensor map for the kernel's tensor copies: dims (d_qk, token in block, KV
// head, block), box 64 x 64 x 1 x 1, 128-byte swizzle. False (cp.async for every tile) when
// block_size is not a multiple of 64, the driver lacks cuTensorMapEncodeTiled, it refuses
// the strides, or MLA4J_SM90_TMA=0.
using TensorMapEncodeTiled = CUresult (*)(CUtensorMap *, CUtensorMapDataType, cuuint32_t, void *,
                                          const cuuint64_t *, const cuuint64_t *,
                                          const cuuint32_t *, const cuuint32_t *,
                                          CUtensorMapInterleave, CUtensorMapSwizzle,
                                          CUtensorMapL2promotion, CUtensorMapFloatOOBfill);

inline TensorMapEncodeTiled tensor_map_encoder() {
    static const TensorMapEncodeTiled fn = []() -> TensorMapEncodeTiled {
        const char *env = std::getenv("MLA4J_SM90_TMA");
        if (env && std::strcmp(env, "0") == 0) return nullptr;
        void *f = nullptr;
        cudaDriverEntryPointQueryResult q{};
        if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &f, 12000, cudaEnableDefault, &q) !=
                cudaSuccess ||
            q != cudaDriverEntryPointSuccess)
            return nullptr;
        return reinterpret_cast<TensorMapEncodeTiled>(f);
    }();
    return fn;
}

template <typename T>
bool cache_tensor_map(const DecodeArgs &a, CUtensorMap *map) {
    if (a.kv.block_size % kTileKeys != 0 || a.kv.num_blocks >= INT32_MAX) return false;
    const TensorMapEncodeTiled encode = tensor_map_encoder();
    if (!encode) return false;
    constexpr int64_t e = sizeof(T);
    const cuuint64_t dims[4] = {cuuint64_t(a.d_qk), cuuint64_t(a.kv.block_size), cuuint64_t(a.h_kv),
                                cuuint64_t(a.kv.num_blocks)};
    // A single KV head: its stride is that of a whole block's tokens (never stepped over).
    const int64_t head = a.h_kv == 1 ? a.kv.block_size * a.kv.token_stride : a.kv.head_stride;
    const cuuint64_t strides[3] = {cuuint64_t(a.kv.token_stride * e), cuuint64_t(head * e),
                                   cuuint64_t(a.kv.block_stride * e)};
    const cuuint32_t box[4] = {64, uint32_t(kTileKeys), 1, 1};
    const cuuint32_t elem[4] = {1, 1, 1, 1};
    const CUtensorMapDataType dt =
        std::is_same<T, __half>::value ? CU_TENSOR_MAP_DATA_TYPE_FLOAT16 : CU_TENSOR_MAP_DATA_TYPE_BFLOAT16;
    return encode(map, dt, 4, const_cast<void *>(a.kv.data), dims, strides, box, elem,
                  CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
                  CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) == CUDA_SUCCESS;
}

template <typename T, int DQK>
mla_status launch_dqk(const DecodeArgs &a, cudaStream_t stream, const char *op) {
    const int64_t smem = decode_wgmma_smem(a);
    MLA_CUDA_TRY(cudaFuncSetAttribute(decode_wgmma_kernel<T, DQK>,
                                      cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
    const dim3 grid(unsigned(a.sched.parts), unsigned(a.n_mblocks));
    CUtensorMap map;
    std::memset(&map, 0, sizeof(map));
    const int use_tma = cache_tensor_map<T>(a, &map) ? 1 : 0;
    static const int p_regs = [] {
        const char *env = std::getenv("MLA4J_SM90_PA_REGS");
        return env && std::strcmp(env, "0") == 0 ? 0 : 1;
    }();
    decode_wgmma_kernel<T, DQK><<<grid, kThreads, size_t(smem), stream>>>(a, map, use_tma, p_regs);
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
