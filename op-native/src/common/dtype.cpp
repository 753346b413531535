#include "common/dtype.h"

namespace mla {

namespace {
struct Fp8Table {
    float v[256];
    Fp8Table() {
        for (int i = 0; i < 256; ++i) v[i] = fp8_e4m3_to_float(uint8_t(i));
    }
};
const Fp8Table fp8_table_storage;
}  // namespace

const float *const fp8_e4m3_table = fp8_table_storage.v;

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
