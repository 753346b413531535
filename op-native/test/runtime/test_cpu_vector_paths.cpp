// Native tests of the vectorised CPU paths: FP8 token encoding (KV quantise and append),
// top-k, and the lightning indexer's blocked kernel (ops.md sections 5 and 6). The program
// runs on the AVX2 kernels and then again, as a child process with MLA4J_DISABLE_AVX2=1, on
// the baseline (16-byte vector) ones. Every reference is written here from the definitions:
// FP8 codes by nearest-value search, top-k by a stable sort, indexer scores in float64.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>
#include "mla/mla.h"
#include "test_support.h"

namespace {

using mla_test::check;
using mla_test::g_failed;
using mla_test::g_passed;

std::mt19937_64 rng(9127);

double uni(double a, double b) { return std::uniform_real_distribution<double>(a, b)(rng); }
int64_t irand(int64_t a, int64_t b) { return std::uniform_int_distribution<int64_t>(a, b)(rng); }

mla_exec cpu(int threads = 0) {
    mla_exec e{};
    e.device = -1;
    e.num_threads = threads;
    return e;
}

float from_bits(uint32_t u) {
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}

uint32_t bits_of(float f) {
    uint32_t u;
    std::memcpy(&u, &f, 4);
    return u;
}

// ---- FP8 reference, from the format's definition ----------------------------------------------

// float8_e4m3fn magnitude of code c (c < 0x80): bias 7, 3 mantissa bits, subnormals m 2^-9.
double fp8_magnitude(int c) {
    int e = (c >> 3) & 15, m = c & 7;
    if (e == 15 && m == 7) return NAN;
    return e == 0 ? std::ldexp(double(m), -9) : std::ldexp(1 + m / 8.0, e - 7);
}

// Code of the exact value y: NaN -> 0x7f, |y| >= 448 -> saturate (0x7e), else the nearest
// magnitude, ties to the even code; the sign bit follows y's sign (so -0 and negative values
// that round to zero give 0x80).
uint8_t ref_fp8(double y) {
    if (std::isnan(y)) return 0x7f;
    uint8_t sign = std::signbit(y) ? 0x80 : 0;
    double a = std::fabs(y);
    if (a >= 448) return uint8_t(sign | 0x7e);
    int best = 0;
    double best_err = INFINITY;
    for (int c = 0; c <= 0x7e; ++c) {
        double err = std::fabs(a - fp8_magnitude(c));
        if (err < best_err || (err == best_err && (c & 1) == 0)) {
            best = c;
            best_err = err;
        }
    }
    return uint8_t(sign | best);
}

// Tile scale: 2^ceil(log2(max(amax / 448, 1e-4))) with the division and the max in float32
// as the contract's arithmetic does them; an infinite amax gives 2^127.
double ref_tile_scale(float amax) {
    float s = std::max(amax / 448.0f, 1e-4f);
    if (!std::isfinite(s)) return std::ldexp(1.0, 127);
    double p = std::ldexp(1.0, -20);
    while (p < double(s)) p *= 2;
    return std::min(p, std::ldexp(1.0, 127));
}

// bfloat16 bits of x: round to nearest even on the 16 dropped bits (NaN checked apart).
uint16_t ref_bf16(float x) {
    double v = x;
    if (!std::isfinite(v) || v == 0) return uint16_t(bits_of(x) >> 16);
    int e;
    std::frexp(v, &e);
    double ulp = std::ldexp(1.0, e - 8);
    if (e - 8 < -133) ulp = std::ldexp(1.0, -133);  // bfloat16 subnormal spacing
    double r = std::nearbyint(v / ulp) * ulp;
    return uint16_t(bits_of(float(r)) >> 16);
}

struct Layout {
    int32_t kind;
    int64_t bs;
    int d_nope, d_rope, tile;
    int64_t data_row() const {
        return kind == MLA_CACHE_V32 ? d_nope + 4 * (d_nope / tile) + 2 * d_rope : d_nope + 2 * d_rope;
    }
    int64_t scale_row() const { return kind == MLA_CACHE_V32 ? 0 : ((d_nope / tile) + 7) / 8 * 8; }
    int64_t block() const {
        if (kind == MLA_CACHE_V32) return bs * data_row();
        int64_t raw = bs * (data_row() + scale_row());
        return (raw + data_row() - 1) / data_row() * data_row();
    }
    int d() const { return d_nope + d_rope; }
};

// The bytes of one token (fp8 codes, scales, rope part) as the layout places them.
void ref_token(const Layout &l, const float *x, uint8_t *block, int64_t t) {
    uint8_t *row = block + t * l.data_row();
    uint8_t *scales = l.kind == MLA_CACHE_V32 ? row + l.d_nope
                                               : block + l.bs * l.data_row() + t * l.scale_row();
    uint8_t *rope = l.kind == MLA_CACHE_V32 ? row + l.d_nope + 4 * (l.d_nope / l.tile) : row + l.d_nope;
    if (l.kind == MLA_CACHE_MODEL1) std::memset(scales, 0, size_t(l.scale_row()));
    for (int s = 0; s < l.d_nope / l.tile; ++s) {
        float amax = 0;
        for (int i = s * l.tile; i < (s + 1) * l.tile; ++i)
            if (!std::isnan(x[i])) amax = std::max(amax, std::fabs(x[i]));
        double scale = ref_tile_scale(amax);
        for (int i = s * l.tile; i < (s + 1) * l.tile; ++i) row[i] = ref_fp8(double(x[i]) / scale);
        if (l.kind == MLA_CACHE_V32) {
            float f = float(scale);
            std::memcpy(scales + 4 * s, &f, 4);
        } else {
            int e;
            std::frexp(scale, &e);
            scales[s] = uint8_t(e - 1 + 127);
        }
    }
    for (int i = 0; i < l.d_rope; ++i) {
        uint16_t h = ref_bf16(x[l.d_nope + i]);
        std::memcpy(rope + 2 * i, &h, 2);
    }
}

// One tile's worth of test values; `kind` picks the corner case.
void fill_tile(float *x, int n, int kind) {
    double mag = std::pow(10.0, uni(-8, 8));
    for (int i = 0; i < n; ++i) x[i] = float(uni(-1, 1) * mag);
    switch (kind) {
        case 0: break;                                                        // plain
        case 1: x[irand(0, n - 1)] = NAN; break;                              // NaN never counts
        case 2: x[irand(0, n - 1)] = irand(0, 1) ? INFINITY : -INFINITY; break;  // scale 2^127
        case 3: for (int i = 0; i < n; ++i) x[i] = irand(0, 1) ? 0.0f : -0.0f; break;
        case 4:  // subnormal floats
            for (int i = 0; i < n; ++i) x[i] = from_bits(uint32_t(irand(1, 0x7fffff)) | (irand(0, 1) ? 0x80000000u : 0));
            break;
        case 5: {  // exact midpoints between fp8 codes at a fixed scale 2^k, and their neighbours
            int k = int(irand(-10, 10));
            x[0] = float(std::ldexp(448.0, k));  // amax: scale = 2^k
            for (int i = 1; i < n; ++i) {
                int c = int(irand(0, 0x7d));
                float mid = float(std::ldexp((fp8_magnitude(c) + fp8_magnitude(c + 1)) / 2, k));
                int nudge = int(irand(-1, 1));
                if (nudge) mid = std::nextafter(mid, nudge > 0 ? INFINITY : 0.0f);
                x[i] = irand(0, 1) ? mid : -mid;
            }
            break;
        }
        case 6: x[irand(0, n - 1)] = irand(0, 1) ? 3.4028235e38f : -3.4028235e38f; break;  // huge
        case 7:  // random bit patterns (NaN, inf, subnormals, everything)
            for (int i = 0; i < n; ++i) x[i] = from_bits(uint32_t(rng()));
            break;
        default: break;
    }
}

void test_quantise(const Layout &l, int32_t in_dt) {
    const char *name = l.kind == MLA_CACHE_V32 ? "V32" : "MODEL1";
    const int64_t nb = 3, tokens = nb * l.bs, d = l.d();
    std::vector<float> x(size_t(tokens * d));
    for (int64_t t = 0; t < tokens; ++t) {
        for (int s = 0; s < l.d_nope / l.tile; ++s) fill_tile(&x[size_t(t * d + s * l.tile)], l.tile, int((t + s) % 8));
        fill_tile(&x[size_t(t * d + l.d_nope)], l.d_rope, int(t % 8));
    }
    std::vector<uint16_t> xb(x.size());
    if (in_dt == MLA_BFLOAT16)  // bfloat16 input: the float values are the bf16 ones
        for (size_t i = 0; i < x.size(); ++i) {
            xb[i] = uint16_t(bits_of(x[i]) >> 16);
            x[i] = from_bits(uint32_t(xb[i]) << 16);
        }
    std::vector<uint8_t> want(size_t(nb * l.block()), 0);
    for (int64_t t = 0; t < tokens; ++t) ref_token(l, &x[size_t(t * d)], &want[size_t((t / l.bs) * l.block())], t % l.bs);

    std::vector<uint8_t> got(want.size() + 16, 0xA5);
    mla_quant_params p{};
    p.dtype = in_dt;
    p.kv = in_dt == MLA_FLOAT32 ? static_cast<void *>(x.data()) : static_cast<void *>(xb.data());
    p.cache.kind = l.kind;
    p.cache.num_blocks = nb;
    p.cache.block_size = l.bs;
    p.cache.h_kv = 1;
    p.cache.d_nope = l.d_nope;
    p.cache.d_rope = l.d_rope;
    p.cache.tile = l.tile;
    p.cache.data = got.data();
    p.exec = cpu();
    check(mla_kv_quantize(&p) == MLA_OK, "quantise %s: %s", name, mla_last_error());
    int bad = 0, bad_nan = 0;
    for (size_t i = 0; i < want.size(); ++i) bad += got[i] != want[i];
    // A NaN in the RoPE part stays a NaN (its payload is not part of the contract).
    for (int64_t t = 0; t < tokens; ++t)
        for (int i = 0; i < l.d_rope; ++i) {
            if (!std::isnan(x[size_t(t * d + l.d_nope + i)])) continue;
            int64_t off = (t / l.bs) * l.block() + (t % l.bs) * l.data_row() +
                          (l.kind == MLA_CACHE_V32 ? l.d_nope + 4 * (l.d_nope / l.tile) : l.d_nope) + 2 * i;
            uint16_t h = uint16_t(got[size_t(off)] | (got[size_t(off) + 1] << 8));
            bad_nan += !((h & 0x7f80) == 0x7f80 && (h & 0x7f) != 0);
            bad -= (got[size_t(off)] != want[size_t(off)]) + (got[size_t(off) + 1] != want[size_t(off) + 1]);
        }
    check(bad == 0 && bad_nan == 0, "quantise %s tile %d, %s input: %d bytes differ from the reference "
          "(%d RoPE NaNs lost)", name, l.tile, in_dt == MLA_FLOAT32 ? "float32" : "bfloat16", bad, bad_nan);
    check(std::all_of(got.end() - 16, got.end(), [](uint8_t v) { return v == 0xA5; }),
          "quantise %s: bytes written past the cache", name);

    // Appending the same tokens one request at a time writes the same token bytes.
    std::vector<uint8_t> app(want.size(), 0);
    std::vector<int32_t> table(static_cast<size_t>(nb));
    for (int64_t i = 0; i < nb; ++i) table[size_t(i)] = int32_t(i);
    int32_t seqlen = 0;
    mla_append_params a{};
    a.dtype = in_dt;
    a.b = 1;
    a.n_new = tokens;
    a.d_qk = d;
    a.new_kv = p.kv;
    a.new_kv_stride[0] = tokens * d;
    a.new_kv_stride[1] = d;
    a.cache = p.cache;
    a.cache.data = app.data();
    a.block_table = table.data();
    a.max_blocks_per_seq = nb;
    a.block_table_stride = nb;
    a.cache_seqlens = &seqlen;
    a.exec = cpu();
    check(mla_kv_append(&a) == MLA_OK, "append %s: %s", name, mla_last_error());
    int bad_app = 0;
    for (int64_t t = 0; t < tokens; ++t) {
        int64_t blk = t / l.bs, off = t % l.bs;
        int64_t row = blk * l.block() + off * l.data_row();
        for (int64_t i = 0; i < l.data_row(); ++i) bad_app += app[size_t(row + i)] != got[size_t(row + i)];
        int64_t srow = blk * l.block() + l.bs * l.data_row() + off * l.scale_row();
        for (int64_t i = 0; i < l.scale_row(); ++i) bad_app += app[size_t(srow + i)] != got[size_t(srow + i)];
    }
    check(bad_app == 0, "append %s tile %d: %d token bytes differ from quantise", name, l.tile, bad_app);
}

// ---- top-k ------------------------------------------------------------------------------------

void ref_topk(const float *row, int64_t n, int64_t k, int32_t *idx, float *val) {
    std::vector<int32_t> c;
    for (int64_t i = 0; i < n; ++i)
        if (!std::isnan(row[i]) && row[i] != -INFINITY) c.push_back(int32_t(i));
    std::stable_sort(c.begin(), c.end(), [&](int32_t a, int32_t b) { return row[a] > row[b]; });
    for (int64_t i = 0; i < k; ++i) {
        idx[i] = i < int64_t(c.size()) ? c[size_t(i)] : -1;
        val[i] = i < int64_t(c.size()) ? row[c[size_t(i)]] : -INFINITY;
    }
}

float topk_value(int kind) {
    switch (kind) {
        case 0: return float(std::normal_distribution<double>(0, 1)(rng));
        case 1: return float(irand(-3, 3));                                      // many ties
        case 2: return irand(0, 2) ? NAN : float(uni(-1, 1));                    // NaN-heavy
        case 3: return irand(0, 3) ? -INFINITY : (irand(0, 1) ? INFINITY : 1.0f);  // inf-heavy
        case 4: return irand(0, 1) ? 0.0f : -0.0f;                              // +-0 ties
        case 5: return from_bits(uint32_t(irand(0, 0x7fffff)) | (irand(0, 1) ? 0x80000000u : 0));
        case 6: return from_bits(uint32_t(rng()));                               // any bits
        case 7: return 1.0f + float(irand(0, 40)) * 1.1920929e-07f;              // narrow range
        default: return 2.5f;                                                    // all equal
    }
}

void test_topk_case(int64_t rows, int64_t n, int64_t k, int kind) {
    std::vector<float> s(size_t(rows * n));
    for (auto &v : s) v = topk_value(kind);
    std::vector<int32_t> idx(size_t(rows * k) + 1, 99), ridx(size_t(rows * k) + 1, 99);
    std::vector<float> val(size_t(rows * k) + 1, 99.0f), rval(size_t(rows * k) + 1, 99.0f);
    for (int64_t r = 0; r < rows; ++r) ref_topk(&s[size_t(r * n)], n, k, &ridx[size_t(r * k)], &rval[size_t(r * k)]);
    for (int threads : {1, 0}) {
        mla_topk_params p{};
        p.rows = rows;
        p.n = n;
        p.k = k;
        p.scores = s.data();
        p.indices = idx.data();
        p.values = val.data();
        p.exec = cpu(threads);
        check(mla_topk(&p) == MLA_OK, "topk: %s", mla_last_error());
        bool same = idx == ridx && std::memcmp(val.data(), rval.data(), val.size() * 4) == 0;
        check(same, "topk rows %lld n %lld k %lld kind %d threads %d: differs from the reference",
              (long long)rows, (long long)n, (long long)k, kind, threads);
    }
}

void test_topk() {
    for (int kind = 0; kind <= 8; ++kind)
        for (int64_t n : {1, 7, 8, 9, 63, 64, 65, 300, 2048})
            for (int64_t k : {int64_t(1), int64_t(3), n / 4 + 1, n - 1, n, n + 5})
                if (k >= 1) test_topk_case(3, n, k, kind);
    test_topk_case(2, 70000, 2048, 0);  // buckets of the widest digit
    test_topk_case(2, 70000, 3, 7);
    test_topk_case(64, 2048, 512, 0);   // the benchmark's shape
    test_topk_case(8, 5000, 4999, 6);
}

// ---- lightning indexer ------------------------------------------------------------------------

struct Ix {
    int64_t b, s_q, s_k, h, d;
    int causal;
    int32_t dt;  // of q and k (w is float32)
    std::vector<uint8_t> q, k;
    std::vector<float> w, q_scale, k_scale;
    std::vector<double> qv, kv;  // dequantised values

    bool visible(int64_t t, int64_t s) const { return !causal || s <= t + s_k - s_q; }
};

double fp8_value(uint8_t v) {
    double m = fp8_magnitude(v & 0x7f);
    return (v & 0x80) ? -m : m;
}

// Random operand; FP8 codes cover all 256 (NaN included) when `nan_codes`.
void ix_fill(int32_t dt, int64_t rows, int64_t d, bool nan_codes, std::vector<uint8_t> *raw,
             std::vector<float> *scale, std::vector<double> *vals) {
    vals->resize(size_t(rows * d));
    if (dt == MLA_FP8_E4M3) {
        raw->resize(size_t(rows * d));
        scale->resize(size_t(rows));
        for (int64_t r = 0; r < rows; ++r) {
            (*scale)[size_t(r)] = float(uni(0.5, 2.0) / 64);
            for (int64_t i = 0; i < d; ++i) {
                uint8_t v = uint8_t(irand(0, 255));
                if (!nan_codes && (v & 0x7f) == 0x7f) v = 0x3a;
                (*raw)[size_t(r * d + i)] = v;
                (*vals)[size_t(r * d + i)] = fp8_value(v) * double((*scale)[size_t(r)]);
            }
        }
        return;
    }
    size_t es = dt == MLA_FLOAT64 ? 8 : dt == MLA_FLOAT32 ? 4 : 2;
    raw->resize(size_t(rows * d) * es);
    for (size_t i = 0; i < vals->size(); ++i) {
        float f = float(uni(-1, 1));
        if (dt == MLA_BFLOAT16) f = from_bits(bits_of(f) & 0xffff0000u);
        (*vals)[i] = f;
        if (dt == MLA_FLOAT64) {
            double v = f;
            std::memcpy(&(*raw)[i * 8], &v, 8);
        } else if (dt == MLA_FLOAT32) {
            std::memcpy(&(*raw)[i * 4], &f, 4);
        } else {
            uint16_t h = uint16_t(bits_of(f) >> 16);
            std::memcpy(&(*raw)[i * 2], &h, 2);
        }
    }
}

// Puts NaN into the keys no query row may see (causal keys past every row's horizon), and,
// when `nan_visible`, into one visible key: a NaN product drops out of its score (relu of NaN
// contributes nothing).
void poison_keys(Ix &c, bool nan_visible) {
    if (c.dt == MLA_FP8_E4M3) return;  // FP8: the NaN codes are already in
    auto put = [&](int64_t bb, int64_t s, int64_t i) {
        size_t at = size_t((bb * c.s_k + s) * c.d + i);
        c.kv[at] = NAN;
        if (c.dt == MLA_FLOAT64) {
            double v = NAN;
            std::memcpy(&c.k[at * 8], &v, 8);
        } else if (c.dt == MLA_FLOAT32) {
            float v = NAN;
            std::memcpy(&c.k[at * 4], &v, 4);
        } else {
            uint16_t h = 0x7fc0;
            std::memcpy(&c.k[at * 2], &h, 2);
        }
    };
    for (int64_t bb = 0; bb < c.b; ++bb) {
        for (int64_t s = 0; s < c.s_k; ++s) {
            bool seen = false;
            for (int64_t t = 0; t < c.s_q; ++t) seen = seen || c.visible(t, s);
            if (!seen) put(bb, s, irand(0, c.d - 1));
        }
        if (nan_visible && c.s_k > 0) put(bb, 0, 0);
    }
}

Ix make_ix(int64_t b, int64_t s_q, int64_t s_k, int64_t h, int64_t d, int causal, int32_t dt) {
    Ix c{b, s_q, s_k, h, d, causal, dt, {}, {}, {}, {}, {}, {}, {}};
    ix_fill(dt, b * s_q * h, d, false, &c.q, &c.q_scale, &c.qv);
    ix_fill(dt, b * s_k, d, true, &c.k, &c.k_scale, &c.kv);
    c.w.resize(size_t(b * s_q * h));
    for (auto &v : c.w) v = float(uni(-1, 1));
    poison_keys(c, true);
    return c;
}

mla_indexer_params ix_params(const Ix &c) {
    mla_indexer_params p{};
    p.q_dtype = p.k_dtype = c.dt;
    p.w_dtype = MLA_FLOAT32;
    p.b = c.b;
    p.s_q = c.s_q;
    p.s_k = c.s_k;
    p.h = c.h;
    p.d = c.d;
    p.q = c.q.data();
    p.k = c.k.data();
    p.q_scale = c.dt == MLA_FP8_E4M3 ? c.q_scale.data() : nullptr;
    p.k_scale = c.dt == MLA_FP8_E4M3 ? c.k_scale.data() : nullptr;
    p.w = c.w.data();
    p.causal = c.causal;
    p.exec = cpu();
    return p;
}

void test_indexer(const Ix &c) {
    char tag[128];
    std::snprintf(tag, sizeof tag, "indexer b %lld s_q %lld s_k %lld h %lld d %lld causal %d dtype %d",
                  (long long)c.b, (long long)c.s_q, (long long)c.s_k, (long long)c.h, (long long)c.d,
                  c.causal, c.dt);
    const int64_t n = c.b * c.s_q * c.s_k;
    std::vector<float> scores(size_t(n) + 1, 77.0f), scores1(size_t(n) + 1, 77.0f);
    mla_indexer_params p = ix_params(c);
    p.scores = scores.data();
    check(mla_indexer_scores(&p) == MLA_OK, "%s: %s", tag, mla_last_error());
    p.scores = scores1.data();
    p.exec = cpu(1);
    check(mla_indexer_scores(&p) == MLA_OK, "%s (1 thread): %s", tag, mla_last_error());
    // float32 accumulation: each of the d + h + 4 roundings on the way errs by at most 2^-24 of
    // the running magnitude sum_j |w| sum_i |q k|. float64 inputs accumulate in double and
    // round once, to the float32 output.
    double rel = c.dt == MLA_FLOAT64 ? 1e-12 : double(c.d + c.h + 4) * std::ldexp(1.0, -24);
    double out_round = c.dt == MLA_FLOAT64 ? std::ldexp(1.0, -24) : 0.0;
    int bad = 0, bad_mask = 0;
    for (int64_t bb = 0; bb < c.b; ++bb)
        for (int64_t t = 0; t < c.s_q; ++t)
            for (int64_t s = 0; s < c.s_k; ++s) {
                float got = scores[size_t((bb * c.s_q + t) * c.s_k + s)];
                if (!c.visible(t, s)) {
                    bad_mask += got != -INFINITY;
                    continue;
                }
                double acc = 0, mag = 0;
                for (int64_t j = 0; j < c.h; ++j) {
                    const double *qr = &c.qv[size_t(((bb * c.s_q + t) * c.h + j) * c.d)];
                    const double *kr = &c.kv[size_t((bb * c.s_k + s) * c.d)];
                    double z = 0, zm = 0;
                    for (int64_t i = 0; i < c.d; ++i) {
                        z += qr[i] * kr[i];
                        if (!std::isnan(kr[i])) zm += std::fabs(qr[i] * kr[i]);
                    }
                    double wj = c.w[size_t((bb * c.s_q + t) * c.h + j)];
                    if (z > 0) acc += wj * z;  // NaN z drops out
                    mag += std::fabs(wj) * zm;
                }
                bad += !(std::fabs(got - acc) <= rel * mag + out_round * std::fabs(acc) + 1e-30);
            }
    check(bad == 0, "%s: %d scores differ from the float64 reference", tag, bad);
    check(bad_mask == 0 && scores.back() == 77.0f, "%s: %d masked scores not -inf (or written past)",
          tag, bad_mask);
    check(std::memcmp(scores.data(), scores1.data(), scores.size() * 4) == 0,
          "%s: scores depend on the thread count", tag);
    // The fused top-k picks exactly what top-k of these scores picks.
    for (int64_t topk : {int64_t(1), c.s_k / 3 + 1, c.s_k + 3}) {
        std::vector<int32_t> idx(size_t(c.b * c.s_q * topk) + 1, 55), want(static_cast<size_t>(topk));
        std::vector<float> unused(static_cast<size_t>(topk));
        mla_indexer_params t = ix_params(c);
        t.topk = topk;
        t.indices = idx.data();
        check(mla_indexer_topk(&t) == MLA_OK, "%s topk: %s", tag, mla_last_error());
        int bad_rows = 0;
        for (int64_t r = 0; r < c.b * c.s_q; ++r) {
            ref_topk(&scores[size_t(r * c.s_k)], c.s_k, topk, want.data(), unused.data());
            bad_rows += !std::equal(want.begin(), want.end(), idx.begin() + r * topk);
        }
        check(bad_rows == 0 && idx.back() == 55, "%s topk %lld: %d rows differ from top-k of the scores",
              tag, (long long)topk, bad_rows);
    }
}

void test_indexers() {
    const int32_t F32 = MLA_FLOAT32, BF = MLA_BFLOAT16, F64 = MLA_FLOAT64, FP8 = MLA_FP8_E4M3;
    // heads not a multiple of the vector width, dims not a multiple of 8, blocks that end early
    for (int64_t h : {1, 3, 9, 17, 64})
        for (int64_t d : {1, 5, 13, 64}) test_indexer(make_ix(1, 11, 23, h, d, 1, F32));
    test_indexer(make_ix(2, 40, 30, 16, 32, 1, F32));   // s_q > s_k: leading rows see nothing
    test_indexer(make_ix(2, 9, 130, 16, 128, 0, F32));  // non-causal, tiles of keys + remainder
    test_indexer(make_ix(1, 70, 70, 16, 24, 1, BF));
    test_indexer(make_ix(1, 17, 61, 16, 40, 1, FP8));   // every FP8 code, NaN codes included
    test_indexer(make_ix(1, 12, 29, 5, 11, 1, FP8));
    test_indexer(make_ix(1, 13, 37, 6, 9, 1, F64));
    test_indexer(make_ix(1, 0, 10, 4, 8, 1, F32));      // no queries
    test_indexer(make_ix(1, 5, 0, 4, 8, 1, F32));       // no keys
}

// Runs this program again with MLA4J_DISABLE_AVX2=1 (the baseline kernels) and adds up the
// child's counts.
void run_baseline(const char *self) {
    std::string cmd = "MLA4J_DISABLE_AVX2=1 '" + std::string(self) + "' 2>&1";
    FILE *child = popen(cmd.c_str(), "r");
    if (!child) {
        check(false, "could not start the baseline run");
        return;
    }
    char line[4096];
    int passed = -1, failed = -1;
    while (std::fgets(line, sizeof line, child)) {
        if (std::sscanf(line, "%d passed, %d failed", &passed, &failed) == 2) continue;
        std::printf("[baseline kernels] %s", line);
    }
    int status = pclose(child);
    check(passed >= 0 && status != -1, "baseline run ended without a summary (status %d)", status);
    if (passed >= 0) {
        g_passed += passed;
        g_failed += failed;
    }
}

}  // namespace

int main(int argc, char **argv) {
    const Layout layouts[] = {
        {MLA_CACHE_V32, 3, 512, 64, 128},    // DeepSeek V3.2
        {MLA_CACHE_MODEL1, 5, 448, 64, 64},  // MODEL1
        {MLA_CACHE_V32, 2, 96, 20, 32},      // small tiles: a vector tail per tile
        {MLA_CACHE_MODEL1, 4, 48, 16, 16},
        {MLA_CACHE_V32, 2, 24, 6, 8},        // tiles narrower than a vector
    };
    for (const Layout &l : layouts)
        for (int32_t dt : {MLA_FLOAT32, MLA_BFLOAT16}) test_quantise(l, dt);
    test_topk();
    test_indexers();
    if (argc > 0 && !std::getenv("MLA4J_DISABLE_AVX2")) run_baseline(argv[0]);
    std::printf("%d passed, %d failed\n", g_passed, g_failed);
    return g_failed == 0 ? 0 : 1;
}
