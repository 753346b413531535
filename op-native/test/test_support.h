// Shared by the native tests: pass / fail bookkeeping (every check counts, every failure prints
// one "FAIL: ..." line, a test ends with "N passed, M failed" and a non-zero exit on failure),
// 16-bit float encodings written from their definitions, and device buffers through the
// mla_cuda_* API of the library.
#pragma once
#include <mla/mla.h>

#include <algorithm>
#include <cmath>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstring>

namespace mla_test {

inline int g_passed = 0, g_failed = 0;

// Exit status of a test that ran no case (e.g. a GPU test without a CUDA device); CMakeLists.txt
// gives it to ctest as SKIP_RETURN_CODE so such a test is reported as skipped, not passed.
constexpr int kSkipped = 77;

inline void check(bool ok, const char *fmt, ...) {
    if (ok) {
        ++g_passed;
        return;
    }
    ++g_failed;
    va_list ap;
    va_start(ap, fmt);
    std::printf("FAIL: ");
    std::vprintf(fmt, ap);
    std::printf("\n");
    va_end(ap);
}

// ---- bfloat16 / float16 from their definitions ------------------------------------------------

inline float bf16_to_float(uint16_t h) {
    const uint32_t u = uint32_t(h) << 16;
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}

// x (finite, or NaN / inf) rounded to the nearest bfloat16, ties to even.
inline uint16_t float_to_bf16(float x) {
    if (std::isnan(x)) return 0x7fc0;
    if (std::isinf(x)) return x > 0 ? 0x7f80 : 0xff80;
    uint32_t u;
    std::memcpy(&u, &x, 4);
    const uint32_t lower = u & 0xffffu, upper = u >> 16;
    const bool up = lower > 0x8000u || (lower == 0x8000u && (upper & 1u));
    return uint16_t(upper + (up ? 1u : 0u));
}

inline double f16_to_double(uint16_t h) {
    const int sign = h >> 15, e = (h >> 10) & 31, m = h & 1023;
    double v;
    if (e == 0)
        v = std::ldexp(double(m), -24);
    else if (e == 31)
        v = m ? std::nan("") : INFINITY;
    else
        v = std::ldexp(1.0 + m / 1024.0, e - 15);
    return sign ? -v : v;
}

// x (|x| < 65504) rounded to the nearest float16, ties to even.
inline uint16_t double_to_f16(double x) {
    if (std::isnan(x)) return 0x7e00;
    const uint16_t sign = std::signbit(x) ? 0x8000 : 0;
    const double a = std::fabs(x);
    if (a < std::ldexp(1.0, -14)) return sign | uint16_t(std::nearbyint(a * std::ldexp(1.0, 24)));
    int e;
    std::frexp(a, &e);  // a = f * 2^e, f in [0.5, 1)
    const int E = e - 1;
    int m = int(std::nearbyint((a / std::ldexp(1.0, E) - 1.0) * 1024.0));
    int exp = E + 15;
    if (m == 1024) {
        m = 0;
        ++exp;
    }
    return sign | uint16_t(exp << 10) | uint16_t(m);
}

// float8_e4m3fn (bias 7, no infinities, 0x7f / 0xff NaN), decoded from its definition.
inline double fp8_e4m3_to_double(uint8_t v) {
    const int sign = v >> 7, e = (v >> 3) & 15, m = v & 7;
    if (e == 15 && m == 7) return std::nan("");
    const double x = e == 0 ? std::ldexp(double(m), -9) : std::ldexp(1.0 + m / 8.0, e - 7);
    return sign ? -x : x;
}

// ---- device buffers -----------------------------------------------------------------------------

inline bool ok_or_report(mla_status st, const char *what) {
    if (st == MLA_OK) return true;
    check(false, "%s: status %d: %s", what, int(st), mla_last_error());
    return false;
}

// Device memory of `bytes` (at least one byte allocated), freed on destruction.
struct DeviceBuffer {
    void *ptr = nullptr;
    int64_t bytes = 0;
    DeviceBuffer() = default;
    DeviceBuffer(const DeviceBuffer &) = delete;
    DeviceBuffer &operator=(const DeviceBuffer &) = delete;
    ~DeviceBuffer() { mla_cuda_free(ptr); }
    bool alloc(int64_t n) {
        mla_cuda_free(ptr);
        ptr = nullptr;
        bytes = n;
        return ok_or_report(mla_cuda_malloc(&ptr, std::max<int64_t>(n, 1)), "mla_cuda_malloc");
    }
    bool upload(const void *src, int64_t n) {
        return alloc(n) && (n == 0 || ok_or_report(mla_cuda_memcpy(ptr, src, n, MLA_COPY_HOST_TO_DEVICE),
                                                   "mla_cuda_memcpy h2d"));
    }
    // Fills every byte with `value` (poison before a call that must write everything).
    bool fill(int byte_value) {
        return ok_or_report(mla_cuda_memset(ptr, byte_value, std::max<int64_t>(bytes, 1)), "mla_cuda_memset");
    }
    bool download(void *dst) const {
        return bytes == 0 || ok_or_report(mla_cuda_memcpy(dst, ptr, bytes, MLA_COPY_DEVICE_TO_HOST),
                                          "mla_cuda_memcpy d2h");
    }
    template <typename T>
    T *as() const { return static_cast<T *>(ptr); }
};

}  // namespace mla_test
