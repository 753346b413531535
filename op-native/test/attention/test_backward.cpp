// Native tests of the attention backward ops: mla_attention_bwd (ops.md section 4) and
// mla_sparse_prefill_bwd (section 3).
//
// The test makes its own forward in float64 (full score rows, softmax) for the out and lse
// inputs, then checks the library's gradients against
//  (a) an analytic float64 reference, derived through o = g * softmax(S) V with the sink gate
//      g = 1 / (1 + exp(sink - lse)) and the explicit transpose of the VVPA rotation, and
//  (b) central finite differences of L = sum(dout * out) of the float64 forward.
// Outputs are poisoned (NaN) and guarded before each call: every element must be written and
// nothing past the end. Bad arguments must be refused with a message and nothing written.
#include <cmath>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "mla/mla.h"
#include "test_buffers.h"

namespace {

using mla_test::kInf;
using mla_test::g_failed;
using mla_test::g_passed;
using mla_test::check;

using mla_test::bf16_bits;
using mla_test::bf16_value;
using mla_test::elem_bytes;
using mla_test::f16_bits;
using mla_test::f16_value;

// A typed buffer: `n` elements, then a guard of kGuard elements that must stay untouched.
constexpr int64_t kGuard = 16;

struct Buf {
    int32_t dtype = MLA_FLOAT64;
    int64_t n = 0;
    std::vector<unsigned char> bytes;

    Buf() = default;
    Buf(int32_t dt, int64_t count) : dtype(dt), n(count) {
        bytes.resize(size_t((count + kGuard) * elem_bytes(dt)));
        poison();
    }
    void *data() { return bytes.data(); }
    void poison() {  // NaN in every element and the guard
        for (int64_t i = 0; i < n + kGuard; ++i) set(i, std::nan(""));
    }
    void set(int64_t i, double x) {
        unsigned char *p = bytes.data() + i * elem_bytes(dtype);
        if (dtype == MLA_FLOAT64) {
            std::memcpy(p, &x, 8);
        } else if (dtype == MLA_FLOAT32) {
            float f = float(x);
            std::memcpy(p, &f, 4);
        } else {
            uint16_t h = dtype == MLA_FLOAT16 ? f16_bits(x) : bf16_bits(x);
            std::memcpy(p, &h, 2);
        }
    }
    double get(int64_t i) const {
        const unsigned char *p = bytes.data() + i * elem_bytes(dtype);
        if (dtype == MLA_FLOAT64) {
            double x;
            std::memcpy(&x, p, 8);
            return x;
        }
        if (dtype == MLA_FLOAT32) {
            float f;
            std::memcpy(&f, p, 4);
            return f;
        }
        uint16_t h;
        std::memcpy(&h, p, 2);
        return dtype == MLA_FLOAT16 ? f16_value(h) : bf16_value(h);
    }
    std::vector<double> values() const {
        std::vector<double> v(static_cast<size_t>(n));
        for (int64_t i = 0; i < n; ++i) v[size_t(i)] = get(i);
        return v;
    }
    bool all_written() const {
        for (int64_t i = 0; i < n; ++i)
            if (std::isnan(get(i))) return false;
        return true;
    }
    bool guard_intact() const {
        for (int64_t i = n; i < n + kGuard; ++i)
            if (!std::isnan(get(i))) return false;
        return true;
    }
};

// Rounds every value to what the dtype can hold.
void round_to(int32_t dt, std::vector<double> &v) {
    for (double &x : v) {
        if (dt == MLA_FLOAT32) x = double(float(x));
        if (dt == MLA_BFLOAT16) x = bf16_value(bf16_bits(x));
        if (dt == MLA_FLOAT16) x = f16_value(f16_bits(x));
    }
}

std::vector<double> randn(std::mt19937_64 &rng, int64_t n, double sd = 1.0) {
    std::normal_distribution<double> nd(0.0, sd);
    std::vector<double> v(static_cast<size_t>(n));
    for (double &x : v) x = nd(rng);
    return v;
}

// ||a - b|| <= rtol ||b|| + atol
bool close(const std::vector<double> &a, const std::vector<double> &b, double rtol, double atol,
           double *rel) {
    double num = 0, den = 0;
    for (size_t i = 0; i < a.size(); ++i) {
        double d = a[i] - b[i];
        num += d * d;
        den += b[i] * b[i];
    }
    num = std::sqrt(num);
    den = std::sqrt(den);
    *rel = num / std::max(den, 1e-300);
    return a.size() == b.size() && num <= rtol * den + atol && std::isfinite(num);
}

void expect_close(const char *test, const char *what, const std::vector<double> &got,
                  const std::vector<double> &want, double rtol, double atol) {
    double rel;
    bool ok = close(got, want, rtol, atol, &rel);
    check(ok, "%s: %s differs: relative error %.3g (rtol %.1g, atol %.1g)", test, what, rel,
          rtol, atol);
}

// ---- the VVPA rotation --------------------------------------------------------------------------

struct Rotation {
    int32_t rope_dim = 0;  // 0: none
    int32_t style = MLA_ROPE_INTERLEAVED;
    double theta = 10000.0;
    std::vector<int32_t> positions;

    bool on() const { return rope_dim > 0; }

    // Entries of the 2x2 block of pair i of R(-pos) and the dims it acts on (last rope dims).
    void block(int64_t d, int32_t pos, int64_t i, int64_t *i0, int64_t *i1, double m[4]) const {
        int64_t start = d - rope_dim, half = rope_dim / 2;
        *i0 = style == MLA_ROPE_INTERLEAVED ? start + 2 * i : start + i;
        *i1 = style == MLA_ROPE_INTERLEAVED ? *i0 + 1 : start + i + half;
        double a = -double(pos) * std::pow(theta, -2.0 * double(i) / double(rope_dim));
        m[0] = std::cos(a), m[1] = -std::sin(a), m[2] = std::sin(a), m[3] = std::cos(a);
    }
    // x <- R(-pos) x (the forward's output rotation).
    void forward(double *x, int64_t d, int32_t pos) const {
        for (int64_t i = 0; i < rope_dim / 2; ++i) {
            int64_t i0, i1;
            double m[4];
            block(d, pos, i, &i0, &i1, m);
            double x0 = x[i0], x1 = x[i1];
            x[i0] = m[0] * x0 + m[1] * x1;
            x[i1] = m[2] * x0 + m[3] * x1;
        }
    }
    // x <- R(-pos)^T x (the chain rule through the rotation).
    void transpose(double *x, int64_t d, int32_t pos) const {
        for (int64_t i = 0; i < rope_dim / 2; ++i) {
            int64_t i0, i1;
            double m[4];
            block(d, pos, i, &i0, &i1, m);
            double x0 = x[i0], x1 = x[i1];
            x[i0] = m[0] * x0 + m[2] * x1;
            x[i1] = m[1] * x0 + m[3] * x1;
        }
    }
    mla_out_rotation desc() const {
        mla_out_rotation r{};
        if (!on()) return r;
        r.positions = positions.data();
        r.rope.rope_dim = rope_dim;
        r.rope.rope_offset = -1;
        r.rope.style = style;
        r.rope.theta = theta;
        return r;
    }
};

// The sink gate of one row: out = gate * softmax output.
double sink_gate(const std::vector<double> &sink, int64_t h, double lse) {
    if (sink.empty()) return 1.0;
    double s = sink[size_t(h)];
    if (s == kInf) return 0.0;
    return 1.0 / (1.0 + std::exp(s - lse));
}

// d gate / d sink
double sink_gate_grad(const std::vector<double> &sink, int64_t h, double lse) {
    if (sink.empty() || std::isinf(sink[size_t(h)])) return 0.0;
    double g = sink_gate(sink, h, lse);
    return -g * (1.0 - g);
}

// ================================================================================================
// Dense attention
// ================================================================================================

struct Dense {
    std::string name;
    int64_t b = 1, s_q = 0, s_k = 0, h_q = 1, h_kv = 1, d_qk = 8, d_v = 8;
    std::vector<int32_t> cu_q, cu_k;  // set: variable length
    bool causal = false, alias = false;
    int64_t window = 0;
    std::vector<double> sink;         // float32 values (the op's type); empty: none
    Rotation rot;
    double scale = 0;
    // Packed [rows, heads, dims] in double; v unused when aliased (the value is k's first d_v).
    std::vector<double> q, k, v, dout;

    bool varlen() const { return !cu_q.empty(); }
    int64_t rows_q() const { return varlen() ? cu_q.back() : b * s_q; }
    int64_t rows_k() const { return varlen() ? cu_k.back() : b * s_k; }
    int64_t q0(int64_t s) const { return varlen() ? cu_q[size_t(s)] : s * s_q; }
    int64_t k0(int64_t s) const { return varlen() ? cu_k[size_t(s)] : s * s_k; }
    int64_t sq(int64_t s) const { return varlen() ? cu_q[size_t(s) + 1] - cu_q[size_t(s)] : s_q; }
    int64_t sk(int64_t s) const { return varlen() ? cu_k[size_t(s) + 1] - cu_k[size_t(s)] : s_k; }
    double kval(int64_t row, int64_t hk, int64_t c) const { return k[size_t((row * h_kv + hk) * d_qk + c)]; }
    double vval(int64_t row, int64_t hk, int64_t c) const {
        return alias ? kval(row, hk, c) : v[size_t((row * h_kv + hk) * d_v + c)];
    }
    bool visible(int64_t s, int64_t i, int64_t j) const {
        int64_t diag = i + sk(s) - sq(s);
        if (causal && j > diag) return false;
        if (window > 0 && j <= diag - window) return false;
        return true;
    }
};

// Fills q, k, v, dout with random values (rounded to dt) and the rotation positions.
void fill(Dense &c, std::mt19937_64 &rng, int32_t dt) {
    // softmax_scale and the sinks are float32 in the ABI: the reference uses exactly those.
    if (c.scale == 0) c.scale = double(float(1.0 / std::sqrt(double(c.d_qk))));
    for (double &x : c.sink) x = double(float(x));
    c.q = randn(rng, c.rows_q() * c.h_q * c.d_qk);
    c.k = randn(rng, c.rows_k() * c.h_kv * c.d_qk);
    c.v = c.alias ? std::vector<double>() : randn(rng, c.rows_k() * c.h_kv * c.d_v);
    c.dout = randn(rng, c.rows_q() * c.h_q * c.d_v);
    round_to(dt, c.q);
    round_to(dt, c.k);
    round_to(dt, c.v);
    round_to(dt, c.dout);
    if (c.rot.on()) {
        c.rot.positions.resize(size_t(c.rows_q()));
        std::uniform_int_distribution<int32_t> pos(0, 5000);
        for (auto &p : c.rot.positions) p = pos(rng);
    }
}

// The float64 forward: out [rows_q, h_q, d_v] (gated and rotated) and lse [rows_q, h_q].
void dense_forward(const Dense &c, std::vector<double> &out, std::vector<double> &lse) {
    const int64_t G = c.h_q / c.h_kv;
    out.assign(size_t(c.rows_q() * c.h_q * c.d_v), 0.0);
    lse.assign(size_t(c.rows_q() * c.h_q), kInf);
    std::vector<double> s;
    for (int64_t b = 0; b < c.b; ++b)
        for (int64_t i = 0; i < c.sq(b); ++i)
            for (int64_t h = 0; h < c.h_q; ++h) {
                int64_t row = c.q0(b) + i, hk = h / G;
                const double *q = &c.q[size_t((row * c.h_q + h) * c.d_qk)];
                s.assign(size_t(c.sk(b)), -kInf);
                double m = -kInf;
                for (int64_t j = 0; j < c.sk(b); ++j) {
                    if (!c.visible(b, i, j)) continue;
                    double x = 0;
                    for (int64_t d = 0; d < c.d_qk; ++d) x += q[d] * c.kval(c.k0(b) + j, hk, d);
                    s[size_t(j)] = c.scale * x;
                    m = std::max(m, s[size_t(j)]);
                }
                if (m == -kInf) continue;  // no visible key: out 0, lse +inf
                double sum = 0;
                for (int64_t j = 0; j < c.sk(b); ++j) sum += std::exp(s[size_t(j)] - m);
                double l = m + std::log(sum);
                double gate = sink_gate(c.sink, h, l);
                double *o = &out[size_t((row * c.h_q + h) * c.d_v)];
                for (int64_t j = 0; j < c.sk(b); ++j) {
                    double pj = std::exp(s[size_t(j)] - l) * gate;
                    if (pj == 0) continue;
                    for (int64_t d = 0; d < c.d_v; ++d) o[d] += pj * c.vval(c.k0(b) + j, hk, d);
                }
                if (c.rot.on()) c.rot.forward(o, c.d_v, c.rot.positions[size_t(row)]);
                lse[size_t(row * c.h_q + h)] = l;
            }
}

double dense_loss(const Dense &c) {
    std::vector<double> out, lse;
    dense_forward(c, out, lse);
    double L = 0;
    for (size_t i = 0; i < out.size(); ++i) L += c.dout[i] * out[i];
    return L;
}

struct DenseGrads {
    std::vector<double> dq, dk, dv, dsink;  // dv empty when aliased (merged into dk)
};

// The analytic reference: chain rule through rotation, gate and a plain softmax.
DenseGrads dense_reference(const Dense &c) {
    const int64_t G = c.h_q / c.h_kv;
    DenseGrads g;
    g.dq.assign(c.q.size(), 0.0);
    g.dk.assign(c.k.size(), 0.0);
    std::vector<double> dv(size_t(c.rows_k() * c.h_kv * c.d_v), 0.0);
    g.dsink.assign(size_t(c.h_q), 0.0);
    for (int64_t b = 0; b < c.b; ++b)
        for (int64_t i = 0; i < c.sq(b); ++i)
            for (int64_t h = 0; h < c.h_q; ++h) {
                int64_t row = c.q0(b) + i, hk = h / G, n = c.sk(b);
                const double *q = &c.q[size_t((row * c.h_q + h) * c.d_qk)];
                std::vector<int64_t> keys;
                for (int64_t j = 0; j < n; ++j)
                    if (c.visible(b, i, j)) keys.push_back(c.k0(b) + j);
                if (keys.empty()) continue;
                std::vector<double> S(keys.size()), P(keys.size());
                double m = -kInf;
                for (size_t a = 0; a < keys.size(); ++a) {
                    double x = 0;
                    for (int64_t d = 0; d < c.d_qk; ++d) x += q[d] * c.kval(keys[a], hk, d);
                    S[a] = c.scale * x;
                    m = std::max(m, S[a]);
                }
                double z = 0;
                for (size_t a = 0; a < keys.size(); ++a) z += std::exp(S[a] - m);
                double lse = m + std::log(z);
                for (size_t a = 0; a < keys.size(); ++a) P[a] = std::exp(S[a] - m) / z;
                std::vector<double> o(size_t(c.d_v), 0.0);
                for (size_t a = 0; a < keys.size(); ++a)
                    for (int64_t d = 0; d < c.d_v; ++d) o[size_t(d)] += P[a] * c.vval(keys[a], hk, d);
                // dL/d(gated, unrotated output)
                std::vector<double> dy(&c.dout[size_t((row * c.h_q + h) * c.d_v)],
                                       &c.dout[size_t((row * c.h_q + h + 1) * c.d_v)]);
                if (c.rot.on()) c.rot.transpose(dy.data(), c.d_v, c.rot.positions[size_t(row)]);
                double gate = sink_gate(c.sink, h, lse);
                double dy_o = 0;
                for (int64_t d = 0; d < c.d_v; ++d) dy_o += dy[size_t(d)] * o[size_t(d)];
                g.dsink[size_t(h)] += dy_o * sink_gate_grad(c.sink, h, lse);
                // out = gate(lse(S)) * o(S): the gate also depends on the scores through lse;
                // d gate / d S_a = gate (1 - gate) P_a.
                double dgate_dS = c.sink.empty() || std::isinf(c.sink[size_t(h)])
                                      ? 0.0 : gate * (1.0 - gate);
                std::vector<double> dP(keys.size());
                for (size_t a = 0; a < keys.size(); ++a) {
                    double x = 0;
                    for (int64_t d = 0; d < c.d_v; ++d) x += gate * dy[size_t(d)] * c.vval(keys[a], hk, d);
                    dP[a] = x;
                }
                for (size_t a = 0; a < keys.size(); ++a) {
                    // Softmax Jacobian: dS_a = sum_b dP_b P_b (delta_ab - P_a).
                    double dS = 0;
                    for (size_t bb = 0; bb < keys.size(); ++bb)
                        dS += dP[bb] * P[bb] * ((a == bb ? 1.0 : 0.0) - P[a]);
                    dS += dy_o * dgate_dS * P[a];
                    for (int64_t d = 0; d < c.d_qk; ++d) {
                        g.dq[size_t((row * c.h_q + h) * c.d_qk + d)] += c.scale * dS * c.kval(keys[a], hk, d);
                        g.dk[size_t((keys[a] * c.h_kv + hk) * c.d_qk + d)] += c.scale * dS * q[d];
                    }
                    for (int64_t d = 0; d < c.d_v; ++d)
                        dv[size_t((keys[a] * c.h_kv + hk) * c.d_v + d)] += gate * P[a] * dy[size_t(d)];
                }
            }
    if (c.alias) {
        for (int64_t r = 0; r < c.rows_k() * c.h_kv; ++r)
            for (int64_t d = 0; d < c.d_v; ++d) g.dk[size_t(r * c.d_qk + d)] += dv[size_t(r * c.d_v + d)];
    } else {
        g.dv = dv;
    }
    return g;
}

// Central differences of dense_loss for q, k, v and the finite sinks.
DenseGrads dense_finite_differences(Dense c) {
    const double eps = 1e-5;
    auto diff = [&](std::vector<double> &x) {
        std::vector<double> g(x.size());
        for (size_t i = 0; i < x.size(); ++i) {
            double x0 = x[i];
            x[i] = x0 + eps;
            double lp = dense_loss(c);
            x[i] = x0 - eps;
            double lm = dense_loss(c);
            x[i] = x0;
            g[i] = (lp - lm) / (2 * eps);
        }
        return g;
    };
    DenseGrads g;
    g.dq = diff(c.q);
    g.dk = diff(c.k);
    if (!c.alias) g.dv = diff(c.v);
    g.dsink.assign(size_t(c.h_q), 0.0);
    for (int64_t h = 0; h < int64_t(c.sink.size()); ++h) {
        double s0 = c.sink[size_t(h)];
        if (std::isinf(s0)) continue;
        c.sink[size_t(h)] = s0 + eps;
        double lp = dense_loss(c);
        c.sink[size_t(h)] = s0 - eps;
        double lm = dense_loss(c);
        c.sink[size_t(h)] = s0;
        g.dsink[size_t(h)] = (lp - lm) / (2 * eps);
    }
    return g;
}

// Library call options.
struct CallOpts {
    int32_t dtype = MLA_FLOAT64;
    int64_t pad = 0;       // extra elements after each head row and each token (strided inputs)
    int threads = 0;
};

// Copies packed [rows, heads, d] into a buffer with head stride d + pad and token stride
// heads * (d + pad) + pad; the padding holds NaN, which must never be read.
struct Strided {
    Buf buf;
    int64_t stride[3] = {0, 0, 0};
};

Strided pack(const std::vector<double> &x, int64_t rows, int64_t heads, int64_t d, int32_t dt,
             int64_t pad, int64_t rows_per_batch) {
    Strided s;
    int64_t hs = d + pad, ts = heads * hs + pad;
    s.buf = Buf(dt, std::max<int64_t>(rows * ts, 1));
    s.stride[0] = rows_per_batch * ts;
    s.stride[1] = ts;
    s.stride[2] = hs;
    for (int64_t r = 0; r < rows; ++r)
        for (int64_t h = 0; h < heads; ++h)
            for (int64_t e = 0; e < d; ++e) s.buf.set(r * ts + h * hs + e, x[size_t((r * heads + h) * d + e)]);
    return s;
}

// Everything one library call needs, kept alive together.
struct DenseCall {
    Strided q, k, v, out, dout;
    std::vector<float> lse, sink;
    Buf dq, dk, dv;
    std::vector<float> dsink;
    mla_out_rotation rotation{};
    mla_attention_params p{};
};

// Builds the call: out and lse from the float64 forward (out rounded to the dtype).
void make_dense_call(const Dense &c, const CallOpts &o, DenseCall &call) {
    std::vector<double> out, lse;
    dense_forward(c, out, lse);
    int64_t rq = c.rows_q(), rk = c.rows_k();
    call.q = pack(c.q, rq, c.h_q, c.d_qk, o.dtype, o.pad, c.s_q);
    call.k = pack(c.k, rk, c.h_kv, c.d_qk, o.dtype, o.pad, c.s_k);
    if (!c.alias) call.v = pack(c.v, rk, c.h_kv, c.d_v, o.dtype, o.pad, c.s_k);
    call.out = pack(out, rq, c.h_q, c.d_v, o.dtype, o.pad, c.s_q);
    call.dout = pack(c.dout, rq, c.h_q, c.d_v, o.dtype, o.pad, c.s_q);
    call.lse.assign(size_t(rq * c.h_q), 0.0f);
    for (int64_t b = 0; b < c.b; ++b)
        for (int64_t i = 0; i < c.sq(b); ++i)
            for (int64_t h = 0; h < c.h_q; ++h) {
                int64_t row = c.q0(b) + i;
                size_t at = c.varlen() ? size_t(h * rq + row) : size_t((b * c.h_q + h) * c.s_q + i);
                call.lse[at] = float(lse[size_t(row * c.h_q + h)]);
            }
    call.dq = Buf(o.dtype, rq * c.h_q * c.d_qk);
    call.dk = Buf(o.dtype, rk * c.h_kv * c.d_qk);
    if (!c.alias) call.dv = Buf(o.dtype, rk * c.h_kv * c.d_v);
    call.dsink.assign(size_t(c.h_q) + kGuard, std::nanf(""));
    call.rotation = c.rot.desc();

    mla_attention_params &p = call.p;
    p = mla_attention_params{};
    p.dtype = o.dtype;
    p.b = c.b;
    p.s_q = c.s_q;
    p.s_k = c.s_k;
    p.h_q = c.h_q;
    p.h_kv = c.h_kv;
    p.d_qk = c.d_qk;
    p.d_v = c.d_v;
    if (c.varlen()) {
        p.cu_seqlens_q = c.cu_q.data();
        p.cu_seqlens_k = c.cu_k.data();
        p.total_q = rq;
        p.total_k = rk;
    }
    p.q = call.q.buf.data();
    std::memcpy(p.q_stride, call.q.stride, sizeof p.q_stride);
    p.k = call.k.buf.data();
    std::memcpy(p.k_stride, call.k.stride, sizeof p.k_stride);
    if (c.alias) {
        p.v = p.k;
        std::memcpy(p.v_stride, p.k_stride, sizeof p.v_stride);
    } else {
        p.v = call.v.buf.data();
        std::memcpy(p.v_stride, call.v.stride, sizeof p.v_stride);
    }
    p.softmax_scale = float(c.scale);
    p.causal = c.causal;
    p.window = c.window;
    call.sink.assign(c.sink.begin(), c.sink.end());
    p.sink = c.sink.empty() ? nullptr : call.sink.data();
    p.out_rotation = call.rotation;
    p.out = call.out.buf.data();
    std::memcpy(p.out_stride, call.out.stride, sizeof p.out_stride);
    p.lse = call.lse.data();
    p.dout = call.dout.buf.data();
    std::memcpy(p.dout_stride, call.dout.stride, sizeof p.dout_stride);
    p.dq = call.dq.data();
    p.dk = call.dk.data();
    p.dv = c.alias ? nullptr : call.dv.data();
    p.dsink = call.dsink.data();
    p.exec.device = -1;
    p.exec.num_threads = o.threads;
}

// Runs the library backward; checks status, full coverage of the outputs and the guards.
bool run_dense(const Dense &c, const CallOpts &o, DenseGrads *g, DenseCall *keep = nullptr) {
    DenseCall local;
    DenseCall &call = keep ? *keep : local;
    make_dense_call(c, o, call);
    mla_status st = mla_attention_bwd(&call.p);
    check(st == MLA_OK, "%s: mla_attention_bwd returned %d: %s", c.name.c_str(), int(st),
          mla_last_error());
    if (st != MLA_OK) return false;
    bool written = call.dq.all_written() && call.dk.all_written() && (c.alias || call.dv.all_written());
    bool guards = call.dq.guard_intact() && call.dk.guard_intact() && (c.alias || call.dv.guard_intact());
    bool sink_ok = true;
    for (int64_t h = 0; h < c.h_q; ++h) sink_ok = sink_ok && !std::isnan(call.dsink[size_t(h)]);
    for (int64_t i = 0; i < kGuard; ++i) sink_ok = sink_ok && std::isnan(call.dsink[size_t(c.h_q + i)]);
    check(written, "%s: an output element was not written (NaN poison left)", c.name.c_str());
    check(guards && sink_ok, "%s: dsink unwritten or a write past the end of an output",
          c.name.c_str());
    g->dq = call.dq.values();
    g->dk = call.dk.values();
    g->dv = c.alias ? std::vector<double>() : call.dv.values();
    g->dsink.assign(call.dsink.begin(), call.dsink.begin() + c.h_q);
    return true;
}

void compare(const std::string &test, const DenseGrads &got, const DenseGrads &want, double rtol,
             double atol, bool with_sink) {
    expect_close(test.c_str(), "dq", got.dq, want.dq, rtol, atol);
    expect_close(test.c_str(), "dk", got.dk, want.dk, rtol, atol);
    expect_close(test.c_str(), "dv", got.dv, want.dv, rtol, atol);
    // dsink is float32 whatever the dtype.
    if (with_sink)
        expect_close(test.c_str(), "dsink", got.dsink, want.dsink, std::max(rtol, 1e-6), atol);
}

// A float64 case: library vs the analytic reference, and (when fd) vs finite differences.
void dense_case_f64(Dense c, uint64_t seed, bool fd) {
    std::mt19937_64 rng(seed);
    fill(c, rng, MLA_FLOAT64);
    DenseGrads lib;
    if (!run_dense(c, CallOpts{}, &lib)) return;
    DenseGrads ref = dense_reference(c);
    compare(c.name + " (vs reference)", lib, ref, 1e-10, 1e-12, !c.sink.empty());
    if (fd) {
        DenseGrads num = dense_finite_differences(c);
        compare(c.name + " (vs finite differences)", lib, num, 1e-6, 1e-8, !c.sink.empty());
    }
}

// Lower-precision dtypes (optionally strided): library vs the float64 reference of the rounded
// inputs.
void dense_case_typed(Dense c, uint64_t seed, const CallOpts &o, double rtol) {
    std::mt19937_64 rng(seed);
    fill(c, rng, o.dtype);
    DenseGrads lib;
    if (!run_dense(c, o, &lib)) return;
    DenseGrads ref = dense_reference(c);
    compare(c.name, lib, ref, rtol, 1e-6, !c.sink.empty());
}

void dense_tests() {
    {
        Dense c;
        c.name = "dense batched";
        c.b = 2, c.s_q = 4, c.s_k = 6, c.h_q = 2, c.h_kv = 2, c.d_qk = 8, c.d_v = 6;
        dense_case_f64(c, 1, true);
    }
    {
        Dense c;
        c.name = "dense causal s_k > s_q";
        c.b = 2, c.s_q = 3, c.s_k = 7, c.h_q = 2, c.h_kv = 1, c.d_qk = 6, c.d_v = 5;
        c.causal = true;
        dense_case_f64(c, 2, true);
    }
    {
        Dense c;
        c.name = "dense causal window";
        c.b = 1, c.s_q = 6, c.s_k = 8, c.h_q = 2, c.h_kv = 2, c.d_qk = 8, c.d_v = 8;
        c.causal = true, c.window = 3;
        dense_case_f64(c, 3, true);
    }
    {
        Dense c;
        c.name = "dense window without causal";
        c.b = 1, c.s_q = 5, c.s_k = 5, c.h_q = 1, c.h_kv = 1, c.d_qk = 4, c.d_v = 4;
        c.window = 2;
        dense_case_f64(c, 4, true);
    }
    {
        Dense c;
        c.name = "dense grouped heads, finite sink";
        c.b = 2, c.s_q = 4, c.s_k = 5, c.h_q = 4, c.h_kv = 2, c.d_qk = 6, c.d_v = 4;
        c.causal = true;
        c.sink = {0.3f, -1.2f, 2.0f, 0.0f};
        dense_case_f64(c, 5, true);
    }
    {
        Dense c;
        c.name = "dense sink +inf / -inf / finite";
        c.b = 1, c.s_q = 4, c.s_k = 4, c.h_q = 4, c.h_kv = 2, c.d_qk = 6, c.d_v = 6;
        c.sink = {kInf, -kInf, 0.7f, kInf};
        dense_case_f64(c, 6, true);
        // A +inf sink zeroes the head's output: every gradient through it is exactly 0.
        std::mt19937_64 rng(6);
        fill(c, rng, MLA_FLOAT64);
        DenseGrads lib;
        if (run_dense(c, CallOpts{}, &lib)) {
            bool zero = lib.dsink[0] == 0 && lib.dsink[1] == 0 && lib.dsink[3] == 0;
            for (int64_t r = 0; r < c.rows_q(); ++r)
                for (int64_t d = 0; d < c.d_qk; ++d) {
                    zero = zero && lib.dq[size_t((r * c.h_q + 0) * c.d_qk + d)] == 0;
                    zero = zero && lib.dq[size_t((r * c.h_q + 3) * c.d_qk + d)] == 0;
                }
            check(zero, "%s: +inf sink heads must have zero dq and dsink", c.name.c_str());
        }
    }
    {
        Dense c;
        c.name = "dense varlen causal, empty and keyless rows";
        // seq 0: 3 queries, 2 keys (query 0 sees nothing); seq 1: no query, 2 keys;
        // seq 2: 4 queries, 6 keys.
        c.b = 3, c.h_q = 2, c.h_kv = 1, c.d_qk = 6, c.d_v = 4;
        c.cu_q = {0, 3, 3, 7};
        c.cu_k = {0, 2, 4, 10};
        c.causal = true;
        c.sink = {0.5f, -0.5f};
        dense_case_f64(c, 7, true);
    }
    {
        Dense c;
        c.name = "dense batched causal s_q > s_k (keyless rows)";
        c.b = 1, c.s_q = 5, c.s_k = 3, c.h_q = 2, c.h_kv = 2, c.d_qk = 4, c.d_v = 4;
        c.causal = true;
        dense_case_f64(c, 8, true);
    }
    {
        Dense c;
        c.name = "dense absorbed (v aliases k, d_v < d_qk)";
        c.b = 2, c.s_q = 3, c.s_k = 5, c.h_q = 4, c.h_kv = 1, c.d_qk = 8, c.d_v = 6;
        c.causal = true, c.alias = true;
        c.sink = {0.2f, 1.0f, -0.4f, -kInf};
        dense_case_f64(c, 9, true);
    }
    {
        Dense c;
        c.name = "dense VVPA rotation (interleaved)";
        c.b = 2, c.s_q = 3, c.s_k = 4, c.h_q = 2, c.h_kv = 1, c.d_qk = 8, c.d_v = 8;
        c.causal = true;
        c.rot.rope_dim = 4;
        dense_case_f64(c, 10, true);
    }
    {
        Dense c;
        c.name = "dense VVPA rotation (half-split), absorbed, sink, varlen";
        c.b = 2, c.h_q = 2, c.h_kv = 1, c.d_qk = 10, c.d_v = 8;
        c.cu_q = {0, 2, 5};
        c.cu_k = {0, 4, 9};
        c.causal = true, c.alias = true;
        c.sink = {0.1f, -0.3f};
        c.rot.rope_dim = 6;
        c.rot.style = MLA_ROPE_HALF_SPLIT;
        dense_case_f64(c, 11, true);
    }
    // Several key tiles and query tiles per sequence, against the reference only.
    {
        Dense c;
        c.name = "dense multi-tile causal window, sink, grouped";
        c.b = 2, c.s_q = 90, c.s_k = 140, c.h_q = 4, c.h_kv = 2, c.d_qk = 12, c.d_v = 10;
        c.causal = true, c.window = 20;
        c.sink = {0.5f, -kInf, -1.0f, 1.5f};
        dense_case_f64(c, 16, false);
    }
    {
        Dense c;
        c.name = "dense multi-tile window without causal";
        c.b = 1, c.s_q = 70, c.s_k = 130, c.h_q = 2, c.h_kv = 1, c.d_qk = 8, c.d_v = 8;
        c.window = 30;
        dense_case_f64(c, 17, false);
    }
    {
        Dense c;
        c.name = "dense multi-tile varlen absorbed, 16 heads on one kv head";
        c.b = 3, c.h_q = 16, c.h_kv = 1, c.d_qk = 12, c.d_v = 8;
        c.cu_q = {0, 65, 66, 136};
        c.cu_k = {0, 70, 200, 330};
        c.causal = true, c.alias = true;
        c.rot.rope_dim = 4;
        dense_case_f64(c, 18, false);
    }
    {
        Dense c;
        c.name = "dense float32 strided, window, sink, grouped";
        c.b = 2, c.s_q = 20, c.s_k = 27, c.h_q = 4, c.h_kv = 2, c.d_qk = 12, c.d_v = 10;
        c.causal = true, c.window = 9;
        c.sink = {0.5f, -kInf, -1.0f, 1.5f};
        CallOpts o;
        o.dtype = MLA_FLOAT32;
        o.pad = 3;
        dense_case_typed(c, 12, o, 1e-4);
    }
    {
        Dense c;
        c.name = "dense bfloat16 varlen, VVPA, sink, grouped";
        c.b = 3, c.h_q = 4, c.h_kv = 2, c.d_qk = 24, c.d_v = 16;
        c.cu_q = {0, 33, 40, 110};
        c.cu_k = {0, 40, 47, 130};
        c.causal = true;
        c.sink = {0.5f, -0.5f, 1.0f, kInf};
        c.rot.rope_dim = 8;
        CallOpts o;
        o.dtype = MLA_BFLOAT16;
        dense_case_typed(c, 13, o, 1e-2);
    }
    {
        Dense c;
        c.name = "dense bfloat16 absorbed, batched, strided";
        c.b = 2, c.s_q = 70, c.s_k = 150, c.h_q = 8, c.h_kv = 1, c.d_qk = 40, c.d_v = 32;
        c.causal = true, c.alias = true;
        c.sink = {0.5f, -0.5f, 1.0f, 0.0f, 0.2f, 0.3f, -2.0f, 1.1f};
        c.rot.rope_dim = 8;
        CallOpts o;
        o.dtype = MLA_BFLOAT16;
        o.pad = 2;
        dense_case_typed(c, 14, o, 1e-2);
    }
    {
        Dense c;
        c.name = "dense float16 varlen, window, sink, grouped";
        c.b = 2, c.h_q = 4, c.h_kv = 2, c.d_qk = 16, c.d_v = 12;
        c.cu_q = {0, 30, 75};
        c.cu_k = {0, 41, 120};
        c.causal = true, c.window = 25;
        c.sink = {0.5f, -0.5f, 1.0f, -kInf};
        CallOpts o;
        o.dtype = MLA_FLOAT16;
        dense_case_typed(c, 19, o, 5e-3);
    }
    {
        // Same inputs, different thread counts: bit-identical gradients.
        Dense c;
        c.name = "dense determinism across thread counts";
        c.b = 2, c.s_q = 90, c.s_k = 130, c.h_q = 4, c.h_kv = 2, c.d_qk = 16, c.d_v = 16;
        c.causal = true, c.window = 50;
        c.sink = {0.5f, -0.5f, 1.0f, 0.0f};
        std::mt19937_64 rng(15);
        fill(c, rng, MLA_FLOAT32);
        std::vector<DenseGrads> runs(3);
        int threads[3] = {1, 3, 0};
        bool ok = true;
        for (int r = 0; r < 3; ++r) {
            CallOpts o;
            o.dtype = MLA_FLOAT32;
            o.threads = threads[r];
            ok = ok && run_dense(c, o, &runs[size_t(r)]);
        }
        if (ok)
            for (int r = 1; r < 3; ++r)
                check(runs[size_t(r)].dq == runs[0].dq && runs[size_t(r)].dk == runs[0].dk &&
                          runs[size_t(r)].dv == runs[0].dv && runs[size_t(r)].dsink == runs[0].dsink,
                      "%s: num_threads %d differs from num_threads 1", c.name.c_str(), threads[r]);
    }
}

// ================================================================================================
// Sparse prefill
// ================================================================================================

struct Sparse {
    std::string name;
    int64_t s_q = 0, s_kv = 0, h_q = 1, h_kv = 1, d_qk = 8, d_v = 8, topk = 0;
    std::vector<int32_t> indices;      // [s_q, h_kv, topk]
    std::vector<int32_t> topk_length;  // empty: none
    std::vector<double> sink;          // float32 values; empty: none
    Rotation rot;
    double scale = 0;
    std::vector<double> q, kv, dout;

    int64_t count(int64_t i) const {
        if (topk_length.empty()) return topk;
        return std::min<int64_t>(topk, std::max<int64_t>(0, topk_length[size_t(i)]));
    }
    // Valid selected rows of query i for kv head hk, duplicates kept.
    std::vector<int64_t> selected(int64_t i, int64_t hk) const {
        std::vector<int64_t> r;
        for (int64_t t = 0; t < count(i); ++t) {
            int32_t idx = indices[size_t((i * h_kv + hk) * topk + t)];
            if (idx >= 0 && idx < s_kv) r.push_back(idx);
        }
        return r;
    }
    double kvval(int64_t row, int64_t hk, int64_t c) const { return kv[size_t((row * h_kv + hk) * d_qk + c)]; }
};

// Random data; indices with duplicates and invalid entries; unselected kv rows set to NaN.
void fill(Sparse &c, std::mt19937_64 &rng, int32_t dt, bool random_indices) {
    // softmax_scale and the sinks are float32 in the ABI: the reference uses exactly those.
    if (c.scale == 0) c.scale = double(float(1.0 / std::sqrt(double(c.d_qk))));
    for (double &x : c.sink) x = double(float(x));
    c.q = randn(rng, c.s_q * c.h_q * c.d_qk);
    c.kv = randn(rng, c.s_kv * c.h_kv * c.d_qk);
    c.dout = randn(rng, c.s_q * c.h_q * c.d_v);
    round_to(dt, c.q);
    round_to(dt, c.kv);
    round_to(dt, c.dout);
    if (random_indices) {
        c.indices.resize(size_t(c.s_q * c.h_kv * c.topk));
        std::uniform_int_distribution<int32_t> pick(-2, int32_t(c.s_kv) + 1);
        for (auto &x : c.indices) x = pick(rng);
    }
    std::vector<bool> used(size_t(c.s_kv * c.h_kv), false);
    for (int64_t i = 0; i < c.s_q; ++i)
        for (int64_t hk = 0; hk < c.h_kv; ++hk)
            for (int64_t r : c.selected(i, hk)) used[size_t(r * c.h_kv + hk)] = true;
    for (size_t r = 0; r < used.size(); ++r)
        if (!used[r])
            for (int64_t d = 0; d < c.d_qk; ++d) c.kv[r * size_t(c.d_qk) + size_t(d)] = std::nan("");
    if (c.rot.on()) {
        c.rot.positions.resize(size_t(c.s_q));
        std::uniform_int_distribution<int32_t> pos(0, 5000);
        for (auto &p : c.rot.positions) p = pos(rng);
    }
}

void sparse_forward(const Sparse &c, std::vector<double> &out, std::vector<double> &lse) {
    const int64_t G = c.h_q / c.h_kv;
    out.assign(size_t(c.s_q * c.h_q * c.d_v), 0.0);
    lse.assign(size_t(c.s_q * c.h_q), kInf);
    for (int64_t i = 0; i < c.s_q; ++i)
        for (int64_t h = 0; h < c.h_q; ++h) {
            int64_t hk = h / G;
            std::vector<int64_t> sel = c.selected(i, hk);
            if (sel.empty()) continue;
            const double *q = &c.q[size_t((i * c.h_q + h) * c.d_qk)];
            std::vector<double> s(sel.size());
            double m = -kInf;
            for (size_t a = 0; a < sel.size(); ++a) {
                double x = 0;
                for (int64_t d = 0; d < c.d_qk; ++d) x += q[d] * c.kvval(sel[a], hk, d);
                s[a] = c.scale * x;
                m = std::max(m, s[a]);
            }
            double sum = 0;
            for (double x : s) sum += std::exp(x - m);
            double l = m + std::log(sum), gate = sink_gate(c.sink, h, l);
            double *o = &out[size_t((i * c.h_q + h) * c.d_v)];
            for (size_t a = 0; a < sel.size(); ++a) {
                double pj = std::exp(s[a] - l) * gate;
                for (int64_t d = 0; d < c.d_v; ++d) o[d] += pj * c.kvval(sel[a], hk, d);
            }
            if (c.rot.on()) c.rot.forward(o, c.d_v, c.rot.positions[size_t(i)]);
            lse[size_t(i * c.h_q + h)] = l;
        }
}

double sparse_loss(const Sparse &c) {
    std::vector<double> out, lse;
    sparse_forward(c, out, lse);
    double L = 0;
    for (size_t i = 0; i < out.size(); ++i) L += c.dout[i] * out[i];
    return L;
}

struct SparseGrads {
    std::vector<double> dq, dkv, dsink;
};

SparseGrads sparse_reference(const Sparse &c) {
    const int64_t G = c.h_q / c.h_kv;
    SparseGrads g;
    g.dq.assign(c.q.size(), 0.0);
    g.dkv.assign(c.kv.size(), 0.0);
    g.dsink.assign(size_t(c.h_q), 0.0);
    for (int64_t i = 0; i < c.s_q; ++i)
        for (int64_t h = 0; h < c.h_q; ++h) {
            int64_t hk = h / G;
            std::vector<int64_t> sel = c.selected(i, hk);
            if (sel.empty()) continue;
            const double *q = &c.q[size_t((i * c.h_q + h) * c.d_qk)];
            size_t n = sel.size();
            std::vector<double> S(n), P(n), dP(n);
            double m = -kInf;
            for (size_t a = 0; a < n; ++a) {
                double x = 0;
                for (int64_t d = 0; d < c.d_qk; ++d) x += q[d] * c.kvval(sel[a], hk, d);
                S[a] = c.scale * x;
                m = std::max(m, S[a]);
            }
            double z = 0;
            for (double x : S) z += std::exp(x - m);
            double lse = m + std::log(z);
            for (size_t a = 0; a < n; ++a) P[a] = std::exp(S[a] - m) / z;
            std::vector<double> o(size_t(c.d_v), 0.0);
            for (size_t a = 0; a < n; ++a)
                for (int64_t d = 0; d < c.d_v; ++d) o[size_t(d)] += P[a] * c.kvval(sel[a], hk, d);
            std::vector<double> dy(&c.dout[size_t((i * c.h_q + h) * c.d_v)],
                                   &c.dout[size_t((i * c.h_q + h + 1) * c.d_v)]);
            if (c.rot.on()) c.rot.transpose(dy.data(), c.d_v, c.rot.positions[size_t(i)]);
            double gate = sink_gate(c.sink, h, lse), dy_o = 0;
            for (int64_t d = 0; d < c.d_v; ++d) dy_o += dy[size_t(d)] * o[size_t(d)];
            g.dsink[size_t(h)] += dy_o * sink_gate_grad(c.sink, h, lse);
            double dgate_dS = c.sink.empty() || std::isinf(c.sink[size_t(h)]) ? 0.0 : gate * (1.0 - gate);
            for (size_t a = 0; a < n; ++a) {
                double x = 0;
                for (int64_t d = 0; d < c.d_v; ++d) x += gate * dy[size_t(d)] * c.kvval(sel[a], hk, d);
                dP[a] = x;
            }
            for (size_t a = 0; a < n; ++a) {
                double dS = 0;
                for (size_t bb = 0; bb < n; ++bb) dS += dP[bb] * P[bb] * ((a == bb ? 1.0 : 0.0) - P[a]);
                dS += dy_o * dgate_dS * P[a];
                double *dk = &g.dkv[size_t((sel[a] * c.h_kv + hk) * c.d_qk)];
                for (int64_t d = 0; d < c.d_qk; ++d) {
                    g.dq[size_t((i * c.h_q + h) * c.d_qk + d)] += c.scale * dS * c.kvval(sel[a], hk, d);
                    dk[d] += c.scale * dS * q[d];
                }
                for (int64_t d = 0; d < c.d_v; ++d) dk[d] += gate * P[a] * dy[size_t(d)];
            }
        }
    return g;
}

SparseGrads sparse_finite_differences(Sparse c) {
    const double eps = 1e-5;
    auto diff = [&](std::vector<double> &x) {
        std::vector<double> g(x.size(), 0.0);
        for (size_t i = 0; i < x.size(); ++i) {
            if (std::isnan(x[i])) continue;  // unselected kv rows: no gradient
            double x0 = x[i];
            x[i] = x0 + eps;
            double lp = sparse_loss(c);
            x[i] = x0 - eps;
            double lm = sparse_loss(c);
            x[i] = x0;
            g[i] = (lp - lm) / (2 * eps);
        }
        return g;
    };
    SparseGrads g;
    g.dq = diff(c.q);
    g.dkv = diff(c.kv);
    g.dsink.assign(size_t(c.h_q), 0.0);
    for (int64_t h = 0; h < int64_t(c.sink.size()); ++h) {
        double s0 = c.sink[size_t(h)];
        if (std::isinf(s0)) continue;
        c.sink[size_t(h)] = s0 + eps;
        double lp = sparse_loss(c);
        c.sink[size_t(h)] = s0 - eps;
        double lm = sparse_loss(c);
        c.sink[size_t(h)] = s0;
        g.dsink[size_t(h)] = (lp - lm) / (2 * eps);
    }
    return g;
}

struct SparseCall {
    Strided q, kv, out, dout;
    std::vector<int32_t> indices;
    std::vector<float> lse, sink;
    Buf dq, dkv;
    std::vector<float> dsink;
    mla_sparse_prefill_params p{};
};

void make_sparse_call(const Sparse &c, const CallOpts &o, SparseCall &call) {
    std::vector<double> out, lse;
    sparse_forward(c, out, lse);
    call.q = pack(c.q, c.s_q, c.h_q, c.d_qk, o.dtype, o.pad, 0);
    call.kv = pack(c.kv, c.s_kv, c.h_kv, c.d_qk, o.dtype, o.pad, 0);
    call.out = pack(out, c.s_q, c.h_q, c.d_v, o.dtype, o.pad, 0);
    call.dout = pack(c.dout, c.s_q, c.h_q, c.d_v, o.dtype, o.pad, 0);
    // indices with a padded row stride: the padding holds garbage that must not be read.
    int64_t ipad = o.pad;
    call.indices.assign(size_t(std::max<int64_t>(c.s_q * c.h_kv * (c.topk + ipad), 1)), 1 << 30);
    for (int64_t r = 0; r < c.s_q * c.h_kv; ++r)
        for (int64_t t = 0; t < c.topk; ++t)
            call.indices[size_t(r * (c.topk + ipad) + t)] = c.indices[size_t(r * c.topk + t)];
    call.lse.assign(size_t(c.s_q * c.h_q), 0.0f);
    for (size_t i = 0; i < lse.size(); ++i) call.lse[i] = float(lse[i]);
    call.dq = Buf(o.dtype, c.s_q * c.h_q * c.d_qk);
    call.dkv = Buf(o.dtype, c.s_kv * c.h_kv * c.d_qk);
    call.dsink.assign(size_t(c.h_q) + kGuard, std::nanf(""));

    mla_sparse_prefill_params &p = call.p;
    p = mla_sparse_prefill_params{};
    p.dtype = o.dtype;
    p.s_q = c.s_q;
    p.s_kv = c.s_kv;
    p.h_q = c.h_q;
    p.h_kv = c.h_kv;
    p.d_qk = c.d_qk;
    p.d_v = c.d_v;
    p.topk = c.topk;
    p.q = call.q.buf.data();
    p.q_stride[0] = call.q.stride[1];
    p.q_stride[1] = call.q.stride[2];
    p.kv = call.kv.buf.data();
    p.kv_stride[0] = call.kv.stride[1];
    p.kv_stride[1] = call.kv.stride[2];
    p.indices = call.indices.data();
    p.indices_stride[0] = c.h_kv * (c.topk + ipad);
    p.indices_stride[1] = c.topk + ipad;
    p.topk_length = c.topk_length.empty() ? nullptr : c.topk_length.data();
    p.softmax_scale = float(c.scale);
    call.sink.assign(c.sink.begin(), c.sink.end());
    p.sink = c.sink.empty() ? nullptr : call.sink.data();
    p.out_rotation = c.rot.desc();
    p.out = call.out.buf.data();
    p.out_stride[0] = call.out.stride[1];
    p.out_stride[1] = call.out.stride[2];
    p.lse = call.lse.data();
    p.dout = call.dout.buf.data();
    p.dout_stride[0] = call.dout.stride[1];
    p.dout_stride[1] = call.dout.stride[2];
    p.dq = call.dq.data();
    p.dkv = call.dkv.data();
    p.dsink = call.dsink.data();
    p.exec.device = -1;
    p.exec.num_threads = o.threads;
}

bool run_sparse(const Sparse &c, const CallOpts &o, SparseGrads *g) {
    SparseCall call;
    make_sparse_call(c, o, call);
    mla_status st = mla_sparse_prefill_bwd(&call.p);
    check(st == MLA_OK, "%s: mla_sparse_prefill_bwd returned %d: %s", c.name.c_str(), int(st),
          mla_last_error());
    if (st != MLA_OK) return false;
    check(call.dq.all_written() && call.dkv.all_written(),
          "%s: an output element was not written (NaN poison left, or NaN leaked from an "
          "unselected kv row)", c.name.c_str());
    bool sink_ok = true;
    for (int64_t h = 0; h < c.h_q; ++h) sink_ok = sink_ok && !std::isnan(call.dsink[size_t(h)]);
    for (int64_t i = 0; i < kGuard; ++i) sink_ok = sink_ok && std::isnan(call.dsink[size_t(c.h_q + i)]);
    check(call.dq.guard_intact() && call.dkv.guard_intact() && sink_ok,
          "%s: dsink unwritten or a write past the end of an output", c.name.c_str());
    g->dq = call.dq.values();
    g->dkv = call.dkv.values();
    g->dsink.assign(call.dsink.begin(), call.dsink.begin() + c.h_q);
    return true;
}

void compare(const std::string &test, const SparseGrads &got, const SparseGrads &want,
             double rtol, double atol, bool with_sink) {
    expect_close(test.c_str(), "dq", got.dq, want.dq, rtol, atol);
    expect_close(test.c_str(), "dkv", got.dkv, want.dkv, rtol, atol);
    // dsink is float32 whatever the dtype.
    if (with_sink)
        expect_close(test.c_str(), "dsink", got.dsink, want.dsink, std::max(rtol, 1e-6), atol);
}

void sparse_case(Sparse c, uint64_t seed, const CallOpts &o, double rtol, bool fd,
                 bool random_indices = true) {
    std::mt19937_64 rng(seed);
    fill(c, rng, o.dtype, random_indices);
    SparseGrads lib;
    if (!run_sparse(c, o, &lib)) return;
    SparseGrads ref = sparse_reference(c);
    compare(c.name + (fd ? " (vs reference)" : ""), lib, ref, rtol,
            o.dtype == MLA_FLOAT64 ? 1e-12 : 1e-6, !c.sink.empty());
    if (fd) compare(c.name + " (vs finite differences)", lib, sparse_finite_differences(c), 1e-6,
                    1e-8, !c.sink.empty());
}

void sparse_tests() {
    CallOpts f64;
    {
        Sparse c;
        c.name = "sparse duplicates, invalid indices, topk_length";
        c.s_q = 5, c.s_kv = 9, c.h_q = 4, c.h_kv = 2, c.d_qk = 8, c.d_v = 6, c.topk = 6;
        c.indices = {
            // query 0: duplicates of 3, an invalid -1 and 9 (= s_kv)
            3, 3, -1, 9, 0, 1,   2, 2, 2, 5, 100, -7,
            // query 1
            4, 1, 3, 0, 8, 8,    5, 6, 7, 0, 1, 2,
            // query 2: everything invalid for kv head 0
            -1, -2, 9, 10, 11, -5, 1, 1, 4, 4, 6, 6,
            // query 3 (topk_length 0: nothing)
            0, 1, 2, 3, 4, 5,    0, 1, 2, 3, 4, 5,
            // query 4 (topk_length 3)
            7, 3, 7, 1, 1, 1,    2, 0, 2, -1, -1, -1};
        c.topk_length = {6, 6, 6, 0, 3};
        c.sink = {0.4f, -0.6f, 1.2f, -kInf};
        sparse_case(c, 21, f64, 1e-10, true, false);
    }
    {
        Sparse c;
        c.name = "sparse one kv head, sinks +inf / finite";
        c.s_q = 4, c.s_kv = 7, c.h_q = 4, c.h_kv = 1, c.d_qk = 6, c.d_v = 6, c.topk = 5;
        c.sink = {kInf, 0.3f, -kInf, -1.0f};
        sparse_case(c, 22, f64, 1e-10, true);
    }
    {
        Sparse c;
        c.name = "sparse VVPA rotation, sink";
        c.s_q = 4, c.s_kv = 8, c.h_q = 2, c.h_kv = 1, c.d_qk = 10, c.d_v = 8, c.topk = 5;
        c.sink = {0.2f, -0.2f};
        c.rot.rope_dim = 4;
        sparse_case(c, 23, f64, 1e-10, true);
    }
    {
        Sparse c;
        c.name = "sparse VVPA rotation (half-split), grouped";
        c.s_q = 3, c.s_kv = 6, c.h_q = 4, c.h_kv = 2, c.d_qk = 8, c.d_v = 8, c.topk = 4;
        c.rot.rope_dim = 8;
        c.rot.style = MLA_ROPE_HALF_SPLIT;
        sparse_case(c, 24, f64, 1e-10, true);
    }
    {
        // Few kv rows, many repeats: with one thread the scatter works on four ranges, so
        // groups of four selections mix repeated and distinct rows.
        Sparse c;
        c.name = "sparse heavy repeats, one thread";
        c.s_q = 3, c.s_kv = 40, c.h_q = 4, c.h_kv = 1, c.d_qk = 8, c.d_v = 6, c.topk = 24;
        c.sink = {0.3f, -0.2f, 0.0f, 1.0f};
        std::mt19937_64 rng(28);
        std::uniform_int_distribution<int32_t> pick(0, 7);
        c.indices.resize(size_t(c.s_q * c.topk));
        for (auto &x : c.indices) x = pick(rng);
        CallOpts one;
        one.threads = 1;
        sparse_case(c, 28, one, 1e-10, true, false);
    }
    {
        Sparse c;
        c.name = "sparse float32 strided";
        c.s_q = 30, c.s_kv = 50, c.h_q = 6, c.h_kv = 2, c.d_qk = 20, c.d_v = 16, c.topk = 13;
        c.sink = {0.5f, -0.5f, 1.0f, 0.0f, 0.2f, 0.3f};
        CallOpts o;
        o.dtype = MLA_FLOAT32;
        o.pad = 3;
        sparse_case(c, 25, o, 1e-4, false);
    }
    {
        Sparse c;
        c.name = "sparse bfloat16 absorbed, VVPA, sink, topk_length";
        c.s_q = 40, c.s_kv = 64, c.h_q = 8, c.h_kv = 1, c.d_qk = 40, c.d_v = 32, c.topk = 12;
        c.sink = {0.5f, -0.5f, 1.0f, 0.0f, 0.2f, 0.3f, -2.0f, 1.1f};
        c.rot.rope_dim = 8;
        c.topk_length.resize(size_t(c.s_q));
        for (int64_t i = 0; i < c.s_q; ++i) c.topk_length[size_t(i)] = int32_t(i % 14);
        CallOpts o;
        o.dtype = MLA_BFLOAT16;
        sparse_case(c, 26, o, 1e-2, false);
    }
    {
        Sparse c;
        c.name = "sparse float16 grouped, VVPA, sink";
        c.s_q = 25, c.s_kv = 30, c.h_q = 8, c.h_kv = 2, c.d_qk = 24, c.d_v = 16, c.topk = 10;
        c.sink = {0.5f, -0.5f, 1.0f, 0.0f, 0.2f, 0.3f, -2.0f, 1.1f};
        c.rot.rope_dim = 8;
        CallOpts o;
        o.dtype = MLA_FLOAT16;
        sparse_case(c, 29, o, 5e-3, false);
    }
    {
        Sparse c;
        c.name = "sparse determinism across thread counts";
        c.s_q = 80, c.s_kv = 40, c.h_q = 4, c.h_kv = 2, c.d_qk = 16, c.d_v = 12, c.topk = 20;
        c.sink = {0.5f, -0.5f, 1.0f, 0.0f};
        std::mt19937_64 rng(27);
        fill(c, rng, MLA_FLOAT32, true);
        std::vector<SparseGrads> runs(3);
        int threads[3] = {1, 3, 0};
        bool ok = true;
        for (int r = 0; r < 3; ++r) {
            CallOpts o;
            o.dtype = MLA_FLOAT32;
            o.threads = threads[r];
            ok = ok && run_sparse(c, o, &runs[size_t(r)]);
        }
        if (ok)
            for (int r = 1; r < 3; ++r)
                check(runs[size_t(r)].dq == runs[0].dq && runs[size_t(r)].dkv == runs[0].dkv &&
                          runs[size_t(r)].dsink == runs[0].dsink,
                      "%s: num_threads %d differs from num_threads 1", c.name.c_str(), threads[r]);
    }
}

// ================================================================================================
// Bad arguments
// ================================================================================================

// Every output byte as it was before the call.
struct Snapshot {
    std::vector<std::vector<unsigned char>> parts;
};

void expect_refused(const char *test, const char *what, mla_status want,
                    const std::function<mla_status()> &invoke,
                    const std::function<Snapshot()> &snapshot, const char *message_part) {
    Snapshot before = snapshot();
    mla_status st = invoke();
    std::string msg = mla_last_error();
    Snapshot after = snapshot();
    check(st == want, "%s: %s: expected status %d, got %d (%s)", test, what, int(want), int(st),
          msg.c_str());
    check(!msg.empty() && (!message_part || msg.find(message_part) != std::string::npos),
          "%s: %s: message \"%s\" should mention \"%s\"", test, what, msg.c_str(),
          message_part ? message_part : "");
    check(before.parts == after.parts, "%s: %s: an output was written", test, what);
}

void dense_bad_arguments() {
    const char *test = "mla_attention_bwd bad arguments";
    Dense c;
    c.name = test;
    c.b = 2, c.h_q = 2, c.h_kv = 1, c.d_qk = 8, c.d_v = 6;
    c.cu_q = {0, 3, 5};
    c.cu_k = {0, 4, 8};
    c.causal = true;
    c.sink = {0.1f, 0.2f};
    c.rot.rope_dim = 4;
    std::mt19937_64 rng(31);
    fill(c, rng, MLA_FLOAT32);
    CallOpts o;
    o.dtype = MLA_FLOAT32;
    DenseCall call;
    make_dense_call(c, o, call);
    const mla_attention_params good = call.p;
    auto snap = [&] {
        Snapshot s;
        s.parts.push_back(call.dq.bytes);
        s.parts.push_back(call.dk.bytes);
        s.parts.push_back(call.dv.bytes);
        s.parts.emplace_back(reinterpret_cast<const unsigned char *>(call.dsink.data()),
                             reinterpret_cast<const unsigned char *>(call.dsink.data() + call.dsink.size()));
        return s;
    };
    auto invoke = [&] { return mla_attention_bwd(&call.p); };
    auto bad = [&](const char *what, const char *part, const std::function<void(mla_attention_params &)> &edit,
                   mla_status want = MLA_ERR_INVALID_ARGUMENT) {
        call.p = good;
        edit(call.p);
        expect_refused(test, what, want, invoke, snap, part);
    };
    {
        Snapshot before = snap();
        mla_status st = mla_attention_bwd(nullptr);
        check(st == MLA_ERR_INVALID_ARGUMENT && std::string(mla_last_error()).find("mla_attention_bwd") == 0,
              "%s: NULL params must be refused with a message naming the op", test);
        check(before.parts == snap().parts, "%s: NULL params: an output was written", test);
    }
    std::vector<int32_t> cu_bad_start = {1, 3, 5}, cu_decreasing = {0, 4, 3}, cu_bad_total = {0, 3, 6};
    std::vector<int32_t> far_positions(5, 7);
    std::vector<float> table(16 * 2, 1.0f);
    bad("int32 dtype", "dtype", [](mla_attention_params &p) { p.dtype = MLA_INT32; });
    bad("fp8 dtype", "dtype", [](mla_attention_params &p) { p.dtype = MLA_FP8_E4M3; });
    bad("h_q not a multiple of h_kv", "h_q", [](mla_attention_params &p) { p.h_q = 3; p.h_kv = 2; });
    bad("h_kv 0", "h_kv", [](mla_attention_params &p) { p.h_kv = 0; });
    bad("d_qk 0", "d_qk", [](mla_attention_params &p) { p.d_qk = 0; });
    bad("b negative", "b must", [](mla_attention_params &p) { p.b = -1; });
    bad("only cu_seqlens_q", "cu_seqlens", [](mla_attention_params &p) { p.cu_seqlens_k = nullptr; });
    bad("cu_seqlens_q[0] != 0", "cu_seqlens_q[0]",
        [&](mla_attention_params &p) { p.cu_seqlens_q = cu_bad_start.data(); });
    bad("cu_seqlens_k decreasing", "cu_seqlens_k",
        [&](mla_attention_params &p) { p.cu_seqlens_k = cu_decreasing.data(); });
    bad("cu_seqlens_q[b] != total_q", "total_q",
        [&](mla_attention_params &p) { p.cu_seqlens_q = cu_bad_total.data(); });
    bad("negative total_k", "total_k", [](mla_attention_params &p) { p.total_k = -3; });
    bad("negative window", "window", [](mla_attention_params &p) { p.window = -1; });
    bad("NaN softmax_scale", "softmax_scale", [](mla_attention_params &p) { p.softmax_scale = NAN; });
    bad("q NULL", "q must", [](mla_attention_params &p) { p.q = nullptr; });
    bad("lse NULL", "lse", [](mla_attention_params &p) { p.lse = nullptr; });
    bad("dout NULL", "dout", [](mla_attention_params &p) { p.dout = nullptr; });
    bad("dq NULL", "dq", [](mla_attention_params &p) { p.dq = nullptr; });
    bad("dk NULL", "dk", [](mla_attention_params &p) { p.dk = nullptr; });
    bad("dv NULL without aliasing", "dv", [](mla_attention_params &p) { p.dv = nullptr; });
    bad("dv set while v aliases k", "dv must be NULL", [&](mla_attention_params &p) {
        p.v = p.k;
        std::memcpy(p.v_stride, p.k_stride, sizeof p.v_stride);
    });
    bad("v aliases k with d_v > d_qk", "d_v", [&](mla_attention_params &p) {
        p.v = p.k;
        std::memcpy(p.v_stride, p.k_stride, sizeof p.v_stride);
        p.dv = nullptr;
        p.d_v = p.d_qk + 2;
    });
    bad("v aliases k with other strides", "v_stride", [&](mla_attention_params &p) {
        p.v = p.k;
        std::memcpy(p.v_stride, p.k_stride, sizeof p.v_stride);
        p.v_stride[1] += 1;
        p.dv = nullptr;
    });
    bad("negative stride", "q_stride", [](mla_attention_params &p) { p.q_stride[1] = -8; });
    bad("odd rope_dim", "rope_dim", [](mla_attention_params &p) { p.out_rotation.rope.rope_dim = 3; });
    bad("rope_dim > d_v", "out_rotation.rope", [](mla_attention_params &p) { p.out_rotation.rope.rope_dim = 8; });
    bad("position outside the table", "positions", [&](mla_attention_params &p) {
        p.out_rotation.rope.cos_table = table.data();
        p.out_rotation.rope.sin_table = table.data();
        p.out_rotation.rope.table_len = 5;
        p.out_rotation.positions = far_positions.data();
    });
    bad("negative num_threads", "num_threads", [](mla_attention_params &p) { p.exec.num_threads = -2; });
    bad("GPU device", "no GPU implementation in this build",
        [](mla_attention_params &p) { p.exec.device = 0; }, MLA_ERR_UNSUPPORTED);
    // Every message names the C function first.
    call.p = good;
    call.p.h_q = 3;
    call.p.h_kv = 2;
    mla_attention_bwd(&call.p);
    check(std::string(mla_last_error()).rfind("mla_attention_bwd: ", 0) == 0,
          "%s: message should start with the function name, got \"%s\"", test, mla_last_error());
    // The unchanged call still succeeds.
    call.p = good;
    check(mla_attention_bwd(&call.p) == MLA_OK, "%s: the valid call failed: %s", test, mla_last_error());
}

void sparse_bad_arguments() {
    const char *test = "mla_sparse_prefill_bwd bad arguments";
    Sparse c;
    c.name = test;
    c.s_q = 4, c.s_kv = 6, c.h_q = 2, c.h_kv = 1, c.d_qk = 8, c.d_v = 6, c.topk = 3;
    c.sink = {0.1f, 0.2f};
    c.rot.rope_dim = 4;
    std::mt19937_64 rng(32);
    fill(c, rng, MLA_FLOAT32, true);
    CallOpts o;
    o.dtype = MLA_FLOAT32;
    SparseCall call;
    make_sparse_call(c, o, call);
    const mla_sparse_prefill_params good = call.p;
    auto snap = [&] {
        Snapshot s;
        s.parts.push_back(call.dq.bytes);
        s.parts.push_back(call.dkv.bytes);
        s.parts.emplace_back(reinterpret_cast<const unsigned char *>(call.dsink.data()),
                             reinterpret_cast<const unsigned char *>(call.dsink.data() + call.dsink.size()));
        return s;
    };
    auto invoke = [&] { return mla_sparse_prefill_bwd(&call.p); };
    auto bad = [&](const char *what, const char *part,
                   const std::function<void(mla_sparse_prefill_params &)> &edit,
                   mla_status want = MLA_ERR_INVALID_ARGUMENT) {
        call.p = good;
        edit(call.p);
        expect_refused(test, what, want, invoke, snap, part);
    };
    check(mla_sparse_prefill_bwd(nullptr) == MLA_ERR_INVALID_ARGUMENT &&
              std::string(mla_last_error()).rfind("mla_sparse_prefill_bwd: ", 0) == 0,
          "%s: NULL params must be refused with a message naming the op", test);
    std::vector<int32_t> far_positions(4, 9);
    std::vector<float> table(16 * 2, 1.0f);
    bad("uint8 dtype", "dtype", [](mla_sparse_prefill_params &p) { p.dtype = MLA_UINT8; });
    bad("d_v > d_qk", "d_v", [](mla_sparse_prefill_params &p) { p.d_v = 10; });
    bad("d_v 0", "d_v", [](mla_sparse_prefill_params &p) { p.d_v = 0; });
    bad("h_q not a multiple of h_kv", "h_q", [](mla_sparse_prefill_params &p) { p.h_kv = 3; p.h_q = 4; });
    bad("negative topk", "topk", [](mla_sparse_prefill_params &p) { p.topk = -1; });
    bad("negative s_kv", "s_kv", [](mla_sparse_prefill_params &p) { p.s_kv = -1; });
    bad("indices NULL", "indices", [](mla_sparse_prefill_params &p) { p.indices = nullptr; });
    bad("kv NULL", "kv must", [](mla_sparse_prefill_params &p) { p.kv = nullptr; });
    bad("out NULL", "out must", [](mla_sparse_prefill_params &p) { p.out = nullptr; });
    bad("lse NULL", "lse", [](mla_sparse_prefill_params &p) { p.lse = nullptr; });
    bad("dout NULL", "dout", [](mla_sparse_prefill_params &p) { p.dout = nullptr; });
    bad("dq NULL", "dq", [](mla_sparse_prefill_params &p) { p.dq = nullptr; });
    bad("dkv NULL", "dkv", [](mla_sparse_prefill_params &p) { p.dkv = nullptr; });
    bad("negative stride", "indices_stride", [](mla_sparse_prefill_params &p) { p.indices_stride[0] = -1; });
    bad("infinite softmax_scale", "softmax_scale",
        [](mla_sparse_prefill_params &p) { p.softmax_scale = INFINITY; });
    bad("rotation style", "style", [](mla_sparse_prefill_params &p) { p.out_rotation.rope.style = 7; });
    bad("position outside the table", "positions", [&](mla_sparse_prefill_params &p) {
        p.out_rotation.rope.cos_table = table.data();
        p.out_rotation.rope.sin_table = table.data();
        p.out_rotation.rope.table_len = 5;
        p.out_rotation.positions = far_positions.data();
    });
    bad("GPU device", "no GPU implementation in this build",
        [](mla_sparse_prefill_params &p) { p.exec.device = 1; }, MLA_ERR_UNSUPPORTED);
    call.p = good;
    check(mla_sparse_prefill_bwd(&call.p) == MLA_OK, "%s: the valid call failed: %s", test,
          mla_last_error());
}

// Empty problems: nothing to attend, outputs still fully written.
void empty_tests() {
    {
        Dense c;
        c.name = "dense no queries (keys get zero gradients)";
        c.b = 2, c.s_q = 0, c.s_k = 3, c.h_q = 2, c.h_kv = 2, c.d_qk = 4, c.d_v = 4;
        c.sink = {0.5f, 0.5f};
        std::mt19937_64 rng(41);
        fill(c, rng, MLA_FLOAT32);
        CallOpts o;
        o.dtype = MLA_FLOAT32;
        DenseGrads lib;
        if (run_dense(c, o, &lib)) {
            bool zero = true;
            for (double x : lib.dk) zero = zero && x == 0;
            for (double x : lib.dv) zero = zero && x == 0;
            for (double x : lib.dsink) zero = zero && x == 0;
            check(zero, "%s: gradients must be 0", c.name.c_str());
        }
    }
    {
        Dense c;
        c.name = "dense no keys (queries get zero gradients)";
        c.b = 2, c.s_q = 3, c.s_k = 0, c.h_q = 2, c.h_kv = 1, c.d_qk = 4, c.d_v = 4;
        c.sink = {0.5f, -0.5f};
        std::mt19937_64 rng(43);
        fill(c, rng, MLA_FLOAT64);
        DenseGrads lib;
        if (run_dense(c, CallOpts{}, &lib)) {
            bool zero = true;
            for (double x : lib.dq) zero = zero && x == 0;
            for (double x : lib.dsink) zero = zero && x == 0;
            check(zero, "%s: gradients must be 0", c.name.c_str());
        }
    }
    {
        Dense c;
        c.name = "dense without a sink (dsink written as 0)";
        c.b = 1, c.s_q = 3, c.s_k = 3, c.h_q = 2, c.h_kv = 2, c.d_qk = 4, c.d_v = 4;
        std::mt19937_64 rng(44);
        fill(c, rng, MLA_FLOAT64);
        DenseGrads lib;
        if (run_dense(c, CallOpts{}, &lib))
            check(lib.dsink[0] == 0 && lib.dsink[1] == 0, "%s: dsink must be 0", c.name.c_str());
    }
    {
        Sparse c;
        c.name = "sparse topk 0";
        c.s_q = 3, c.s_kv = 4, c.h_q = 2, c.h_kv = 1, c.d_qk = 4, c.d_v = 4, c.topk = 0;
        std::mt19937_64 rng(42);
        fill(c, rng, MLA_FLOAT64, true);
        SparseGrads lib;
        if (run_sparse(c, CallOpts{}, &lib)) {
            bool zero = true;
            for (double x : lib.dq) zero = zero && x == 0;
            for (double x : lib.dkv) zero = zero && x == 0;
            check(zero, "%s: gradients must be 0", c.name.c_str());
        }
    }
}

// The library's own forward feeds the backward: the two agree on the lse layout, the sink and
// the direction of the VVPA rotation.
void round_trip_tests() {
    {
        Dense c;
        c.name = "dense round trip through mla_attention_fwd";
        c.b = 2, c.h_q = 4, c.h_kv = 2, c.d_qk = 10, c.d_v = 8;
        c.cu_q = {0, 5, 12};
        c.cu_k = {0, 7, 16};
        c.causal = true, c.alias = true;
        c.sink = {0.3f, -0.7f, kInf, 1.1f};
        c.rot.rope_dim = 4;
        std::mt19937_64 rng(51);
        fill(c, rng, MLA_FLOAT64);
        DenseCall call;
        make_dense_call(c, CallOpts{}, call);
        std::vector<double> lib_out_before = call.out.buf.values();
        call.out.buf.poison();
        std::fill(call.lse.begin(), call.lse.end(), std::nanf(""));
        mla_status st = mla_attention_fwd(&call.p);
        check(st == MLA_OK, "%s: forward failed: %s", c.name.c_str(), mla_last_error());
        if (st != MLA_OK) return;
        expect_close(c.name.c_str(), "forward out", call.out.buf.values(), lib_out_before, 1e-10, 1e-12);
        st = mla_attention_bwd(&call.p);
        check(st == MLA_OK, "%s: backward failed: %s", c.name.c_str(), mla_last_error());
        if (st != MLA_OK) return;
        DenseGrads lib{call.dq.values(), call.dk.values(), {},
                       std::vector<double>(call.dsink.begin(), call.dsink.begin() + c.h_q)};
        compare(c.name, lib, dense_reference(c), 1e-10, 1e-12, true);
    }
    {
        Sparse c;
        c.name = "sparse round trip through mla_sparse_prefill_fwd";
        c.s_q = 6, c.s_kv = 9, c.h_q = 4, c.h_kv = 2, c.d_qk = 10, c.d_v = 8, c.topk = 5;
        c.sink = {0.3f, -0.7f, -kInf, 1.1f};
        c.rot.rope_dim = 4;
        c.rot.style = MLA_ROPE_HALF_SPLIT;
        std::mt19937_64 rng(52);
        fill(c, rng, MLA_FLOAT64, true);
        SparseCall call;
        make_sparse_call(c, CallOpts{}, call);
        std::vector<double> lib_out_before = call.out.buf.values();
        call.out.buf.poison();
        std::fill(call.lse.begin(), call.lse.end(), std::nanf(""));
        mla_status st = mla_sparse_prefill_fwd(&call.p);
        check(st == MLA_OK, "%s: forward failed: %s", c.name.c_str(), mla_last_error());
        if (st != MLA_OK) return;
        expect_close(c.name.c_str(), "forward out", call.out.buf.values(), lib_out_before, 1e-10, 1e-12);
        st = mla_sparse_prefill_bwd(&call.p);
        check(st == MLA_OK, "%s: backward failed: %s", c.name.c_str(), mla_last_error());
        if (st != MLA_OK) return;
        SparseGrads lib{call.dq.values(), call.dkv.values(),
                        std::vector<double>(call.dsink.begin(), call.dsink.begin() + c.h_q)};
        compare(c.name, lib, sparse_reference(c), 1e-10, 1e-12, true);
    }
}

// Runs this program again with MLA4J_DISABLE_AVX2=1, so that the baseline (16-byte vector)
// kernels are checked as well as the AVX2 ones, and adds up the child's counts.
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
    dense_tests();
    sparse_tests();
    empty_tests();
    round_trip_tests();
    dense_bad_arguments();
    sparse_bad_arguments();
    if (argc > 0 && !std::getenv("MLA4J_DISABLE_AVX2")) run_baseline(argv[0]);
    std::printf("%d passed, %d failed\n", g_passed, g_failed);
    return g_failed == 0 ? 0 : 1;
}
