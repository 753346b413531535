// RoPE on a CUDA device (ops.md section 7), the CPU kernel's arithmetic (cpu/rope_apply.cpp):
// every element goes through double (common/convert.cuh: the CPU's loads and stores, NaN
// payloads included), a pair turns by cos / sin in double (from the float32 tables, or
// cos / sin of position * frequency with the frequencies computed on the host exactly as the
// CPU computes them), x0 * c - x1 * s and x0 * s + x1 * c rounded step by step without fused
// multiply-adds (the CPU's SSE arithmetic), then one rounding to the output type. With tables
// the output equals the CPU's bit for bit; from frequencies, the device's double sin / cos may
// differ from the host's in the last bit of a double, rarely visible after the store.
// One CTA per token: the cos / sin of its pairs once in shared memory, then its h * d elements.
#include <cuda_runtime.h>
#include "common/rope.h"
#include "cuda/common/check.cuh"
#include "cuda/common/convert.cuh"
#include "cuda/common/device_scope.cuh"
#include "cuda/common/rope_apply.h"
#include "cuda/runtime.h"

namespace mla {
namespace cuda {
namespace {

constexpr int kRopeThreads = 256;
constexpr int kRopeMaxPairs = 512;  // rope_dim <= 1024 (common/rope.cpp check_rope)

struct RopeArgs {
    int32_t dtype;
    int32_t rope_dim, start, style;
    double sign;                 // +1 forward, -1 inverse
    int64_t n, h, d;
    const void *x;
    int64_t x_stride0, x_stride1;
    void *out;
    const int32_t *positions;
    const float *cos_table;      // NULL: cos / sin of position * freqs
    const float *sin_table;
    int64_t table_len;
    double freqs[kRopeMaxPairs];
};

__global__ void __launch_bounds__(kRopeThreads) rope_apply_kernel(const __grid_constant__ RopeArgs a) {
    __shared__ double cs[kRopeMaxPairs], sn[kRopeMaxPairs];
    const int64_t i = blockIdx.x;
    const int half = a.rope_dim / 2;
    bool in_table = true;
    if (half > 0) {
        const int64_t pos = a.positions[i];
        in_table = !a.cos_table || (pos >= 0 && pos < a.table_len);
        for (int p = threadIdx.x; p < half; p += kRopeThreads) {
            double c = 0.0, s = 0.0;
            if (a.cos_table) {
                if (in_table) {
                    c = a.cos_table[pos * half + p];
                    s = a.sin_table[pos * half + p];
                }
            } else {
                sincos(__dmul_rn(double(pos), a.freqs[p]), &s, &c);
            }
            cs[p] = c;
            sn[p] = __dmul_rn(a.sign, s);
        }
        __syncthreads();
    }
    const int64_t row_elems = a.h * a.d;
    for (int64_t e = threadIdx.x; e < row_elems; e += kRopeThreads) {
        const int64_t hh = e / a.d, c = e % a.d;
        const int64_t src = i * a.x_stride0 + hh * a.x_stride1 + c;
        const int64_t dst = (i * a.h + hh) * a.d + c;
        const int64_t rel = c - a.start;
        if (half == 0 || rel < 0 || rel >= a.rope_dim) {
            conv::store_double(a.out, a.dtype, dst, conv::load_double(a.x, a.dtype, src));
            continue;
        }
        // The thread of a pair's first element rotates both.
        int p;
        int64_t other;
        if (a.style == MLA_ROPE_INTERLEAVED) {
            if (rel & 1) continue;
            p = int(rel / 2);
            other = 1;
        } else {
            if (rel >= half) continue;
            p = int(rel);
            other = half;
        }
        const double x0 = conv::load_double(a.x, a.dtype, src);
        const double x1 = conv::load_double(a.x, a.dtype, src + other);
        double y0, y1;
        if (in_table) {
            const double cc = cs[p], ss = sn[p];
            y0 = __dsub_rn(__dmul_rn(x0, cc), __dmul_rn(x1, ss));
            y1 = __dadd_rn(__dmul_rn(x0, ss), __dmul_rn(x1, cc));
        } else {
            y0 = y1 = __longlong_as_double(0x7ff8000000000000ll);  // position outside the table
        }
        conv::store_double(a.out, a.dtype, dst, y0);
        conv::store_double(a.out, a.dtype, dst + other, y1);
    }
}

}  // namespace

mla_status rope_apply(const mla_rope_params &p) {
    const char *op = "mla_rope_apply";
    const int n_dev = device_count();
    MLA_REQUIRE(p.exec.device >= 0 && p.exec.device < n_dev,
                "%s: exec.device must be in [0, %d), got %d", op, n_dev, p.exec.device);
    if (p.n == 0) return MLA_OK;
    MLA_REQUIRE(p.n <= 0x7fffffff, "%s: n must be < 2^31 on a GPU, got %lld", op, (long long)p.n);
    DeviceScope scope;
    MLA_TRY(scope.enter(p.exec.device, op));
    MLA_TRY(device_pointer(p.x, op, "x"));
    MLA_TRY(device_pointer(p.out, op, "out"));
    const bool rotate = p.rope.rope_dim != 0;
    if (rotate) {
        MLA_TRY(device_pointer(p.positions, op, "positions"));
        MLA_TRY(device_pointer(p.rope.cos_table, op, "rope.cos_table"));
        MLA_TRY(device_pointer(p.rope.sin_table, op, "rope.sin_table"));
    }

    RopeArgs a{};
    a.dtype = p.dtype;
    a.sign = p.inverse ? -1.0 : 1.0;
    a.n = p.n;
    a.h = p.h;
    a.d = p.d;
    a.x = p.x;
    a.x_stride0 = p.x_stride[0];
    a.x_stride1 = p.x_stride[1];
    a.out = p.out;
    if (rotate) {
        a.rope_dim = p.rope.rope_dim;
        a.start = int32_t(rope_start(p.rope, p.d));
        a.style = p.rope.style;
        a.positions = p.positions;
        a.cos_table = p.rope.cos_table;
        a.sin_table = p.rope.sin_table;
        a.table_len = p.rope.table_len;
        if (!a.cos_table) {
            RopeAngles angles(p.rope);
            for (int i = 0; i < a.rope_dim / 2; ++i) a.freqs[i] = angles.freq(i);
        }
    }
    rope_apply_kernel<<<unsigned(p.n), kRopeThreads, 0, static_cast<cudaStream_t>(p.exec.stream)>>>(a);
    MLA_CUDA_LAUNCHED("rope_apply_kernel launch");
    return MLA_OK;
}

}  // namespace cuda
}  // namespace mla
