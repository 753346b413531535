#include "common/dtype.h"

namespace mla {

const char *dtype_name(int32_t dt) {
    switch (dt) {
        case MLA_FLOAT32: return "float32";
        case MLA_FLOAT64: return "float64";
        case MLA_FLOAT16: return "float16";
        case MLA_BFLOAT16: return "bfloat16";
        case MLA_INT32: return "int32";
        case MLA_FP8_E4M3: return "float8_e4m3";
        case MLA_UINT8: return "uint8";
        default: return "unknown";
    }
}

}  // namespace mla
