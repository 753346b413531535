// Native GPU test of the sparse attention ops (ops.md sections 2, 3 and 8): mla_sparse_decode
// over BF16 / FP16 / float32 rows and FP8 V32 / MODEL1 caches, with an extra key set, and
// mla_sparse_prefill_fwd. Every case runs on CUDA device 0 through the C ABI (device pointers
// only) with the library's choice and with each implementation that accepts it, and is
// compared with the CPU path of the same library and with a float64 reference written here.
// Outputs are poisoned before each call and interleaved with gaps that must stay untouched;
// cache rows nobody selects hold NaN (PLAIN) or 0xff bytes (FP8), which must not leak.
// Without a device every GPU case is skipped; MLA4J_GPU_TEST_REFERENCE=1 then runs the cases
// against the CPU path alone (a check of this test's data and reference).
#include "test_buffers.h"

#include <climits>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>

namespace {

using namespace mla_test;

enum SinkMode { kNoSink = 0, kFiniteSink = 1, kMixedSink = 2 };
enum RotMode { kNoRot = 0, kRotFreq = 1, kRotTable = 2 };

struct Case {
    std::string name;
    bool prefill = false;
    int dtype = MLA_BFLOAT16;
    int kind = MLA_CACHE_PLAIN;      // decode: PLAIN (rows of dtype), V32, MODEL1
    int64_t b = 2, s_q = 1, h_q = 128, h_kv = 1, d_qk = 576, d_v = 512;
    int64_t block_size = 64, slots = 700;  // key set: slots = num_blocks * block_size (rounded up)
    int64_t topk = 128;
    bool lengths = false;            // topk_length
    bool extra = false;              // decode: a second key set
    int64_t extra_block_size = 16, extra_slots = 300, extra_topk = 64;
    double invalid = 0.15;           // fraction of invalid entries
    bool all_invalid = false;
    int sink = kNoSink;
    int rot = kNoRot;
    bool max_logit = true;           // prefill
    int64_t pad = 8;                 // extra elements in q / out strides (non-contiguous)
    double amp = 1.0;                // query amplitude
};

// One key set: every slot's float64 values (NaN rows nobody selects) and the bytes the calls
// read (PLAIN rows of the case's dtype with padded strides, or an FP8 cache).
struct KeySet {
    int kind = MLA_CACHE_PLAIN, dt = MLA_BFLOAT16;
    int64_t block_size = 1, num_blocks = 0, h_kv = 1, d_qk = 0;
    int64_t head_st = 0, token_st = 0, block_st = 0;
    Buf plain;                          // PLAIN
    std::vector<unsigned char> bytes;   // FP8
    std::vector<float> deq;             // FP8: dequantised [slot][d_qk]
    std::vector<char> nan_slot;
    mla_cache desc{};                   // host pointers

    int64_t slots() const { return num_blocks * block_size; }
    double value(int64_t slot, int64_t head, int64_t e) const {
        if (kind != MLA_CACHE_PLAIN) return deq[size_t(slot * d_qk + e)];
        return plain.get((slot / block_size) * block_st + (slot % block_size) * token_st + head * head_st + e);
    }
};

void make_key_set(KeySet *k, int kind, int dt, int64_t bs, int64_t slots, int64_t h_kv, int64_t d_qk,
                  int64_t pad, std::mt19937_64 &rng) {
    std::uniform_real_distribution<double> uni(-1.0, 1.0);
    k->kind = kind;
    k->dt = dt;
    k->block_size = bs;
    k->num_blocks = (slots + bs - 1) / bs;
    k->h_kv = h_kv;
    k->d_qk = d_qk;
    k->nan_slot.assign(size_t(k->slots()), 0);
    for (int64_t s = 0; s < k->slots(); ++s) k->nan_slot[size_t(s)] = rng() % 5 == 0;
    std::memset(&k->desc, 0, sizeof k->desc);
    k->desc.kind = kind;
    k->desc.num_blocks = k->num_blocks;
    k->desc.block_size = bs;
    k->desc.h_kv = h_kv;
    if (kind == MLA_CACHE_PLAIN) {
        k->head_st = d_qk + pad;
        k->token_st = h_kv * k->head_st + pad;
        k->block_st = bs * k->token_st + pad;
        k->plain = Buf(dt, k->num_blocks * k->block_st);
        for (int64_t s = 0; s < k->slots(); ++s)
            for (int64_t h = 0; h < h_kv; ++h)
                for (int64_t e = 0; e < d_qk; ++e)
                    k->plain.set((s / bs) * k->block_st + (s % bs) * k->token_st + h * k->head_st + e,
                                 k->nan_slot[size_t(s)] ? std::nan("") : uni(rng));
        k->desc.dtype = dt;
        k->desc.data = k->plain.bytes.data();
        k->desc.block_stride = k->block_st;
        k->desc.token_stride = k->token_st;
        k->desc.head_stride = k->head_st;
        return;
    }
    // FP8: float rows of per-block amplitude (scales differ), NaN rows where nobody looks,
    // quantised by the CPU path, then read back dequantised for the reference.
    std::vector<float> vals(size_t(k->slots() * d_qk));
    for (int64_t s = 0; s < k->slots(); ++s) {
        const double amp = std::pow(10.0, 1.5 * uni(rng));
        for (int64_t e = 0; e < d_qk; ++e)
            vals[size_t(s * d_qk + e)] = k->nan_slot[size_t(s)] ? NAN : float(amp * uni(rng));
    }
    const int64_t block_bytes = mla_cache_block_bytes(kind, bs, 0, 0, 0);
    k->bytes.assign(size_t(k->num_blocks * block_bytes), 0);
    k->desc.data = k->bytes.data();
    mla_quant_params qp;
    std::memset(&qp, 0, sizeof qp);
    qp.dtype = MLA_FLOAT32;
    qp.kv = vals.data();
    qp.cache = k->desc;
    qp.cache_out = k->bytes.data();
    qp.exec.device = -1;
    ok_or_report(mla_kv_quantize(&qp), "CPU quantize");
    for (int64_t s = 0; s < k->slots(); ++s)  // nobody's rows: every byte 0xff
        if (k->nan_slot[size_t(s)]) {
            const int64_t blk = s / bs, off = s % bs;
            const int64_t row = kind == MLA_CACHE_V32 ? 656 : 576;
            unsigned char *p = k->bytes.data() + (kind == MLA_CACHE_V32 ? s * row : blk * block_bytes + off * row);
            std::memset(p, 0xff, size_t(row));
            if (kind == MLA_CACHE_MODEL1) std::memset(k->bytes.data() + blk * block_bytes + bs * 576 + off * 8, 0xff, 8);
        }
    k->deq.assign(vals.size(), 0.f);
    qp.kv = k->deq.data();
    qp.cache.data = k->bytes.data();
    ok_or_report(mla_kv_dequantize(&qp), "CPU dequantize");
}

// Index lists [units][topk] (unit = (request, query, KV head)): valid slots (never a NaN
// row), duplicates, and invalid entries of every kind (-1, negative, at or past the end).
std::vector<int32_t> make_indices(const KeySet &k, int64_t units, int64_t topk, double invalid,
                                  bool all_invalid, std::mt19937_64 &rng) {
    std::vector<int32_t> good;
    for (int64_t s = 0; s < k.slots(); ++s)
        if (!k.nan_slot[size_t(s)]) good.push_back(int32_t(s));
    const int32_t bad[] = {-1, -1000, int32_t(k.slots()), int32_t(k.slots() + 17), INT32_MAX, INT32_MIN};
    std::uniform_real_distribution<double> u01(0.0, 1.0);
    std::vector<int32_t> idx(size_t(std::max<int64_t>(units * topk, 1)));
    for (int64_t u = 0; u < units; ++u)
        for (int64_t e = 0; e < topk; ++e) {
            int32_t &v = idx[size_t(u * topk + e)];
            const double x = u01(rng);
            if (all_invalid || x < invalid || good.empty())
                v = bad[rng() % 6];
            else if (e > 0 && x < invalid + 0.08)
                v = idx[size_t(u * topk + rng() % e)];  // a duplicate (or a repeated invalid)
            else
                v = good[rng() % good.size()];
        }
    return idx;
}

// Lengths per request: 0, topk, beyond topk, negative, and values between.
std::vector<int32_t> make_lengths(int64_t n, int64_t topk, std::mt19937_64 &rng) {
    std::vector<int32_t> len(size_t(std::max<int64_t>(n, 1)));
    for (int64_t i = 0; i < n; ++i) {
        const int kind = int(rng() % 6);
        len[size_t(i)] = kind == 0 ? 0 : kind == 1 ? int32_t(topk) : kind == 2 ? int32_t(topk + 5)
                         : kind == 3 ? -3 : int32_t(rng() % (topk + 1));
    }
    return len;
}

// The problem in decode form (a prefill query i is request i with one query).
struct Problem {
    int dtype = MLA_BFLOAT16;
    int64_t b = 0, s_q = 1, h_q = 0, h_kv = 1, d_qk = 0, d_v = 0;
    Buf q;
    int64_t qs[3] = {0, 0, 0}, os[3] = {0, 0, 0};
    int64_t out_elems = 0;
    KeySet sets[2];
    int n_sets = 1;
    std::vector<int32_t> idx[2], len[2];
    int64_t topk[2] = {0, 0};
    bool has_len = false;
    std::vector<float> sink;
    int sink_mode = kNoSink;
    int rot = kNoRot, rope_dim = 64;
    std::vector<int32_t> positions;
    std::vector<float> cos_t, sin_t;
    int64_t table_len = 9000;
    float scale = 0;
    mla_out_rotation rotation{};

    int64_t rows() const { return b * s_q * h_q; }
    int64_t unit(int64_t i, int64_t j, int64_t kvh) const { return (i * s_q + j) * h_kv + kvh; }
    int64_t count(int s, int64_t i) const {
        if (!has_len) return topk[s];
        return std::min<int64_t>(std::max<int64_t>(len[s][size_t(i)], 0), topk[s]);
    }
    int64_t out_index(int64_t r) const {
        const int64_t i = r / (s_q * h_q), j = (r / h_q) % s_q, h = r % h_q;
        return i * os[0] + j * os[1] + h * os[2];
    }
    int64_t lse_index(int64_t r) const {  // [b, h_q, s_q]
        const int64_t i = r / (s_q * h_q), j = (r / h_q) % s_q, h = r % h_q;
        return (i * h_q + h) * s_q + j;
    }
};

void build(const Case &cs, uint64_t seed, Problem *P) {
    std::mt19937_64 rng(seed);
    std::uniform_real_distribution<double> uni(-1.0, 1.0);
    Problem &p = *P;
    p.dtype = cs.dtype;
    p.b = cs.b;
    p.s_q = cs.prefill ? 1 : cs.s_q;
    p.h_q = cs.h_q;
    p.h_kv = cs.prefill ? cs.h_kv : 1;
    p.d_qk = cs.d_qk;
    p.d_v = cs.d_v;
    p.qs[2] = cs.d_qk + cs.pad;
    p.qs[1] = p.h_q * p.qs[2] + cs.pad;
    p.qs[0] = p.s_q * p.qs[1] + cs.pad;
    p.q = Buf(cs.dtype, p.b * p.qs[0]);
    for (int64_t i = 0; i < p.b; ++i)
        for (int64_t j = 0; j < p.s_q; ++j)
            for (int64_t h = 0; h < p.h_q; ++h)
                for (int64_t e = 0; e < p.d_qk; ++e)
                    p.q.set(i * p.qs[0] + j * p.qs[1] + h * p.qs[2] + e, cs.amp * uni(rng));
    p.os[2] = cs.d_v + cs.pad;
    p.os[1] = p.h_q * p.os[2] + cs.pad;
    p.os[0] = p.s_q * p.os[1] + cs.pad;
    p.out_elems = p.b * p.os[0];

    const int64_t units = p.b * p.s_q * p.h_kv;
    make_key_set(&p.sets[0], cs.prefill ? MLA_CACHE_PLAIN : cs.kind, cs.dtype,
                 cs.prefill ? 1 : cs.block_size, cs.slots, p.h_kv, p.d_qk, cs.pad, rng);
    p.topk[0] = cs.topk;
    p.idx[0] = make_indices(p.sets[0], units, cs.topk, cs.invalid, cs.all_invalid, rng);
    p.has_len = cs.lengths;
    p.len[0] = make_lengths(p.b, cs.topk, rng);
    if (cs.extra && !cs.prefill) {
        p.n_sets = 2;
        make_key_set(&p.sets[1], cs.kind, cs.dtype, cs.extra_block_size, cs.extra_slots, 1, p.d_qk, cs.pad, rng);
        p.topk[1] = cs.extra_topk;
        p.idx[1] = make_indices(p.sets[1], units, cs.extra_topk, cs.invalid, cs.all_invalid, rng);
        p.len[1] = make_lengths(p.b, cs.extra_topk, rng);
    }

    p.sink_mode = cs.sink;
    p.sink.resize(size_t(p.h_q));
    for (int64_t h = 0; h < p.h_q; ++h) {
        double v = 2.0 * uni(rng);
        if (cs.sink == kMixedSink) v = h % 3 == 0 ? kInf : h % 3 == 1 ? -kInf : v;
        p.sink[size_t(h)] = float(v);
    }
    p.rot = cs.rot;
    p.rope_dim = p.d_v >= 64 ? 64 : 16;
    p.positions.resize(size_t(std::max<int64_t>(p.b * p.s_q, 1)));
    for (auto &x : p.positions) x = int32_t(rng() % 8000);
    std::memset(&p.rotation, 0, sizeof p.rotation);
    if (cs.rot != kNoRot) {
        p.rotation.positions = p.positions.data();
        p.rotation.rope.rope_dim = p.rope_dim;
        p.rotation.rope.rope_offset = -1;
        p.rotation.rope.theta = 10000.0;
        p.rotation.rope.yarn_factor = 1.0;
        p.rotation.rope.style = cs.rot == kRotFreq ? MLA_ROPE_INTERLEAVED : MLA_ROPE_HALF_SPLIT;
        if (cs.rot == kRotTable) {
            p.cos_t.resize(size_t(p.table_len * p.rope_dim / 2));
            p.sin_t.resize(p.cos_t.size());
            for (int64_t t = 0; t < p.table_len; ++t)
                for (int i = 0; i < p.rope_dim / 2; ++i) {
                    const double ang = double(t) * std::pow(500.0, -2.0 * i / p.rope_dim);
                    p.cos_t[size_t(t * p.rope_dim / 2 + i)] = float(std::cos(ang));
                    p.sin_t[size_t(t * p.rope_dim / 2 + i)] = float(std::sin(ang));
                }
            p.rotation.rope.cos_table = p.cos_t.data();
            p.rotation.rope.sin_table = p.sin_t.data();
            p.rotation.rope.table_len = p.table_len;
        }
    }
    p.scale = float(1.0 / std::sqrt(double(p.d_qk)));
}

// The float64 reference of every row: out (d_v per row), lse and max logit (natural units).
void reference(const Problem &p, std::vector<double> *out, std::vector<double> *lse,
               std::vector<double> *max_logit) {
    const int64_t rows = p.rows(), d_v = p.d_v, group = p.h_q / p.h_kv;
    out->assign(size_t(rows * d_v), 0.0);
    lse->assign(size_t(rows), kInf);
    max_logit->assign(size_t(rows), -kInf);
    parallel_for(rows, [&](int64_t r) {
        const int64_t i = r / (p.s_q * p.h_q), j = (r / p.h_q) % p.s_q, h = r % p.h_q, kvh = h / group;
        const int64_t qb = i * p.qs[0] + j * p.qs[1] + h * p.qs[2];
        std::vector<std::pair<int, int64_t>> keys;  // (set, slot)
        for (int s = 0; s < p.n_sets; ++s) {
            const int64_t n = p.count(s, i);
            for (int64_t e = 0; e < n; ++e) {
                const int64_t v = p.idx[s][size_t(p.unit(i, j, kvh) * p.topk[s] + e)];
                if (v >= 0 && v < p.sets[s].slots()) keys.emplace_back(s, v);
            }
        }
        if (keys.empty()) return;  // out 0, lse +inf, max logit -inf
        std::vector<double> sc(keys.size());
        double mx = -kInf;
        for (size_t t = 0; t < keys.size(); ++t) {
            double dot = 0;
            for (int64_t e = 0; e < p.d_qk; ++e)
                dot += p.q.get(qb + e) * p.sets[keys[t].first].value(keys[t].second, kvh, e);
            sc[t] = double(p.scale) * dot;
            mx = std::max(mx, sc[t]);
        }
        double sum = 0;
        std::vector<double> acc(size_t(d_v), 0.0);
        for (size_t t = 0; t < keys.size(); ++t) {
            const double w = std::exp(sc[t] - mx);
            sum += w;
            for (int64_t c = 0; c < d_v; ++c) acc[size_t(c)] += w * p.sets[keys[t].first].value(keys[t].second, kvh, c);
        }
        const double l = mx + std::log(sum);
        double factor = 1.0 / sum;
        if (p.sink_mode != kNoSink) {
            const double s = p.sink[size_t(h)];
            factor = s == kInf ? 0.0 : s == -kInf ? factor : factor / (1.0 + std::exp(s - l));
        }
        for (auto &x : acc) x *= factor;
        if (p.rot != kNoRot) {
            const int64_t pos = p.positions[size_t(i * p.s_q + j)], start = d_v - p.rope_dim;
            for (int k = 0; k < p.rope_dim / 2; ++k) {
                double c, s;
                if (p.rot == kRotTable) {
                    c = p.cos_t[size_t(pos * p.rope_dim / 2 + k)];
                    s = p.sin_t[size_t(pos * p.rope_dim / 2 + k)];
                } else {
                    const double ang = double(pos) * std::pow(10000.0, -2.0 * k / p.rope_dim);
                    c = std::cos(ang);
                    s = std::sin(ang);
                }
                s = -s;
                const int64_t i0 = p.rot == kRotFreq ? start + 2 * k : start + k;
                const int64_t i1 = p.rot == kRotFreq ? i0 + 1 : i0 + p.rope_dim / 2;
                const double x0 = acc[size_t(i0)], x1 = acc[size_t(i1)];
                acc[size_t(i0)] = x0 * c - x1 * s;
                acc[size_t(i1)] = x0 * s + x1 * c;
            }
        }
        std::copy(acc.begin(), acc.end(), out->begin() + r * d_v);
        (*lse)[size_t(r)] = l;
        (*max_logit)[size_t(r)] = mx;
    });
}

// ---- the op's parameters ----------------------------------------------------------------------

// Pointers an op call reads and writes: host (CPU path) or device (GPU path).
struct Ptrs {
    const void *q = nullptr;
    const void *keys[2] = {nullptr, nullptr};
    const int32_t *idx[2] = {nullptr, nullptr}, *len[2] = {nullptr, nullptr};
    const float *sink = nullptr;
    const int32_t *positions = nullptr;
    const float *cos_t = nullptr, *sin_t = nullptr;
    void *out = nullptr;
    float *lse = nullptr, *max_logit = nullptr;
};

mla_out_rotation rotation(const Problem &p, const Ptrs &x) {
    mla_out_rotation r = p.rotation;
    if (r.positions) {
        r.positions = x.positions;
        if (r.rope.cos_table) {
            r.rope.cos_table = x.cos_t;
            r.rope.sin_table = x.sin_t;
        }
    }
    return r;
}

mla_sparse_decode_params decode_params(const Problem &p, const Ptrs &x) {
    mla_sparse_decode_params d;
    std::memset(&d, 0, sizeof d);
    d.dtype = p.dtype;
    d.b = p.b;
    d.s_q = p.s_q;
    d.h_q = p.h_q;
    d.d_qk = p.d_qk;
    d.d_v = p.d_v;
    d.q = x.q;
    for (int i = 0; i < 3; ++i) {
        d.q_stride[i] = p.qs[i];
        d.out_stride[i] = p.os[i];
    }
    mla_sparse_keys *ks[2] = {&d.keys, &d.extra};
    for (int s = 0; s < p.n_sets; ++s) {
        ks[s]->cache = p.sets[s].desc;
        ks[s]->cache.data = x.keys[s];
        ks[s]->indices = x.idx[s];
        ks[s]->topk = p.topk[s];
        ks[s]->indices_stride[0] = p.s_q * p.topk[s];
        ks[s]->indices_stride[1] = p.topk[s];
        ks[s]->topk_length = p.has_len ? x.len[s] : nullptr;
    }
    d.softmax_scale = p.scale;
    d.sink = p.sink_mode != kNoSink ? x.sink : nullptr;
    d.out_rotation = rotation(p, x);
    d.out = x.out;
    d.lse = x.lse;
    return d;
}

mla_sparse_prefill_params prefill_params(const Problem &p, const Ptrs &x) {
    const KeySet &k = p.sets[0];
    mla_sparse_prefill_params d;
    std::memset(&d, 0, sizeof d);
    d.dtype = p.dtype;
    d.s_q = p.b;
    d.s_kv = k.slots();
    d.h_q = p.h_q;
    d.h_kv = p.h_kv;
    d.d_qk = p.d_qk;
    d.d_v = p.d_v;
    d.topk = p.topk[0];
    d.q = x.q;
    d.q_stride[0] = p.qs[0];
    d.q_stride[1] = p.qs[2];
    d.kv = x.keys[0];
    d.kv_stride[0] = k.block_st;  // block size 1: a block is a row
    d.kv_stride[1] = k.head_st;
    d.indices = x.idx[0];
    d.indices_stride[0] = p.h_kv * p.topk[0];
    d.indices_stride[1] = p.topk[0];
    d.topk_length = p.has_len ? x.len[0] : nullptr;
    d.softmax_scale = p.scale;
    d.sink = p.sink_mode != kNoSink ? x.sink : nullptr;
    d.out_rotation = rotation(p, x);
    d.out = x.out;
    d.out_stride[0] = p.os[0];
    d.out_stride[1] = p.os[2];
    d.max_logit = x.max_logit;
    d.lse = x.lse;
    return d;
}

double g_gpu_s = 0, g_cpu_s = 0, g_ref_s = 0;
bool g_reference_only = false;

struct Results {
    Buf out;
    std::vector<float> lse, max_logit;
};

Outcome judge(const Problem &p, const Results &got, const std::vector<double> &ref_out,
              const std::vector<double> &ref_lse, const std::vector<double> &ref_max, bool with_max) {
    Outcome o;
    std::vector<int64_t> out_index(size_t(p.rows()));
    for (int64_t r = 0; r < p.rows(); ++r) out_index[size_t(r)] = p.out_index(r);
    compare_rows(got.out, ref_out, out_index, p.d_v, &o);
    for (int64_t r = 0; r < p.rows(); ++r) {
        bool nan_row = false;
        for (int64_t c = 0; c < p.d_v; ++c) nan_row |= std::isnan(ref_out[size_t(r * p.d_v + c)]);
        if (nan_row) continue;
        compare_scalar(got.lse[size_t(p.lse_index(r))], ref_lse[size_t(r)], &o.lse_err, &o.inf_ok);
        if (with_max) {  // the same scale as the scores: |diff| / (1 + |ref|)
            const double g = got.max_logit[size_t(p.lse_index(r))], e = ref_max[size_t(r)];
            double err = 0;
            compare_scalar(g, e, &err, &o.inf_ok);
            if (std::isfinite(e)) o.max_err = std::max(o.max_err, err / (1.0 + std::fabs(e)));
        }
    }
    return o;
}

void run_case(const Case &cs, uint64_t seed, void *stream) {
    Problem p;
    build(cs, seed, &p);
    Timer tref;
    std::vector<double> ref_out, ref_lse, ref_max;
    reference(p, &ref_out, &ref_lse, &ref_max);
    g_ref_s += tref.s();
    const double tol = rel_tolerance(cs.dtype);
    const bool with_max = cs.prefill && cs.max_logit;
    const int64_t rows = p.rows();


    // ---- CPU path ----------------------------------------------------------------------------
    Results cpu;
    cpu.out = Buf(cs.dtype, p.out_elems);
    cpu.lse.assign(size_t(rows), NAN);
    cpu.max_logit.assign(size_t(rows), NAN);
    Ptrs hx;
    hx.q = p.q.bytes.data();
    for (int s = 0; s < p.n_sets; ++s) {
        hx.keys[s] = p.sets[s].desc.data;
        hx.idx[s] = p.idx[s].data();
        hx.len[s] = p.len[s].data();
    }
    hx.sink = p.sink.data();
    hx.positions = p.positions.data();
    hx.cos_t = p.cos_t.data();
    hx.sin_t = p.sin_t.data();
    hx.out = cpu.out.bytes.data();
    hx.lse = cpu.lse.data();
    hx.max_logit = with_max ? cpu.max_logit.data() : nullptr;
    Timer tcpu;
    mla_status st;
    if (cs.prefill) {
        mla_sparse_prefill_params d = prefill_params(p, hx);
        d.exec.device = -1;
        st = mla_sparse_prefill_fwd(&d);
    } else {
        mla_sparse_decode_params d = decode_params(p, hx);
        d.exec.device = -1;
        st = mla_sparse_decode(&d);
    }
    g_cpu_s += tcpu.s();
    if (!ok_or_report(st, (cs.name + ": CPU path").c_str())) return;
    const Outcome oc = judge(p, cpu, ref_out, ref_lse, ref_max, with_max);
    check(oc.ok(tol), "%s [CPU vs f64]: rel %.3g, lse err %.3g, max err %.3g, finite %d, inf %d, NaN rows %d",
          cs.name.c_str(), oc.rel, oc.lse_err, oc.max_err, int(oc.finite), int(oc.inf_ok), int(oc.nan_rows_ok));
    if (g_reference_only) {
        std::printf("  %-70s CPU rel %.2e  lse %.1e  %s\n", cs.name.c_str(), oc.rel, oc.lse_err,
                    oc.ok(tol) ? "ok" : "FAILED");
        return;
    }

    // ---- GPU: device copies once, then one call per implementation that takes the case -------
    DevBuf dq, dkeys[2], didx[2], dlen[2], dsink, dpos, dcos, dsin, dout, dlse, dmax, dws;
    if (!dq.upload(p.q.bytes.data(), p.q.nbytes()) || !dsink.upload(p.sink) || !dpos.upload(p.positions) ||
        !dout.alloc(cpu.out.nbytes()) || !dlse.alloc(rows * 4) || !dmax.alloc(rows * 4))
        return;
    if (!p.cos_t.empty() && (!dcos.upload(p.cos_t) || !dsin.upload(p.sin_t))) return;
    for (int s = 0; s < p.n_sets; ++s) {
        const KeySet &k = p.sets[s];
        const bool ok = k.kind == MLA_CACHE_PLAIN ? dkeys[s].upload(k.plain.bytes.data(), k.plain.nbytes())
                                                  : dkeys[s].upload(k.bytes);
        if (!ok || !didx[s].upload(p.idx[s]) || !dlen[s].upload(p.len[s])) return;
    }
    Ptrs dx;
    dx.q = dq.ptr;
    for (int s = 0; s < p.n_sets; ++s) {
        dx.keys[s] = dkeys[s].ptr;
        dx.idx[s] = static_cast<const int32_t *>(didx[s].ptr);
        dx.len[s] = static_cast<const int32_t *>(dlen[s].ptr);
    }
    dx.sink = static_cast<const float *>(dsink.ptr);
    dx.positions = static_cast<const int32_t *>(dpos.ptr);
    dx.cos_t = static_cast<const float *>(dcos.ptr);
    dx.sin_t = static_cast<const float *>(dsin.ptr);
    dx.out = dout.ptr;
    dx.lse = static_cast<float *>(dlse.ptr);
    dx.max_logit = with_max ? static_cast<float *>(dmax.ptr) : nullptr;

    mla_sparse_decode_params gd = decode_params(p, dx);
    mla_sparse_prefill_params gp = prefill_params(p, dx);
    mla_exec &ex = cs.prefill ? gp.exec : gd.exec;
    ex.device = 0;
    ex.stream = stream;
    const int64_t ws = cs.prefill ? mla_sparse_prefill_fwd_workspace_size(&gp) : mla_sparse_decode_workspace_size(&gd);
    if (ws < 0) {
        check(false, "%s: workspace query: %s", cs.name.c_str(), mla_last_error());
        return;
    }
    if (ws > 0 && !dws.alloc(ws)) return;
    ex.workspace = dws.ptr;
    ex.workspace_bytes = ws;

    for (const char *impl : {"", "sm90_sparse", "cuda_core"}) {
        ex.implementation = impl;
        mla_plan_info plan;
        st = cs.prefill ? mla_sparse_prefill_fwd_plan(&gp, &plan) : mla_sparse_decode_plan(&gd, &plan);
        if (!ok_or_report(st, (cs.name + ": plan").c_str())) continue;
        if (*impl && !plan.implementation[0]) continue;  // refused: nothing to run
        const std::string name = cs.name + " [" + plan.implementation + (*impl ? "" : ", auto") + "]";
        if (plan.workspace_bytes > ws) {
            check(false, "%s: plan workspace %lld exceeds the query's %lld", name.c_str(),
                  (long long)plan.workspace_bytes, (long long)ws);
            continue;
        }
        Timer tgpu;
        if (!dout.poison() || !dlse.poison() || !dmax.poison() || (ws > 0 && !dws.poison())) return;
        st = cs.prefill ? mla_sparse_prefill_fwd(&gp) : mla_sparse_decode(&gd);
        if (!ok_or_report(st, (name + ": GPU call").c_str())) continue;
        if (!ok_or_report(mla_cuda_stream_synchronize(stream), (name + ": stream sync").c_str())) return;
        Results gpu;
        gpu.out = Buf(cs.dtype, p.out_elems);
        gpu.lse.assign(size_t(rows), 0.f);
        gpu.max_logit.assign(size_t(rows), 0.f);
        if (!dout.download(gpu.out.bytes.data(), gpu.out.nbytes()) || !dlse.download(gpu.lse.data(), rows * 4) ||
            !dmax.download(gpu.max_logit.data(), rows * 4))
            return;
        g_gpu_s += tgpu.s();
        const Outcome o = judge(p, gpu, ref_out, ref_lse, ref_max, with_max);
        // The CPU path's own result as a second reference (same rounding of q's dtype).
        std::vector<double> cpu_out(size_t(rows * p.d_v)), cpu_lse(static_cast<size_t>(rows)),
            cpu_max(static_cast<size_t>(rows));
        for (int64_t r = 0; r < rows; ++r) {
            for (int64_t c = 0; c < p.d_v; ++c) cpu_out[size_t(r * p.d_v + c)] = cpu.out.get(p.out_index(r) + c);
            cpu_lse[size_t(r)] = cpu.lse[size_t(p.lse_index(r))];
            cpu_max[size_t(r)] = cpu.max_logit[size_t(p.lse_index(r))];
        }
        const Outcome ov = judge(p, gpu, cpu_out, cpu_lse, cpu_max, with_max);
        bool gaps_ok = true;  // elements of out outside the logical tensor still poisoned
        std::vector<char> inside(size_t(p.out_elems), 0);
        for (int64_t r = 0; r < rows; ++r)
            for (int64_t c = 0; c < p.d_v; ++c) inside[size_t(p.out_index(r) + c)] = 1;
        for (int64_t i = 0; i < p.out_elems; ++i)
            if (!inside[size_t(i)] && !gpu.out.poisoned(i)) gaps_ok = false;
        const bool ok = o.ok(tol) && ov.ok(tol) && gaps_ok;
        check(ok, "%s: rel vs f64 %.3g, vs CPU %.3g (tol %.0e); lse err %.3g / %.3g; max err %.3g; "
              "finite %d, inf %d / %d, NaN rows %d / %d, gaps untouched %d", name.c_str(), o.rel, ov.rel, tol,
              o.lse_err, ov.lse_err, o.max_err, int(o.finite), int(o.inf_ok), int(ov.inf_ok),
              int(o.nan_rows_ok), int(ov.nan_rows_ok), int(gaps_ok));
        std::printf("  %-70s rel %.2e / %.2e  lse %.1e  %s\n", name.c_str(), o.rel, ov.rel,
                    std::max(o.lse_err, ov.lse_err), ok ? "ok" : "FAILED");
    }
}

std::vector<Case> make_cases() {
    std::vector<Case> v;
    auto add = [&](Case c) { v.push_back(c); };
    const char *kinds[] = {"bf16 rows", "V32", "MODEL1"};
    // Decode over each cache kind, h_q of every size, s_q 1..4, extra key sets.
    for (int kind : {MLA_CACHE_PLAIN, MLA_CACHE_V32, MLA_CACHE_MODEL1}) {
        const int64_t d_qk = kind == MLA_CACHE_MODEL1 ? 512 : 576;
        for (int64_t h_q : {128, 64, 16, 3, 1, 63}) {
            Case c;
            c.kind = kind;
            c.d_qk = d_qk;
            c.h_q = h_q;
            c.s_q = h_q == 128 ? 2 : h_q == 64 ? 4 : 1;
            c.b = h_q >= 64 ? 3 : 2;
            c.topk = h_q == 128 ? 200 : 100;  // not multiples of 64
            c.block_size = h_q == 3 ? 1 : h_q == 16 ? 2 : h_q == 63 ? 61 : 64;
            c.lengths = h_q != 64;
            c.sink = h_q == 16 ? kMixedSink : h_q == 128 ? kFiniteSink : kNoSink;
            c.rot = h_q == 64 ? kRotFreq : h_q == 3 ? kRotTable : kNoRot;
            c.name = std::string("decode ") + kinds[kind] + " h_q " + std::to_string(h_q) + " s_q " +
                     std::to_string(c.s_q) + " topk " + std::to_string(c.topk) + " block " +
                     std::to_string(c.block_size);
            add(c);
        }
        Case e;
        e.kind = kind;
        e.d_qk = d_qk;
        e.extra = true;
        e.lengths = true;
        e.topk = 128;
        e.extra_topk = 70;
        e.extra_block_size = kind == MLA_CACHE_PLAIN ? 16 : 256;
        e.extra_slots = 600;
        e.sink = kFiniteSink;
        e.rot = kRotFreq;
        e.name = std::string("decode ") + kinds[kind] + " + extra set (block " +
                 std::to_string(e.extra_block_size) + "), lengths, sink, VVPA";
        add(e);
        Case z = e;
        z.all_invalid = true;
        z.name = std::string("decode ") + kinds[kind] + ": every entry invalid";
        add(z);
    }
    Case f;  // float16 queries over bf16-free paths
    f.dtype = MLA_FLOAT16;
    f.name = "decode f16 rows h_q 128 s_q 2";
    f.s_q = 2;
    add(f);
    Case f8 = f;
    f8.kind = MLA_CACHE_V32;
    f8.name = "decode f16 queries, V32 cache";
    add(f8);
    Case f32;
    f32.dtype = MLA_FLOAT32;
    f32.h_q = 16;
    f32.topk = 90;
    f32.name = "decode f32 rows (CUDA cores)";
    add(f32);
    Case small;
    small.d_qk = 80;
    small.d_v = 64;
    small.h_q = 8;
    small.topk = 40;
    small.name = "decode bf16 d 80/64 (CUDA cores)";
    add(small);
    Case big;
    big.b = 1;
    big.s_q = 1;
    big.topk = 2048 + 37;
    big.slots = 5000;
    big.lengths = false;
    big.name = "decode bf16 topk 2085 (split over many CTAs)";
    add(big);
    Case amp;
    amp.amp = 30.0;
    amp.kind = MLA_CACHE_V32;
    amp.name = "decode V32 large scores (q amplitude 30)";
    add(amp);

    // Prefill forward: d 576 / 512, h_kv 1 and 2, lengths, sink, VVPA, max logit.
    for (int64_t d_qk : {576, 512}) {
        Case c;
        c.prefill = true;
        c.d_qk = d_qk;
        c.b = 40;  // queries
        c.slots = 300;
        c.topk = 150;
        c.lengths = true;
        c.sink = kMixedSink;
        c.rot = d_qk == 512 ? kRotFreq : kNoRot;
        c.name = "prefill d " + std::to_string(d_qk) + "/512 h_q 128, lengths, sinks";
        add(c);
    }
    Case g;
    g.prefill = true;
    g.h_kv = 2;
    g.h_q = 128;
    g.b = 20;
    g.slots = 200;
    g.topk = 64;
    g.name = "prefill h_kv 2 (groups of 64 heads)";
    add(g);
    Case h64;
    h64.prefill = true;
    h64.h_q = 64;
    h64.d_qk = 512;
    h64.b = 33;
    h64.topk = 300;
    h64.slots = 400;
    h64.rot = kRotTable;
    h64.name = "prefill h_q 64, d 512, VVPA from tables";
    add(h64);
    Case pz;
    pz.prefill = true;
    pz.b = 10;
    pz.all_invalid = true;
    pz.name = "prefill every entry invalid";
    add(pz);
    return v;
}

// Refusals: a top-k no index buffer can hold (CPU and GPU alike), plain host memory, a
// forced implementation that refuses, on device pointers only.
void test_refusals(void *stream) {
    DevBuf dq, dk, di;
    if (!dq.alloc(1 << 20) || !dk.alloc(1 << 20) || !di.alloc(1 << 16)) return;
    mla_sparse_decode_params p;
    std::memset(&p, 0, sizeof p);
    p.dtype = MLA_BFLOAT16;
    p.b = 1;
    p.s_q = 1;
    p.h_q = 16;
    p.d_qk = 576;
    p.d_v = 512;
    p.q = dq.ptr;
    p.q_stride[0] = p.q_stride[1] = 16 * 576;
    p.q_stride[2] = 576;
    p.keys.cache.kind = MLA_CACHE_PLAIN;
    p.keys.cache.dtype = MLA_BFLOAT16;
    p.keys.cache.data = dk.ptr;
    p.keys.cache.num_blocks = 4;
    p.keys.cache.block_size = 64;
    p.keys.cache.h_kv = 1;
    p.keys.cache.token_stride = 576;
    p.keys.cache.head_stride = 576;
    p.keys.cache.block_stride = 64 * 576;
    p.keys.indices = static_cast<const int32_t *>(di.ptr);
    p.keys.topk = int64_t(1) << 40;
    p.keys.indices_stride[0] = p.keys.indices_stride[1] = 64;
    p.softmax_scale = 0.04f;
    p.out = dq.ptr;
    p.out_stride[0] = p.out_stride[1] = 16 * 512;
    p.out_stride[2] = 512;
    p.lse = static_cast<float *>(dk.ptr);
    for (int dev : {0, -1}) {
        p.exec.device = dev;
        p.exec.stream = dev >= 0 ? stream : nullptr;
        const mla_status st = mla_sparse_decode(&p);
        check(st == MLA_ERR_INVALID_ARGUMENT && std::strstr(mla_last_error(), "keys.topk"),
              "topk 2^40 on device %d: expected MLA_ERR_INVALID_ARGUMENT naming keys.topk, got %d (%s)", dev, st,
              mla_last_error());
    }
    p.keys.topk = 64;
    p.exec.device = 0;
    p.exec.stream = stream;
    mla_plan_info info;
    mla_status st = mla_sparse_decode_plan(&p, &info);
    check(st == MLA_OK && std::strcmp(info.implementation, "sm90_sparse") == 0,
          "plan of a bf16 576/512 decode on device 0: expected sm90_sparse, got %d \"%s\" (%s)", st,
          info.implementation, info.refusals);
    static uint16_t host_q[16 * 576];
    p.q = host_q;
    std::vector<char> ws(1);
    DevBuf dws;
    const int64_t wsb = mla_sparse_decode_workspace_size(&p);
    if (!dws.alloc(wsb)) return;
    p.exec.workspace = dws.ptr;
    p.exec.workspace_bytes = wsb;
    st = mla_sparse_decode(&p);
    check(st == MLA_ERR_INVALID_ARGUMENT && std::strstr(mla_last_error(), "host memory"),
          "q in plain host memory: expected MLA_ERR_INVALID_ARGUMENT, got %d (%s)", st, mla_last_error());
    p.q = dq.ptr;
    p.dtype = MLA_FLOAT32;
    p.keys.cache.dtype = MLA_FLOAT32;
    p.exec.implementation = "sm90_sparse";
    st = mla_sparse_decode(&p);
    check(st == MLA_ERR_UNSUPPORTED && std::strstr(mla_last_error(), "float32"),
          "float32 call forced to sm90_sparse: expected MLA_ERR_UNSUPPORTED naming float32, got %d (%s)", st,
          mla_last_error());
    p.exec.workspace_bytes = wsb - 1;
    p.dtype = MLA_BFLOAT16;
    p.keys.cache.dtype = MLA_BFLOAT16;
    p.exec.implementation = nullptr;
    st = mla_sparse_decode(&p);
    check(st == MLA_ERR_INVALID_ARGUMENT && std::strstr(mla_last_error(), "workspace"),
          "workspace one byte short: expected MLA_ERR_INVALID_ARGUMENT, got %d (%s)", st, mla_last_error());
}

}  // namespace

int main() {
    const std::vector<Case> cases = make_cases();
    if (mla_cuda_device_count() == 0) {
        const char *ref = std::getenv("MLA4J_GPU_TEST_REFERENCE");
        if (ref && std::strcmp(ref, "1") == 0) {
            g_reference_only = true;
            uint64_t seed = 7000;
            for (const Case &c : cases) run_case(c, seed++, nullptr);
            std::printf("%d passed, %d failed (CPU path vs reference only)\n", g_passed, g_failed);
            return g_failed ? 1 : 0;
        }
        return mla_test::skip_without_device("test_gpu_sparse", int(cases.size()) + 6);
    }
    void *stream = nullptr;
    if (!mla_test::open_device("test_gpu_sparse", &stream)) return 1;
    const char *only = std::getenv("MLA4J_TEST_FILTER");  // substring of case names (sanitizer runs)
    Timer total;
    uint64_t seed = 7000;
    for (const Case &c : cases) {
        ++seed;
        if (only && c.name.find(only) == std::string::npos) continue;
        run_case(c, seed, stream);
    }
    test_refusals(stream);
    mla_cuda_stream_destroy(stream);
    std::printf("time: %.1f s (f64 reference %.1f s, CPU path %.1f s, GPU incl. copies %.1f s)\n", total.s(),
                g_ref_s, g_cpu_s, g_gpu_s);
    std::printf("%d passed, %d failed\n", g_passed, g_failed);
    return g_failed ? 1 : 0;
}
