// Which instruction set the CPU kernels use. The library is built for x86-64-v2 (SSE4.2); the
// hot loops also exist as copies compiled for AVX2 + FMA (GCC / Clang target attributes),
// chosen once per process when the processor has both. MLA4J_DISABLE_AVX2=1 in the
// environment forces the baseline (the native tests run both).
#pragma once

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define MLA_HAVE_AVX2_PATH 1
#define MLA_TARGET_AVX2 __attribute__((target("avx2,fma")))
#endif

namespace mla {

// True when the AVX2 + FMA copies run: built for x86-64, the processor has AVX2 and FMA, and
// MLA4J_DISABLE_AVX2 is unset or "0".
bool cpu_uses_avx2();

}  // namespace mla
