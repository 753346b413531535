// Native tests of the lightning indexer and top-k (ops.md section 6): scores, fused top-k and
// the backward pass against float64 references and finite differences, ties and corner cases of
// top-k, and the refusals. Every reference here is written independently of the library.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>
#include "mla/mla.h"
#include "host_ops.h"

namespace {

using namespace mla_test;

// ---- section 6: top-k ----------------------------------------------------------------------

// Reference: every finite or +inf entry, sorted by (score descending, index ascending).
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

void test_topk() {
    int64_t rows = 37, n = 50;
    std::vector<float> scores(static_cast<size_t>(rows * n));
    for (int64_t r = 0; r < rows; ++r)
        for (int64_t i = 0; i < n; ++i) {
            float v = float(irand(-4, 4));  // many ties
            int64_t kind = irand(0, 19);
            if (kind == 0) v = NAN;
            if (kind == 1) v = -INFINITY;
            if (kind == 2) v = INFINITY;
            if (r % 5 == 1) v = float(uni(-1, 1));
            scores[size_t(r * n + i)] = v;
        }
    for (int64_t i = 0; i < n; ++i) {
        scores[size_t(2 * n + i)] = -INFINITY;  // row 2: nothing selectable
        scores[size_t(3 * n + i)] = NAN;        // row 3: nothing selectable
        scores[size_t(4 * n + i)] = 0.5f;       // row 4: all tied
    }
    for (int64_t k : {int64_t(1), int64_t(7), int64_t(50), int64_t(64)}) {
        for (int threads : {1, 0}) {
            size_t m = size_t(rows * k);
            std::vector<int32_t> idx(m + 1, 777), ridx(m);
            std::vector<float> val(m + 1, 777.0f), rval(m);
            mla_topk_params p{};
            p.rows = rows;
            p.n = n;
            p.k = k;
            p.scores = scores.data();
            p.indices = idx.data();
            p.values = val.data();
            p.exec = cpu(threads);
            check(mla_topk(&p) == MLA_OK, "topk k %lld: %s", (long long)k, mla_last_error());
            for (int64_t r = 0; r < rows; ++r)
                ref_topk(&scores[size_t(r * n)], n, k, &ridx[size_t(r * k)], &rval[size_t(r * k)]);
            bool same_idx = std::equal(ridx.begin(), ridx.end(), idx.begin());
            bool same_val = true;
            for (size_t i = 0; i < rval.size(); ++i)
                same_val = same_val && (rval[i] == val[i]);
            check(same_idx && same_val && idx.back() == 777 && val.back() == 777.0f,
                  "topk k %lld threads %d: differs from the reference", (long long)k, threads);
        }
    }
    // Ties go to the lower index; k beyond the row pads with -1.
    {
        const float row[6] = {1, 3, 3, NAN, -INFINITY, 1};
        int32_t idx[8];
        float val[8];
        mla_topk_params p{};
        p.rows = 1;
        p.n = 6;
        p.k = 8;
        p.scores = row;
        p.indices = idx;
        p.values = val;
        p.exec = cpu();
        check(mla_topk(&p) == MLA_OK, "topk small");
        const int32_t want[8] = {1, 2, 0, 5, -1, -1, -1, -1};
        check(std::equal(want, want + 8, idx) && val[3] == 1 && val[4] == -INFINITY,
              "topk small: ties by index, NaN and -inf never chosen, -1 padding");
        p.values = nullptr;
        p.k = 2;
        check(mla_topk(&p) == MLA_OK && idx[0] == 1 && idx[1] == 2, "topk without values");
    }
    // Empty rows (n = 0) give only padding; k = 0 writes nothing.
    {
        int32_t idx[3] = {5, 5, 5};
        mla_topk_params p{};
        p.rows = 1;
        p.n = 0;
        p.k = 3;
        p.scores = nullptr;
        p.indices = idx;
        p.exec = cpu();
        check(mla_topk(&p) == MLA_OK && idx[0] == -1 && idx[2] == -1, "topk of an empty row");
    }
    // Bad arguments leave the output alone.
    {
        float row[4] = {1, 2, 3, 4};
        int32_t idx[4] = {9, 9, 9, 9};
        mla_topk_params p{};
        p.rows = 1;
        p.n = 4;
        p.k = -1;
        p.scores = row;
        p.indices = idx;
        p.exec = cpu();
        check_invalid(mla_topk(&p), "topk k < 0");
        p.k = 2;
        p.scores = nullptr;
        check_invalid(mla_topk(&p), "topk null scores");
        p.scores = row;
        p.rows = -2;
        check_invalid(mla_topk(&p), "topk rows < 0");
        p.rows = 1;
        p.indices = nullptr;
        check_invalid(mla_topk(&p), "topk null indices");
        p.indices = idx;
        p.exec = gpu();
        check_unsupported(mla_topk(&p), "topk on a GPU device");
        check_invalid(mla_topk(nullptr), "topk null params");
        check(idx[0] == 9 && idx[3] == 9, "failed topk calls must not write indices");
    }
}

// ---- section 6: lightning indexer ------------------------------------------------------------

struct IndexerCase {
    int64_t b, s_q, s_k, h, d;
    int causal;
    int32_t q_dt, k_dt, w_dt;
    std::vector<uint8_t> q, k, w;
    std::vector<float> q_scale, k_scale;
    std::vector<double> qv, kv, wv;  // the dequantised values

    // Random operand of `rows` rows of d, FP8 with a scale per row or exact in dt.
    static void fill(int32_t dt, int64_t rows, int64_t d, std::vector<uint8_t> *raw,
                     std::vector<float> *scale, std::vector<double> *vals) {
        vals->resize(size_t(rows * d));
        if (dt == MLA_FP8_E4M3) {
            raw->resize(size_t(rows * d));
            scale->resize(size_t(rows));
            for (int64_t r = 0; r < rows; ++r) {
                (*scale)[size_t(r)] = float(uni(0.5, 2.0) / 448.0);
                for (int64_t i = 0; i < d; ++i) {
                    uint8_t v;
                    do v = uint8_t(irand(0, 255)); while ((v & 0x7f) == 0x7f);
                    (*raw)[size_t(r * d + i)] = v;
                    (*vals)[size_t(r * d + i)] = fp8_value(v) * double((*scale)[size_t(r)]);
                }
            }
            return;
        }
        for (auto &v : *vals) v = random_in(dt, -1, 1);
        *raw = encode(*vals, dt);
    }

    IndexerCase(int64_t b_, int64_t s_q_, int64_t s_k_, int64_t h_, int64_t d_, int causal_,
                int32_t q_dt_, int32_t k_dt_, int32_t w_dt_)
        : b(b_), s_q(s_q_), s_k(s_k_), h(h_), d(d_), causal(causal_), q_dt(q_dt_), k_dt(k_dt_),
          w_dt(w_dt_) {
        fill(q_dt, b * s_q * h, d, &q, &q_scale, &qv);
        fill(k_dt, b * s_k, d, &k, &k_scale, &kv);
        std::vector<float> unused;
        fill(w_dt, b * s_q, h, &w, &unused, &wv);
    }

    mla_indexer_params params() const {
        mla_indexer_params p{};
        p.q_dtype = q_dt;
        p.k_dtype = k_dt;
        p.w_dtype = w_dt;
        p.b = b;
        p.s_q = s_q;
        p.s_k = s_k;
        p.h = h;
        p.d = d;
        p.q = q.data();
        p.q_scale = q_dt == MLA_FP8_E4M3 ? q_scale.data() : nullptr;
        p.k = k.data();
        p.k_scale = k_dt == MLA_FP8_E4M3 ? k_scale.data() : nullptr;
        p.w = w.data();
        p.causal = causal;
        p.exec = cpu();
        return p;
    }

    bool visible(int64_t t, int64_t s) const { return !causal || s <= t + s_k - s_q; }

    double z(int64_t bb, int64_t t, int64_t j, int64_t s) const {
        double acc = 0;
        const double *qr = &qv[size_t(((bb * s_q + t) * h + j) * d)];
        const double *kr = &kv[size_t((bb * s_k + s) * d)];
        for (int64_t i = 0; i < d; ++i) acc += qr[i] * kr[i];
        return acc;
    }

    // Reference scores, and for each the magnitude sum_j |w| sum_i |q k| that bounds rounding.
    void reference(std::vector<double> *scores, std::vector<double> *mag) const {
        scores->assign(size_t(b * s_q * s_k), -INFINITY);
        mag->assign(size_t(b * s_q * s_k), 0.0);
        for (int64_t bb = 0; bb < b; ++bb)
            for (int64_t t = 0; t < s_q; ++t)
                for (int64_t s = 0; s < s_k; ++s) {
                    if (!visible(t, s)) continue;
                    double acc = 0, m = 0;
                    for (int64_t j = 0; j < h; ++j) {
                        double zz = z(bb, t, j, s), wj = wv[size_t((bb * s_q + t) * h + j)];
                        if (zz > 0) acc += wj * zz;
                        double a = 0;
                        const double *qr = &qv[size_t(((bb * s_q + t) * h + j) * d)];
                        const double *kr = &kv[size_t((bb * s_k + s) * d)];
                        for (int64_t i = 0; i < d; ++i) a += std::fabs(qr[i] * kr[i]);
                        m += std::fabs(wj) * a;
                    }
                    size_t o = size_t((bb * s_q + t) * s_k + s);
                    (*scores)[o] = acc;
                    (*mag)[o] = m;
                }
    }
};

void test_indexer_forward(const IndexerCase &c) {
    char tag[160];
    std::snprintf(tag, sizeof tag,
                  "indexer b%lld s_q %lld s_k %lld h %lld d %lld causal %d %s/%s/%s",
                  (long long)c.b, (long long)c.s_q, (long long)c.s_k, (long long)c.h,
                  (long long)c.d, c.causal, dt_name(c.q_dt), dt_name(c.k_dt), dt_name(c.w_dt));
    bool f64 = c.q_dt == MLA_FLOAT64 || c.k_dt == MLA_FLOAT64 || c.w_dt == MLA_FLOAT64;
    // Scores are float32: float64 inputs accumulate in double and round once at the store.
    double rel = f64 ? 1e-13 : 1e-5, out_round = f64 ? 0x1p-24 : 0.0;
    std::vector<double> ref, mag;
    c.reference(&ref, &mag);
    int64_t n = c.b * c.s_q * c.s_k;
    std::vector<float> scores(size_t(n) + 1, 1234.5f), scores1(size_t(n) + 1, 1234.5f);
    mla_indexer_params p = c.params();
    p.scores = scores.data();
    check(mla_indexer_scores(&p) == MLA_OK, "%s: %s", tag, mla_last_error());
    p.scores = scores1.data();
    p.exec = cpu(1);
    mla_indexer_scores(&p);
    int bad = 0, bad_mask = 0;
    for (int64_t i = 0; i < n; ++i) {
        if (ref[size_t(i)] == -INFINITY) {
            bad_mask += scores[size_t(i)] != -INFINITY;
            continue;
        }
        bad += !(std::fabs(scores[size_t(i)] - ref[size_t(i)]) <=
                 rel * mag[size_t(i)] + out_round * std::fabs(ref[size_t(i)]) + 1e-30);
    }
    check(bad == 0, "%s: %d scores differ from the float64 reference", tag, bad);
    check(bad_mask == 0 && scores[size_t(n)] == 1234.5f, "%s: %d masked scores not -inf", tag,
          bad_mask);
    check(std::memcmp(scores.data(), scores1.data(), scores.size() * 4) == 0,
          "%s: scores depend on the thread count", tag);

    // Fused top-k: the same selection as top-k of the scores; with topk past the visible keys
    // the tail is -1, rows that see nothing are all -1.
    for (int64_t topk : {int64_t(3), c.s_k + 4}) {
        std::vector<int32_t> idx(static_cast<size_t>(c.b * c.s_q * topk) + 1, 4242);
        mla_indexer_params t = c.params();
        t.topk = topk;
        t.indices = idx.data();
        t.exec = cpu(2);
        check(mla_indexer_topk(&t) == MLA_OK, "%s topk %lld: %s", tag, (long long)topk,
              mla_last_error());
        int bad_sel = 0, bad_order = 0;
        std::vector<int32_t> want(static_cast<size_t>(topk));
        std::vector<float> wv(static_cast<size_t>(topk));
        for (int64_t r = 0; r < c.b * c.s_q; ++r) {
            ref_topk(&scores[size_t(r * c.s_k)], c.s_k, topk, want.data(), wv.data());
            bad_sel += !std::equal(want.begin(), want.end(), idx.begin() + r * topk);
            // Against the float64 scores: no unchosen visible key is clearly better.
            int64_t chosen = 0;
            double worst = INFINITY;
            std::vector<bool> in(static_cast<size_t>(c.s_k), false);
            for (int64_t i = 0; i < topk; ++i) {
                int32_t s = idx[size_t(r * topk + i)];
                if (s < 0) continue;
                ++chosen;
                in[size_t(s)] = true;
                worst = std::min(worst, ref[size_t(r * c.s_k + s)]);
            }
            int64_t visible = 0;
            for (int64_t s = 0; s < c.s_k; ++s) {
                if (ref[size_t(r * c.s_k + s)] == -INFINITY) continue;
                ++visible;
                if (!in[size_t(s)] &&
                    ref[size_t(r * c.s_k + s)] > worst + 1e-5 * mag[size_t(r * c.s_k + s)] + 1e-12)
                    ++bad_order;
            }
            bad_order += chosen != std::min(visible, topk);
        }
        check(bad_sel == 0 && idx.back() == 4242,
              "%s topk %lld: %d rows differ from top-k of the scores", tag, (long long)topk,
              bad_sel);
        check(bad_order == 0, "%s topk %lld: %d selections inconsistent with the reference", tag,
              (long long)topk, bad_order);
    }
}

// L = sum over visible (t, s) of g[t, s] * scores[t, s], differentiated by hand in float64.
void ref_indexer_bwd(const IndexerCase &c, const std::vector<double> &g, std::vector<double> *dq,
                     std::vector<double> *dk, std::vector<double> *dw) {
    dq->assign(c.qv.size(), 0.0);
    dk->assign(c.kv.size(), 0.0);
    dw->assign(c.wv.size(), 0.0);
    for (int64_t bb = 0; bb < c.b; ++bb)
        for (int64_t t = 0; t < c.s_q; ++t)
            for (int64_t s = 0; s < c.s_k; ++s) {
                if (!c.visible(t, s)) continue;
                double gs = g[size_t((bb * c.s_q + t) * c.s_k + s)];
                for (int64_t j = 0; j < c.h; ++j) {
                    double zz = c.z(bb, t, j, s);
                    if (zz <= 0) continue;
                    size_t qr = size_t(((bb * c.s_q + t) * c.h + j) * c.d);
                    size_t kr = size_t((bb * c.s_k + s) * c.d);
                    double wj = c.wv[size_t((bb * c.s_q + t) * c.h + j)];
                    (*dw)[size_t((bb * c.s_q + t) * c.h + j)] += gs * zz;
                    for (int64_t i = 0; i < c.d; ++i) {
                        (*dq)[qr + size_t(i)] += gs * wj * c.kv[kr + size_t(i)];
                        (*dk)[kr + size_t(i)] += gs * wj * c.qv[qr + size_t(i)];
                    }
                }
            }
}

double rel_err(const float *a, const std::vector<double> &r) {
    double num = 0, den = 0;
    for (size_t i = 0; i < r.size(); ++i) {
        num += (a[i] - r[i]) * (a[i] - r[i]);
        den += r[i] * r[i];
    }
    return std::sqrt(num) / std::max(std::sqrt(den), 1e-300);
}

void test_indexer_backward(const IndexerCase &c) {
    char tag[160];
    std::snprintf(tag, sizeof tag, "indexer bwd s_q %lld s_k %lld causal %d %s/%s/%s",
                  (long long)c.s_q, (long long)c.s_k, c.causal, dt_name(c.q_dt), dt_name(c.k_dt),
                  dt_name(c.w_dt));
    bool f64 = c.q_dt == MLA_FLOAT64;
    int64_t n = c.b * c.s_q * c.s_k;
    std::vector<float> g(static_cast<size_t>(n));
    std::vector<double> gd(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) {
        g[size_t(i)] = irand(0, 3) == 0 ? 0.0f : float(uni(-1, 1));
        gd[size_t(i)] = g[size_t(i)];
    }
    // Masked positions hold NaN: they must not reach the gradients.
    for (int64_t bb = 0; bb < c.b; ++bb)
        for (int64_t t = 0; t < c.s_q; ++t)
            for (int64_t s = 0; s < c.s_k; ++s)
                if (!c.visible(t, s)) g[size_t((bb * c.s_q + t) * c.s_k + s)] = NAN;
    std::vector<double> rdq, rdk, rdw;
    ref_indexer_bwd(c, gd, &rdq, &rdk, &rdw);
    std::vector<float> dq(rdq.size() + 1, NAN), dk(rdk.size() + 1, NAN), dw(rdw.size() + 1, NAN);
    dq.back() = dk.back() = dw.back() = 77.0f;
    mla_indexer_params p = c.params();
    p.dscores = g.data();
    p.dq = dq.data();
    p.dk = dk.data();
    p.dw = dw.data();
    check(mla_indexer_scores_bwd(&p) == MLA_OK, "%s: %s", tag, mla_last_error());
    // float32 gradients: float64 inputs err only by the final rounding (2^-24 relative).
    double tol = f64 ? 1e-7 : 1e-5;
    double eq = rel_err(dq.data(), rdq), ek = rel_err(dk.data(), rdk), ew = rel_err(dw.data(), rdw);
    check(eq < tol && ek < tol && ew < tol,
          "%s: relative errors dq %.3g dk %.3g dw %.3g above %.0e", tag, eq, ek, ew, tol);
    check(dq.back() == 77.0f && dk.back() == 77.0f && dw.back() == 77.0f,
          "%s: wrote past an output", tag);
    bool finite = true;
    for (size_t i = 0; i + 1 < dq.size(); ++i) finite = finite && std::isfinite(dq[i]);
    for (size_t i = 0; i + 1 < dk.size(); ++i) finite = finite && std::isfinite(dk[i]);
    for (size_t i = 0; i + 1 < dw.size(); ++i) finite = finite && std::isfinite(dw[i]);
    check(finite, "%s: every gradient written and finite (NaN at masked positions ignored)", tag);
}

// Central differences of L = sum g * scores through mla_indexer_scores (float64 inputs)
// against the analytic gradients: checks the math of the backward, not only its agreement
// with the hand-written reference.
void test_indexer_finite_differences() {
    IndexerCase c(1, 4, 6, 2, 5, 1, MLA_FLOAT64, MLA_FLOAT64, MLA_FLOAT64);
    int64_t n = c.s_q * c.s_k;
    std::vector<float> g(static_cast<size_t>(n));
    for (auto &v : g) v = float(uni(-1, 1));
    auto loss = [&](IndexerCase &cc) {
        std::vector<float> sc(static_cast<size_t>(n));
        mla_indexer_params p = cc.params();
        p.scores = sc.data();
        mla_indexer_scores(&p);
        double l = 0;
        for (int64_t i = 0; i < n; ++i)
            if (sc[size_t(i)] != -INFINITY) l += double(g[size_t(i)]) * sc[size_t(i)];
        return l;
    };
    // Scores are float32 outputs: use a step large enough for their precision.
    std::vector<float> dq(c.qv.size()), dk(c.kv.size()), dw(c.wv.size());
    mla_indexer_params p = c.params();
    p.dscores = g.data();
    p.dq = dq.data();
    p.dk = dk.data();
    p.dw = dw.data();
    mla_indexer_scores_bwd(&p);
    // The loss is piecewise linear in each single input, so central differences are exact
    // unless a step crosses a relu kink; probes near one are skipped.
    double eps = 1e-2, worst = 0;
    int probes = 0;
    auto near_kink = [&](bool is_q, size_t i) {
        if (is_q) {
            int64_t row = int64_t(i) / c.d, e = int64_t(i) % c.d;
            int64_t t = row / c.h % c.s_q, j = row % c.h;
            for (int64_t s = 0; s < c.s_k; ++s)
                if (std::fabs(c.z(0, t, j, s)) < 2 * eps * std::fabs(c.kv[size_t(s * c.d + e)]))
                    return true;
            return false;
        }
        int64_t s = int64_t(i) / c.d, e = int64_t(i) % c.d;
        for (int64_t t = 0; t < c.s_q; ++t)
            for (int64_t j = 0; j < c.h; ++j)
                if (std::fabs(c.z(0, t, j, s)) <
                    2 * eps * std::fabs(c.qv[size_t((t * c.h + j) * c.d + e)]))
                    return true;
        return false;
    };
    auto probe = [&](std::vector<double> &vals, std::vector<uint8_t> &raw, size_t i,
                     double analytic) {
        ++probes;
        double keep = vals[i];
        auto set = [&](double v) {
            vals[i] = v;
            std::memcpy(&raw[i * 8], &v, 8);
        };
        set(keep + eps);
        double lp = loss(c);
        set(keep - eps);
        double lm = loss(c);
        set(keep);
        double num = (lp - lm) / (2 * eps);
        worst = std::max(worst, std::fabs(num - analytic) / (1 + std::fabs(num)));
    };
    for (size_t i = 0; i < c.qv.size(); ++i)
        if (!near_kink(true, i)) probe(c.qv, c.q, i, dq[i]);
    for (size_t i = 0; i < c.kv.size(); ++i)
        if (!near_kink(false, i)) probe(c.kv, c.k, i, dk[i]);
    for (size_t i = 0; i < c.wv.size(); ++i) probe(c.wv, c.w, i, dw[i]);
    check(worst < 1e-4 && probes > int(c.qv.size() + c.kv.size()) / 2,
          "indexer backward vs central differences: worst relative error %.3g over %d probes",
          worst, probes);
}

// z exactly 0 at two (head, key) pairs: relu(0) = 0 and relu'(0) = 0. Worked by hand:
// q heads (1, 0), (1, 1); keys (0, 1), (1, -1); w (2, 3); dscores (1, 1).
void test_indexer_relu_kink() {
    const float q[4] = {1, 0, 1, 1}, k[4] = {0, 1, 1, -1}, w[2] = {2, 3}, g[2] = {1, 1};
    float scores[2], dq[4], dk[4], dw[2];
    mla_indexer_params p{};
    p.q_dtype = p.k_dtype = p.w_dtype = MLA_FLOAT32;
    p.b = p.s_q = 1;
    p.s_k = p.h = p.d = 2;
    p.q = q;
    p.k = k;
    p.w = w;
    p.scores = scores;
    p.dscores = g;
    p.dq = dq;
    p.dk = dk;
    p.dw = dw;
    p.exec = cpu();
    check(mla_indexer_scores(&p) == MLA_OK && scores[0] == 3 && scores[1] == 2,
          "indexer relu at z = 0: scores (3, 2), got (%g, %g)", scores[0], scores[1]);
    check(mla_indexer_scores_bwd(&p) == MLA_OK, "indexer relu kink bwd: %s", mla_last_error());
    const float wq[4] = {2, -2, 0, 3}, wk[4] = {3, 3, 2, 0}, ww[2] = {1, 1};
    check(std::equal(wq, wq + 4, dq) && std::equal(wk, wk + 4, dk) && std::equal(ww, ww + 2, dw),
          "indexer relu'(0) = 0: dq (%g %g %g %g) dk (%g %g %g %g) dw (%g %g)", dq[0], dq[1],
          dq[2], dq[3], dk[0], dk[1], dk[2], dk[3], dw[0], dw[1]);
}

// Gradients do not depend on the number of threads.
void test_indexer_bwd_threads() {
    IndexerCase c(2, 48, 200, 4, 32, 1, MLA_BFLOAT16, MLA_FLOAT32, MLA_FLOAT32);
    int64_t n = c.b * c.s_q * c.s_k;
    std::vector<float> g(static_cast<size_t>(n));
    for (auto &v : g) v = float(uni(-1, 1));
    std::vector<float> out[2][3];
    for (int run = 0; run < 2; ++run) {
        out[run][0].assign(c.qv.size(), NAN);
        out[run][1].assign(c.kv.size(), NAN);
        out[run][2].assign(c.wv.size(), NAN);
        mla_indexer_params p = c.params();
        p.dscores = g.data();
        p.dq = out[run][0].data();
        p.dk = out[run][1].data();
        p.dw = out[run][2].data();
        p.exec = cpu(run == 0 ? 1 : 2);
        check(mla_indexer_scores_bwd(&p) == MLA_OK, "indexer bwd threads: %s", mla_last_error());
    }
    bool same = true;
    for (int i = 0; i < 3; ++i)
        same = same && std::memcmp(out[0][i].data(), out[1][i].data(), out[0][i].size() * 4) == 0;
    check(same, "indexer bwd: 1 thread and 2 threads give different gradients");
}

void test_indexer_bad_args() {
    IndexerCase c(1, 3, 4, 2, 8, 1, MLA_FP8_E4M3, MLA_FLOAT32, MLA_FLOAT32);
    std::vector<float> scores(12, 3.0f);
    std::vector<int32_t> idx(6, 3);
    mla_indexer_params p = c.params();
    p.scores = scores.data();
    p.topk = 2;
    p.indices = idx.data();
    mla_indexer_params q = p;
    q.q_scale = nullptr;
    check_invalid(mla_indexer_scores(&q), "indexer fp8 q without q_scale");
    q = p;
    q.k_scale = c.q_scale.data();
    check_invalid(mla_indexer_scores(&q), "indexer k_scale with float32 k");
    q = p;
    q.w_dtype = MLA_FP8_E4M3;
    check_invalid(mla_indexer_scores(&q), "indexer fp8 w");
    q = p;
    q.h = 0;
    check_invalid(mla_indexer_scores(&q), "indexer h 0");
    q = p;
    q.k_dtype = MLA_INT32;
    check_invalid(mla_indexer_topk(&q), "indexer topk int32 k");
    q = p;
    q.topk = -3;
    check_invalid(mla_indexer_topk(&q), "indexer topk < 0");
    q = p;
    q.scores = nullptr;
    check_invalid(mla_indexer_scores(&q), "indexer null scores");
    q = p;
    check_invalid(mla_indexer_scores_bwd(&q), "indexer bwd without dscores and gradients");
    check_invalid(mla_indexer_scores(nullptr), "indexer null params");
    q = p;
    q.exec = gpu();
    check_unsupported(mla_indexer_scores(&q), "indexer on a GPU device");
    check_unsupported(mla_indexer_topk(&q), "indexer topk on a GPU device");
    check(std::all_of(scores.begin(), scores.end(), [](float v) { return v == 3.0f; }) &&
              std::all_of(idx.begin(), idx.end(), [](int32_t v) { return v == 3; }),
          "failed indexer calls must not write outputs");
}

}  // namespace

int main() {
    test_topk();

    const int32_t F32 = MLA_FLOAT32, F64 = MLA_FLOAT64, BF = MLA_BFLOAT16, F16 = MLA_FLOAT16,
                  FP8 = MLA_FP8_E4M3;
    test_indexer_forward(IndexerCase(2, 5, 9, 3, 20, 1, F32, F32, F32));
    test_indexer_forward(IndexerCase(2, 5, 9, 3, 20, 0, F32, F32, F32));
    test_indexer_forward(IndexerCase(1, 9, 5, 2, 16, 1, F32, F32, F32));  // s_q > s_k: empty rows
    test_indexer_forward(IndexerCase(2, 40, 70, 4, 32, 1, BF, BF, F16));  // several key tiles
    test_indexer_forward(IndexerCase(1, 6, 6, 2, 7, 1, F64, F64, F64));
    test_indexer_forward(IndexerCase(2, 4, 37, 3, 24, 1, FP8, FP8, F32));
    test_indexer_forward(IndexerCase(1, 3, 11, 2, 8, 0, FP8, BF, BF));
    test_indexer_forward(IndexerCase(1, 0, 5, 2, 8, 1, F32, F32, F32));   // no queries
    test_indexer_forward(IndexerCase(1, 3, 0, 2, 8, 1, F32, F32, F32));   // no keys
    test_indexer_forward(IndexerCase(2, 64, 300, 4, 32, 1, F32, FP8, BF));  // many rows

    test_indexer_backward(IndexerCase(2, 5, 9, 3, 20, 1, F32, F32, F32));
    test_indexer_backward(IndexerCase(1, 9, 5, 2, 16, 1, F32, F32, F32));
    test_indexer_backward(IndexerCase(2, 6, 70, 2, 12, 1, F32, F32, F32));
    test_indexer_backward(IndexerCase(1, 7, 7, 3, 9, 0, F64, F64, F64));
    test_indexer_backward(IndexerCase(1, 4, 40, 2, 16, 1, FP8, FP8, BF));
    test_indexer_backward(IndexerCase(1, 3, 0, 2, 8, 1, F32, F32, F32));   // no keys
    test_indexer_backward(IndexerCase(1, 0, 4, 2, 8, 1, F32, F32, F32));   // no queries
    test_indexer_finite_differences();
    test_indexer_relu_kink();
    test_indexer_bwd_threads();
    test_indexer_bad_args();

    std::printf("%d passed, %d failed\n", g_passed, g_failed);
    return g_failed == 0 ? 0 : 1;
}
