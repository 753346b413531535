// The scan behind the checked mode of FP8 quantisation (ops.md section 5).
#include <algorithm>
#include <atomic>
#include <cmath>
#include "common/dtype.h"
#include "common/parallel.h"
#include "cpu/misc_kernels.h"

namespace mla {
namespace cpu {

namespace {

template <typename Load>
int64_t first_in(int64_t i0, int64_t i1, double bound, Load load) {
    for (int64_t i = i0; i < i1; ++i) {
        double v = load(i);
        if (!std::isfinite(v) || std::fabs(v) > bound) return i;
    }
    return -1;
}

int64_t first_in_range(int32_t dtype, const void *x, int64_t i0, int64_t i1, double bound) {
    switch (dtype) {
        case MLA_FLOAT32: {
            const float *p = static_cast<const float *>(x);
            return first_in(i0, i1, bound, [p](int64_t i) { return double(p[i]); });
        }
        case MLA_FLOAT64: {
            const double *p = static_cast<const double *>(x);
            return first_in(i0, i1, bound, [p](int64_t i) { return p[i]; });
        }
        case MLA_FLOAT16: {
            const uint16_t *p = static_cast<const uint16_t *>(x);
            return first_in(i0, i1, bound, [p](int64_t i) { return double(f16_to_float(p[i])); });
        }
        default: {  // MLA_BFLOAT16
            const uint16_t *p = static_cast<const uint16_t *>(x);
            return first_in(i0, i1, bound, [p](int64_t i) { return double(bf16_to_float(p[i])); });
        }
    }
}

}  // namespace

int64_t find_unquantizable(int32_t dtype, const void *x, int64_t n, double bound, int threads) {
    std::atomic<int64_t> first(n);
    parallel_for(n, 1 << 16, threads, [&](int64_t i0, int64_t i1, int) {
        if (i0 >= first.load(std::memory_order_relaxed)) return;  // an earlier value already failed
        int64_t f = first_in_range(dtype, x, i0, i1, bound);
        if (f < 0) return;
        int64_t seen = first.load(std::memory_order_relaxed);
        while (f < seen && !first.compare_exchange_weak(seen, f, std::memory_order_relaxed)) {}
    });
    int64_t f = first.load();
    return f == n ? -1 : f;
}

}  // namespace cpu
}  // namespace mla
