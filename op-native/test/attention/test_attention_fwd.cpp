// Native test of the attention forward ops (ops.md sections 1-4): mla_dense_decode,
// mla_sparse_decode, mla_sparse_prefill_fwd and mla_attention_fwd against a float64 reference
// written here from the contract alone: key lists are built per query row, scores are
// materialised, the softmax takes two passes; element types and FP8 cache bytes are encoded
// and decoded by the tests' own code (support/ and this file). Outputs are poisoned with NaN
// before each call and padded with gaps that must stay untouched.
#include <mla/mla.h>
#include "test_buffers.h"

#include <algorithm>
#include <cmath>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include <unistd.h>

namespace {

using namespace mla_test;

const double kNaN = std::numeric_limits<double>::quiet_NaN();

// A tensor [n0, n1, n2, d] with padded strides so that gaps exist between rows, heads and
// tokens; elements outside the logical tensor stay poisoned.
struct Tensor {
    Buf buf;
    int64_t n0 = 0, n1 = 0, n2 = 0, d = 0;
    int64_t st[3] = {0, 0, 0};

    Tensor() = default;
    Tensor(int dt, int64_t a, int64_t b, int64_t c, int64_t dd, int64_t pad)
        : n0(a), n1(b), n2(c), d(dd) {
        st[2] = d + pad;
        st[1] = n2 * st[2] + pad;
        st[0] = n1 * st[1] + pad;
        buf = Buf(dt, n0 * st[0] + pad);
    }
    int64_t at(int64_t i0, int64_t i1, int64_t i2) const {
        return i0 * st[0] + i1 * st[1] + i2 * st[2];
    }
    void fill(std::mt19937_64 &rng, double amp) {
        std::uniform_real_distribution<double> u(-amp, amp);
        for (int64_t a = 0; a < n0; ++a)
            for (int64_t b = 0; b < n1; ++b)
                for (int64_t c = 0; c < n2; ++c)
                    for (int64_t e = 0; e < d; ++e) buf.set(at(a, b, c) + e, u(rng));
    }
    std::vector<double> row(int64_t i0, int64_t i1, int64_t i2) const {
        std::vector<double> r(static_cast<size_t>(d));
        for (int64_t e = 0; e < d; ++e) r[size_t(e)] = buf.get(at(i0, i1, i2) + e);
        return r;
    }
    // True when every element outside the logical tensor still holds the poison.
    bool gaps_untouched() const {
        std::vector<char> inside(size_t(buf.size()), 0);
        for (int64_t a = 0; a < n0; ++a)
            for (int64_t b = 0; b < n1; ++b)
                for (int64_t c = 0; c < n2; ++c)
                    for (int64_t e = 0; e < d; ++e) inside[size_t(at(a, b, c) + e)] = 1;
        for (int64_t i = 0; i < buf.size(); ++i)
            if (!inside[size_t(i)] && !buf.poisoned(i)) return false;
        return true;
    }
};

// ---- the reference ------------------------------------------------------------------------------

struct RefRow {
    std::vector<double> out;
    double lse = kInf, max_logit = -kInf;
};

// Plain RoPE rotation by R(-position) of the dims [start, start + rope_dim) of `row`.
struct Rotation {
    bool on = false;
    int rope_dim = 0, style = MLA_ROPE_INTERLEAVED;
    double theta = 10000.0;
    std::vector<float> cos_table, sin_table;  // used when not empty
    std::vector<int32_t> positions;

    void apply(std::vector<double> &row, int64_t index) const {
        if (!on) return;
        int64_t d = int64_t(row.size()), start = d - rope_dim, half = rope_dim / 2;
        int64_t pos = positions[size_t(index)];
        for (int64_t i = 0; i < half; ++i) {
            double c, s;
            if (!cos_table.empty()) {
                c = cos_table[size_t(pos * half + i)];
                s = sin_table[size_t(pos * half + i)];
            } else {
                double angle = double(pos) * std::pow(theta, -2.0 * double(i) / rope_dim);
                c = std::cos(angle);
                s = std::sin(angle);
            }
            int64_t a = style == MLA_ROPE_INTERLEAVED ? start + 2 * i : start + i;
            int64_t b = style == MLA_ROPE_INTERLEAVED ? a + 1 : start + i + half;
            double x = row[size_t(a)], y = row[size_t(b)];
            row[size_t(a)] = x * c + y * s;  // rotation by -angle
            row[size_t(b)] = -x * s + y * c;
        }
    }
    mla_out_rotation desc() const {
        mla_out_rotation r;
        std::memset(&r, 0, sizeof r);
        if (!on) return r;
        r.positions = positions.data();
        r.rope.rope_dim = rope_dim;
        r.rope.rope_offset = -1;
        r.rope.style = style;
        r.rope.theta = theta;
        if (!cos_table.empty()) {
            r.rope.cos_table = cos_table.data();
            r.rope.sin_table = sin_table.data();
            r.rope.table_len = int64_t(cos_table.size()) / (rope_dim / 2);
        }
        return r;
    }
};

Rotation make_rotation(std::mt19937_64 &rng, int64_t rows, int rope_dim, int style, bool table) {
    Rotation r;
    r.on = true;
    r.rope_dim = rope_dim;
    r.style = style;
    int64_t max_pos = 300;
    std::uniform_int_distribution<int32_t> u(0, int32_t(max_pos - 1));
    for (int64_t i = 0; i < rows; ++i) r.positions.push_back(u(rng));
    if (table) {
        std::uniform_real_distribution<double> ang(-3.2, 3.2);
        for (int64_t p = 0; p < max_pos; ++p)
            for (int i = 0; i < rope_dim / 2; ++i) {
                double a = ang(rng);
                r.cos_table.push_back(float(std::cos(a)));
                r.sin_table.push_back(float(std::sin(a)));
            }
    }
    return r;
}

// One query row: scores of every listed key materialised, then a two-pass softmax.
RefRow attend(const std::vector<double> &q, const std::vector<const double *> &keys,
              const std::vector<const double *> &values, int64_t d_v, double scale,
              const float *sink) {
    RefRow r;
    r.out.assign(size_t(d_v), 0.0);
    if (keys.empty()) return r;
    std::vector<double> s(keys.size());
    for (size_t j = 0; j < keys.size(); ++j) {
        double dot = 0;
        for (size_t c = 0; c < q.size(); ++c) dot += q[c] * keys[j][c];
        s[j] = scale * dot;
    }
    double mx = *std::max_element(s.begin(), s.end());
    double sum = 0;
    for (double x : s) sum += std::exp(x - mx);
    for (size_t j = 0; j < keys.size(); ++j) {
        double w = std::exp(s[j] - mx) / sum;
        for (int64_t c = 0; c < d_v; ++c) r.out[size_t(c)] += w * values[j][c];
    }
    r.lse = mx + std::log(sum);
    r.max_logit = mx;
    if (sink) {
        double f = 1.0 / (1.0 + std::exp(double(*sink) - r.lse));
        for (double &x : r.out) x *= f;
    }
    return r;
}

// ---- comparing --------------------------------------------------------------------------------

double out_tolerance(int dt) {
    return dt == MLA_FLOAT64 ? 1e-10 : dt == MLA_FLOAT32 ? 1e-5 : 1e-2;
}

// Accumulates one case's results and judges them at the end.
struct Judge {
    std::string name;
    int dt;
    double err2 = 0, ref2 = 0, got2 = 0, worst_lse = 0;
    bool nonfinite = false, lse_bad = false;
    std::string lse_note;

    Judge(std::string n, int t) : name(std::move(n)), dt(t) {}
    void row(const std::vector<double> &got, const std::vector<double> &ref) {
        for (size_t i = 0; i < ref.size(); ++i) {
            if (!std::isfinite(got[i])) nonfinite = true;
            err2 += (got[i] - ref[i]) * (got[i] - ref[i]);
            ref2 += ref[i] * ref[i];
            got2 += got[i] * got[i];
        }
    }
    // An lse (or, with sign -1, a max_logit) value.
    void scalar(double got, double ref, const char *what) {
        bool ok;
        if (std::isinf(ref))
            ok = got == ref;
        else
            ok = std::isfinite(got) && std::fabs(got - ref) <= 1e-3;
        if (!ok && !lse_bad) {
            char buf[160];
            std::snprintf(buf, sizeof buf, "%s got %g want %g", what, got, ref);
            lse_note = buf;
        }
        if (!ok) lse_bad = true;
        if (std::isfinite(ref) && std::isfinite(got))
            worst_lse = std::max(worst_lse, std::fabs(got - ref));
    }
    void finish(bool gaps_ok) {
        double rel = ref2 > 0 ? std::sqrt(err2 / ref2) : std::sqrt(got2);
        bool ok = !nonfinite && rel < out_tolerance(dt) && !lse_bad && gaps_ok;
        check(ok, "%s [%s]: rel err %.3g (tol %.1g)%s%s%s%s", name.c_str(), dt_name(dt), rel,
               out_tolerance(dt), nonfinite ? ", non-finite output" : "",
               lse_bad ? ", " : "", lse_note.c_str(), gaps_ok ? "" : ", wrote outside outputs");
    }
};

std::vector<double> read_out(const Tensor &t, int64_t i0, int64_t i1, int64_t i2) {
    return t.row(i0, i1, i2);
}

// Float32 lse buffer poisoned with NaN.
std::vector<float> poisoned_floats(int64_t n) {
    return std::vector<float>(size_t(std::max<int64_t>(n, 1)),
                              std::numeric_limits<float>::quiet_NaN());
}

std::vector<float> make_sinks(std::mt19937_64 &rng, int64_t h_q, int mode) {
    // mode 1: finite values; mode 2: a mix of finite, +inf and -inf.
    std::vector<float> s(static_cast<size_t>(h_q));
    std::uniform_real_distribution<double> u(-2.0, 3.0);
    for (int64_t h = 0; h < h_q; ++h) {
        s[size_t(h)] = float(u(rng));
        if (mode == 2 && h % 3 == 1) s[size_t(h)] = std::numeric_limits<float>::infinity();
        if (mode == 2 && h % 3 == 2) s[size_t(h)] = -std::numeric_limits<float>::infinity();
    }
    return s;
}

mla_exec cpu_exec(int threads) {
    mla_exec e;
    std::memset(&e, 0, sizeof e);
    e.device = -1;
    e.num_threads = threads;
    return e;
}

// ---- paged caches (test-side encoder and decoder) -----------------------------------------------

// A paged cache of num_blocks x block_size tokens, h_kv heads of d_qk values, in one of the
// three layouts. `values` holds the dequantised value of every written token (NaN elsewhere)
// for the reference; unwritten tokens are NaN (or NaN-producing bytes) in the cache itself.
struct PagedCache {
    int kind = MLA_CACHE_PLAIN;
    int dtype = MLA_FLOAT32;  // PLAIN
    int64_t num_blocks = 0, block_size = 1, h_kv = 1, d_qk = 0;
    int d_nope = 0, d_rope = 0, tile = 0;  // FP8 kinds (resolved)
    int64_t row_bytes = 0, scale_row_bytes = 0, block_bytes = 0;
    int64_t st_block = 0, st_token = 0, st_head = 0;  // PLAIN strides
    Buf plain;
    std::vector<uint8_t> bytes;
    std::vector<double> values;  // [num_blocks, block_size, h_kv, d_qk]

    const double *value(int64_t block, int64_t off, int64_t head) const {
        return values.data() + ((block * block_size + off) * h_kv + head) * d_qk;
    }

    mla_cache desc() const {
        mla_cache c;
        std::memset(&c, 0, sizeof c);
        c.kind = kind;
        c.dtype = dtype;
        c.num_blocks = num_blocks;
        c.block_size = block_size;
        c.h_kv = h_kv;
        if (kind == MLA_CACHE_PLAIN) {
            c.data = plain.data();
            c.block_stride = st_block;
            c.token_stride = st_token;
            c.head_stride = st_head;
        } else {
            c.data = bytes.data();
            c.d_nope = d_nope;
            c.d_rope = d_rope;
            c.tile = tile;
        }
        return c;
    }

    // Stores a token: quantises for the FP8 kinds (power-of-two scale per tile) and records
    // exactly what a correct reader must see.
    void write(int64_t block, int64_t off, int64_t head, const std::vector<double> &x) {
        double *ref = values.data() + ((block * block_size + off) * h_kv + head) * d_qk;
        if (kind == MLA_CACHE_PLAIN) {
            int64_t base = block * st_block + off * st_token + head * st_head;
            for (int64_t i = 0; i < d_qk; ++i) {
                plain.set(base + i, x[size_t(i)]);
                ref[i] = plain.get(base + i);
            }
            return;
        }
        uint8_t *row, *scales, *rope;
        if (kind == MLA_CACHE_V32) {
            row = bytes.data() + (block * block_size + off) * row_bytes;
            scales = row + d_nope;
            rope = row + d_nope + 4 * (d_nope / tile);
        } else {
            uint8_t *blk = bytes.data() + block * block_bytes;
            row = blk + off * row_bytes;
            scales = blk + block_size * row_bytes + off * scale_row_bytes;
            rope = row + d_nope;
        }
        for (int t = 0; t < d_nope / tile; ++t) {
            double amax = 0;
            for (int i = t * tile; i < (t + 1) * tile; ++i)
                amax = std::max(amax, std::fabs(x[size_t(i)]));
            int e = int(std::ceil(std::log2(std::max(amax / 448.0, 1e-4))));
            double scale = std::ldexp(1.0, e);
            if (kind == MLA_CACHE_V32) {
                float f = float(scale);
                std::memcpy(scales + 4 * t, &f, 4);
            } else {
                scales[t] = uint8_t(e + 127);
            }
            for (int i = t * tile; i < (t + 1) * tile; ++i) {
                row[i] = fp8_bits(x[size_t(i)] / scale);
                ref[i] = fp8_value(row[i]) * scale;
            }
        }
        for (int i = 0; i < d_rope; ++i) {
            uint16_t h = bf16_bits(x[size_t(d_nope + i)]);
            std::memcpy(rope + 2 * i, &h, 2);
            ref[d_nope + i] = bf16_value(h);
        }
    }
};

// d_nope == 0 selects the layout's default dims.
PagedCache make_cache(int kind, int dtype, int64_t num_blocks, int64_t block_size, int64_t h_kv,
                      int64_t d_qk, int d_nope, int d_rope, int tile) {
    PagedCache c;
    c.kind = kind;
    c.dtype = dtype;
    c.num_blocks = num_blocks;
    c.block_size = block_size;
    c.h_kv = kind == MLA_CACHE_PLAIN ? h_kv : 1;
    c.d_qk = d_qk;
    c.values.assign(size_t(num_blocks * block_size * c.h_kv * d_qk), kNaN);
    if (kind == MLA_CACHE_PLAIN) {
        c.st_head = d_qk + 3;
        c.st_token = c.h_kv * c.st_head + 1;
        c.st_block = block_size * c.st_token + 5;
        c.plain = Buf(dtype, num_blocks * c.st_block + 1);  // NaN everywhere
        return c;
    }
    if (d_nope == 0) {
        d_nope = kind == MLA_CACHE_V32 ? 512 : 448;
        d_rope = 64;
        tile = kind == MLA_CACHE_V32 ? 128 : 64;
    }
    c.d_nope = d_nope;
    c.d_rope = d_rope;
    c.tile = tile;
    int n_scales = d_nope / tile;
    if (kind == MLA_CACHE_V32) {
        c.row_bytes = d_nope + 4 * n_scales + 2 * d_rope;
        c.block_bytes = block_size * c.row_bytes;
    } else {
        c.row_bytes = d_nope + 2 * d_rope;
        c.scale_row_bytes = (n_scales + 7) / 8 * 8;
        int64_t raw = block_size * (c.row_bytes + c.scale_row_bytes);
        c.block_bytes = (raw + c.row_bytes - 1) / c.row_bytes * c.row_bytes;
    }
    // 0xff: NaN fp8 values, NaN float32 scales, NaN bf16; unwritten rows must never be read.
    c.bytes.assign(size_t(std::max<int64_t>(num_blocks * c.block_bytes, 1)), 0xff);
    return c;
}

std::vector<double> random_row(std::mt19937_64 &rng, int64_t n, double amp) {
    std::uniform_real_distribution<double> u(-amp, amp);
    std::vector<double> r(static_cast<size_t>(n));
    for (auto &x : r) x = u(rng);
    return r;
}

// ---- 1. dense decode --------------------------------------------------------------------------

struct DenseDecodeCase {
    std::string name;
    int dtype = MLA_FLOAT32;
    int64_t b = 2, s_q = 1, h_q = 16, h_kv = 1, d_qk = 64, d_v = 48, block_size = 16;
    int cache_kind = MLA_CACHE_PLAIN, cache_dtype = MLA_FLOAT32;
    int d_nope = 0, d_rope = 0, tile = 0;
    std::vector<int> seqlens;
    bool causal = false;
    int sink = 0;
    bool rotate = false, table = false;
    int threads = 0;
    double scale_mul = 1.0;
};

void run_dense_decode(const DenseDecodeCase &cs, uint64_t seed) {
    std::mt19937_64 rng(seed);
    const int64_t b = cs.b, s_q = cs.s_q, h_q = cs.h_q, d_qk = cs.d_qk, d_v = cs.d_v;
    const int64_t bs = cs.block_size;
    int64_t max_blocks = 1, total_blocks = 0;
    for (int len : cs.seqlens) {
        int64_t used = (len + bs - 1) / bs;
        max_blocks = std::max(max_blocks, used + 1);
        total_blocks += used;
    }
    const int64_t num_blocks = total_blocks + 3;  // spare blocks stay NaN
    PagedCache cache = make_cache(cs.cache_kind, cs.cache_dtype, num_blocks, bs, cs.h_kv, d_qk,
                                  cs.d_nope, cs.d_rope, cs.tile);
    const int64_t h_kv = cache.h_kv;

    // Blocks handed out in a shuffled order; entries past a request's last block are garbage.
    std::vector<int32_t> order(static_cast<size_t>(num_blocks));
    for (int64_t i = 0; i < num_blocks; ++i) order[size_t(i)] = int32_t(i);
    std::shuffle(order.begin(), order.end(), rng);
    const int64_t table_stride = max_blocks + 2;
    std::vector<int32_t> table(size_t(std::max<int64_t>(b * table_stride, 1)), -7);
    size_t next = 0;
    for (int64_t i = 0; i < b; ++i) {
        int64_t used = (cs.seqlens[size_t(i)] + bs - 1) / bs;
        for (int64_t k = 0; k < used; ++k) table[size_t(i * table_stride + k)] = order[next++];
        for (int64_t k = used; k < max_blocks; ++k)
            table[size_t(i * table_stride + k)] = k % 2 ? int32_t(num_blocks + 100) : -1;
        for (int64_t t = 0; t < cs.seqlens[size_t(i)]; ++t)
            for (int64_t h = 0; h < h_kv; ++h)
                cache.write(table[size_t(i * table_stride + t / bs)], t % bs, h,
                            random_row(rng, d_qk, 1.0));
    }

    Tensor q(cs.dtype, b, s_q, h_q, d_qk, 3);
    q.fill(rng, 1.0);
    Tensor out(cs.dtype, b, s_q, h_q, d_v, 2);
    std::vector<float> lse = poisoned_floats(b * h_q * s_q);
    std::vector<float> sink = make_sinks(rng, h_q, cs.sink);
    Rotation rot;
    if (cs.rotate) rot = make_rotation(rng, b * s_q, d_v >= 64 ? 64 : 16, int(seed % 2), cs.table);
    std::vector<int32_t> seqlens(cs.seqlens.begin(), cs.seqlens.end());

    mla_dense_decode_params p;
    std::memset(&p, 0, sizeof p);
    p.dtype = cs.dtype;
    p.b = b;
    p.s_q = s_q;
    p.h_q = h_q;
    p.d_qk = d_qk;
    p.d_v = d_v;
    p.q = q.buf.data();
    std::memcpy(p.q_stride, q.st, sizeof p.q_stride);
    p.cache = cache.desc();
    p.block_table = table.data();
    p.max_blocks_per_seq = max_blocks;
    p.block_table_stride = table_stride;
    p.cache_seqlens = seqlens.data();
    p.softmax_scale = float(cs.scale_mul / std::sqrt(double(d_qk)));
    p.causal = cs.causal;
    p.sink = cs.sink ? sink.data() : nullptr;
    p.out_rotation = rot.desc();
    p.out = out.buf.data();
    std::memcpy(p.out_stride, out.st, sizeof p.out_stride);
    p.lse = lse.data();
    p.exec = cpu_exec(cs.threads);
    mla_status st = mla_dense_decode(&p);
    if (st != MLA_OK) {
        check(false, "dense_decode %s: status %d: %s", cs.name.c_str(), st, mla_last_error());
        return;
    }

    Judge judge("dense_decode " + cs.name, cs.dtype);
    const int64_t group = h_q / h_kv;
    for (int64_t i = 0; i < b; ++i) {
        const int64_t len = cs.seqlens[size_t(i)];
        for (int64_t j = 0; j < s_q; ++j)
            for (int64_t h = 0; h < h_q; ++h) {
                std::vector<const double *> keys;
                for (int64_t t = 0; t < len; ++t) {
                    if (cs.causal && t > len - s_q + j) continue;
                    int32_t block = table[size_t(i * table_stride + t / bs)];
                    keys.push_back(cache.value(block, t % bs, h / group));
                }
                RefRow r = attend(q.row(i, j, h), keys, keys, d_v, double(p.softmax_scale),
                                  cs.sink ? &sink[size_t(h)] : nullptr);
                rot.apply(r.out, i * s_q + j);
                judge.row(read_out(out, i, j, h), r.out);
                judge.scalar(lse[size_t((i * h_q + h) * s_q + j)], r.lse, "lse");
            }
    }
    judge.finish(out.gaps_untouched());
}

void test_dense_decode() {
    int before = g_failed;
    int n = 0;
    uint64_t seed = 100;
    // Grouped heads, block sizes, s_q, causal, dtypes.
    const int64_t hqs[] = {1, 3, 16, 64};
    const int64_t bss[] = {1, 2, 61, 64};
    const int dts[] = {MLA_FLOAT32, MLA_BFLOAT16, MLA_FLOAT16, MLA_FLOAT64};
    for (int k = 0; k < 8; ++k) {
        DenseDecodeCase c;
        c.h_q = hqs[k % 4];
        c.h_kv = c.h_q == 16 ? 4 : c.h_q == 3 ? 3 : 1;
        c.block_size = bss[(k + 1) % 4];
        c.dtype = dts[k % 4];
        c.cache_dtype = dts[(k + 1) % 4];
        c.s_q = 1 + (k % 3 == 2 ? 3 : k % 3);  // 1, 2, 4
        c.causal = k % 2 == 0;
        c.seqlens = {int(37 + 13 * k), 0, int(c.s_q) - 1, 130};
        c.b = int64_t(c.seqlens.size());
        c.sink = k % 3;
        c.threads = k % 3 == 0 ? 1 : 0;
        c.name = "h_q " + std::to_string(c.h_q) + "/h_kv " + std::to_string(c.h_kv) + " bs " +
                 std::to_string(c.block_size) + " s_q " + std::to_string(c.s_q) +
                 (c.causal ? " causal" : "") + " cache " + dt_name(c.cache_dtype);
        run_dense_decode(c, seed++);
        ++n;
    }
    // Absorbed MLA shape (576 / 512) over FP8 caches, V32 and MODEL1, with VVPA for MODEL1.
    {
        DenseDecodeCase c;
        c.name = "V32 576/512 s_q 2 causal";
        c.cache_kind = MLA_CACHE_V32;
        c.d_qk = 576;
        c.d_v = 512;
        c.h_q = 16;
        c.s_q = 2;
        c.causal = true;
        c.block_size = 64;
        c.seqlens = {150, 1};
        c.sink = 2;
        run_dense_decode(c, seed++);
        ++n;
        c.name = "MODEL1 512/512 VVPA bf16";
        c.cache_kind = MLA_CACHE_MODEL1;
        c.dtype = MLA_BFLOAT16;
        c.d_qk = 512;
        c.d_v = 512;
        c.rotate = true;
        c.block_size = 61;
        run_dense_decode(c, seed++);
        ++n;
        c.name = "MODEL1 small 48+16 tile 16, rotation table";
        c.d_nope = 48;
        c.d_rope = 16;
        c.tile = 16;
        c.d_qk = 64;
        c.d_v = 64;
        c.table = true;
        c.dtype = MLA_FLOAT32;
        c.h_q = 3;
        c.s_q = 4;
        c.seqlens = {70, 3, 0};
        run_dense_decode(c, seed++);
        ++n;
        c.name = "V32 small 48+16 tile 16";
        c.cache_kind = MLA_CACHE_V32;
        c.d_v = 48;
        c.rotate = false;
        c.causal = false;
        run_dense_decode(c, seed++);
        ++n;
    }
    // Long sequences of one request and KV head: the key list is split across workers.
    {
        DenseDecodeCase c;
        c.name = "split keys, 1 request, 2000 tokens";
        c.b = 1;
        c.h_q = 16;
        c.seqlens = {2000};
        c.block_size = 64;
        c.sink = 1;
        c.scale_mul = 4.0;
        run_dense_decode(c, seed++);
        ++n;
        c.name = "split keys, causal s_q 4, f64";
        c.dtype = MLA_FLOAT64;
        c.cache_dtype = MLA_FLOAT64;
        c.s_q = 4;
        c.causal = true;
        c.threads = 2;
        c.seqlens = {1300};
        run_dense_decode(c, seed++);
        ++n;
    }
    // Every sequence empty.
    {
        DenseDecodeCase c;
        c.name = "all caches empty";
        c.seqlens = {0, 0, 0};
        c.b = 3;
        c.sink = 2;
        run_dense_decode(c, seed++);
        ++n;
    }
    std::printf("dense_decode: %d cases, %s\n", n, g_failed == before ? "ok" : "FAILED");
}

// ---- 2. sparse decode -------------------------------------------------------------------------

struct KeySetCase {
    int kind = MLA_CACHE_PLAIN, dtype = MLA_FLOAT32;
    int64_t num_blocks = 8, block_size = 16;
    int d_nope = 0, d_rope = 0, tile = 0;
    int64_t topk = 50;
    bool lengths = false;
    double invalid = 0.2;  // share of invalid entries
};

struct SparseDecodeCase {
    std::string name;
    int dtype = MLA_FLOAT32;
    int64_t b = 2, s_q = 1, h_q = 16, d_qk = 64, d_v = 48;
    KeySetCase keys, extra;
    bool has_extra = false;
    int sink = 0;
    bool rotate = false;
    int threads = 0;
};

// The indices of one key set [b, s_q, topk] with a padded stride; entries selected by at least
// one query are written in the cache, every other token is left NaN.
struct SparseSet {
    PagedCache cache;
    std::vector<int32_t> indices, lengths;
    int64_t st0 = 0, st1 = 0;
    mla_sparse_keys desc() const {
        mla_sparse_keys k;
        std::memset(&k, 0, sizeof k);
        k.cache = cache.desc();
        k.indices = indices.data();
        k.indices_stride[0] = st0;
        k.indices_stride[1] = st1;
        k.topk_length = lengths.empty() ? nullptr : lengths.data();
        return k;
    }
    int64_t count(int64_t i, int64_t topk) const {
        if (lengths.empty()) return topk;
        return std::min<int64_t>(std::max<int64_t>(lengths[size_t(i)], 0), topk);
    }
};

SparseSet make_sparse_set(std::mt19937_64 &rng, const KeySetCase &k, int64_t b, int64_t s_q,
                          int64_t d_qk) {
    SparseSet s;
    s.cache = make_cache(k.kind, k.dtype, k.num_blocks, k.block_size, 1, d_qk, k.d_nope, k.d_rope,
                         k.tile);
    const int64_t n_keys = k.num_blocks * k.block_size;
    s.st1 = k.topk + 3;
    s.st0 = s_q * s.st1 + 1;
    s.indices.assign(size_t(std::max<int64_t>(b * s.st0, 1)), 0);
    std::uniform_int_distribution<int64_t> pick(0, std::max<int64_t>(n_keys - 1, 0));
    std::uniform_real_distribution<double> u(0, 1);
    // Only a third of the tokens are ever selected (plus duplicates), so NaN tokens abound.
    std::vector<int32_t> pool;
    for (int64_t t = 0; t < n_keys; ++t)
        if (t % 3 == 0) pool.push_back(int32_t(t));
    for (int64_t i = 0; i < b; ++i)
        for (int64_t j = 0; j < s_q; ++j)
            for (int64_t e = 0; e < k.topk; ++e) {
                int32_t v;
                double r = u(rng);
                if (pool.empty() || r < k.invalid / 2)
                    v = -1 - int32_t(pick(rng) % 3);
                else if (r < k.invalid)
                    v = int32_t(n_keys + pick(rng) % 5);
                else
                    v = pool[size_t(pick(rng) % pool.size())];
                s.indices[size_t(i * s.st0 + j * s.st1 + e)] = v;
            }
    if (k.lengths) {
        std::uniform_int_distribution<int> len(-3, int(k.topk) + 5);
        for (int64_t i = 0; i < b; ++i) s.lengths.push_back(i == 0 ? 0 : len(rng));
    }
    for (int32_t t : pool)
        s.cache.write(t / k.block_size, t % k.block_size, 0, random_row(rng, d_qk, 1.0));
    return s;
}

void run_sparse_decode(const SparseDecodeCase &cs, uint64_t seed) {
    std::mt19937_64 rng(seed);
    const int64_t b = cs.b, s_q = cs.s_q, h_q = cs.h_q, d_qk = cs.d_qk, d_v = cs.d_v;
    SparseSet keys = make_sparse_set(rng, cs.keys, b, s_q, d_qk);
    SparseSet extra;
    if (cs.has_extra) extra = make_sparse_set(rng, cs.extra, b, s_q, d_qk);
    Tensor q(cs.dtype, b, s_q, h_q, d_qk, 1);
    q.fill(rng, 1.0);
    Tensor out(cs.dtype, b, s_q, h_q, d_v, 3);
    std::vector<float> lse = poisoned_floats(b * h_q * s_q);
    std::vector<float> sink = make_sinks(rng, h_q, cs.sink);
    Rotation rot;
    if (cs.rotate) rot = make_rotation(rng, b * s_q, 16, int(seed % 2), false);

    mla_sparse_decode_params p;
    std::memset(&p, 0, sizeof p);
    p.dtype = cs.dtype;
    p.b = b;
    p.s_q = s_q;
    p.h_q = h_q;
    p.d_qk = d_qk;
    p.d_v = d_v;
    p.q = q.buf.data();
    std::memcpy(p.q_stride, q.st, sizeof p.q_stride);
    p.keys = keys.desc();
    p.keys.topk = cs.keys.topk;
    if (cs.has_extra) {
        p.extra = extra.desc();
        p.extra.topk = cs.extra.topk;
    }
    p.softmax_scale = float(1.0 / std::sqrt(double(d_qk)));
    p.sink = cs.sink ? sink.data() : nullptr;
    p.out_rotation = rot.desc();
    p.out = out.buf.data();
    std::memcpy(p.out_stride, out.st, sizeof p.out_stride);
    p.lse = lse.data();
    p.exec = cpu_exec(cs.threads);
    mla_status st = mla_sparse_decode(&p);
    if (st != MLA_OK) {
        check(false, "sparse_decode %s: status %d: %s", cs.name.c_str(), st, mla_last_error());
        return;
    }

    Judge judge("sparse_decode " + cs.name, cs.dtype);
    auto gather = [&](const SparseSet &s, const KeySetCase &k, int64_t i, int64_t j,
                      std::vector<const double *> &list) {
        const int64_t n_keys = k.num_blocks * k.block_size;
        for (int64_t e = 0; e < s.count(i, k.topk); ++e) {
            int64_t idx = s.indices[size_t(i * s.st0 + j * s.st1 + e)];
            if (idx >= 0 && idx < n_keys)
                list.push_back(s.cache.value(idx / k.block_size, idx % k.block_size, 0));
        }
    };
    for (int64_t i = 0; i < b; ++i)
        for (int64_t j = 0; j < s_q; ++j) {
            std::vector<const double *> list;
            gather(keys, cs.keys, i, j, list);
            if (cs.has_extra) gather(extra, cs.extra, i, j, list);
            for (int64_t h = 0; h < h_q; ++h) {
                RefRow r = attend(q.row(i, j, h), list, list, d_v, double(p.softmax_scale),
                                  cs.sink ? &sink[size_t(h)] : nullptr);
                rot.apply(r.out, i * s_q + j);
                judge.row(read_out(out, i, j, h), r.out);
                judge.scalar(lse[size_t((i * h_q + h) * s_q + j)], r.lse, "lse");
            }
        }
    judge.finish(out.gaps_untouched());
}

void test_sparse_decode() {
    int before = g_failed;
    int n = 0;
    uint64_t seed = 200;
    {
        SparseDecodeCase c;
        c.name = "PLAIN bf16 cache, topk 50, h_q 16";
        c.keys.dtype = MLA_BFLOAT16;
        run_sparse_decode(c, seed++);
        ++n;
        c.name = "PLAIN f32 cache, h_q 1, s_q 4, topk_length, sink";
        c.h_q = 1;
        c.s_q = 4;
        c.keys.dtype = MLA_FLOAT32;
        c.keys.lengths = true;
        c.keys.block_size = 1;
        c.keys.num_blocks = 200;
        c.sink = 1;
        run_sparse_decode(c, seed++);
        ++n;
        c.name = "PLAIN f64, h_q 3, block 2, all indices invalid";
        c.dtype = MLA_FLOAT64;
        c.keys.dtype = MLA_FLOAT64;
        c.h_q = 3;
        c.s_q = 2;
        c.keys.block_size = 2;
        c.keys.invalid = 1.0;
        c.keys.lengths = false;
        c.sink = 2;
        run_sparse_decode(c, seed++);
        ++n;
    }
    // V32 (DeepSeek V3.2): d_qk 576, d_v 512.
    {
        SparseDecodeCase c;
        c.name = "V32 576/512, topk 100, h_q 16, s_q 2, block 64";
        c.keys.kind = MLA_CACHE_V32;
        c.keys.block_size = 64;
        c.keys.num_blocks = 6;
        c.keys.topk = 100;
        c.d_qk = 576;
        c.d_v = 512;
        c.s_q = 2;
        c.dtype = MLA_BFLOAT16;
        c.sink = 2;
        run_sparse_decode(c, seed++);
        ++n;
        c.name = "V32 small 48+16 tile 16, h_q 64, topk 130, topk_length";
        c.keys.d_nope = 48;
        c.keys.d_rope = 16;
        c.keys.tile = 16;
        c.keys.block_size = 61;
        c.keys.topk = 130;
        c.keys.lengths = true;
        c.d_qk = 64;
        c.d_v = 48;
        c.h_q = 64;
        c.dtype = MLA_FLOAT16;
        run_sparse_decode(c, seed++);
        ++n;
    }
    // MODEL1 (V4): window set plus extra compressed set in one softmax, VVPA.
    {
        SparseDecodeCase c;
        c.name = "MODEL1 512 + extra MODEL1, h_q 64, VVPA";
        c.keys.kind = MLA_CACHE_MODEL1;
        c.keys.block_size = 64;
        c.keys.num_blocks = 4;
        c.keys.topk = 64;
        c.extra = c.keys;
        c.extra.topk = 37;
        c.extra.lengths = true;
        c.extra.block_size = 2;
        c.extra.num_blocks = 90;
        c.has_extra = true;
        c.d_qk = 512;
        c.d_v = 512;
        c.h_q = 64;
        c.sink = 1;
        c.rotate = true;
        c.dtype = MLA_BFLOAT16;
        run_sparse_decode(c, seed++);
        ++n;
        c.name = "MODEL1 small 48+16 + extra PLAIN bf16, h_q 3, s_q 4";
        c.keys.d_nope = 48;
        c.keys.d_rope = 16;
        c.keys.tile = 16;
        c.keys.topk = 9;
        c.extra.kind = MLA_CACHE_PLAIN;
        c.extra.dtype = MLA_BFLOAT16;
        c.extra.topk = 70;
        c.d_qk = 64;
        c.d_v = 64;
        c.h_q = 3;
        c.s_q = 4;
        c.dtype = MLA_FLOAT32;
        c.sink = 2;
        run_sparse_decode(c, seed++);
        ++n;
        c.name = "MODEL1 small, extra with topk 0 and first set all invalid";
        c.keys.invalid = 1.0;
        c.extra.topk = 0;
        run_sparse_decode(c, seed++);
        ++n;
    }
    // One query with a long key list: split across workers.
    {
        SparseDecodeCase c;
        c.name = "split keys, b 1, topk 1500 + extra 700";
        c.b = 1;
        c.keys.topk = 1500;
        c.keys.num_blocks = 64;
        c.keys.block_size = 64;
        c.keys.invalid = 0.05;
        c.extra = c.keys;
        c.extra.topk = 700;
        c.has_extra = true;
        c.h_q = 16;
        c.sink = 1;
        run_sparse_decode(c, seed++);
        ++n;
    }
    std::printf("sparse_decode: %d cases, %s\n", n, g_failed == before ? "ok" : "FAILED");
}

// ---- 3. sparse prefill ------------------------------------------------------------------------

struct SparsePrefillCase {
    std::string name;
    int dtype = MLA_FLOAT32;
    int64_t s_q = 20, s_kv = 90, h_q = 16, h_kv = 1, d_qk = 64, d_v = 48, topk = 37;
    bool lengths = false, max_logit = true;
    double invalid = 0.2;
    int sink = 0;
    bool rotate = false;
    int threads = 0;
};

void run_sparse_prefill(const SparsePrefillCase &cs, uint64_t seed) {
    std::mt19937_64 rng(seed);
    const int64_t s_q = cs.s_q, s_kv = cs.s_kv, h_q = cs.h_q, h_kv = cs.h_kv, d_qk = cs.d_qk,
                  d_v = cs.d_v, topk = cs.topk;
    Tensor q(cs.dtype, 1, s_q, h_q, d_qk, 2);
    q.fill(rng, 1.0);
    Tensor kv(cs.dtype, 1, s_kv, h_kv, d_qk, 1);  // NaN until a row is selected
    const int64_t ist1 = topk + 1, ist0 = h_kv * ist1 + 2;
    std::vector<int32_t> indices(size_t(std::max<int64_t>(s_q * ist0, 1)), 0);
    std::vector<char> selected(static_cast<size_t>(s_kv), 0);
    std::uniform_real_distribution<double> u(0, 1);
    std::uniform_int_distribution<int64_t> pick(0, std::max<int64_t>(s_kv - 1, 0));
    std::vector<int32_t> lengths;
    if (cs.lengths) {
        std::uniform_int_distribution<int> len(-2, int(topk) + 3);
        for (int64_t i = 0; i < s_q; ++i) lengths.push_back(i == 1 ? 0 : len(rng));
    }
    for (int64_t i = 0; i < s_q; ++i)
        for (int64_t g = 0; g < h_kv; ++g)
            for (int64_t e = 0; e < topk; ++e) {
                double r = u(rng);
                int32_t v;
                if (s_kv == 0 || r < cs.invalid / 2)
                    v = -1;
                else if (r < cs.invalid)
                    v = int32_t(s_kv + pick(rng) % 4);
                else
                    v = int32_t(pick(rng) / 2 * 2);  // odd rows never selected: they stay NaN
                indices[size_t(i * ist0 + g * ist1 + e)] = v;
                if (v >= 0 && v < s_kv) selected[size_t(v)] = 1;
            }
    std::uniform_real_distribution<double> val(-1, 1);
    for (int64_t t = 0; t < s_kv; ++t)
        if (selected[size_t(t)])
            for (int64_t g = 0; g < h_kv; ++g)
                for (int64_t e = 0; e < d_qk; ++e) kv.buf.set(kv.at(0, t, g) + e, val(rng));

    Tensor out(cs.dtype, 1, s_q, h_q, d_v, 1);
    std::vector<float> lse = poisoned_floats(s_q * h_q), max_logit = poisoned_floats(s_q * h_q);
    std::vector<float> sink = make_sinks(rng, h_q, cs.sink);
    Rotation rot;
    if (cs.rotate) rot = make_rotation(rng, s_q, 16, int(seed % 2), true);

    mla_sparse_prefill_params p;
    std::memset(&p, 0, sizeof p);
    p.dtype = cs.dtype;
    p.s_q = s_q;
    p.s_kv = s_kv;
    p.h_q = h_q;
    p.h_kv = h_kv;
    p.d_qk = d_qk;
    p.d_v = d_v;
    p.topk = topk;
    p.q = q.buf.data();
    p.q_stride[0] = q.st[1];
    p.q_stride[1] = q.st[2];
    p.kv = kv.buf.data();
    p.kv_stride[0] = kv.st[1];
    p.kv_stride[1] = kv.st[2];
    p.indices = indices.data();
    p.indices_stride[0] = ist0;
    p.indices_stride[1] = ist1;
    p.topk_length = cs.lengths ? lengths.data() : nullptr;
    p.softmax_scale = float(1.0 / std::sqrt(double(d_qk)));
    p.sink = cs.sink ? sink.data() : nullptr;
    p.out_rotation = rot.desc();
    p.out = out.buf.data();
    p.out_stride[0] = out.st[1];
    p.out_stride[1] = out.st[2];
    p.max_logit = cs.max_logit ? max_logit.data() : nullptr;
    p.lse = lse.data();
    p.exec = cpu_exec(cs.threads);
    mla_status st = mla_sparse_prefill_fwd(&p);
    if (st != MLA_OK) {
        check(false, "sparse_prefill %s: status %d: %s", cs.name.c_str(), st, mla_last_error());
        return;
    }

    // The reference reads kv rows as stored.
    std::vector<std::vector<double>> rows(static_cast<size_t>(s_kv * h_kv));
    for (int64_t t = 0; t < s_kv; ++t)
        for (int64_t g = 0; g < h_kv; ++g) rows[size_t(t * h_kv + g)] = kv.row(0, t, g);
    Judge judge("sparse_prefill " + cs.name, cs.dtype);
    const int64_t group = h_q / h_kv;
    for (int64_t i = 0; i < s_q; ++i)
        for (int64_t h = 0; h < h_q; ++h) {
            const int64_t g = h / group;
            int64_t count = topk;
            if (cs.lengths)
                count = std::min<int64_t>(std::max<int64_t>(lengths[size_t(i)], 0), topk);
            std::vector<const double *> list;
            for (int64_t e = 0; e < count; ++e) {
                int64_t idx = indices[size_t(i * ist0 + g * ist1 + e)];
                if (idx >= 0 && idx < s_kv) list.push_back(rows[size_t(idx * h_kv + g)].data());
            }
            RefRow r = attend(q.row(0, i, h), list, list, d_v, double(p.softmax_scale),
                              cs.sink ? &sink[size_t(h)] : nullptr);
            rot.apply(r.out, i);
            judge.row(read_out(out, 0, i, h), r.out);
            judge.scalar(lse[size_t(i * h_q + h)], r.lse, "lse");
            if (cs.max_logit)
                judge.scalar(max_logit[size_t(i * h_q + h)], r.max_logit, "max_logit");
        }
    judge.finish(out.gaps_untouched());
}

void test_sparse_prefill() {
    int before = g_failed;
    int n = 0;
    uint64_t seed = 300;
    const int64_t hqs[] = {1, 3, 16, 64};
    const int dts[] = {MLA_FLOAT32, MLA_BFLOAT16, MLA_FLOAT16, MLA_FLOAT64};
    const int64_t topks[] = {1, 37, 100, 128};
    for (int k = 0; k < 8; ++k) {
        SparsePrefillCase c;
        c.h_q = hqs[k % 4];
        c.h_kv = c.h_q == 16 ? 2 : c.h_q == 3 && k >= 4 ? 3 : 1;
        c.dtype = dts[(k + k / 4) % 4];
        c.topk = topks[(k + 1) % 4];
        c.lengths = k % 2 == 1;
        c.max_logit = k != 5;
        c.sink = k % 3;
        c.rotate = k == 3 || k == 6;
        c.threads = k == 2 ? 1 : 0;
        c.name = "h_q " + std::to_string(c.h_q) + "/h_kv " + std::to_string(c.h_kv) + " topk " +
                 std::to_string(c.topk) + (c.lengths ? " topk_length" : "") +
                 (c.rotate ? " VVPA" : "");
        run_sparse_prefill(c, seed++);
        ++n;
    }
    {
        SparsePrefillCase c;
        c.name = "absorbed 576/512, h_q 16, topk 130";
        c.d_qk = 576;
        c.d_v = 512;
        c.topk = 130;
        c.s_q = 6;
        c.s_kv = 300;
        c.dtype = MLA_BFLOAT16;
        c.sink = 2;
        run_sparse_prefill(c, seed++);
        ++n;
        c.name = "all indices invalid";
        c.invalid = 1.0;
        c.d_qk = 64;
        c.d_v = 64;
        run_sparse_prefill(c, seed++);
        ++n;
        c.name = "s_kv 0";
        c.s_kv = 0;
        c.invalid = 0.2;
        run_sparse_prefill(c, seed++);
        ++n;
        c.name = "topk 0";
        c.s_kv = 50;
        c.topk = 0;
        run_sparse_prefill(c, seed++);
        ++n;
        c.name = "split keys, one query, topk 2048";
        c.s_q = 1;
        c.s_kv = 4000;
        c.topk = 2048;
        c.h_q = 16;
        c.invalid = 0.02;
        c.dtype = MLA_FLOAT32;
        run_sparse_prefill(c, seed++);
        ++n;
    }
    std::printf("sparse_prefill_fwd: %d cases, %s\n", n, g_failed == before ? "ok" : "FAILED");
}

// ---- 4. dense attention -------------------------------------------------------------------------

struct AttentionCase {
    std::string name;
    int dtype = MLA_FLOAT32;
    int64_t b = 2, s_q = 17, s_k = 17, h_q = 4, h_kv = 2, d_qk = 48, d_v = 32;
    std::vector<int> q_lens, k_lens;  // varlen when set
    bool causal = true, alias = false;
    int64_t window = 0;
    int sink = 0;
    bool rotate = false;
    int threads = 0;
};

void run_attention(const AttentionCase &cs, uint64_t seed) {
    std::mt19937_64 rng(seed);
    const bool varlen = !cs.q_lens.empty();
    const int64_t b = varlen ? int64_t(cs.q_lens.size()) : cs.b;
    const int64_t h_q = cs.h_q, h_kv = cs.h_kv, d_qk = cs.d_qk, d_v = cs.d_v;
    std::vector<int32_t> cu_q(size_t(b + 1), 0), cu_k(size_t(b + 1), 0);
    if (varlen)
        for (int64_t i = 0; i < b; ++i) {
            cu_q[size_t(i + 1)] = cu_q[size_t(i)] + cs.q_lens[size_t(i)];
            cu_k[size_t(i + 1)] = cu_k[size_t(i)] + cs.k_lens[size_t(i)];
        }
    // Batched tensors are [b, s, h, d]; packed ones [1, total, h, d] (the batch stride unused).
    const int64_t n0 = varlen ? 1 : b;
    const int64_t rows_q = varlen ? cu_q[size_t(b)] : cs.s_q;
    const int64_t rows_k = varlen ? cu_k[size_t(b)] : cs.s_k;
    Tensor q(cs.dtype, n0, rows_q, h_q, d_qk, 2);
    q.fill(rng, 1.0);
    Tensor k(cs.dtype, n0, rows_k, h_kv, d_qk, 1);
    k.fill(rng, 1.0);
    Tensor v;
    if (!cs.alias) {
        v = Tensor(cs.dtype, n0, rows_k, h_kv, d_v, 3);
        v.fill(rng, 1.0);
    }
    Tensor out(cs.dtype, n0, rows_q, h_q, d_v, 1);
    const int64_t total_rows = n0 * rows_q;
    std::vector<float> lse = poisoned_floats(total_rows * h_q);
    std::vector<float> sink = make_sinks(rng, h_q, cs.sink);
    Rotation rot;
    if (cs.rotate) rot = make_rotation(rng, total_rows, 16, int(seed % 2), false);

    mla_attention_params p;
    std::memset(&p, 0, sizeof p);
    p.dtype = cs.dtype;
    p.b = b;
    p.s_q = varlen ? 0 : cs.s_q;
    p.s_k = varlen ? 0 : cs.s_k;
    p.h_q = h_q;
    p.h_kv = h_kv;
    p.d_qk = d_qk;
    p.d_v = d_v;
    if (varlen) {
        p.cu_seqlens_q = cu_q.data();
        p.cu_seqlens_k = cu_k.data();
        p.total_q = rows_q;
        p.total_k = rows_k;
    }
    const Tensor &vt = cs.alias ? k : v;
    p.q = q.buf.data();
    std::memcpy(p.q_stride, q.st, sizeof p.q_stride);
    p.k = k.buf.data();
    std::memcpy(p.k_stride, k.st, sizeof p.k_stride);
    p.v = vt.buf.data();
    std::memcpy(p.v_stride, vt.st, sizeof p.v_stride);
    p.softmax_scale = float(1.0 / std::sqrt(double(d_qk)));
    p.causal = cs.causal;
    p.window = cs.window;
    p.sink = cs.sink ? sink.data() : nullptr;
    p.out_rotation = rot.desc();
    p.out = out.buf.data();
    std::memcpy(p.out_stride, out.st, sizeof p.out_stride);
    p.lse = lse.data();
    p.exec = cpu_exec(cs.threads);
    mla_status st = mla_attention_fwd(&p);
    if (st != MLA_OK) {
        check(false, "attention %s: status %d: %s", cs.name.c_str(), st, mla_last_error());
        return;
    }

    Judge judge("attention " + cs.name, cs.dtype);
    const int64_t group = h_q / h_kv;
    for (int64_t i = 0; i < b; ++i) {
        const int64_t sq = varlen ? cs.q_lens[size_t(i)] : cs.s_q;
        const int64_t sk = varlen ? cs.k_lens[size_t(i)] : cs.s_k;
        const int64_t b0 = varlen ? 0 : i, q0 = varlen ? cu_q[size_t(i)] : 0,
                      k0 = varlen ? cu_k[size_t(i)] : 0;
        for (int64_t h = 0; h < h_q; ++h) {
            const int64_t g = h / group;
            std::vector<std::vector<double>> krows, vrows;
            for (int64_t j = 0; j < sk; ++j) {
                krows.push_back(k.row(b0, k0 + j, g));
                std::vector<double> vr = vt.row(b0, k0 + j, g);
                vr.resize(size_t(d_v));
                vrows.push_back(vr);
            }
            for (int64_t t = 0; t < sq; ++t) {
                std::vector<const double *> keys, values;
                for (int64_t j = 0; j < sk; ++j) {
                    if (cs.causal && !(j <= t + sk - sq)) continue;
                    if (cs.window > 0 && !(j > t + sk - sq - cs.window)) continue;
                    keys.push_back(krows[size_t(j)].data());
                    values.push_back(vrows[size_t(j)].data());
                }
                RefRow r = attend(q.row(b0, q0 + t, h), keys, values, d_v,
                                  double(p.softmax_scale), cs.sink ? &sink[size_t(h)] : nullptr);
                const int64_t row = varlen ? q0 + t : i * cs.s_q + t;
                rot.apply(r.out, row);
                judge.row(read_out(out, b0, q0 + t, h), r.out);
                float got = varlen ? lse[size_t(h * rows_q + row)]
                                   : lse[size_t((i * h_q + h) * cs.s_q + t)];
                judge.scalar(got, r.lse, "lse");
            }
        }
    }
    judge.finish(out.gaps_untouched());
}

void test_attention() {
    int before = g_failed;
    int n = 0;
    uint64_t seed = 400;
    const int dts[] = {MLA_FLOAT32, MLA_BFLOAT16, MLA_FLOAT16, MLA_FLOAT64};
    // Batched: causal or not, key sequence longer / shorter / equal, windows, GQA.
    struct Shape { int64_t s_q, s_k, window; bool causal; };
    const Shape shapes[] = {{17, 17, 0, true}, {9, 40, 0, true}, {40, 9, 0, true},
                            {33, 33, 5, true}, {20, 70, 8, false}, {70, 70, 1, true},
                            {5, 130, 0, false}, {130, 130, 64, true}};
    for (int k = 0; k < 8; ++k) {
        AttentionCase c;
        c.s_q = shapes[k].s_q;
        c.s_k = shapes[k].s_k;
        c.window = shapes[k].window;
        c.causal = shapes[k].causal;
        c.dtype = dts[k % 4];
        c.h_q = k % 4 == 3 ? 3 : 4;
        c.h_kv = k % 4 == 3 ? 1 : k % 2 ? 4 : 2;
        c.sink = k % 3;
        c.threads = k == 4 ? 1 : 0;
        c.name = "batched s_q " + std::to_string(c.s_q) + " s_k " + std::to_string(c.s_k) +
                 (c.causal ? " causal" : "") +
                 (c.window ? " window " + std::to_string(c.window) : "") +
                 " h " + std::to_string(c.h_q) + "/" + std::to_string(c.h_kv);
        run_attention(c, seed++);
        ++n;
    }
    {
        AttentionCase c;
        c.name = "absorbed: v aliases k, 80/64, h_kv 1, h_q 16, VVPA";
        c.alias = true;
        c.d_qk = 80;
        c.d_v = 64;
        c.h_q = 16;
        c.h_kv = 1;
        c.s_q = 24;
        c.s_k = 30;
        c.rotate = true;
        c.sink = 1;
        c.dtype = MLA_BFLOAT16;
        run_attention(c, seed++);
        ++n;
        c.name = "absorbed alias, f32 (rows used in place)";
        c.dtype = MLA_FLOAT32;
        c.rotate = false;
        run_attention(c, seed++);
        ++n;
        c.name = "MHA 192/128, h 4/4, non-causal";
        c.alias = false;
        c.d_qk = 192;
        c.d_v = 128;
        c.h_q = 4;
        c.h_kv = 4;
        c.causal = false;
        run_attention(c, seed++);
        ++n;
        c.name = "d_v > d_qk";
        c.d_qk = 16;
        c.d_v = 40;
        c.causal = true;
        run_attention(c, seed++);
        ++n;
    }
    {
        AttentionCase c;
        c.name = "varlen causal, zero-length sequences";
        c.q_lens = {5, 0, 33, 1, 12};
        c.k_lens = {5, 4, 40, 0, 12};
        c.sink = 2;
        c.rotate = true;
        run_attention(c, seed++);
        ++n;
        c.name = "varlen window 3, bf16, h 6/3";
        c.window = 3;
        c.h_q = 6;
        c.h_kv = 3;
        c.rotate = false;
        c.dtype = MLA_BFLOAT16;
        run_attention(c, seed++);
        ++n;
        c.name = "varlen non-causal f64";
        c.causal = false;
        c.window = 0;
        c.dtype = MLA_FLOAT64;
        run_attention(c, seed++);
        ++n;
    }
    {
        AttentionCase c;
        c.name = "split keys: 1 query, 1500 keys";
        c.b = 1;
        c.s_q = 1;
        c.s_k = 1500;
        c.h_q = 8;
        c.h_kv = 1;
        c.sink = 1;
        run_attention(c, seed++);
        ++n;
        c.name = "split keys: 3 queries, 1100 keys, window 700, f16";
        c.s_q = 3;
        c.s_k = 1100;
        c.window = 700;
        c.dtype = MLA_FLOAT16;
        run_attention(c, seed++);
        ++n;
    }
    std::printf("attention_fwd: %d cases, %s\n", n, g_failed == before ? "ok" : "FAILED");
}

// ---- zero sizes and bad arguments --------------------------------------------------------------

void expect_status(mla_status got, mla_status want, const char *op, const char *what) {
    const char *msg = mla_last_error();
    bool ok = got == want && msg && msg[0] != 0 &&
              (want == MLA_OK || std::strncmp(msg, op, std::strlen(op)) == 0);
    if (want == MLA_OK) ok = got == MLA_OK;
    check(ok, "%s %s: status %d (want %d), message \"%s\"", op, what, got, want,
           msg ? msg : "(null)");
}

void test_zero_sizes() {
    int before = g_failed;
    {
        mla_dense_decode_params p;
        std::memset(&p, 0, sizeof p);
        p.dtype = MLA_FLOAT32;
        p.h_q = 4;
        p.d_qk = 8;
        p.d_v = 8;
        p.cache.h_kv = 1;
        p.cache.block_size = 4;
        p.exec = cpu_exec(0);
        expect_status(mla_dense_decode(&p), MLA_OK, "mla_dense_decode", "b = 0 with null pointers");
        std::vector<int32_t> lens = {3}, table = {0};
        std::vector<float> cache(32, 1.0f);
        p.b = 1;
        p.cache.data = cache.data();
        p.cache.num_blocks = 1;
        p.cache.token_stride = 8;
        p.cache.head_stride = 8;
        p.cache.block_stride = 32;
        p.cache_seqlens = lens.data();
        p.block_table = table.data();
        p.max_blocks_per_seq = 1;
        expect_status(mla_dense_decode(&p), MLA_OK, "mla_dense_decode", "s_q = 0");
    }
    {
        mla_sparse_decode_params p;
        std::memset(&p, 0, sizeof p);
        p.dtype = MLA_BFLOAT16;
        p.h_q = 4;
        p.d_qk = 64;
        p.d_v = 64;
        p.keys.cache.kind = MLA_CACHE_MODEL1;
        p.keys.cache.block_size = 64;
        p.keys.cache.d_nope = 48;
        p.keys.cache.d_rope = 16;
        p.keys.cache.tile = 16;
        p.keys.topk = 8;
        p.exec = cpu_exec(0);
        expect_status(mla_sparse_decode(&p), MLA_OK, "mla_sparse_decode", "b = 0, empty cache");
    }
    {
        mla_sparse_prefill_params p;
        std::memset(&p, 0, sizeof p);
        p.dtype = MLA_FLOAT16;
        p.h_q = 2;
        p.h_kv = 1;
        p.d_qk = 8;
        p.d_v = 8;
        p.topk = 4;
        p.exec = cpu_exec(0);
        expect_status(mla_sparse_prefill_fwd(&p), MLA_OK, "mla_sparse_prefill_fwd", "s_q = 0");
    }
    {
        mla_attention_params p;
        std::memset(&p, 0, sizeof p);
        p.dtype = MLA_FLOAT32;
        p.h_q = 2;
        p.h_kv = 1;
        p.d_qk = 8;
        p.d_v = 8;
        p.exec = cpu_exec(0);
        expect_status(mla_attention_fwd(&p), MLA_OK, "mla_attention_fwd", "b = 0");
        p.b = 3;
        expect_status(mla_attention_fwd(&p), MLA_OK, "mla_attention_fwd", "s_q = 0");
        std::vector<int32_t> cu = {0, 0, 0};
        p.b = 2;
        p.cu_seqlens_q = cu.data();
        p.cu_seqlens_k = cu.data();
        expect_status(mla_attention_fwd(&p), MLA_OK, "mla_attention_fwd", "varlen, all empty");
    }
    std::printf("zero sizes: %s\n", g_failed == before ? "ok" : "FAILED");
}

// A small valid dense decode call whose fields the bad-argument checks spoil one at a time.
struct DecodeFixture {
    std::vector<float> q, cache, out, lse;
    std::vector<int32_t> table, lens;
    std::vector<float> cos_t, sin_t;
    std::vector<int32_t> positions;
    mla_dense_decode_params p;

    DecodeFixture() : q(2 * 4 * 16, 0.5f), cache(4 * 4 * 16, 0.25f), out(2 * 4 * 16), lse(8),
                      table{0, 1, 2, 3}, lens{5, 8}, cos_t(8 * 4, 1.0f), sin_t(8 * 4, 0.0f),
                      positions{0, 1} {
        std::memset(&p, 0, sizeof p);
        p.dtype = MLA_FLOAT32;
        p.b = 2;
        p.s_q = 1;
        p.h_q = 4;
        p.d_qk = 16;
        p.d_v = 16;
        p.q = q.data();
        p.q_stride[0] = 64;
        p.q_stride[1] = 64;
        p.q_stride[2] = 16;
        p.cache.kind = MLA_CACHE_PLAIN;
        p.cache.dtype = MLA_FLOAT32;
        p.cache.data = cache.data();
        p.cache.num_blocks = 4;
        p.cache.block_size = 4;
        p.cache.h_kv = 1;
        p.cache.block_stride = 64;
        p.cache.token_stride = 16;
        p.cache.head_stride = 16;
        p.block_table = table.data();
        p.max_blocks_per_seq = 2;
        p.block_table_stride = 2;
        p.cache_seqlens = lens.data();
        p.softmax_scale = 0.25f;
        p.out = out.data();
        p.out_stride[0] = 64;
        p.out_stride[1] = 64;
        p.out_stride[2] = 16;
        p.lse = lse.data();
        p.exec = cpu_exec(0);
    }
    bool out_untouched() {
        for (float x : out)
            if (!std::isnan(x)) return false;
        for (float x : lse)
            if (!std::isnan(x)) return false;
        return true;
    }
    void poison() {
        std::fill(out.begin(), out.end(), std::numeric_limits<float>::quiet_NaN());
        std::fill(lse.begin(), lse.end(), std::numeric_limits<float>::quiet_NaN());
    }
};

void test_bad_arguments() {
    const mla_status kBad = MLA_ERR_INVALID_ARGUMENT;
    int before = g_failed;
    const char *dd = "mla_dense_decode";
    expect_status(mla_dense_decode(nullptr), kBad, dd, "null params");
    {
        DecodeFixture f;
        f.poison();
        expect_status(mla_dense_decode(&f.p), MLA_OK, dd, "fixture is valid");
        check(!f.out_untouched(), "%s fixture writes its outputs", dd);
    }
    auto bad = [&](const char *what, void (*spoil)(DecodeFixture &), mla_status want) {
        DecodeFixture f;
        f.poison();
        spoil(f);
        expect_status(mla_dense_decode(&f.p), want, dd, what);
        check(f.out_untouched(), "%s %s: outputs untouched", dd, what);
    };
    bad("bad dtype", [](DecodeFixture &f) { f.p.dtype = MLA_INT32; }, kBad);
    bad("negative b", [](DecodeFixture &f) { f.p.b = -1; }, kBad);
    bad("d_v > d_qk", [](DecodeFixture &f) { f.p.d_v = 17; }, kBad);
    bad("h_q % h_kv", [](DecodeFixture &f) { f.p.cache.h_kv = 3; }, kBad);
    bad("null q", [](DecodeFixture &f) { f.p.q = nullptr; }, kBad);
    bad("null lse", [](DecodeFixture &f) { f.p.lse = nullptr; }, kBad);
    bad("null cache data", [](DecodeFixture &f) { f.p.cache.data = nullptr; }, kBad);
    bad("negative stride", [](DecodeFixture &f) { f.p.out_stride[1] = -4; }, kBad);
    bad("block id out of range", [](DecodeFixture &f) { f.table[3] = 4; }, kBad);
    bad("negative block id", [](DecodeFixture &f) { f.table[1] = -1; }, kBad);
    bad("seqlen past the block table", [](DecodeFixture &f) { f.lens[0] = 9; }, kBad);
    bad("negative seqlen", [](DecodeFixture &f) { f.lens[1] = -1; }, kBad);
    bad("FP8 cache with wrong d_qk",
        [](DecodeFixture &f) { f.p.cache.kind = MLA_CACHE_V32; }, kBad);
    bad("bad cache kind", [](DecodeFixture &f) { f.p.cache.kind = 7; }, kBad);
    bad("block_size 0", [](DecodeFixture &f) { f.p.cache.block_size = 0; }, kBad);
    bad("NaN softmax_scale", [](DecodeFixture &f) { f.p.softmax_scale = std::nanf(""); }, kBad);
    bad("negative num_threads", [](DecodeFixture &f) { f.p.exec.num_threads = -2; }, kBad);
    // Without a CUDA device the GPU path is unsupported; with one, this fixture's host memory
    // is refused as an invalid argument (the GPU path takes device pointers only).
    bad("GPU device", [](DecodeFixture &f) { f.p.exec.device = 0; },
        mla_cuda_device_count() > 0 ? MLA_ERR_INVALID_ARGUMENT : MLA_ERR_UNSUPPORTED);
    bad("odd rope_dim", [](DecodeFixture &f) {
        f.p.out_rotation.positions = f.positions.data();
        f.p.out_rotation.rope.rope_dim = 3;
        f.p.out_rotation.rope.theta = 1e4;
    }, kBad);
    bad("position outside the rope table", [](DecodeFixture &f) {
        f.positions[1] = 8;
        f.p.out_rotation.positions = f.positions.data();
        f.p.out_rotation.rope.rope_dim = 8;
        f.p.out_rotation.rope.rope_offset = -1;
        f.p.out_rotation.rope.cos_table = f.cos_t.data();
        f.p.out_rotation.rope.sin_table = f.sin_t.data();
        f.p.out_rotation.rope.table_len = 8;
    }, kBad);
    {
        // The message names the op, the argument and both values.
        DecodeFixture f;
        f.p.h_q = 12;
        f.p.cache.h_kv = 5;
        mla_dense_decode(&f.p);
        check(std::strstr(mla_last_error(), "h_q (12) must be divisible by h_kv (5)") != nullptr,
               "%s message for h_q %% h_kv: \"%s\"", dd, mla_last_error());
    }

    // Sparse decode.
    const char *sd = "mla_sparse_decode";
    {
        std::vector<float> q(4 * 64, 0.1f), out(4 * 64), lse(4);
        std::vector<int32_t> idx(8, 0);
        const int64_t block_bytes = mla_cache_block_bytes(MLA_CACHE_MODEL1, 4, 48, 16, 16);
        std::vector<uint8_t> bytes(static_cast<size_t>(block_bytes), 0);
        auto make = [&] {
            mla_sparse_decode_params p;
            std::memset(&p, 0, sizeof p);
            p.dtype = MLA_FLOAT32;
            p.b = 1;
            p.s_q = 1;
            p.h_q = 4;
            p.d_qk = 64;
            p.d_v = 64;
            p.q = q.data();
            p.q_stride[0] = p.q_stride[1] = 256;
            p.q_stride[2] = 64;
            p.keys.cache.kind = MLA_CACHE_MODEL1;
            p.keys.cache.data = bytes.data();
            p.keys.cache.num_blocks = 1;
            p.keys.cache.block_size = 4;
            p.keys.cache.d_nope = 48;
            p.keys.cache.d_rope = 16;
            p.keys.cache.tile = 16;
            p.keys.indices = idx.data();
            p.keys.topk = 8;
            p.keys.indices_stride[0] = p.keys.indices_stride[1] = 8;
            p.softmax_scale = 0.125f;
            p.out = out.data();
            p.out_stride[0] = p.out_stride[1] = 256;
            p.out_stride[2] = 64;
            p.lse = lse.data();
            p.exec = cpu_exec(0);
            return p;
        };
        mla_sparse_decode_params p = make();
        expect_status(mla_sparse_decode(&p), MLA_OK, sd, "fixture is valid");
        p = make();
        p.d_v = 48;
        expect_status(mla_sparse_decode(&p), kBad, sd, "MODEL1 with d_v != d_qk");
        p = make();
        p.keys.cache.d_nope = 40;
        expect_status(mla_sparse_decode(&p), kBad, sd, "d_nope not a multiple of tile");
        p = make();
        p.keys.topk = -1;
        expect_status(mla_sparse_decode(&p), kBad, sd, "negative topk");
        p = make();
        p.keys.indices = nullptr;
        expect_status(mla_sparse_decode(&p), kBad, sd, "null indices");
        p = make();
        p.keys.cache.kind = MLA_CACHE_PLAIN;
        p.keys.cache.dtype = MLA_FLOAT32;
        p.keys.cache.h_kv = 2;
        expect_status(mla_sparse_decode(&p), kBad, sd, "PLAIN cache with h_kv 2");
        p = make();
        p.extra = p.keys;
        p.extra.cache.kind = MLA_CACHE_V32;
        expect_status(mla_sparse_decode(&p), kBad, sd, "extra V32 with d_v 64");
        p = make();
        // Device 1: no such device on a one-GPU host (invalid), no CUDA device at all
        // (unsupported), or host memory on a device that takes device pointers (invalid).
        p.exec.device = 1;
        expect_status(mla_sparse_decode(&p), mla_cuda_device_count() > 0 ? kBad : MLA_ERR_UNSUPPORTED, sd,
                      "GPU device");
    }

    // Sparse prefill.
    const char *sp = "mla_sparse_prefill_fwd";
    {
        std::vector<float> q(2 * 4 * 8, 0.1f), kv(3 * 2 * 8, 0.2f), out(2 * 4 * 8), lse(8);
        std::vector<int32_t> idx(2 * 2 * 2, 0);
        auto make = [&] {
            mla_sparse_prefill_params p;
            std::memset(&p, 0, sizeof p);
            p.dtype = MLA_FLOAT32;
            p.s_q = 2;
            p.s_kv = 3;
            p.h_q = 4;
            p.h_kv = 2;
            p.d_qk = 8;
            p.d_v = 8;
            p.topk = 2;
            p.q = q.data();
            p.q_stride[0] = 32;
            p.q_stride[1] = 8;
            p.kv = kv.data();
            p.kv_stride[0] = 16;
            p.kv_stride[1] = 8;
            p.indices = idx.data();
            p.indices_stride[0] = 4;
            p.indices_stride[1] = 2;
            p.softmax_scale = 0.3f;
            p.out = out.data();
            p.out_stride[0] = 32;
            p.out_stride[1] = 8;
            p.lse = lse.data();
            p.exec = cpu_exec(0);
            return p;
        };
        mla_sparse_prefill_params p = make();
        expect_status(mla_sparse_prefill_fwd(&p), MLA_OK, sp, "fixture is valid");
        p = make();
        p.h_q = 3;
        expect_status(mla_sparse_prefill_fwd(&p), kBad, sp, "h_q % h_kv");
        p = make();
        p.h_kv = 0;
        expect_status(mla_sparse_prefill_fwd(&p), kBad, sp, "h_kv 0");
        p = make();
        p.dtype = MLA_FP8_E4M3;
        expect_status(mla_sparse_prefill_fwd(&p), kBad, sp, "fp8 dtype");
        p = make();
        p.kv = nullptr;
        expect_status(mla_sparse_prefill_fwd(&p), kBad, sp, "null kv");
        p = make();
        p.topk = -3;
        expect_status(mla_sparse_prefill_fwd(&p), kBad, sp, "negative topk");
        p = make();
        p.d_v = 9;
        expect_status(mla_sparse_prefill_fwd(&p), kBad, sp, "d_v > d_qk");
        p = make();
        p.indices_stride[1] = -1;
        expect_status(mla_sparse_prefill_fwd(&p), kBad, sp, "negative stride");
    }

    // Dense attention.
    const char *at = "mla_attention_fwd";
    {
        std::vector<float> q(2 * 3 * 2 * 8, 0.1f), k(2 * 3 * 1 * 8, 0.2f);
        std::vector<float> out(2 * 3 * 2 * 8), lse(12);
        std::vector<int32_t> cu_q = {0, 2, 6}, cu_k = {0, 3, 6}, bad_cu = {0, 4, 3};
        auto make = [&] {
            mla_attention_params p;
            std::memset(&p, 0, sizeof p);
            p.dtype = MLA_FLOAT32;
            p.b = 2;
            p.s_q = 3;
            p.s_k = 3;
            p.h_q = 2;
            p.h_kv = 1;
            p.d_qk = 8;
            p.d_v = 8;
            p.q = q.data();
            p.q_stride[0] = 48;
            p.q_stride[1] = 16;
            p.q_stride[2] = 8;
            p.k = k.data();
            p.k_stride[0] = 24;
            p.k_stride[1] = 8;
            p.k_stride[2] = 8;
            p.v = k.data();
            std::memcpy(p.v_stride, p.k_stride, sizeof p.v_stride);
            p.softmax_scale = 0.3f;
            p.causal = 1;
            p.out = out.data();
            p.out_stride[0] = 48;
            p.out_stride[1] = 16;
            p.out_stride[2] = 8;
            p.lse = lse.data();
            p.exec = cpu_exec(0);
            return p;
        };
        mla_attention_params p = make();
        expect_status(mla_attention_fwd(&p), MLA_OK, at, "fixture is valid");
        p.cu_seqlens_q = cu_q.data();
        p.cu_seqlens_k = cu_k.data();
        p.total_q = 6;
        p.total_k = 6;
        expect_status(mla_attention_fwd(&p), MLA_OK, at, "varlen fixture is valid");
        p.cu_seqlens_k = nullptr;
        expect_status(mla_attention_fwd(&p), kBad, at, "varlen without cu_seqlens_k");
        p.cu_seqlens_k = bad_cu.data();
        expect_status(mla_attention_fwd(&p), kBad, at, "decreasing cu_seqlens_k");
        p.cu_seqlens_k = cu_k.data();
        p.total_q = 7;
        expect_status(mla_attention_fwd(&p), kBad, at, "cu_seqlens_q[b] != total_q");
        p = make();
        p.d_v = 9;
        expect_status(mla_attention_fwd(&p), kBad, at, "aliased v with d_v > d_qk");
        p = make();
        p.window = -1;
        expect_status(mla_attention_fwd(&p), kBad, at, "negative window");
        p = make();
        p.h_kv = 3;
        expect_status(mla_attention_fwd(&p), kBad, at, "h_q % h_kv");
        p = make();
        p.out = nullptr;
        expect_status(mla_attention_fwd(&p), kBad, at, "null out");
        p = make();
        p.s_k = -2;
        expect_status(mla_attention_fwd(&p), kBad, at, "negative s_k");
        p = make();
        p.exec.device = 0;
        expect_status(mla_attention_fwd(&p), MLA_ERR_UNSUPPORTED, at, "GPU device");
        expect_status(mla_attention_fwd(nullptr), kBad, at, "null params");
    }
    std::printf("bad arguments: %s\n", g_failed == before ? "ok" : "FAILED");
}

// The library picks its AVX2 or its baseline (x86-64-v2) kernels once per process, so the
// baseline is checked by running this program again with MLA4J_DISABLE_AVX2=1, and with an odd
// pool size (more key splits, uneven chunks).
void rerun_on_baseline_path() {
    char path[4096];
    ssize_t n = readlink("/proc/self/exe", path, sizeof path - 1);
    if (n <= 0) {
        std::printf("baseline path: not rerun (no /proc/self/exe)\n");
        return;
    }
    path[n] = 0;
    std::printf("--- again on the baseline path (MLA4J_DISABLE_AVX2=1, MLA4J_NUM_THREADS=5):\n");
    std::fflush(stdout);
    std::string cmd =
        std::string("MLA_TEST_CHILD=1 MLA4J_DISABLE_AVX2=1 MLA4J_NUM_THREADS=5 '") + path + "'";
    int rc = std::system(cmd.c_str());
    check(rc == 0, "baseline path rerun: exit status %d", rc);
    std::printf("--- baseline path: %s\n", rc == 0 ? "ok" : "FAILED");
}

}  // namespace

int main() {
    test_dense_decode();
    test_sparse_decode();
    test_sparse_prefill();
    test_attention();
    test_zero_sizes();
    test_bad_arguments();
    if (!std::getenv("MLA_TEST_CHILD")) rerun_on_baseline_path();
    std::printf("%d passed, %d failed\n", g_passed, g_failed);
    return g_failed == 0 ? 0 : 1;
}
