// Device twins of the element conversions of common/dtype.h and the FP8 tile scale of
// common/cache.h, bit for bit: a cache written on the device holds the bytes the CPU path
// writes for the same input, NaN payloads included. The CPU converts between float and double
// with SSE (cvtss2sd / cvtsd2ss: a NaN is quieted and its payload kept or truncated); the
// device's own cvt instructions return a canonical NaN, so those two are spelled out here.
#pragma once
#include <cuda_runtime.h>
#include <cstdint>
#include "mla/mla.h"

namespace mla {
namespace cuda {
namespace conv {

__device__ __forceinline__ float bits_float(uint32_t u) { return __uint_as_float(u); }
__device__ __forceinline__ uint32_t float_bits(float f) { return __float_as_uint(f); }

// float -> double as SSE does it: exact; a NaN is quieted, its payload moved up.
__device__ __forceinline__ double float_to_double(float f) {
    const uint32_t u = float_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) {
        const uint64_t d = (uint64_t(u >> 31) << 63) | (uint64_t(0x7ffu) << 52) |
                           (uint64_t(1) << 51) | (uint64_t(u & 0x7fffffu) << 29);
        return __longlong_as_double(static_cast<long long>(d));
    }
    return double(f);
}

// double -> float as SSE does it: round to nearest even; a NaN is quieted, its payload cut.
__device__ __forceinline__ float double_to_float(double d) {
    const uint64_t u = static_cast<uint64_t>(__double_as_longlong(d));
    if ((u & 0x7fffffffffffffffull) > 0x7ff0000000000000ull) {
        const uint32_t f = (uint32_t(u >> 63) << 31) | 0x7fc00000u |
                           uint32_t((u >> 29) & 0x7fffffu);
        return bits_float(f);
    }
    return __double2float_rn(d);
}

__device__ __forceinline__ float bf16_to_float(uint16_t h) { return bits_float(uint32_t(h) << 16); }

// Round to nearest even; NaN: the upper half with the quiet bit set.
__device__ __forceinline__ uint16_t float_to_bf16(float f) {
    uint32_t u = float_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x40);
    u += 0x7fffu + ((u >> 16) & 1u);
    return uint16_t(u >> 16);
}

__device__ __forceinline__ float f16_to_float(uint16_t h) {
    const uint32_t sign = uint32_t(h & 0x8000u) << 16;
    const uint32_t exp = (h >> 10) & 0x1fu, man = h & 0x3ffu;
    uint32_t u;
    if (exp == 0) {
        if (man == 0) {
            u = sign;
        } else {
            u = float_bits(float(man) * 5.9604644775390625e-08f) | sign;
        }
    } else if (exp == 31) {
        u = sign | 0x7f800000u | (man << 13);
    } else {
        u = sign | ((exp + 112u) << 23) | (man << 13);
    }
    return bits_float(u);
}

// Round to nearest even, overflow to inf, NaN to the canonical quiet NaN of its sign.
__device__ __forceinline__ uint16_t float_to_f16(float f) {
    const uint32_t u = float_bits(f);
    const uint32_t sign = (u >> 16) & 0x8000u;
    const uint32_t au = u & 0x7fffffffu;
    if (au > 0x7f800000u) return uint16_t(sign | 0x7e00u);
    if (au >= 0x477ff000u) return uint16_t(sign | 0x7c00u);
    if (au < 0x38800000u) {
        const float scaled = bits_float(au) * 16777216.0f;
        return uint16_t(sign | uint32_t(rintf(scaled)));
    }
    const uint32_t mant = au & 0x7fffffu;
    const uint32_t exp = (au >> 23) - 112u;
    uint32_t r = (exp << 10) | (mant >> 13);
    const uint32_t rem = mant & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (r & 1u))) r++;
    return uint16_t(sign | r);
}

// float8_e4m3fn -> float, exact (0x7f / 0xff are NaN).
__device__ __forceinline__ float fp8_e4m3_to_float(uint8_t v) {
    const uint32_t exp = (v >> 3) & 0xfu, man = v & 0x7u;
    float f;
    if (exp == 15 && man == 7)
        f = __int_as_float(0x7fffffff);
    else if (exp == 0)
        f = float(man) * 0.001953125f;
    else
        f = bits_float(((exp + 120u) << 23) | (man << 20));
    return (v & 0x80) ? -f : f;
}

// Round to nearest even, saturating at +-448; NaN -> 0x7f.
__device__ __forceinline__ uint8_t float_to_fp8_e4m3(float f) {
    if (isnan(f)) return 0x7f;
    const uint8_t sign = signbit(f) ? 0x80 : 0;
    const float a = fabsf(f);
    if (a >= 448.0f) return uint8_t(sign | 0x7e);
    if (a < 0.015625f) {  // 2^-6: subnormal, units of 2^-9
        const int m = int(rintf(a * 512.0f));
        if (m >= 8) return uint8_t(sign | 0x08);
        return uint8_t(sign | m);
    }
    int e;
    const float frac = frexpf(a, &e);
    int exp = e - 1 + 7;
    const float m = (frac * 2.0f - 1.0f) * 8.0f;  // exact: frac has 24 bits
    int mi = int(rintf(m));
    if (mi == 8) {
        mi = 0;
        exp++;
    }
    if (exp > 15 || (exp == 15 && mi > 6)) return uint8_t(sign | 0x7e);
    return uint8_t(sign | (exp << 3) | mi);
}

// Power-of-two scale of a tile of largest magnitude amax (common/cache.h fp8_tile_scale).
__device__ __forceinline__ float fp8_tile_scale(float amax) {
    const float s = fmaxf(amax / 448.0f, 1e-4f);
    if (!isfinite(s)) return ldexpf(1.0f, 127);
    int e;
    const float m = frexpf(s, &e);
    const int k = m == 0.5f ? e - 1 : e;
    return ldexpf(1.0f, k > 127 ? 127 : k);
}

// Element i of a float buffer of `dtype` as the CPU's load_row<double> reads it.
__device__ __forceinline__ double load_double(const void *p, int32_t dtype, int64_t i) {
    switch (dtype) {
        case MLA_FLOAT64: return static_cast<const double *>(p)[i];
        case MLA_FLOAT32: return float_to_double(static_cast<const float *>(p)[i]);
        case MLA_FLOAT16:
            return float_to_double(f16_to_float(static_cast<const uint16_t *>(p)[i]));
        default: return float_to_double(bf16_to_float(static_cast<const uint16_t *>(p)[i]));
    }
}

// Element i as the CPU's load_row<float> reads it.
__device__ __forceinline__ float load_float(const void *p, int32_t dtype, int64_t i) {
    switch (dtype) {
        case MLA_FLOAT64: return double_to_float(static_cast<const double *>(p)[i]);
        case MLA_FLOAT32: return static_cast<const float *>(p)[i];
        case MLA_FLOAT16: return f16_to_float(static_cast<const uint16_t *>(p)[i]);
        default: return bf16_to_float(static_cast<const uint16_t *>(p)[i]);
    }
}

// Stores v at element i as the CPU's store_row<double> does.
__device__ __forceinline__ void store_double(void *p, int32_t dtype, int64_t i, double v) {
    switch (dtype) {
        case MLA_FLOAT64: static_cast<double *>(p)[i] = v; break;
        case MLA_FLOAT32: static_cast<float *>(p)[i] = double_to_float(v); break;
        case MLA_FLOAT16:
            static_cast<uint16_t *>(p)[i] = float_to_f16(double_to_float(v));
            break;
        default: static_cast<uint16_t *>(p)[i] = float_to_bf16(double_to_float(v)); break;
    }
}

}  // namespace conv
}  // namespace cuda
}  // namespace mla
