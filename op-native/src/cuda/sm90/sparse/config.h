// Tile constants of the sm_90a sparse attention kernel (attend_kernel.cuh): sparse decode
// (ops.md section 2) and the sparse prefill forward (section 3) over BF16 / FP16 rows or FP8
// V32 / MODEL1 caches.
#pragma once

namespace mla {
namespace cuda {
namespace sm90 {
namespace sparse {

// Warpgroups 0 and 1 consume (S, softmax, P V; warpgroup w owns value columns 256 w .. +256),
// warpgroup 2 produces key tiles (gathers rows by index, dequantises FP8 rows).
constexpr int kConsumerThreads = 256;
constexpr int kThreads = 384;
constexpr int kTileKeys = 64;
constexpr int kHeadDimV = 512;
// Registers per thread after reallocation: 2 x 128 x 208 + 128 x 96 = 65,536 (the consumers
// fit in 208 without spilling; the FP8 producer keeps a row's 16-byte loads in flight).
constexpr int kConsumerRegs = 208;
constexpr int kProducerRegs = 96;
// Cost of a unit's setup (Q load) and epilogue for the split-KV scheduler, in key tiles.
constexpr int kScheduleOverheadTiles = 4;

}  // namespace sparse
}  // namespace sm90
}  // namespace cuda
}  // namespace mla
