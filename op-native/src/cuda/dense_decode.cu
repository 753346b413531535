// Dense decode on a CUDA device (ops.md section 1): its implementations, the plan, and the
// launches, all in stream order on exec.stream. The API (src/api/dense_decode.cpp) has made
// every check that needs no data; this file checks what only the device can know (the device,
// pointer residency, alignment, shared memory, the workspace).
//
// Implementations, in order of preference (common/plan.h):
//   sm90_wgmma  sm_90, bf16 / fp16, a plain cache of q's dtype, d_qk 576 / 512, d_v 512:
//               schedule -> sm90 wgmma kernel -> combine
//   sm80_mma    sm_80+, bf16 / fp16, a plain cache of q's dtype or an FP8 cache it can
//               stage, d_qk, d_v multiples of 16: schedule -> sm80 mma.sync kernel -> combine
//   cuda_core   everything else (float32 / float64, other dims, misaligned rows): one warp
//               per query row, no workspace
// The split-KV schedule is computed on the device from the device-resident cache_seqlens
// (common/decode_schedule.cu): no copy to the host, no synchronisation.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include "common/cache.h"
#include "common/rope.h"
#include "cuda/common/check.cuh"
#include "cuda/common/decode_host.h"
#include "cuda/common/decode_launch.h"
#include "cuda/common/device_scope.cuh"
#include "cuda/common/plan.h"
#include "cuda/dense_decode.h"
#include "cuda/sm80/config.h"
#include "cuda/sm80/decode_mma.h"
#include "cuda/sm90/config.h"
#include "cuda/sm90/decode_wgmma.h"

namespace mla {
namespace cuda {
namespace {

enum class Kernel { kSimple, kMma, kWgmma };

struct Plan {
    Kernel kernel = Kernel::kSimple;
    int dv_tier = 0;     // value tier of the mma kernel
    SplitPlan split;     // tensor-core kernels: schedule and workspace
};

using Call = mla_dense_decode_params;

bool is_fp8(const mla_cache &c) { return c.kind == MLA_CACHE_V32 || c.kind == MLA_CACHE_MODEL1; }

int64_t kv_heads(const mla_cache &c) { return is_fp8(c) ? 1 : c.h_kv; }

int64_t n_mblocks(const Call &p) {
    return (p.s_q * (p.h_q / kv_heads(p.cache)) + kBlockRows - 1) / kBlockRows;
}

int64_t row_alloc(const Call &p) { return (p.d_qk + 63) / 64 * 64; }

// Rows of q and of a plain cache start on 16 bytes (pointers and strides).
bool rows_aligned(const Call &p) {
    const mla_cache &c = p.cache;
    return aligned16(p.q) && aligned16(c.data) && p.q_stride[0] % 8 == 0 && p.q_stride[1] % 8 == 0 &&
           p.q_stride[2] % 8 == 0 &&
           (is_fp8(c) || (c.block_stride % 8 == 0 && c.token_stride % 8 == 0 && c.head_stride % 8 == 0));
}

// Whether the sm80 kernel can stage and dequantise rows of this FP8 cache (sm80/fp8_rows.cuh):
// one fp8 and one bf16 chunk of 16 bytes per lane, one scale per fp8 chunk, 16-byte aligned
// data rows and bf16 parts, the raw row within the row's shared-memory slot.
bool fp8_stageable(const mla_cache &c, int64_t row_alloc) {
    CacheLayout l;
    if (!fp8_layout(c.kind, c.block_size, c.d_nope, c.d_rope, c.tile, &l)) return false;
    const int64_t rope_at = c.kind == MLA_CACHE_V32 ? l.d_nope + 4LL * l.n_scales : l.d_nope;
    const int64_t raw = l.data_row_bytes + (c.kind == MLA_CACHE_MODEL1 ? l.scale_row_bytes : 0);
    return l.d_nope % 16 == 0 && l.d_nope <= 16 * 32 && l.tile % 16 == 0 && l.d_rope % 8 == 0 &&
           l.d_rope <= 8 * 32 && l.data_row_bytes % 16 == 0 && rope_at % 16 == 0 &&
           l.block_bytes % 16 == 0 && (raw + 15) / 16 * 16 <= row_alloc * 2;
}

// A probe of the kernel arguments that size shared memory.
DecodeArgs smem_probe(const Call &p) {
    DecodeArgs probe{};
    probe.row_alloc = int32_t(row_alloc(p));
    probe.d_qk = p.d_qk;
    probe.d_v = p.d_v;
    return probe;
}

bool tensor_core_dtype(const Call &p, std::string *why) {
    if (p.dtype != MLA_BFLOAT16 && p.dtype != MLA_FLOAT16) {
        *why = std::string("q is ") + dtype_name(p.dtype) + ", needs bfloat16 or float16";
        return false;
    }
    if (!is_fp8(p.cache) && p.cache.dtype != p.dtype) {
        *why = std::string("the cache is ") + dtype_name(p.cache.dtype) + ", needs q's dtype " +
               dtype_name(p.dtype);
        return false;
    }
    return true;
}

bool accept_wgmma(const Call &p, const DeviceProps &dev, Plan *plan, std::string *why) {
    if (dev.major != 9 || dev.minor != 0) return *why = "needs compute capability 9.0", false;
    if (!tensor_core_dtype(p, why)) return false;
    if (is_fp8(p.cache)) return *why = "FP8 caches are read by sm80_mma", false;
    if (p.d_v != sm90::kHeadDimV || (p.d_qk != 512 && p.d_qk != 576))
        return *why = "needs d_qk 576 or 512 and d_v 512", false;
    if (!rows_aligned(p)) return *why = "rows of q or the cache are not 16-byte aligned", false;
    if (n_mblocks(p) > 65535) return *why = "more than 65535 blocks of 64 query rows", false;
    if (sm90::decode_wgmma_smem(smem_probe(p)) > dev.smem_optin)
        return *why = "needs more shared memory than the device has", false;
    plan->kernel = Kernel::kWgmma;
    plan->split = split_plan(p.b * kv_heads(p.cache), n_mblocks(p), p.d_v, dev.sms,
                             sm90::kTileKeys, sm90::kScheduleOverheadTiles, false);
    return true;
}

bool accept_mma(const Call &p, const DeviceProps &dev, Plan *plan, std::string *why) {
    if (dev.major < 8) return *why = "needs compute capability 8.0 or later", false;
    if (!tensor_core_dtype(p, why)) return false;
    if (p.d_qk % 16 != 0 || p.d_v % 16 != 0 || p.d_qk > sm80::kMaxHeadDimQK ||
        p.d_v > sm80::kMaxHeadDimV)
        return *why = "needs d_qk, d_v multiples of 16, d_qk <= 576, d_v <= 512", false;
    if (is_fp8(p.cache) && !fp8_stageable(p.cache, row_alloc(p)))
        return *why = "cannot stage rows of this FP8 layout", false;
    if (!rows_aligned(p)) return *why = "rows of q or the cache are not 16-byte aligned", false;
    if (n_mblocks(p) > 65535) return *why = "more than 65535 blocks of 64 query rows", false;
    int dv_tier = p.d_v <= 64 ? 64 : p.d_v <= 128 ? 128 : p.d_v <= 256 ? 256 : 512;
    if (is_fp8(p.cache)) dv_tier = 512;  // the one FP8 value tier (narrower values masked)
    const DecodeArgs probe = smem_probe(p);
    int tile = 0;
    if (sm80::decode_mma_smem(probe, sm80::kTileKeysLarge, 2) <= dev.smem_optin)
        tile = sm80::kTileKeysLarge;
    else if (dv_tier == 512 && sm80::decode_mma_smem(probe, sm80::kTileKeysSmall, 2) <= dev.smem_optin)
        tile = sm80::kTileKeysSmall;
    if (!tile) return *why = "needs more shared memory than the device has", false;
    plan->kernel = Kernel::kMma;
    plan->dv_tier = dv_tier;
    plan->split = split_plan(p.b * kv_heads(p.cache), n_mblocks(p), p.d_v, dev.sms, tile,
                             sm80::kScheduleOverheadTiles, false);
    return true;
}

bool accept_simple(const Call &p, const DeviceProps &dev, Plan *plan, std::string *why) {
    DecodeArgs probe{};
    probe.dtype = p.dtype;
    probe.d_qk = p.d_qk;
    probe.d_v = p.d_v;
    if (decode_simple_smem(probe) > dev.smem_optin)
        return *why = "d_qk + d_v need more shared memory than the device has", false;
    plan->kernel = Kernel::kSimple;
    return true;
}

const Implementation<Call, Plan> kImplementations[] = {
    {"sm90_wgmma", accept_wgmma},
    {"sm80_mma", accept_mma},
    {"cuda_core", accept_simple},
};

PlanKey plan_key(const Call &p) {
    PlanKey k;
    const mla_cache &c = p.cache;
    for (int64_t v : {int64_t(p.exec.device), int64_t(p.dtype), p.b, p.s_q, p.h_q, p.d_qk, p.d_v,
                      int64_t(c.kind), int64_t(c.dtype), c.h_kv, c.block_size, int64_t(c.d_nope),
                      int64_t(c.d_rope), int64_t(c.tile), int64_t(rows_aligned(p))})
        k.add(v);
    k.add(p.exec.implementation);
    return k;
}

PlanCache<Plan> &plan_cache() {
    static PlanCache<Plan> cache;
    return cache;
}

mla_status make_plan(const Call &p, Planned<Plan> *out, const char *op) {
    const PlanKey key = plan_key(p);
    if (plan_cache().find(key, out)) return MLA_OK;
    DeviceProps dev;
    MLA_TRY(device_props(p.exec.device, &dev, op));
    *out = choose(kImplementations, p, dev, p.exec.implementation);
    plan_cache().put(key, *out);
    return MLA_OK;
}

mla_status device_pointers(const Call &p, const char *op) {
    MLA_TRY(device_pointer(p.q, op, "q"));
    MLA_TRY(device_pointer(p.cache.data, op, "cache.data"));
    MLA_TRY(device_pointer(p.block_table, op, "block_table"));
    MLA_TRY(device_pointer(p.cache_seqlens, op, "cache_seqlens"));
    MLA_TRY(device_pointer(p.sink, op, "sink"));
    MLA_TRY(device_rotation(p.out_rotation, op));
    MLA_TRY(device_pointer(p.out, op, "out"));
    MLA_TRY(device_pointer(p.lse, op, "lse"));
    return MLA_OK;
}

DecodeArgs make_args(const Call &p) {
    DecodeArgs a{};
    const mla_cache &c = p.cache;
    a.dtype = p.dtype;
    a.sparse = 0;
    a.kv = cache_args(c);
    if (is_fp8(c)) {
        const int64_t raw = a.kv.fp8.data_row_bytes +
                            (c.kind == MLA_CACHE_MODEL1 ? a.kv.fp8.scale_row_bytes : 0);
        a.kv.fp8.raw_at = int32_t(row_alloc(p) * 2 - (raw + 15) / 16 * 16);  // sm80 path only
    }
    a.b = p.b;
    a.s_q = p.s_q;
    a.h_q = p.h_q;
    a.h_kv = kv_heads(c);
    a.group = p.h_q / a.h_kv;
    a.d_qk = p.d_qk;
    a.d_v = p.d_v;
    a.units = p.b * a.h_kv;
    a.rows = p.s_q * a.group;
    a.n_mblocks = int32_t(n_mblocks(p));
    a.row_alloc = int32_t(row_alloc(p));
    a.q = p.q;
    for (int i = 0; i < 3; ++i) {
        a.q_stride[i] = p.q_stride[i];
        a.out_stride[i] = p.out_stride[i];
    }
    a.block_table = p.block_table;
    a.block_table_stride = p.block_table_stride;
    a.max_blocks_per_seq = p.max_blocks_per_seq;
    a.seqlens = p.cache_seqlens;
    a.causal = p.causal;
    set_common_args(&a, p.softmax_scale, p.sink, p.out_rotation, p.d_v);
    a.out = p.out;
    a.lse = p.lse;
    return a;
}

template <typename T>
mla_status launch_mma(const DecodeArgs &a, const Plan &pl, cudaStream_t s, const char *op) {
    const int tile = pl.split.tile;
    if (a.kv.kind != MLA_CACHE_PLAIN)
        return tile == sm80::kTileKeysSmall ? sm80::launch_decode_mma<T, 512, 32, true>(a, s, op)
                                            : sm80::launch_decode_mma<T, 512, 64, true>(a, s, op);
    if (tile == sm80::kTileKeysSmall) return sm80::launch_decode_mma<T, 512, 32, false>(a, s, op);
    switch (pl.dv_tier) {
        case 64: return sm80::launch_decode_mma<T, 64, 64, false>(a, s, op);
        case 128: return sm80::launch_decode_mma<T, 128, 64, false>(a, s, op);
        case 256: return sm80::launch_decode_mma<T, 256, 64, false>(a, s, op);
        default: return sm80::launch_decode_mma<T, 512, 64, false>(a, s, op);
    }
}

}  // namespace

mla_status dense_decode_plan(const mla_dense_decode_params &p, mla_plan_info *info) {
    const char *op = "mla_dense_decode_plan";
    MLA_TRY(check_device_ordinal(p.exec.device, op));
    Planned<Plan> pl;
    MLA_TRY(make_plan(p, &pl, op));
    const char *name = pl.impl >= 0 ? kImplementations[pl.impl].name : "";
    fill_plan_info(info, name, pl.impl >= 0 ? pl.plan.split.workspace : 0, pl.refusals);
    return MLA_OK;
}

mla_status dense_decode(const mla_dense_decode_params &p) {
    const char *op = "mla_dense_decode";
    MLA_TRY(check_device_ordinal(p.exec.device, op));
    MLA_TRY(check_gpu_rotation(p.out_rotation, op));
    if (p.b == 0 || p.s_q == 0) return MLA_OK;

    DeviceScope scope;
    MLA_TRY(scope.enter(p.exec.device, op));
    MLA_TRY(device_pointers(p, op));
    Planned<Plan> planned;
    MLA_TRY(make_plan(p, &planned, op));
    if (planned.impl < 0) return refuse(op, planned.refusals);
    const Plan &pl = planned.plan;
    DecodeArgs a = make_args(p);
    const cudaStream_t stream = static_cast<cudaStream_t>(p.exec.stream);
    if (pl.kernel == Kernel::kSimple) return launch_decode_simple(a, stream, op);

    MLA_TRY(bind_workspace(pl.split, p.exec, &a.sched, op));
    MLA_TRY(launch_decode_schedule(a, stream, op));
    const bool bf16 = p.dtype == MLA_BFLOAT16;
    if (pl.kernel == Kernel::kWgmma)
        MLA_TRY(bf16 ? sm90::launch_decode_wgmma<__nv_bfloat16>(a, stream, op)
                     : sm90::launch_decode_wgmma<__half>(a, stream, op));
    else
        MLA_TRY(bf16 ? launch_mma<__nv_bfloat16>(a, pl, stream, op)
                     : launch_mma<__half>(a, pl, stream, op));
    return launch_decode_combine(a, stream, op);
}

}  // namespace cuda
}  // namespace mla
