// Dense decode over a paged KV cache (ops.md section 1).
// Unit: one request and one KV head; its rows are the s_q queries times the query heads of the
// group (row = query * group + head), so every cached token is read and dequantised once per
// unit and shared by all of them.
#include <algorithm>
#include <memory>
#include "cpu/attention_core.h"
#include "cpu/kernels.h"
#include "cpu/split_kv.h"

namespace mla {
namespace cpu {
namespace {

template <typename A>
void run(const mla_dense_decode_params &p, const CacheLayout &layout) {
    const mla_cache &c = p.cache;
    const int64_t h_kv = layout.kind == MLA_CACHE_PLAIN ? c.h_kv : 1;
    const int64_t group = p.h_q / h_kv;
    const int64_t d_qk = p.d_qk, d_v = p.d_v, s_q = p.s_q;
    const bool direct = layout.kind == MLA_CACHE_PLAIN && c.dtype == native_dtype<A>();
    const A scale = A(p.softmax_scale);

    int64_t max_len = 0;
    for (int64_t b = 0; b < p.b; ++b) max_len = std::max<int64_t>(max_len, p.cache_seqlens[b]);

    std::unique_ptr<RopeAngles> rotation;
    if (p.out_rotation.positions) rotation.reset(new RopeAngles(p.out_rotation.rope));

    UnitShape sh;
    sh.units = p.b * h_kv;
    sh.max_rows = s_q * group;
    sh.d_qk = d_qk;
    sh.d_v = d_v;
    sh.max_keys = max_len;

    auto rows_of = [&](int64_t) { return s_q * group; };

    auto process = [&](Scratch<A> &w, int64_t u, int64_t k0, int64_t k1, SoftmaxState<A> &st) {
        const int64_t b = u / h_kv, kvh = u % h_kv;
        const int64_t len = p.cache_seqlens[b];
        const int64_t end = std::min(k1, len);
        if (k0 >= end) return;
        for (int64_t j = 0; j < s_q; ++j)
            for (int64_t hh = 0; hh < group; ++hh) {
                const int64_t h = kvh * group + hh;
                load_row<A>(p.q, p.dtype, b * p.q_stride[0] + j * p.q_stride[1] + h * p.q_stride[2],
                            d_qk, w.q.data() + (j * group + hh) * d_qk);
            }
        const int32_t *table = p.block_table + b * p.block_table_stride;
        for (int64_t t0 = k0; t0 < end; t0 += kKeyTile) {
            KeyTile<A> &tile = w.tile;
            tile.n = std::min(kKeyTile, end - t0);
            for (int64_t i = 0; i < tile.n; ++i) {
                int64_t t = t0 + i;
                int64_t block = table[t / c.block_size], off = t % c.block_size;
                if (direct) {
                    tile.k[i] = static_cast<const A *>(c.data) + block * c.block_stride +
                                off * c.token_stride + kvh * c.head_stride;
                } else {
                    A *row = w.keys.data() + i * d_qk;
                    read_token<A>(c, layout, block, off, kvh, d_qk, row);
                    tile.k[i] = row;
                }
                tile.v[i] = tile.k[i];
            }
            // Causal: query j sees t <= len - s_q + j. Only the last s_q - 1 keys can be hidden
            // from some query, so most tiles take the shared-range path.
            bool ranged = p.causal && t0 + tile.n > len - s_q + 1;
            if (ranged) {
                for (int64_t j = 0; j < s_q; ++j) {
                    int64_t hi = std::min<int64_t>(std::max<int64_t>(len - s_q + j + 1 - t0, 0),
                                                   tile.n);
                    for (int64_t hh = 0; hh < group; ++hh) {
                        w.lo[j * group + hh] = 0;
                        w.hi[j * group + hh] = int32_t(hi);
                    }
                }
            }
            add_tile(st, w.q.data(), d_qk, scale, tile, ranged ? w.lo.data() : nullptr,
                     ranged ? w.hi.data() : nullptr, w.buffers());
        }
    };

    auto emit = [&](int64_t u, int64_t r, A m, A l, A *acc) {
        const int64_t b = u / h_kv, kvh = u % h_kv;
        const int64_t j = r / group, h = kvh * group + r % group;
        A lse = write_output_row(m, l, acc, d_v, p.sink ? p.sink + h : nullptr, rotation.get(),
                                 rotation ? p.out_rotation.positions[b * s_q + j] : 0, p.out,
                                 p.dtype,
                                 b * p.out_stride[0] + j * p.out_stride[1] + h * p.out_stride[2]);
        p.lse[(b * p.h_q + h) * s_q + j] = float(lse);
    };

    run_units<A>(sh, p.exec.num_threads, rows_of, process, emit);
}

}  // namespace

void dense_decode_fwd(const mla_dense_decode_params &p, const CacheLayout &layout) {
    if (p.dtype == MLA_FLOAT64)
        run<double>(p, layout);
    else
        run<float>(p, layout);
}

}  // namespace cpu
}  // namespace mla
