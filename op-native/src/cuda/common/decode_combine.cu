// Split-KV combine of the decode-shaped kernels: for every unit whose key tiles were spread
// over several partitions, merges the partial (out / l, lse, row maximum) of each piece,
//   lse = log(sum_i exp(lse_i)),  out = sum_i exp(lse_i - lse) out_i,  max = max_i max_i,
// and writes the row through the shared epilogue (sink, rotation, store). One CTA per
// (unit, m-block, group of kCombineWarps rows), one warp per row, float4 loads along d_v;
// units held by one partition were written by the main kernel and are skipped here.
#include "cuda/common/check.cuh"
#include "cuda/common/decode_launch.h"

namespace mla {
namespace cuda {
namespace {

constexpr int kCombineWarps = 8;

// Floats of shared memory per warp: a row of d_v, then a weight and a slot per piece (at most
// `parts`), rounded to whole float4.
__host__ __device__ inline int64_t combine_stride(const DecodeArgs &a) {
    return a.d_v + (2 * int64_t(a.sched.parts) + 3) / 4 * 4;
}

// The partition holding cost position x (see ScheduleArgs).
__device__ __forceinline__ int owner(const ScheduleArgs &s, int64_t x, int64_t total) {
    int64_t p = ((x + 1) * s.parts - 1) / total;
    return int(p < s.parts - 1 ? p : s.parts - 1);
}

__global__ void __launch_bounds__(kCombineWarps * 32)
    decode_combine_kernel(const __grid_constant__ DecodeArgs a) {
    extern __shared__ float combine_smem[];
    const ScheduleArgs &s = a.sched;
    const int64_t u = blockIdx.x;
    const int mb = blockIdx.y;
    const int64_t n = unit_tiles(s, u);
    if (n <= 0) return;
    const int64_t total = s.cum[a.units];
    const int64_t x0 = s.cum[u] + s.overhead;
    const int first = owner(s, x0, total), last = owner(s, x0 + n - 1, total);
    if (first == last) return;

    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int pieces = last - first + 1;
    float *row = combine_smem + warp * combine_stride(a);  // 16-byte aligned rows
    float *weight = row + a.d_v;
    int *slot = reinterpret_cast<int *>(weight + pieces);
    const int64_t rows_blk = min64(kBlockRows, a.rows - int64_t(mb) * kBlockRows);
    const int r = blockIdx.z * kCombineWarps + warp;
    if (r < rows_blk) {
        // lse of every piece; an empty partition (start == end) left nothing.
        float mx = -INFINITY, row_max = -INFINITY;
        bool nan_piece = false;  // a NaN key the row sees: the row is NaN (as on the CPU)
        for (int k = lane; k < pieces; k += 32) {
            const int p = first + k;
            const int32_t *pp = s.part + 2 * p;
            const bool empty = pp[0] == pp[2] && pp[1] == pp[3];
            const int sl = (mb * s.parts + p) * 2 + (pp[0] == u ? 0 : 1);
            const float l = empty ? -INFINITY : s.part_lse[int64_t(sl) * kBlockRows + r];
            slot[k] = sl;
            weight[k] = l;
            mx = fmaxf(mx, l);
            nan_piece |= l != l;
            if (s.part_max && !empty) row_max = fmaxf(row_max, s.part_max[int64_t(sl) * kBlockRows + r]);
        }
        nan_piece = __any_sync(0xffffffffu, nan_piece);
        for (int o = 16; o > 0; o >>= 1) {
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
            row_max = fmaxf(row_max, __shfl_xor_sync(0xffffffffu, row_max, o));
        }
        float sum = 0.f;
        if (mx > -INFINITY)
            for (int k = lane; k < pieces; k += 32) sum += expf(weight[k] - mx);
        for (int o = 16; o > 0; o >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o);
        const float lse = nan_piece ? NAN : mx > -INFINITY ? mx + logf(sum) : INFINITY;
        __syncwarp();
        for (int k = lane; k < pieces; k += 32)
            weight[k] = nan_piece ? NAN : mx > -INFINITY ? expf(weight[k] - lse) : 0.f;
        __syncwarp();
        for (int64_t c = 4 * lane; c < a.d_v; c += 128) {  // d_v % 16 == 0 on these paths
            float4 acc = make_float4(0.f, 0.f, 0.f, 0.f);
            for (int k = 0; k < pieces; ++k) {
                const float w = weight[k];
                if (w == 0.f) continue;
                const float4 v = *reinterpret_cast<const float4 *>(
                    s.part_o + (int64_t(slot[k]) * kBlockRows + r) * a.d_v + c);
                acc.x += w * v.x;
                acc.y += w * v.y;
                acc.z += w * v.z;
                acc.w += w * v.w;
            }
            *reinterpret_cast<float4 *>(row + c) = acc;
        }
        __syncwarp();
        const RowId id = row_id(a, u, mb, r);
        write_row<float>(a, row, id.b, id.j, id.h, lse, nan_piece ? NAN : row_max, lane);
    }
}

}  // namespace

mla_status launch_decode_combine(const DecodeArgs &a, cudaStream_t stream, const char *op) {
    const int64_t units = a.units;
    const size_t smem = size_t(kCombineWarps) * size_t(combine_stride(a)) * 4;
    if (smem > 48 * 1024)
        MLA_CUDA_TRY(cudaFuncSetAttribute(decode_combine_kernel,
                                          cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
    const dim3 grid(unsigned(units), unsigned(a.n_mblocks), kBlockRows / kCombineWarps);
    decode_combine_kernel<<<grid, kCombineWarps * 32, smem, stream>>>(a);
    MLA_CUDA_LAUNCHED("decode_combine_kernel launch");
    return MLA_OK;
}

}  // namespace cuda
}  // namespace mla
