// Dense decode on a CUDA device (ops.md section 1): checks that need no data, the choice of
// kernel, workspace carving and the launches, all in stream order on exec.stream:
//   tensor-core paths (bf16 / fp16 q, a plain cache of q's dtype or an FP8 cache, 16-byte
//   aligned rows):
//     sm_90, plain cache, d_qk 576 or 512, d_v 512: schedule -> sm90 wgmma kernel -> combine
//     sm_80+ and d_qk, d_v multiples of 16:         schedule -> sm80 mma.sync kernel -> combine
//       (FP8 caches, V32 and MODEL1, take this kernel on every architecture: it dequantises
//       key tiles to q's dtype in shared memory, sm80/fp8_rows.cuh)
//   anything else:                                  the CUDA-core kernel (no workspace)
// MLA4J_DENSE_DECODE_KERNEL=mma or =simple (environment) caps the choice at that kernel, for
// tests and benchmarks of the other paths on a Hopper device.
// The split-KV schedule is computed on the device from the device-resident cache_seqlens
// (common/decode_schedule.cu): no copy to the host, no synchronisation.
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include "api/forward_checks.h"
#include "common/cache.h"
#include "common/rope.h"
#include "cuda/common/check.cuh"
#include "cuda/common/decode_launch.h"
#include "cuda/common/device_scope.cuh"
#include "cuda/dense_decode.h"
#include "cuda/runtime.h"
#include "cuda/sm80/config.h"
#include "cuda/sm80/decode_mma.h"
#include "cuda/sm90/config.h"
#include "cuda/sm90/decode_wgmma.h"

namespace mla {
namespace cuda {
namespace {

namespace chk = mla::fwd_checks;

enum class Path { kSimple, kMma, kWgmma };

struct Plan {
    Path path = Path::kSimple;
    int tile = 0;        // keys per tile of the main kernel
    int overhead = 0;    // schedule cost of a unit's setup and epilogue, in tiles
    int dv_tier = 0;     // value tier of the mma kernel
    int parts = 0;       // schedule partitions per m-block
    int64_t units = 0, n_mblocks = 0, row_alloc = 0;
    // workspace carving (bytes)
    int64_t off_cum = 0, off_part = 0, off_lse = 0, off_o = 0, workspace = 0;
};

int64_t align256(int64_t x) { return (x + 255) / 256 * 256; }

bool is_fp8(const mla_cache &c) { return c.kind == MLA_CACHE_V32 || c.kind == MLA_CACHE_MODEL1; }

// KV heads of a cache: the FP8 layouts hold one.
int64_t kv_heads(const mla_cache &c) { return is_fp8(c) ? 1 : c.h_kv; }

// Checks of sizes, dtypes, layout and descriptors; no pointed-to data is read.
mla_status check_shape(const mla_dense_decode_params &p, const char *op) {
    MLA_TRY(chk::dtype(p.dtype, op));
    MLA_TRY(chk::size(p.b, op, "b"));
    MLA_TRY(chk::size(p.s_q, op, "s_q"));
    MLA_TRY(chk::positive(p.h_q, op, "h_q"));
    MLA_TRY(chk::head_dims(p.d_qk, p.d_v, op));
    MLA_TRY(chk::strides(p.q_stride, 3, op, "q_stride"));
    MLA_TRY(chk::strides(p.out_stride, 3, op, "out_stride"));
    MLA_TRY(chk::size(p.max_blocks_per_seq, op, "max_blocks_per_seq"));
    MLA_TRY(chk::size(p.block_table_stride, op, "block_table_stride"));
    MLA_TRY(chk::scale(p.softmax_scale, op));
    MLA_TRY(chk::rotation(p.out_rotation, p.d_v, op));
    const mla_cache &c = p.cache;
    MLA_REQUIRE(c.kind == MLA_CACHE_PLAIN || is_fp8(c),
                "%s: cache.kind must be 0 (PLAIN), 1 (V32) or 2 (MODEL1), got %d", op, c.kind);
    MLA_REQUIRE(c.num_blocks >= 0, "%s: cache.num_blocks must be >= 0, got %lld", op,
                (long long)c.num_blocks);
    MLA_REQUIRE(c.block_size >= 1, "%s: cache.block_size must be >= 1, got %lld", op,
                (long long)c.block_size);
    if (is_fp8(c)) {
        const char *kind = c.kind == MLA_CACHE_V32 ? "V32" : "MODEL1";
        CacheLayout l;
        MLA_REQUIRE(fp8_layout(c.kind, c.block_size, c.d_nope, c.d_rope, c.tile, &l),
                    "%s: cache is not a valid %s layout (d_nope %d, d_rope %d, tile %d: need "
                    "d_nope > 0 a multiple of tile, d_rope even)", op, kind, c.d_nope, c.d_rope,
                    c.tile);
        MLA_REQUIRE(l.d_qk == p.d_qk, "%s: cache is a %s layout of %lld dims (d_nope %d + "
                    "d_rope %d) but d_qk is %lld", op, kind, (long long)l.d_qk, l.d_nope,
                    l.d_rope, (long long)p.d_qk);
    } else {
        MLA_REQUIRE(is_float_dtype(c.dtype), "%s: cache.dtype must be a float type, got %s", op,
                    dtype_name(c.dtype));
        MLA_REQUIRE(c.block_stride >= 0 && c.token_stride >= 0 && c.head_stride >= 0,
                    "%s: cache strides must be >= 0", op);
    }
    MLA_TRY(chk::heads(p.h_q, kv_heads(c), op));
    if (p.out_rotation.positions && !p.out_rotation.rope.cos_table)
        MLA_REQUIRE(p.out_rotation.rope.rope_dim <= 2 * kMaxRopePairs,
                    "%s: out_rotation.rope.rope_dim must be <= %d on the GPU (or give cos / sin "
                    "tables), got %d", op, 2 * kMaxRopePairs, p.out_rotation.rope.rope_dim);
    MLA_REQUIRE(p.exec.device >= 0, "%s: exec.device must be a CUDA device ordinal, got %d", op,
                p.exec.device);
    const int n = device_count();
    MLA_REQUIRE(p.exec.device < n, "%s: exec.device must be in [0, %d), got %d", op, n,
                p.exec.device);
    return MLA_OK;
}

bool aligned16(const void *ptr) { return (reinterpret_cast<uintptr_t>(ptr) & 15) == 0; }

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

// Picks the kernel and sizes the workspace. `with_pointers`: the data pointers are known and
// their alignment is part of the choice (the workspace query does not know them and sizes for
// the tensor-core path whenever the shape allows it).
mla_status make_plan(const mla_dense_decode_params &p, bool with_pointers, Plan *plan,
                     const char *op) {
    const int dev = p.exec.device;
    int major = 0, minor = 0, sms = 0, smem_optin = 0;
    MLA_CUDA_TRY(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev));
    MLA_CUDA_TRY(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev));
    MLA_CUDA_TRY(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
    MLA_CUDA_TRY(cudaDeviceGetAttribute(&smem_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));

    Plan pl;
    const mla_cache &c = p.cache;
    const int64_t h_kv = kv_heads(c);
    pl.units = p.b * h_kv;
    const int64_t rows = p.s_q * (p.h_q / h_kv);
    pl.n_mblocks = (rows + kBlockRows - 1) / kBlockRows;
    pl.row_alloc = (p.d_qk + 63) / 64 * 64;

    const char *cap = std::getenv("MLA4J_DENSE_DECODE_KERNEL");
    const bool allow_mma = !cap || std::strcmp(cap, "simple") != 0;
    const bool allow_wgmma = allow_mma && (!cap || std::strcmp(cap, "mma") != 0);
    const bool fp8 = is_fp8(c);
    bool mma = allow_mma && major >= 8 && (p.dtype == MLA_BFLOAT16 || p.dtype == MLA_FLOAT16) &&
               (fp8 || c.dtype == p.dtype) && p.d_qk % 16 == 0 && p.d_v % 16 == 0 &&
               p.d_qk <= sm80::kMaxHeadDimQK && p.d_v <= sm80::kMaxHeadDimV &&
               pl.n_mblocks <= 65535 && (!fp8 || fp8_stageable(c, pl.row_alloc));
    if (mma && with_pointers) {
        mma = aligned16(p.q) && aligned16(c.data) && p.q_stride[0] % 8 == 0 &&
              p.q_stride[1] % 8 == 0 && p.q_stride[2] % 8 == 0 &&
              (fp8 || (c.block_stride % 8 == 0 && c.token_stride % 8 == 0 &&
                       c.head_stride % 8 == 0));
    }
    DecodeArgs probe{};
    probe.row_alloc = int32_t(pl.row_alloc);
    probe.d_qk = p.d_qk;
    probe.d_v = p.d_v;
    const bool wgmma = allow_wgmma && mma && !fp8 && major == 9 && minor == 0 && p.d_v == sm90::kHeadDimV &&
                       (p.d_qk == 512 || p.d_qk == 576) &&
                       sm90::decode_wgmma_smem(probe) <= smem_optin;
    if (wgmma) {
        pl.path = Path::kWgmma;
        pl.tile = sm90::kTileKeys;
        pl.overhead = sm90::kScheduleOverheadTiles;
    } else if (mma) {
        pl.dv_tier = p.d_v <= 64 ? 64 : p.d_v <= 128 ? 128 : p.d_v <= 256 ? 256 : 512;
        if (fp8) pl.dv_tier = 512;  // the one FP8 value tier (narrower values masked)
        pl.path = Path::kMma;
        pl.overhead = sm80::kScheduleOverheadTiles;
        if (sm80::decode_mma_smem(probe, sm80::kTileKeysLarge, 2) <= smem_optin)
            pl.tile = sm80::kTileKeysLarge;
        else if (pl.dv_tier == 512 &&
                 sm80::decode_mma_smem(probe, sm80::kTileKeysSmall, 2) <= smem_optin)
            pl.tile = sm80::kTileKeysSmall;
        else
            pl.path = Path::kSimple;
    }
    if (pl.path != Path::kSimple) {
        pl.parts = int(sms / pl.n_mblocks > 1 ? sms / pl.n_mblocks : 1);
        int64_t at = 0;
        pl.off_cum = at;
        at = align256(at + (pl.units + 1) * 8);
        pl.off_part = at;
        at = align256(at + 2 * (int64_t(pl.parts) + 1) * 4);
        const int64_t slots = pl.n_mblocks * pl.parts * 2;
        pl.off_lse = at;
        at = align256(at + slots * kBlockRows * 4);
        pl.off_o = at;
        at = align256(at + slots * kBlockRows * p.d_v * 4);
        pl.workspace = at;
    }
    *plan = pl;
    return MLA_OK;
}

mla_status device_pointers(const mla_dense_decode_params &p, const char *op) {
    MLA_TRY(device_pointer(p.q, op, "q"));
    MLA_TRY(device_pointer(p.cache.data, op, "cache.data"));
    MLA_TRY(device_pointer(p.block_table, op, "block_table"));
    MLA_TRY(device_pointer(p.cache_seqlens, op, "cache_seqlens"));
    MLA_TRY(device_pointer(p.sink, op, "sink"));
    MLA_TRY(device_pointer(p.out_rotation.positions, op, "out_rotation.positions"));
    if (p.out_rotation.positions) {
        MLA_TRY(device_pointer(p.out_rotation.rope.cos_table, op, "out_rotation.rope.cos_table"));
        MLA_TRY(device_pointer(p.out_rotation.rope.sin_table, op, "out_rotation.rope.sin_table"));
    }
    MLA_TRY(device_pointer(p.out, op, "out"));
    MLA_TRY(device_pointer(p.lse, op, "lse"));
    return MLA_OK;
}

DecodeArgs make_args(const mla_dense_decode_params &p, const Plan &pl) {
    DecodeArgs a{};
    const mla_cache &c = p.cache;
    a.dtype = p.dtype;
    a.kv_dtype = c.dtype;
    a.kv_kind = c.kind;
    if (is_fp8(c)) {
        CacheLayout l;
        fp8_layout(c.kind, c.block_size, c.d_nope, c.d_rope, c.tile, &l);  // checked
        a.fp8.d_nope = l.d_nope;
        a.fp8.d_rope = l.d_rope;
        a.fp8.tile = l.tile;
        a.fp8.n_scales = l.n_scales;
        a.fp8.data_row_bytes = l.data_row_bytes;
        a.fp8.scale_row_bytes = l.scale_row_bytes;
        a.fp8.block_bytes = l.block_bytes;
        a.fp8.rope_at = int32_t(c.kind == MLA_CACHE_V32 ? l.d_nope + 4 * l.n_scales : l.d_nope);
        const int64_t raw =
            l.data_row_bytes + (c.kind == MLA_CACHE_MODEL1 ? l.scale_row_bytes : 0);
        a.fp8.raw_at = int32_t(pl.row_alloc * 2 - (raw + 15) / 16 * 16);  // sm80 path only
    }
    a.b = p.b;
    a.s_q = p.s_q;
    a.h_q = p.h_q;
    a.h_kv = kv_heads(c);
    a.group = p.h_q / a.h_kv;
    a.d_qk = p.d_qk;
    a.d_v = p.d_v;
    a.rows = p.s_q * a.group;
    a.n_mblocks = int32_t(pl.n_mblocks);
    a.row_alloc = int32_t(pl.row_alloc);
    a.q = p.q;
    for (int i = 0; i < 3; ++i) {
        a.q_stride[i] = p.q_stride[i];
        a.out_stride[i] = p.out_stride[i];
    }
    a.kv = c.data;
    a.num_blocks = c.num_blocks;
    a.block_size = c.block_size;
    a.block_stride = c.block_stride;
    a.token_stride = c.token_stride;
    a.head_stride = c.head_stride;
    a.block_table = p.block_table;
    a.block_table_stride = p.block_table_stride;
    a.max_blocks_per_seq = p.max_blocks_per_seq;
    a.seqlens = p.cache_seqlens;
    a.scale = p.softmax_scale;
    a.scale_log2 = float(double(p.softmax_scale) * 1.4426950408889634);
    a.causal = p.causal;
    a.sink = p.sink;
    const mla_out_rotation &r = p.out_rotation;
    if (r.positions) {
        a.rot.positions = r.positions;
        a.rot.cos_table = r.rope.cos_table;
        a.rot.sin_table = r.rope.sin_table;
        a.rot.table_len = r.rope.table_len;
        a.rot.rope_dim = r.rope.rope_dim;
        a.rot.start = int32_t(rope_start(r.rope, p.d_v));
        a.rot.style = r.rope.style;
        if (!r.rope.cos_table) {
            RopeAngles angles(r.rope);
            for (int i = 0; i < r.rope.rope_dim / 2; ++i) a.rot.freqs[i] = angles.freq(i);
        }
    }
    a.out = p.out;
    a.lse = p.lse;
    return a;
}

template <typename T>
mla_status launch_mma(const DecodeArgs &a, const Plan &pl, cudaStream_t s, const char *op) {
    if (a.kv_kind != MLA_CACHE_PLAIN)
        return pl.tile == sm80::kTileKeysSmall ? sm80::launch_decode_mma<T, 512, 32, true>(a, s, op)
                                               : sm80::launch_decode_mma<T, 512, 64, true>(a, s, op);
    if (pl.tile == sm80::kTileKeysSmall)
        return sm80::launch_decode_mma<T, 512, 32, false>(a, s, op);
    switch (pl.dv_tier) {
        case 64: return sm80::launch_decode_mma<T, 64, 64, false>(a, s, op);
        case 128: return sm80::launch_decode_mma<T, 128, 64, false>(a, s, op);
        case 256: return sm80::launch_decode_mma<T, 256, 64, false>(a, s, op);
        default: return sm80::launch_decode_mma<T, 512, 64, false>(a, s, op);
    }
}

}  // namespace

int64_t dense_decode_workspace_size(const mla_dense_decode_params &p) {
    const char *op = "mla_dense_decode_workspace_size";
    if (check_shape(p, op) != MLA_OK) return -1;
    Plan pl;
    if (make_plan(p, false, &pl, op) != MLA_OK) return -1;
    return pl.workspace;
}

mla_status dense_decode(const mla_dense_decode_params &p) {
    const char *op = "mla_dense_decode";
    MLA_TRY(check_shape(p, op));
    const bool has_rows = p.b > 0 && p.s_q > 0;
    MLA_TRY(chk::pointer(p.q, has_rows, op, "q"));
    MLA_TRY(chk::pointer(p.out, has_rows, op, "out"));
    MLA_TRY(chk::pointer(p.lse, has_rows, op, "lse"));
    MLA_TRY(chk::pointer(p.cache_seqlens, has_rows, op, "cache_seqlens"));
    MLA_TRY(chk::pointer(p.block_table, has_rows && p.max_blocks_per_seq > 0, op, "block_table"));
    MLA_TRY(chk::pointer(p.cache.data, has_rows && p.cache.num_blocks > 0, op, "cache.data"));
    if (!has_rows) return MLA_OK;

    DeviceScope scope;
    MLA_TRY(scope.enter(p.exec.device, op));
    MLA_TRY(device_pointers(p, op));
    Plan pl;
    MLA_TRY(make_plan(p, true, &pl, op));
    DecodeArgs a = make_args(p, pl);
    const cudaStream_t stream = static_cast<cudaStream_t>(p.exec.stream);

    if (pl.path == Path::kSimple) {
        int smem_optin = 0;
        MLA_CUDA_TRY(cudaDeviceGetAttribute(&smem_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin,
                                            p.exec.device));
        if (decode_simple_smem(a) > smem_optin)
            return fail(MLA_ERR_UNSUPPORTED,
                        "%s: d_qk %lld + d_v %lld need %lld bytes of shared memory, more than "
                        "the device's %d", op, (long long)p.d_qk, (long long)p.d_v,
                        (long long)decode_simple_smem(a), smem_optin);
        return launch_decode_simple(a, stream, op);
    }

    MLA_REQUIRE(p.exec.workspace != nullptr && p.exec.workspace_bytes >= pl.workspace,
                "%s: exec.workspace must hold %lld bytes (mla_dense_decode_workspace_size), got "
                "%lld bytes at %p", op, (long long)pl.workspace,
                (long long)p.exec.workspace_bytes, p.exec.workspace);
    MLA_REQUIRE(aligned16(p.exec.workspace), "%s: exec.workspace must be 16-byte aligned", op);
    char *ws = static_cast<char *>(p.exec.workspace);
    a.sched.cum = reinterpret_cast<int64_t *>(ws + pl.off_cum);
    a.sched.part = reinterpret_cast<int32_t *>(ws + pl.off_part);
    a.sched.part_lse = reinterpret_cast<float *>(ws + pl.off_lse);
    a.sched.part_o = reinterpret_cast<float *>(ws + pl.off_o);
    a.sched.parts = pl.parts;
    a.sched.overhead = pl.overhead;
    a.sched.tile = pl.tile;

    MLA_TRY(launch_decode_schedule(a, stream, op));
    const bool bf16 = p.dtype == MLA_BFLOAT16;
    if (pl.path == Path::kWgmma)
        MLA_TRY(bf16 ? sm90::launch_decode_wgmma<__nv_bfloat16>(a, stream, op)
                     : sm90::launch_decode_wgmma<__half>(a, stream, op));
    else
        MLA_TRY(bf16 ? launch_mma<__nv_bfloat16>(a, pl, stream, op)
                     : launch_mma<__half>(a, pl, stream, op));
    return launch_decode_combine(a, stream, op);
}

}  // namespace cuda
}  // namespace mla
