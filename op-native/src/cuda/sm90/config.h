// Tile constants of the sm_90a dense decode kernel (decode_wgmma.cuh).
#pragma once

namespace mla {
namespace cuda {
namespace sm90 {

// Two warpgroups. Warpgroup w computes S = Q K^T for keys 32 w .. +32 of the tile
// (wgmma m64n32k16) and O += P V for value columns 256 w .. +256 (m64n256k16), so together
// they cover the 64 query rows of the CTA, a tile of 64 keys and d_v = 512.
constexpr int kWarpgroups = 2;
constexpr int kThreads = kWarpgroups * 128;
constexpr int kTileKeys = 64;
constexpr int kKeysPerWarpgroup = kTileKeys / kWarpgroups;
constexpr int kHeadDimV = 512;
constexpr int kColsPerWarpgroup = kHeadDimV / kWarpgroups;
// d_qk: compiled for 512 (V4 style, MODEL1 width) and 576 (V3 absorbed), the multiples of 64
// (whole 128-byte swizzle atoms) from d_v up to this.
constexpr int kMaxHeadDimQK = 576;

// Cost of a unit's setup (Q load) and epilogue for the split-KV scheduler, in key tiles.
constexpr int kScheduleOverheadTiles = 4;

}  // namespace sm90
}  // namespace cuda
}  // namespace mla
