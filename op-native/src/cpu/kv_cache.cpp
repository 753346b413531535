// KV cache quantise / dequantise / append (ops.md section 5). Token rows are encoded and
// decoded by write_token / read_token of common/cache.h, so every op agrees on the bytes.
#include <algorithm>
#include <cstring>
#include <vector>
#include "common/parallel.h"
#include "cpu/misc_kernels.h"

namespace mla {
namespace cpu {

namespace {

// Blocks per parallel chunk: enough values that a chunk is worth a thread hand-off.
int64_t block_grain(int64_t block_size, int64_t d_qk) {
    int64_t per_block = block_size * d_qk;
    return per_block >= 16384 ? 1 : 16384 / per_block;
}

template <typename T>
void dequantize_blocks(const mla_quant_params &p, const CacheLayout &l) {
    const mla_cache &c = p.cache;
    int64_t d = l.d_qk;
    int workers = plan_workers(c.num_blocks, block_grain(c.block_size, d), p.exec.num_threads);
    std::vector<std::vector<T>> rows(workers, std::vector<T>(d));
    parallel_for(c.num_blocks, block_grain(c.block_size, d), p.exec.num_threads,
                 [&](int64_t b0, int64_t b1, int worker) {
                     T *row = rows[worker].data();
                     for (int64_t blk = b0; blk < b1; ++blk) {
                         for (int64_t t = 0; t < c.block_size; ++t) {
                             read_token<T>(c, l, blk, t, 0, d, row);
                             store_row<T>(p.kv, p.dtype, (blk * c.block_size + t) * d, d, row);
                         }
                     }
                 });
}

}  // namespace

void kv_quantize(const mla_quant_params &p, const CacheLayout &l, void *dst) {
    const mla_cache &c = p.cache;
    int64_t d = l.d_qk;
    // Bytes of a MODEL1 block after its data and scale rows: written as zeros so the output
    // does not depend on what the buffer held.
    int64_t used = l.kind == MLA_CACHE_MODEL1
                       ? c.block_size * (l.data_row_bytes + l.scale_row_bytes)
                       : l.block_bytes;
    int workers = plan_workers(c.num_blocks, block_grain(c.block_size, d), p.exec.num_threads);
    std::vector<std::vector<float>> rows(workers, std::vector<float>(d));
    parallel_for(c.num_blocks, block_grain(c.block_size, d), p.exec.num_threads,
                 [&](int64_t b0, int64_t b1, int worker) {
                     float *row = rows[worker].data();
                     for (int64_t blk = b0; blk < b1; ++blk) {
                         if (used < l.block_bytes)
                             std::memset(static_cast<uint8_t *>(dst) + blk * l.block_bytes + used,
                                         0, size_t(l.block_bytes - used));
                         for (int64_t t = 0; t < c.block_size; ++t) {
                             int64_t at = (blk * c.block_size + t) * d;
                             const float *src = static_cast<const float *>(p.kv) + at;
                             if (p.dtype != MLA_FLOAT32) {  // float32 rows are read in place
                                 load_row<float>(p.kv, p.dtype, at, d, row);
                                 src = row;
                             }
                             write_token(dst, c, l, blk, t, 0, src);
                         }
                     }
                 });
}

void kv_dequantize(const mla_quant_params &p, const CacheLayout &l) {
    // float64 output reads in double; the values are the same (fp8 * power-of-two scale and
    // bf16 are exact in float), only the store differs.
    if (p.dtype == MLA_FLOAT64)
        dequantize_blocks<double>(p, l);
    else
        dequantize_blocks<float>(p, l);
}

void kv_append(const mla_append_params &p, const CacheLayout &l, void *dst,
               const int64_t *slots) {
    const mla_cache &c = p.cache;
    int64_t d = p.d_qk;
    int64_t heads = l.kind == MLA_CACHE_PLAIN ? c.h_kv : 1;
    int64_t total = p.b * p.n_new;
    int64_t grain = std::max<int64_t>(1, 16384 / (heads * d));
    int workers = plan_workers(total, grain, p.exec.num_threads);
    std::vector<std::vector<double>> rows(workers, std::vector<double>(d));
    std::vector<std::vector<float>> frows(workers, std::vector<float>(d));
    parallel_for(total, grain, p.exec.num_threads, [&](int64_t i0, int64_t i1, int worker) {
        for (int64_t i = i0; i < i1; ++i) {
            int64_t req = i / p.n_new, j = i % p.n_new;
            int64_t src = req * p.new_kv_stride[0] + j * p.new_kv_stride[1];
            int64_t block = slots[i] / c.block_size, offset = slots[i] % c.block_size;
            if (l.kind == MLA_CACHE_PLAIN) {
                // Through double so a float64 cache keeps float64 values.
                double *row = rows[worker].data();
                for (int64_t h = 0; h < heads; ++h) {
                    load_row<double>(p.new_kv, p.dtype, src + h * d, d, row);
                    store_row<double>(dst, c.dtype,
                                      block * c.block_stride + offset * c.token_stride +
                                          h * c.head_stride,
                                      d, row);
                }
            } else {
                float *row = frows[worker].data();
                load_row<float>(p.new_kv, p.dtype, src, d, row);
                write_token(dst, c, l, block, offset, 0, row);
            }
        }
    });
}

}  // namespace cpu
}  // namespace mla
