// Native tests of the KV cache ops, the lightning indexer, top-k and RoPE (ops.md sections
// 5, 6, 7). Every reference here is written independently of the library, in float64.
#include <algorithm>
#include <cmath>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>
#include "mla/mla.h"
#include "test_support.h"

namespace {

using mla_test::g_failed;
using mla_test::g_passed;
using mla_test::check;

std::mt19937_64 rng(20240517);

double uni(double a, double b) { return std::uniform_real_distribution<double>(a, b)(rng); }
int64_t irand(int64_t a, int64_t b) { return std::uniform_int_distribution<int64_t>(a, b)(rng); }

mla_exec cpu(int threads = 0) {
    mla_exec e{};
    e.device = -1;
    e.num_threads = threads;
    return e;
}

mla_exec gpu() {
    mla_exec e{};
    e.device = 0;
    return e;
}

// A failed call must say why.
void check_invalid(mla_status st, const char *what) {
    check(st == MLA_ERR_INVALID_ARGUMENT && std::strlen(mla_last_error()) > 0,
          "%s: expected MLA_ERR_INVALID_ARGUMENT with a message, got status %d, message '%s'",
          what, int(st), mla_last_error());
}

// A call with exec.device = 0 on these host buffers is refused before any of them is read:
// MLA_ERR_UNSUPPORTED where no CUDA device exists (or CUDA is not in the build), and where one
// does, MLA_ERR_INVALID_ARGUMENT (host memory passed to a device call; test_gpu_indexer runs
// the device paths themselves).
void check_unsupported(mla_status st, const char *what) {
    const bool device = mla_cuda_device_count() > 0;
    const mla_status want = device ? MLA_ERR_INVALID_ARGUMENT : MLA_ERR_UNSUPPORTED;
    check(st == want && std::strstr(mla_last_error(), device ? "host memory" : "exec.device"),
          "%s: expected status %d for a GPU call on host memory, got %d '%s'", what, int(want),
          int(st), mla_last_error());
}

// ---- number formats, decoded here from their definitions ----------------------------------

// x rounded to `bits` significant bits, ties to even (normal range of the target format).
double round_bits(double x, int bits) {
    if (x == 0 || !std::isfinite(x)) return x;
    int e;
    std::frexp(x, &e);
    double ulp = std::ldexp(1.0, e - bits);
    return std::nearbyint(x / ulp) * ulp;
}

double bf16_round(double x) { return round_bits(x, 8); }

uint16_t bf16_bits(double x) {
    float f = float(bf16_round(x));
    uint32_t u;
    std::memcpy(&u, &f, 4);
    return uint16_t(u >> 16);
}

double bf16_value(uint16_t b) {
    uint32_t u = uint32_t(b) << 16;
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}

double f16_round(double x) { return round_bits(x, 11); }

uint16_t f16_bits(double x) {
    x = f16_round(x);
    uint16_t sign = std::signbit(x) ? 0x8000 : 0;
    if (x == 0) return sign;
    int e;
    double f = std::frexp(std::fabs(x), &e);  // |x| = (2f) * 2^(e-1), 2f in [1, 2)
    int m = int((2 * f - 1) * 1024);
    return uint16_t(sign | ((e - 1 + 15) << 10) | m);
}

double f16_value(uint16_t h) {
    int e = (h >> 10) & 31, m = h & 1023;
    double v = e == 0 ? std::ldexp(double(m), -24) : std::ldexp(1 + m / 1024.0, e - 15);
    return (h & 0x8000) ? -v : v;
}

// float8_e4m3fn: bias 7, 3 mantissa bits, subnormals m * 2^-9, S.1111.111 is NaN.
double fp8_value(uint8_t v) {
    int e = (v >> 3) & 15, m = v & 7;
    if (e == 15 && m == 7) return NAN;
    double r = e == 0 ? std::ldexp(double(m), -9) : std::ldexp(1 + m / 8.0, e - 7);
    return (v & 0x80) ? -r : r;
}

float f32_at(const uint8_t *p) {
    float f;
    std::memcpy(&f, p, 4);
    return f;
}

uint16_t u16_at(const uint8_t *p) { return uint16_t(p[0] | (p[1] << 8)); }

// Values of a typed buffer as double.
double value_at(const void *base, int32_t dt, int64_t i) {
    switch (dt) {
        case MLA_FLOAT32: return static_cast<const float *>(base)[i];
        case MLA_FLOAT64: return static_cast<const double *>(base)[i];
        case MLA_BFLOAT16: return bf16_value(static_cast<const uint16_t *>(base)[i]);
        case MLA_FLOAT16: return f16_value(static_cast<const uint16_t *>(base)[i]);
        default: return NAN;
    }
}

int64_t dsize(int32_t dt) { return dt == MLA_FLOAT64 ? 8 : dt == MLA_FLOAT32 ? 4 : 2; }

// A buffer of n elements of dt holding `vals` (already representable in dt).
std::vector<uint8_t> encode(const std::vector<double> &vals, int32_t dt) {
    std::vector<uint8_t> out(vals.size() * dsize(dt));
    for (size_t i = 0; i < vals.size(); ++i) {
        if (dt == MLA_FLOAT32) {
            float f = float(vals[i]);
            std::memcpy(&out[i * 4], &f, 4);
        } else if (dt == MLA_FLOAT64) {
            std::memcpy(&out[i * 8], &vals[i], 8);
        } else {
            uint16_t h = dt == MLA_BFLOAT16 ? bf16_bits(vals[i]) : f16_bits(vals[i]);
            std::memcpy(&out[i * 2], &h, 2);
        }
    }
    return out;
}

// A random value exactly representable in dt (and a normal float16 number for float16).
double random_in(int32_t dt, double a, double b) {
    double v = uni(a, b);
    if (dt == MLA_FLOAT16 && std::fabs(v) < 1e-3) v = std::copysign(1e-3, v);
    switch (dt) {
        case MLA_FLOAT32: return double(float(v));
        case MLA_BFLOAT16: return bf16_round(double(float(v)));
        case MLA_FLOAT16: return f16_round(double(float(v)));
        default: return v;
    }
}

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
        std::vector<uint8_t> out(static_cast<size_t>((tokens * d + 4) * dsize(out_dt)), 0xEE);
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
        bool tail = std::all_of(out.end() - 4 * dsize(out_dt), out.end(),
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

const char *dt_name(int32_t dt) {
    switch (dt) {
        case MLA_FLOAT32: return "f32";
        case MLA_FLOAT64: return "f64";
        case MLA_FLOAT16: return "f16";
        case MLA_BFLOAT16: return "bf16";
        case MLA_FP8_E4M3: return "fp8";
        default: return "?";
    }
}

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
    std::vector<uint8_t> out(static_cast<size_t>((n * h * d + 2) * dsize(rc.dt)), 0xA5);
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
    bool tail = out[out.size() - 1] == 0xA5 && out[out.size() - 2 * dsize(rc.dt)] == 0xA5;
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
