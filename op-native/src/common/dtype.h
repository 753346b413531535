// Element types: conversion of bfloat16, float16 and float8_e4m3fn to and from float,
// and row loads / stores that every CPU kernel uses.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>
#include "mla/mla.h"

namespace mla {

inline float bf16_to_float(uint16_t h) {
    uint32_t u = uint32_t(h) << 16;
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}

// Round to nearest even; NaN stays NaN.
inline uint16_t float_to_bf16(float f) {
    uint32_t u;
    std::memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x40);
    u += 0x7fffu + ((u >> 16) & 1u);
    return uint16_t(u >> 16);
}

inline float f16_to_float(uint16_t h) {
    uint32_t sign = uint32_t(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t man = h & 0x3ffu;
    uint32_t u;
    if (exp == 0) {
        if (man == 0) {
            u = sign;
        } else {  // subnormal: value = man * 2^-24
            float f = float(man) * 5.9604644775390625e-08f;
            std::memcpy(&u, &f, 4);
            u |= sign;
        }
    } else if (exp == 31) {
        u = sign | 0x7f800000u | (man << 13);
    } else {
        u = sign | ((exp + 112u) << 23) | (man << 13);
    }
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}

// Round to nearest even, overflow to inf.
inline uint16_t float_to_f16(float f) {
    uint32_t u;
    std::memcpy(&u, &f, 4);
    uint32_t sign = (u >> 16) & 0x8000u;
    uint32_t au = u & 0x7fffffffu;
    if (au > 0x7f800000u) return uint16_t(sign | 0x7e00u);
    if (au >= 0x477ff000u) return uint16_t(sign | 0x7c00u);  // rounds to >= 65520: inf
    if (au < 0x38800000u) {                                  // below 2^-14: subnormal or zero
        float af;
        std::memcpy(&af, &au, 4);
        float scaled = af * 16777216.0f;                     // units of 2^-24
        uint32_t m = uint32_t(std::nearbyint(scaled));
        return uint16_t(sign | m);
    }
    uint32_t mant = au & 0x7fffffu;
    uint32_t exp = (au >> 23) - 112u;
    uint32_t r = (exp << 10) | (mant >> 13);
    uint32_t rem = mant & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (r & 1u))) r++;
    return uint16_t(sign | r);
}

// float8_e4m3fn: 1 sign, 4 exponent (bias 7), 3 mantissa, no infinities, 0x7f/0xff NaN, max 448.
// The float bits are built directly (exponent rebias 7 -> 127): this sits in the inner loop of
// every FP8 cache read.
inline float fp8_e4m3_to_float(uint8_t v) {
    uint32_t exp = (v >> 3) & 0xfu;
    uint32_t man = v & 0x7u;
    float f;
    if (exp == 15 && man == 7) {
        f = NAN;
    } else if (exp == 0) {
        f = float(man) * 0.001953125f;  // subnormal: man * 2^-9
    } else {
        uint32_t u = ((exp + 120u) << 23) | (man << 20);
        std::memcpy(&f, &u, 4);
    }
    return (v & 0x80) ? -f : f;
}

// fp8_e4m3_to_float of every byte: a table lookup is what the decode loops use.
extern const float *const fp8_e4m3_table;

// Round to nearest even, saturating at +-448; NaN maps to NaN.
inline uint8_t float_to_fp8_e4m3(float f) {
    if (std::isnan(f)) return 0x7f;
    uint8_t sign = std::signbit(f) ? 0x80 : 0;
    float a = std::fabs(f);
    if (a >= 448.0f) return uint8_t(sign | 0x7e);
    if (a < std::ldexp(1.0f, -6)) {  // subnormal: units of 2^-9
        int m = int(std::nearbyint(a * 512.0f));
        if (m >= 8) return uint8_t(sign | 0x08);
        return uint8_t(sign | m);
    }
    int e;
    float frac = std::frexp(a, &e);  // a = frac * 2^e, frac in [0.5, 1)
    int exp = e - 1 + 7;             // biased exponent of 1.xxx form
    float m = (frac * 2.0f - 1.0f) * 8.0f;
    int mi = int(std::nearbyint(m));
    if (mi == 8) {
        mi = 0;
        exp++;
    }
    if (exp > 15 || (exp == 15 && mi > 6)) return uint8_t(sign | 0x7e);
    return uint8_t(sign | (exp << 3) | mi);
}

inline int64_t dtype_size(int32_t dt) {
    switch (dt) {
        case MLA_FLOAT32: return 4;
        case MLA_FLOAT64: return 8;
        case MLA_FLOAT16: return 2;
        case MLA_BFLOAT16: return 2;
        case MLA_INT32: return 4;
        case MLA_FP8_E4M3: return 1;
        case MLA_UINT8: return 1;
        default: return 0;
    }
}

const char *dtype_name(int32_t dt);

inline bool is_float_dtype(int32_t dt) {
    return dt == MLA_FLOAT32 || dt == MLA_FLOAT64 || dt == MLA_FLOAT16 || dt == MLA_BFLOAT16;
}

// Reads element i of a typed buffer as T.
template <typename T>
inline T load_elem(const void *base, int32_t dt, int64_t i) {
    switch (dt) {
        case MLA_FLOAT32: return T(static_cast<const float *>(base)[i]);
        case MLA_FLOAT64: return T(static_cast<const double *>(base)[i]);
        case MLA_FLOAT16: return T(f16_to_float(static_cast<const uint16_t *>(base)[i]));
        case MLA_BFLOAT16: return T(bf16_to_float(static_cast<const uint16_t *>(base)[i]));
        case MLA_FP8_E4M3: return T(fp8_e4m3_to_float(static_cast<const uint8_t *>(base)[i]));
        default: return T(0);
    }
}

// Reads n elements starting at element `offset` into dst.
template <typename T>
inline void load_row(const void *base, int32_t dt, int64_t offset, int64_t n, T *dst) {
    switch (dt) {
        case MLA_FLOAT32: {
            const float *s = static_cast<const float *>(base) + offset;
            for (int64_t i = 0; i < n; ++i) dst[i] = T(s[i]);
            break;
        }
        case MLA_FLOAT64: {
            const double *s = static_cast<const double *>(base) + offset;
            for (int64_t i = 0; i < n; ++i) dst[i] = T(s[i]);
            break;
        }
        case MLA_FLOAT16: {
            const uint16_t *s = static_cast<const uint16_t *>(base) + offset;
            for (int64_t i = 0; i < n; ++i) dst[i] = T(f16_to_float(s[i]));
            break;
        }
        case MLA_BFLOAT16: {
            const uint16_t *s = static_cast<const uint16_t *>(base) + offset;
            for (int64_t i = 0; i < n; ++i) dst[i] = T(bf16_to_float(s[i]));
            break;
        }
        case MLA_FP8_E4M3: {
            const uint8_t *s = static_cast<const uint8_t *>(base) + offset;
            for (int64_t i = 0; i < n; ++i) dst[i] = T(fp8_e4m3_table[s[i]]);
            break;
        }
        default:
            for (int64_t i = 0; i < n; ++i) dst[i] = T(0);
    }
}

// Writes n values to element `offset` onwards, rounding to the buffer's type.
template <typename T>
inline void store_row(void *base, int32_t dt, int64_t offset, int64_t n, const T *src) {
    switch (dt) {
        case MLA_FLOAT32: {
            float *d = static_cast<float *>(base) + offset;
            for (int64_t i = 0; i < n; ++i) d[i] = float(src[i]);
            break;
        }
        case MLA_FLOAT64: {
            double *d = static_cast<double *>(base) + offset;
            for (int64_t i = 0; i < n; ++i) d[i] = double(src[i]);
            break;
        }
        case MLA_FLOAT16: {
            uint16_t *d = static_cast<uint16_t *>(base) + offset;
            for (int64_t i = 0; i < n; ++i) d[i] = float_to_f16(float(src[i]));
            break;
        }
        case MLA_BFLOAT16: {
            uint16_t *d = static_cast<uint16_t *>(base) + offset;
            for (int64_t i = 0; i < n; ++i) d[i] = float_to_bf16(float(src[i]));
            break;
        }
        case MLA_FP8_E4M3: {
            uint8_t *d = static_cast<uint8_t *>(base) + offset;
            for (int64_t i = 0; i < n; ++i) d[i] = float_to_fp8_e4m3(float(src[i]));
            break;
        }
        default:
            break;
    }
}

}  // namespace mla
