// Native GPU test of the device paths of the lightning indexer, top-k, RoPE and KV quantise /
// dequantise (ops.md sections 5-8, include/mla/mla.h). Every call runs on CUDA device 0 with
// device pointers only (the mla_cuda_* API), outputs poisoned first, and is compared with the
// CPU path of the same library on host copies and, for the indexer scores, with a float64
// reference written here from the contract:
//  - indexer scores: GPU vs reference within a bound scaled by sum_j |w_j| sum_i |q_ji k_i|
//    (float accumulation; FP8 tensor cores accumulate more coarsely), infinities, NaN and the
//    causal -inf exact; every element written. Both kernels: the library's choice (the sm_90a
//    tensor-core kernel for h 64, d 128, bf16 / FP8) and the CUDA-core kernel.
//  - fused indexer top-k: exactly the CPU top-k of the GPU's own scores (same rules, same
//    scores), and as many entries as the reference has choosable keys; chunked through a
//    small workspace too.
//  - top-k: indices and values equal to the CPU's, bit for bit (ties, NaN, infinities, signed
//    zeros, rows longer than shared memory, all entries tied, k > n, n = 0).
//  - RoPE: bytes equal to the CPU's with cos / sin tables, within a unit of the last place
//    from frequencies; positions outside a table give NaN in the rotated dims.
//  - quantise: cache bytes equal to the CPU's; dequantise: values equal (NaN for NaN).
//  - refusals, with device pointers: topk 2^40 (CPU and GPU), a top-k beyond the GPU's sort,
//    a short workspace, host memory, a device that does not exist.
// Without a CUDA device every case is skipped.
#include <mla/mla.h>
#include "test_support.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <initializer_list>
#include <limits>
#include <random>
#include <string>
#include <thread>
#include <vector>

namespace {

using mla_test::check;
using mla_test::DeviceBuffer;
using mla_test::g_failed;
using mla_test::g_passed;
using mla_test::ok_or_report;

const uint32_t kPoison = 0xfefefefeu;  // a float of -1.7e38 / an int32 no call writes

int64_t dtype_bytes(int dt) {
    switch (dt) {
        case MLA_FLOAT64: return 8;
        case MLA_FLOAT32: return 4;
        case MLA_FP8_E4M3: return 1;
        default: return 2;
    }
}

const char *dt_name(int dt) {
    switch (dt) {
        case MLA_FLOAT32: return "f32";
        case MLA_FLOAT64: return "f64";
        case MLA_FLOAT16: return "f16";
        case MLA_BFLOAT16: return "bf16";
        case MLA_FP8_E4M3: return "fp8";
        default: return "?";
    }
}

uint32_t float_bits(float f) {
    uint32_t u;
    std::memcpy(&u, &f, 4);
    return u;
}

// Runs fn(i) for i in [0, n) on all host cores.
template <typename F>
void parallel_rows(int64_t n, F fn) {
    const int workers = std::max(1u, std::min(32u, std::thread::hardware_concurrency()));
    std::vector<std::thread> pool;
    for (int w = 0; w < workers; ++w)
        pool.emplace_back([&, w] {
            for (int64_t i = w; i < n; i += workers) fn(i);
        });
    for (auto &t : pool) t.join();
}

// A tensor of rows x cols values of one dtype: its bytes and the values they decode to (FP8:
// times the row's scale).
struct Tensor {
    int dt = MLA_FLOAT32;
    int64_t rows = 0, cols = 0;
    std::vector<uint8_t> bytes;
    std::vector<double> value;
    std::vector<float> scale;  // FP8 rows

    Tensor(int t, int64_t r, int64_t c)
        : dt(t), rows(r), cols(c), bytes(size_t(std::max<int64_t>(r * c, 1) * dtype_bytes(t))),
          value(size_t(r * c)), scale(t == MLA_FP8_E4M3 ? size_t(r) : 0, 1.0f) {}

    // Element i set to (a rounding of) v; FP8: the byte itself (v is its index 0..255).
    void set(int64_t i, double v) {
        uint8_t *p = bytes.data() + i * dtype_bytes(dt);
        switch (dt) {
            case MLA_FLOAT64: std::memcpy(p, &v, 8); value[size_t(i)] = v; break;
            case MLA_FLOAT32: {
                const float f = float(v);
                std::memcpy(p, &f, 4);
                value[size_t(i)] = f;
                break;
            }
            case MLA_BFLOAT16: {
                const uint16_t h = mla_test::bf16_bits(v);
                std::memcpy(p, &h, 2);
                value[size_t(i)] = mla_test::bf16_value(h);
                break;
            }
            case MLA_FLOAT16: {
                const uint16_t h = mla_test::f16_bits(v);
                std::memcpy(p, &h, 2);
                value[size_t(i)] = mla_test::f16_value(h);
                break;
            }
            default: {
                const uint8_t b = uint8_t(int(v));
                *p = b;
                value[size_t(i)] = mla_test::fp8_value(b) * double(scale[size_t(i / cols)]);
            }
        }
    }
    // A non-finite element: NaN (which 0), +inf (1), -inf (2); FP8 has only NaN (0x7f).
    void set_special(int64_t i, int which) {
        if (dt == MLA_FP8_E4M3) {
            bytes[size_t(i)] = 0x7f;
            value[size_t(i)] = std::nan("");
            return;
        }
        const double v = which == 0 ? std::nan("") : which == 1 ? INFINITY : -INFINITY;
        set(i, v);
    }
};

// Random values in [-1, 1) (FP8: random non-NaN bytes, row scales in [0.01, 0.05)).
Tensor random_tensor(int dt, int64_t rows, int64_t cols, std::mt19937_64 &rng) {
    Tensor t(dt, rows, cols);
    std::uniform_real_distribution<double> uni(-1.0, 1.0);
    if (dt == MLA_FP8_E4M3) {
        for (auto &s : t.scale) s = float(0.01 + 0.04 * (uni(rng) * 0.5 + 0.5));
        for (int64_t i = 0; i < rows * cols; ++i) {
            int b;
            do b = int(rng() & 255u); while ((b & 0x7f) == 0x7f);
            t.set(i, b);
        }
    } else {
        for (int64_t i = 0; i < rows * cols; ++i) t.set(i, uni(rng));
    }
    return t;
}

// ---- lightning indexer --------------------------------------------------------------------------

enum Special { kNone = 0, kNanKeys = 1, kInfKeys = 2, kTiedKeys = 3, kOddScales = 4 };

struct IdxCase {
    std::string name;
    int q_dt = MLA_BFLOAT16, k_dt = MLA_BFLOAT16, w_dt = MLA_FLOAT32;
    int64_t b = 1, s_q = 1, s_k = 256, h = 64, d = 128, topk = 64;
    bool causal = true;
    int special = kNone;
    int64_t chunk_bytes = 0;  // MLA4J_INDEXER_CHUNK_BYTES for the fused top-k (0: default)
};

int64_t visible(const IdxCase &c, int64_t t) {
    if (!c.causal) return c.s_k;
    return std::min(c.s_k, std::max<int64_t>(0, t + c.s_k - c.s_q + 1));
}

// Accepts a GPU score against the reference: non-finite classes exact, finite ones within
// tol * bound plus the float32 rounding of the stored score.
bool score_ok(double g, double ref, double bound, double tol) {
    if (std::isnan(ref)) return std::isnan(g);
    if (std::isinf(ref)) return g == ref;
    return std::isfinite(g) && std::fabs(g - ref) <= tol * bound + std::ldexp(std::fabs(ref), -24) + 1e-30;
}

void set_env(const char *name, const char *value) {
    if (value)
        setenv(name, value, 1);
    else
        unsetenv(name);
}

void run_indexer_case(const IdxCase &c, uint64_t seed, void *stream) {
    std::mt19937_64 rng(seed);
    const int64_t rows = c.b * c.s_q;
    Tensor q = random_tensor(c.q_dt, rows * c.h, c.d, rng);
    Tensor k = random_tensor(c.k_dt, c.b * c.s_k, c.d, rng);
    Tensor w = random_tensor(c.w_dt, rows, c.h, rng);
    if (c.special == kTiedKeys) {  // pairs of equal key rows: tied scores everywhere
        for (int64_t r = 1; r < k.rows; r += 2) {
            const int64_t es = dtype_bytes(k.dt);
            std::memcpy(&k.bytes[size_t(r * c.d * es)], &k.bytes[size_t((r - 1) * c.d * es)], size_t(c.d * es));
            std::copy_n(&k.value[size_t((r - 1) * c.d)], c.d, &k.value[size_t(r * c.d)]);
            if (!k.scale.empty()) k.scale[size_t(r)] = k.scale[size_t(r - 1)];
        }
    }
    if (c.special == kNanKeys || c.special == kInfKeys) {  // one bad element in ~6% of the keys
        for (int64_t r = 0; r < k.rows; ++r)
            if (rng() % 16 == 0) k.set_special(r * c.d + int64_t(rng() % c.d), c.special == kNanKeys ? 0 : 1 + int(rng() % 2));
    }
    if (c.special == kOddScales) {  // FP8 keys with zero and negative scales, some negative
        for (int64_t r = 0; r < k.rows; ++r) {  // query scales; values re-derived
            if (r % 5 == 1) k.scale[size_t(r)] = 0.0f;
            if (r % 5 == 3) k.scale[size_t(r)] = -k.scale[size_t(r)];
            for (int64_t i = 0; i < c.d; ++i) k.set(r * c.d + i, k.bytes[size_t(r * c.d + i)]);
        }
        for (int64_t r = 0; r < q.rows; r += 7 * c.h + 3) {  // not in every query
            q.scale[size_t(r)] = -q.scale[size_t(r)];
            for (int64_t i = 0; i < c.d; ++i) q.set(r * c.d + i, q.bytes[size_t(r * c.d + i)]);
        }
    }

    // float64 reference and its error scale.
    std::vector<double> ref(size_t(rows * c.s_k)), bound(size_t(rows * c.s_k));
    parallel_rows(rows, [&](int64_t row) {
        const int64_t bb = row / c.s_q, t = row % c.s_q, vis = visible(c, t);
        for (int64_t s = 0; s < c.s_k; ++s) {
            double acc = 0, mag = 0;
            if (s < vis) {
                const double *kr = &k.value[size_t((bb * c.s_k + s) * c.d)];
                for (int64_t j = 0; j < c.h; ++j) {
                    const double *qr = &q.value[size_t((row * c.h + j) * c.d)];
                    double z = 0, za = 0;
                    for (int64_t i = 0; i < c.d; ++i) {
                        z += qr[i] * kr[i];
                        if (std::isfinite(kr[i])) za += std::fabs(qr[i] * kr[i]);
                    }
                    const double wj = w.value[size_t(row * c.h + j)];
                    if (z > 0) acc += wj * z;  // relu; a NaN dot adds nothing
                    mag += std::fabs(wj) * za;
                }
            } else {
                acc = -INFINITY;
            }
            ref[size_t(row * c.s_k + s)] = acc;
            bound[size_t(row * c.s_k + s)] = mag;
        }
    });
    const bool fp8 = c.q_dt == MLA_FP8_E4M3 || c.k_dt == MLA_FP8_E4M3;
    const bool dbl = c.q_dt == MLA_FLOAT64 || c.k_dt == MLA_FLOAT64 || c.w_dt == MLA_FLOAT64;
    const double tol = dbl ? 1e-9 : fp8 ? 4e-3 : 1e-4;

    mla_indexer_params p;
    std::memset(&p, 0, sizeof p);
    p.q_dtype = c.q_dt;
    p.k_dtype = c.k_dt;
    p.w_dtype = c.w_dt;
    p.b = c.b;
    p.s_q = c.s_q;
    p.s_k = c.s_k;
    p.h = c.h;
    p.d = c.d;
    p.causal = c.causal;
    p.topk = c.topk;

    // The CPU path, as a check of the reference.
    {
        mla_indexer_params hp = p;
        hp.q = q.bytes.data();
        hp.k = k.bytes.data();
        hp.w = w.bytes.data();
        hp.q_scale = q.scale.empty() ? nullptr : q.scale.data();
        hp.k_scale = k.scale.empty() ? nullptr : k.scale.data();
        std::vector<float> cpu(size_t(std::max<int64_t>(rows * c.s_k, 1)));
        hp.scores = cpu.data();
        hp.exec.device = -1;
        if (!ok_or_report(mla_indexer_scores(&hp), (c.name + ": CPU scores").c_str())) return;
        int64_t bad = 0;
        for (int64_t i = 0; i < rows * c.s_k; ++i)
            bad += !score_ok(cpu[size_t(i)], ref[size_t(i)], bound[size_t(i)], 1e-4);
        check(bad == 0, "%s: %lld CPU scores off the float64 reference", c.name.c_str(), (long long)bad);
    }

    DeviceBuffer dq, dk, dw, dqs, dks;
    if (!dq.upload(q.bytes.data(), int64_t(q.bytes.size())) || !dk.upload(k.bytes.data(), int64_t(k.bytes.size())) ||
        !dw.upload(w.bytes.data(), int64_t(w.bytes.size())))
        return;
    if (!q.scale.empty() && !dqs.upload(q.scale.data(), int64_t(q.scale.size() * 4))) return;
    if (!k.scale.empty() && !dks.upload(k.scale.data(), int64_t(k.scale.size() * 4))) return;
    p.q = dq.ptr;
    p.k = dk.ptr;
    p.w = dw.ptr;
    p.q_scale = q.scale.empty() ? nullptr : dqs.as<float>();
    p.k_scale = k.scale.empty() ? nullptr : dks.as<float>();
    p.exec.device = 0;
    p.exec.stream = stream;

    const char *kernels[] = {nullptr, "simple"};
    for (const char *kernel : kernels) {
        set_env("MLA4J_INDEXER_KERNEL", kernel);
        const std::string tag = c.name + (kernel ? " [simple]" : "");
        // Scores.
        DeviceBuffer dsc;
        const int64_t n_scores = rows * c.s_k;
        if (!dsc.alloc(n_scores * 4) || !dsc.fill(0xfe)) return;
        mla_indexer_params g = p;
        g.scores = dsc.as<float>();
        if (!ok_or_report(mla_indexer_scores(&g), (tag + ": GPU scores").c_str())) continue;
        if (!ok_or_report(mla_cuda_stream_synchronize(stream), (tag + ": sync").c_str())) return;
        std::vector<float> gs(size_t(std::max<int64_t>(n_scores, 1)));
        if (!dsc.download(gs.data())) return;
        int64_t unwritten = 0, off = 0, first = -1;
        double num = 0, den = 0;
        for (int64_t i = 0; i < n_scores; ++i) {
            const double gv = gs[size_t(i)], rv = ref[size_t(i)];
            if (float_bits(gs[size_t(i)]) == kPoison) ++unwritten;
            if (!score_ok(gv, rv, bound[size_t(i)], tol)) {
                if (first < 0) first = i;
                ++off;
            }
            if (std::isfinite(rv) && std::isfinite(gv)) {
                num += (gv - rv) * (gv - rv);
                den += rv * rv;
            }
        }
        const double rel = den > 0 ? std::sqrt(num / den) : 0;
        check(unwritten == 0 && off == 0 && rel < (fp8 ? 1e-2 : 1e-3),
              "%s: scores: %lld unwritten, %lld off the reference (first at %lld: GPU %.9g, "
              "reference %.9g, bound %.3g), relative error %.2e", tag.c_str(), (long long)unwritten,
              (long long)off, (long long)first, first >= 0 ? gs[size_t(first)] : 0.0,
              first >= 0 ? ref[size_t(first)] : 0.0, first >= 0 ? bound[size_t(first)] : 0.0, rel);

        // Expected top-k: the CPU's top-k of these very scores.
        const int64_t n_idx = rows * c.topk;
        std::vector<int32_t> want(size_t(std::max<int64_t>(n_idx, 1)));
        std::vector<float> want_val(want.size());
        {
            mla_topk_params tp;
            std::memset(&tp, 0, sizeof tp);
            tp.rows = rows;
            tp.n = c.s_k;
            tp.k = c.topk;
            tp.scores = gs.data();
            tp.indices = want.data();
            tp.values = want_val.data();
            tp.exec.device = -1;
            if (!ok_or_report(mla_topk(&tp), (tag + ": CPU top-k of the GPU scores").c_str())) return;
        }
        // Fused top-k, chunked through the workspace.
        char chunk[32];
        std::snprintf(chunk, sizeof chunk, "%lld", (long long)c.chunk_bytes);
        set_env("MLA4J_INDEXER_CHUNK_BYTES", c.chunk_bytes ? chunk : nullptr);
        const int64_t ws = mla_indexer_topk_workspace_size(&p);
        check(ws >= 0, "%s: workspace query failed: %s", tag.c_str(), mla_last_error());
        DeviceBuffer dws, didx;
        if (!dws.alloc(std::max<int64_t>(ws, 0)) || !didx.alloc(n_idx * 4) || !didx.fill(0xfe)) return;
        g = p;
        g.indices = didx.as<int32_t>();
        g.exec.workspace = dws.ptr;
        g.exec.workspace_bytes = ws;
        if (ok_or_report(mla_indexer_topk(&g), (tag + ": GPU fused top-k").c_str()) &&
            ok_or_report(mla_cuda_stream_synchronize(stream), "sync")) {
            std::vector<int32_t> got(want.size());
            if (!didx.download(got.data())) return;
            int64_t differ = 0, first_d = -1;
            for (int64_t i = 0; i < n_idx; ++i)
                if (got[size_t(i)] != want[size_t(i)]) {
                    if (first_d < 0) first_d = i;
                    ++differ;
                }
            // As many entries as the reference has choosable keys.
            int64_t count_off = 0;
            for (int64_t row = 0; row < rows; ++row) {
                int64_t choosable = 0, taken = 0;
                for (int64_t s = 0; s < c.s_k; ++s) choosable += ref[size_t(row * c.s_k + s)] > -INFINITY;
                for (int64_t j = 0; j < c.topk; ++j) taken += got[size_t(row * c.topk + j)] >= 0;
                count_off += taken != std::min(choosable, c.topk);
            }
            check(differ == 0 && count_off == 0,
                  "%s: fused top-k: %lld of %lld indices differ from the CPU top-k of the GPU "
                  "scores (first at %lld: %d vs %d), %lld rows with a wrong count", tag.c_str(),
                  (long long)differ, (long long)n_idx, (long long)first_d,
                  first_d >= 0 ? got[size_t(first_d)] : 0, first_d >= 0 ? want[size_t(first_d)] : 0,
                  (long long)count_off);
            // A workspace one byte short is refused.
            if (ws > 0) {
                g.exec.workspace_bytes = ws - 1;
                const mla_status st = mla_indexer_topk(&g);
                check(st == MLA_ERR_INVALID_ARGUMENT, "%s: a workspace one byte short: expected "
                      "MLA_ERR_INVALID_ARGUMENT, got %d (%s)", tag.c_str(), int(st), mla_last_error());
            }
        }
        set_env("MLA4J_INDEXER_CHUNK_BYTES", nullptr);

        // Standalone top-k on the device scores: the CPU's indices and values, bit for bit.
        DeviceBuffer dti, dtv;
        if (!dti.alloc(n_idx * 4) || !dtv.alloc(n_idx * 4) || !dti.fill(0xfe) || !dtv.fill(0xfe)) return;
        mla_topk_params tp;
        std::memset(&tp, 0, sizeof tp);
        tp.rows = rows;
        tp.n = c.s_k;
        tp.k = c.topk;
        tp.scores = dsc.as<float>();
        tp.indices = dti.as<int32_t>();
        tp.values = dtv.as<float>();
        tp.exec.device = 0;
        tp.exec.stream = stream;
        if (ok_or_report(mla_topk(&tp), (tag + ": GPU top-k").c_str()) &&
            ok_or_report(mla_cuda_stream_synchronize(stream), "sync")) {
            std::vector<int32_t> gi(want.size());
            std::vector<float> gv(want.size());
            if (!dti.download(gi.data()) || !dtv.download(gv.data())) return;
            int64_t differ = 0;
            for (int64_t i = 0; i < n_idx; ++i)
                differ += gi[size_t(i)] != want[size_t(i)] || float_bits(gv[size_t(i)]) != float_bits(want_val[size_t(i)]);
            check(differ == 0, "%s: top-k of the scores: %lld of %lld entries differ from the CPU",
                  tag.c_str(), (long long)differ, (long long)n_idx);
        }
        std::printf("  %-72s %s\n", tag.c_str(), g_failed ? "(failures so far)" : "ok");
    }
    set_env("MLA4J_INDEXER_KERNEL", nullptr);
}

std::vector<IdxCase> indexer_cases() {
    std::vector<IdxCase> v;
    auto add = [&](IdxCase c, const char *what) {
        c.name = std::string(what) + " " + dt_name(c.q_dt) + "/" + dt_name(c.k_dt) + " w " + dt_name(c.w_dt) +
                 " b " + std::to_string(c.b) + " s_q " + std::to_string(c.s_q) + " s_k " + std::to_string(c.s_k) +
                 " h " + std::to_string(c.h) + " d " + std::to_string(c.d) + " topk " + std::to_string(c.topk) +
                 (c.causal ? " causal" : "");
        v.push_back(c);
    };
    IdxCase c;
    // Tensor-core shapes (h 64, d 128): decode, prefill, token groups of 1, 2 and 4.
    c.b = 3, c.s_q = 1, c.s_k = 1000, c.topk = 64;
    add(c, "decode");
    c.b = 2, c.s_q = 2, c.s_k = 2100, c.topk = 2048;
    add(c, "decode");
    c.b = 1, c.s_q = 130, c.s_k = 130, c.topk = 100;
    add(c, "prefill");
    c.b = 2, c.s_q = 3, c.s_k = 5000, c.topk = 512, c.causal = false;
    add(c, "s_q 3");
    c.causal = true;
    c.b = 1, c.s_q = 40, c.s_k = 20, c.topk = 8;
    add(c, "s_q > s_k");
    c.b = 2, c.s_q = 9, c.s_k = 300, c.topk = 400, c.causal = false;
    add(c, "topk > s_k");
    c.causal = true;
    c.b = 2, c.s_q = 0, c.s_k = 100, c.topk = 8;
    add(c, "no queries");
    c.b = 2, c.s_q = 3, c.s_k = 0, c.topk = 8;
    add(c, "no keys");
    // FP8 keys and queries with per-row scales.
    c.q_dt = c.k_dt = MLA_FP8_E4M3;
    c.b = 2, c.s_q = 1, c.s_k = 3000, c.topk = 512;
    add(c, "decode");
    c.b = 2, c.s_q = 2, c.s_k = 1500, c.topk = 300;
    add(c, "decode");
    c.b = 1, c.s_q = 70, c.s_k = 300, c.topk = 77;
    add(c, "prefill");
    c.special = kOddScales, c.b = 2, c.s_q = 2, c.s_k = 700;
    add(c, "zero / negative scales");
    c.special = kNanKeys;
    add(c, "NaN keys");
    c.special = kNone;
    // bf16 corner cases.
    c.q_dt = c.k_dt = MLA_BFLOAT16;
    c.special = kNanKeys, c.b = 2, c.s_q = 2, c.s_k = 900, c.topk = 128;
    add(c, "NaN keys");
    c.special = kInfKeys;
    add(c, "inf keys");
    c.special = kTiedKeys, c.topk = 77;
    add(c, "tied keys");
    c.special = kNone;
    c.w_dt = MLA_BFLOAT16, c.b = 2, c.s_q = 4, c.s_k = 333, c.topk = 33;
    add(c, "bf16 weights");
    c.w_dt = MLA_FLOAT32;
    // Chunks of the fused top-k: token ranges of one batch, then groups of whole batches.
    c.b = 1, c.s_q = 33, c.s_k = 700, c.topk = 50, c.chunk_bytes = 4096;
    add(c, "chunked by tokens");
    c.b = 5, c.s_q = 2, c.s_k = 300, c.topk = 20, c.chunk_bytes = 8192;
    add(c, "chunked by batches");
    c.chunk_bytes = 0;
    // The CUDA-core kernel's shapes and types (the library picks it by itself).
    c.b = 2, c.s_q = 3, c.s_k = 257, c.topk = 40;
    c.h = 16, c.d = 64;
    add(c, "small heads");
    c.h = 3, c.d = 40;
    add(c, "odd heads");
    c.h = 64, c.d = 128;
    c.q_dt = c.k_dt = MLA_FLOAT32;
    add(c, "float32");
    c.q_dt = c.k_dt = MLA_FLOAT16;
    add(c, "float16");
    c.q_dt = c.k_dt = MLA_FLOAT64, c.w_dt = MLA_FLOAT64;
    add(c, "float64");
    c.q_dt = MLA_BFLOAT16, c.k_dt = MLA_FP8_E4M3, c.w_dt = MLA_FLOAT32;
    add(c, "mixed");
    c.q_dt = c.k_dt = MLA_BFLOAT16, c.w_dt = MLA_FLOAT64;
    add(c, "float64 weights");
    return v;
}

// ---- standalone top-k -------------------------------------------------------------------------

struct TopkCase {
    std::string name;
    int64_t rows, n, k;
    // 0 random with specials, 1 few levels, 2 all equal, 3 all NaN, 4 zeros / subnormals, 5 values
    // on a grid of 1/30 (every value repeated, ties at the threshold)
    int pattern;
};

void run_topk_case(const TopkCase &c, uint64_t seed, void *stream) {
    std::mt19937_64 rng(seed);
    std::normal_distribution<float> nd(0.0f, 3.0f);
    std::vector<float> s(size_t(std::max<int64_t>(c.rows * c.n, 1)));
    for (int64_t i = 0; i < c.rows * c.n; ++i) {
        float v = nd(rng);
        switch (c.pattern) {
            case 0: {
                const unsigned r = unsigned(rng() % 40);
                if (r == 0) v = std::nanf("");
                if (r == 1) v = -INFINITY;
                if (r == 2) v = INFINITY;
                if (r == 3) v = 0.0f;
                if (r == 4) v = -0.0f;
                if (r == 5 && i > 0) v = s[size_t(i - 1)];
                break;
            }
            case 1: v = float(int(rng() % 5)) - 2.0f; break;
            case 2: v = 1.5f; break;
            case 3: v = std::nanf(""); break;
            case 5: v = std::round(v * 30.0f) / 30.0f; break;  // many repeats of each value
            default: {
                const unsigned r = unsigned(rng() % 4);
                v = r == 0 ? 0.0f : r == 1 ? -0.0f : r == 2 ? 1e-40f : -1e-42f;
            }
        }
        s[size_t(i)] = v;
    }
    const int64_t n_out = c.rows * c.k;
    std::vector<int32_t> want(size_t(std::max<int64_t>(n_out, 1)));
    std::vector<float> want_v(want.size());
    mla_topk_params p;
    std::memset(&p, 0, sizeof p);
    p.rows = c.rows;
    p.n = c.n;
    p.k = c.k;
    p.scores = s.data();
    p.indices = want.data();
    p.values = want_v.data();
    p.exec.device = -1;
    if (!ok_or_report(mla_topk(&p), (c.name + ": CPU").c_str())) return;
    DeviceBuffer ds, di, dv;
    if (!ds.upload(s.data(), c.rows * c.n * 4) || !di.alloc(n_out * 4) || !dv.alloc(n_out * 4) ||
        !di.fill(0xfe) || !dv.fill(0xfe))
        return;
    p.scores = ds.as<float>();
    p.indices = di.as<int32_t>();
    p.values = dv.as<float>();
    p.exec.device = 0;
    p.exec.stream = stream;
    if (!ok_or_report(mla_topk(&p), (c.name + ": GPU").c_str()) ||
        !ok_or_report(mla_cuda_stream_synchronize(stream), "sync"))
        return;
    std::vector<int32_t> gi(want.size());
    std::vector<float> gv(want.size());
    if (!di.download(gi.data()) || !dv.download(gv.data())) return;
    int64_t differ = 0, first = -1;
    for (int64_t i = 0; i < n_out; ++i)
        if (gi[size_t(i)] != want[size_t(i)] || float_bits(gv[size_t(i)]) != float_bits(want_v[size_t(i)])) {
            if (first < 0) first = i;
            ++differ;
        }
    check(differ == 0, "%s: %lld of %lld entries differ from the CPU (first at %lld: GPU %d %g, CPU %d %g)",
          c.name.c_str(), (long long)differ, (long long)n_out, (long long)first,
          first >= 0 ? gi[size_t(first)] : 0, first >= 0 ? gv[size_t(first)] : 0.0,
          first >= 0 ? want[size_t(first)] : 0, first >= 0 ? want_v[size_t(first)] : 0.0);
    std::printf("  %-72s %s\n", c.name.c_str(), differ ? "FAILED" : "ok");
}

std::vector<TopkCase> topk_cases() {
    return {
        {"top-k 64 of 1000, NaN / inf / signed zeros / repeats", 7, 1000, 64, 0},
        {"top-k 16 of 5 (k > n)", 3, 5, 16, 0},
        {"top-k 8 of 0", 4, 0, 8, 0},
        {"top-k 2048 of 70000 (row past shared memory), five levels", 5, 70000, 2048, 1},
        {"top-k 16384 of 65536 (largest sort)", 2, 65536, 16384, 0},
        {"top-k 1000 of 20000, all equal", 3, 20000, 1000, 2},
        {"top-k 3000 of 3000, all NaN", 2, 3000, 3000, 3},
        {"top-k 100 of 4096, five levels", 3, 4096, 100, 1},
        {"top-k 10 of 50, zeros and subnormals", 2, 50, 10, 4},
        {"top-k 2048 of 16384, 300 rows", 300, 16384, 2048, 0},
        {"top-k 1 of 7", 9, 7, 1, 0},
        {"top-k 2048 of 100000 (candidates in shared memory)", 3, 100000, 2048, 0},
        {"top-k 300 of 80000, values on a grid (tied candidates)", 4, 80000, 300, 5},
        {"top-k 5000 of 60000, values on a grid", 2, 60000, 5000, 5},
        {"top-k 100 of 2000, values on a grid", 6, 2000, 100, 5},
    };
}

// ---- RoPE ----------------------------------------------------------------------------------------

struct RopeCase {
    std::string name;
    int dt;
    int style;
    bool table, yarn, inverse, in_place;
    int64_t n, h, d;
    int32_t rope_dim, offset;
};

// x and y within `ulps` units of the last place of the dtype, or within the error of a last-bit
// difference of a double cos / sin times inputs of magnitude <= 2 (the rotated value may be far
// smaller than its inputs).
bool close_ulps(double x, double y, int dt, double ulps) {
    if (std::isnan(x) || std::isnan(y)) return std::isnan(x) && std::isnan(y);
    if (x == y) return true;
    const int bits = dt == MLA_FLOAT64 ? 52 : dt == MLA_FLOAT32 ? 23 : dt == MLA_FLOAT16 ? 10 : 7;
    return std::fabs(x - y) <= ulps * std::ldexp(std::max(std::fabs(x), std::fabs(y)), -bits) + 1e-14;
}

void run_rope_case(const RopeCase &c, uint64_t seed, void *stream) {
    std::mt19937_64 rng(seed);
    const int64_t xs1 = c.in_place ? c.d : c.d + 3, xs0 = c.in_place ? c.h * c.d : c.h * xs1 + 5;
    Tensor x(c.dt, c.n * xs0, 1);
    std::uniform_real_distribution<double> uni(-2.0, 2.0);
    for (int64_t i = 0; i < c.n * xs0; ++i) x.set(i, uni(rng));
    if (c.n > 2) x.set_special(xs0 + 1, 0);  // a NaN passes through as the CPU passes it
    const int64_t table_len = 300;
    std::vector<int32_t> pos(size_t(c.n));
    for (auto &v : pos) v = int32_t(rng() % table_len);
    std::vector<float> cos_t(size_t(table_len * c.rope_dim / 2)), sin_t(cos_t.size());
    for (int64_t t = 0; t < table_len; ++t)
        for (int64_t i = 0; i < c.rope_dim / 2; ++i) {
            const double a = double(t) * std::pow(10000.0, -2.0 * double(i) / c.rope_dim);
            cos_t[size_t(t * c.rope_dim / 2 + i)] = float(std::cos(a));
            sin_t[size_t(t * c.rope_dim / 2 + i)] = float(std::sin(a));
        }
    mla_rope_params p;
    std::memset(&p, 0, sizeof p);
    p.dtype = c.dt;
    p.n = c.n;
    p.h = c.h;
    p.d = c.d;
    p.x_stride[0] = xs0;
    p.x_stride[1] = xs1;
    p.positions = pos.data();
    p.rope.rope_dim = c.rope_dim;
    p.rope.rope_offset = c.offset;
    p.rope.style = c.style;
    p.rope.theta = 10000.0;
    if (c.yarn) {
        p.rope.yarn_factor = 40.0;
        p.rope.original_max_position = 4096;
        p.rope.beta_fast = 32;
        p.rope.beta_slow = 1;
    }
    if (c.table) {
        p.rope.cos_table = cos_t.data();
        p.rope.sin_table = sin_t.data();
        p.rope.table_len = table_len;
    }
    p.inverse = c.inverse;
    const int64_t es = dtype_bytes(c.dt), out_elems = c.n * c.h * c.d;
    std::vector<uint8_t> want(size_t(std::max<int64_t>(out_elems, 1) * es));
    std::vector<uint8_t> xin = x.bytes;
    p.x = xin.data();
    p.out = c.in_place ? xin.data() : want.data();
    p.exec.device = -1;
    if (!ok_or_report(mla_rope_apply(&p), (c.name + ": CPU").c_str())) return;
    if (c.in_place) want.assign(xin.begin(), xin.begin() + int64_t(want.size()));

    DeviceBuffer dx, dout, dpos, dcos, dsin;
    if (!dx.upload(x.bytes.data(), int64_t(x.bytes.size())) || !dpos.upload(pos.data(), c.n * 4) ||
        !dcos.upload(cos_t.data(), int64_t(cos_t.size() * 4)) || !dsin.upload(sin_t.data(), int64_t(sin_t.size() * 4)))
        return;
    if (!c.in_place && (!dout.alloc(out_elems * es) || !dout.fill(0xfe))) return;
    mla_rope_params g = p;
    g.x = dx.ptr;
    g.out = c.in_place ? dx.ptr : dout.ptr;
    g.positions = dpos.as<int32_t>();
    if (c.table) {
        g.rope.cos_table = dcos.as<float>();
        g.rope.sin_table = dsin.as<float>();
    }
    g.exec.device = 0;
    g.exec.stream = stream;
    if (!ok_or_report(mla_rope_apply(&g), (c.name + ": GPU").c_str()) ||
        !ok_or_report(mla_cuda_stream_synchronize(stream), "sync"))
        return;
    std::vector<uint8_t> got(c.in_place ? x.bytes.size() : want.size());
    if (!(c.in_place ? dx : dout).download(got.data())) return;
    got.resize(want.size());
    Tensor gt(c.dt, out_elems, 1), wt(c.dt, out_elems, 1);
    int64_t differ = 0, far = 0;
    for (int64_t i = 0; i < out_elems; ++i) {
        if (std::memcmp(&got[size_t(i * es)], &want[size_t(i * es)], size_t(es)) == 0) continue;
        ++differ;
        std::memcpy(&gt.bytes[size_t(i * es)], &got[size_t(i * es)], size_t(es));
        std::memcpy(&wt.bytes[size_t(i * es)], &want[size_t(i * es)], size_t(es));
        auto decode = [&](const uint8_t *b) -> double {
            switch (c.dt) {
                case MLA_FLOAT64: { double v; std::memcpy(&v, b, 8); return v; }
                case MLA_FLOAT32: { float v; std::memcpy(&v, b, 4); return v; }
                case MLA_FLOAT16: { uint16_t h; std::memcpy(&h, b, 2); return mla_test::f16_value(h); }
                default: { uint16_t h; std::memcpy(&h, b, 2); return mla_test::bf16_value(h); }
            }
        };
        far += !close_ulps(decode(&got[size_t(i * es)]), decode(&want[size_t(i * es)]), c.dt, 1.0);
    }
    // Tables: the CPU's bytes; frequencies: a unit of the last place at most.
    const bool ok = c.table ? differ == 0 : far == 0;
    check(ok, "%s: %lld of %lld elements differ from the CPU, %lld by more than one unit in the "
          "last place", c.name.c_str(), (long long)differ, (long long)out_elems, (long long)far);
    std::printf("  %-72s %s (%lld last-place differences)\n", c.name.c_str(), ok ? "ok" : "FAILED",
                (long long)differ);
}

std::vector<RopeCase> rope_cases() {
    std::vector<RopeCase> v;
    const int dts[] = {MLA_FLOAT32, MLA_BFLOAT16, MLA_FLOAT16, MLA_FLOAT64};
    int k = 0;
    for (int dt : dts)
        for (int style : {MLA_ROPE_INTERLEAVED, MLA_ROPE_HALF_SPLIT})
            for (bool table : {true, false}) {
                RopeCase c;
                c.dt = dt;
                c.style = style;
                c.table = table;
                c.yarn = !table && k % 2 == 0;
                c.inverse = k % 3 == 1;
                c.in_place = k % 4 == 3;
                c.n = 37 + k;
                c.h = 1 + k % 5;
                c.d = k % 2 ? 192 : 64;
                c.rope_dim = k % 2 ? 64 : 32;
                c.offset = k % 3 == 2 ? 8 : -1;
                c.name = std::string("rope ") + dt_name(dt) + (style ? " half-split" : " interleaved") +
                         (table ? " table" : c.yarn ? " yarn" : " freqs") + (c.inverse ? " inverse" : "") +
                         (c.in_place ? " in place" : "") + " n " + std::to_string(c.n) + " h " +
                         std::to_string(c.h) + " d " + std::to_string(c.d);
                v.push_back(c);
                ++k;
            }
    RopeCase copy = v[0];
    copy.rope_dim = 0;
    copy.name = "rope f32 rope_dim 0 (copy)";
    v.push_back(copy);
    return v;
}

// Positions outside the table on the device: NaN in the rotated dims, the others copied.
void rope_out_of_table(void *stream) {
    const int64_t n = 4, h = 2, d = 16, rd = 8, len = 10;
    std::vector<float> x(size_t(n * h * d)), cs(size_t(len * rd / 2), 0.5f), sn(cs.size(), 0.25f);
    for (size_t i = 0; i < x.size(); ++i) x[i] = float(i) * 0.125f;
    std::vector<int32_t> pos = {3, -1, 10, 9};
    DeviceBuffer dx, dout, dp, dc, ds;
    if (!dx.upload(x.data(), int64_t(x.size() * 4)) || !dout.alloc(int64_t(x.size() * 4)) || !dout.fill(0xfe) ||
        !dp.upload(pos.data(), n * 4) || !dc.upload(cs.data(), int64_t(cs.size() * 4)) ||
        !ds.upload(sn.data(), int64_t(sn.size() * 4)))
        return;
    mla_rope_params p;
    std::memset(&p, 0, sizeof p);
    p.dtype = MLA_FLOAT32;
    p.n = n;
    p.h = h;
    p.d = d;
    p.x = dx.ptr;
    p.x_stride[0] = h * d;
    p.x_stride[1] = d;
    p.positions = dp.as<int32_t>();
    p.rope.rope_dim = int32_t(rd);
    p.rope.rope_offset = -1;
    p.rope.cos_table = dc.as<float>();
    p.rope.sin_table = ds.as<float>();
    p.rope.table_len = len;
    p.out = dout.ptr;
    p.exec.device = 0;
    p.exec.stream = stream;
    if (!ok_or_report(mla_rope_apply(&p), "rope outside the table") || !ok_or_report(mla_cuda_stream_synchronize(stream), "sync"))
        return;
    std::vector<float> got(x.size());
    if (!dout.download(got.data())) return;
    bool ok = true;
    for (int64_t i = 0; i < n; ++i)
        for (int64_t e = 0; e < h * d; ++e) {
            const float g = got[size_t(i * h * d + e)], in = x[size_t(i * h * d + e)];
            const bool rotated = e % d >= d - rd;
            const bool bad_pos = pos[size_t(i)] < 0 || pos[size_t(i)] >= len;
            if (!rotated) ok &= g == in;
            else if (bad_pos) ok &= std::isnan(g);
            else ok &= std::isfinite(g);
        }
    check(ok, "rope: positions outside the table must give NaN in the rotated dims only");
    std::printf("  %-72s %s\n", "rope: positions outside the cos/sin table (device data only)", ok ? "ok" : "FAILED");
}

// ---- KV quantise / dequantise ------------------------------------------------------------------

struct QuantCase {
    std::string name;
    int kind, dt;
    int32_t d_nope, d_rope, tile;
    int64_t num_blocks, block_size;
};

void run_quant_case(const QuantCase &c, uint64_t seed, void *stream) {
    std::mt19937_64 rng(seed);
    const int64_t bb = mla_cache_block_bytes(c.kind, c.block_size, c.d_nope, c.d_rope, c.tile);
    const int64_t d = c.d_nope ? c.d_nope + c.d_rope : c.kind == MLA_CACHE_V32 ? 576 : 512;
    const int64_t tokens = c.num_blocks * c.block_size, bytes = c.num_blocks * bb;
    Tensor kv(c.dt, tokens, d);
    std::uniform_real_distribution<double> uni(-1.0, 1.0);
    for (int64_t t = 0; t < tokens; ++t) {
        const double amp = std::pow(10.0, 3.0 * uni(rng));
        for (int64_t e = 0; e < d; ++e) {
            if (rng() % 60 == 0)
                kv.set_special(t * d + e, int(rng() % 3));
            else
                kv.set(t * d + e, std::min(amp, c.dt == MLA_FLOAT16 ? 60000.0 : amp) * uni(rng));
        }
    }
    std::vector<uint8_t> poison(static_cast<size_t>(std::max<int64_t>(bytes, 1)));
    for (auto &b : poison) b = uint8_t(rng());
    mla_quant_params p;
    std::memset(&p, 0, sizeof p);
    p.dtype = c.dt;
    p.cache.kind = c.kind;
    p.cache.num_blocks = c.num_blocks;
    p.cache.block_size = c.block_size;
    p.cache.h_kv = 1;
    p.cache.d_nope = c.d_nope;
    p.cache.d_rope = c.d_rope;
    p.cache.tile = c.tile;
    // CPU quantise into a copy of the poison.
    std::vector<uint8_t> want = poison;
    p.kv = kv.bytes.data();
    p.cache.data = want.data();
    p.exec.device = -1;
    if (!ok_or_report(mla_kv_quantize(&p), (c.name + ": CPU quantise").c_str())) return;
    DeviceBuffer dkv, dc;
    if (!dkv.upload(kv.bytes.data(), int64_t(kv.bytes.size())) || !dc.upload(poison.data(), bytes)) return;
    mla_quant_params g = p;
    g.kv = dkv.ptr;
    g.cache.data = dc.ptr;
    g.exec.device = 0;
    g.exec.stream = stream;
    if (!ok_or_report(mla_kv_quantize(&g), (c.name + ": GPU quantise").c_str()) ||
        !ok_or_report(mla_cuda_stream_synchronize(stream), "sync"))
        return;
    std::vector<uint8_t> got(want.size());
    if (!dc.download(got.data())) return;
    int64_t differ = 0;  // the cache's bytes (the buffers hold at least one)
    for (int64_t i = 0; i < bytes; ++i) differ += got[size_t(i)] != want[size_t(i)];
    check(differ == 0, "%s: quantise: %lld of %lld cache bytes differ from the CPU", c.name.c_str(),
          (long long)differ, (long long)bytes);

    // Dequantise the quantised bytes, then random bytes (any scale bits).
    int64_t deq_differ = 0;
    for (int pass = 0; pass < 2; ++pass) {
        std::vector<uint8_t> cache = pass == 0 ? want : poison;
        const int64_t es = dtype_bytes(c.dt);
        std::vector<uint8_t> out_cpu(size_t(tokens * d * es), 0xfe);
        mla_quant_params h = p;
        h.cache.data = cache.data();
        h.kv = out_cpu.data();
        h.exec.device = -1;
        if (!ok_or_report(mla_kv_dequantize(&h), (c.name + ": CPU dequantise").c_str())) return;
        DeviceBuffer dcache, dout;
        if (!dcache.upload(cache.data(), bytes) || !dout.alloc(tokens * d * es) || !dout.fill(0xfe)) return;
        h.cache.data = dcache.ptr;
        h.kv = dout.ptr;
        h.exec.device = 0;
        h.exec.stream = stream;
        if (!ok_or_report(mla_kv_dequantize(&h), (c.name + ": GPU dequantise").c_str()) ||
            !ok_or_report(mla_cuda_stream_synchronize(stream), "sync"))
            return;
        std::vector<uint8_t> out_gpu(out_cpu.size());
        if (!dout.download(out_gpu.data())) return;
        for (int64_t i = 0; i < tokens * d; ++i) {
            const uint8_t *a = &out_gpu[size_t(i * es)], *b = &out_cpu[size_t(i * es)];
            if (std::memcmp(a, b, size_t(es)) == 0) continue;
            // Only NaN payloads of a NaN times a NaN scale may differ.
            double va, vb;
            if (c.dt == MLA_FLOAT64) { std::memcpy(&va, a, 8); std::memcpy(&vb, b, 8); }
            else if (c.dt == MLA_FLOAT32) { float fa, fb; std::memcpy(&fa, a, 4); std::memcpy(&fb, b, 4); va = fa; vb = fb; }
            else { uint16_t ha, hb; std::memcpy(&ha, a, 2); std::memcpy(&hb, b, 2);
                   va = c.dt == MLA_FLOAT16 ? mla_test::f16_value(ha) : mla_test::bf16_value(ha);
                   vb = c.dt == MLA_FLOAT16 ? mla_test::f16_value(hb) : mla_test::bf16_value(hb); }
            deq_differ += !(std::isnan(va) && std::isnan(vb) && pass == 1);
        }
    }
    check(deq_differ == 0, "%s: dequantise: %lld values differ from the CPU", c.name.c_str(), (long long)deq_differ);
    std::printf("  %-72s %s\n", c.name.c_str(), differ == 0 && deq_differ == 0 ? "ok" : "FAILED");
}

std::vector<QuantCase> quant_cases() {
    std::vector<QuantCase> v;
    const int dts[] = {MLA_FLOAT32, MLA_BFLOAT16, MLA_FLOAT16, MLA_FLOAT64};
    for (int kind : {MLA_CACHE_V32, MLA_CACHE_MODEL1})
        for (int i = 0; i < 4; ++i) {
            QuantCase c{"", kind, dts[i], 0, 0, 0, 3 + i, i % 2 ? 61 : 64};
            c.name = std::string(kind == MLA_CACHE_V32 ? "quant V32 " : "quant MODEL1 ") + dt_name(c.dt) +
                     " blocks " + std::to_string(c.num_blocks) + " x " + std::to_string(c.block_size);
            v.push_back(c);
        }
    v.push_back({"quant V32 64+16 / tile 32, block 1", MLA_CACHE_V32, MLA_BFLOAT16, 64, 16, 32, 9, 1});
    v.push_back({"quant MODEL1 48+8 / tile 16, block 5", MLA_CACHE_MODEL1, MLA_FLOAT32, 48, 8, 16, 4, 5});
    v.push_back({"quant V32 24+2 / tile 3 (60-byte rows)", MLA_CACHE_V32, MLA_FLOAT64, 24, 2, 3, 3, 7});
    v.push_back({"quant V32, no blocks", MLA_CACHE_V32, MLA_FLOAT32, 0, 0, 0, 0, 64});
    return v;
}

// ---- refusals, with device pointers only -----------------------------------------------------

void expect_status(mla_status got, mla_status want, const char *what) {
    check(got == want && (want == MLA_OK || std::strlen(mla_last_error()) > 0),
          "%s: expected status %d with a message, got %d (%s)", what, int(want), int(got), mla_last_error());
}

void refusals(void *stream) {
    const int64_t b = 1, s_q = 2, s_k = 20000, h = 64, d = 128;
    DeviceBuffer dq, dk, dw, didx, dsc;
    if (!dq.alloc(b * s_q * h * d * 2) || !dk.alloc(b * s_k * d * 2) || !dw.alloc(b * s_q * h * 4) ||
        !didx.alloc(b * s_q * 20000 * 4) || !dsc.alloc(b * s_q * s_k * 4))
        return;
    mla_indexer_params p;
    std::memset(&p, 0, sizeof p);
    p.q_dtype = p.k_dtype = MLA_BFLOAT16;
    p.w_dtype = MLA_FLOAT32;
    p.b = b;
    p.s_q = s_q;
    p.s_k = s_k;
    p.h = h;
    p.d = d;
    p.q = dq.ptr;
    p.k = dk.ptr;
    p.w = dw.ptr;
    p.indices = didx.as<int32_t>();
    p.scores = dsc.as<float>();
    p.exec.device = 0;
    p.exec.stream = stream;
    mla_indexer_params q = p;
    q.topk = int64_t(1) << 40;
    expect_status(mla_indexer_topk(&q), MLA_ERR_INVALID_ARGUMENT, "indexer topk 2^40 on the GPU");
    expect_status(mla_indexer_topk_workspace_size(&q) == -1 ? MLA_ERR_INVALID_ARGUMENT : MLA_OK,
                  MLA_ERR_INVALID_ARGUMENT, "workspace query of topk 2^40");
    q.exec.device = -1;  // the CPU refuses it before touching anything (these are device pointers)
    expect_status(mla_indexer_topk(&q), MLA_ERR_INVALID_ARGUMENT, "indexer topk 2^40 on the CPU");
    q = p;
    q.topk = 20000;  // min(topk, s_k) above the GPU's sort
    expect_status(mla_indexer_topk(&q), MLA_ERR_UNSUPPORTED, "indexer topk 20000 of 20000 keys");
    q = p;
    q.topk = 64;
    q.exec.workspace = nullptr;
    q.exec.workspace_bytes = 0;
    expect_status(mla_indexer_topk(&q), MLA_ERR_INVALID_ARGUMENT, "indexer topk without a workspace");
    std::vector<uint16_t> host_q(size_t(b * s_q * h * d));
    q = p;
    q.q = host_q.data();
    expect_status(mla_indexer_scores(&q), MLA_ERR_INVALID_ARGUMENT, "indexer scores with host q");
    q = p;
    q.exec.device = 99;
    expect_status(mla_indexer_scores(&q), MLA_ERR_INVALID_ARGUMENT, "indexer scores on device 99");

    mla_topk_params t;
    std::memset(&t, 0, sizeof t);
    t.rows = 2;
    t.n = s_k;
    t.k = int64_t(1) << 40;
    t.scores = dsc.as<float>();
    t.indices = didx.as<int32_t>();
    t.exec.device = 0;
    t.exec.stream = stream;
    expect_status(mla_topk(&t), MLA_ERR_INVALID_ARGUMENT, "top-k 2^40 on the GPU");
    t.exec.device = -1;
    expect_status(mla_topk(&t), MLA_ERR_INVALID_ARGUMENT, "top-k 2^40 on the CPU");
    t.exec.device = 0;
    t.k = 16385;
    expect_status(mla_topk(&t), MLA_ERR_UNSUPPORTED, "top-k 16385 of 20000 on the GPU");
    t.k = 16384;
    expect_status(mla_topk(&t), MLA_OK, "top-k 16384 of 20000 on the GPU");
    t.exec.device = 99;
    expect_status(mla_topk(&t), MLA_ERR_INVALID_ARGUMENT, "top-k on device 99");

    mla_quant_params qp;
    std::memset(&qp, 0, sizeof qp);
    std::vector<float> host_kv(64 * 576);
    qp.dtype = MLA_FLOAT32;
    qp.cache.kind = MLA_CACHE_V32;
    qp.cache.num_blocks = 1;
    qp.cache.block_size = 64;
    qp.cache.data = dk.ptr;
    qp.kv = host_kv.data();
    qp.exec.device = 0;
    qp.exec.stream = stream;
    expect_status(mla_kv_quantize(&qp), MLA_ERR_INVALID_ARGUMENT, "quantise host kv");
    expect_status(mla_kv_dequantize(&qp), MLA_ERR_INVALID_ARGUMENT, "dequantise into host kv");
    ok_or_report(mla_cuda_stream_synchronize(stream), "sync after the refusals");
    std::printf("  %-72s %s\n", "refusals (device pointers)", "done");
}

}  // namespace

int main() {
    const std::vector<IdxCase> idx = indexer_cases();
    const std::vector<TopkCase> tk = topk_cases();
    const std::vector<RopeCase> rope = rope_cases();
    const std::vector<QuantCase> quant = quant_cases();
    const int n_tests = int(idx.size() * 2 + tk.size() + rope.size() + 1 + quant.size() + 1);
    if (mla_cuda_device_count() == 0) {
        return mla_test::skip_without_device("test_gpu_indexer", n_tests);
    }
    void *stream = nullptr;
    if (!mla_test::open_device("test_gpu_indexer", &stream)) return 1;
    // MLA4J_TEST_QUICK: a few small cases of each kind (the sanitizer runs).
    const bool quick = std::getenv("MLA4J_TEST_QUICK") != nullptr;
    auto in_quick = [](size_t i, std::initializer_list<size_t> picks) {
        return std::find(picks.begin(), picks.end(), i) != picks.end();
    };
    uint64_t seed = 9000;
    std::printf("indexer scores and fused top-k:\n");
    for (size_t i = 0; i < idx.size(); ++i, ++seed)
        if (!quick || in_quick(i, {0, 2, 4, 8, 10, 11, 17, 18, 20})) run_indexer_case(idx[i], seed, stream);
    std::printf("top-k:\n");
    for (size_t i = 0; i < tk.size(); ++i, ++seed)
        if (!quick || in_quick(i, {0, 1, 2, 7, 8, 10, 11, 14})) run_topk_case(tk[i], seed, stream);
    std::printf("RoPE:\n");
    for (size_t i = 0; i < rope.size(); ++i, ++seed)
        if (!quick || in_quick(i, {0, 5, 11})) run_rope_case(rope[i], seed, stream);
    rope_out_of_table(stream);
    std::printf("KV quantise / dequantise:\n");
    for (size_t i = 0; i < quant.size(); ++i, ++seed)
        if (!quick || in_quick(i, {0, 4, 8, 9})) run_quant_case(quant[i], seed, stream);
    std::printf("refusals:\n");
    refusals(stream);
    mla_cuda_stream_destroy(stream);
    std::printf("%d passed, %d failed\n", g_passed, g_failed);
    return g_failed ? 1 : 0;
}
