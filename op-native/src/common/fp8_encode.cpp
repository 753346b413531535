#include "common/fp8_encode.h"

#include <cmath>
#include <cstring>
#include "common/cpu_features.h"
#include "common/dtype.h"

#if defined(__x86_64__)
#include <immintrin.h>
#define MLA_FP8_X86_PACK 1
#endif

namespace mla {
namespace {

#define MLA_FP8_INLINE inline __attribute__((always_inline))

// GCC / Clang vectors of VB bytes: 16 in the baseline build, 32 in the AVX2 copy. Vectors pass
// by reference (a 32-byte vector by value changes the calling convention between the two).
template <int VB>
struct Vec {
    typedef float F __attribute__((vector_size(VB)));
    typedef int32_t I __attribute__((vector_size(VB)));
    typedef uint32_t U __attribute__((vector_size(VB)));
    typedef uint8_t B __attribute__((vector_size(VB / 4)));
    typedef uint16_t H __attribute__((vector_size(VB / 2)));
    static constexpr int N = VB / 4;
};

template <typename V>
MLA_FP8_INLINE void load(V &v, const void *p) {
    __builtin_memcpy(&v, p, sizeof v);
}

// Largest |x| of n values; NaN never counts (a > m is false for NaN, as in write_token's loop).
template <int VB>
MLA_FP8_INLINE float tile_amax(const float *x, int64_t n) {
    typedef typename Vec<VB>::U U;
    typedef typename Vec<VB>::F F;
    constexpr int N = Vec<VB>::N;
    F m0 = {}, m1 = {};
    int64_t i = 0;
    for (; i + 2 * N <= n; i += 2 * N) {
        U u0, u1;
        load(u0, x + i);
        load(u1, x + i + N);
        u0 &= 0x7fffffffu;
        u1 &= 0x7fffffffu;
        F a0 = (F)u0, a1 = (F)u1;
        m0 = a0 > m0 ? a0 : m0;
        m1 = a1 > m1 ? a1 : m1;
    }
    m0 = m1 > m0 ? m1 : m0;
    float r = 0.0f;
    for (int l = 0; l < N; ++l) r = m0[l] > r ? m0[l] : r;
    for (; i < n; ++i) {
        const float a = std::fabs(x[i]);
        r = a > r ? a : r;
    }
    return r;
}

// float8_e4m3 codes of N values, by float_to_fp8_e4m3's rules: NaN -> 0x7f, |y| >= 448 ->
// sign | 0x7e, below 2^-6 units of 2^-9 rounded to nearest even, else the top 3 mantissa
// bits rounded to nearest even (a carry moves into the exponent), exponent rebiased 127 -> 7.
template <int VB>
MLA_FP8_INLINE void fp8_codes(const typename Vec<VB>::F &y, typename Vec<VB>::U &code) {
    typedef typename Vec<VB>::U U;
    typedef typename Vec<VB>::I I;
    typedef typename Vec<VB>::F F;
    U u = (U)y;
    U au = u & 0x7fffffffu;
    U sign = (u >> 24) & 0x80u;
    U normal = ((au + 0x7ffffu + ((au >> 20) & 1u)) >> 20) - (120u << 3);
    F t = (F)au * 512.0f + 8388608.0f;  // 2^23 + round(|y| * 512), exact below 2^-6
    U sub = (U)t - 0x4b000000u;
    I ai = (I)au;
    U c = ai < 0x3c800000 ? sub : normal;  // 2^-6
    c = ai >= 0x43e00000 ? (U{} + 0x7eu) : c;  // 448
    c |= sign;
    code = ai > 0x7f800000 ? (U{} + 0x7fu) : c;  // NaN
}

// Low bytes of 4 vectors of 32-bit codes (each < 256) to 4 N consecutive bytes.
template <int VB>
MLA_FP8_INLINE void pack_codes(const typename Vec<VB>::U (&c)[4], uint8_t *dst) {
    typedef typename Vec<VB>::B B;
    constexpr int N = Vec<VB>::N;
    for (int j = 0; j < 4; ++j) {
        B b = __builtin_convertvector(c[j], B);
        __builtin_memcpy(dst + j * N, &b, sizeof b);
    }
}

#ifdef MLA_FP8_X86_PACK
// Saturating packs (SSE4.1): the codes are below 256, so nothing saturates.
template <>
MLA_FP8_INLINE void pack_codes<16>(const Vec<16>::U (&c)[4], uint8_t *dst) {
    __m128i lo = _mm_packus_epi32((__m128i)c[0], (__m128i)c[1]);
    __m128i hi = _mm_packus_epi32((__m128i)c[2], (__m128i)c[3]);
    _mm_storeu_si128(reinterpret_cast<__m128i *>(dst), _mm_packus_epi16(lo, hi));
}

// The AVX2 packs work within 128-bit lanes; a dword permutation restores the order. (Not
// always_inline: its callers are templates compiled for the baseline until they are inlined
// into the AVX2 entry point, where the compiler inlines this too.)
template <>
inline MLA_TARGET_AVX2 void pack_codes<32>(const Vec<32>::U (&c)[4], uint8_t *dst) {
    __m256i lo = _mm256_packus_epi32((__m256i)c[0], (__m256i)c[1]);
    __m256i hi = _mm256_packus_epi32((__m256i)c[2], (__m256i)c[3]);
    __m256i b = _mm256_packus_epi16(lo, hi);
    b = _mm256_permutevar8x32_epi32(b, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    _mm256_storeu_si256(reinterpret_cast<__m256i *>(dst), b);
}
#endif

// dst[i] = float_to_fp8_e4m3(x[i] * inv) for n values (Divide: x[i] / scale).
template <int VB, bool Divide>
MLA_FP8_INLINE void encode_values(const float *x, int64_t n, float scale, float inv,
                                  uint8_t *dst) {
    typedef typename Vec<VB>::U U;
    typedef typename Vec<VB>::F F;
    constexpr int N = Vec<VB>::N;
    int64_t i = 0;
    for (; i + 4 * N <= n; i += 4 * N) {
        U c[4];
        for (int j = 0; j < 4; ++j) {
            F v;
            load(v, x + i + j * N);
            fp8_codes<VB>(Divide ? v / scale : v * inv, c[j]);
        }
        pack_codes<VB>(c, dst + i);
    }
    for (; i < n; ++i) dst[i] = float_to_fp8_e4m3(x[i] / scale);
}

// dst[i] = float_to_fp8_e4m3(x[i] / scale) for n values, scale a power of two. x * (1 / scale)
// equals x / scale (the reciprocal of a power of two is exact) except when the reciprocal is
// subnormal (scale 2^127: a tile holding an infinity), where a flush-to-zero mode could zero
// it: divide there.
template <int VB>
MLA_FP8_INLINE void encode_tile(const float *x, int64_t n, float scale, uint8_t *dst) {
    if (scale <= 0x1p126f)
        encode_values<VB, false>(x, n, scale, 1.0f / scale, dst);
    else
        encode_values<VB, true>(x, n, scale, 0.0f, dst);
}

// Low halves of 2 vectors of 32-bit values (each < 2^16) to 2 N consecutive uint16.
template <int VB>
MLA_FP8_INLINE void pack_halves(const typename Vec<VB>::U (&r)[2], uint8_t *dst) {
    typedef typename Vec<VB>::H H;
    for (int j = 0; j < 2; ++j) {
        H h = __builtin_convertvector(r[j], H);
        __builtin_memcpy(dst + j * sizeof h, &h, sizeof h);
    }
}

#ifdef MLA_FP8_X86_PACK
template <>
MLA_FP8_INLINE void pack_halves<16>(const Vec<16>::U (&r)[2], uint8_t *dst) {
    _mm_storeu_si128(reinterpret_cast<__m128i *>(dst),
                     _mm_packus_epi32((__m128i)r[0], (__m128i)r[1]));
}

template <>
inline MLA_TARGET_AVX2 void pack_halves<32>(const Vec<32>::U (&r)[2], uint8_t *dst) {
    __m256i h = _mm256_packus_epi32((__m256i)r[0], (__m256i)r[1]);
    _mm256_storeu_si256(reinterpret_cast<__m256i *>(dst), _mm256_permute4x64_epi64(h, 0xd8));
}
#endif

// n values as bfloat16 (float_to_bf16: round to nearest even, NaN stays NaN) at dst, unaligned.
template <int VB>
MLA_FP8_INLINE void encode_bf16(const float *x, int64_t n, uint8_t *dst) {
    typedef typename Vec<VB>::U U;
    typedef typename Vec<VB>::I I;
    constexpr int N = Vec<VB>::N;
    int64_t i = 0;
    for (; i + 2 * N <= n; i += 2 * N) {
        U r[2];
        for (int j = 0; j < 2; ++j) {
            U u;
            load(u, x + i + j * N);
            U rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
            U quiet = (u >> 16) | 0x40u;
            r[j] = (I)(u & 0x7fffffffu) > 0x7f800000 ? quiet : rounded;
        }
        pack_halves<VB>(r, dst + 2 * i);
    }
    for (; i < n; ++i) {
        uint16_t v = float_to_bf16(x[i]);
        std::memcpy(dst + 2 * i, &v, 2);
    }
}

template <int VB>
MLA_FP8_INLINE void encode_token_impl(const CacheLayout &l, const float *src, uint8_t *fp8,
                                      uint8_t *scales, uint8_t *rope) {
    for (int32_t t = 0; t < l.n_scales; ++t) {
        const float *x = src + int64_t(t) * l.tile;
        float scale = fp8_tile_scale(tile_amax<VB>(x, l.tile));
        encode_tile<VB>(x, l.tile, scale, fp8 + int64_t(t) * l.tile);
        if (l.kind == MLA_CACHE_V32) {
            std::memcpy(scales + 4 * t, &scale, 4);
        } else {
            int e;
            std::frexp(scale, &e);  // scale = 0.5 * 2^e
            scales[t] = uint8_t(e - 1 + 127);
        }
    }
    encode_bf16<VB>(src + l.d_nope, l.d_rope, rope);
}

#ifdef MLA_HAVE_AVX2_PATH
MLA_TARGET_AVX2 void encode_token_avx2(const CacheLayout &l, const float *src, uint8_t *fp8,
                                       uint8_t *scales, uint8_t *rope) {
    encode_token_impl<32>(l, src, fp8, scales, rope);
}
#endif

}  // namespace

void encode_fp8_token(const CacheLayout &l, const float *src, uint8_t *fp8, uint8_t *scales,
                      uint8_t *rope) {
#ifdef MLA_HAVE_AVX2_PATH
    if (cpu_uses_avx2()) return encode_token_avx2(l, src, fp8, scales, rope);
#endif
    encode_token_impl<16>(l, src, fp8, scales, rope);
}

}  // namespace mla
