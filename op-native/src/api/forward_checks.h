// Argument checks shared by the entry points of the attention forward ops (dense decode,
// sparse decode, sparse prefill, dense attention). Every message names the C function, the
// argument, what was expected and what arrived.
//
// Order inside an entry point: scalars and pointers first, then the device (a GPU call is
// refused before any pointed-to data is read on the host, since its pointers are device
// pointers), then the checks that read small host arrays (block tables, sequence lengths,
// positions), then the kernel. Nothing is written before every check has passed.
#pragma once
#include <climits>
#include <cmath>
#include <cstdint>
#include <exception>
#include <new>
#include "common/dtype.h"
#include "common/error.h"
#include "common/rope.h"
#include "mla/mla.h"

namespace mla {
namespace fwd_checks {

inline mla_status dtype(int32_t dt, const char *op) {
    MLA_REQUIRE(is_float_dtype(dt),
                "%s: dtype must be float32, float64, float16 or bfloat16, got %s (%d)", op,
                dtype_name(dt), dt);
    return MLA_OK;
}

// A size that may be zero.
inline mla_status size(int64_t v, const char *op, const char *arg) {
    MLA_REQUIRE(v >= 0, "%s: %s must be >= 0, got %lld", op, arg, (long long)v);
    return MLA_OK;
}

// A size that must be positive.
inline mla_status positive(int64_t v, const char *op, const char *arg) {
    MLA_REQUIRE(v >= 1, "%s: %s must be >= 1, got %lld", op, arg, (long long)v);
    return MLA_OK;
}

inline mla_status heads(int64_t h_q, int64_t h_kv, const char *op) {
    MLA_TRY(positive(h_q, op, "h_q"));
    MLA_TRY(positive(h_kv, op, "h_kv"));
    MLA_REQUIRE(h_q % h_kv == 0, "%s: h_q (%lld) must be divisible by h_kv (%lld)", op,
                (long long)h_q, (long long)h_kv);
    return MLA_OK;
}

inline mla_status head_dims(int64_t d_qk, int64_t d_v, const char *op) {
    MLA_TRY(positive(d_qk, op, "d_qk"));
    MLA_TRY(positive(d_v, op, "d_v"));
    MLA_REQUIRE(d_v <= d_qk, "%s: d_v must be <= d_qk (%lld), got %lld", op, (long long)d_qk,
                (long long)d_v);
    return MLA_OK;
}

// `needed`: the tensor has elements, so its pointer must be set.
inline mla_status pointer(const void *ptr, bool needed, const char *op, const char *arg) {
    MLA_REQUIRE(ptr != nullptr || !needed, "%s: %s must not be null, got NULL", op, arg);
    return MLA_OK;
}

inline mla_status strides(const int64_t *st, int n, const char *op, const char *arg) {
    for (int i = 0; i < n; ++i)
        MLA_REQUIRE(st[i] >= 0, "%s: %s[%d] must be >= 0, got %lld", op, arg, i,
                    (long long)st[i]);
    return MLA_OK;
}

inline mla_status scale(float s, const char *op) {
    MLA_REQUIRE(std::isfinite(s), "%s: softmax_scale must be finite, got %g", op, double(s));
    return MLA_OK;
}

// The rotation descriptor (reads no data): output rows have d_v dims.
inline mla_status rotation(const mla_out_rotation &r, int64_t d_v, const char *op) {
    if (!r.positions) return MLA_OK;
    return check_rope(r.rope, d_v, op, "out_rotation.rope");
}

// Host data: with cos / sin tables every position of the `rows` query rows must index them.
inline mla_status positions(const mla_out_rotation &r, int64_t rows, const char *op) {
    if (!r.positions || !r.rope.cos_table) return MLA_OK;
    for (int64_t i = 0; i < rows; ++i)
        MLA_REQUIRE(r.positions[i] >= 0 && r.positions[i] < r.rope.table_len,
                    "%s: out_rotation.positions[%lld] must be in [0, %lld) (the table length), "
                    "got %d", op, (long long)i, (long long)r.rope.table_len, r.positions[i]);
    return MLA_OK;
}

// A top-k of index lists: int32 entries, so at most INT32_MAX of them per list (a larger
// value cannot describe a buffer the caller has).
inline mla_status topk(int64_t k, const char *op, const char *arg) {
    MLA_REQUIRE(k >= 0 && k <= INT32_MAX, "%s: %s must be in [0, %d], got %lld", op, arg,
                INT32_MAX, (long long)k);
    return MLA_OK;
}

// exec.num_threads (any device).
inline mla_status threads(const mla_exec &e, const char *op) {
    MLA_REQUIRE(e.num_threads >= 0, "%s: exec.num_threads must be >= 0, got %d", op,
                e.num_threads);
    return MLA_OK;
}

// An op without a GPU implementation: a GPU device is refused (before any pointed-to data is
// read on the host: the pointers are device pointers then).
inline mla_status exec(const mla_exec &e, const char *op) {
    MLA_REQUIRE(e.num_threads >= 0, "%s: exec.num_threads must be >= 0, got %d", op,
                e.num_threads);
    if (e.device >= 0)
        return fail(MLA_ERR_UNSUPPORTED, "%s: exec.device %d: no GPU implementation in this build",
                    op, e.device);
    return MLA_OK;
}

// Runs a CPU kernel; scratch allocation failing becomes a status (the kernels allocate before
// writing anything).
template <typename F>
mla_status run_kernel(const char *op, F kernel) {
    try {
        kernel();
    } catch (const std::bad_alloc &) {
        return fail(MLA_ERR_OUT_OF_MEMORY, "%s: out of host memory for scratch buffers", op);
    } catch (const std::exception &e) {
        return fail(MLA_ERR_INTERNAL, "%s: %s", op, e.what());
    }
    return MLA_OK;
}

}  // namespace fwd_checks
}  // namespace mla
