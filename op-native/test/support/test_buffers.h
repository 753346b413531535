// Buffers the native tests share: element encodings written here (independent of the
// library's own conversions), host buffers of one float type, device buffers through the
// mla_cuda_* API, the comparison of an op's output with a float64 reference, and a parallel
// loop for references over many rows.
#pragma once
#include <mla/mla.h>
#include "test_support.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <thread>
#include <vector>

namespace mla_test {

const double kInf = std::numeric_limits<double>::infinity();

inline int64_t elem_bytes(int dt) { return dt == MLA_FLOAT64 ? 8 : dt == MLA_FLOAT32 ? 4 : 2; }

inline const char *dt_name(int dt) {
    switch (dt) {
        case MLA_FLOAT32: return "f32";
        case MLA_FLOAT64: return "f64";
        case MLA_FLOAT16: return "f16";
        case MLA_BFLOAT16: return "bf16";
        case MLA_FP8_E4M3: return "fp8";
        default: return "?";
    }
}

// Tolerance of ||out - ref|| / ||ref|| for outputs of dtype dt (ops.md section 8).
inline double rel_tolerance(int dt) {
    return dt == MLA_BFLOAT16 || dt == MLA_FLOAT16 ? 1e-2 : 1e-3;
}

// A flat host buffer of one float type, poisoned (every byte 0xff: NaN) at creation; set()
// stores a rounded value, get() reads the stored value exactly.
struct Buf {
    int dt = MLA_FLOAT32;
    std::vector<unsigned char> bytes;

    Buf() = default;
    Buf(int t, int64_t n) : dt(t), bytes(size_t(std::max<int64_t>(n, 1) * elem_bytes(t)), 0xff) {}
    int64_t nbytes() const { return int64_t(bytes.size()); }
    int64_t size() const { return nbytes() / elem_bytes(dt); }
    void *data() { return bytes.data(); }
    const void *data() const { return bytes.data(); }
    void poison() { std::fill(bytes.begin(), bytes.end(), 0xff); }  // NaN in every float type
    void set(int64_t i, double v) {
        unsigned char *p = bytes.data() + i * elem_bytes(dt);
        if (dt == MLA_FLOAT64) {
            std::memcpy(p, &v, 8);
        } else if (dt == MLA_FLOAT32) {
            float f = float(v);
            std::memcpy(p, &f, 4);
        } else {
            uint16_t h = dt == MLA_BFLOAT16 ? bf16_bits(v) : f16_bits(v);
            std::memcpy(p, &h, 2);
        }
    }
    double get(int64_t i) const {
        const unsigned char *p = bytes.data() + i * elem_bytes(dt);
        if (dt == MLA_FLOAT64) {
            double v;
            std::memcpy(&v, p, 8);
            return v;
        }
        if (dt == MLA_FLOAT32) {
            float f;
            std::memcpy(&f, p, 4);
            return f;
        }
        uint16_t h;
        std::memcpy(&h, p, 2);
        return dt == MLA_BFLOAT16 ? bf16_value(h) : f16_value(h);
    }
    bool poisoned(int64_t i) const {
        for (int64_t k = 0; k < elem_bytes(dt); ++k)
            if (bytes[size_t(i * elem_bytes(dt) + k)] != 0xff) return false;
        return true;
    }
};

// ---- device buffers ----------------------------------------------------------------------------

// test_support.h's DeviceBuffer, with the helpers the attention tests use.
struct DevBuf : DeviceBuffer {
    bool alloc(int64_t n) { return DeviceBuffer::alloc(std::max<int64_t>(n, 16)); }
    bool upload(const void *src, int64_t n) {
        return alloc(n) && (n == 0 || ok_or_report(mla_cuda_memcpy(ptr, src, n, MLA_COPY_HOST_TO_DEVICE),
                                                   "mla_cuda_memcpy h2d"));
    }
    template <typename T>
    bool upload(const std::vector<T> &v) {
        return upload(v.data(), int64_t(v.size() * sizeof(T)));
    }
    bool download(void *dst, int64_t n) const {
        return ok_or_report(mla_cuda_memcpy(dst, ptr, n, MLA_COPY_DEVICE_TO_HOST), "mla_cuda_memcpy d2h");
    }
    bool poison() { return fill(0xff); }
};

// ---- comparison ------------------------------------------------------------------------------

struct Outcome {
    double rel = 0, lse_err = 0, max_err = 0;
    bool finite = true;       // every compared output element finite (rows that are not NaN)
    bool inf_ok = true;       // infinities of lse / max logit where the reference has them
    bool nan_rows_ok = true;  // rows that see a NaN key are NaN in every element
    bool ok(double tol) const {
        return finite && inf_ok && nan_rows_ok && rel < tol && lse_err < 1e-3 && max_err < 1e-2;
    }
};

// A scalar per row (lse, max logit) against the reference: infinities exact, else |diff|.
inline void compare_scalar(double got, double want, double *err, bool *inf_ok) {
    if (std::isnan(want)) return;
    if (std::isinf(want) || std::isinf(got) || std::isnan(got)) {
        if (got != want) *inf_ok = false;
        return;
    }
    *err = std::max(*err, std::fabs(got - want));
}

// Global ||out - ref|| / ||ref|| over every row; ref row r at ref_out[r * d_v], the op's at
// out[out_index[r]]; a reference row holding NaN must come out NaN (lse not compared).
inline void compare_rows(const Buf &out, const std::vector<double> &ref_out,
                         const std::vector<int64_t> &out_index, int64_t d_v, Outcome *o) {
    double num = 0, den = 0;
    for (size_t r = 0; r < out_index.size(); ++r) {
        bool nan_row = false;
        for (int64_t c = 0; c < d_v; ++c) nan_row |= std::isnan(ref_out[r * size_t(d_v) + size_t(c)]);
        for (int64_t c = 0; c < d_v; ++c) {
            const double g = out.get(out_index[r] + c), e = ref_out[r * size_t(d_v) + size_t(c)];
            if (nan_row) {
                if (!std::isnan(g)) o->nan_rows_ok = false;
                continue;
            }
            if (!std::isfinite(g)) o->finite = false;
            num += (g - e) * (g - e);
            den += e * e;
        }
    }
    o->rel = den > 0 ? std::sqrt(num / den) : std::sqrt(num);
}

struct Timer {
    std::chrono::steady_clock::time_point t0 = std::chrono::steady_clock::now();
    double s() const {
        return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    }
};

// f(i) for i in [0, n) on the host's cores (at most 16 threads).
template <typename F>
void parallel_for(int64_t n, F f) {
    const int threads = int(std::max(1u, std::min(16u, std::thread::hardware_concurrency())));
    std::atomic<int64_t> next(0);
    std::vector<std::thread> pool;
    for (int w = 0; w < threads; ++w)
        pool.emplace_back([&] {
            for (int64_t i; (i = next.fetch_add(1)) < n;) f(i);
        });
    for (auto &t : pool) t.join();
}

}  // namespace mla_test
