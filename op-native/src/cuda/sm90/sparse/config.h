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
// Registers per thread: ptxas gives every thread kEntryRegs under the launch bounds (384
// threads, one block per multiprocessor); the warpgroups then trade registers
// (setmaxnreg), and what the consumers gain the producer must give up (an increase is served
// only from registers a decrease released): 2 x 128 x (208 - 168) = 128 x (168 - 88). The
// consumers fit in 208 without spilling; the FP8 producer keeps a row's loads in flight.
constexpr int kEntryRegs = 168;
constexpr int kConsumerRegs = 208;
constexpr int kProducerRegs = 88;
static_assert(2 * (kConsumerRegs - kEntryRegs) == kEntryRegs - kProducerRegs,
              "register trades between the warpgroups balance");
// Cost of a unit's setup (Q load) and epilogue for the split-KV scheduler, in key tiles.
constexpr int kScheduleOverheadTiles = 4;

}  // namespace sparse
}  // namespace sm90
}  // namespace cuda
}  // namespace mla
