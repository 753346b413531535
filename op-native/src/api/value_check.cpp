// Entry point of the checked mode of FP8 quantisation (ops.md section 5): argument checks, then
// the CPU scan.
#include <cmath>
#include <cstdint>
#include "common/dtype.h"
#include "common/error.h"
#include "cpu/misc_kernels.h"

extern "C" mla_status mla_find_unquantizable(int32_t dtype, const void *x, int64_t n, double bound,
                                             int32_t num_threads, int64_t *first) {
    const char *op = "mla_find_unquantizable";
    MLA_REQUIRE(first != nullptr, "%s: first must not be null", op);
    *first = -1;
    MLA_REQUIRE(mla::is_float_dtype(dtype), "%s: dtype must be float32, float64, float16 or bfloat16, got %s",
                op, mla::dtype_name(dtype));
    MLA_REQUIRE(n >= 0, "%s: n must be >= 0, got %lld", op, (long long)n);
    MLA_REQUIRE(x != nullptr || n == 0, "%s: x must not be null", op);
    MLA_REQUIRE(bound >= 0, "%s: bound must be >= 0 (+inf: non-finite values only), got %g", op, bound);
    MLA_REQUIRE(num_threads >= 0, "%s: num_threads must be >= 0, got %d", op, num_threads);
    mla_exec exec{};
    exec.device = -1;
    exec.num_threads = num_threads;
    return mla::cpu::run_on_cpu(exec, op, [&] {
        *first = mla::cpu::find_unquantizable(dtype, x, n, bound, num_threads);
    });
}
