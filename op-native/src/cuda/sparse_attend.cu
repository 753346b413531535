// Sparse decode and the sparse prefill forward on a CUDA device (sparse_attend.h): both calls
// become one set of kernel arguments (common/decode_args.cuh, sparse units), planned and run
// alike. Implementations, in order of preference (common/plan.h):
//   sm90_sparse  sm_90, bf16 / fp16 queries, d_v 512, key rows of q's dtype (d_qk 576 / 512)
//                or FP8 V32 (576) / MODEL1 (512) rows in their default layouts, both key
//                sets of one kind: schedule -> sm90 sparse kernel -> combine
//   cuda_core    everything else: one warp per query row, no workspace
#include <cstdint>
#include <string>
#include "common/cache.h"
#include "common/dtype.h"
#include "cuda/common/check.cuh"
#include "cuda/common/decode_host.h"
#include "cuda/common/decode_launch.h"
#include "cuda/common/device_scope.cuh"
#include "cuda/common/plan.h"
#include "cuda/sm90/sparse/attend.h"
#include "cuda/sm90/sparse/config.h"
#include "cuda/sparse_attend.h"

namespace mla {
namespace cuda {
namespace {

enum class Kernel { kSimple, kSm90 };

struct Plan {
    Kernel kernel = Kernel::kSimple;
    SplitPlan split;
};

// A call of either op as the kernels see it, with what planning needs besides.
struct Call {
    DecodeArgs a{};
    mla_exec exec{};
    bool rows_aligned = false;  // q rows and PLAIN key rows start on 16 bytes
};

bool aligned_strides(const int64_t *s, int n) {
    for (int i = 0; i < n; ++i)
        if (s[i] % 8 != 0) return false;
    return true;
}

bool key_set_aligned(const KeySetArgs &k) {
    if (!k.indices) return true;
    const CacheArgs &c = k.cache;
    if (c.num_blocks == 0) return true;  // nothing can be read
    if (!aligned16(c.data)) return false;
    return c.kind != MLA_CACHE_PLAIN ||
           (c.block_stride % 8 == 0 && c.token_stride % 8 == 0 && c.head_stride % 8 == 0);
}

void finish_call(Call *c) {
    DecodeArgs &a = c->a;
    a.group = a.h_q / a.h_kv;
    a.units = a.b * a.s_q * a.h_kv;
    a.rows = a.group;
    a.n_mblocks = int32_t((a.rows + kBlockRows - 1) / kBlockRows);
    a.row_alloc = int32_t((a.d_qk + 63) / 64 * 64);
    c->rows_aligned = aligned16(a.q) && aligned_strides(a.q_stride, 3) && key_set_aligned(a.set[0]) &&
                      key_set_aligned(a.set[1]);
}

KeySetArgs key_set(const mla_sparse_keys &k) {
    KeySetArgs s{};
    s.cache = cache_args(k.cache);
    s.indices = k.indices;
    s.istride[0] = k.indices_stride[0];
    s.istride[1] = k.indices_stride[1];
    s.topk = k.topk;
    s.length = k.topk_length;
    if (!s.indices) s.topk = 0;
    return s;
}

Call decode_call(const mla_sparse_decode_params &p) {
    Call c;
    DecodeArgs &a = c.a;
    a.dtype = p.dtype;
    a.sparse = 1;
    a.b = p.b;
    a.s_q = p.s_q;
    a.h_q = p.h_q;
    a.h_kv = 1;
    a.d_qk = p.d_qk;
    a.d_v = p.d_v;
    a.q = p.q;
    for (int i = 0; i < 3; ++i) {
        a.q_stride[i] = p.q_stride[i];
        a.out_stride[i] = p.out_stride[i];
    }
    a.set[0] = key_set(p.keys);
    if (p.extra.cache.data) a.set[1] = key_set(p.extra);
    set_common_args(&a, p.softmax_scale, p.sink, p.out_rotation, p.d_v);
    a.out = p.out;
    a.lse = p.lse;
    c.exec = p.exec;
    finish_call(&c);
    return c;
}

// A prefill query i is request i with one query; kv is a PLAIN cache of s_kv blocks of one
// token (index = row), its KV heads at kv_stride[1].
Call prefill_call(const mla_sparse_prefill_params &p) {
    Call c;
    DecodeArgs &a = c.a;
    a.dtype = p.dtype;
    a.sparse = 1;
    a.b = p.s_q;
    a.s_q = 1;
    a.h_q = p.h_q;
    a.h_kv = p.h_kv;
    a.d_qk = p.d_qk;
    a.d_v = p.d_v;
    a.q = p.q;
    a.q_stride[0] = p.q_stride[0];
    a.q_stride[2] = p.q_stride[1];
    a.out_stride[0] = p.out_stride[0];
    a.out_stride[2] = p.out_stride[1];
    KeySetArgs &k = a.set[0];
    k.cache.kind = MLA_CACHE_PLAIN;
    k.cache.dtype = p.dtype;
    k.cache.data = p.kv;
    k.cache.num_blocks = p.s_kv;
    k.cache.block_size = 1;
    k.cache.block_stride = p.kv_stride[0];
    k.cache.head_stride = p.kv_stride[1];
    k.indices = p.topk > 0 ? p.indices : nullptr;
    k.istride[0] = p.indices_stride[0];
    k.istride[2] = p.indices_stride[1];
    k.topk = k.indices ? p.topk : 0;
    k.length = p.topk_length;
    set_common_args(&a, p.softmax_scale, p.sink, p.out_rotation, p.d_v);
    a.out = p.out;
    a.lse = p.lse;
    a.max_logit = p.max_logit;
    c.exec = p.exec;
    finish_call(&c);
    return c;
}

bool default_fp8(const CacheArgs &c) {
    if (c.kind == MLA_CACHE_V32) return c.fp8.d_nope == 512 && c.fp8.d_rope == 64 && c.fp8.tile == 128;
    return c.fp8.d_nope == 448 && c.fp8.d_rope == 64 && c.fp8.tile == 64;
}

bool accept_sm90(const Call &c, const DeviceProps &dev, Plan *plan, std::string *why) {
    const DecodeArgs &a = c.a;
    if (dev.major != 9 || dev.minor != 0) return *why = "needs compute capability 9.0", false;
    if (a.dtype != MLA_BFLOAT16 && a.dtype != MLA_FLOAT16)
        return *why = std::string("q is ") + dtype_name(a.dtype) + ", needs bfloat16 or float16", false;
    if (a.d_v != sm90::sparse::kHeadDimV) return *why = "needs d_v 512", false;
    const CacheArgs &k0 = a.set[0].cache;
    if (a.set[1].indices && (a.set[1].cache.kind != k0.kind || a.set[1].cache.dtype != k0.dtype))
        return *why = "the two key sets are of different kinds", false;
    for (int s = 0; s < 2; ++s) {
        const CacheArgs &k = a.set[s].cache;
        if (s == 1 && !a.set[1].indices) break;
        if (k.kind == MLA_CACHE_PLAIN) {
            if (k.dtype != a.dtype)
                return *why = std::string("key rows are ") + dtype_name(k.dtype) + ", needs q's dtype", false;
            if (a.d_qk != 576 && a.d_qk != 512) return *why = "needs d_qk 576 or 512", false;
        } else {
            if (!default_fp8(k)) return *why = "FP8 layouts of other sizes than the default", false;
            if (a.d_qk != (k.kind == MLA_CACHE_V32 ? 576 : 512)) return *why = "d_qk of the FP8 layout", false;
        }
    }
    if (!c.rows_aligned) return *why = "rows of q or the keys are not 16-byte aligned", false;
    if (a.n_mblocks > 65535) return *why = "more than 65535 blocks of 64 query rows", false;
    if (a.units >= INT32_MAX) return *why = "more than 2^31 units", false;
    if (sm90::sparse::attend_smem(a.d_qk) > dev.smem_optin)
        return *why = "needs more shared memory than the device has", false;
    plan->kernel = Kernel::kSm90;
    plan->split = split_plan(a.units, a.n_mblocks, a.d_v, dev.sms, sm90::sparse::kTileKeys,
                             sm90::sparse::kScheduleOverheadTiles, a.max_logit != nullptr);
    return true;
}

bool accept_simple(const Call &c, const DeviceProps &dev, Plan *plan, std::string *why) {
    if (decode_simple_smem(c.a) > dev.smem_optin)
        return *why = "d_qk + d_v need more shared memory than the device has", false;
    plan->kernel = Kernel::kSimple;
    return true;
}

const Implementation<Call, Plan> kImplementations[] = {
    {"sm90_sparse", accept_sm90},
    {"cuda_core", accept_simple},
};

PlanKey plan_key(const Call &c) {
    const DecodeArgs &a = c.a;
    PlanKey k;
    for (int64_t v : {int64_t(c.exec.device), int64_t(a.dtype), a.b, a.s_q, a.h_q, a.h_kv, a.d_qk, a.d_v,
                      int64_t(c.rows_aligned), int64_t(a.max_logit != nullptr)})
        k.add(v);
    for (int s = 0; s < 2; ++s) {
        const CacheArgs &ca = a.set[s].cache;
        for (int64_t v : {int64_t(a.set[s].indices != nullptr), int64_t(ca.kind), int64_t(ca.dtype),
                          int64_t(ca.fp8.d_nope), int64_t(ca.fp8.d_rope), int64_t(ca.fp8.tile)})
            k.add(v);
    }
    k.add(c.exec.implementation);
    return k;
}

mla_status make_plan(const Call &c, Planned<Plan> *out, const char *op) {
    static PlanCache<Plan> cache;
    const PlanKey key = plan_key(c);
    if (cache.find(key, out)) return MLA_OK;
    DeviceProps dev;
    MLA_TRY(device_props(c.exec.device, &dev, op));
    *out = choose(kImplementations, c, dev, c.exec.implementation);
    cache.put(key, *out);
    return MLA_OK;
}

mla_status device_pointers(const Call &c, const char *op) {
    const DecodeArgs &a = c.a;
    MLA_TRY(device_pointer(a.q, op, "q"));
    MLA_TRY(device_pointer(a.out, op, "out"));
    MLA_TRY(device_pointer(a.lse, op, "lse"));
    MLA_TRY(device_pointer(a.max_logit, op, "max_logit"));
    MLA_TRY(device_pointer(a.sink, op, "sink"));
    static const char *names[2][3] = {{"keys.cache.data", "keys.indices", "keys.topk_length"},
                                      {"extra.cache.data", "extra.indices", "extra.topk_length"}};
    for (int s = 0; s < 2; ++s) {
        const KeySetArgs &k = a.set[s];
        if (!k.indices) continue;
        if (k.cache.num_blocks > 0) MLA_TRY(device_pointer(k.cache.data, op, names[s][0]));
        MLA_TRY(device_pointer(k.indices, op, names[s][1]));
        MLA_TRY(device_pointer(k.length, op, names[s][2]));
    }
    return MLA_OK;
}

mla_status plan_info(const Call &c, mla_plan_info *info, const char *op) {
    MLA_TRY(check_device_ordinal(c.exec.device, op));
    Planned<Plan> pl;
    MLA_TRY(make_plan(c, &pl, op));
    const bool split = pl.impl >= 0 && pl.plan.kernel != Kernel::kSimple;
    fill_plan_info(info, pl.impl >= 0 ? kImplementations[pl.impl].name : "",
                   split ? pl.plan.split.workspace : 0, pl.refusals);
    return MLA_OK;
}

template <typename T>
mla_status launch_sm90(const DecodeArgs &a, cudaStream_t stream, const char *op) {
    switch (a.set[0].cache.kind) {
        case MLA_CACHE_V32: return sm90::sparse::launch_attend<T, MLA_CACHE_V32>(a, stream, op);
        case MLA_CACHE_MODEL1: return sm90::sparse::launch_attend<T, MLA_CACHE_MODEL1>(a, stream, op);
        default: return sm90::sparse::launch_attend<T, MLA_CACHE_PLAIN>(a, stream, op);
    }
}

mla_status run(Call &c, const mla_out_rotation &rot, const char *op) {
    MLA_TRY(check_device_ordinal(c.exec.device, op));
    MLA_TRY(check_gpu_rotation(rot, op));
    if (c.a.b == 0 || c.a.s_q == 0) return MLA_OK;
    DeviceScope scope;
    MLA_TRY(scope.enter(c.exec.device, op));
    MLA_TRY(device_pointers(c, op));
    MLA_TRY(device_rotation(rot, op));
    Planned<Plan> planned;
    MLA_TRY(make_plan(c, &planned, op));
    if (planned.impl < 0) return refuse(op, planned.refusals);
    const cudaStream_t stream = static_cast<cudaStream_t>(c.exec.stream);
    DecodeArgs &a = c.a;
    if (planned.plan.kernel == Kernel::kSimple) return launch_decode_simple(a, stream, op);
    MLA_TRY(bind_workspace(planned.plan.split, c.exec, &a.sched, op));
    MLA_TRY(launch_decode_schedule(a, stream, op));
    MLA_TRY(a.dtype == MLA_BFLOAT16 ? launch_sm90<__nv_bfloat16>(a, stream, op)
                                    : launch_sm90<__half>(a, stream, op));
    return launch_decode_combine(a, stream, op);
}

}  // namespace

mla_status sparse_decode(const mla_sparse_decode_params &p) {
    Call c = decode_call(p);
    return run(c, p.out_rotation, "mla_sparse_decode");
}

mla_status sparse_decode_plan(const mla_sparse_decode_params &p, mla_plan_info *info) {
    return plan_info(decode_call(p), info, "mla_sparse_decode_plan");
}

mla_status sparse_prefill_fwd(const mla_sparse_prefill_params &p) {
    Call c = prefill_call(p);
    return run(c, p.out_rotation, "mla_sparse_prefill_fwd");
}

mla_status sparse_prefill_fwd_plan(const mla_sparse_prefill_params &p, mla_plan_info *info) {
    return plan_info(prefill_call(p), info, "mla_sparse_prefill_fwd_plan");
}

}  // namespace cuda
}  // namespace mla
