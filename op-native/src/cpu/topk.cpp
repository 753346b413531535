// Top-k selection (ops.md section 6): descending scores, ties to the lower index, -inf and
// NaN never chosen, -1 where fewer than k entries remain. The method is described in
// cpu/topk_row.h; the key transform, the bucket numbers and the compaction are vectorised (an
// AVX2 copy chosen at run time, common/cpu_features.h).
#include "cpu/topk_row.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include "common/cpu_features.h"
#include "common/parallel.h"
#include "cpu/misc_kernels.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define MLA_TOPK_X86 1
#endif

namespace mla {
namespace cpu {

namespace {

#define MLA_TOPK_INLINE inline __attribute__((always_inline))

// Key of a score that is never chosen (NaN, -inf): above every other key.
constexpr uint32_t kNoKey = 0xffffffffu;
// Spare entries after every buffer: the compaction stores whole vectors.
constexpr int64_t kPad = 8;
// Runs of at most this many entries are sorted by insertion.
constexpr int64_t kInsertionSort = 16;
// Bucket numbers of a counting pass have at most this many bits.
constexpr int kMaxDigitBits = 11;

// Unsigned order of the key = descending order of the score; -0 and +0 map to one key.
inline uint32_t score_key(float f) {
    if (!(f > -INFINITY)) return kNoKey;  // NaN, -inf
    float g = f + 0.0f;                   // -0 -> +0
    uint32_t u;
    std::memcpy(&u, &g, 4);
    return u ^ (uint32_t(~(int32_t(u) >> 31)) & 0x7fffffffu);
}

// An entry: key in the high half, index in the low half, so that the order of entries is the
// order of the output (score descending, then index ascending) and all entries differ.
inline uint64_t entry(uint32_t key, int32_t index) {
    return uint64_t(key) << 32 | uint32_t(index);
}

inline uint32_t entry_key(uint64_t e) { return uint32_t(e >> 32); }

// ---- vector pieces -------------------------------------------------------------------------

template <int VB>
struct Vec {
    typedef float F __attribute__((vector_size(VB)));
    typedef int32_t I __attribute__((vector_size(VB)));
    typedef uint32_t U __attribute__((vector_size(VB)));
    static constexpr int N = VB / 4;
};

template <typename V>
MLA_TOPK_INLINE void vload(V &v, const void *p) {
    __builtin_memcpy(&v, p, sizeof v);
}

template <typename V>
MLA_TOPK_INLINE void vstore(void *p, const V &v) {
    __builtin_memcpy(p, &v, sizeof v);
}

// key[i] = score_key(scores[i]) for n > 0 scores; returns how many are not kNoKey, and the
// least and the largest of those in *lo, *hi.
template <int VB>
MLA_TOPK_INLINE int64_t make_keys_impl(const float *scores, int64_t n, uint32_t *key,
                                       uint32_t *lo, uint32_t *hi) {
    typedef typename Vec<VB>::F F;
    typedef typename Vec<VB>::I I;
    typedef typename Vec<VB>::U U;
    constexpr int N = Vec<VB>::N;
    I valid = {};
    U vlo = U{} + kNoKey, vhi = {};
    int64_t i = 0;
    for (; i + N <= n; i += N) {
        F f;
        vload(f, scores + i);
        I ok = f > -INFINITY;
        F g = f + 0.0f;
        U u = (U)g;
        U k = u ^ ((U) ~((I)u >> 31) & 0x7fffffffu);
        U kk = ok ? k : (U{} + kNoKey);
        vstore(key + i, kk);
        valid -= ok;
        vlo = kk < vlo ? kk : vlo;
        U kh = ok ? k : U{};
        vhi = kh > vhi ? kh : vhi;
    }
    int64_t count = 0;
    uint32_t l0 = kNoKey, h0 = 0;
    for (int l = 0; l < N; ++l) {
        count += valid[l];
        l0 = std::min(l0, uint32_t(vlo[l]));
        h0 = std::max(h0, uint32_t(vhi[l]));
    }
    for (; i < n; ++i) {
        uint32_t k = key[i] = score_key(scores[i]);
        if (k != kNoKey) {
            ++count;
            l0 = std::min(l0, k);
            h0 = std::max(h0, k);
        }
    }
    *lo = l0;
    *hi = h0;
    return count;
}

// out[i] = min((key[i] - lo) >> shift, top) for n keys (each key >= lo).
template <int VB>
MLA_TOPK_INLINE void bucket_ids_impl(const uint32_t *key, int64_t n, uint32_t lo, int shift,
                                     uint32_t top, uint32_t *out) {
    typedef typename Vec<VB>::U U;
    constexpr int N = Vec<VB>::N;
    int64_t i = 0;
    for (; i + N <= n; i += N) {
        U k;
        vload(k, key + i);
        U b = (k - lo) >> shift;
        vstore(out + i, b < top ? b : (U{} + top));
    }
    for (; i < n; ++i) out[i] = std::min((key[i] - lo) >> shift, top);
}

#ifdef MLA_TOPK_X86
// Lane permutations that move the lanes of a mask's set bits to the front, in order.
struct CompressTables {
    int32_t lanes8[256][8];  // AVX2: dword indices
    uint8_t bytes4[16][16];  // SSE: byte indices of 4 dwords
    CompressTables() {
        for (int m = 0; m < 256; ++m) {
            int c = 0;
            for (int l = 0; l < 8; ++l)
                if (m >> l & 1) lanes8[m][c++] = l;
            for (; c < 8; ++c) lanes8[m][c] = 0;
        }
        for (int m = 0; m < 16; ++m) {
            int c = 0;
            for (int l = 0; l < 4; ++l)
                if (m >> l & 1) {
                    for (int b = 0; b < 4; ++b) bytes4[m][4 * c + b] = uint8_t(4 * l + b);
                    ++c;
                }
            for (; c < 4; ++c)
                for (int b = 0; b < 4; ++b) bytes4[m][4 * c + b] = uint8_t(b);
        }
    }
};
const CompressTables compress_tables;

// Appends the entries (key[l], index[l]) of the lanes l whose mask bit is set to dst, in
// lane order (whole-vector stores); returns how many.
template <int VB>
int append_entries(const typename Vec<VB>::U &key, const typename Vec<VB>::U &index, int bits,
                   uint64_t *dst);

template <>
MLA_TOPK_INLINE int append_entries<16>(const Vec<16>::U &key, const Vec<16>::U &index, int bits,
                                       uint64_t *dst) {
    __m128i perm = _mm_loadu_si128(reinterpret_cast<const __m128i *>(compress_tables.bytes4[bits]));
    __m128i k = _mm_shuffle_epi8((__m128i)key, perm), ix = _mm_shuffle_epi8((__m128i)index, perm);
    _mm_storeu_si128(reinterpret_cast<__m128i *>(dst), _mm_unpacklo_epi32(ix, k));
    _mm_storeu_si128(reinterpret_cast<__m128i *>(dst + 2), _mm_unpackhi_epi32(ix, k));
    return __builtin_popcount(unsigned(bits));
}

// (Not always_inline: see pack_codes in common/fp8_encode.cpp.)
template <>
inline MLA_TARGET_AVX2 int append_entries<32>(const Vec<32>::U &key, const Vec<32>::U &index,
                                              int bits, uint64_t *dst) {
    __m256i perm = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(compress_tables.lanes8[bits]));
    __m256i k = _mm256_permutevar8x32_epi32((__m256i)key, perm);
    __m256i ix = _mm256_permutevar8x32_epi32((__m256i)index, perm);
    __m256i lo = _mm256_unpacklo_epi32(ix, k), hi = _mm256_unpackhi_epi32(ix, k);  // 0 1 4 5, 2 3 6 7
    _mm256_storeu_si256(reinterpret_cast<__m256i *>(dst), _mm256_permute2x128_si256(lo, hi, 0x20));
    _mm256_storeu_si256(reinterpret_cast<__m256i *>(dst + 4), _mm256_permute2x128_si256(lo, hi, 0x31));
    return __builtin_popcount(unsigned(bits));
}

template <int VB>
int lane_bits(const typename Vec<VB>::I &m);

template <>
MLA_TOPK_INLINE int lane_bits<16>(const Vec<16>::I &m) {
    return _mm_movemask_ps((__m128)m);
}

template <>
inline MLA_TARGET_AVX2 int lane_bits<32>(const Vec<32>::I &m) {
    return _mm256_movemask_ps((__m256)m);
}
#endif

// Entries i in [0, n) with key[i] in [lo, lo + win_width) go to win, those with key[i] in
// [lo + win_width, lo + win_width + c_width) to cand, both in index order; returns their
// counts in *nw, *nc.
template <int VB>
MLA_TOPK_INLINE void split_impl(const uint32_t *key, int64_t n, uint32_t lo, uint32_t win_width,
                                uint32_t c_width, uint64_t *win, int64_t *nw, uint64_t *cand,
                                int64_t *nc) {
    int64_t w = 0, c = 0, i = 0;
    const uint32_t c_lo = lo + win_width;
#ifdef MLA_TOPK_X86
    typedef typename Vec<VB>::I I;
    typedef typename Vec<VB>::U U;
    constexpr int N = Vec<VB>::N;
    U index;
    for (int l = 0; l < N; ++l) index[l] = uint32_t(l);
    for (; i + N <= n; i += N, index += uint32_t(N)) {
        U k;
        vload(k, key + i);
        I in_w = (k - lo) < win_width;
        I in_c = (k - c_lo) < c_width;
        // Both appends always (an empty one stores and counts nothing): a branch on "any
        // lane" would be mispredicted often.
        w += append_entries<VB>(k, index, lane_bits<VB>(in_w), win + w);
        c += append_entries<VB>(k, index, lane_bits<VB>(in_c), cand + c);
    }
#endif
    for (; i < n; ++i) {
        uint32_t k = key[i];
        win[w] = cand[c] = entry(k, int32_t(i));
        w += (k - lo) < win_width;
        c += (k - c_lo) < c_width;
    }
    *nw = w;
    *nc = c;
}

#ifdef MLA_HAVE_AVX2_PATH
MLA_TARGET_AVX2 int64_t make_keys_avx2(const float *scores, int64_t n, uint32_t *key,
                                       uint32_t *lo, uint32_t *hi) {
    return make_keys_impl<32>(scores, n, key, lo, hi);
}

MLA_TARGET_AVX2 void bucket_ids_avx2(const uint32_t *key, int64_t n, uint32_t lo, int shift,
                                     uint32_t top, uint32_t *out) {
    bucket_ids_impl<32>(key, n, lo, shift, top, out);
}

MLA_TARGET_AVX2 void split_avx2(const uint32_t *key, int64_t n, uint32_t lo, uint32_t win_width,
                                uint32_t c_width, uint64_t *win, int64_t *nw, uint64_t *cand,
                                int64_t *nc) {
    split_impl<32>(key, n, lo, win_width, c_width, win, nw, cand, nc);
}
#endif

int64_t make_keys(const float *scores, int64_t n, uint32_t *key, uint32_t *lo, uint32_t *hi) {
#ifdef MLA_HAVE_AVX2_PATH
    if (cpu_uses_avx2()) return make_keys_avx2(scores, n, key, lo, hi);
#endif
    return make_keys_impl<16>(scores, n, key, lo, hi);
}

void bucket_ids(const uint32_t *key, int64_t n, uint32_t lo, int shift, uint32_t top,
                uint32_t *out) {
#ifdef MLA_HAVE_AVX2_PATH
    if (cpu_uses_avx2()) return bucket_ids_avx2(key, n, lo, shift, top, out);
#endif
    bucket_ids_impl<16>(key, n, lo, shift, top, out);
}

void split(const uint32_t *key, int64_t n, uint32_t lo, uint32_t win_width, uint32_t c_width,
           uint64_t *win, int64_t *nw, uint64_t *cand, int64_t *nc) {
#ifdef MLA_HAVE_AVX2_PATH
    if (cpu_uses_avx2()) return split_avx2(key, n, lo, win_width, c_width, win, nw, cand, nc);
#endif
    split_impl<16>(key, n, lo, win_width, c_width, win, nw, cand, nc);
}

// ---- selection and sort --------------------------------------------------------------------

// Buckets of a counting pass over keys in [lo, hi] (hi > lo): bucket (key - lo) >> shift,
// 2^bits of them, about `per` keys each for a run of n.
struct Digits {
    int shift, bits;
};

Digits digits_for(uint32_t lo, uint32_t hi, int64_t n, int64_t per) {
    int span = 32 - __builtin_clz(hi - lo);  // bits of hi - lo
    int want = 1;
    while (want < kMaxDigitBits && (int64_t(1) << want) * per < n) ++want;
    int bits = std::min(span, want);
    return Digits{span - bits, bits};
}

// The bucket that holds the m-th smallest key (1 <= m <= total of counts); *below = entries
// in lower buckets.
uint32_t find_bucket(const uint32_t *count, int64_t m, int64_t *below) {
    int64_t cum = 0;
    uint32_t b = 0;
    for (;; ++b) {
        if (cum + count[b] >= m) break;
        cum += count[b];
    }
    *below = cum;
    return b;
}

void insertion_sort(uint64_t *a, int64_t n) {
    for (int64_t i = 1; i < n; ++i) {
        uint64_t v = a[i];
        int64_t j = i;
        for (; j > 0 && a[j - 1] > v; --j) a[j] = a[j - 1];
        a[j] = v;
    }
}

// Sorts the `want` smallest entries of a[0, n) into a[0, want) (1 <= want <= n; what
// a[want, n) holds afterwards is unspecified, stale copies included). Every key lies in
// [lo, hi]. (tmp, id): scratch of n entries. A counting pass spreads the run over about n
// buckets of [lo, hi] (most then hold one entry or none, so the final insertion pass rarely
// moves anything); buckets of more than kInsertionSort entries are sorted the same way (each
// level resolves at least 5 bits of the key, so the recursion is shallow), and one insertion
// pass orders the small ones.
void sort_entries(uint64_t *a, int64_t n, int64_t want, uint32_t lo, uint32_t hi, uint64_t *tmp,
                  uint16_t *id) {
    if (n <= kInsertionSort) {
        insertion_sort(a, n);
        return;
    }
    if (lo == hi) {  // one key: by index (the entries may have left index order)
        insertion_sort(a, n);
        return;
    }
    Digits dg = digits_for(lo, hi, n, 1);
    uint32_t buckets = 1u << dg.bits;
    uint32_t pos[size_t(1) << kMaxDigitBits];  // counts, then where each bucket goes
    std::memset(pos, 0, buckets * 4);
    for (int64_t i = 0; i < n; ++i) id[i] = uint16_t((entry_key(a[i]) - lo) >> dg.shift);
    for (int64_t i = 0; i < n; ++i) ++pos[id[i]];
    int64_t below = 0;
    uint32_t last = want < n ? find_bucket(pos, want, &below) : buckets - 1;
    // Only the buckets up to `last` are wanted: an entry of a later bucket is written to the
    // slot after them and not counted. Large buckets are noted for a sort of their own.
    uint32_t big[64];
    int n_big = 0;
    bool overflow = false;
    uint32_t sum = 0;
    for (uint32_t b = 0; b <= last; ++b) {
        uint32_t c = pos[b];
        pos[b] = sum;
        sum += c;
        if (c > uint32_t(kInsertionSort)) {
            if (n_big < 64)
                big[n_big++] = b;
            else
                overflow = true;
        }
    }
    for (uint32_t b = last + 1; b < buckets; ++b) pos[b] = sum;
    const uint32_t kept = sum;
    if (last == buckets - 1) {
        for (int64_t i = 0; i < n; ++i) tmp[pos[id[i]]++] = a[i];
    } else {
        for (int64_t i = 0; i < n; ++i) {
            uint32_t b = id[i], p = pos[b];
            tmp[p] = a[i];
            pos[b] = p + (b <= last);
        }
    }
    std::memcpy(a, tmp, size_t(kept) * 8);
    // pos[b] is now the end of bucket b.
    auto sort_bucket = [&](uint32_t b) {
        uint32_t start = b ? pos[b - 1] : 0;
        uint64_t b_lo = uint64_t(lo) + (uint64_t(b) << dg.shift);
        uint64_t b_hi = std::min<uint64_t>(hi, b_lo + (uint64_t(1) << dg.shift) - 1);
        sort_entries(a + start, pos[b] - start, std::min<int64_t>(pos[b] - start, want - start),
                     uint32_t(b_lo), uint32_t(b_hi), tmp, id);
    };
    if (overflow) {  // (many large buckets: visit all)
        for (uint32_t b = 0; b <= last; ++b)
            if (pos[b] - (b ? pos[b - 1] : 0) > uint32_t(kInsertionSort)) sort_bucket(b);
    } else {
        for (int j = 0; j < n_big; ++j) sort_bucket(big[j]);
    }
    // An entry of a small bucket is now at most kInsertionSort places from where it belongs.
    // A large last bucket was sorted up to `want` (its rest may hold stale copies): stop there.
    uint32_t last_start = last ? pos[last - 1] : 0;
    bool last_sorted = pos[last] - last_start > uint32_t(kInsertionSort);
    insertion_sort(a, last_sorted ? want : int64_t(kept));
}

// The m smallest entries of the row (1 <= m <= number of keys below kNoKey; lo, hi: the least
// and the largest of those keys) in order, into s.win[0, m).
void select_sorted(const uint32_t *key, int64_t n, int64_t m, uint32_t lo, uint32_t hi,
                   TopkScratch &s) {
    uint64_t *win = s.win.data(), *cand = s.cand.data();
    int64_t nw = 0, nc = 0;
    if (lo == hi) {  // every valid key is equal: the first m in index order
        split(key, n, lo, 1, 0, win, &nw, cand, &nc);
        return;
    }
    // One counting pass over the row finds the bucket of the m-th key: the lower buckets are
    // all chosen, that bucket's keys are candidates, the rest is dropped.
    Digits dg = digits_for(lo, hi, n, 2);
    uint32_t buckets = 1u << dg.bits;
    // Four partial counts, so that runs of equal buckets do not queue on one counter.
    uint32_t count[4][size_t(1) << kMaxDigitBits];
    for (auto &c : count) std::memset(c, 0, buckets * 4);
    // A kNoKey entry counts in the last bucket (its key is above hi), so that bucket is chosen
    // only when it holds the m-th valid key anyway.
    uint32_t *ids = s.bucket.data();
    bucket_ids(key, n, lo, dg.shift, buckets - 1, ids);
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) {
        ++count[0][ids[i]];
        ++count[1][ids[i + 1]];
        ++count[2][ids[i + 2]];
        ++count[3][ids[i + 3]];
    }
    for (; i < n; ++i) ++count[0][ids[i]];
    int64_t below = 0;
    uint32_t b = 0;
    for (;; ++b) {
        int64_t c = int64_t(count[0][b]) + count[1][b] + count[2][b] + count[3][b];
        if (below + c >= m) break;
        below += c;
    }
    uint32_t c_lo = lo + (b << dg.shift);
    split(key, n, lo, b << dg.shift, 1u << dg.shift, win, &nw, cand, &nc);
    // The candidate range ends past hi; when it reaches 2^32 it holds the kNoKey entries too,
    // which sort after the `need` chosen ones.
    uint64_t c_end = uint64_t(c_lo) + (uint64_t(1) << dg.shift) - 1;
    uint32_t c_hi = uint32_t(std::min<uint64_t>(c_end, kNoKey));
    int64_t need = m - nw;
    if (nw > 0) sort_entries(win, nw, nw, lo, c_lo - 1, s.tmp.data(), s.ids.data());
    sort_entries(cand, nc, need, c_lo, c_hi, s.tmp.data(), s.ids.data());
    std::memcpy(win + nw, cand, size_t(need) * 8);
}

}  // namespace

void TopkScratch::reserve(int64_t n) {
    size_t want = size_t(n + kPad);
    if (key.size() >= want) return;
    key.resize(want);
    bucket.resize(want);
    win.resize(want);
    cand.resize(want);
    tmp.resize(want);
    ids.resize(want);
}

void topk_row(const float *scores, int64_t n, int64_t k, TopkScratch &s, int32_t *indices,
              float *values) {
    s.reserve(n);
    uint32_t lo = 0, hi = 0;
    int64_t count = n > 0 ? make_keys(scores, n, s.key.data(), &lo, &hi) : 0;
    int64_t m = std::min(k, count);
    if (m > 0) {
        select_sorted(s.key.data(), n, m, lo, hi, s);
        const uint64_t *win = s.win.data();
        for (int64_t i = 0; i < m; ++i) indices[i] = int32_t(uint32_t(win[i]));  // the index half
    }
    for (int64_t i = std::max<int64_t>(m, 0); i < k; ++i) indices[i] = -1;
    if (values) {
        for (int64_t i = 0; i < m; ++i) values[i] = scores[indices[i]];
        for (int64_t i = std::max<int64_t>(m, 0); i < k; ++i) values[i] = -INFINITY;
    }
}

void topk(const mla_topk_params &p) {
    int64_t grain = std::max<int64_t>(1, 65536 / std::max<int64_t>(p.n, 1));
    int workers = plan_workers(p.rows, grain, p.exec.num_threads);
    std::vector<TopkScratch> scratch(workers);
    parallel_for(p.rows, grain, p.exec.num_threads, [&](int64_t r0, int64_t r1, int worker) {
        for (int64_t r = r0; r < r1; ++r)
            topk_row(p.scores + r * p.n, p.n, p.k, scratch[worker], p.indices + r * p.k,
                     p.values ? p.values + r * p.k : nullptr);
    });
}

}  // namespace cpu
}  // namespace mla
