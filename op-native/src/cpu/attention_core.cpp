// add_tile for float and double: the 16-byte (SSE, the build's baseline) instantiation, and on
// x86-64 with GCC or Clang a 32-byte instantiation compiled for AVX2 + FMA, chosen once per
// process from the processor's features. The library itself stays loadable on any x86-64-v2
// machine. MLA4J_DISABLE_AVX2=1 in the environment forces the baseline (the native tests run
// both).
#include "cpu/attention_core.h"

#include <cstdlib>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define MLA_AVX2_PATH 1
#endif

namespace mla {
namespace cpu {
namespace {

#ifdef MLA_AVX2_PATH
bool use_avx2() {
    static const bool yes = [] {
        const char *off = std::getenv("MLA4J_DISABLE_AVX2");
        if (off && off[0] && off[0] != '0') return false;
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    }();
    return yes;
}

template <typename A>
__attribute__((target("avx2,fma"))) void add_tile_avx2(SoftmaxState<A> &st, const A *q,
                                                       int64_t d_qk, A scale, const KeyTile<A> &t,
                                                       const int32_t *lo, const int32_t *hi,
                                                       const TileBuffers<A> &buf) {
    add_tile_impl<A, 32>(st, q, d_qk, scale, t, lo, hi, buf);
}
#endif

template <typename A>
void add_tile_any(SoftmaxState<A> &st, const A *q, int64_t d_qk, A scale, const KeyTile<A> &t,
                  const int32_t *lo, const int32_t *hi, const TileBuffers<A> &buf) {
#ifdef MLA_AVX2_PATH
    if (use_avx2()) return add_tile_avx2<A>(st, q, d_qk, scale, t, lo, hi, buf);
#endif
    add_tile_impl<A, 16>(st, q, d_qk, scale, t, lo, hi, buf);
}

}  // namespace

void add_tile(SoftmaxState<float> &st, const float *q, int64_t d_qk, float scale,
              const KeyTile<float> &t, const int32_t *lo, const int32_t *hi,
              const TileBuffers<float> &buf) {
    add_tile_any<float>(st, q, d_qk, scale, t, lo, hi, buf);
}

void add_tile(SoftmaxState<double> &st, const double *q, int64_t d_qk, double scale,
              const KeyTile<double> &t, const int32_t *lo, const int32_t *hi,
              const TileBuffers<double> &buf) {
    add_tile_any<double>(st, q, d_qk, scale, t, lo, hi, buf);
}

}  // namespace cpu
}  // namespace mla
