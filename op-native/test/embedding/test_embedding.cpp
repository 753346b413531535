// Native tests of the embedding lookup (ops.md section 9): the forward against a direct copy
// of the chosen rows, the backward against a float64 scatter-add written here, refused ids.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>
#include "mla/mla.h"
#include "test_support.h"

namespace {

using mla_test::check;
using mla_test::g_failed;
using mla_test::g_passed;

std::mt19937_64 rng(20261203);

mla_exec cpu(int threads) {
    mla_exec e{};
    e.device = -1;
    e.num_threads = threads;
    return e;
}

// Values in {-4, -3.5, ..., 4}: exact in every float type, and so are sums of a few of them, so
// bfloat16 and float16 results can be compared exactly.
double half_step() { return 0.5 * double(std::uniform_int_distribution<int>(-8, 8)(rng)); }

// A buffer of n elements of dtype holding `values` (exactly representable, see half_step).
std::vector<uint8_t> encode(const std::vector<double> &values, int32_t dt) {
    size_t es = dt == MLA_FLOAT64 ? 8 : dt == MLA_FLOAT32 ? 4 : 2;
    std::vector<uint8_t> out(values.size() * es);
    for (size_t i = 0; i < values.size(); ++i) {
        double v = values[i];
        if (dt == MLA_FLOAT64) {
            std::memcpy(&out[i * 8], &v, 8);
        } else if (dt == MLA_FLOAT32 || dt == MLA_BFLOAT16) {
            float f = float(v);
            uint32_t u;
            std::memcpy(&u, &f, 4);
            if (dt == MLA_FLOAT32) std::memcpy(&out[i * 4], &u, 4);
            else { uint16_t h = uint16_t(u >> 16); std::memcpy(&out[i * 2], &h, 2); }  // exact: low bits 0
        } else {  // float16 of a small multiple of 0.5: sign, exponent, 10-bit mantissa by hand
            uint16_t h = 0;
            if (v != 0) {
                int e;
                double m = std::frexp(std::fabs(v), &e);  // |v| = m 2^e, m in [0.5, 1)
                h = uint16_t(((e - 1 + 15) << 10) | uint16_t((m * 2 - 1) * 1024));
                if (v < 0) h |= 0x8000;
            }
            std::memcpy(&out[i * 2], &h, 2);
        }
    }
    return out;
}

std::vector<double> decode(const std::vector<uint8_t> &bytes, int32_t dt) {
    size_t es = dt == MLA_FLOAT64 ? 8 : dt == MLA_FLOAT32 ? 4 : 2;
    std::vector<double> out(bytes.size() / es);
    for (size_t i = 0; i < out.size(); ++i) {
        if (dt == MLA_FLOAT64) {
            std::memcpy(&out[i], &bytes[i * 8], 8);
        } else if (dt == MLA_FLOAT32) {
            float f;
            std::memcpy(&f, &bytes[i * 4], 4);
            out[i] = f;
        } else if (dt == MLA_BFLOAT16) {
            uint16_t h;
            std::memcpy(&h, &bytes[i * 2], 2);
            uint32_t u = uint32_t(h) << 16;
            float f;
            std::memcpy(&f, &u, 4);
            out[i] = f;
        } else {
            uint16_t h;
            std::memcpy(&h, &bytes[i * 2], 2);
            int e = (h >> 10) & 31, m = h & 1023;
            double v = e == 0 ? std::ldexp(m, -24) : std::ldexp(1024 + m, e - 25);
            out[i] = (h & 0x8000) ? -v : v;
        }
    }
    return out;
}

const char *name(int32_t dt) {
    return dt == MLA_FLOAT64 ? "f64" : dt == MLA_FLOAT32 ? "f32" : dt == MLA_BFLOAT16 ? "bf16" : "f16";
}

// vocab rows of `stride` elements (dim used); ids with repeats; a thread count.
void test_case(int32_t dt, int64_t vocab, int64_t dim, int64_t stride, int64_t n, int threads) {
    std::vector<double> table(size_t(vocab * stride)), dout(size_t(n * dim));
    for (double &v : table) v = half_step();
    for (double &v : dout) v = half_step();
    std::vector<int32_t> ids(static_cast<size_t>(n));
    for (int32_t &id : ids) id = int32_t(std::uniform_int_distribution<int64_t>(0, vocab / 2)(rng));  // repeats
    std::vector<uint8_t> tb = encode(table, dt), db = encode(dout, dt);
    std::vector<uint8_t> ob = encode(std::vector<double>(size_t(n * dim), 99.0), dt);       // poison
    std::vector<uint8_t> gb = encode(std::vector<double>(size_t(vocab * dim), 99.0), dt);   // poison

    mla_embedding_params p{};
    p.dtype = dt;
    p.n = n;
    p.vocab = vocab;
    p.dim = dim;
    p.table = tb.data();
    p.table_stride = stride;
    p.indices = ids.data();
    p.out = ob.data();
    p.dout = db.data();
    p.dtable = gb.data();
    p.exec = cpu(threads);

    mla_status st = mla_embedding_fwd(&p);
    check(st == MLA_OK, "embedding_fwd %s: status %d (%s)", name(dt), int(st), mla_last_error());
    std::vector<double> out = decode(ob, dt);
    int64_t bad = 0;
    for (int64_t i = 0; i < n; ++i)
        for (int64_t j = 0; j < dim; ++j)
            if (out[size_t(i * dim + j)] != table[size_t(ids[size_t(i)] * stride + j)]) ++bad;
    check(bad == 0, "embedding_fwd %s vocab %lld dim %lld n %lld: %lld values differ from the table rows",
          name(dt), (long long)vocab, (long long)dim, (long long)n, (long long)bad);

    st = mla_embedding_bwd(&p);
    check(st == MLA_OK, "embedding_bwd %s: status %d (%s)", name(dt), int(st), mla_last_error());
    std::vector<double> want(size_t(vocab * dim), 0.0);
    for (int64_t i = 0; i < n; ++i)
        for (int64_t j = 0; j < dim; ++j) want[size_t(ids[size_t(i)] * dim + j)] += dout[size_t(i * dim + j)];
    std::vector<double> got = decode(gb, dt);
    bad = 0;
    for (size_t k = 0; k < want.size(); ++k)
        if (got[k] != want[k]) ++bad;
    check(bad == 0, "embedding_bwd %s vocab %lld dim %lld n %lld threads %d: %lld values differ from the "
          "scatter-add", name(dt), (long long)vocab, (long long)dim, (long long)n, threads, (long long)bad);
}

void test_refusals() {
    std::vector<float> table(4 * 3, 1.0f), out(2 * 3, 7.0f);
    std::vector<int32_t> ids = {1, 4};
    mla_embedding_params p{};
    p.dtype = MLA_FLOAT32;
    p.n = 2;
    p.vocab = 4;
    p.dim = 3;
    p.table = table.data();
    p.table_stride = 3;
    p.indices = ids.data();
    p.out = out.data();
    p.exec = cpu(0);
    mla_status st = mla_embedding_fwd(&p);
    check(st == MLA_ERR_INVALID_ARGUMENT && std::strstr(mla_last_error(), "indices[1]") &&
          std::strstr(mla_last_error(), "got 4"),
          "id 4 of vocab 4: expected INVALID_ARGUMENT naming indices[1], got %d '%s'", int(st), mla_last_error());
    check(out[0] == 7.0f && out[5] == 7.0f, "a refused lookup must write nothing");
    ids[1] = -1;
    st = mla_embedding_fwd(&p);
    check(st == MLA_ERR_INVALID_ARGUMENT, "id -1: expected INVALID_ARGUMENT, got %d", int(st));
    ids[1] = 2;
    p.table_stride = 2;
    st = mla_embedding_fwd(&p);
    check(st == MLA_ERR_INVALID_ARGUMENT && std::strstr(mla_last_error(), "table_stride"),
          "table_stride < dim: expected INVALID_ARGUMENT, got %d '%s'", int(st), mla_last_error());
    p.table_stride = 3;
    p.dtype = MLA_INT32;
    st = mla_embedding_fwd(&p);
    check(st == MLA_ERR_INVALID_ARGUMENT && std::strstr(mla_last_error(), "dtype"),
          "int32 table: expected INVALID_ARGUMENT, got %d '%s'", int(st), mla_last_error());
    p.dtype = MLA_FLOAT32;
    p.dtable = nullptr;
    st = mla_embedding_bwd(&p);
    check(st == MLA_ERR_INVALID_ARGUMENT && std::strstr(mla_last_error(), "dout"),
          "backward without dout: expected INVALID_ARGUMENT naming dout, got %d '%s'", int(st), mla_last_error());
    p.exec.device = 0;
    st = mla_embedding_fwd(&p);
    check(st == MLA_ERR_UNSUPPORTED, "device 0: expected UNSUPPORTED, got %d", int(st));
}

}  // namespace

int main() {
    for (int32_t dt : {MLA_FLOAT32, MLA_FLOAT64, MLA_BFLOAT16, MLA_FLOAT16}) {
        test_case(dt, 11, 5, 5, 23, 0);
        test_case(dt, 300, 64, 70, 500, 2);   // strided table, several workers
    }
    test_case(MLA_FLOAT32, 1, 3, 3, 9, 1);    // one row, every id the same
    test_case(MLA_FLOAT32, 7, 4, 4, 0, 0);    // no ids: a zero gradient
    test_refusals();
    std::printf("%d passed, %d failed\n", g_passed, g_failed);
    return g_failed ? 1 : 0;
}
