#include "common/rope.h"

#include <algorithm>
#include <cmath>
#include "common/error.h"

namespace mla {

namespace {

// Dimension index at which a frequency makes `num_rotations` turns over `max_pos` positions.
double correction_dim(double num_rotations, int64_t dim, double base, double max_pos) {
    return dim * std::log(max_pos / (num_rotations * 2.0 * M_PI)) / (2.0 * std::log(base));
}

}  // namespace

mla_status check_rope(const mla_rope &r, int64_t d, const char *op, const char *arg) {
    MLA_REQUIRE(r.rope_dim > 0 && r.rope_dim % 2 == 0 && r.rope_dim <= 1024,
                "%s: %s.rope_dim must be a positive even number <= 1024, got %d", op, arg, r.rope_dim);
    int64_t start = rope_start(r, d);
    MLA_REQUIRE(start >= 0 && start + r.rope_dim <= d,
                "%s: %s rotates dims [%lld, %lld) but rows have %lld dims", op, arg,
                (long long)start, (long long)(start + r.rope_dim), (long long)d);
    MLA_REQUIRE(r.style == MLA_ROPE_INTERLEAVED || r.style == MLA_ROPE_HALF_SPLIT,
                "%s: %s.style must be 0 (interleaved) or 1 (half-split), got %d", op, arg,
                r.style);
    if (r.cos_table || r.sin_table) {
        MLA_REQUIRE(r.cos_table && r.sin_table && r.table_len > 0,
                    "%s: %s needs both cos_table and sin_table and table_len > 0", op, arg);
    } else {
        MLA_REQUIRE(r.theta > 1.0 && std::isfinite(r.theta),
                    "%s: %s.theta must be finite and > 1, got %g", op, arg, r.theta);
        if (r.yarn_factor > 1.0) {
            MLA_REQUIRE(r.original_max_position > 0,
                        "%s: %s YaRN needs original_max_position > 0, got %lld", op, arg,
                        (long long)r.original_max_position);
            MLA_REQUIRE(r.beta_fast > 0 && r.beta_slow > 0,
                        "%s: %s YaRN needs beta_fast > 0 and beta_slow > 0, got %g and %g", op,
                        arg, r.beta_fast, r.beta_slow);
        }
    }
    return MLA_OK;
}

RopeAngles::RopeAngles(const mla_rope &r) : r_(r) {
    int64_t half = r.rope_dim / 2;
    freqs_.resize(std::max<int64_t>(half, 0));
    if (r.cos_table) return;
    int64_t dim = r.rope_dim;
    for (int64_t i = 0; i < half; ++i) freqs_[i] = std::pow(r.theta, -double(2 * i) / double(dim));
    if (r.yarn_factor > 1.0) {
        double lo = std::floor(correction_dim(r.beta_fast, dim, r.theta, double(r.original_max_position)));
        double hi = std::ceil(correction_dim(r.beta_slow, dim, r.theta, double(r.original_max_position)));
        lo = std::max(lo, 0.0);
        hi = std::min(hi, double(dim - 1));
        if (lo == hi) hi += 0.001;
        for (int64_t i = 0; i < half; ++i) {
            double ramp = std::min(1.0, std::max(0.0, (double(i) - lo) / (hi - lo)));
            double smooth = 1.0 - ramp;  // 1: keep the frequency (fast dims), 0: divide by factor
            freqs_[i] = freqs_[i] / r.yarn_factor * (1.0 - smooth) + freqs_[i] * smooth;
        }
    }
}

void RopeAngles::cos_sin(int64_t position, int64_t i, double *c, double *s) const {
    if (r_.cos_table) {
        int64_t half = r_.rope_dim / 2;
        *c = r_.cos_table[position * half + i];
        *s = r_.sin_table[position * half + i];
        return;
    }
    double angle = double(position) * freqs_[i];
    *c = std::cos(angle);
    *s = std::sin(angle);
}

}  // namespace mla

extern "C" mla_status mla_rope_frequencies(const mla_rope *rope, double *freqs) {
    if (!rope || !freqs) return mla::fail(MLA_ERR_INVALID_ARGUMENT, "mla_rope_frequencies: null argument");
    if (rope->rope_dim <= 0 || rope->rope_dim % 2)
        return mla::fail(MLA_ERR_INVALID_ARGUMENT, "mla_rope_frequencies: rope_dim must be a positive even number, got %d", rope->rope_dim);
    mla_rope r = *rope;
    r.cos_table = nullptr;
    r.sin_table = nullptr;
    mla::RopeAngles a(r);
    for (int64_t i = 0; i < r.rope_dim / 2; ++i) freqs[i] = a.freq(i);
    return MLA_OK;
}
