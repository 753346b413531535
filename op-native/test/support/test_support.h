// Shared by the native tests: pass / fail bookkeeping (every check counts, every failure prints
// one "FAIL: ..." line, a test ends with "N passed, M failed" and a non-zero exit on failure),
// the number formats written from their definitions, and device buffers through the mla_cuda_*
// API of the library.
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

// ---- number formats, written from their definitions (not the library's conversions) ------------

// x rounded to `bits` significant bits, ties to even (the normal range of the target format;
// infinities and NaN unchanged).
inline double round_bits(double x, int bits) {
    if (x == 0 || !std::isfinite(x)) return x;
    int e;
    std::frexp(x, &e);
    const double ulp = std::ldexp(1.0, e - bits);
    return std::nearbyint(x / ulp) * ulp;
}

// bfloat16: the top 16 bits of a float32.
inline double bf16_round(double x) { return round_bits(x, 8); }

inline double bf16_value(uint16_t b) {
    const uint32_t u = uint32_t(b) << 16;
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}

// The bfloat16 nearest to x, ties to even.
inline uint16_t bf16_bits(double x) {
    const float f = float(bf16_round(x));  // exact: 8 significant bits
    uint32_t u;
    std::memcpy(&u, &f, 4);
    return uint16_t(u >> 16);
}

inline double f16_value(uint16_t h) {
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

// The float16 nearest to x, ties to even (subnormals; |x| >= 65520 becomes infinity).
inline uint16_t f16_bits(double x) {
    if (std::isnan(x)) return 0x7e00;
    const uint16_t sign = std::signbit(x) ? 0x8000 : 0;
    const double a = std::fabs(x);
    if (a >= 65520.0) return sign | 0x7c00;
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

inline double f16_round(double x) { return f16_value(f16_bits(x)); }

// float8_e4m3fn: bias 7, 3 mantissa bits, subnormals m * 2^-9, no infinities, S.1111.111 NaN.
inline double fp8_value(uint8_t v) {
    const int sign = v >> 7, e = (v >> 3) & 15, m = v & 7;
    if (e == 15 && m == 7) return std::nan("");
    const double x = e == 0 ? std::ldexp(double(m), -9) : std::ldexp(1.0 + m / 8.0, e - 7);
    return sign ? -x : x;
}

// The float8_e4m3fn code nearest to v (|v| <= 448), by search over the codes.
inline uint8_t fp8_bits(double v) {
    const double a = std::fabs(v);
    int best = 0;
    for (int i = 1; i < 127; ++i)
        if (std::fabs(fp8_value(uint8_t(i)) - a) < std::fabs(fp8_value(uint8_t(best)) - a)) best = i;
    return uint8_t(best | (v < 0 ? 0x80 : 0));
}

// ---- GPU tests ------------------------------------------------------------------------------------

// The end of a GPU test on a machine without a CUDA device: the cases it left out, and the exit
// status ctest reports as skipped.
inline int skip_without_device(const char *test, int n_cases) {
    std::printf("%s: no CUDA device (%s)\n", test, mla_build_targets());
    std::printf("0 passed, 0 failed, %d skipped\n", n_cases);
    return kSkipped;
}

// Device 0 made current, named in the log, and a stream on it for the test's calls; false (after
// a FAIL line and the summary) when either step fails.
inline bool open_device(const char *test, void **stream) {
    mla_cuda_device_info info;
    if (mla_cuda_device_info_get(0, &info) == MLA_OK)
        std::printf("%s on %s (sm_%d%d, %d SMs)\n", test, info.name, info.major, info.minor,
                    info.multiprocessors);
    if (mla_cuda_set_device(0) != MLA_OK) {
        std::printf("FAIL: mla_cuda_set_device(0): %s\n0 passed, 1 failed\n", mla_last_error());
        return false;
    }
    if (mla_cuda_stream_create(stream) != MLA_OK) {
        std::printf("FAIL: mla_cuda_stream_create: %s\n0 passed, 1 failed\n", mla_last_error());
        return false;
    }
    return true;
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
