// Host pieces of the decode-shaped op families (common/decode_host.h).
#include "common/cache.h"
#include "common/error.h"
#include "common/rope.h"
#include "cuda/common/check.cuh"
#include "cuda/common/decode_host.h"
#include "cuda/common/device_scope.cuh"
#include "cuda/common/plan.h"
#include "cuda/runtime.h"

namespace mla {
namespace cuda {

SplitPlan split_plan(int64_t units, int64_t n_mblocks, int64_t d_v, int sms, int tile,
                     int overhead, bool with_max) {
    SplitPlan pl;
    pl.tile = tile;
    pl.overhead = overhead;
    pl.with_max = with_max;
    pl.parts = int(sms / n_mblocks > 1 ? sms / n_mblocks : 1);
    int64_t at = 0;
    pl.off_cum = at;
    at = align256(at + (units + 1) * 8);
    pl.off_part = at;
    at = align256(at + 2 * (int64_t(pl.parts) + 1) * 4);
    const int64_t slots = n_mblocks * pl.parts * 2;
    pl.off_lse = at;
    at = align256(at + slots * kBlockRows * 4);
    if (with_max) {
        pl.off_max = at;
        at = align256(at + slots * kBlockRows * 4);
    }
    pl.off_o = at;
    at = align256(at + slots * kBlockRows * d_v * 4);
    pl.workspace = at;
    return pl;
}

mla_status bind_workspace(const SplitPlan &pl, const mla_exec &exec, ScheduleArgs *s,
                          const char *op) {
    MLA_REQUIRE(exec.workspace != nullptr && exec.workspace_bytes >= pl.workspace,
                "%s: exec.workspace must hold %lld bytes (the workspace-size query), got %lld "
                "bytes at %p", op, (long long)pl.workspace, (long long)exec.workspace_bytes,
                exec.workspace);
    MLA_REQUIRE(aligned16(exec.workspace), "%s: exec.workspace must be 16-byte aligned", op);
    char *ws = static_cast<char *>(exec.workspace);
    s->cum = reinterpret_cast<int64_t *>(ws + pl.off_cum);
    s->part = reinterpret_cast<int32_t *>(ws + pl.off_part);
    s->part_lse = reinterpret_cast<float *>(ws + pl.off_lse);
    s->part_max = pl.with_max ? reinterpret_cast<float *>(ws + pl.off_max) : nullptr;
    s->part_o = reinterpret_cast<float *>(ws + pl.off_o);
    s->parts = pl.parts;
    s->overhead = pl.overhead;
    s->tile = pl.tile;
    return MLA_OK;
}

CacheArgs cache_args(const mla_cache &c) {
    CacheArgs a{};
    a.kind = c.kind;
    a.dtype = c.dtype;
    a.data = c.data;
    a.num_blocks = c.num_blocks;
    a.block_size = c.block_size;
    a.block_stride = c.block_stride;
    a.token_stride = c.token_stride;
    a.head_stride = c.head_stride;
    if (c.kind == MLA_CACHE_V32 || c.kind == MLA_CACHE_MODEL1) {
        CacheLayout l;
        fp8_layout(c.kind, c.block_size, c.d_nope, c.d_rope, c.tile, &l);  // checked by the API
        a.fp8.d_nope = l.d_nope;
        a.fp8.d_rope = l.d_rope;
        a.fp8.tile = l.tile;
        a.fp8.n_scales = l.n_scales;
        a.fp8.data_row_bytes = l.data_row_bytes;
        a.fp8.scale_row_bytes = l.scale_row_bytes;
        a.fp8.block_bytes = l.block_bytes;
        a.fp8.rope_at = int32_t(c.kind == MLA_CACHE_V32 ? l.d_nope + 4 * l.n_scales : l.d_nope);
    }
    return a;
}

void set_common_args(DecodeArgs *a, float softmax_scale, const float *sink,
                     const mla_out_rotation &r, int64_t d_v) {
    a->scale = softmax_scale;
    a->scale_log2 = float(double(softmax_scale) * 1.4426950408889634);
    a->sink = sink;
    if (r.positions) {
        a->rot.positions = r.positions;
        a->rot.cos_table = r.rope.cos_table;
        a->rot.sin_table = r.rope.sin_table;
        a->rot.table_len = r.rope.table_len;
        a->rot.rope_dim = r.rope.rope_dim;
        a->rot.start = int32_t(rope_start(r.rope, d_v));
        a->rot.style = r.rope.style;
        if (!r.rope.cos_table) {
            RopeAngles angles(r.rope);
            for (int i = 0; i < r.rope.rope_dim / 2; ++i) a->rot.freqs[i] = angles.freq(i);
        }
    }
}

mla_status check_device_ordinal(int device, const char *op) {
    const int n = device_count();
    MLA_REQUIRE(device >= 0 && device < n, "%s: exec.device must be in [0, %d), got %d", op, n,
                device);
    return MLA_OK;
}

mla_status check_gpu_rotation(const mla_out_rotation &r, const char *op) {
    if (r.positions && !r.rope.cos_table && r.rope.rope_dim > 2 * kMaxRopePairs)
        return fail(MLA_ERR_UNSUPPORTED,
                    "%s: out_rotation.rope.rope_dim must be <= %d on the GPU (or give cos / sin "
                    "tables), got %d", op, 2 * kMaxRopePairs, r.rope.rope_dim);
    return MLA_OK;
}

mla_status device_rotation(const mla_out_rotation &r, const char *op) {
    if (!r.positions) return MLA_OK;
    MLA_TRY(device_pointer(r.positions, op, "out_rotation.positions"));
    MLA_TRY(device_pointer(r.rope.cos_table, op, "out_rotation.rope.cos_table"));
    MLA_TRY(device_pointer(r.rope.sin_table, op, "out_rotation.rope.sin_table"));
    return MLA_OK;
}

}  // namespace cuda
}  // namespace mla
