// Tile constants of the sm_80+ tensor-core dense decode kernel (decode_mma.cuh).
#pragma once

namespace mla {
namespace cuda {
namespace sm80 {

// 8 warps: warp w owns query rows 16 * (w % 4) .. + 16 of the CTA's 64 (kBlockRows) and half
// w / 4 of the key tile for S = Q K^T, and the same half of the value columns for O += P V.
constexpr int kWarps = 8;
constexpr int kThreads = kWarps * 32;
constexpr int kRowGroups = 4;
constexpr int kRowsPerWarp = 16;

// Keys per tile: 64 where shared memory allows (Q + two K stages of 576-wide rows need
// 221 KB: Hopper, Blackwell), else 32 (A100's 163 KB).
constexpr int kTileKeysLarge = 64;
constexpr int kTileKeysSmall = 32;

// Value-width tiers the kernel is instantiated for: d_v is padded up to one of these in the
// register tile (columns past d_v are skipped at run time). d_qk is a run-time loop bound.
constexpr int kMaxHeadDimQK = 576;
constexpr int kMaxHeadDimV = 512;

// Cost of a unit's setup (Q load) and epilogue for the split-KV scheduler, in key tiles.
constexpr int kScheduleOverheadTiles = 4;

}  // namespace sm80
}  // namespace cuda
}  // namespace mla
