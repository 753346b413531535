/*
 * mla4j C ABI: Multi-head Latent Attention kernels.
 *
 * Plain C. One entry point per op (forward and backward apart), each taking one params struct.
 * Conventions (design/ops.md):
 *  - Shapes are row-major; the last dimension of every tensor is contiguous, the other
 *    dimensions are given as element strides (int64) and may be arbitrary.
 *  - Scores P = softmax_scale * q.k; lse = log(sum exp(P)) over the keys a query may attend
 *    (natural log, the sink excluded). A query that may attend no key gets out = 0,
 *    lse = +inf, max_logit = -inf.
 *  - An index is invalid when negative or not below the number of keys it indexes; invalid
 *    entries are skipped and never read.
 *  - Every call returns a status; mla_last_error() gives a readable message for the last
 *    failure on the calling thread.
 *  - Any number of threads may call at once (on separate outputs). The CPU worker pool runs
 *    the parallel part of one call at a time, the other callers wait for it; a call's work
 *    split depends only on its shapes and the pool size, so its results are the same bits
 *    whatever else runs.
 */
#ifndef MLA_MLA_H
#define MLA_MLA_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define MLA_ABI_VERSION 2

/* ---- status, dtypes, devices ------------------------------------------------------------ */

typedef enum mla_status {
    MLA_OK = 0,
    MLA_ERR_INVALID_ARGUMENT = 1, /* a shape, stride, dtype, layout or pointer is wrong */
    MLA_ERR_UNSUPPORTED = 2,      /* valid, but no implementation for this device / feature */
    MLA_ERR_DEVICE = 3,           /* a CUDA call failed */
    MLA_ERR_OUT_OF_MEMORY = 4,
    MLA_ERR_INTERNAL = 5
} mla_status;

typedef enum mla_dtype {
    MLA_FLOAT32 = 0,
    MLA_FLOAT64 = 1,
    MLA_FLOAT16 = 2,
    MLA_BFLOAT16 = 3,
    MLA_INT32 = 4,
    MLA_FP8_E4M3 = 5, /* float8_e4m3fn, max 448 */
    MLA_UINT8 = 6
} mla_dtype;

/* Where a call runs and with what. device < 0: CPU. device >= 0: that CUDA device ordinal. */
typedef struct mla_exec {
    int32_t device;
    int32_t num_threads;     /* CPU: worker threads, 0 = the library default */
    void *stream;            /* CUDA: cudaStream_t, NULL = the default stream */
    void *workspace;         /* CUDA: caller-provided scratch, see the *_workspace_size queries */
    int64_t workspace_bytes;
    /* CUDA: NULL or "" lets the library choose; otherwise the name of the implementation to
     * run (the names a *_plan query reports). A call that implementation refuses fails with
     * MLA_ERR_UNSUPPORTED and its reason. */
    const char *implementation;
} mla_exec;

/* ---- RoPE --------------------------------------------------------------------------------- */

typedef enum mla_rope_style {
    MLA_ROPE_INTERLEAVED = 0, /* pairs (2i, 2i+1) */
    MLA_ROPE_HALF_SPLIT = 1   /* pairs (i, i + rope_dim/2) */
} mla_rope_style;

/*
 * Describes a rotation of `rope_dim` consecutive dims starting at `rope_offset` (a negative
 * offset means "the last rope_dim dims"). Pair i turns by position * f_i with
 * f_i = theta^(-2i/rope_dim), corrected by YaRN when yarn_factor > 1 (DeepSeek's
 * find_correction_range / linear ramp with beta_fast, beta_slow, original_max_position).
 * When cos_table and sin_table are set they are used instead: float32 [table_len, rope_dim/2],
 * row = position; positions outside [0, table_len) are invalid arguments.
 */
typedef struct mla_rope {
    int32_t rope_dim;           /* 0: no rotation */
    int32_t rope_offset;        /* first rotated dim; < 0: d - rope_dim */
    int32_t style;              /* mla_rope_style */
    double theta;
    double yarn_factor;         /* <= 1: plain RoPE */
    int64_t original_max_position;
    double beta_fast;
    double beta_slow;
    const float *cos_table;
    const float *sin_table;
    int64_t table_len;
} mla_rope;

/* VVPA output rotation of the attention ops: when positions != NULL, the last rope.rope_dim
 * dims of every output row of query i are rotated by R(-positions[i]) (int32, one per query
 * row, in the op's query order). */
typedef struct mla_out_rotation {
    const int32_t *positions;
    mla_rope rope;
} mla_out_rotation;

/* ---- KV cache layouts ---------------------------------------------------------------------- */

typedef enum mla_cache_kind {
    MLA_CACHE_PLAIN = 0,  /* rows of d_qk values of `dtype`, [num_blocks, block_size, h_kv, d_qk] */
    MLA_CACHE_V32 = 1,    /* per token: d_nope fp8, d_nope/tile float32 scales, d_rope bf16 */
    MLA_CACHE_MODEL1 = 2  /* per block: block_size rows of (d_nope fp8, d_rope bf16), then
                             block_size rows of scale bytes (UE8M0, one per tile, padded to 8),
                             the block padded to a multiple of the data row */
} mla_cache_kind;

/*
 * A paged cache. For PLAIN, `dtype` is the element type and the strides (elements) locate
 * k_cache[block][token][head][0]. For the FP8 kinds h_kv = 1 and rows are bytes as laid out
 * above; d_nope + d_rope = d_qk, d_nope % tile == 0. Defaults (when d_nope = 0): V32 512/64/128,
 * MODEL1 448/64/64. The value vector is the first d_nope dims for V32 and all d_qk dims for
 * MODEL1 (its RoPE part included).
 */
typedef struct mla_cache {
    int32_t kind;               /* mla_cache_kind */
    int32_t dtype;              /* PLAIN only: mla_dtype of the elements */
    const void *data;
    int64_t num_blocks;
    int64_t block_size;
    int64_t h_kv;               /* PLAIN only; 1 for the FP8 kinds */
    int64_t block_stride;       /* PLAIN: elements between blocks; FP8: ignored (dense) */
    int64_t token_stride;       /* PLAIN: elements between tokens of a block */
    int64_t head_stride;        /* PLAIN: elements between heads */
    int32_t d_nope;             /* FP8 kinds */
    int32_t d_rope;             /* FP8 kinds */
    int32_t tile;               /* FP8 kinds: values per scale */
} mla_cache;

/* Bytes of one block of an FP8 cache (after defaults are applied); -1 on a bad layout. */
int64_t mla_cache_block_bytes(int32_t kind, int64_t block_size, int32_t d_nope, int32_t d_rope,
                              int32_t tile);

/* ---- 1. dense decode with a paged KV cache ----------------------------------------------- */

typedef struct mla_dense_decode_params {
    int32_t dtype;                  /* q and out */
    int64_t b, s_q, h_q, d_qk, d_v;
    const void *q;                  /* [b, s_q, h_q, d_qk] */
    int64_t q_stride[3];
    mla_cache cache;                /* value = first d_v dims of the key row (d_v <= d_qk) */
    const int32_t *block_table;     /* [b, max_blocks_per_seq] */
    int64_t max_blocks_per_seq;
    int64_t block_table_stride;     /* elements between rows */
    const int32_t *cache_seqlens;   /* [b] */
    float softmax_scale;
    int32_t causal;                 /* query j of request i sees t <= seqlen - s_q + j */
    const float *sink;              /* optional [h_q] */
    mla_out_rotation out_rotation;  /* optional, positions [b * s_q] */
    void *out;                      /* [b, s_q, h_q, d_v] */
    int64_t out_stride[3];
    float *lse;                     /* [b, h_q, s_q] contiguous */
    mla_exec exec;
} mla_dense_decode_params;

mla_status mla_dense_decode(const mla_dense_decode_params *p);

/* ---- 2. sparse decode ----------------------------------------------------------------------- */

/* One key set of sparse decode: a cache and indices `block * block_size + offset`. */
typedef struct mla_sparse_keys {
    mla_cache cache;                /* NULL data: the key set is absent */
    const int32_t *indices;         /* [b, s_q, topk] */
    int64_t topk;
    int64_t indices_stride[2];      /* elements between b rows, between s_q rows */
    const int32_t *topk_length;     /* optional [b]: only the first topk_length[i] count */
} mla_sparse_keys;

typedef struct mla_sparse_decode_params {
    int32_t dtype;                  /* q and out */
    int64_t b, s_q, h_q, d_qk, d_v;
    const void *q;                  /* [b, s_q, h_q, d_qk] */
    int64_t q_stride[3];
    mla_sparse_keys keys;           /* required */
    mla_sparse_keys extra;          /* optional, same softmax */
    float softmax_scale;
    const float *sink;              /* optional [h_q] */
    mla_out_rotation out_rotation;  /* optional, positions [b * s_q] */
    void *out;                      /* [b, s_q, h_q, d_v] */
    int64_t out_stride[3];
    float *lse;                     /* [b, h_q, s_q] contiguous */
    mla_exec exec;
} mla_sparse_decode_params;

mla_status mla_sparse_decode(const mla_sparse_decode_params *p);

/* ---- 3. sparse prefill, forward and backward ------------------------------------------------ */

typedef struct mla_sparse_prefill_params {
    int32_t dtype;                  /* q, kv, out (and dq, dkv, dout in backward) */
    int64_t s_q, s_kv, h_q, h_kv, d_qk, d_v, topk;
    const void *q;                  /* [s_q, h_q, d_qk] */
    int64_t q_stride[2];
    const void *kv;                 /* [s_kv, h_kv, d_qk]; value = first d_v dims */
    int64_t kv_stride[2];
    const int32_t *indices;         /* [s_q, h_kv, topk] */
    int64_t indices_stride[2];
    const int32_t *topk_length;     /* optional [s_q] */
    float softmax_scale;
    const float *sink;              /* optional [h_q] */
    mla_out_rotation out_rotation;  /* optional, positions [s_q] */
    void *out;                      /* [s_q, h_q, d_v] */
    int64_t out_stride[2];
    float *max_logit;               /* [s_q, h_q] contiguous, optional */
    float *lse;                     /* [s_q, h_q] contiguous */
    /* backward only */
    const void *dout;               /* [s_q, h_q, d_v] */
    int64_t dout_stride[2];
    void *dq;                       /* [s_q, h_q, d_qk] contiguous */
    void *dkv;                      /* [s_kv, h_kv, d_qk] contiguous, overwritten */
    float *dsink;                   /* optional [h_q], overwritten */
    mla_exec exec;
} mla_sparse_prefill_params;

mla_status mla_sparse_prefill_fwd(const mla_sparse_prefill_params *p);
/* Needs q, kv, indices, out, lse of the forward and dout. */
mla_status mla_sparse_prefill_bwd(const mla_sparse_prefill_params *p);

/* ---- 4. dense attention, forward and backward ---------------------------------------------- */

/*
 * Batched: q [b, s_q, h_q, d_qk], k [b, s_k, h_kv, d_qk], v [b, s_k, h_kv, d_v];
 * strides {batch, token, head}. Variable length: cu_seqlens_q / cu_seqlens_k (int32 [b + 1])
 * set, tensors packed [total, h, d], the batch stride ignored, b = number of sequences.
 * v may alias k (absorbed form: same pointer and strides, d_v <= d_qk).
 * Causal masks align bottom-right: query i of a sequence sees key j when
 * j <= i + s_k - s_q; a window w > 0 also requires j > i + s_k - s_q - w.
 * lse: batched [b, h_q, s_q], varlen [h_q, total_q], contiguous.
 */
typedef struct mla_attention_params {
    int32_t dtype;
    int64_t b, s_q, s_k, h_q, h_kv, d_qk, d_v;
    const int32_t *cu_seqlens_q;
    const int32_t *cu_seqlens_k;
    int64_t total_q, total_k;       /* varlen: rows of the packed tensors */
    const void *q;
    int64_t q_stride[3];
    const void *k;
    int64_t k_stride[3];
    const void *v;
    int64_t v_stride[3];
    float softmax_scale;
    int32_t causal;
    int64_t window;                 /* 0: none */
    const float *sink;              /* optional [h_q] */
    mla_out_rotation out_rotation;  /* optional, positions per query row (b*s_q or total_q) */
    void *out;                      /* [.., h_q, d_v] */
    int64_t out_stride[3];
    float *lse;
    /* backward only: gradients contiguous in the shapes of q, k, v; overwritten */
    const void *dout;
    int64_t dout_stride[3];
    void *dq;
    void *dk;
    void *dv;                       /* when v aliases k, pass dv = NULL: its part adds into dk */
    float *dsink;
    mla_exec exec;
} mla_attention_params;

mla_status mla_attention_fwd(const mla_attention_params *p);
mla_status mla_attention_bwd(const mla_attention_params *p);

/* ---- 5. KV cache: quantise, dequantise, append ------------------------------------------------ */

/*
 * kv [num_blocks, block_size, d_qk] (contiguous, `dtype`) <-> cache bytes
 * [num_blocks, mla_cache_block_bytes(...)] in the layout `cache.kind` (V32 or MODEL1).
 * Scales are powers of two: 2^ceil(log2(max(amax / 448, 1e-4))) per tile.
 */
typedef struct mla_quant_params {
    int32_t dtype;              /* of kv */
    void *kv;                   /* input of quantize, output of dequantize */
    mla_cache cache;            /* V32 or MODEL1; data is read by dequantize */
    void *cache_out;            /* quantize: where the bytes go (NULL: cache.data); padding
                                   bytes of MODEL1 blocks are written as zeros */
    mla_exec exec;
} mla_quant_params;

/* On a CUDA device (exec.device >= 0): kv and the cache are device pointers (plain host memory
 * is an invalid argument), ordered on exec.stream, no data read on the host; quantize writes
 * the CPU's bytes exactly, dequantize the CPU's values (NaN payloads included, except for an
 * fp8 NaN times a NaN scale). exec.workspace is not used. */
mla_status mla_kv_quantize(const mla_quant_params *p);
mla_status mla_kv_dequantize(const mla_quant_params *p);

/* The checked mode of FP8 quantisation (one Inf, NaN or huge value in a tile zeroes the rest of
 * the tile): finds the first of n contiguous values of a float dtype that is NaN, +-Inf or of
 * magnitude above `bound` (+inf: non-finite values only). *first gets its index, or -1 when
 * every value passes. Reads x once, on up to num_threads threads (0 = the library default).
 * A separate call, so the quantise / append params keep their layout. */
mla_status mla_find_unquantizable(int32_t dtype, const void *x, int64_t n, double bound,
                                  int32_t num_threads, int64_t *first);

/* Writes new_kv [b, n_new, d_qk] at positions cache_seqlens[i] + j of request i (paged by
 * block_table), in the cache's layout; cache_seqlens is not changed. On the CPU the cache
 * must have room: a position past max_blocks_per_seq * block_size or a block id outside the
 * cache is an invalid argument and nothing is written.
 * Rows of new_kv: for the FP8 kinds (one KV head) a token is d_qk values; for a PLAIN cache
 * with h_kv heads it is [h_kv, d_qk] contiguous (new_kv [b, n_new, h_kv, d_qk] with
 * new_kv_stride = {between requests, between tokens}; strides >= 0). On the CPU two new
 * tokens mapping to the same cache slot are an invalid argument too.
 *
 * On a CUDA device (exec.device >= 0): new_kv, the cache, block_table and cache_seqlens are
 * device pointers (plain host memory is an invalid argument); the call is ordered on
 * exec.stream, does not synchronise it and reads none of their data on the host. It writes the
 * same bytes as the CPU path for the same input (FP8 tiles quantised by the same rules). Every
 * check that needs no data is made as on the CPU; the ones that need block_table or
 * cache_seqlens cannot be, and instead, with no error returned:
 *  - request i is skipped entirely (none of its tokens written) when cache_seqlens[i] < 0 or
 *    cache_seqlens[i] + n_new > max_blocks_per_seq * block_size;
 *  - token j of a request that fits is skipped when its block id
 *    block_table[i][(cache_seqlens[i] + j) / block_size] is outside [0, num_blocks);
 *  - when two or more of the remaining tokens map to one cache slot (block, offset), all of
 *    them are skipped and that slot keeps its old bytes;
 *  - every other token is written; no other byte of the cache changes (a MODEL1 token is its
 *    data row and its scale row, whose padding bytes are written as zeros; the padding at
 *    the end of a MODEL1 block is never touched).
 * exec.workspace is not used. */
typedef struct mla_append_params {
    int32_t dtype;              /* of new_kv */
    int64_t b, n_new, d_qk;
    const void *new_kv;
    int64_t new_kv_stride[2];
    mla_cache cache;            /* PLAIN (any float dtype, h_kv >= 1), V32, MODEL1 */
    void *cache_out;            /* the cache written in place (NULL: cache.data) */
    const int32_t *block_table;
    int64_t max_blocks_per_seq;
    int64_t block_table_stride;
    const int32_t *cache_seqlens;
    mla_exec exec;
} mla_append_params;

mla_status mla_kv_append(const mla_append_params *p);

/* ---- 6. lightning indexer and top-k ---------------------------------------------------------- */

/*
 * scores[b, t, s] = sum_j w[b, t, j] * relu(q[b, t, j, :] . k[b, s, :]), for s <= t + s_k - s_q
 * (causal, bottom-right), else -inf. q and k in float types or MLA_FP8_E4M3 with per-row
 * float32 scales (q_scale [b, s_q, h], k_scale [b, s_k]; NULL unless FP8); the dot products
 * use the dequantised values (fp8 * scale). The backward gives the gradients with respect to
 * those values; masked positions contribute nothing, relu'(0) = 0.
 */
typedef struct mla_indexer_params {
    int32_t q_dtype, k_dtype, w_dtype;
    int64_t b, s_q, s_k, h, d;
    const void *q;              /* [b, s_q, h, d] contiguous */
    const float *q_scale;       /* FP8 only */
    const void *k;              /* [b, s_k, d] contiguous */
    const float *k_scale;       /* FP8 only */
    const void *w;              /* [b, s_q, h] contiguous */
    int32_t causal;
    float *scores;              /* indexer_scores: [b, s_q, s_k] float32 */
    int64_t topk;               /* indexer_topk */
    int32_t *indices;           /* indexer_topk: [b, s_q, topk], -1 padded */
    /* backward of the scores: dscores [b, s_q, s_k] float32 -> dq, dk, dw (float32, overwritten) */
    const float *dscores;
    float *dq;
    float *dk;
    float *dw;
    mla_exec exec;
} mla_indexer_params;

mla_status mla_indexer_scores(const mla_indexer_params *p);
/* Fused scores + top-k, memory O(s_k) per thread: no [s_q, s_k] buffer. topk <= INT32_MAX
 * (an invalid argument otherwise, on every device). */
mla_status mla_indexer_topk(const mla_indexer_params *p);
mla_status mla_indexer_scores_bwd(const mla_indexer_params *p);

/*
 * On a CUDA device (exec.device >= 0), mla_indexer_scores and mla_indexer_topk take device
 * pointers only (plain host memory is an invalid argument), are ordered on exec.stream, do not
 * synchronise it and read none of the pointed-to data on the host.
 *  - Scores: float32 accumulation in another order than the CPU's (float64 when an input is
 *    float64); DeepSeek's shape (h 64, d 128, q and k both bf16 or both float8_e4m3, w not
 *    float64) runs on the tensor cores of an sm_90 device, everything else on a CUDA-core
 *    kernel. FP8 scales are meant to be finite: for a non-finite scale the GPU and the CPU may
 *    give different scores. A non-finite w may differ likewise (the GPU adds w * 0 for a
 *    negative dot product, the CPU skips it).
 *  - Top-k: the CPU's rules exactly, applied to the GPU's scores. min(topk, s_k) <= 16384
 *    (MLA_ERR_UNSUPPORTED otherwise: the chosen entries are sorted in shared memory).
 *    exec.workspace must hold mla_indexer_topk_workspace_size(p) bytes: the scores go through
 *    it in chunks of query rows (at most 32 MiB of them), never all at once.
 */
/* Bytes of exec.workspace that mla_indexer_topk needs for these params (sizes, dtypes and
 * exec.device are read, no pointed-to data): 0 for a CPU call; -1 on an invalid argument (the
 * message in mla_last_error()). */
int64_t mla_indexer_topk_workspace_size(const mla_indexer_params *p);

/* Top-k of float32 scores [rows, n] (contiguous) -> int32 [rows, k], descending, ties by the
 * lower index, -inf and NaN entries never chosen, -1 where fewer than k remain. values
 * (optional, float32 [rows, k]) gets the chosen scores (-inf where -1). k <= INT32_MAX (an
 * invalid argument otherwise, on every device). On a CUDA device: device pointers only, no
 * data read on the host, the same output as the CPU bit for bit; min(k, n) <= 16384
 * (MLA_ERR_UNSUPPORTED otherwise); exec.workspace is not used. */
typedef struct mla_topk_params {
    int64_t rows, n, k;
    const float *scores;
    int32_t *indices;
    float *values;
    mla_exec exec;
} mla_topk_params;

mla_status mla_topk(const mla_topk_params *p);

/* ---- 7. RoPE ---------------------------------------------------------------------------------- */

/* x [n, h, d] (strides {token, head}, last dim contiguous) -> out [n, h, d] contiguous; the
 * rope dims of token i turn by R(positions[i]) (R(-positions[i]) when inverse); the other dims
 * are copied. out may equal x when x is contiguous (any other overlap is an invalid argument).
 * rope.rope_dim = 0 copies. The backward is the same call with `inverse` flipped (R is
 * orthogonal: dx = R(p)^T dy = R(-p) dy).
 * On a CUDA device (exec.device >= 0): x, positions, the cos/sin tables and out are device
 * pointers (plain host memory is an invalid argument), the call is ordered on exec.stream and
 * reads none of their data on the host, so a position outside [0, table_len) cannot be refused:
 * that token's rotated dims are NaN (the other dims copied). With tables the output equals the
 * CPU's bit for bit; from theta (and YaRN) it may differ in the last place (cos / sin in double
 * on the device). */
typedef struct mla_rope_params {
    int32_t dtype;
    int64_t n, h, d;
    const void *x;
    int64_t x_stride[2];
    const int32_t *positions;   /* [n] */
    mla_rope rope;
    int32_t inverse;
    void *out;
    mla_exec exec;
} mla_rope_params;

mla_status mla_rope_apply(const mla_rope_params *p);

/* Fills freqs[rope_dim/2] with the angular frequency of each pair (YaRN applied). */
mla_status mla_rope_frequencies(const mla_rope *rope, double *freqs);

/* ---- 8. embedding lookup (ops.md section 9) -------------------------------------------------------------------- */

/* Rows of a table picked by token ids: out[i, :] = table[indices[i], :] for i < n, with
 * table [vocab, dim] (table_stride elements between rows, each row contiguous), indices int32
 * [n], out [n, dim] contiguous. An id outside [0, vocab) is an invalid argument (the message
 * names the first) and nothing is written.
 * The backward is a scatter-add, not a product with a one-hot matrix: dtable [vocab, dim]
 * (contiguous, overwritten) gets in row v the sum of the dout rows [n, dim] (contiguous) of
 * the ids equal to v, added in id order, accumulated in float32 (float64 for MLA_FLOAT64);
 * rows no id picks are 0. Work O(n * dim + vocab * dim), scratch O(n + vocab) ints. */
typedef struct mla_embedding_params {
    int32_t dtype;              /* table, out, dout, dtable: a float type */
    int64_t n, vocab, dim;
    const void *table;          /* forward */
    int64_t table_stride;       /* >= dim */
    const int32_t *indices;     /* [n] */
    void *out;                  /* forward */
    const void *dout;           /* backward */
    void *dtable;               /* backward */
    mla_exec exec;
} mla_embedding_params;

mla_status mla_embedding_fwd(const mla_embedding_params *p);
mla_status mla_embedding_bwd(const mla_embedding_params *p);

/* ---- library ----------------------------------------------------------------------------------- */

/* Message of the last failure on this thread ("" when none). */
const char *mla_last_error(void);
int32_t mla_abi_version(void);
/* Comma-separated list of compiled-in targets, e.g. "cpu" or "cpu,sm90a,sm100a,sm80". */
const char *mla_build_targets(void);
/* Number of CUDA devices usable by this library (0 without CUDA or driver). */
int32_t mla_cuda_device_count(void);

/* ---- CUDA device memory, streams and events ------------------------------------------------
 *
 * A small runtime layer so that callers without their own CUDA bindings (native tests,
 * benchmarks, ctypes) can place data on a device and time the GPU ops. Every function returns
 * MLA_ERR_UNSUPPORTED ("built without CUDA") in a library built without CUDA, and
 * MLA_ERR_DEVICE with the CUDA error string when a CUDA call fails. Streams and events are
 * opaque handles (cudaStream_t / cudaEvent_t); a NULL stream is the default stream. Memory
 * functions act on the calling thread's current device (mla_cuda_set_device).
 */

typedef struct mla_cuda_device_info {
    char name[256];
    int32_t major, minor;            /* compute capability */
    int32_t multiprocessors;
    int32_t max_smem_per_block;      /* bytes, opt-in limit */
    int64_t total_memory;            /* bytes */
    int64_t l2_bytes;
} mla_cuda_device_info;

mla_status mla_cuda_device_info_get(int32_t device, mla_cuda_device_info *info);
mla_status mla_cuda_set_device(int32_t device);
mla_status mla_cuda_get_device(int32_t *device);
mla_status mla_cuda_device_synchronize(void);

mla_status mla_cuda_malloc(void **ptr, int64_t bytes);       /* bytes 0: *ptr = NULL */
mla_status mla_cuda_free(void *ptr);                         /* NULL is fine */
mla_status mla_cuda_malloc_host(void **ptr, int64_t bytes);  /* page-locked host memory */
mla_status mla_cuda_free_host(void *ptr);

/* kind of a copy */
typedef enum mla_cuda_copy_kind {
    MLA_COPY_HOST_TO_DEVICE = 0,
    MLA_COPY_DEVICE_TO_HOST = 1,
    MLA_COPY_DEVICE_TO_DEVICE = 2
} mla_cuda_copy_kind;

/* Synchronous copy: returns when the data has arrived. */
mla_status mla_cuda_memcpy(void *dst, const void *src, int64_t bytes, int32_t kind);
/* Copy ordered on `stream`; host memory should be page-locked for it to be asynchronous. */
mla_status mla_cuda_memcpy_async(void *dst, const void *src, int64_t bytes, int32_t kind,
                                 void *stream);
mla_status mla_cuda_memset(void *dst, int32_t byte_value, int64_t bytes);
mla_status mla_cuda_memset_async(void *dst, int32_t byte_value, int64_t bytes, void *stream);

mla_status mla_cuda_stream_create(void **stream);
mla_status mla_cuda_stream_destroy(void *stream);
mla_status mla_cuda_stream_synchronize(void *stream);

mla_status mla_cuda_event_create(void **event);
mla_status mla_cuda_event_destroy(void *event);
mla_status mla_cuda_event_record(void *event, void *stream);
mla_status mla_cuda_event_synchronize(void *event);
/* Milliseconds between two recorded events. */
mla_status mla_cuda_event_elapsed_ms(void *start, void *end, float *ms);

/* ---- GPU plans and workspaces ----------------------------------------------------------------
 *
 * A call with exec.device >= 0 is planned once per shape and device: which implementation runs
 * it (implementations are tried in order of preference, each accepting the call or saying why
 * not), how it is split, and how much workspace it needs. The plan queries report that choice
 * without running anything: sizes, dtypes, layouts, options, exec.device and
 * exec.implementation are read, pointers only for their alignment, never pointed-to data.
 * The workspace queries return plan.workspace_bytes (0 for a CPU call, or when no scratch is
 * needed; -1 on an error, the message in mla_last_error()). Both return an error for a call
 * that the entry point would refuse.
 */
typedef struct mla_plan_info {
    char implementation[64];   /* the implementation that runs the call; "" when none */
    int64_t workspace_bytes;   /* bytes of exec.workspace the call needs */
    char refusals[2048];       /* one "name: reason" line per implementation that refused */
} mla_plan_info;

mla_status mla_dense_decode_plan(const mla_dense_decode_params *p, mla_plan_info *info);
mla_status mla_sparse_decode_plan(const mla_sparse_decode_params *p, mla_plan_info *info);
mla_status mla_sparse_prefill_fwd_plan(const mla_sparse_prefill_params *p, mla_plan_info *info);

int64_t mla_dense_decode_workspace_size(const mla_dense_decode_params *p);
int64_t mla_sparse_decode_workspace_size(const mla_sparse_decode_params *p);
int64_t mla_sparse_prefill_fwd_workspace_size(const mla_sparse_prefill_params *p);

#ifdef __cplusplus
}
#endif

#endif /* MLA_MLA_H */
