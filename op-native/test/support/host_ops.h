// Shared by the native tests of the host paths (kv_cache, indexer, rope): a seeded random
// source, exec descriptors, the refusals every op must give, and typed buffers encoded with the
// tests' own number formats (test_support.h).
#pragma once
#include <mla/mla.h>
#include "test_buffers.h"

#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

namespace mla_test {

inline std::mt19937_64 rng(20240517);

inline double uni(double a, double b) { return std::uniform_real_distribution<double>(a, b)(rng); }
inline int64_t irand(int64_t a, int64_t b) { return std::uniform_int_distribution<int64_t>(a, b)(rng); }

inline mla_exec cpu(int threads = 0) {
    mla_exec e{};
    e.device = -1;
    e.num_threads = threads;
    return e;
}

inline mla_exec gpu() {
    mla_exec e{};
    e.device = 0;
    return e;
}

// A failed call must say why.
inline void check_invalid(mla_status st, const char *what) {
    check(st == MLA_ERR_INVALID_ARGUMENT && std::strlen(mla_last_error()) > 0,
          "%s: expected MLA_ERR_INVALID_ARGUMENT with a message, got status %d, message '%s'",
          what, int(st), mla_last_error());
}

// A call with exec.device = 0 on these host buffers is refused before any of them is read:
// MLA_ERR_UNSUPPORTED where no CUDA device exists (or CUDA is not in the build), and where one
// does, MLA_ERR_INVALID_ARGUMENT (host memory passed to a device call; test_gpu_indexer runs
// the device paths themselves).
inline void check_unsupported(mla_status st, const char *what) {
    const bool device = mla_cuda_device_count() > 0;
    const mla_status want = device ? MLA_ERR_INVALID_ARGUMENT : MLA_ERR_UNSUPPORTED;
    check(st == want && std::strstr(mla_last_error(), device ? "host memory" : "exec.device"),
          "%s: expected status %d for a GPU call on host memory, got %d '%s'", what, int(want),
          int(st), mla_last_error());
}


inline float f32_at(const uint8_t *p) {
    float f;
    std::memcpy(&f, p, 4);
    return f;
}

inline uint16_t u16_at(const uint8_t *p) { return uint16_t(p[0] | (p[1] << 8)); }

// Values of a typed buffer as double.
inline double value_at(const void *base, int32_t dt, int64_t i) {
    switch (dt) {
        case MLA_FLOAT32: return static_cast<const float *>(base)[i];
        case MLA_FLOAT64: return static_cast<const double *>(base)[i];
        case MLA_BFLOAT16: return bf16_value(static_cast<const uint16_t *>(base)[i]);
        case MLA_FLOAT16: return f16_value(static_cast<const uint16_t *>(base)[i]);
        default: return NAN;
    }
}

// A buffer of n elements of dt holding `vals` (already representable in dt).
inline std::vector<uint8_t> encode(const std::vector<double> &vals, int32_t dt) {
    std::vector<uint8_t> out(vals.size() * elem_bytes(dt));
    for (size_t i = 0; i < vals.size(); ++i) {
        if (dt == MLA_FLOAT32) {
            float f = float(vals[i]);
            std::memcpy(&out[i * 4], &f, 4);
        } else if (dt == MLA_FLOAT64) {
            std::memcpy(&out[i * 8], &vals[i], 8);
        } else {
            uint16_t h = dt == MLA_BFLOAT16 ? bf16_bits(vals[i]) : f16_bits(vals[i]);
            std::memcpy(&out[i * 2], &h, 2);
        }
    }
    return out;
}

// A random value exactly representable in dt (and a normal float16 number for float16).
inline double random_in(int32_t dt, double a, double b) {
    double v = uni(a, b);
    if (dt == MLA_FLOAT16 && std::fabs(v) < 1e-3) v = std::copysign(1e-3, v);
    switch (dt) {
        case MLA_FLOAT32: return double(float(v));
        case MLA_BFLOAT16: return bf16_round(double(float(v)));
        case MLA_FLOAT16: return f16_round(double(float(v)));
        default: return v;
    }
}

}  // namespace mla_test
