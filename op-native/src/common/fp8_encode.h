// Encoding of one token row into an FP8 cache layout (V32 or MODEL1, ops.md section 5):
// power-of-two scale per tile of the first d_nope values, float8_e4m3 codes of value / scale,
// bfloat16 for the remaining (RoPE) values. The bytes are exactly those of the scalar rules in
// common/dtype.h (float_to_fp8_e4m3, float_to_bf16) and common/cache.h (fp8_tile_scale); the
// loops are vectorised, with an AVX2 copy chosen at run time (common/cpu_features.h).
#pragma once
#include <cstdint>
#include "common/cache.h"

namespace mla {

// src: l.d_qk floats. fp8: d_nope codes; scales: n_scales entries (V32: float32, unaligned;
// MODEL1: biased exponent bytes, 2^(byte - 127)); rope: d_rope bfloat16 values, unaligned.
void encode_fp8_token(const CacheLayout &l, const float *src, uint8_t *fp8, uint8_t *scales,
                      uint8_t *rope);

}  // namespace mla
