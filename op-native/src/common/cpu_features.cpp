#include "common/cpu_features.h"

#include <cstdlib>

namespace mla {

bool cpu_uses_avx2() {
#ifdef MLA_HAVE_AVX2_PATH
    static const bool yes = [] {
        const char *off = std::getenv("MLA4J_DISABLE_AVX2");
        if (off && off[0] && off[0] != '0') return false;
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    }();
    return yes;
#else
    return false;
#endif
}

}  // namespace mla
