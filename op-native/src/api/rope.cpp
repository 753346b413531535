// Entry point of the RoPE op (ops.md section 7): argument checks, then the CPU kernel, or with
// exec.device >= 0 the CUDA kernel (src/cuda/common/rope_apply.cu), before anything reads the
// positions on the host.
#include <algorithm>
#include <cstdint>
#include "api/device_dispatch.h"
#include "common/dtype.h"
#include "common/error.h"
#include "common/rope.h"
#include "cpu/misc_kernels.h"
#ifdef MLA4J_WITH_CUDA
#include "cuda/common/rope_apply.h"
#endif

namespace {

using mla::fail;

// out may be x itself only when every row of x sits where out puts it (x contiguous);
// any other overlap would read rows already overwritten.
mla_status check_alias(const mla_rope_params &p, const char *op) {
    int64_t es = mla::dtype_size(p.dtype);
    int64_t lo = std::min<int64_t>(0, (p.n - 1) * p.x_stride[0]) +
                 std::min<int64_t>(0, (p.h - 1) * p.x_stride[1]);
    int64_t hi = std::max<int64_t>(0, (p.n - 1) * p.x_stride[0]) +
                 std::max<int64_t>(0, (p.h - 1) * p.x_stride[1]) + p.d;
    const char *x = static_cast<const char *>(p.x);
    const char *out = static_cast<const char *>(p.out);
    bool overlap = out < x + hi * es && x + lo * es < out + p.n * p.h * p.d * es;
    if (!overlap) return MLA_OK;
    bool same_rows = out == x && (p.n == 1 || p.x_stride[0] == p.h * p.d) &&
                     (p.h == 1 || p.x_stride[1] == p.d);
    MLA_REQUIRE(same_rows,
                "%s: out must not overlap x unless out == x and x is contiguous (x_stride = "
                "{%lld, %lld}), got x_stride {%lld, %lld} and out at element offset %lld from x",
                op, (long long)(p.h * p.d), (long long)p.d, (long long)p.x_stride[0],
                (long long)p.x_stride[1], (long long)((out - x) / es));
    return MLA_OK;
}

}  // namespace

extern "C" mla_status mla_rope_apply(const mla_rope_params *p) {
    const char *op = "mla_rope_apply";
    if (!p) return fail(MLA_ERR_INVALID_ARGUMENT, "%s: params must not be null", op);
    MLA_REQUIRE(mla::is_float_dtype(p->dtype),
                "%s: dtype must be float32, float64, float16 or bfloat16, got %s", op,
                mla::dtype_name(p->dtype));
    MLA_REQUIRE(p->n >= 0, "%s: n must be >= 0, got %lld", op, (long long)p->n);
    MLA_REQUIRE(p->h >= 1, "%s: h must be >= 1, got %lld", op, (long long)p->h);
    MLA_REQUIRE(p->d >= 1, "%s: d must be >= 1, got %lld", op, (long long)p->d);
    bool rotate = p->rope.rope_dim != 0;
    if (rotate) MLA_TRY(mla::check_rope(p->rope, p->d, op, "rope"));
    if (p->n == 0) {
        if (p->exec.device >= 0) return mla::run_on_device(p->exec, op, [] { return MLA_OK; });
        return mla::cpu::run_on_cpu(p->exec, op, [] {});
    }
    MLA_REQUIRE(p->x != nullptr, "%s: x must not be null", op);
    MLA_REQUIRE(p->out != nullptr, "%s: out must not be null", op);
    if (rotate) MLA_REQUIRE(p->positions != nullptr, "%s: positions must not be null", op);
    MLA_TRY(check_alias(*p, op));
    // Device pointers: the positions are checked against a table on the device (mla.h).
    if (p->exec.device >= 0) {
#ifdef MLA4J_WITH_CUDA
        return mla::run_on_device(p->exec, op, [&] { return mla::cuda::rope_apply(*p); });
#else
        return mla::run_on_device(p->exec, op, [] { return MLA_OK; });
#endif
    }
    if (rotate) {
        if (p->rope.cos_table) {
            for (int64_t i = 0; i < p->n; ++i)
                MLA_REQUIRE(p->positions[i] >= 0 && p->positions[i] < p->rope.table_len,
                            "%s: positions[%lld] must be in [0, rope.table_len = %lld) with a "
                            "cos/sin table, got %d", op, (long long)i,
                            (long long)p->rope.table_len, p->positions[i]);
        }
    }
    return mla::cpu::run_on_cpu(p->exec, op, [&] { mla::cpu::rope_apply(*p); });
}
