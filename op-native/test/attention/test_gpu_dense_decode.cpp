// Native GPU test of mla_dense_decode (ops.md sections 1 and 8): every case runs on CUDA
// device 0 through the C ABI (device memory through the mla_cuda_* API) and is compared with
// the CPU path of the same library (exec.device = -1 on host copies) and with a float64
// reference written here from the contract. Outputs are poisoned (NaN bytes) before each call
// and padded with gaps that must stay untouched; spare cache blocks and the cache slots past
// each sequence hold NaN, which must not leak. FP8 caches (V32, MODEL1) are filled through the
// CPU append and the reference reads their dequantised values (mla_kv_dequantize). Without a
// CUDA device every case is skipped.
#include <mla/mla.h>
#include "test_buffers.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <thread>
#include <vector>

namespace {

using mla_test::g_failed;
using mla_test::g_passed;
using mla_test::check;

using mla_test::bf16_bits;
using mla_test::bf16_value;
using mla_test::Buf;
using mla_test::dt_name;
using mla_test::elem_bytes;
using mla_test::f16_bits;
using mla_test::f16_value;
using mla_test::kInf;
using mla_test::ok_or_report;
using DevBuf = mla_test::DeviceBuffer;

// ---- cases ----------------------------------------------------------------------------------

enum SinkMode { kNoSink = 0, kFiniteSink = 1, kMixedSink = 2 };
enum RotMode { kNoRot = 0, kRotFreq = 1, kRotTable = 2 };

struct Case {
    std::string name;
    int dtype = MLA_BFLOAT16, cache_dtype = MLA_BFLOAT16;
    int kind = MLA_CACHE_PLAIN;              // FP8 kinds: d_qk = d_nope + d_rope, h_kv 1
    int32_t d_nope = 0, d_rope = 0, tile = 0;  // FP8 layout (0: the kind's default)
    int64_t s_q = 1, h_q = 128, h_kv = 1, d_qk = 576, d_v = 512, block_size = 64;
    std::vector<int> seqlens;
    bool causal = false;
    int sink = kNoSink;
    int rot = kNoRot;
    int64_t pad = 8;        // extra elements between rows / heads / tokens (odd: misaligned)
    double amp = 1.0;       // query amplitude (scores grow with it)
    bool nan_last_key = false;  // value dims of each request's last key NaN (causal, s_q > 1)
};

struct Outcome {
    double rel = 0, lse_err = 0;
    bool finite = true, lse_inf_ok = true, gaps_ok = true;
    bool nan_rows_ok = true;  // rows that see a NaN key are NaN in every element
};

// Global ||out - ref|| / ||ref|| over all rows, max |lse - ref| over finite ones, infinities
// matched exactly. Row r = (request * s_q + query) * h_q + head is out_index[r] in out and
// lse_index[r] in the lse arrays ([b, h_q, s_q]).
void compare(const Buf &out, const std::vector<float> &lse, const std::vector<double> &ref_out,
             const std::vector<double> &ref_lse, const std::vector<int64_t> &out_index,
             const std::vector<int64_t> &lse_index, int64_t d_v, Outcome *o) {
    double num = 0, den = 0;
    const int64_t rows = int64_t(ref_lse.size());
    for (int64_t r = 0; r < rows; ++r) {
        bool nan_row = false;
        for (int64_t c = 0; c < d_v; ++c) nan_row |= std::isnan(ref_out[size_t(r * d_v + c)]);
        if (nan_row) {  // the row sees a NaN key: NaN out, lse not compared
            for (int64_t c = 0; c < d_v; ++c)
                if (!std::isnan(out.get(out_index[size_t(r)] + c))) o->nan_rows_ok = false;
            continue;
        }
        for (int64_t c = 0; c < d_v; ++c) {
            double g = out.get(out_index[size_t(r)] + c), e = ref_out[size_t(r * d_v + c)];
            if (!std::isfinite(g)) o->finite = false;
            num += (g - e) * (g - e);
            den += e * e;
        }
        double gl = lse[size_t(lse_index[size_t(r)])], el = ref_lse[size_t(lse_index[size_t(r)])];
        if (std::isinf(el) || std::isinf(gl)) {
            if (gl != el) o->lse_inf_ok = false;
        } else if (std::isnan(gl)) {
            o->lse_inf_ok = false;
        } else {
            o->lse_err = std::max(o->lse_err, std::fabs(gl - el));
        }
    }
    o->rel = den > 0 ? std::sqrt(num / den) : std::sqrt(num);
}

struct Timer {
    std::chrono::steady_clock::time_point t0 = std::chrono::steady_clock::now();
    double s() const {
        return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    }
};

double g_gpu_s = 0, g_cpu_s = 0, g_ref_s = 0;
// No device, MLA4J_GPU_TEST_REFERENCE=1: the cases run against the CPU path only (a check of
// the test's own reference and data, e.g. the FP8 fill, on a machine without a GPU).
bool g_reference_only = false;

void run_case(const Case &cs, uint64_t seed, void *stream) {
    std::mt19937_64 rng(seed);
    std::uniform_real_distribution<double> uni(-1.0, 1.0);
    const int64_t b = int64_t(cs.seqlens.size()), s_q = cs.s_q, h_q = cs.h_q, h_kv = cs.h_kv;
    const int64_t d_qk = cs.d_qk, d_v = cs.d_v, bs = cs.block_size, group = h_q / h_kv;
    const double qnan = std::nan("");

    // Paged cache: blocks handed out in a shuffled order; spare blocks and the slots past each
    // sequence are NaN; table entries past a request's last block are garbage ids.
    int64_t max_blocks = 1, used_total = 0;
    for (int len : cs.seqlens) {
        int64_t used = (len + bs - 1) / bs;
        max_blocks = std::max(max_blocks, used + 1);
        used_total += used;
    }
    const int64_t num_blocks = used_total + 2;
    // FP8: `cache` holds the dequantised values, float32 [num_blocks, bs, d_qk], and fp8_bytes
    // the cache the calls read.
    const bool fp8 = cs.kind != MLA_CACHE_PLAIN;
    const int64_t head_st = fp8 ? d_qk : d_qk + cs.pad;
    const int64_t token_st = fp8 ? d_qk : h_kv * head_st + cs.pad;
    const int64_t block_st = fp8 ? bs * d_qk : bs * token_st + cs.pad;
    Buf cache(fp8 ? MLA_FLOAT32 : cs.cache_dtype, num_blocks * block_st);
    for (int64_t i = 0; i < num_blocks * block_st; ++i) cache.set(i, qnan);
    std::vector<int32_t> order(static_cast<size_t>(num_blocks));
    for (int64_t i = 0; i < num_blocks; ++i) order[size_t(i)] = int32_t(i);
    std::shuffle(order.begin(), order.end(), rng);
    const int64_t table_st = max_blocks + 3;
    std::vector<int32_t> table(size_t(b * table_st), -1);
    size_t next = 0;
    for (int64_t i = 0; i < b; ++i) {
        const int64_t len = cs.seqlens[size_t(i)], used = (len + bs - 1) / bs;
        for (int64_t k = 0; k < table_st; ++k)
            table[size_t(i * table_st + k)] =
                k < used ? order[next++] : (k % 2 ? int32_t(num_blocks + 1000) : -5);
        if (fp8) continue;  // written below
        for (int64_t t = 0; t < len; ++t)
            for (int64_t h = 0; h < h_kv; ++h) {
                const int64_t base = table[size_t(i * table_st + t / bs)] * block_st +
                                     (t % bs) * token_st + h * head_st;
                for (int64_t e = 0; e < d_qk; ++e) cache.set(base + e, uni(rng));
            }
    }
    auto key_base = [&](int64_t i, int64_t t, int64_t kvh) {
        return table[size_t(i * table_st + t / bs)] * block_st + (t % bs) * token_st +
               kvh * head_st;
    };
    // A NaN in the last key's values: hidden from queries j < s_q - 1 by the causal mask, so
    // their rows must stay finite; query s_q - 1 sees it and is NaN.
    if (cs.nan_last_key && !fp8)
        for (int64_t i = 0; i < b; ++i)
            if (cs.seqlens[size_t(i)] > 0)
                for (int64_t h = 0; h < h_kv; ++h)
                    for (int64_t e = 0; e < d_v; e += 7)
                        cache.set(key_base(i, cs.seqlens[size_t(i)] - 1, h) + e, qnan);

    // FP8: every byte 0xff (NaN values, NaN or huge scales) but the tokens of the requests,
    // written by the CPU append from random values of per-request amplitude; then dequantised.
    mla_cache fp8_cache;
    std::memset(&fp8_cache, 0, sizeof fp8_cache);
    std::vector<unsigned char> fp8_bytes;
    if (fp8) {
        const int64_t block_bytes =
            mla_cache_block_bytes(cs.kind, bs, cs.d_nope, cs.d_rope, cs.tile);
        fp8_bytes.assign(size_t(num_blocks * block_bytes), 0xff);
        fp8_cache.kind = cs.kind;
        fp8_cache.data = fp8_bytes.data();
        fp8_cache.num_blocks = num_blocks;
        fp8_cache.block_size = bs;
        fp8_cache.h_kv = 1;
        fp8_cache.d_nope = cs.d_nope;
        fp8_cache.d_rope = cs.d_rope;
        fp8_cache.tile = cs.tile;
        const int32_t zero = 0;
        for (int64_t i = 0; i < b; ++i) {
            const int64_t len = cs.seqlens[size_t(i)];
            if (len == 0) continue;
            const double amp = std::pow(10.0, 2.0 * uni(rng));  // scales differ per request
            std::vector<float> vals(static_cast<size_t>(len * d_qk));
            for (auto &v : vals) v = float(amp * uni(rng));
            mla_append_params ap;
            std::memset(&ap, 0, sizeof ap);
            ap.dtype = MLA_FLOAT32;
            ap.b = 1;
            ap.n_new = len;
            ap.d_qk = d_qk;
            ap.new_kv = vals.data();
            ap.new_kv_stride[0] = len * d_qk;
            ap.new_kv_stride[1] = d_qk;
            ap.cache = fp8_cache;
            ap.block_table = table.data() + i * table_st;
            ap.max_blocks_per_seq = max_blocks;
            ap.block_table_stride = table_st;
            ap.cache_seqlens = &zero;
            ap.exec.device = -1;
            if (!ok_or_report(mla_kv_append(&ap), (cs.name + ": CPU append").c_str())) return;
        }
        if (cs.nan_last_key) {  // NaN bytes in the fp8 part of the last key
            const bool v32 = cs.kind == MLA_CACHE_V32;
            const int64_t d_nope = cs.d_nope ? cs.d_nope : v32 ? 512 : 448;
            const int64_t tile = cs.tile ? cs.tile : v32 ? 128 : 64;
            const int64_t row_bytes =
                d_nope + 2 * (d_qk - d_nope) + (v32 ? 4 * (d_nope / tile) : 0);
            for (int64_t i = 0; i < b; ++i) {
                const int64_t len = cs.seqlens[size_t(i)];
                if (len == 0) continue;
                const int64_t t = len - 1, blk = table[size_t(i * table_st + t / bs)];
                const int64_t row = v32 ? (blk * bs + t % bs) * row_bytes
                                        : blk * block_bytes + (t % bs) * row_bytes;
                for (int64_t e = 0; e < std::min(d_v, d_nope); e += 7)
                    fp8_bytes[size_t(row + e)] = 0x7f;
            }
        }
        mla_quant_params dq;
        std::memset(&dq, 0, sizeof dq);
        dq.dtype = MLA_FLOAT32;
        dq.kv = cache.bytes.data();
        dq.cache = fp8_cache;
        dq.exec.device = -1;
        if (!ok_or_report(mla_kv_dequantize(&dq), (cs.name + ": CPU dequantize").c_str())) return;
    }

    // q [b, s_q, h_q, d_qk] and out [b, s_q, h_q, d_v] with padded strides.
    const int64_t qs2 = d_qk + cs.pad, qs1 = h_q * qs2 + cs.pad, qs0 = s_q * qs1 + cs.pad;
    Buf q(cs.dtype, b * qs0);
    for (int64_t i = 0; i < b; ++i)
        for (int64_t j = 0; j < s_q; ++j)
            for (int64_t h = 0; h < h_q; ++h)
                for (int64_t e = 0; e < d_qk; ++e)
                    q.set(i * qs0 + j * qs1 + h * qs2 + e, cs.amp * uni(rng));
    const int64_t os2 = d_v + cs.pad, os1 = h_q * os2 + cs.pad, os0 = s_q * os1 + cs.pad;
    const int64_t out_elems = b * os0;
    std::vector<int64_t> out_index, lse_index;
    for (int64_t i = 0; i < b; ++i)
        for (int64_t j = 0; j < s_q; ++j)
            for (int64_t h = 0; h < h_q; ++h) {
                out_index.push_back(i * os0 + j * os1 + h * os2);
                lse_index.push_back((i * h_q + h) * s_q + j);
            }

    // Sinks: finite, or a mix of +inf, -inf and finite per head.
    std::vector<float> sink(static_cast<size_t>(h_q));
    for (int64_t h = 0; h < h_q; ++h) {
        double v = 2.0 * uni(rng);
        if (cs.sink == kMixedSink) v = h % 3 == 0 ? kInf : h % 3 == 1 ? -kInf : v;
        sink[size_t(h)] = float(v);
    }

    // VVPA rotation of the last rope_dim dims: plain RoPE (interleaved) or tables (half-split).
    const int rope_dim = d_v >= 64 ? 64 : 16;
    const int64_t table_len = 9000;
    std::vector<int32_t> positions(size_t(std::max<int64_t>(b * s_q, 1)));
    for (auto &p : positions) p = int32_t(rng() % 8000);
    std::vector<float> cos_t, sin_t;
    mla_out_rotation rot;
    std::memset(&rot, 0, sizeof rot);
    if (cs.rot != kNoRot) {
        rot.positions = positions.data();
        rot.rope.rope_dim = rope_dim;
        rot.rope.rope_offset = -1;
        rot.rope.theta = 10000.0;
        rot.rope.yarn_factor = 1.0;
        rot.rope.style = cs.rot == kRotFreq ? MLA_ROPE_INTERLEAVED : MLA_ROPE_HALF_SPLIT;
        if (cs.rot == kRotTable) {
            cos_t.resize(size_t(table_len * rope_dim / 2));
            sin_t.resize(cos_t.size());
            for (int64_t p = 0; p < table_len; ++p)
                for (int i = 0; i < rope_dim / 2; ++i) {
                    double ang = double(p) * std::pow(500.0, -2.0 * i / rope_dim);
                    cos_t[size_t(p * rope_dim / 2 + i)] = float(std::cos(ang));
                    sin_t[size_t(p * rope_dim / 2 + i)] = float(std::sin(ang));
                }
            rot.rope.cos_table = cos_t.data();
            rot.rope.sin_table = sin_t.data();
            rot.rope.table_len = table_len;
        }
    }

    const float scale = float(1.0 / std::sqrt(double(d_qk)));
    std::vector<int32_t> seqlens(cs.seqlens.begin(), cs.seqlens.end());

    // ---- float64 reference (rows spread over the host's cores) -------------------------------
    Timer tref;
    const int64_t rows = b * s_q * h_q;
    std::vector<double> ref_out(static_cast<size_t>(rows * d_v), 0.0);
    std::vector<double> ref_lse(static_cast<size_t>(rows), kInf);
    auto reference_row = [&](int64_t r, std::vector<double> &sc, std::vector<double> &acc) {
        const int64_t i = r / (s_q * h_q), j = (r / h_q) % s_q, h = r % h_q, kvh = h / group;
        const int64_t len = cs.seqlens[size_t(i)];
        const int64_t hi = cs.causal ? std::min(len - 1, len - s_q + j) : len - 1;
        if (hi < 0) return;  // out 0, lse +inf
        const int64_t qb = i * qs0 + j * qs1 + h * qs2;
        sc.assign(size_t(hi + 1), 0.0);
        double mx = -kInf;
        for (int64_t t = 0; t <= hi; ++t) {
            const int64_t kb = key_base(i, t, kvh);
            double dot = 0;
            for (int64_t e = 0; e < d_qk; ++e) dot += q.get(qb + e) * cache.get(kb + e);
            sc[size_t(t)] = double(scale) * dot;
            mx = std::max(mx, sc[size_t(t)]);
        }
        double sum = 0;
        acc.assign(size_t(d_v), 0.0);
        for (int64_t t = 0; t <= hi; ++t) {
            const double w = std::exp(sc[size_t(t)] - mx);
            sum += w;
            const int64_t kb = key_base(i, t, kvh);
            for (int64_t c = 0; c < d_v; ++c) acc[size_t(c)] += w * cache.get(kb + c);
        }
        const double lse = mx + std::log(sum);
        double factor = 1.0 / sum;
        if (cs.sink != kNoSink) {
            const double s = sink[size_t(h)];
            factor = s == kInf ? 0.0 : s == -kInf ? factor : factor / (1.0 + std::exp(s - lse));
        }
        for (auto &x : acc) x *= factor;
        if (cs.rot != kNoRot) {
            const int64_t pos = positions[size_t(i * s_q + j)], start = d_v - rope_dim;
            for (int k = 0; k < rope_dim / 2; ++k) {
                double c, s;
                if (cs.rot == kRotTable) {
                    c = cos_t[size_t(pos * rope_dim / 2 + k)];
                    s = sin_t[size_t(pos * rope_dim / 2 + k)];
                } else {
                    const double ang = double(pos) * std::pow(10000.0, -2.0 * k / rope_dim);
                    c = std::cos(ang);
                    s = std::sin(ang);
                }
                s = -s;
                const int64_t i0 = cs.rot == kRotFreq ? start + 2 * k : start + k;
                const int64_t i1 = cs.rot == kRotFreq ? i0 + 1 : i0 + rope_dim / 2;
                const double x0 = acc[size_t(i0)], x1 = acc[size_t(i1)];
                acc[size_t(i0)] = x0 * c - x1 * s;
                acc[size_t(i1)] = x0 * s + x1 * c;
            }
        }
        std::copy(acc.begin(), acc.end(), ref_out.begin() + r * d_v);
        ref_lse[size_t((i * h_q + h) * s_q + j)] = lse;  // lse is [b, h_q, s_q]
    };
    {
        const int n_threads = int(std::max(1u, std::min(16u, std::thread::hardware_concurrency())));
        std::atomic<int64_t> next_row(0);
        std::vector<std::thread> pool;
        for (int w = 0; w < n_threads; ++w)
            pool.emplace_back([&] {
                std::vector<double> sc, acc;
                for (int64_t r; (r = next_row.fetch_add(1)) < rows;) reference_row(r, sc, acc);
            });
        for (auto &th : pool) th.join();
    }
    g_ref_s += tref.s();

    // ---- params (host pointers; the GPU call swaps in device pointers) -------------------------
    mla_dense_decode_params p;
    std::memset(&p, 0, sizeof p);
    p.dtype = cs.dtype;
    p.b = b;
    p.s_q = s_q;
    p.h_q = h_q;
    p.d_qk = d_qk;
    p.d_v = d_v;
    p.q = q.bytes.data();
    p.q_stride[0] = qs0;
    p.q_stride[1] = qs1;
    p.q_stride[2] = qs2;
    if (fp8) {
        p.cache = fp8_cache;
    } else {
        p.cache.kind = MLA_CACHE_PLAIN;
        p.cache.dtype = cs.cache_dtype;
        p.cache.data = cache.bytes.data();
        p.cache.num_blocks = num_blocks;
        p.cache.block_size = bs;
        p.cache.h_kv = h_kv;
        p.cache.block_stride = block_st;
        p.cache.token_stride = token_st;
        p.cache.head_stride = head_st;
    }
    p.block_table = table.data();
    p.max_blocks_per_seq = max_blocks;
    p.block_table_stride = table_st;
    p.cache_seqlens = seqlens.data();
    p.softmax_scale = scale;
    p.causal = cs.causal;
    p.sink = cs.sink != kNoSink ? sink.data() : nullptr;
    p.out_rotation = rot;
    p.out_stride[0] = os0;
    p.out_stride[1] = os1;
    p.out_stride[2] = os2;

    // ---- CPU path of the library --------------------------------------------------------------
    Timer tcpu;
    Buf out_cpu(cs.dtype, out_elems);
    std::vector<float> lse_cpu(static_cast<size_t>(rows));
    p.out = out_cpu.bytes.data();
    p.lse = lse_cpu.data();
    p.exec.device = -1;
    mla_status st = mla_dense_decode(&p);
    g_cpu_s += tcpu.s();
    if (!ok_or_report(st, (cs.name + ": CPU mla_dense_decode").c_str())) return;

    if (g_reference_only) {
        Outcome o;
        compare(out_cpu, lse_cpu, ref_out, ref_lse, out_index, lse_index, d_v, &o);
        const double tol = cs.dtype == MLA_BFLOAT16 || cs.dtype == MLA_FLOAT16 ? 1e-2 : 1e-3;
        const bool ok = o.finite && o.rel < tol && o.lse_err < 1e-3 && o.lse_inf_ok &&
                        o.nan_rows_ok;
        check(ok, "%s [CPU vs f64]: rel %.3g, lse err %.3g, finite %d, inf lse %d, NaN rows %d",
              cs.name.c_str(), o.rel, o.lse_err, int(o.finite), int(o.lse_inf_ok),
              int(o.nan_rows_ok));
        std::printf("  %-72s CPU rel %.2e  lse %.1e  %s\n", cs.name.c_str(), o.rel, o.lse_err,
                    ok ? "ok" : "FAILED");
        return;
    }

    // ---- GPU: device copies once, then one call per kernel cap -------------------------------
    DevBuf dq, dcache, dtable, dlens, dsink, dpos, dcos, dsin, dout, dlse, dws;
    if (!dq.upload(q.bytes.data(), q.nbytes()) ||
        !(fp8 ? dcache.upload(fp8_bytes.data(), int64_t(fp8_bytes.size()))
              : dcache.upload(cache.bytes.data(), cache.nbytes())) ||
        !dtable.upload(table.data(), int64_t(table.size() * 4)) ||
        !dlens.upload(seqlens.data(), int64_t(std::max<size_t>(seqlens.size(), 1) * 4)) ||
        !dsink.upload(sink.data(), h_q * 4) ||
        !dpos.upload(positions.data(), int64_t(positions.size() * 4)) ||
        !dout.alloc(int64_t(out_cpu.bytes.size())) || !dlse.alloc(rows * 4))
        return;
    if (cs.rot == kRotTable &&
        (!dcos.upload(cos_t.data(), int64_t(cos_t.size() * 4)) ||
         !dsin.upload(sin_t.data(), int64_t(sin_t.size() * 4))))
        return;
    mla_dense_decode_params g = p;
    g.q = dq.ptr;
    g.cache.data = dcache.ptr;
    g.block_table = static_cast<const int32_t *>(dtable.ptr);
    g.cache_seqlens = static_cast<const int32_t *>(dlens.ptr);
    g.sink = cs.sink != kNoSink ? static_cast<const float *>(dsink.ptr) : nullptr;
    if (cs.rot != kNoRot) {
        g.out_rotation.positions = static_cast<const int32_t *>(dpos.ptr);
        if (cs.rot == kRotTable) {
            g.out_rotation.rope.cos_table = static_cast<const float *>(dcos.ptr);
            g.out_rotation.rope.sin_table = static_cast<const float *>(dsin.ptr);
        }
    }
    g.out = dout.ptr;
    g.lse = static_cast<float *>(dlse.ptr);
    g.exec.device = 0;
    g.exec.stream = stream;
    const int64_t ws = mla_dense_decode_workspace_size(&g);
    if (ws < 0) {
        check(false, "%s: workspace query: %s", cs.name.c_str(), mla_last_error());
        return;
    }
    if (ws > 0 && !dws.alloc(ws)) return;
    g.exec.workspace = dws.ptr;
    g.exec.workspace_bytes = ws;

    std::vector<double> cpu_out(static_cast<size_t>(rows * d_v));
    std::vector<double> cpu_lse(static_cast<size_t>(rows));
    for (int64_t r = 0; r < rows; ++r) {
        for (int64_t c = 0; c < d_v; ++c)
            cpu_out[size_t(r * d_v + c)] = out_cpu.get(out_index[size_t(r)] + c);
        cpu_lse[size_t(r)] = lse_cpu[size_t(r)];  // both [b, h_q, s_q]
    }
    std::vector<char> inside(static_cast<size_t>(out_elems), 0);
    for (int64_t r = 0; r < rows; ++r)
        for (int64_t c = 0; c < d_v; ++c) inside[size_t(out_index[size_t(r)] + c)] = 1;
    const double tol = cs.dtype == MLA_BFLOAT16 || cs.dtype == MLA_FLOAT16 ? 1e-2 : 1e-3;

    // The library's choice, then each implementation by name (exec.implementation) where its
    // plan accepts the case, so every kernel meets every case it takes on one device.
    for (const char *impl : {"", "sm90_wgmma", "sm80_mma", "cuda_core"}) {
        g.exec.implementation = impl;
        mla_plan_info plan;
        st = mla_dense_decode_plan(&g, &plan);
        if (!ok_or_report(st, (cs.name + ": plan").c_str())) continue;
        if (*impl && !plan.implementation[0]) continue;  // this implementation refuses the case
        const std::string name = cs.name + " [" + plan.implementation + (*impl ? "" : ", auto") + "]";
        if (plan.workspace_bytes > ws) {
            check(false, "%s: plan workspace %lld exceeds the query's %lld", name.c_str(),
                  (long long)plan.workspace_bytes, (long long)ws);
            continue;
        }
        Timer tgpu;
        // Poison: every byte 0xff (NaN in each float type), the workspace too.
        if (!ok_or_report(mla_cuda_memset(dout.ptr, 0xff, dout.bytes), "memset out") ||
            !ok_or_report(mla_cuda_memset(dlse.ptr, 0xff, dlse.bytes), "memset lse") ||
            (ws > 0 && !ok_or_report(mla_cuda_memset(dws.ptr, 0xff, ws), "memset workspace")))
            return;
        st = mla_dense_decode(&g);
        if (!ok_or_report(st, (name + ": GPU mla_dense_decode").c_str())) continue;
        if (!ok_or_report(mla_cuda_stream_synchronize(stream), (name + ": stream sync").c_str()))
            return;
        Buf out_gpu(cs.dtype, out_elems);
        std::vector<float> lse_gpu(static_cast<size_t>(rows));
        if (!dout.download(out_gpu.bytes.data()) || !dlse.download(lse_gpu.data())) return;
        g_gpu_s += tgpu.s();

        Outcome vs_ref, vs_cpu;
        compare(out_gpu, lse_gpu, ref_out, ref_lse, out_index, lse_index, d_v, &vs_ref);
        compare(out_gpu, lse_gpu, cpu_out, cpu_lse, out_index, lse_index, d_v, &vs_cpu);
        bool gaps_ok = true;  // elements of out outside the logical tensor still poisoned
        for (int64_t i = 0; i < out_elems; ++i)
            if (!inside[size_t(i)] && !out_gpu.poisoned(i)) gaps_ok = false;
        const bool ok = vs_ref.finite && vs_ref.rel < tol && vs_cpu.rel < tol &&
                        vs_ref.lse_err < 1e-3 && vs_cpu.lse_err < 1e-3 && vs_ref.lse_inf_ok &&
                        vs_cpu.lse_inf_ok && gaps_ok && vs_ref.nan_rows_ok && vs_cpu.nan_rows_ok;
        check(ok, "%s: rel err vs f64 %.3g, vs CPU %.3g (tol %.0e); lse err %.3g / %.3g; "
               "finite %d, inf lse %d / %d, gaps untouched %d, NaN rows %d / %d", name.c_str(),
               vs_ref.rel, vs_cpu.rel, tol, vs_ref.lse_err, vs_cpu.lse_err, int(vs_ref.finite),
               int(vs_ref.lse_inf_ok), int(vs_cpu.lse_inf_ok), int(gaps_ok),
               int(vs_ref.nan_rows_ok), int(vs_cpu.nan_rows_ok));
        std::printf("  %-72s rel %.2e / %.2e  lse %.1e  %s\n", name.c_str(), vs_ref.rel,
                    vs_cpu.rel, std::max(vs_ref.lse_err, vs_cpu.lse_err), ok ? "ok" : "FAILED");
    }
}

std::string describe(const Case &c) {
    std::string s = std::string(dt_name(c.dtype));
    if (c.kind != MLA_CACHE_PLAIN) {
        s += c.kind == MLA_CACHE_V32 ? "/V32" : "/MODEL1";
        if (c.d_nope)
            s += "(" + std::to_string(c.d_nope) + "+" + std::to_string(c.d_rope) + "/" +
                 std::to_string(c.tile) + ")";
    } else if (c.cache_dtype != c.dtype) {
        s += "/cache " + std::string(dt_name(c.cache_dtype));
    }
    s += " " + std::to_string(c.d_qk) + "/" + std::to_string(c.d_v) + " h_q " +
         std::to_string(c.h_q) + "/" + std::to_string(c.h_kv) + " bs " +
         std::to_string(c.block_size) + " s_q " + std::to_string(c.s_q) + " b " +
         std::to_string(c.seqlens.size());
    if (c.causal) s += " causal";
    if (c.sink == kFiniteSink) s += " sink";
    if (c.sink == kMixedSink) s += " sink+-inf";
    if (c.rot == kRotFreq) s += " vvpa";
    if (c.rot == kRotTable) s += " vvpa-table";
    if (c.pad % 8) s += " unaligned";
    if (c.nan_last_key) s += " nan-hidden-key";
    return s;
}

std::vector<Case> make_cases() {
    std::vector<Case> cases;
    // Corner sweep on the absorbed MLA shape: every h_q and block_size of ops.md section 8,
    // s_q 1 / 2 / 4, causal, sinks, both rotations, zero and short sequences.
    const int64_t hqs[] = {1, 3, 16, 63, 64, 128};
    const int64_t bss[] = {1, 2, 61, 64, 256};
    for (int k = 0; k < 10; ++k) {
        Case c;
        c.h_q = hqs[k % 6];
        c.block_size = bss[k % 5];
        c.s_q = k % 3 == 0 ? 1 : k % 3 == 1 ? 2 : 4;
        c.causal = k % 2 == 1 || c.s_q == 4;
        c.sink = k % 3;
        c.rot = (k + 1) % 3;
        c.dtype = c.cache_dtype = k % 4 == 3 ? MLA_FLOAT16 : MLA_BFLOAT16;
        c.seqlens = {int(37 + 29 * k), 0, int(c.s_q) - 1, 1, 300 + 11 * k};
        cases.push_back(c);
    }
    // Long, uneven sequences: the schedule splits units across many CTAs.
    {
        Case c;
        c.seqlens = {5000, 17, 2600, 0, 700};
        c.s_q = 2;
        c.causal = true;
        c.rot = kRotTable;
        c.sink = kFiniteSink;
        cases.push_back(c);
        Case d;
        d.seqlens = {9000};
        d.h_q = 64;
        d.amp = 3.0;
        cases.push_back(d);
    }
    // Many requests: units finished inside one CTA next to split ones.
    {
        Case c;
        std::mt19937 r(7);
        for (int i = 0; i < 48; ++i) c.seqlens.push_back(int(r() % 700));
        c.s_q = 2;
        c.causal = true;
        c.h_q = 128;
        c.block_size = 64;
        c.sink = kMixedSink;
        cases.push_back(c);
    }
    // A NaN key inside the sequence that the causal mask hides from some query rows of a
    // block (h_q 16 x s_q 4 share one 64-row block), also across split units (h_q 128).
    {
        Case c;
        c.h_q = 16;
        c.s_q = 4;
        c.causal = true;
        c.block_size = 61;
        c.seqlens = {200, 3, 1, 130};
        c.nan_last_key = true;
        cases.push_back(c);
        Case d;
        d.s_q = 2;
        d.causal = true;
        d.seqlens = {6000, 64, 2};
        d.nan_last_key = true;
        cases.push_back(d);
    }
    // Every request empty.
    {
        Case c;
        c.seqlens = {0, 0, 0};
        c.s_q = 2;
        c.sink = kFiniteSink;
        cases.push_back(c);
    }
    // Grouped heads and other head dims (value tiers 64, 128, 256).
    {
        Case c;
        c.h_q = 16;
        c.h_kv = 4;
        c.d_qk = 128;
        c.d_v = 128;
        c.block_size = 16;
        c.s_q = 2;
        c.causal = true;
        c.dtype = c.cache_dtype = MLA_FLOAT16;
        c.seqlens = {1000, 3, 0, 250};
        c.rot = kRotFreq;
        cases.push_back(c);
        Case d;
        d.h_q = 24;
        d.h_kv = 8;
        d.d_qk = 64;
        d.d_v = 48;
        d.block_size = 61;
        d.s_q = 4;
        d.causal = true;
        d.seqlens = {500, 4, 3, 130};
        d.sink = kMixedSink;
        cases.push_back(d);
        Case e;
        e.h_q = 32;
        e.h_kv = 2;
        e.d_qk = 192;
        e.d_v = 128;
        e.block_size = 32;
        e.seqlens = {777, 64, 1};
        e.rot = kRotTable;
        cases.push_back(e);
        Case f;
        f.h_q = 8;
        f.h_kv = 1;
        f.d_qk = 256;
        f.d_v = 256;
        f.block_size = 2;
        f.seqlens = {333, 90};
        f.s_q = 3;
        f.causal = true;
        cases.push_back(f);
    }
    // The CUDA-core kernel: float32 / float64 queries, a cache dtype other than q's, misaligned
    // rows, dims that are not multiples of 16.
    {
        Case c;
        c.dtype = c.cache_dtype = MLA_FLOAT32;
        c.h_q = 16;
        c.seqlens = {300, 0, 45};
        c.s_q = 2;
        c.causal = true;
        c.sink = kMixedSink;
        c.rot = kRotFreq;
        cases.push_back(c);
        Case d = c;
        d.dtype = d.cache_dtype = MLA_FLOAT64;
        d.d_qk = 72;
        d.d_v = 40;
        d.block_size = 7;
        d.rot = kRotTable;
        cases.push_back(d);
        Case e;
        e.dtype = MLA_BFLOAT16;
        e.cache_dtype = MLA_FLOAT32;
        e.h_q = 16;
        e.seqlens = {200, 3};
        cases.push_back(e);
        Case f;
        f.pad = 3;
        f.h_q = 16;
        f.seqlens = {120, 64};
        f.sink = kFiniteSink;
        cases.push_back(f);
        Case g;
        g.d_qk = 40;
        g.d_v = 24;
        g.h_q = 4;
        g.seqlens = {90, 1};
        cases.push_back(g);
    }
    // FP8 caches (V32: d_qk 576 = 512 + 64, values the first 512; MODEL1: d_qk 512 = 448 + 64,
    // values all 512): the sm80 kernel dequantises in shared memory (auto and mma caps), the
    // CUDA-core kernel per element (simple cap). h_q 1 / 16 / 64 / 128, block_size 1 / 61 / 64,
    // s_q 1 / 2 / 4 causal, zero-length requests, NaN in every unused row and in a key hidden
    // by the causal mask, sinks.
    {
        Case c;
        c.kind = MLA_CACHE_V32;
        c.seqlens = {300, 0, 1, 700};
        c.sink = kFiniteSink;
        cases.push_back(c);
        Case d;
        d.kind = MLA_CACHE_V32;
        d.h_q = 16;
        d.s_q = 4;
        d.causal = true;
        d.block_size = 61;
        d.seqlens = {200, 3, 1, 130};
        d.nan_last_key = true;
        d.sink = kMixedSink;
        cases.push_back(d);
        Case e;
        e.kind = MLA_CACHE_V32;
        e.dtype = MLA_FLOAT16;
        e.h_q = 64;
        e.s_q = 2;
        e.causal = true;
        e.block_size = 1;
        e.seqlens = {90, 0, 1, 150};
        e.rot = kRotFreq;
        cases.push_back(e);
        Case f;
        f.kind = MLA_CACHE_MODEL1;
        f.d_qk = 512;
        f.s_q = 2;
        f.causal = true;
        f.seqlens = {5000, 17, 0, 700};
        f.sink = kFiniteSink;
        f.rot = kRotTable;
        cases.push_back(f);
        Case g;
        g.kind = MLA_CACHE_MODEL1;
        g.d_qk = 512;
        g.h_q = 1;
        g.block_size = 61;
        g.seqlens = {100, 0, 65};
        g.sink = kMixedSink;
        cases.push_back(g);
        Case h;
        h.kind = MLA_CACHE_MODEL1;
        h.dtype = MLA_FLOAT16;
        h.d_qk = 512;
        h.h_q = 16;
        h.s_q = 4;
        h.causal = true;
        h.seqlens = {260, 4, 2, 64};
        h.nan_last_key = true;
        cases.push_back(h);
        Case k;
        k.kind = MLA_CACHE_V32;
        k.h_q = 128;
        k.s_q = 2;
        k.causal = true;
        k.seqlens = {6000, 64, 2};
        k.nan_last_key = true;
        cases.push_back(k);
        Case m;
        m.kind = MLA_CACHE_V32;
        m.seqlens = {0, 0, 0};
        m.s_q = 2;
        m.sink = kFiniteSink;
        cases.push_back(m);
        Case n;
        n.kind = MLA_CACHE_V32;
        std::mt19937 r(11);
        for (int i = 0; i < 48; ++i) n.seqlens.push_back(int(r() % 700));
        n.s_q = 2;
        n.causal = true;
        n.sink = kMixedSink;
        cases.push_back(n);
    }
    // FP8 with float32 / float64 queries (CUDA-core kernel on every cap) and layouts of other
    // sizes: one the sm80 kernel stages (MODEL1 128 + 64, tile 64, d_v 128 masked in its value
    // tier) and one it does not (V32 64 + 16, tile 32: rows of 104 bytes).
    {
        Case c;
        c.kind = MLA_CACHE_V32;
        c.dtype = MLA_FLOAT32;
        c.h_q = 16;
        c.s_q = 2;
        c.causal = true;
        c.seqlens = {300, 0, 45};
        c.sink = kMixedSink;
        cases.push_back(c);
        Case d;
        d.kind = MLA_CACHE_MODEL1;
        d.dtype = MLA_FLOAT64;
        d.d_qk = 512;
        d.h_q = 4;
        d.block_size = 7;
        d.seqlens = {120, 1};
        cases.push_back(d);
        Case e;
        e.kind = MLA_CACHE_MODEL1;
        e.d_nope = 128;
        e.d_rope = 64;
        e.tile = 64;
        e.d_qk = 192;
        e.d_v = 128;
        e.h_q = 32;
        e.block_size = 16;
        e.s_q = 2;
        e.causal = true;
        e.seqlens = {777, 64, 1};
        cases.push_back(e);
        Case f;
        f.kind = MLA_CACHE_V32;
        f.d_nope = 64;
        f.d_rope = 16;
        f.tile = 32;
        f.d_qk = 80;
        f.d_v = 64;
        f.h_q = 16;
        f.seqlens = {200, 3};
        f.sink = kFiniteSink;
        cases.push_back(f);
    }
    for (auto &c : cases) c.name = describe(c);
    return cases;
}

// Refusals: an FP8 cache whose layout does not match d_qk, host memory, and a workspace that is
// too small.
void test_refusals(void *stream) {
    DevBuf dq, dc, dint;
    if (!dq.alloc(1 << 16) || !dc.alloc(1 << 20) || !dint.alloc(1 << 12)) return;
    if (!ok_or_report(mla_cuda_memset(dint.ptr, 0, dint.bytes), "memset")) return;
    const int32_t *ints = static_cast<const int32_t *>(dint.ptr);
    mla_dense_decode_params p;
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
    p.cache.kind = MLA_CACHE_V32;
    p.cache.d_nope = 512;
    p.cache.d_rope = 32;  // 544 dims, not d_qk 576
    p.cache.tile = 128;
    p.cache.data = dc.ptr;
    p.cache.num_blocks = 1;
    p.cache.block_size = 64;
    p.cache.h_kv = 1;
    p.block_table = ints;
    p.max_blocks_per_seq = 1;
    p.block_table_stride = 1;
    p.cache_seqlens = ints;
    p.softmax_scale = 0.04f;
    p.out = dq.ptr;
    p.out_stride[0] = p.out_stride[1] = 16 * 512;
    p.out_stride[2] = 512;
    p.lse = static_cast<float *>(dc.ptr);
    p.exec.device = 0;
    p.exec.stream = stream;
    mla_status st = mla_dense_decode(&p);
    check(st == MLA_ERR_INVALID_ARGUMENT, "V32 cache of 544 dims for d_qk 576: expected "
           "MLA_ERR_INVALID_ARGUMENT, got %d (%s)", st, mla_last_error());

    p.cache.kind = MLA_CACHE_PLAIN;
    p.cache.dtype = MLA_BFLOAT16;
    p.cache.token_stride = 576;
    p.cache.block_stride = 64 * 576;
    p.cache.head_stride = 576;
    const int64_t ws = mla_dense_decode_workspace_size(&p);
    check(ws > 0, "workspace query for a bf16 576/512 call: expected > 0, got %lld (%s)",
           (long long)ws, mla_last_error());
    p.exec.workspace = dc.ptr;
    p.exec.workspace_bytes = ws - 1;
    st = mla_dense_decode(&p);
    check(st == MLA_ERR_INVALID_ARGUMENT, "workspace one byte short: expected "
           "MLA_ERR_INVALID_ARGUMENT, got %d (%s)", st, mla_last_error());

    static uint16_t host_q[16 * 576];
    p.exec.workspace_bytes = ws;
    p.q = host_q;
    st = mla_dense_decode(&p);
    check(st == MLA_ERR_INVALID_ARGUMENT, "q in plain host memory: expected "
           "MLA_ERR_INVALID_ARGUMENT, got %d (%s)", st, mla_last_error());

    // A named implementation that refuses the call, and a name that is none: the call fails
    // with MLA_ERR_UNSUPPORTED and says why; the plan query reports the refusal.
    p.q = dq.ptr;
    p.dtype = MLA_FLOAT32;
    p.cache.dtype = MLA_FLOAT32;
    p.exec.implementation = "sm80_mma";
    mla_plan_info info;
    st = mla_dense_decode_plan(&p, &info);
    check(st == MLA_OK && !info.implementation[0] && std::strstr(info.refusals, "sm80_mma: q is float32"),
          "plan of a float32 call forced to sm80_mma: expected a refusal naming float32, got %d, "
          "\"%s\", \"%s\"", st, info.implementation, info.refusals);
    st = mla_dense_decode(&p);
    check(st == MLA_ERR_UNSUPPORTED && std::strstr(mla_last_error(), "float32"),
          "float32 call forced to sm80_mma: expected MLA_ERR_UNSUPPORTED, got %d (%s)", st,
          mla_last_error());
    p.exec.implementation = "no_such_kernel";
    st = mla_dense_decode(&p);
    check(st == MLA_ERR_UNSUPPORTED && std::strstr(mla_last_error(), "cuda_core"),
          "unknown implementation name: expected MLA_ERR_UNSUPPORTED listing the names, got %d (%s)",
          st, mla_last_error());
    p.exec.implementation = nullptr;
    st = mla_dense_decode_plan(&p, &info);
    check(st == MLA_OK && std::strcmp(info.implementation, "cuda_core") == 0 &&
              std::strstr(info.refusals, "sm80_mma") != nullptr,
          "plan of a float32 call: expected cuda_core after the tensor-core refusals, got \"%s\" "
          "(%s)", info.implementation, info.refusals);
}

}  // namespace

int main() {
    const std::vector<Case> cases = make_cases();
    const int n_tests = int(cases.size()) + 8;  // cases (each through every implementation that takes it), refusals
    if (mla_cuda_device_count() == 0) {
        const char *ref = std::getenv("MLA4J_GPU_TEST_REFERENCE");
        if (ref && std::strcmp(ref, "1") == 0) {
            g_reference_only = true;
            uint64_t seed = 1000;
            for (const Case &c : cases) run_case(c, seed++, nullptr);
            std::printf("%d passed, %d failed (CPU path vs reference only)\n", g_passed, g_failed);
            return g_failed ? 1 : 0;
        }
        return mla_test::skip_without_device("test_gpu_dense_decode", n_tests);
    }
    void *stream = nullptr;
    if (!mla_test::open_device("test_gpu_dense_decode", &stream)) return 1;
    const char *only = std::getenv("MLA4J_TEST_FILTER");  // substring of case names (sanitizer runs)
    Timer total;
    uint64_t seed = 1000;
    for (const Case &c : cases) {
        const uint64_t s = seed++;
        if (only && c.name.find(only) == std::string::npos) continue;
        run_case(c, s, stream);
    }
    test_refusals(stream);
    mla_cuda_stream_destroy(stream);
    std::printf("time: %.1f s (f64 reference %.1f s, CPU path %.1f s, GPU incl. copies %.1f s)\n",
                total.s(), g_ref_s, g_cpu_s, g_gpu_s);
    std::printf("%d passed, %d failed\n", g_passed, g_failed);
    return g_failed ? 1 : 0;
}
