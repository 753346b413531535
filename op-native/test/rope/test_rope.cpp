// Native tests of RoPE and the VVPA rotation (ops.md section 7): frequencies with and without
// YaRN, application in every float type and both styles, inverse, in place, tables, and the
// refusals. Every reference here is written independently of the library, in float64.
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

// ---- section 7: RoPE -------------------------------------------------------------------------

struct RopeRef {
    int dim;
    double theta, factor, orig, beta_fast, beta_slow;
};

// DeepSeek V3's YaRN frequencies (precompute_freqs_cis), written from the formulas.
std::vector<double> ref_freqs(const RopeRef &r) {
    int half = r.dim / 2;
    std::vector<double> f(static_cast<size_t>(half));
    for (int i = 0; i < half; ++i) f[size_t(i)] = 1.0 / std::pow(r.theta, double(2 * i) / r.dim);
    if (r.factor <= 1) return f;
    auto corr = [&](double n) {
        return r.dim * std::log(r.orig / (n * 2 * M_PI)) / (2 * std::log(r.theta));
    };
    double low = std::max(std::floor(corr(r.beta_fast)), 0.0);
    double high = std::min(std::ceil(corr(r.beta_slow)), double(r.dim - 1));
    if (low == high) high += 0.001;
    for (int i = 0; i < half; ++i) {
        double ramp = std::min(1.0, std::max(0.0, (i - low) / (high - low)));
        double smooth = 1 - ramp;
        f[size_t(i)] = f[size_t(i)] / r.factor * (1 - smooth) + f[size_t(i)] * smooth;
    }
    return f;
}

mla_rope make_rope(const RopeRef &r, int style, int offset) {
    mla_rope m{};
    m.rope_dim = r.dim;
    m.rope_offset = offset;
    m.style = style;
    m.theta = r.theta;
    m.yarn_factor = r.factor;
    m.original_max_position = int64_t(r.orig);
    m.beta_fast = r.beta_fast;
    m.beta_slow = r.beta_slow;
    return m;
}

// Rotates row[start..start+dim) by angle sign * pos * f_i per pair (cos/sin from c, s).
void ref_rotate(double *row, int64_t start, int dim, int style, const std::vector<double> &c,
                const std::vector<double> &s, int sign) {
    int half = dim / 2;
    for (int i = 0; i < half; ++i) {
        int64_t a = style == MLA_ROPE_INTERLEAVED ? start + 2 * i : start + i;
        int64_t b = style == MLA_ROPE_INTERLEAVED ? a + 1 : start + i + half;
        double x0 = row[a], x1 = row[b], sn = sign * s[size_t(i)];
        row[a] = x0 * c[size_t(i)] - x1 * sn;
        row[b] = x0 * sn + x1 * c[size_t(i)];
    }
}

void test_rope_frequencies() {
    // DeepSeek V3: dim 64, theta 1e4, factor 40, original 4096, beta 32 / 1. The correction
    // range is [floor(10.47), ceil(22.54)] = [10, 23]: pairs up to 10 keep theta^(-2i/64),
    // pairs from 23 on are divided by 40, in between a linear ramp.
    RopeRef v3{64, 1e4, 40, 4096, 32, 1};
    mla_rope r = make_rope(v3, MLA_ROPE_INTERLEAVED, -1);
    std::vector<double> f(32);
    check(mla_rope_frequencies(&r, f.data()) == MLA_OK, "rope frequencies V3");
    std::vector<double> want = ref_freqs(v3);
    double worst = 0;
    for (int i = 0; i < 32; ++i)
        worst = std::max(worst, std::fabs(f[size_t(i)] / want[size_t(i)] - 1));
    check(worst < 1e-13, "YaRN frequencies differ from the reference by %.3g", worst);
    auto base = [](int i) { return std::pow(1e4, -i / 32.0); };
    check(std::fabs(f[10] / base(10) - 1) < 1e-13 && std::fabs(f[23] * 40 / base(23) - 1) < 1e-13 &&
              std::fabs(f[31] * 40 / base(31) - 1) < 1e-13 && std::fabs(f[0] - 1) < 1e-15,
          "YaRN: fast pairs kept, slow pairs divided by the factor");
    double ramp = 6.0 / 13.0;  // pair 16 in [10, 23]
    check(std::fabs(f[16] / (base(16) / 40 * ramp + base(16) * (1 - ramp)) - 1) < 1e-13,
          "YaRN: linear ramp between the correction dims");
    RopeRef plain{16, 1e4, 1, 0, 0, 0};
    r = make_rope(plain, MLA_ROPE_INTERLEAVED, -1);
    check(mla_rope_frequencies(&r, f.data()) == MLA_OK && std::fabs(f[3] / base(3 * 4) - 1) < 1e-13,
          "plain RoPE frequencies theta^(-2i/dim)");
}

struct RopeCase {
    int32_t dt;
    int style, offset;
    RopeRef ref;
    bool inverse;
};

void test_rope_apply(const RopeCase &rc) {
    const int64_t n = 7, h = 3, d = 24;
    const int64_t xs1 = 32, xs0 = h * xs1 + 3;  // padded, non-contiguous
    std::vector<int32_t> pos = {0, 1, -1, 5, 4096, -123456, 2147483647};
    std::vector<double> xv(static_cast<size_t>(n * xs0));
    for (auto &v : xv) v = random_in(rc.dt, -2, 2);
    std::vector<uint8_t> x = encode(xv, rc.dt);
    std::vector<uint8_t> out(static_cast<size_t>((n * h * d + 2) * elem_bytes(rc.dt)), 0xA5);
    mla_rope_params p{};
    p.dtype = rc.dt;
    p.n = n;
    p.h = h;
    p.d = d;
    p.x = x.data();
    p.x_stride[0] = xs0;
    p.x_stride[1] = xs1;
    p.positions = pos.data();
    p.rope = make_rope(rc.ref, rc.style, rc.offset);
    p.inverse = rc.inverse;
    p.out = out.data();
    p.exec = cpu(2);
    char tag[128];
    std::snprintf(tag, sizeof tag, "rope %s %s offset %d yarn %g%s", dt_name(rc.dt),
                  rc.style ? "half-split" : "interleaved", rc.offset, rc.ref.factor,
                  rc.inverse ? " inverse" : "");
    check(mla_rope_apply(&p) == MLA_OK, "%s: %s", tag, mla_last_error());

    std::vector<double> f = ref_freqs(rc.ref);
    int64_t start = rc.offset < 0 ? d - rc.ref.dim : rc.offset;
    int bad_rot = 0, bad_copy = 0;
    // Tolerance: one rounding to the output type (half an ulp: 2^-8 relative for bf16, 2^-11
    // for f16, 2^-24 for f32; a little more for the double -> float -> bf16/f16 path), plus
    // the error of angles up to 2^31 rad computed from frequencies that may differ in the
    // last bit.
    double unit = rc.dt == MLA_FLOAT64 ? 0x1p-52 : rc.dt == MLA_FLOAT32 ? 0x1p-24
                  : rc.dt == MLA_BFLOAT16 ? 0x1p-8 : 0x1p-11;
    unit *= 1.0 + 0x1p-10;
    for (int64_t i = 0; i < n; ++i) {
        std::vector<double> c(f.size()), s(f.size());
        for (size_t k = 0; k < f.size(); ++k) {
            c[k] = std::cos(double(pos[size_t(i)]) * f[k]);
            s[k] = std::sin(double(pos[size_t(i)]) * f[k]);
        }
        double angle_err = std::fabs(double(pos[size_t(i)])) * 1e-15 + 1e-14;
        for (int64_t hh = 0; hh < h; ++hh) {
            const double *xr = &xv[size_t(i * xs0 + hh * xs1)];
            std::vector<double> row(xr, xr + d);
            std::vector<double> want = row;
            double rowmax = 0;
            for (double v : row) rowmax = std::max(rowmax, std::fabs(v));
            ref_rotate(want.data(), start, rc.ref.dim, rc.style, c, s, rc.inverse ? -1 : 1);
            for (int64_t e = 0; e < d; ++e) {
                double got = value_at(out.data(), rc.dt, (i * h + hh) * d + e);
                if (e < start || e >= start + rc.ref.dim) {
                    bad_copy += got != row[size_t(e)];
                } else {
                    bad_rot += !(std::fabs(got - want[size_t(e)]) <=
                                 std::fabs(want[size_t(e)]) * unit + 2 * rowmax * angle_err);
                }
            }
        }
    }
    bool tail = out[out.size() - 1] == 0xA5 && out[out.size() - 2 * elem_bytes(rc.dt)] == 0xA5;
    check(bad_rot == 0, "%s: %d rotated values differ from the reference", tag, bad_rot);
    check(bad_copy == 0 && tail, "%s: %d unrotated dims not copied exactly", tag, bad_copy);
}

void test_rope_inverse_inplace_table() {
    const int64_t n = 6, h = 2, d = 16;
    RopeRef yarn{8, 160000, 16, 64, 32, 1};
    std::vector<int32_t> pos = {3, 0, 17, 99, 2, 63};
    std::vector<double> x(static_cast<size_t>(n * h * d));
    for (auto &v : x) v = uni(-1, 1);
    for (int style : {MLA_ROPE_INTERLEAVED, MLA_ROPE_HALF_SPLIT}) {
        mla_rope_params p{};
        p.dtype = MLA_FLOAT64;
        p.n = n;
        p.h = h;
        p.d = d;
        p.x = x.data();
        p.x_stride[0] = h * d;
        p.x_stride[1] = d;
        p.positions = pos.data();
        p.rope = make_rope(yarn, style, 2);
        p.exec = cpu(1);
        std::vector<double> y(x.size()), back(x.size());
        p.out = y.data();
        check(mla_rope_apply(&p) == MLA_OK, "rope f64: %s", mla_last_error());
        p.x = y.data();
        p.out = back.data();
        p.inverse = 1;
        mla_rope_apply(&p);
        double worst = 0;
        for (size_t i = 0; i < x.size(); ++i) worst = std::max(worst, std::fabs(back[i] - x[i]));
        check(worst < 1e-14, "rope inverse(rope(x)) == x, style %d: max error %.3g", style, worst);

        // In place on a contiguous x gives the out-of-place result.
        std::vector<double> inplace = x;
        p.x = inplace.data();
        p.out = inplace.data();
        p.inverse = 0;
        check(mla_rope_apply(&p) == MLA_OK && inplace == y, "rope in place == out of place");

        // A cos/sin table built from the frequencies agrees with theta + YaRN.
        std::vector<double> f = ref_freqs(yarn);
        int64_t len = 100;
        std::vector<float> ct(static_cast<size_t>(len * 4)), st(static_cast<size_t>(len * 4));
        for (int64_t t = 0; t < len; ++t)
            for (int k = 0; k < 4; ++k) {
                ct[size_t(t * 4 + k)] = float(std::cos(t * f[size_t(k)]));
                st[size_t(t * 4 + k)] = float(std::sin(t * f[size_t(k)]));
            }
        std::vector<double> yt(x.size());
        mla_rope_params pt = p;
        pt.x = x.data();
        pt.out = yt.data();
        pt.rope.cos_table = ct.data();
        pt.rope.sin_table = st.data();
        pt.rope.table_len = len;
        check(mla_rope_apply(&pt) == MLA_OK, "rope with a table: %s", mla_last_error());
        worst = 0;
        for (size_t i = 0; i < x.size(); ++i) worst = std::max(worst, std::fabs(yt[i] - y[i]));
        check(worst < 1e-6, "rope table vs theta: max difference %.3g", worst);

        // Positions outside the table are invalid and nothing is written.
        std::vector<int32_t> badpos = pos;
        badpos[4] = int32_t(len);
        std::vector<double> untouched(x.size(), 5.0);
        pt.positions = badpos.data();
        pt.out = untouched.data();
        check_invalid(mla_rope_apply(&pt), "rope position == table_len");
        badpos[4] = -1;
        check_invalid(mla_rope_apply(&pt), "rope negative position with a table");
        check(std::all_of(untouched.begin(), untouched.end(), [](double v) { return v == 5.0; }),
              "rope with a bad position must not write out");
    }
    // rope_dim 0: a copy.
    {
        std::vector<float> xf(8), yf(8, -1);
        for (auto &v : xf) v = float(uni(-1, 1));
        mla_rope_params p{};
        p.dtype = MLA_FLOAT32;
        p.n = 2;
        p.h = 1;
        p.d = 4;
        p.x = xf.data();
        p.x_stride[0] = 4;
        p.x_stride[1] = 4;
        p.out = yf.data();
        p.exec = cpu();
        check(mla_rope_apply(&p) == MLA_OK && xf == yf, "rope_dim 0 copies x");
    }
}

void test_rope_bad_args() {
    const int64_t n = 2, h = 2, d = 8;
    std::vector<float> x(64, 1.0f), out(size_t(n * h * d), 7.0f);
    std::vector<int32_t> pos = {1, 2};
    mla_rope_params p{};
    p.dtype = MLA_FLOAT32;
    p.n = n;
    p.h = h;
    p.d = d;
    p.x = x.data();
    p.x_stride[0] = 20;
    p.x_stride[1] = 10;
    p.positions = pos.data();
    p.rope = make_rope(RopeRef{4, 1e4, 1, 0, 0, 0}, MLA_ROPE_INTERLEAVED, -1);
    p.out = out.data();
    p.exec = cpu();
    mla_rope_params q = p;
    q.rope.rope_dim = 3;
    check_invalid(mla_rope_apply(&q), "rope odd rope_dim");
    q = p;
    q.rope.rope_offset = 6;  // dims [6, 10) of 8
    check_invalid(mla_rope_apply(&q), "rope offset past the row");
    q = p;
    q.rope.style = 5;
    check_invalid(mla_rope_apply(&q), "rope unknown style");
    q = p;
    q.rope.theta = 1.0;
    check_invalid(mla_rope_apply(&q), "rope theta 1");
    q = p;
    q.rope.yarn_factor = 4;
    check_invalid(mla_rope_apply(&q), "rope YaRN without original_max_position");
    q = p;
    q.dtype = MLA_INT32;
    check_invalid(mla_rope_apply(&q), "rope int32");
    q = p;
    q.positions = nullptr;
    check_invalid(mla_rope_apply(&q), "rope null positions");
    q = p;
    q.h = 0;
    check_invalid(mla_rope_apply(&q), "rope h 0");
    q = p;
    q.rope.cos_table = reinterpret_cast<const float *>(x.data());
    check_invalid(mla_rope_apply(&q), "rope cos_table without sin_table");
    check(std::all_of(out.begin(), out.end(), [](float v) { return v == 7.0f; }),
          "failed rope calls must not write out");
    // out overlapping a strided x, or shifted from a contiguous one.
    q = p;
    q.out = x.data();
    check_invalid(mla_rope_apply(&q), "rope out == x with a strided x");
    q = p;
    q.x_stride[0] = h * d;
    q.x_stride[1] = d;
    q.out = x.data() + 1;
    std::vector<float> xs = x;
    check_invalid(mla_rope_apply(&q), "rope out overlapping x at an offset");
    check(x == xs, "failed in-place rope must not write x");
    q = p;
    q.exec = gpu();
    check_unsupported(mla_rope_apply(&q), "rope on a GPU device");
    check_invalid(mla_rope_apply(nullptr), "rope null params");
}

}  // namespace

int main() {
    const int32_t F32 = MLA_FLOAT32, F64 = MLA_FLOAT64, BF = MLA_BFLOAT16, F16 = MLA_FLOAT16,
                  FP8 = MLA_FP8_E4M3;
    test_rope_frequencies();
    RopeRef v3{8, 1e4, 40, 4096, 32, 1}, plain{8, 1e4, 1, 0, 0, 0};
    for (int32_t dt : {F32, F64, BF, F16})
        for (int style : {MLA_ROPE_INTERLEAVED, MLA_ROPE_HALF_SPLIT})
            for (int offset : {-1, 4})
                for (bool inverse : {false, true})
                    test_rope_apply(RopeCase{dt, style, offset, dt == F32 ? plain : v3, inverse});
    test_rope_apply(RopeCase{F32, MLA_ROPE_INTERLEAVED, 0, v3, false});
    test_rope_inverse_inplace_table();
    test_rope_bad_args();

    std::printf("%d passed, %d failed\n", g_passed, g_failed);
    return g_failed == 0 ? 0 : 1;
}
