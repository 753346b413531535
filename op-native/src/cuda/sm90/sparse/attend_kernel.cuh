// sm_90a sparse attention (ops.md section 2, and section 3's forward, which runs as sparse
// decode with one query per request): each unit (request, query, KV head) attends the key
// rows its index lists select, 64 query rows (heads) per CTA, 64 keys per tile.
//
// Warpgroup 2 produces key tiles into two stages: it reads the tile's indices, marks the valid
// keys (a 64-bit mask per stage) and gathers the rows:
//   PLAIN rows of q's dtype: cp.async, 16 bytes per copy, zeros for invalid keys;
//   FP8 rows (V32, MODEL1): 16-byte loads, fp8 * tile scale as q's dtype, the RoPE part from
//   bf16, stored in the swizzled layout wgmma reads. With two m-blocks (h_q 128) the two CTAs
//   of a cluster share the work: each dequantises half of the tile's rows and stores them in
//   both CTAs (st.async into the peer, completing bytes on its mbarrier).
// Warpgroups 0 and 1 consume the tiles in pairs (a in stage 0, b in stage 1) out of phase, as
// the dense decode kernel does (decode_wgmma.cuh): WG0 S_a, softmax, P_a V_a; WG1 S_b while
// WG0's softmax runs, then P_a V_a and P_b V_b for its value columns; each warp releases a
// stage (empty mbarrier, in both CTAs of a cluster) when its products on it are done.
// The epilogue stages float rows over Q and stage 1: the producer writes stage 1 of a unit
// only after every earlier unit's epilogue is done (a counter in shared memory).
#pragma once
#include <cuda.h>
#include <cuda_fp8.h>
#include <cstdint>
#include "cuda/common/check.cuh"
#include "cuda/common/decode_args.cuh"
#include "cuda/common/ptx.cuh"
#include "cuda/sm90/attend_pieces.cuh"
#include "cuda/sm90/sparse/attend.h"
#include "cuda/sm90/sparse/config.h"
#include "cuda/sm90/sync.cuh"
#include "cuda/sm90/wgmma.cuh"

namespace mla {
namespace cuda {
namespace sm90 {
namespace sparse {

// Named barriers (bar.sync ids; 0 is __syncthreads). Counts: 256 both consumer warpgroups,
// 128 one.
enum NamedBarrier : int {
    kPaReady = 1,    // WG0 arrives when P_a and m_a are in shared memory; WG1 waits
    kPbReady = 2,    // WG1 arrives when P_b and m_b are there; WG0 waits
    kWg1Own = 3,     // WG1's P_b stores before its own P_b V_b
    kConsumers = 4,  // both consumer warpgroups (Q loaded, epilogue steps)
};

// Byte offsets from a 1024-byte aligned base. Q and the two K stages are 64 rows of d_qk
// two-byte elements; P_b lives in stage 1's RoPE column block when d_qk > 512 (only S_b reads
// it), else in its own 8 KB. The epilogue's float rows [64][520] overlay Q and stage 1.
struct Smem {
    int64_t q, stage0, stage1, pa, pb, max, l, lse, mask, bars, counter, total;
};

__host__ __device__ inline Smem smem_layout(int64_t d_qk) {
    Smem s;
    const int64_t tile = int64_t(kTileKeys) * d_qk * 2;
    s.q = 0;
    s.stage1 = tile;
    int64_t at = 2 * tile;
    if (d_qk > kHeadDimV) {
        s.pb = s.stage1 + (d_qk / 64 - 1) * 8192;
    } else {
        s.pb = at;
        at += 8192;
    }
    s.stage0 = at;
    at += tile;
    s.pa = at;
    at += 8192;
    s.max = at;  // [2][64]: m after a, after b
    at += 2 * 64 * 4;
    s.l = at;  // [2][64]
    at += 2 * 64 * 4;
    s.lse = at;  // [64] lse, [64] max logit
    at += 2 * 64 * 4;
    s.mask = at;  // [2 stages][4 producer warps] 16-bit valid masks
    at += 16;
    s.bars = at;  // full_local[2], full_remote[2], empty[2]
    at += 6 * 8;
    s.counter = at;  // consumer warps' finished epilogues
    at += 8;
    s.total = at + 1024;
    return s;
}

constexpr int64_t kStagingBytes = 64 * (kHeadDimV + 8) * 4;

#ifdef MLA_SM90_WGMMA

// Two fp8 e4m3 values (low 16 bits) times scale, as two T.
template <typename T>
__device__ __forceinline__ uint32_t dequant2(uint32_t two, float scale) {
    const __half2_raw h = __nv_cvt_fp8x2_to_halfraw2(__nv_fp8x2_storage_t(two & 0xffffu), __NV_E4M3);
    const float2 f = __half22float2(*reinterpret_cast<const __half2 *>(&h));
    return ptx::pack2<T>(f.x * scale, f.y * scale);
}

// Eight bf16 values as eight T.
template <typename T>
__device__ __forceinline__ uint4 from_bf16x8(uint4 v) {
    if constexpr (std::is_same<T, __nv_bfloat16>::value) {
        return v;
    } else {
        auto cv = [](uint32_t w) {
            return ptx::pack2<T>(__uint_as_float(w << 16), __uint_as_float(w & 0xffff0000u));
        };
        return make_uint4(cv(v.x), cv(v.y), cv(v.z), cv(v.w));
    }
}

// 16 bytes into this CTA's shared memory.
__device__ __forceinline__ void st_local(uint32_t addr, uint4 v) { ptx::st_shared_v4(addr, v); }

// 16 bytes into the peer CTA's shared memory (cluster address), counted as bytes on the
// peer's mbarrier.
__device__ __forceinline__ void st_peer(uint32_t cluster_addr, uint4 v, uint32_t cluster_bar) {
    asm volatile(
        "st.async.shared::cluster.mbarrier::complete_tx::bytes.v4.b32 [%0], {%1, %2, %3, %4}, [%5];\n" ::"r"(
            cluster_addr),
        "r"(v.x), "r"(v.y), "r"(v.z), "r"(v.w), "r"(cluster_bar)
        : "memory");
}

__device__ __forceinline__ void mbar_arrive_expect_tx(uint32_t bar, uint32_t bytes) {
    asm volatile("mbarrier.arrive.expect_tx.release.cta.shared::cta.b64 _, [%0], %1;\n" ::"r"(bar),
                 "r"(bytes)
                 : "memory");
}

// What both roles know of the CTA.
struct Ctx {
    unsigned char *smem;
    uint32_t base, sq, sk0, sk1, pa, pb;
    uint32_t full_local, full_remote, empty, counter;
    uint32_t rank;
    int mb;
    int64_t us, ts, ue, te;
};

__device__ __forceinline__ uint32_t bar_at(uint32_t first, int i) { return first + 8 * uint32_t(i); }

// ---- producer ------------------------------------------------------------------------------

// One FP8 row as a producer thread holds it between its loads and its stores: 4 threads per
// row (tq), thread tq takes the 16-byte chunks tq, tq + 4, ... of the fp8 part and of the
// RoPE part, and the row's scales (V32: 4 float32; MODEL1: 8 UE8M0 bytes in x, y).
template <int KIND>
struct Fp8Row {
    static constexpr int kNope = KIND == MLA_CACHE_V32 ? 512 : 448;  // default layouts only
    static constexpr int kNopePer = kNope / 16 / 4;                  // fp8 chunks per thread
    static constexpr int kRopePer = 2;                               // 64 bf16 = 8 chunks
    uint4 raw[kNopePer], rope[kRopePer], sv;

    // Issues the loads of row `slot` of set `set` (< 0: a row of zeros, nothing read).
    __device__ __forceinline__ void load(const DecodeArgs &a, int64_t slot, int set, int tq) {
        const CacheArgs &cache = a.set[set].cache;
        if (slot < 0) {
#pragma unroll
            for (int i = 0; i < kNopePer; ++i) raw[i] = make_uint4(0, 0, 0, 0);
#pragma unroll
            for (int i = 0; i < kRopePer; ++i) rope[i] = make_uint4(0, 0, 0, 0);
            sv = make_uint4(0, 0, 0, 0);
            return;
        }
        const uint8_t *bytes = static_cast<const uint8_t *>(cache.data);
        const uint8_t *row = bytes + fp8_row_offset(cache, slot);
#pragma unroll
        for (int i = 0; i < kNopePer; ++i) raw[i] = ld_nc_v4(row + 16 * (tq + 4 * i));
#pragma unroll
        for (int i = 0; i < kRopePer; ++i) rope[i] = ld_nc_v4(row + cache.fp8.rope_at + 16 * (tq + 4 * i));
        if constexpr (KIND == MLA_CACHE_V32) {
            sv = ld_nc_v4(row + kNope);
        } else {
            const uint2 s2 = ld_nc_v2(bytes + fp8_scale_offset(cache, slot));
            sv = make_uint4(s2.x, s2.y, 0, 0);
        }
    }

    // Scale of this thread's fp8 chunk i (values 16 (tq + 4 i) ..): V32 tile (tq + 4 i) / 8 =
    // i / 2 of 128 values; MODEL1 tile (tq + 4 i) * 16 / 64 = i of 64 values.
    __device__ __forceinline__ float scale(int i) const {
        if constexpr (KIND == MLA_CACHE_V32) {
            const uint32_t w = (i / 2) == 0 ? sv.x : (i / 2) == 1 ? sv.y : (i / 2) == 2 ? sv.z : sv.w;
            return __uint_as_float(w);
        } else {
            return ue8m0_value(((i < 4 ? sv.x : sv.y) >> (8 * (i & 3))) & 0xffu);
        }
    }

    // Dequantises into row r of the stage at `stage` (and of the peer's, counted as bytes on
    // its mbarrier, when CLUSTER > 1).
    template <typename T, int CLUSTER>
    __device__ __forceinline__ void store(uint32_t stage, uint32_t peer_stage, uint32_t peer_bar, int r,
                                          int tq) const {
        auto put = [&](int chunk, uint4 v) {
            const uint32_t off = swz(r, chunk);
            st_local(stage + off, v);
            if (CLUSTER > 1) st_peer(peer_stage + off, v, peer_bar);
        };
#pragma unroll
        for (int i = 0; i < kNopePer; ++i) {
            const int ch = tq + 4 * i;  // 16 fp8 values -> chunks 2 ch, 2 ch + 1 of T
            const uint4 v = raw[i];
            const float sc = scale(i);
            put(2 * ch, make_uint4(dequant2<T>(v.x, sc), dequant2<T>(v.x >> 16, sc), dequant2<T>(v.y, sc),
                                   dequant2<T>(v.y >> 16, sc)));
            put(2 * ch + 1, make_uint4(dequant2<T>(v.z, sc), dequant2<T>(v.z >> 16, sc), dequant2<T>(v.w, sc),
                                       dequant2<T>(v.w >> 16, sc)));
        }
#pragma unroll
        for (int i = 0; i < kRopePer; ++i) put(kNope / 8 + tq + 4 * i, from_bf16x8<T>(rope[i]));
    }
};

// The producer's view of a unit's keys: the tiles it fills, in the consumers' order.
struct ProducerUnit {
    int64_t u, n0, nk;
    int t0, t1;
};

template <typename T, int DQK, int KIND, int CLUSTER>
__device__ __forceinline__ void produce(const DecodeArgs &a, const Ctx &c) {
    constexpr bool kFp8 = KIND != MLA_CACHE_PLAIN;
    const ScheduleArgs &sc = a.sched;
    const int ptid = threadIdx.x - kConsumerThreads, warp = ptid >> 5, lane = ptid & 31;
    uint16_t *s_mask = reinterpret_cast<uint16_t *>(c.smem + smem_layout(DQK).mask);
    const uint32_t peer = c.rank ^ 1u;
    uint32_t empty_parity = 3u;  // bit s: a fresh barrier's "previous phase" counts as done
    uint32_t units_before = 0;

    // The (unit, tile) sequence of the partition, walked one tile ahead: what a tile needs from
    // global memory (indices, FP8 rows) is fetched before the producer waits for its stage.
    ProducerUnit pu{c.us, 0, 0, 0, 0};
    auto start_unit = [&](ProducerUnit *x) {
        const int n_u = int(unit_tiles(sc, x->u));
        x->t0 = x->u == c.us ? int(c.ts) : 0;
        x->t1 = x->u == c.ue ? int(c.te) : n_u;
        const int64_t b = sparse_request(a, x->u);
        x->n0 = set_count(a, 0, b);
        x->nk = x->n0 + set_count(a, 1, b);
    };
    auto in_range = [&](int64_t u) { return u < c.ue || (u == c.ue && c.te > 0); };
    // Next (unit, tile) after (u, t), skipping units without tiles; false at the end.
    auto advance = [&](ProducerUnit *x, int *t) {
        if (++*t < x->t1) return true;
        for (++x->u; in_range(x->u); ++x->u) {
            start_unit(x);
            *t = x->t0;
            if (x->t0 < x->t1) return true;
        }
        return false;
    };

    // What the thread fetches for a tile: the validity of rows 16 warp + lane (lanes < 16) and,
    // PLAIN, those rows' source pointers; FP8: its loaded row of the first pass.
    struct Fetch {
        uint32_t valid16;
        uint64_t src;   // PLAIN, lanes < 16: row 16 warp + lane (0: invalid)
        int64_t slot2;  // FP8, one CTA: the second pass's row, loaded after the wait
        int set2;
    };
    Fp8Row<KIND> row{};
    const int tq = lane & 3, rr = lane >> 2;
    auto fetch = [&](const ProducerUnit &x, int t, Fetch *f) {
        const int64_t k0 = int64_t(t) * kTileKeys;
        int set = 0;
        int64_t off = -1;
        if (lane < 16) off = sparse_key(a, x.u, x.n0, x.nk, k0 + warp * 16 + lane, &set);
        f->valid16 = __ballot_sync(0xffffffffu, off >= 0) & 0xffffu;
        if constexpr (!kFp8) {
            f->src = off >= 0 ? reinterpret_cast<uint64_t>(static_cast<const T *>(a.set[set].cache.data) + off) : 0;
        } else {
            const int r0 = (CLUSTER > 1 ? int(c.rank) * 32 : 0) + warp * 8 + rr;
            int rs = 0;
            const int64_t slot = sparse_key(a, x.u, x.n0, x.nk, k0 + r0, &rs);
            row.load(a, slot, rs, tq);
            if (CLUSTER == 1) f->slot2 = sparse_key(a, x.u, x.n0, x.nk, k0 + 32 + r0, &f->set2);
        }
    };

    if (!in_range(pu.u)) return;
    start_unit(&pu);
    int t = pu.t0;
    if (pu.t0 >= pu.t1 && !advance(&pu, &t)) return;
    // units_before counts the units before pu.u in this partition.
    for (int64_t v = c.us; v < pu.u; ++v) ++units_before;
    Fetch f;
    fetch(pu, t, &f);
    while (true) {
        const int st = (t - pu.t0) & 1;
        mbar_wait_cluster(bar_at(c.empty, st), (empty_parity >> st) & 1u);
        empty_parity ^= 1u << st;
        if (st == 1 && t == pu.t0 + 1 && units_before > 0) {
            // The epilogue's staging overlays stage 1: every earlier unit's is done.
            const uint32_t need = units_before * 8u * uint32_t(CLUSTER);
            Watchdog w;
            while (counter_load(c.counter) < need) {
                __nanosleep(64);
                w.tick();
            }
        }
        const uint32_t stage = st ? c.sk1 : c.sk0;
        if (lane == 0) s_mask[st * 4 + warp] = uint16_t(f.valid16);
        if constexpr (!kFp8) {
            // Rows 16 warp .. +15, one 16-byte chunk per lane and row (a warp copies a row's
            // consecutive chunks); zeros (nothing read) for invalid keys.
#pragma unroll 4
            for (int i = 0; i < 16; ++i) {
                const uint64_t p = __shfl_sync(0xffffffffu, f.src, i);
                const int r = warp * 16 + i;
                for (int ch = lane; ch < DQK / 8; ch += 32)
                    ptx::cp_async_16(stage + swz(r, ch),
                                     p ? reinterpret_cast<const T *>(p) + ch * 8 : static_cast<const T *>(a.q),
                                     p ? 16 : 0);
            }
            mbar_arrive_cp_async(bar_at(c.full_local, st));
            __syncwarp();
            if (lane == 0) mbar_arrive(bar_at(c.full_local, st));  // the mask
        } else {
            const uint32_t peer_stage = CLUSTER > 1 ? map_to_rank(stage, peer) : 0;
            const uint32_t peer_bar = CLUSTER > 1 ? map_to_rank(bar_at(c.full_remote, st), peer) : 0;
            if (CLUSTER > 1 && ptid == 0)  // the peer's half of the tile, as bytes
                mbar_arrive_expect_tx(bar_at(c.full_remote, st), uint32_t(kTileKeys / 2) * DQK * 2);
            const int r0 = (CLUSTER > 1 ? int(c.rank) * 32 : 0) + warp * 8 + rr;
            row.template store<T, CLUSTER>(stage, peer_stage, peer_bar, r0, tq);
            if (CLUSTER == 1) {  // the second half of the rows, loaded now
                row.load(a, f.slot2, f.set2, tq);
                row.template store<T, CLUSTER>(stage, 0, 0, r0 + 32, tq);
            }
            fence_proxy_async_all();  // the stores above -> wgmma reads
            mbar_arrive(bar_at(c.full_local, st));
        }
        const int64_t u_before = pu.u;
        if (!advance(&pu, &t)) break;
        units_before += uint32_t(pu.u - u_before);
        fetch(pu, t, &f);
    }
}

// ---- consumers -----------------------------------------------------------------------------

template <typename T, int DQK, int KIND, int CLUSTER>
__device__ __forceinline__ void consume(const DecodeArgs &a, const Ctx &c) {
    constexpr int kChunks = DQK / 8;
    const ScheduleArgs &sc = a.sched;
    const Smem L = smem_layout(DQK);
    float *s_max = reinterpret_cast<float *>(c.smem + L.max);
    float *s_l = reinterpret_cast<float *>(c.smem + L.l);
    float *s_lse = reinterpret_cast<float *>(c.smem + L.lse);
    const uint16_t *s_mask = reinterpret_cast<const uint16_t *>(c.smem + L.mask);
    float *staging = reinterpret_cast<float *>(c.smem);
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    const int wg = tid >> 7, wq = warp & 3;
    const int g = lane >> 2, q4 = lane & 3;
    const int row0 = wq * 16 + g, row1 = row0 + 8;
    const int mb = c.mb;
    const int rows_blk = int(min64(kBlockRows, a.rows - int64_t(mb) * kBlockRows));
    const int dv = int(a.d_v), stage_ld = dv + 8;
    const T *qg = static_cast<const T *>(a.q);
    const uint32_t peer = c.rank ^ 1u;
    const uint32_t desc_q0 = desc_lo(c.sq, 16);
    const uint32_t desc_k[2] = {desc_lo(c.sk0, 16), desc_lo(c.sk1, 16)};
    const uint32_t desc_v[2] = {desc_lo(c.sk0 + uint32_t(wg) * 4 * kColBlock, kColBlock),
                                desc_lo(c.sk1 + uint32_t(wg) * 4 * kColBlock, kColBlock)};
    const uint32_t desc_pa = desc_lo(c.pa, 16), desc_pb = desc_lo(c.pb, 16);
    const uint32_t empty_peer = CLUSTER > 1 ? map_to_rank(c.empty, peer) : 0;
    const uint32_t counter_peer = CLUSTER > 1 ? map_to_rank(c.counter, peer) : 0;
    uint32_t full_parity = 0;  // bit s: parity of the next phase of stage s to wait for

    auto wait_full = [&](int st) {
        const uint32_t par = (full_parity >> st) & 1u;
        mbar_wait_cluster(bar_at(c.full_local, st), par);
        if (CLUSTER > 1) mbar_wait_cluster(bar_at(c.full_remote, st), par);
        full_parity ^= 1u << st;
        fence_proxy_async();  // cp.async data -> wgmma operand reads
    };
    // This warp is done with stage st (its products on it have completed).
    auto release = [&](int st) {
        __syncwarp();
        if (lane == 0) {
            mbar_arrive(bar_at(c.empty, st));
            if (CLUSTER > 1) mbar_arrive_cluster(empty_peer + 8 * uint32_t(st));
        }
    };
    auto valid_mask = [&](int st) {
        const uint16_t *mk = s_mask + st * 4;
        return uint64_t(mk[0]) | uint64_t(mk[1]) << 16 | uint64_t(mk[2]) << 32 | uint64_t(mk[3]) << 48;
    };

    for (int64_t u = c.us; u < c.ue || (u == c.ue && c.te > 0); ++u) {
        const int n_u = int(unit_tiles(sc, u));
        const int t0 = u == c.us ? int(c.ts) : 0, t1 = u == c.ue ? int(c.te) : n_u;
        const bool complete = t0 == 0 && t1 == n_u;
        float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};
        float o[128];
#pragma unroll
        for (int i = 0; i < 128; ++i) o[i] = 0.f;

        if (t0 < t1) {
            // Q rows of this m-block (zeros past the unit's rows).
            for (int r = warp; r < kBlockRows; r += 8) {
                const bool valid = r < rows_blk;
                const T *src = qg;
                if (valid) {
                    const RowId id = row_id(a, u, mb, r);
                    src += id.b * a.q_stride[0] + id.j * a.q_stride[1] + id.h * a.q_stride[2];
                }
                for (int ch = lane; ch < kChunks; ch += 32)
                    ptx::cp_async_16(c.sq + swz(r, ch), src + ch * 8, valid ? 16 : 0);
            }
            asm volatile("cp.async.wait_all;\n" ::: "memory");
            fence_proxy_async();
            ptx::named_barrier(kConsumers, kConsumerThreads);

            for (int ta = t0; ta < t1; ta += 2) {
                const bool has_b = ta + 1 < t1;
                float s[32];
                if (wg == 0) {
                    wait_full(0);
                    issue_s<T, DQK>(s, desc_q0, desc_k[0]);
                    wgmma_wait<0>();
                    fence_regs(s);
                    float mx[2], mu[2], al[2], rs[2];
                    uint32_t pr[16];
                    scale_mask_valid(s, a.scale_log2, valid_mask(0), q4, mx);
                    const float mn[2] = {fmaxf(m[0], mx[0]), fmaxf(m[1], mx[1])};
                    advance_max(m, mn, mu, al);
                    exp_store<T>(s, c.pa, row0, row1, q4, mu, rs, pr);
#pragma unroll
                    for (int i = 0; i < 2; ++i) l[i] = l[i] * al[i] + rs[i];
                    if (q4 == 0) {
                        s_max[row0] = m[0];
                        s_max[row1] = m[1];
                    }
                    fence_proxy_async();  // P stores -> wgmma operand reads (WG1)
                    bar_arrive(kPaReady, kConsumerThreads);
                    rescale_o(o, al);
                    issue_pv_regs<T>(o, pr, desc_v[0]);
                    wgmma_wait<0>();
                    fence_regs(o);
                    release(0);
                    if (has_b) {
                        ptx::named_barrier(kPbReady, kConsumerThreads);
                        const float mnb[2] = {s_max[kBlockRows + row0], s_max[kBlockRows + row1]};
                        float al2[2];
                        advance_max(m, mnb, mu, al2);
#pragma unroll
                        for (int i = 0; i < 2; ++i) l[i] *= al2[i];
                        wait_full(1);
                        rescale_o(o, al2);
                        issue_pv<T>(o, desc_pb, desc_v[1]);
                        wgmma_wait<0>();
                        fence_regs(o);
                        release(1);
                    }
                } else {
                    float mx[2] = {-INFINITY, -INFINITY};
                    if (has_b) {
                        wait_full(1);
                        issue_s<T, DQK>(s, desc_q0, desc_k[1]);
                        wgmma_wait<0>();
                        fence_regs(s);
                        scale_mask_valid(s, a.scale_log2, valid_mask(1), q4, mx);
                    }
                    ptx::named_barrier(kPaReady, kConsumerThreads);
                    float mu[2], al[2];
                    const float mna[2] = {s_max[row0], s_max[row1]};
                    advance_max(m, mna, mu, al);
#pragma unroll
                    for (int i = 0; i < 2; ++i) l[i] *= al[i];
                    wait_full(0);
                    rescale_o(o, al);
                    issue_pv<T>(o, desc_pa, desc_v[0]);
                    if (has_b) {
                        const float mn[2] = {fmaxf(m[0], mx[0]), fmaxf(m[1], mx[1])};
                        float al2[2], rs[2];
                        uint32_t pr[16];
                        advance_max(m, mn, mu, al2);
                        exp_store<T>(s, c.pb, row0, row1, q4, mu, rs, pr);
#pragma unroll
                        for (int i = 0; i < 2; ++i) l[i] = l[i] * al2[i] + rs[i];
                        if (q4 == 0) {
                            s_max[kBlockRows + row0] = m[0];
                            s_max[kBlockRows + row1] = m[1];
                        }
                        fence_proxy_async();
                        ptx::named_barrier(kWg1Own, 128);  // P_b for this warpgroup's wgmma
                        bar_arrive(kPbReady, kConsumerThreads);
                        wgmma_wait<0>();  // P_a V_a
                        fence_regs(o);
                        release(0);
                        rescale_o(o, al2);
                        issue_pv<T>(o, desc_pb, desc_v[1]);
                        wgmma_wait<0>();
                        fence_regs(o);
                        release(1);
                    } else {
                        wgmma_wait<0>();
                        fence_regs(o);
                        release(0);
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
        ptx::named_barrier(kConsumers, kConsumerThreads);
        RowResult res[2];
        float inv[2];
#pragma unroll
        for (int i = 0; i < 2; ++i) {
            const int r = row0 + 8 * i;
            res[i] = row_result(m[i], s_l[r] + s_l[kBlockRows + r], complete);
            inv[i] = res[i].inv;
        }
        if (complete) {
            // Every consumer's products are done: Q, stage 1 and P_b are free for the staging.
            store_o_rows(o, inv, staging, stage_ld, row0, row1, q4, wg * 256, dv, kBlockRows);
            if (wg == 0 && q4 == 0) {
#pragma unroll
                for (int i = 0; i < 2; ++i) {
                    s_lse[row0 + 8 * i] = res[i].lse;
                    s_lse[kBlockRows + row0 + 8 * i] = res[i].max_logit;
                }
            }
            ptx::named_barrier(kConsumers, kConsumerThreads);
            for (int r = warp; r < rows_blk; r += 8) {
                const RowId id = row_id(a, u, mb, r);
                write_row<float>(a, staging + r * stage_ld, id.b, id.j, id.h, s_lse[r],
                                 s_lse[kBlockRows + r], lane);
            }
        } else {
            const int64_t slot = (int64_t(mb) * sc.parts + blockIdx.x) * 2 + (u == c.us ? 0 : 1);
            store_o_rows(o, inv, sc.part_o + slot * kBlockRows * a.d_v, dv, row0, row1, q4,
                         wg * 256, dv, rows_blk);
            if (wg == 0 && q4 == 0) {
#pragma unroll
                for (int i = 0; i < 2; ++i) {
                    const int r = row0 + 8 * i;
                    if (r < rows_blk) {
                        sc.part_lse[slot * kBlockRows + r] = res[i].lse;
                        if (sc.part_max) sc.part_max[slot * kBlockRows + r] = res[i].max_logit;
                    }
                }
            }
        }
        // Staging (and s_l) read by every consumer before the next unit's Q and the producer's
        // next stage-1 fill.
        ptx::named_barrier(kConsumers, kConsumerThreads);
        if (lane == 0) {
            counter_add_cluster(map_to_rank(c.counter, c.rank), 1u);
            if (CLUSTER > 1) counter_add_cluster(counter_peer, 1u);
        }
    }
}

#endif  // MLA_SM90_WGMMA

template <typename T, int DQK, int KIND, int CLUSTER>
__global__ void __launch_bounds__(kThreads, 1) attend_kernel(const __grid_constant__ DecodeArgs a) {
#ifdef MLA_SM90_WGMMA
    static_assert(DQK == 576 || DQK == 512, "d_qk");
    static_assert(KIND == MLA_CACHE_PLAIN || (KIND == MLA_CACHE_V32 && DQK == 576) ||
                      (KIND == MLA_CACHE_MODEL1 && DQK == 512),
                  "FP8 layouts with their default dims");
    static_assert(CLUSTER == 1 || (CLUSTER == 2 && KIND != MLA_CACHE_PLAIN), "cluster");
    extern __shared__ __align__(1024) unsigned char smem_raw[];
    const int32_t *pp = a.sched.part + 2 * blockIdx.x;
    Ctx c;
    c.us = pp[0];
    c.ts = pp[1];
    c.ue = pp[2];
    c.te = pp[3];
    if (c.us == c.ue && c.ts == c.te) return;  // empty partition (the cluster's CTAs share it)

    const uint32_t raw = ptx::smem_addr(smem_raw);
    const uint32_t pad = ((raw + 1023) & ~1023u) - raw;
    const Smem L = smem_layout(DQK);
    c.smem = smem_raw + pad;
    c.base = raw + pad;
    c.sq = c.base + uint32_t(L.q);
    c.sk0 = c.base + uint32_t(L.stage0);
    c.sk1 = c.base + uint32_t(L.stage1);
    c.pa = c.base + uint32_t(L.pa);
    c.pb = c.base + uint32_t(L.pb);
    c.full_local = c.base + uint32_t(L.bars);
    c.full_remote = c.full_local + 16;
    c.empty = c.full_local + 32;
    c.counter = c.base + uint32_t(L.counter);
    c.rank = CLUSTER > 1 ? cluster_rank() : 0;
    c.mb = blockIdx.y;

    if (threadIdx.x == 0) {
        // PLAIN: every producer thread's cp.async arrival, and the mask from lane 0 of each
        // warp; FP8: every producer thread after its stores.
        constexpr int kFullCount = KIND == MLA_CACHE_PLAIN ? 128 + 4 : 128;
#pragma unroll
        for (int s = 0; s < 2; ++s) {
            mbar_init(bar_at(c.full_local, s), kFullCount);
            mbar_init(bar_at(c.full_remote, s), 1);
            mbar_init(bar_at(c.empty, s), 8 * CLUSTER);
        }
        *reinterpret_cast<uint32_t *>(c.smem + L.counter) = 0;
        if (CLUSTER > 1) fence_mbarrier_init();
    }
    if (CLUSTER > 1)
        cluster_sync();
    else
        __syncthreads();

    if (threadIdx.x >= kConsumerThreads) {
        regs_decrease<kProducerRegs>();
        produce<T, DQK, KIND, CLUSTER>(a, c);
    } else {
        regs_increase<kConsumerRegs>();
        consume<T, DQK, KIND, CLUSTER>(a, c);
    }
    // No CTA of a cluster leaves while its peer may still write its memory or barriers.
    if (CLUSTER > 1) cluster_sync();
#else
    __trap();  // built for another architecture: the dispatcher launches this on sm_90 only
#endif
}

template <typename T, int DQK, int KIND, int CLUSTER>
mla_status launch_variant(const DecodeArgs &a, cudaStream_t stream, const char *op) {
    const int64_t smem = smem_layout(DQK).total;
    auto kernel = attend_kernel<T, DQK, KIND, CLUSTER>;
    MLA_CUDA_TRY(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = dim3(unsigned(a.sched.parts), unsigned(a.n_mblocks));
    cfg.blockDim = dim3(kThreads);
    cfg.dynamicSmemBytes = size_t(smem);
    cfg.stream = stream;
    cudaLaunchAttribute attr[1];
    attr[0].id = cudaLaunchAttributeClusterDimension;
    attr[0].val.clusterDim.x = 1;
    attr[0].val.clusterDim.y = CLUSTER;
    attr[0].val.clusterDim.z = 1;
    cfg.attrs = attr;
    cfg.numAttrs = 1;
    MLA_CUDA_TRY(cudaLaunchKernelEx(&cfg, kernel, a));
    MLA_CUDA_LAUNCHED("sm90 sparse attend_kernel launch");
    return MLA_OK;
}

template <typename T, int KIND>
mla_status launch_attend(const DecodeArgs &a, cudaStream_t stream, const char *op) {
    if constexpr (KIND == MLA_CACHE_PLAIN) {
        return a.d_qk == 576 ? launch_variant<T, 576, KIND, 1>(a, stream, op)
                             : launch_variant<T, 512, KIND, 1>(a, stream, op);
    } else {
        constexpr int DQK = KIND == MLA_CACHE_V32 ? 576 : 512;
        return a.n_mblocks % 2 == 0 ? launch_variant<T, DQK, KIND, 2>(a, stream, op)
                                    : launch_variant<T, DQK, KIND, 1>(a, stream, op);
    }
}

}  // namespace sparse
}  // namespace sm90
}  // namespace cuda
}  // namespace mla

#define MLA_INSTANTIATE_SPARSE_ATTEND(T, KIND)                                                    \
    template mla_status mla::cuda::sm90::sparse::launch_attend<T, KIND>(const mla::cuda::DecodeArgs &, \
                                                                          cudaStream_t, const char *);
