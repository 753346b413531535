// Sparse decode over paged (usually FP8) caches (ops.md section 2).
// Unit: one query token (request b, query j) with all h_q heads as rows (h_kv = 1). Its key list
// is the first key set's valid indices followed by the extra set's, one softmax over both.
#include <algorithm>
#include <memory>
#include "cpu/attention_core.h"
#include "cpu/kernels.h"
#include "cpu/split_kv.h"

namespace mla {
namespace cpu {
namespace {

// One key set as the kernel sees it.
struct KeySet {
    const mla_sparse_keys *keys = nullptr;
    const CacheLayout *layout = nullptr;
    int64_t num_keys = 0;   // num_blocks * block_size: indices at or past it are invalid
    bool direct = false;    // PLAIN rows of the accumulator type: used in place

    // Entries of request b that count.
    int64_t count(int64_t b) const {
        if (!keys) return 0;
        if (!keys->topk_length) return keys->topk;
        return std::min<int64_t>(std::max<int64_t>(keys->topk_length[b], 0), keys->topk);
    }
};

template <typename A>
void run(const mla_sparse_decode_params &p, const CacheLayout &keys_layout,
         const CacheLayout *extra_layout) {
    const int64_t d_qk = p.d_qk, d_v = p.d_v, s_q = p.s_q, h_q = p.h_q;
    const A scale = A(p.softmax_scale);

    KeySet sets[2];
    const mla_sparse_keys *src[2] = {&p.keys, extra_layout ? &p.extra : nullptr};
    const CacheLayout *layouts[2] = {&keys_layout, extra_layout};
    for (int s = 0; s < 2; ++s) {
        if (!src[s]) continue;
        sets[s].keys = src[s];
        sets[s].layout = layouts[s];
        sets[s].num_keys = src[s]->cache.num_blocks * src[s]->cache.block_size;
        sets[s].direct = layouts[s]->kind == MLA_CACHE_PLAIN &&
                         src[s]->cache.dtype == native_dtype<A>();
    }

    std::unique_ptr<RopeAngles> rotation;
    if (p.out_rotation.positions) rotation.reset(new RopeAngles(p.out_rotation.rope));

    UnitShape sh;
    sh.units = p.b * s_q;
    sh.max_rows = h_q;
    sh.d_qk = d_qk;
    sh.d_v = d_v;
    sh.max_keys = (sets[0].keys ? sets[0].keys->topk : 0) + (sets[1].keys ? sets[1].keys->topk : 0);

    auto rows_of = [&](int64_t) { return h_q; };

    auto process = [&](Scratch<A> &w, int64_t u, int64_t k0, int64_t k1, SoftmaxState<A> &st) {
        const int64_t b = u / s_q, j = u % s_q;
        const int64_t n0 = sets[0].count(b), n1 = sets[1].count(b);
        const int64_t end = std::min(k1, n0 + n1);
        if (k0 >= end) return;
        for (int64_t h = 0; h < h_q; ++h)
            load_row<A>(p.q, p.dtype, b * p.q_stride[0] + j * p.q_stride[1] + h * p.q_stride[2],
                        d_qk, w.q.data() + h * d_qk);
        KeyTile<A> &tile = w.tile;
        tile.n = 0;
        for (int64_t e = k0; e < end; ++e) {
            const KeySet &set = e < n0 ? sets[0] : sets[1];
            const int64_t pos = e < n0 ? e : e - n0;
            const mla_sparse_keys &ks = *set.keys;
            int64_t idx = ks.indices[b * ks.indices_stride[0] + j * ks.indices_stride[1] + pos];
            if (idx < 0 || idx >= set.num_keys) continue;  // invalid: skipped, never read
            const mla_cache &c = ks.cache;
            int64_t block = idx / c.block_size, off = idx % c.block_size;
            if (set.direct) {
                tile.k[tile.n] = static_cast<const A *>(c.data) + block * c.block_stride +
                                 off * c.token_stride;
            } else {
                A *row = w.keys.data() + tile.n * d_qk;
                read_token<A>(c, *set.layout, block, off, 0, d_qk, row);
                tile.k[tile.n] = row;
            }
            tile.v[tile.n] = tile.k[tile.n];
            if (++tile.n == kKeyTile) {
                add_tile(st, w.q.data(), d_qk, scale, tile, nullptr, nullptr, w.buffers());
                tile.n = 0;
            }
        }
        add_tile(st, w.q.data(), d_qk, scale, tile, nullptr, nullptr, w.buffers());
    };

    auto emit = [&](int64_t u, int64_t h, A m, A l, A *acc) {
        const int64_t b = u / s_q, j = u % s_q;
        A lse = write_output_row(m, l, acc, d_v, p.sink ? p.sink + h : nullptr, rotation.get(),
                                 rotation ? p.out_rotation.positions[u] : 0, p.out, p.dtype,
                                 b * p.out_stride[0] + j * p.out_stride[1] + h * p.out_stride[2]);
        p.lse[(b * h_q + h) * s_q + j] = float(lse);
    };

    run_units<A>(sh, p.exec.num_threads, rows_of, process, emit);
}

}  // namespace

void sparse_decode_fwd(const mla_sparse_decode_params &p, const CacheLayout &keys,
                       const CacheLayout *extra) {
    if (p.dtype == MLA_FLOAT64)
        run<double>(p, keys, extra);
    else
        run<float>(p, keys, extra);
}

}  // namespace cpu
}  // namespace mla
