// The lightning indexer and top-k on a CUDA device (ops.md section 6): the entries the
// dispatchers of src/api/indexer.cpp call when exec.device >= 0. Plain C++ types only, so .cpp
// files include it. The arguments that need no data have been checked by the caller; these
// check the device, refuse host memory and what the device kernels cannot do
// (MLA_ERR_UNSUPPORTED), and read none of the pointed-to data on the host.
#pragma once
#include <cstdint>
#include <cstdlib>
#include "mla/mla.h"

namespace mla {
namespace cuda {

// Scores of the fused indexer top-k go through a workspace in chunks of query rows, at most
// this many bytes of float32 scores per chunk (one row when a single row is larger). The
// environment variable MLA4J_INDEXER_CHUNK_BYTES overrides it (tests use small chunks).
constexpr int64_t kIndexerChunkBytes = int64_t(32) << 20;

inline int64_t indexer_chunk_bytes() {
    const char *v = std::getenv("MLA4J_INDEXER_CHUNK_BYTES");
    const long long n = v ? std::atoll(v) : 0;
    return n > 0 ? int64_t(n) : kIndexerChunkBytes;
}

// How the fused top-k cuts its b * s_q query rows into chunks: whole batches when a batch's
// rows fit in a chunk, else token ranges of one batch (a multiple of 4 tokens when more than
// 4 fit, the tensor-core kernel's token group).
struct IndexerChunks {
    bool whole_batches = true;
    int64_t batches = 0;  // per chunk, whole_batches
    int64_t tokens = 0;   // per chunk (s_q when whole_batches)
    int64_t rows() const { return batches * tokens; }
};

inline IndexerChunks indexer_chunks(int64_t b, int64_t s_q, int64_t s_k) {
    IndexerChunks c;
    const int64_t cap = indexer_chunk_bytes();
    const int64_t row_bytes = (s_k > 0 ? s_k : 1) * 4;
    if (s_q > 0 && s_q * row_bytes <= cap) {
        const int64_t fit = cap / (s_q * row_bytes);
        c.batches = fit < b ? fit : b;
        if (c.batches < 1) c.batches = 1;
        c.tokens = s_q;
    } else {
        c.whole_batches = false;
        c.batches = 1;
        int64_t t = cap / row_bytes;
        if (t < 1) t = 1;
        if (t > 4) t -= t % 4;
        c.tokens = t < s_q ? t : s_q;
    }
    return c;
}

// Workspace bytes of a device call of mla_indexer_topk: one chunk of float32 score rows.
inline int64_t indexer_topk_workspace_bytes(const mla_indexer_params &p) {
    if (p.b * p.s_q == 0 || p.s_k == 0 || p.topk == 0) return 0;
    return indexer_chunks(p.b, p.s_q, p.s_k).rows() * p.s_k * 4;
}

mla_status indexer_scores(const mla_indexer_params &p);
mla_status indexer_topk(const mla_indexer_params &p);
mla_status topk(const mla_topk_params &p);

}  // namespace cuda
}  // namespace mla
