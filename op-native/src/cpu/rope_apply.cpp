// RoPE on rows of x [n, h, d] (ops.md section 7). Rows go through double: one rounding, at
// the store. The backward of a rotation is the inverse rotation (inverse = 1).
#include <algorithm>
#include <vector>
#include "common/parallel.h"
#include "common/rope.h"
#include "cpu/misc_kernels.h"

namespace mla {
namespace cpu {

void rope_apply(const mla_rope_params &p) {
    bool rotate = p.rope.rope_dim != 0;
    // The frequencies are only computed for a rotation; a plain copy needs none.
    mla_rope desc = p.rope;
    if (!rotate) desc.rope_dim = 0;
    RopeAngles angles(desc);
    int sign = p.inverse ? -1 : 1;
    int64_t grain = std::max<int64_t>(1, 8192 / (p.h * p.d));
    int workers = plan_workers(p.n, grain, p.exec.num_threads);
    int64_t half = std::max<int64_t>(desc.rope_dim / 2, 0);
    // Per worker: one row, and the cos / sin of one token, shared by all its heads.
    std::vector<std::vector<double>> rows(workers, std::vector<double>(size_t(p.d + 2 * half)));
    parallel_for(p.n, grain, p.exec.num_threads, [&](int64_t i0, int64_t i1, int worker) {
        double *row = rows[worker].data();
        double *cs = row + p.d, *sn = cs + half;
        for (int64_t i = i0; i < i1; ++i) {
            if (rotate) angles.fill(p.positions[i], cs, sn);
            for (int64_t hh = 0; hh < p.h; ++hh) {
                load_row<double>(p.x, p.dtype, i * p.x_stride[0] + hh * p.x_stride[1], p.d, row);
                if (rotate) rotate_row_cs<double>(desc, p.d, cs, sn, sign, row);
                store_row<double>(p.out, p.dtype, (i * p.h + hh) * p.d, p.d, row);
            }
        }
    });
}

}  // namespace cpu
}  // namespace mla
