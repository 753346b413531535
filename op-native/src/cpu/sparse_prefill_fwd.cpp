// Sparse prefill, forward (ops.md section 3).
// Unit: one query and one KV head; rows are the query heads of that head's group, which share
// the query's index list for that KV head.
#include <algorithm>
#include <limits>
#include <memory>
#include "cpu/attention_core.h"
#include "cpu/kernels.h"
#include "cpu/split_kv.h"

namespace mla {
namespace cpu {
namespace {

template <typename A>
void run(const mla_sparse_prefill_params &p) {
    const int64_t d_qk = p.d_qk, d_v = p.d_v, h_q = p.h_q, h_kv = p.h_kv;
    const int64_t group = h_q / h_kv;
    const bool direct = p.dtype == native_dtype<A>();
    const A scale = A(p.softmax_scale);

    std::unique_ptr<RopeAngles> rotation;
    if (p.out_rotation.positions) rotation.reset(new RopeAngles(p.out_rotation.rope));

    UnitShape sh;
    sh.units = p.s_q * h_kv;
    sh.max_rows = group;
    sh.d_qk = d_qk;
    sh.d_v = d_v;
    sh.max_keys = p.topk;

    auto rows_of = [&](int64_t) { return group; };

    auto process = [&](Scratch<A> &w, int64_t u, int64_t k0, int64_t k1, SoftmaxState<A> &st) {
        const int64_t i = u / h_kv, kvh = u % h_kv;
        int64_t count = p.topk;
        if (p.topk_length)
            count = std::min<int64_t>(std::max<int64_t>(p.topk_length[i], 0), p.topk);
        const int64_t end = std::min(k1, count);
        if (k0 >= end) return;
        for (int64_t hh = 0; hh < group; ++hh)
            load_row<A>(p.q, p.dtype, i * p.q_stride[0] + (kvh * group + hh) * p.q_stride[1],
                        d_qk, w.q.data() + hh * d_qk);
        const int32_t *indices = p.indices + i * p.indices_stride[0] + kvh * p.indices_stride[1];
        KeyTile<A> &tile = w.tile;
        tile.n = 0;
        for (int64_t e = k0; e < end; ++e) {
            int64_t idx = indices[e];
            if (idx < 0 || idx >= p.s_kv) continue;  // invalid: skipped, never read
            int64_t offset = idx * p.kv_stride[0] + kvh * p.kv_stride[1];
            if (direct) {
                tile.k[tile.n] = static_cast<const A *>(p.kv) + offset;
            } else {
                A *row = w.keys.data() + tile.n * d_qk;
                load_row<A>(p.kv, p.dtype, offset, d_qk, row);
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

    auto emit = [&](int64_t u, int64_t r, A m, A l, A *acc) {
        const int64_t i = u / h_kv, h = (u % h_kv) * group + r;
        A lse = write_output_row(m, l, acc, d_v, p.sink ? p.sink + h : nullptr, rotation.get(),
                                 rotation ? p.out_rotation.positions[i] : 0, p.out, p.dtype,
                                 i * p.out_stride[0] + h * p.out_stride[1]);
        p.lse[i * h_q + h] = float(lse);
        if (p.max_logit)
            p.max_logit[i * h_q + h] =
                l == A(0) ? -std::numeric_limits<float>::infinity() : float(m);
    };

    run_units<A>(sh, p.exec.num_threads, rows_of, process, emit);
}

}  // namespace

void sparse_prefill_fwd(const mla_sparse_prefill_params &p) {
    if (p.dtype == MLA_FLOAT64)
        run<double>(p);
    else
        run<float>(p);
}

}  // namespace cpu
}  // namespace mla
