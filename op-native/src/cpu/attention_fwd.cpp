// Dense attention, forward (ops.md section 4), batched or variable-length.
// Unit: a block of consecutive queries of one sequence and one KV head; rows are those queries
// times the query heads of the group (row = query * group + head). Each key tile is converted
// once per unit and feeds all its rows; rows whose causal / window range does not cover the
// whole tile are masked per row, never by multiplying a hidden key by zero. Units run KV head
// by KV head (the blocks of one head reuse its keys and values from cache), the blocks with the
// most keys first (the pool hands out work in order, so the long ones do not come last).
#include <algorithm>
#include <memory>
#include <vector>
#include "cpu/attention_core.h"
#include "cpu/kernels.h"
#include "cpu/split_kv.h"

namespace mla {
namespace cpu {
namespace {

// Query rows a unit aims at: enough to reuse each converted key tile many times, few enough
// that the unit's queries and state stay in cache.
constexpr int64_t kUnitRows = 64;

// One block of queries of one sequence.
struct QueryBlock {
    int64_t seq;
    int64_t q0, nq;
};

// Where a sequence's rows start and how long it is.
struct Sequence {
    int64_t q_start, q_len, k_start, k_len;
};

template <typename A>
void run(const mla_attention_params &p) {
    const bool varlen = p.cu_seqlens_q != nullptr;
    const int64_t d_qk = p.d_qk, d_v = p.d_v, h_q = p.h_q, h_kv = p.h_kv;
    const int64_t group = h_q / h_kv;
    const bool direct = p.dtype == native_dtype<A>();
    const bool shared_v = p.v == p.k && p.v_stride[0] == p.k_stride[0] &&
                          p.v_stride[1] == p.k_stride[1] && p.v_stride[2] == p.k_stride[2];
    const A scale = A(p.softmax_scale);

    auto sequence = [&](int64_t b) {
        Sequence s;
        if (varlen) {
            s.q_start = p.cu_seqlens_q[b];
            s.q_len = p.cu_seqlens_q[b + 1] - s.q_start;
            s.k_start = p.cu_seqlens_k[b];
            s.k_len = p.cu_seqlens_k[b + 1] - s.k_start;
        } else {
            s.q_start = s.k_start = 0;
            s.q_len = p.s_q;
            s.k_len = p.s_k;
        }
        return s;
    };
    // Element offsets of row t of sequence b, head h. Packed tensors have no batch dimension:
    // their batch stride is ignored.
    auto offset = [&](const int64_t *stride, int64_t b, int64_t row, int64_t h) {
        return (varlen ? 0 : b * stride[0]) + row * stride[1] + h * stride[2];
    };
    auto q_offset = [&](const Sequence &s, int64_t b, int64_t t, int64_t h) {
        return offset(p.q_stride, b, s.q_start + t, h);
    };
    auto k_offset = [&](const Sequence &s, int64_t b, int64_t t, int64_t h) {
        return offset(p.k_stride, b, s.k_start + t, h);
    };
    auto v_offset = [&](const Sequence &s, int64_t b, int64_t t, int64_t h) {
        return offset(p.v_stride, b, s.k_start + t, h);
    };
    // Keys [lo, hi) that query i of a sequence sees: causal bottom-right, window below.
    auto key_range = [&](const Sequence &s, int64_t i, int64_t *lo, int64_t *hi) {
        int64_t diag = i + s.k_len - s.q_len;
        *hi = p.causal ? std::min(s.k_len, std::max<int64_t>(diag + 1, 0)) : s.k_len;
        *lo = p.window > 0 ? std::min(s.k_len, std::max<int64_t>(diag - p.window + 1, 0)) : 0;
    };

    int64_t max_q = 0;
    for (int64_t b = 0; b < p.b; ++b) max_q = std::max(max_q, sequence(b).q_len);
    const int64_t block_q = std::max<int64_t>(1, std::min(max_q, kUnitRows / group));
    std::vector<QueryBlock> blocks;
    std::vector<int64_t> work;  // keys of the block (its share of the cost)
    for (int64_t b = 0; b < p.b; ++b) {
        Sequence s = sequence(b);
        for (int64_t q0 = 0; q0 < s.q_len; q0 += block_q) {
            QueryBlock blk{b, q0, std::min(block_q, s.q_len - q0)};
            int64_t first_lo, first_hi, last_lo, last_hi;
            key_range(s, blk.q0, &first_lo, &first_hi);
            key_range(s, blk.q0 + blk.nq - 1, &last_lo, &last_hi);
            blocks.push_back(blk);
            work.push_back(std::max<int64_t>(last_hi - first_lo, 0));
        }
    }
    std::vector<size_t> order(blocks.size());
    for (size_t i = 0; i < order.size(); ++i) order[i] = i;
    std::stable_sort(order.begin(), order.end(),
                     [&](size_t a, size_t b) { return work[a] > work[b]; });
    std::vector<QueryBlock> sorted(blocks.size());
    for (size_t i = 0; i < order.size(); ++i) sorted[i] = blocks[order[i]];
    blocks.swap(sorted);
    const int64_t n_blocks = int64_t(blocks.size());
    const int64_t max_keys = n_blocks ? work[order[0]] : 0;

    std::unique_ptr<RopeAngles> rotation;
    if (p.out_rotation.positions) rotation.reset(new RopeAngles(p.out_rotation.rope));

    UnitShape sh;
    sh.units = n_blocks * h_kv;
    sh.max_rows = block_q * group;
    sh.d_qk = d_qk;
    sh.d_v = d_v;
    sh.max_keys = max_keys;
    sh.separate_values = !direct && !shared_v;

    // Unit u: KV head u / n_blocks, block u % n_blocks.
    auto rows_of = [&](int64_t u) { return blocks[size_t(u % n_blocks)].nq * group; };

    auto process = [&](Scratch<A> &w, int64_t u, int64_t k0, int64_t k1, SoftmaxState<A> &st) {
        const QueryBlock &blk = blocks[size_t(u % n_blocks)];
        const int64_t kvh = u / n_blocks, b = blk.seq;
        const Sequence s = sequence(b);
        int64_t first_lo, first_hi, last_lo, last_hi;
        key_range(s, blk.q0, &first_lo, &first_hi);
        key_range(s, blk.q0 + blk.nq - 1, &last_lo, &last_hi);
        // Both bounds grow with the query, so the block's keys are [first_lo, last_hi).
        const int64_t start = first_lo + k0, end = std::min(last_hi, first_lo + k1);
        if (start >= end) return;
        for (int64_t i = 0; i < blk.nq; ++i)
            for (int64_t hh = 0; hh < group; ++hh)
                load_row<A>(p.q, p.dtype, q_offset(s, b, blk.q0 + i, kvh * group + hh), d_qk,
                            w.q.data() + (i * group + hh) * d_qk);
        for (int64_t t0 = start; t0 < end; t0 += kKeyTile) {
            KeyTile<A> &tile = w.tile;
            tile.n = std::min(kKeyTile, end - t0);
            for (int64_t j = 0; j < tile.n; ++j) {
                int64_t ko = k_offset(s, b, t0 + j, kvh), vo = v_offset(s, b, t0 + j, kvh);
                if (direct) {
                    tile.k[j] = static_cast<const A *>(p.k) + ko;
                    tile.v[j] = static_cast<const A *>(p.v) + vo;
                } else {
                    A *krow = w.keys.data() + j * d_qk;
                    load_row<A>(p.k, p.dtype, ko, d_qk, krow);
                    tile.k[j] = krow;
                    if (shared_v) {
                        tile.v[j] = krow;
                    } else {
                        A *vrow = w.values.data() + j * d_v;
                        load_row<A>(p.v, p.dtype, vo, d_v, vrow);
                        tile.v[j] = vrow;
                    }
                }
            }
            // Per-row ranges only where some query of the block does not see the whole tile.
            bool ranged = last_lo > t0 || first_hi < t0 + tile.n;
            if (ranged) {
                for (int64_t i = 0; i < blk.nq; ++i) {
                    int64_t lo, hi;
                    key_range(s, blk.q0 + i, &lo, &hi);
                    lo = std::min(std::max<int64_t>(lo - t0, 0), tile.n);
                    hi = std::min(std::max<int64_t>(hi - t0, 0), tile.n);
                    for (int64_t hh = 0; hh < group; ++hh) {
                        w.lo[i * group + hh] = int32_t(lo);
                        w.hi[i * group + hh] = int32_t(hi);
                    }
                }
            }
            add_tile(st, w.q.data(), d_qk, scale, tile, ranged ? w.lo.data() : nullptr,
                     ranged ? w.hi.data() : nullptr, w.buffers());
        }
    };

    auto emit = [&](int64_t u, int64_t r, A m, A l, A *acc) {
        const QueryBlock &blk = blocks[size_t(u % n_blocks)];
        const int64_t b = blk.seq, i = blk.q0 + r / group;
        const int64_t h = (u / n_blocks) * group + r % group;
        const Sequence s = sequence(b);
        // Query row in the op's order: b * s_q + i batched, the packed row in varlen.
        const int64_t row = varlen ? s.q_start + i : b * p.s_q + i;
        const int64_t out_offset = offset(p.out_stride, b, s.q_start + i, h);
        A lse = write_output_row(m, l, acc, d_v, p.sink ? p.sink + h : nullptr, rotation.get(),
                                 rotation ? p.out_rotation.positions[row] : 0, p.out, p.dtype,
                                 out_offset);
        p.lse[varlen ? h * p.total_q + row : (b * h_q + h) * p.s_q + i] = float(lse);
    };

    run_units<A>(sh, p.exec.num_threads, rows_of, process, emit);
}

}  // namespace

void attention_fwd(const mla_attention_params &p) {
    if (p.dtype == MLA_FLOAT64)
        run<double>(p);
    else
        run<float>(p);
}

}  // namespace cpu
}  // namespace mla
