// Native GPU test of mla_kv_append (ops.md section 5, include/mla/mla.h): every case appends
// the same new tokens to the same poisoned cache (random bytes) on CUDA device 0 and through
// the CPU path, and the two caches must be equal byte for byte: the appended rows (PLAIN in
// every float dtype, V32 and MODEL1 quantised per tile) and every byte around them. Inputs mix
// random values of per-token amplitude with NaN (payloads included), infinities, signed zeros,
// subnormals and values beyond fp16's range. Then the device-side rules for what the host
// cannot check (requests that do not fit, bad block ids, two tokens on one slot) and the
// refusals. Without a CUDA device every case is skipped.
#include <mla/mla.h>
#include "test_buffers.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

namespace {

using mla_test::check;
using mla_test::g_failed;
using mla_test::g_passed;

using mla_test::dt_name;
using mla_test::elem_bytes;

const char *kind_name(int kind) {
    return kind == MLA_CACHE_V32 ? "V32" : kind == MLA_CACHE_MODEL1 ? "MODEL1" : "PLAIN";
}

// Stores v (a finite double of moderate size) at p in dtype dt, rounded to nearest.
void encode(double v, int dt, unsigned char *p) {
    if (dt == MLA_FLOAT64) {
        std::memcpy(p, &v, 8);
        return;
    }
    if (dt == MLA_FLOAT32) {
        const float f = float(v);
        std::memcpy(p, &f, 4);
        return;
    }
    const uint16_t h = dt == MLA_BFLOAT16 ? mla_test::bf16_bits(v) : mla_test::f16_bits(v);  // |v| < 65504
    std::memcpy(p, &h, 2);
}

// Bit patterns of special values per dtype: NaNs (quiet, signalling, with payloads, both
// signs), infinities, -0, the smallest subnormal, the largest finite, values past fp16 / fp8.
void special(int dt, int which, unsigned char *p) {
    static const uint64_t f64[] = {0x7ff8000000000000ull, 0xfff0000000000001ull,
                                   0x7ff4000000abcdefull, 0x7ff0000000000000ull,
                                   0xfff0000000000000ull, 0x8000000000000000ull,
                                   0x0000000000000001ull, 0x7fefffffffffffffull,
                                   0x40f0000000000000ull /* 65536 */};
    static const uint32_t f32[] = {0x7fc00000u, 0xffc00001u, 0x7f800001u, 0x7f800000u,
                                   0xff800000u, 0x80000000u, 0x00000001u, 0x7f7fffffu,
                                   0x47800000u /* 65536 */};
    static const uint16_t bf16[] = {0x7fc0, 0xffc1, 0x7f81, 0x7f80, 0xff80,
                                    0x8000, 0x0001, 0x7f7f, 0x4780 /* 65536 */};
    static const uint16_t f16[] = {0x7e00, 0xfe01, 0x7c01, 0x7c00, 0xfc00,
                                   0x8000, 0x0001, 0x7bff, 0x5fff /* 1023.5 */};
    which %= 9;
    switch (dt) {
        case MLA_FLOAT64: std::memcpy(p, &f64[which], 8); break;
        case MLA_FLOAT32: std::memcpy(p, &f32[which], 4); break;
        case MLA_BFLOAT16: std::memcpy(p, &bf16[which], 2); break;
        default: std::memcpy(p, &f16[which], 2); break;
    }
}

bool ok_or_report(mla_status st, const std::string &what) {
    return mla_test::ok_or_report(st, what.c_str());
}

using DevBuf = mla_test::DeviceBuffer;

// ---- random appends: device bytes == CPU bytes ---------------------------------------------

struct Case {
    std::string name;
    int kind = MLA_CACHE_PLAIN;
    int in_dt = MLA_FLOAT32, cache_dt = MLA_BFLOAT16;  // cache_dt: PLAIN only
    int64_t h_kv = 1, d_qk = 576;                      // PLAIN; FP8 kinds: d_qk from the layout
    int32_t d_nope = 0, d_rope = 0, tile = 0;          // FP8 layout (0: the kind's default)
    int64_t block_size = 64, n_new = 1;
    std::vector<int> seqlens;
    bool specials = true;
};

// The cache of a case: descriptor, bytes and the geometry the test needs.
struct CacheSetup {
    mla_cache cache;
    int64_t bytes = 0, num_blocks = 0, max_blocks = 0, table_stride = 0;
    std::vector<int32_t> table;
};

int64_t fp8_dims(const Case &cs) {
    if (cs.d_nope) return cs.d_nope + cs.d_rope;
    return cs.kind == MLA_CACHE_V32 ? 576 : 512;
}

// Every request gets its own shuffled blocks for all of its table row: no two slots coincide.
CacheSetup make_cache(const Case &cs, std::mt19937_64 &rng) {
    CacheSetup s;
    const int64_t b = int64_t(cs.seqlens.size()), bs = cs.block_size;
    int64_t need = 1;
    for (int len : cs.seqlens) need = std::max<int64_t>(need, (len + cs.n_new + bs - 1) / bs);
    s.max_blocks = need + 1;
    s.table_stride = s.max_blocks + 2;
    s.num_blocks = b * s.max_blocks + 3;
    std::vector<int32_t> ids(static_cast<size_t>(s.num_blocks));
    for (int64_t i = 0; i < s.num_blocks; ++i) ids[size_t(i)] = int32_t(i);
    std::shuffle(ids.begin(), ids.end(), rng);
    s.table.assign(size_t(std::max<int64_t>(b * s.table_stride, 1)), -7);
    for (int64_t i = 0; i < b; ++i)
        for (int64_t k = 0; k < s.max_blocks; ++k)
            s.table[size_t(i * s.table_stride + k)] = ids[size_t(i * s.max_blocks + k)];
    std::memset(&s.cache, 0, sizeof s.cache);
    s.cache.kind = cs.kind;
    s.cache.num_blocks = s.num_blocks;
    s.cache.block_size = bs;
    s.cache.h_kv = cs.kind == MLA_CACHE_PLAIN ? cs.h_kv : 1;
    if (cs.kind == MLA_CACHE_PLAIN) {
        s.cache.dtype = cs.cache_dt;
        s.cache.head_stride = cs.d_qk + 3;
        s.cache.token_stride = cs.h_kv * s.cache.head_stride + 5;
        s.cache.block_stride = bs * s.cache.token_stride + 7;
        s.bytes = s.num_blocks * s.cache.block_stride * elem_bytes(cs.cache_dt);
    } else {
        s.cache.d_nope = cs.d_nope;
        s.cache.d_rope = cs.d_rope;
        s.cache.tile = cs.tile;
        s.bytes = s.num_blocks * mla_cache_block_bytes(cs.kind, bs, cs.d_nope, cs.d_rope, cs.tile);
    }
    return s;
}

void run_case(const Case &cs, uint64_t seed, void *stream) {
    std::mt19937_64 rng(seed);
    std::uniform_real_distribution<double> uni(-1.0, 1.0);
    const int64_t b = int64_t(cs.seqlens.size()), n_new = cs.n_new;
    const int64_t d_qk = cs.kind == MLA_CACHE_PLAIN ? cs.d_qk : fp8_dims(cs);
    const int64_t heads = cs.kind == MLA_CACHE_PLAIN ? cs.h_kv : 1;
    CacheSetup s = make_cache(cs, rng);

    // Poisoned cache: random bytes everywhere.
    std::vector<unsigned char> cache(static_cast<size_t>(s.bytes));
    for (auto &x : cache) x = static_cast<unsigned char>(rng());

    // new_kv [b, n_new, heads, d_qk] with padded strides; per token an amplitude 10^[-3, 3).
    const int64_t es = elem_bytes(cs.in_dt);
    const int64_t st1 = heads * d_qk + 4, st0 = n_new * st1 + 6;
    std::vector<unsigned char> new_kv(static_cast<size_t>(std::max<int64_t>(b * st0, 1) * es));
    for (auto &x : new_kv) x = static_cast<unsigned char>(rng());  // gaps: never read
    for (int64_t i = 0; i < b; ++i)
        for (int64_t j = 0; j < n_new; ++j) {
            const double amp = std::pow(10.0, 3.0 * uni(rng));
            const bool f16_in = cs.in_dt == MLA_FLOAT16;
            for (int64_t e = 0; e < heads * d_qk; ++e) {
                unsigned char *p = new_kv.data() + (i * st0 + j * st1 + e) * es;
                if (cs.specials && rng() % 50 == 0)
                    special(cs.in_dt, int(rng() % 9), p);
                else
                    encode(std::min(amp, f16_in ? 60000.0 : amp) * uni(rng), cs.in_dt, p);
            }
        }
    std::vector<int32_t> seqlens(cs.seqlens.begin(), cs.seqlens.end());

    mla_append_params p;
    std::memset(&p, 0, sizeof p);
    p.dtype = cs.in_dt;
    p.b = b;
    p.n_new = n_new;
    p.d_qk = d_qk;
    p.new_kv = new_kv.data();
    p.new_kv_stride[0] = st0;
    p.new_kv_stride[1] = st1;
    p.cache = s.cache;
    p.block_table = s.table.data();
    p.max_blocks_per_seq = s.max_blocks;
    p.block_table_stride = s.table_stride;
    p.cache_seqlens = seqlens.data();

    std::vector<unsigned char> want = cache;
    p.cache.data = want.data();
    p.exec.device = -1;
    if (!ok_or_report(mla_kv_append(&p), cs.name + ": CPU append")) return;
    int64_t changed = 0;
    for (size_t i = 0; i < want.size(); ++i) changed += want[i] != cache[i];

    DevBuf dcache, dkv, dtable, dlens;
    if (!dcache.upload(cache.data(), s.bytes) ||
        !dkv.upload(new_kv.data(), int64_t(new_kv.size())) ||
        !dtable.upload(s.table.data(), int64_t(s.table.size() * 4)) ||
        !dlens.upload(seqlens.data(), int64_t(std::max<size_t>(seqlens.size(), 1) * 4)))
        return;
    mla_append_params g = p;
    g.new_kv = dkv.ptr;
    g.cache.data = dcache.ptr;
    g.block_table = static_cast<const int32_t *>(dtable.ptr);
    g.cache_seqlens = static_cast<const int32_t *>(dlens.ptr);
    g.exec.device = 0;
    g.exec.stream = stream;
    if (!ok_or_report(mla_kv_append(&g), cs.name + ": GPU append")) return;
    if (!ok_or_report(mla_cuda_stream_synchronize(stream), cs.name + ": stream sync")) return;
    std::vector<unsigned char> got(cache.size());
    if (!dcache.download(got.data())) return;
    int64_t differ = 0, first = -1;
    for (size_t i = 0; i < got.size(); ++i)
        if (got[i] != want[i]) {
            if (first < 0) first = int64_t(i);
            ++differ;
        }
    const bool ok = differ == 0 && (b * n_new == 0 || changed > 0);
    check(ok, "%s: %lld of %lld cache bytes differ from the CPU append (first at %lld: GPU "
          "0x%02x, CPU 0x%02x); the CPU append changed %lld", cs.name.c_str(), (long long)differ,
          (long long)got.size(), (long long)first, first >= 0 ? got[size_t(first)] : 0,
          first >= 0 ? want[size_t(first)] : 0, (long long)changed);
    std::printf("  %-64s %9lld bytes, %7lld written  %s\n", cs.name.c_str(), (long long)got.size(),
                (long long)changed, ok ? "ok" : "FAILED");
}

std::string describe(const Case &c) {
    std::string s = std::string(kind_name(c.kind)) + " " + dt_name(c.in_dt);
    if (c.kind == MLA_CACHE_PLAIN) {
        s += "->" + std::string(dt_name(c.cache_dt)) + " h_kv " + std::to_string(c.h_kv) +
             " d " + std::to_string(c.d_qk);
    } else if (c.d_nope) {
        s += " " + std::to_string(c.d_nope) + "+" + std::to_string(c.d_rope) + "/" +
             std::to_string(c.tile);
    }
    s += " bs " + std::to_string(c.block_size) + " n_new " + std::to_string(c.n_new) + " b " +
         std::to_string(c.seqlens.size());
    return s;
}

std::vector<Case> make_cases() {
    std::vector<Case> cases;
    std::mt19937 r(5);
    // Lengths that put the new tokens at block starts, ends and across block boundaries.
    auto lens = [&](int64_t bs, int64_t b) {
        std::vector<int> v;
        for (int64_t i = 0; i < b; ++i) {
            switch (i % 4) {
                case 0: v.push_back(int(r() % 200)); break;
                case 1: v.push_back(0); break;
                case 2: v.push_back(int(bs * (1 + r() % 3) - 1)); break;  // crosses a boundary
                default: v.push_back(int(bs * (1 + r() % 3))); break;     // a block start
            }
        }
        return v;
    };
    const int64_t bss[] = {1, 61, 64};
    // PLAIN: every pair of dtypes that matters, several heads, padded strides.
    const int plain[][2] = {{MLA_FLOAT32, MLA_BFLOAT16}, {MLA_BFLOAT16, MLA_BFLOAT16},
                            {MLA_FLOAT16, MLA_FLOAT16},  {MLA_FLOAT64, MLA_FLOAT32},
                            {MLA_FLOAT64, MLA_FLOAT64},  {MLA_BFLOAT16, MLA_FLOAT32},
                            {MLA_FLOAT32, MLA_FLOAT16},  {MLA_FLOAT64, MLA_BFLOAT16}};
    int k = 0;
    for (const auto &dt : plain) {
        Case c;
        c.in_dt = dt[0];
        c.cache_dt = dt[1];
        c.h_kv = 1 + k % 3;
        c.d_qk = k % 3 == 0 ? 576 : k % 3 == 1 ? 64 : 40;
        c.block_size = bss[k % 3];
        c.n_new = 1 + k % 4;
        c.seqlens = lens(c.block_size, 5 + k % 3);
        cases.push_back(c);
        ++k;
    }
    // FP8: default layouts from every input dtype, other layouts (rows of any byte size).
    const int ins[] = {MLA_FLOAT32, MLA_BFLOAT16, MLA_FLOAT64, MLA_FLOAT16};
    for (int kind : {MLA_CACHE_V32, MLA_CACHE_MODEL1})
        for (int i = 0; i < 4; ++i) {
            Case c;
            c.kind = kind;
            c.in_dt = ins[i];
            c.block_size = bss[(i + kind) % 3];
            c.n_new = 1 + (i + kind) % 4;
            c.seqlens = lens(c.block_size, 6);
            cases.push_back(c);
        }
    {
        Case c;
        c.kind = MLA_CACHE_V32;
        c.d_nope = 64;
        c.d_rope = 16;
        c.tile = 32;
        c.block_size = 61;
        c.n_new = 3;
        c.seqlens = lens(61, 5);
        cases.push_back(c);
        Case d = c;
        d.kind = MLA_CACHE_MODEL1;
        d.d_nope = 48;
        d.d_rope = 8;
        d.tile = 16;
        d.in_dt = MLA_BFLOAT16;
        d.block_size = 1;
        d.n_new = 2;
        d.seqlens = lens(1, 7);
        cases.push_back(d);
        Case e = c;
        e.d_nope = 24;
        e.d_rope = 2;
        e.tile = 3;  // tiles of 3 values, rows of 60 bytes
        e.block_size = 64;
        e.n_new = 4;
        e.seqlens = lens(64, 4);
        cases.push_back(e);
    }
    // Many requests (many CTAs), and nothing to append.
    {
        Case c;
        c.kind = MLA_CACHE_V32;
        c.n_new = 4;
        c.seqlens = lens(64, 200);
        cases.push_back(c);
        Case d;
        d.cache_dt = MLA_FLOAT16;
        d.in_dt = MLA_BFLOAT16;
        d.h_kv = 2;
        d.d_qk = 64;
        d.n_new = 1;
        d.seqlens = lens(64, 300);
        cases.push_back(d);
        Case e;
        e.kind = MLA_CACHE_MODEL1;
        e.n_new = 0;
        e.seqlens = {3, 5};
        cases.push_back(e);
    }
    for (auto &c : cases) c.name = describe(c);
    return cases;
}

// ---- what the device does with what the host cannot check -----------------------------------

// b = 6 requests of n_new = 3 tokens, block_size 4, table rows of 2 blocks (capacity 8):
//   0: fits                                -> written
//   1: cache_seqlens -1                     -> skipped
//   2: cache_seqlens 6 (6 + 3 > 8)          -> skipped
//   3: length 3, its second block id -1     -> token 0 written, tokens 1 and 2 skipped
//   4: length 1 in block A (slots 1, 2, 3)
//   5: length 3, first block also A         -> its token 0 (A, 3) meets request 4's token 2:
//                                              both skipped, the rest of 4 and 5 written
// Expected: the CPU append of each written token alone.
void test_device_rules(int kind, void *stream) {
    const char *name = kind_name(kind);
    const int64_t b = 6, n_new = 3, bs = 4, max_blocks = 2, nb = 12;
    const int64_t d_qk = kind == MLA_CACHE_PLAIN ? 40 : 24;
    std::vector<int32_t> table = {0, 1,   //
                                  2, 3,   //
                                  4, 5,   //
                                  6, -1,  //
                                  7, 8,   //
                                  7, 9};
    std::vector<int32_t> seqlens = {0, -1, 6, 3, 1, 3};
    const bool written[6][3] = {{true, true, true},   {false, false, false},
                                {false, false, false}, {true, false, false},
                                {true, true, false},  {false, true, true}};
    mla_cache c;
    std::memset(&c, 0, sizeof c);
    c.kind = kind;
    c.num_blocks = nb;
    c.block_size = bs;
    c.h_kv = 1;
    int64_t bytes;
    if (kind == MLA_CACHE_PLAIN) {
        c.dtype = MLA_BFLOAT16;
        c.head_stride = d_qk;
        c.token_stride = d_qk;
        c.block_stride = bs * d_qk;
        bytes = nb * bs * d_qk * 2;
    } else {
        c.d_nope = 16;
        c.d_rope = 8;
        c.tile = 8;
        bytes = nb * mla_cache_block_bytes(kind, bs, 16, 8, 8);
    }
    std::mt19937_64 rng(77);
    std::uniform_real_distribution<float> uni(-5.f, 5.f);
    std::vector<unsigned char> cache(static_cast<size_t>(bytes));
    for (auto &x : cache) x = static_cast<unsigned char>(rng());
    std::vector<float> kv(static_cast<size_t>(b * n_new * d_qk));
    for (auto &v : kv) v = uni(rng);

    std::vector<unsigned char> want = cache;
    for (int64_t i = 0; i < b; ++i)
        for (int64_t j = 0; j < n_new; ++j) {
            if (!written[i][j]) continue;
            const int32_t len = seqlens[size_t(i)] + int32_t(j);
            mla_append_params one;
            std::memset(&one, 0, sizeof one);
            one.dtype = MLA_FLOAT32;
            one.b = 1;
            one.n_new = 1;
            one.d_qk = d_qk;
            one.new_kv = kv.data() + (i * n_new + j) * d_qk;
            one.new_kv_stride[0] = one.new_kv_stride[1] = d_qk;
            one.cache = c;
            one.cache.data = want.data();
            one.block_table = table.data() + i * max_blocks;
            one.max_blocks_per_seq = max_blocks;
            one.block_table_stride = max_blocks;
            one.cache_seqlens = &len;
            one.exec.device = -1;
            if (!ok_or_report(mla_kv_append(&one), std::string(name) + ": CPU single append"))
                return;
        }

    DevBuf dcache, dkv, dtable, dlens;
    if (!dcache.upload(cache.data(), bytes) ||
        !dkv.upload(kv.data(), int64_t(kv.size() * 4)) ||
        !dtable.upload(table.data(), int64_t(table.size() * 4)) ||
        !dlens.upload(seqlens.data(), int64_t(seqlens.size() * 4)))
        return;
    mla_append_params p;
    std::memset(&p, 0, sizeof p);
    p.dtype = MLA_FLOAT32;
    p.b = b;
    p.n_new = n_new;
    p.d_qk = d_qk;
    p.new_kv = dkv.ptr;
    p.new_kv_stride[0] = n_new * d_qk;
    p.new_kv_stride[1] = d_qk;
    p.cache = c;
    p.cache.data = dcache.ptr;
    p.block_table = static_cast<const int32_t *>(dtable.ptr);
    p.max_blocks_per_seq = max_blocks;
    p.block_table_stride = max_blocks;
    p.cache_seqlens = static_cast<const int32_t *>(dlens.ptr);
    p.exec.device = 0;
    p.exec.stream = stream;
    mla_status st = mla_kv_append(&p);
    check(st == MLA_OK, "%s device rules: expected MLA_OK, got %d (%s)", name, st,
          mla_last_error());
    if (st != MLA_OK || !ok_or_report(mla_cuda_stream_synchronize(stream), "stream sync")) return;
    std::vector<unsigned char> got(cache.size());
    if (!dcache.download(got.data())) return;
    int64_t differ = 0;
    for (size_t i = 0; i < got.size(); ++i) differ += got[i] != want[i];
    check(differ == 0, "%s device rules: %lld cache bytes differ from the expected appends",
          name, (long long)differ);
    std::printf("  %-64s %s\n", (std::string(name) + ": device rules (skips)").c_str(),
                differ == 0 ? "ok" : "FAILED");

    // Refusals before any launch: the cache stays as it was.
    std::vector<unsigned char> before = got;
    auto expect = [&](mla_status want_st, const mla_append_params &q, const char *what) {
        const mla_status s2 = mla_kv_append(&q);
        check(s2 == want_st && (want_st == MLA_OK || std::strlen(mla_last_error()) > 0),
              "%s %s: expected status %d with a message, got %d (%s)", name, what, want_st, s2,
              mla_last_error());
    };
    mla_append_params q = p;
    q.new_kv = kv.data();  // plain host memory
    expect(MLA_ERR_INVALID_ARGUMENT, q, "new_kv in host memory");
    q = p;
    q.exec.device = 99;
    expect(MLA_ERR_INVALID_ARGUMENT, q, "exec.device 99");
    q = p;
    q.dtype = MLA_INT32;
    expect(MLA_ERR_INVALID_ARGUMENT, q, "int32 new_kv");
    q = p;
    q.d_qk = d_qk + 2;
    if (kind != MLA_CACHE_PLAIN) expect(MLA_ERR_INVALID_ARGUMENT, q, "d_qk not the layout's");
    q = p;
    q.cache_seqlens = nullptr;
    expect(MLA_ERR_INVALID_ARGUMENT, q, "null cache_seqlens");
    q = p;
    q.n_new = 0;
    expect(MLA_OK, q, "zero tokens");
    if (!ok_or_report(mla_cuda_stream_synchronize(stream), "stream sync")) return;
    if (!dcache.download(got.data())) return;
    check(got == before, "%s: refused calls and an empty append must leave the cache unchanged",
          name);
}

}  // namespace

int main() {
    const std::vector<Case> cases = make_cases();
    const int n_tests = int(cases.size()) + 3 * 8;
    if (mla_cuda_device_count() == 0) {
        return mla_test::skip_without_device("test_gpu_kv_append", n_tests);
    }
    void *stream = nullptr;
    if (!mla_test::open_device("test_gpu_kv_append", &stream)) return 1;
    uint64_t seed = 500;
    for (const Case &c : cases) run_case(c, seed++, stream);
    for (int kind : {MLA_CACHE_PLAIN, MLA_CACHE_V32, MLA_CACHE_MODEL1})
        test_device_rules(kind, stream);
    mla_cuda_stream_destroy(stream);
    std::printf("%d passed, %d failed\n", g_passed, g_failed);
    return g_failed ? 1 : 0;
}
