// Native tests of the KV cache ops (ops.md section 5): the FP8 layouts byte by byte, quantise /
// dequantise round trips, append to plain and FP8 caches, the checked mode's scan, and their
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

// ---- FP8 cache geometry, from the layout definitions in ops.md ----------------------------

struct Geo {
    int32_t kind;
    int64_t bs;
    int d_nope, d_rope, tile, n_scales;
    int64_t data_row, scale_row, block;
};

Geo geo(int32_t kind, int64_t bs, int d_nope, int d_rope, int tile) {
    Geo g{kind, bs, d_nope, d_rope, tile, d_nope / tile, 0, 0, 0};
    if (kind == MLA_CACHE_V32) {
        g.data_row = d_nope + 4 * g.n_scales + 2 * d_rope;
        g.block = bs * g.data_row;
    } else {
        g.data_row = d_nope + 2 * d_rope;
        g.scale_row = (g.n_scales + 7) / 8 * 8;
        int64_t raw = bs * (g.data_row + g.scale_row);
        g.block = (raw + g.data_row - 1) / g.data_row * g.data_row;
    }
    return g;
}

mla_cache fp8_cache(const Geo &g, const void *data, int64_t num_blocks) {
    mla_cache c{};
    c.kind = g.kind;
    c.data = data;
    c.num_blocks = num_blocks;
    c.block_size = g.bs;
    c.h_kv = 1;
    c.d_nope = g.d_nope;
    c.d_rope = g.d_rope;
    c.tile = g.tile;
    return c;
}

// Decodes token (blk, t): values and the scale of each tile.
void decode_token(const uint8_t *cache, const Geo &g, int64_t blk, int64_t t, double *vals,
                  double *scales) {
    const uint8_t *b = cache + blk * g.block;
    const uint8_t *row, *rope;
    if (g.kind == MLA_CACHE_V32) {
        row = b + t * g.data_row;
        for (int s = 0; s < g.n_scales; ++s) scales[s] = f32_at(row + g.d_nope + 4 * s);
        rope = row + g.d_nope + 4 * g.n_scales;
    } else {
        row = b + t * g.data_row;
        const uint8_t *sc = b + g.bs * g.data_row + t * g.scale_row;
        for (int s = 0; s < g.n_scales; ++s) scales[s] = std::ldexp(1.0, int(sc[s]) - 127);
        rope = row + g.d_nope;
    }
    for (int i = 0; i < g.d_nope; ++i) vals[i] = fp8_value(row[i]) * scales[i / g.tile];
    for (int i = 0; i < g.d_rope; ++i) vals[g.d_nope + i] = bf16_value(u16_at(rope + 2 * i));
}

// 2^ceil(log2(max(amax / 448, 1e-4))), computed exactly from the binary exponent.
double ref_scale(double amax) {
    double s = std::max(amax / 448.0, 1e-4);
    int e;
    double f = std::frexp(s, &e);  // s = f * 2^e, f in [0.5, 1)
    return f == 0.5 ? std::ldexp(1.0, e - 1) : std::ldexp(1.0, e);
}

// ---- section 5: layouts ----------------------------------------------------------------------

void test_block_bytes() {
    for (int64_t bs : {1, 2, 64, 61})
        check(mla_cache_block_bytes(MLA_CACHE_V32, bs, 0, 0, 0) == 656 * bs,
              "V32 default block bytes for block_size %lld", (long long)bs);
    check(mla_cache_block_bytes(MLA_CACHE_MODEL1, 64, 0, 0, 0) == 37440,
          "MODEL1 block_size 64 must be 37440 bytes, got %lld",
          (long long)mla_cache_block_bytes(MLA_CACHE_MODEL1, 64, 0, 0, 0));
    for (int64_t bs : {1, 3, 64, 256}) {
        Geo g = geo(MLA_CACHE_MODEL1, bs, 448, 64, 64);
        check(mla_cache_block_bytes(MLA_CACHE_MODEL1, bs, 0, 0, 0) == g.block,
              "MODEL1 default block bytes for block_size %lld", (long long)bs);
    }
    check(mla_cache_block_bytes(MLA_CACHE_V32, 2, 16, 4, 8) == 64, "tiny V32 block = 64 bytes");
    check(mla_cache_block_bytes(MLA_CACHE_MODEL1, 2, 16, 4, 8) == 72,
          "tiny MODEL1 block = 72 bytes");
    check(mla_cache_block_bytes(MLA_CACHE_V32, 2, 12, 4, 8) == -1, "d_nope % tile != 0 -> -1");
    check(mla_cache_block_bytes(MLA_CACHE_MODEL1, 2, 16, 3, 8) == -1, "odd d_rope -> -1");
    check(mla_cache_block_bytes(MLA_CACHE_PLAIN, 2, 16, 4, 8) == -1, "PLAIN has no FP8 bytes");
    check(mla_cache_block_bytes(MLA_CACHE_V32, 0, 16, 4, 8) == -1, "block_size 0 -> -1");
}

// d_nope 16, d_rope 4, tile 8, block_size 2, one block; every byte worked out by hand.
void test_hand_layout() {
    const float tok0[20] = {1, -2, 0.5f, 3.5f, 0, 0.25f, -1.5f, 7,             // amax 7: 2^-6
                            0x1p-14f, -0x1p-15f, 0, 0, 0, 0, 0, 0,             // clamp: 2^-13
                            1, -2, 0.5f, 3};                                   // bf16 exact
    const float tok1[20] = {1792, 8, -4, 2, 1, 0.5f, 0.25f, 0x1p-7f,           // amax 1792: 4
                            3, 0.1f, 0.09765625f, 0.10546875f, 0, 0, 0, -3,    // amax 3: 2^-7
                            0.15625f, 100, -1, 1.01171875f};
    std::vector<float> kv(tok0, tok0 + 20);
    kv.insert(kv.end(), tok1, tok1 + 20);
    // fp8 codes: 64 -> 0x68, -128 -> 0xF0, 32 -> 0x60, 224 -> 0x76, 16 -> 0x58, -96 -> 0xEC,
    // 448 -> 0x7E; 0.5 -> 0x30, -0.25 -> 0xA8; 2 -> 0x40, -1 -> 0xB8, 2^-9 -> 0x01 (subnormal);
    // 384 -> 0x7C; 12.8 -> 13 = 0x55; 12.5 -> 12 = 0x54 and 13.5 -> 14 = 0x56 (ties to even).
    const uint8_t nope0[16] = {0x68, 0xF0, 0x60, 0x76, 0x00, 0x58, 0xEC, 0x7E,
                               0x30, 0xA8, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00};
    const uint8_t nope1[16] = {0x7E, 0x40, 0xB8, 0x30, 0x28, 0x20, 0x18, 0x01,
                               0x7C, 0x55, 0x54, 0x56, 0x00, 0x00, 0x00, 0xFC};
    // float32 scales little-endian: 2^-6 = 0x3C800000, 2^-13 = 0x39000000, 4 = 0x40800000,
    // 2^-7 = 0x3C000000. UE8M0: exponent + 127.
    const uint8_t f32s0[8] = {0, 0, 0x80, 0x3C, 0, 0, 0, 0x39};
    const uint8_t f32s1[8] = {0, 0, 0x80, 0x40, 0, 0, 0, 0x3C};
    const uint8_t ue0[8] = {121, 114, 0, 0, 0, 0, 0, 0};
    const uint8_t ue1[8] = {129, 120, 0, 0, 0, 0, 0, 0};
    // bf16: 1 = 3F80, -2 = C000, 0.5 = 3F00, 3 = 4040; 0.15625 = 3E20, 100 = 42C8, -1 = BF80,
    // 1 + 3 * 2^-8 is a tie between 3F81 and 3F82 -> even 3F82 (1.015625).
    const uint8_t rope0[8] = {0x80, 0x3F, 0x00, 0xC0, 0x00, 0x3F, 0x40, 0x40};
    const uint8_t rope1[8] = {0x20, 0x3E, 0xC8, 0x42, 0x80, 0xBF, 0x82, 0x3F};

    std::vector<uint8_t> v32;
    for (int t = 0; t < 2; ++t) {
        const uint8_t *n = t ? nope1 : nope0, *s = t ? f32s1 : f32s0, *r = t ? rope1 : rope0;
        v32.insert(v32.end(), n, n + 16);
        v32.insert(v32.end(), s, s + 8);
        v32.insert(v32.end(), r, r + 8);
    }
    std::vector<uint8_t> m1;
    for (int t = 0; t < 2; ++t) {
        m1.insert(m1.end(), t ? nope1 : nope0, (t ? nope1 : nope0) + 16);
        m1.insert(m1.end(), t ? rope1 : rope0, (t ? rope1 : rope0) + 8);
    }
    m1.insert(m1.end(), ue0, ue0 + 8);  // scale rows at byte 48
    m1.insert(m1.end(), ue1, ue1 + 8);
    m1.insert(m1.end(), 8, 0);          // 64 -> 72: padded to a multiple of the 24-byte row

    std::vector<double> deq(kv.begin(), kv.end());
    deq[20 + 9] = 13.0 / 128, deq[20 + 10] = 12.0 / 128, deq[20 + 11] = 14.0 / 128;
    deq[20 + 19] = 1.015625;

    for (int32_t kind : {MLA_CACHE_V32, MLA_CACHE_MODEL1}) {
        const char *name = kind == MLA_CACHE_V32 ? "V32" : "MODEL1";
        const std::vector<uint8_t> &want = kind == MLA_CACHE_V32 ? v32 : m1;
        std::vector<uint8_t> bytes(want.size() + 16, 0xCD);
        mla_quant_params p{};
        p.dtype = MLA_FLOAT32;
        p.kv = kv.data();
        p.cache = fp8_cache(geo(kind, 2, 16, 4, 8), bytes.data(), 1);
        p.cache_out = bytes.data();
        p.exec = cpu();
        check(mla_kv_quantize(&p) == MLA_OK, "%s hand case quantize: %s", name, mla_last_error());
        bool same = std::equal(want.begin(), want.end(), bytes.begin());
        check(same, "%s hand case: bytes differ from the hand-computed layout", name);
        if (!same)
            for (size_t i = 0; i < want.size(); ++i)
                if (want[i] != bytes[i])
                    std::printf("  byte %zu: want %02X got %02X\n", i, want[i], bytes[i]);
        bool guard = std::all_of(bytes.begin() + want.size(), bytes.end(),
                                 [](uint8_t b) { return b == 0xCD; });
        check(guard, "%s hand case: bytes written past the block", name);
        std::vector<double> out(41, -7.0);
        p.dtype = MLA_FLOAT64;
        p.kv = out.data();
        check(mla_kv_dequantize(&p) == MLA_OK, "%s hand case dequantize", name);
        check(std::equal(deq.begin(), deq.end(), out.begin()) && out[40] == -7.0,
              "%s hand case: dequantized values", name);
    }
}

// Quantise random rows, check scales, error bounds and bytes; dequantise to several dtypes.
// Bound for the fp8 part: with y = x / scale (|y| <= 448), e4m3 has 3 mantissa bits, so in
// the binade [2^e, 2^(e+1)) (e >= -6) the spacing is 2^(e-3) and rounding to nearest errs by
// at most 2^(e-4) <= |y| / 16; below 2^-6 (subnormals) the spacing is 2^-9, the error at most
// 2^-10. Hence |x - deq(q(x))| <= max(|x| * 2^-4, scale * 2^-10). The RoPE part is bf16
// rounded to nearest even: |x - y| <= |x| * 2^-8, and y is exactly the bf16 rounding of x.
void test_quant_roundtrip(int32_t kind, int64_t bs, int64_t nb, int d_nope, int d_rope, int tile,
                          int32_t in_dt) {
    Geo g = geo(kind, bs, d_nope, d_rope, tile);
    int64_t d = d_nope + d_rope, tokens = nb * bs;
    std::vector<double> x(static_cast<size_t>(tokens * d));
    for (int64_t t = 0; t < tokens; ++t) {
        for (int s = 0; s < g.n_scales; ++s) {
            int mode = int(irand(0, 9));
            double mag = mode == 0 ? 0.0 : std::pow(10.0, uni(-7, 4));
            for (int i = s * tile; i < (s + 1) * tile; ++i)
                x[size_t(t * d + i)] = random_in(in_dt, -mag, mag);
        }
        for (int i = d_nope; i < d; ++i) x[size_t(t * d + i)] = random_in(in_dt, -50, 50);
    }
    std::vector<uint8_t> kv = encode(x, in_dt);
    std::vector<uint8_t> bytes(static_cast<size_t>(nb * g.block + 32), 0xAB);
    mla_quant_params p{};
    p.dtype = in_dt;
    p.kv = kv.data();
    p.cache = fp8_cache(g, nullptr, nb);
    p.cache_out = bytes.data();  // cache.data NULL: the output comes from cache_out
    p.exec = cpu(2);
    const char *name = kind == MLA_CACHE_V32 ? "V32" : "MODEL1";
    check(mla_kv_quantize(&p) == MLA_OK, "%s quantize: %s", name, mla_last_error());

    int bad_scale = 0, bad_nope = 0, bad_rope = 0, bad_pad = 0;
    std::vector<double> vals(static_cast<size_t>(d)), scales(static_cast<size_t>(g.n_scales));
    std::vector<double> dec(static_cast<size_t>(tokens * d));
    for (int64_t t = 0; t < tokens; ++t) {
        decode_token(bytes.data(), g, t / bs, t % bs, vals.data(), scales.data());
        const double *xr = &x[size_t(t * d)];
        for (int s = 0; s < g.n_scales; ++s) {
            double amax = 0;
            for (int i = s * tile; i < (s + 1) * tile; ++i) amax = std::max(amax, std::fabs(xr[i]));
            bad_scale += scales[size_t(s)] != ref_scale(amax);
            for (int i = s * tile; i < (s + 1) * tile; ++i) {
                double bound = std::max(std::fabs(xr[i]) / 16, scales[size_t(s)] / 1024);
                bad_nope += !(std::fabs(xr[i] - vals[size_t(i)]) <= bound);
            }
        }
        for (int i = d_nope; i < d; ++i)
            bad_rope += !(vals[size_t(i)] == bf16_round(xr[i]) &&
                          std::fabs(vals[size_t(i)] - xr[i]) <= std::fabs(xr[i]) / 256);
        std::copy(vals.begin(), vals.end(), dec.begin() + t * d);
    }
    if (kind == MLA_CACHE_MODEL1) {
        for (int64_t b = 0; b < nb; ++b) {
            const uint8_t *blk = bytes.data() + b * g.block;
            for (int64_t t = 0; t < bs; ++t)
                for (int64_t i = g.n_scales; i < g.scale_row; ++i)
                    bad_pad += blk[bs * g.data_row + t * g.scale_row + i] != 0;
            for (int64_t i = bs * (g.data_row + g.scale_row); i < g.block; ++i)
                bad_pad += blk[i] != 0;
        }
    }
    bool guard = std::all_of(bytes.end() - 32, bytes.end(), [](uint8_t v) { return v == 0xAB; });
    check(bad_scale == 0, "%s bs %lld: %d tile scales differ from 2^ceil(log2(max(amax/448,1e-4)))",
          name, (long long)bs, bad_scale);
    check(bad_nope == 0, "%s bs %lld: %d fp8 values outside the e4m3 rounding bound", name,
          (long long)bs, bad_nope);
    check(bad_rope == 0, "%s bs %lld: %d rope values not bf16-rounded", name, (long long)bs,
          bad_rope);
    check(bad_pad == 0, "%s bs %lld: %d padding bytes not zero", name, (long long)bs, bad_pad);
    check(guard, "%s bs %lld: bytes written past the cache", name, (long long)bs);

    // Dequantise: exactly the decoded values, in each output dtype.
    p.cache.data = bytes.data();
    p.cache_out = nullptr;
    for (int32_t out_dt : {MLA_FLOAT32, MLA_FLOAT64, MLA_BFLOAT16, MLA_FLOAT16}) {
        std::vector<uint8_t> out(static_cast<size_t>((tokens * d + 4) * elem_bytes(out_dt)), 0xEE);
        p.dtype = out_dt;
        p.kv = out.data();
        p.exec = cpu(out_dt == MLA_FLOAT32 ? 1 : 0);
        check(mla_kv_dequantize(&p) == MLA_OK, "%s dequantize: %s", name, mla_last_error());
        int bad = 0;
        for (int64_t i = 0; i < tokens * d; ++i) {
            double want = dec[size_t(i)];
            if (out_dt == MLA_FLOAT16) {
                // Values below float16's normal range are left out (the reference rounds
                // normal numbers only).
                if (want != 0 && std::fabs(want) < std::ldexp(1.0, -14)) continue;
                want = f16_round(want);
            }
            bad += value_at(out.data(), out_dt, i) != want;
        }
        bool tail = std::all_of(out.end() - 4 * elem_bytes(out_dt), out.end(),
                                [](uint8_t v) { return v == 0xEE; });
        check(bad == 0 && tail, "%s dequantize to dtype %d: %d values differ from the bytes", name,
              out_dt, bad);
    }
}

void test_quant_bad_args() {
    Geo g = geo(MLA_CACHE_V32, 2, 16, 4, 8);
    std::vector<float> kv(40, 1.0f);
    std::vector<uint8_t> bytes(static_cast<size_t>(g.block), 0x5A), snapshot = bytes;
    mla_quant_params p{};
    p.dtype = MLA_FLOAT32;
    p.kv = kv.data();
    p.cache = fp8_cache(g, bytes.data(), 1);
    p.cache_out = bytes.data();
    p.exec = cpu();

    mla_quant_params q = p;
    q.cache.kind = MLA_CACHE_PLAIN;
    q.cache.dtype = MLA_FLOAT32;
    check_invalid(mla_kv_quantize(&q), "quantize PLAIN");
    check(std::strstr(mla_last_error(), "mla_kv_quantize: cache.kind") != nullptr,
          "quantize PLAIN message names the op and argument: '%s'", mla_last_error());
    check_invalid(mla_kv_dequantize(&q), "dequantize PLAIN");
    q = p;
    q.cache.d_nope = 12;  // not a multiple of the tile
    check_invalid(mla_kv_quantize(&q), "quantize bad layout");
    q = p;
    q.dtype = MLA_INT32;
    check_invalid(mla_kv_quantize(&q), "quantize int32 kv");
    q = p;
    q.kv = nullptr;
    check_invalid(mla_kv_quantize(&q), "quantize null kv");
    q = p;
    q.cache.block_size = 0;
    check_invalid(mla_kv_quantize(&q), "quantize block_size 0");
    q = p;
    q.exec.num_threads = -1;
    check_invalid(mla_kv_quantize(&q), "quantize negative num_threads");
    check_invalid(mla_kv_quantize(nullptr), "quantize null params");
    check(bytes == snapshot, "failed quantize calls must not write the cache");
    q = p;
    q.exec = gpu();
    check_unsupported(mla_kv_quantize(&q), "quantize on a GPU device");
    check_unsupported(mla_kv_dequantize(&q), "dequantize on a GPU device");
    check(bytes == snapshot, "unsupported quantize must not write the cache");
    std::vector<float> kv_snap = kv;
    q = p;
    q.dtype = MLA_UINT8;
    check_invalid(mla_kv_dequantize(&q), "dequantize uint8 kv");
    check(kv == kv_snap, "failed dequantize must not write kv");
}

// ---- section 5: append ---------------------------------------------------------------------

struct AppendSetup {
    int64_t b, n_new, bs, nb, max_blocks;
    std::vector<int32_t> seqlens, table;
};

AppendSetup append_setup() {
    AppendSetup s{3, 4, 3, 9, 4, {0, 2, 5}, {}};
    // Distinct physical blocks per request, shuffled; unused entries hold -1.
    s.table = {3, 0, -1, -1,  //
               6, 1, -1, -1,  //
               2, 5, 4, -1};
    return s;
}

void test_append_plain(int32_t in_dt, int32_t cache_dt) {
    AppendSetup s = append_setup();
    int64_t h = 2, d = 6;
    int64_t hs = 8, ts = 20, bls = 70;  // padded strides
    std::vector<double> sentinel_vals(static_cast<size_t>(s.nb * bls), 12288.0);  // exact in all
    std::vector<uint8_t> cache = encode(sentinel_vals, cache_dt);
    int64_t kv_tok = h * d, kv_req = s.n_new * kv_tok + 5;
    std::vector<double> nv(static_cast<size_t>(s.b * kv_req), 0.0);
    for (auto &v : nv) v = random_in(in_dt, -3, 3);
    std::vector<uint8_t> new_kv = encode(nv, in_dt);

    mla_append_params p{};
    p.dtype = in_dt;
    p.b = s.b;
    p.n_new = s.n_new;
    p.d_qk = d;
    p.new_kv = new_kv.data();
    p.new_kv_stride[0] = kv_req;
    p.new_kv_stride[1] = kv_tok;
    p.cache.kind = MLA_CACHE_PLAIN;
    p.cache.dtype = cache_dt;
    p.cache.data = cache.data();
    p.cache.num_blocks = s.nb;
    p.cache.block_size = s.bs;
    p.cache.h_kv = h;
    p.cache.block_stride = bls;
    p.cache.token_stride = ts;
    p.cache.head_stride = hs;
    p.cache_out = cache.data();
    p.block_table = s.table.data();
    p.max_blocks_per_seq = s.max_blocks;
    p.block_table_stride = s.max_blocks;
    p.cache_seqlens = s.seqlens.data();
    p.exec = cpu();
    check(mla_kv_append(&p) == MLA_OK, "append PLAIN: %s", mla_last_error());

    std::vector<double> want = sentinel_vals;
    for (int64_t i = 0; i < s.b; ++i)
        for (int64_t j = 0; j < s.n_new; ++j) {
            int64_t pos = s.seqlens[size_t(i)] + j;
            int64_t blk = s.table[size_t(i * s.max_blocks + pos / s.bs)], off = pos % s.bs;
            for (int64_t hh = 0; hh < h; ++hh)
                for (int64_t e = 0; e < d; ++e) {
                    double v = nv[size_t(i * kv_req + j * kv_tok + hh * d + e)];
                    if (cache_dt == MLA_BFLOAT16) v = bf16_round(double(float(v)));
                    if (cache_dt == MLA_FLOAT32) v = double(float(v));
                    if (cache_dt == MLA_FLOAT16) v = f16_round(double(float(v)));
                    want[size_t(blk * bls + off * ts + hh * hs + e)] = v;
                }
        }
    int bad = 0;
    for (size_t i = 0; i < want.size(); ++i)
        bad += value_at(cache.data(), cache_dt, int64_t(i)) != want[i];
    check(bad == 0, "append PLAIN dtype %d -> %d: %d cache elements differ", in_dt, cache_dt, bad);
}

void test_append_fp8(int32_t kind) {
    AppendSetup s = append_setup();
    s.bs = 2;
    s.max_blocks = 5;
    s.seqlens = {0, 3, 1};
    s.table = {7, 0, -1, -1, -1,  //
               6, 1, 2, 8, -1,    //
               3, 5, 4, -1, -1};
    Geo g = geo(kind, s.bs, 16, 4, 8);
    int64_t d = 20;
    std::vector<uint8_t> cache(static_cast<size_t>(s.nb * g.block), 0xEE);
    std::vector<double> nv(static_cast<size_t>(s.b * s.n_new * d));
    for (auto &v : nv) v = random_in(MLA_FLOAT32, -20, 20);
    std::vector<uint8_t> new_kv = encode(nv, MLA_FLOAT32);

    mla_append_params p{};
    p.dtype = MLA_FLOAT32;
    p.b = s.b;
    p.n_new = s.n_new;
    p.d_qk = d;
    p.new_kv = new_kv.data();
    p.new_kv_stride[0] = s.n_new * d;
    p.new_kv_stride[1] = d;
    p.cache = fp8_cache(g, cache.data(), s.nb);
    p.cache_out = cache.data();
    p.block_table = s.table.data();
    p.max_blocks_per_seq = s.max_blocks;
    p.block_table_stride = s.max_blocks;
    p.cache_seqlens = s.seqlens.data();
    p.exec = cpu(2);
    const char *name = kind == MLA_CACHE_V32 ? "V32" : "MODEL1";
    check(mla_kv_append(&p) == MLA_OK, "append %s: %s", name, mla_last_error());

    // Expected: each token's rows as quantize writes them (checked byte by byte above); every
    // other byte, MODEL1 block padding included, untouched.
    std::vector<uint8_t> want(cache.size(), 0xEE);
    for (int64_t i = 0; i < s.b; ++i)
        for (int64_t j = 0; j < s.n_new; ++j) {
            int64_t pos = s.seqlens[size_t(i)] + j;
            int64_t blk = s.table[size_t(i * s.max_blocks + pos / s.bs)], off = pos % s.bs;
            std::vector<float> one(static_cast<size_t>(s.bs * d), 0.0f);
            for (int64_t e = 0; e < d; ++e)
                one[size_t(off * d + e)] = float(nv[size_t((i * s.n_new + j) * d + e)]);
            std::vector<uint8_t> tmp(static_cast<size_t>(g.block));
            mla_quant_params q{};
            q.dtype = MLA_FLOAT32;
            q.kv = one.data();
            q.cache = fp8_cache(g, tmp.data(), 1);
            q.exec = cpu();
            mla_kv_quantize(&q);
            uint8_t *dst = want.data() + blk * g.block;
            std::memcpy(dst + off * g.data_row, tmp.data() + off * g.data_row, size_t(g.data_row));
            if (kind == MLA_CACHE_MODEL1) {
                int64_t so = s.bs * g.data_row + off * g.scale_row;
                std::memcpy(dst + so, tmp.data() + so, size_t(g.scale_row));
            }
        }
    check(cache == want, "append %s: cache bytes differ from the quantised tokens", name);

    // The appended tokens decode within the FP8 bound.
    int bad = 0;
    std::vector<double> vals(static_cast<size_t>(d)), scales(static_cast<size_t>(g.n_scales));
    for (int64_t i = 0; i < s.b; ++i)
        for (int64_t j = 0; j < s.n_new; ++j) {
            int64_t pos = s.seqlens[size_t(i)] + j;
            int64_t blk = s.table[size_t(i * s.max_blocks + pos / s.bs)];
            decode_token(cache.data(), g, blk, pos % s.bs, vals.data(), scales.data());
            for (int64_t e = 0; e < d; ++e) {
                double x = nv[size_t((i * s.n_new + j) * d + e)];
                double bound = e < 16 ? std::max(std::fabs(x) / 16, scales[size_t(e / 8)] / 1024)
                                      : std::fabs(x) / 256;
                bad += !(std::fabs(vals[size_t(e)] - x) <= bound);
            }
        }
    check(bad == 0, "append %s: %d decoded values outside the FP8/bf16 bound", name, bad);
}

void test_append_bad_args() {
    AppendSetup s = append_setup();
    int64_t d = 4;
    std::vector<float> cache(static_cast<size_t>(s.nb * s.bs * d), 9.0f), snapshot = cache;
    std::vector<float> nv(static_cast<size_t>(s.b * s.n_new * d), 1.0f);
    mla_append_params p{};
    p.dtype = MLA_FLOAT32;
    p.b = s.b;
    p.n_new = s.n_new;
    p.d_qk = d;
    p.new_kv = nv.data();
    p.new_kv_stride[0] = s.n_new * d;
    p.new_kv_stride[1] = d;
    p.cache.kind = MLA_CACHE_PLAIN;
    p.cache.dtype = MLA_FLOAT32;
    p.cache.data = cache.data();
    p.cache.num_blocks = s.nb;
    p.cache.block_size = s.bs;
    p.cache.h_kv = 1;
    p.cache.block_stride = s.bs * d;
    p.cache.token_stride = d;
    p.cache.head_stride = d;
    p.cache_out = cache.data();
    p.block_table = s.table.data();
    p.max_blocks_per_seq = s.max_blocks;
    p.block_table_stride = s.max_blocks;
    p.cache_seqlens = s.seqlens.data();
    p.exec = cpu();

    // In every case below the first requests are valid: nothing may be written even for them.
    std::vector<int32_t> lens = s.seqlens, table = s.table;
    mla_append_params q = p;
    lens = {0, 2, 9};  // 9 + 4 > 4 blocks * 3
    q.cache_seqlens = lens.data();
    check_invalid(mla_kv_append(&q), "append past max_blocks_per_seq * block_size");
    lens = {0, -1, 5};
    check_invalid(mla_kv_append(&q), "append negative seqlen");
    q = p;
    table = s.table;
    table[10] = int32_t(s.nb);  // request 2 needs its third block
    q.block_table = table.data();
    check_invalid(mla_kv_append(&q), "append block id == num_blocks");
    table[10] = -1;
    check_invalid(mla_kv_append(&q), "append block id -1");
    table = s.table;
    table[5] = 0;  // request 1's second block is request 0's: both write block 0 offset 0
    check_invalid(mla_kv_append(&q), "append two tokens on one slot");
    q = p;
    q.dtype = MLA_INT32;
    check_invalid(mla_kv_append(&q), "append int32 new_kv");
    q = p;
    q.cache.kind = 7;
    check_invalid(mla_kv_append(&q), "append unknown cache kind");
    q = p;
    q.cache.h_kv = 0;
    check_invalid(mla_kv_append(&q), "append PLAIN h_kv 0");
    q = p;
    q.cache_seqlens = nullptr;
    check_invalid(mla_kv_append(&q), "append null cache_seqlens");
    check_invalid(mla_kv_append(nullptr), "append null params");
    q = p;
    q.exec = gpu();
    if (mla_cuda_device_count() > 0)  // the GPU path takes device pointers only
        check_invalid(mla_kv_append(&q), "append on a GPU device with host memory");
    else
        check(mla_kv_append(&q) == MLA_ERR_UNSUPPORTED,
              "append on a GPU device without one: expected MLA_ERR_UNSUPPORTED, got '%s'",
              mla_last_error());
    check(cache == snapshot, "failed appends must leave the cache unchanged");

    Geo g = geo(MLA_CACHE_V32, 3, 16, 4, 8);
    std::vector<uint8_t> bytes(static_cast<size_t>(g.block * s.nb), 0x11), bsnap = bytes;
    q = p;
    q.d_qk = 20;
    q.cache = fp8_cache(g, bytes.data(), s.nb);
    q.cache.h_kv = 2;
    q.cache_out = bytes.data();
    check_invalid(mla_kv_append(&q), "append V32 with h_kv 2");
    q.cache.h_kv = 1;
    q.d_qk = 24;
    check_invalid(mla_kv_append(&q), "append V32 with d_qk != d_nope + d_rope");
    check(bytes == bsnap, "failed FP8 appends must leave the cache unchanged");

    q = p;
    q.n_new = 0;
    check(mla_kv_append(&q) == MLA_OK && cache == snapshot, "append of zero tokens is a no-op");
}

}  // namespace


// The checked mode's scan: the first NaN / Inf / value past the bound, in each float type.
void test_find_unquantizable() {
    const int64_t n = 300000;  // several chunks of the scan
    std::vector<float> f(n);
    for (int64_t i = 0; i < n; ++i) f[i] = float(uni(-3, 3));
    int64_t first = -7;
    mla_status st = mla_find_unquantizable(MLA_FLOAT32, f.data(), n, INFINITY, 0, &first);
    check(st == MLA_OK && first == -1, "find_unquantizable clean f32: status %d first %lld", int(st), (long long)first);
    f[250001] = 1e30f;
    f[260000] = NAN;
    st = mla_find_unquantizable(MLA_FLOAT32, f.data(), n, 1e4, 2, &first);
    check(st == MLA_OK && first == 250001, "find_unquantizable 1e30 past 1e4: first %lld", (long long)first);
    st = mla_find_unquantizable(MLA_FLOAT32, f.data(), n, INFINITY, 2, &first);
    check(st == MLA_OK && first == 260000, "find_unquantizable NaN with no bound: first %lld", (long long)first);
    f[70000] = -INFINITY;
    st = mla_find_unquantizable(MLA_FLOAT32, f.data(), n, INFINITY, 0, &first);
    check(st == MLA_OK && first == 70000, "find_unquantizable -inf: first %lld", (long long)first);
    st = mla_find_unquantizable(MLA_FLOAT32, f.data(), 70000, 2.0, 1, &first);
    int64_t want = -1;
    for (int64_t i = 0; i < 70000 && want < 0; ++i) if (std::fabs(f[i]) > 2.0f) want = i;
    check(st == MLA_OK && first == want, "find_unquantizable bound 2: first %lld, expected %lld", (long long)first,
          (long long)want);
    // 16-bit types, encoded by hand: bf16 0x7fc0 NaN, 0x4120 = 10; f16 0x7c00 +inf, 0x4900 = 10
    std::vector<uint16_t> bf(1000, 0x3f80), h(1000, 0x3c00);  // 1.0
    bf[900] = 0x4120;
    bf[950] = 0x7fc0;
    st = mla_find_unquantizable(MLA_BFLOAT16, bf.data(), 1000, 9.5, 0, &first);
    check(st == MLA_OK && first == 900, "find_unquantizable bf16 10 past 9.5: first %lld", (long long)first);
    st = mla_find_unquantizable(MLA_BFLOAT16, bf.data(), 1000, 10, 0, &first);
    check(st == MLA_OK && first == 950, "find_unquantizable bf16 NaN: first %lld", (long long)first);
    h[3] = 0x4900;
    h[999] = 0x7c00;
    st = mla_find_unquantizable(MLA_FLOAT16, h.data(), 1000, 10, 0, &first);
    check(st == MLA_OK && first == 999, "find_unquantizable f16 inf: first %lld", (long long)first);
    std::vector<double> d = {1, -2, 1e300};
    st = mla_find_unquantizable(MLA_FLOAT64, d.data(), 3, 1e299, 0, &first);
    check(st == MLA_OK && first == 2, "find_unquantizable f64 1e300: first %lld", (long long)first);
    check_invalid(mla_find_unquantizable(MLA_INT32, d.data(), 3, 1, 0, &first), "find_unquantizable int32");
    check_invalid(mla_find_unquantizable(MLA_FLOAT64, d.data(), 3, NAN, 0, &first), "find_unquantizable NaN bound");
    check_invalid(mla_find_unquantizable(MLA_FLOAT64, d.data(), 3, 1, 0, nullptr), "find_unquantizable null first");
}

int main() {
    test_block_bytes();
    test_find_unquantizable();
    test_hand_layout();
    for (int32_t in_dt : {MLA_FLOAT32, MLA_BFLOAT16}) {
        test_quant_roundtrip(MLA_CACHE_V32, 3, 2, 512, 64, 128, in_dt);
        test_quant_roundtrip(MLA_CACHE_MODEL1, 5, 3, 448, 64, 64, in_dt);
        test_quant_roundtrip(MLA_CACHE_MODEL1, 2, 4, 48, 16, 16, in_dt);  // V4 test config
        test_quant_roundtrip(MLA_CACHE_V32, 7, 3, 16, 4, 8, in_dt);
    }
    test_quant_bad_args();

    test_append_plain(MLA_FLOAT32, MLA_FLOAT32);
    test_append_plain(MLA_FLOAT64, MLA_BFLOAT16);
    test_append_plain(MLA_FLOAT64, MLA_FLOAT64);
    test_append_plain(MLA_BFLOAT16, MLA_FLOAT16);
    test_append_fp8(MLA_CACHE_V32);
    test_append_fp8(MLA_CACHE_MODEL1);
    test_append_bad_args();

    std::printf("%d passed, %d failed\n", g_passed, g_failed);
    return g_failed == 0 ? 0 : 1;
}
