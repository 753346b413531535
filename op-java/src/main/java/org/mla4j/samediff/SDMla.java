package org.mla4j.samediff;

import org.mla4j.ops.Attention;
import org.mla4j.ops.CacheLayout;
import org.mla4j.ops.DenseDecode;
import org.mla4j.ops.Embedding;
import org.mla4j.ops.Fp8Check;
import org.mla4j.ops.IndexerScores;
import org.mla4j.ops.IndexerTopK;
import org.mla4j.ops.KvAppend;
import org.mla4j.ops.KvDequantize;
import org.mla4j.ops.KvQuantize;
import org.mla4j.ops.Rope;
import org.mla4j.ops.RopeConfig;
import org.mla4j.ops.SparseDecode;
import org.mla4j.ops.SparsePrefill;
import org.mla4j.ops.TopK;
import org.nd4j.autodiff.samediff.SDVariable;
import org.nd4j.autodiff.samediff.SameDiff;
import org.nd4j.linalg.api.buffer.DataType;

/**
 * The mla4j ops of a SameDiff graph, in the style of {@code sd.nn()}: get it with
 * {@code Mla4j.ops(sd)}. Shapes follow ops.md; every method documents its inputs and outputs.
 * Ops with several outputs return them in order (e.g. {@code [out, lse]}).
 */
public class SDMla {
    private final SameDiff sd;

    public SDMla(SameDiff sd) {
        this.sd = sd;
    }

    /**
     * Dense attention (training / prefill), batched.
     *
     * @param q [b, s_q, h_q, d_qk]
     * @param k [b, s_k, h_kv, d_qk]
     * @param v [b, s_k, h_kv, d_v], or null: the value is the first {@code o.dV} dims of k
     * @param sink optional float32 [h_q]
     * @param outPositions optional int32 [b, s_q]: VVPA rotation of the last rope dims of the output
     * @return [out [b, s_q, h_q, d_v], lse float32 [b, h_q, s_q]]
     */
    public SDVariable[] attention(SDVariable q, SDVariable k, SDVariable v, SDVariable sink,
                                  SDVariable outPositions, Attention.Options o) {
        return new Attention(sd, q, k, v, null, null, sink, outPositions, o).outputVariables();
    }

    /** Dense attention without options beyond causal; returns the output only. */
    public SDVariable attention(String name, SDVariable q, SDVariable k, SDVariable v, boolean causal) {
        SDVariable out = attention(q, k, v, null, null, new Attention.Options().causal(causal))[0];
        return name == null ? out : out.rename(name);
    }

    /**
     * Dense attention on packed variable-length sequences.
     *
     * @param q [total_q, h_q, d_qk]; k, v packed likewise
     * @param cuSeqlensQ int32 [n + 1] cumulative query lengths; cuSeqlensK the key lengths
     * @return [out [total_q, h_q, d_v], lse float32 [h_q, total_q]]
     */
    public SDVariable[] attentionVarlen(SDVariable q, SDVariable k, SDVariable v, SDVariable cuSeqlensQ,
                                        SDVariable cuSeqlensK, SDVariable sink, SDVariable outPositions,
                                        Attention.Options o) {
        return new Attention(sd, q, k, v, cuSeqlensQ, cuSeqlensK, sink, outPositions, o).outputVariables();
    }

    /**
     * Dense decode over a paged cache: q [b, s_q, h_q, d_qk], kCache, blockTable int32
     * [b, max_blocks], cacheSeqlens int32 [b], optional sink [h_q] and outPositions [b, s_q].
     *
     * @return [out [b, s_q, h_q, d_v], lse float32 [b, h_q, s_q]]
     */
    public SDVariable[] denseDecode(SDVariable q, SDVariable kCache, SDVariable blockTable, SDVariable cacheSeqlens,
                                    SDVariable sink, SDVariable outPositions, DenseDecode.Options o) {
        return new DenseDecode(sd, q, kCache, blockTable, cacheSeqlens, sink, outPositions, o).outputVariables();
    }

    /**
     * Sparse decode over paged caches (see {@link SparseDecode} for the inputs).
     *
     * @return [out [b, s_q, h_q, d_v], lse float32 [b, h_q, s_q]]
     */
    public SDVariable[] sparseDecode(SDVariable q, SDVariable kCache, SDVariable indices, SDVariable topkLength,
                                     SDVariable extraCache, SDVariable extraIndices, SDVariable extraTopkLength,
                                     SDVariable sink, SDVariable outPositions, SparseDecode.Options o) {
        return new SparseDecode(sd, q, kCache, indices, topkLength, extraCache, extraIndices, extraTopkLength,
                sink, outPositions, o).outputVariables();
    }

    /**
     * Sparse prefill: q [s_q, h_q, d_qk], kv [s_kv, h_kv, d_qk], indices int32 [s_q, h_kv, topk],
     * optional topkLength [s_q], sink [h_q], outPositions [s_q].
     *
     * @return [out [s_q, h_q, d_v], maxLogit [s_q, h_q], lse [s_q, h_q]]
     */
    public SDVariable[] sparsePrefill(SDVariable q, SDVariable kv, SDVariable indices, SDVariable topkLength,
                                      SDVariable sink, SDVariable outPositions, long dV, double softmaxScale,
                                      RopeConfig rope) {
        return new SparsePrefill(sd, q, kv, indices, topkLength, sink, outPositions, dV, softmaxScale, rope)
                .outputVariables();
    }

    /** FP8 quantisation: kv [num_blocks, block_size, d_qk] -> UINT8 [num_blocks, block_bytes]. */
    public SDVariable kvQuantize(SDVariable kv, CacheLayout layout) {
        return new KvQuantize(sd, kv, layout).outputVariable();
    }

    /** FP8 quantisation that first refuses kv values the check rules out (NaN, Inf, past a limit). */
    public SDVariable kvQuantize(SDVariable kv, CacheLayout layout, Fp8Check check) {
        return new KvQuantize(sd, kv, layout, check).outputVariable();
    }

    /** FP8 dequantisation: UINT8 [num_blocks, block_bytes] -> [num_blocks, block_size, d_qk]. */
    public SDVariable kvDequantize(SDVariable cache, CacheLayout layout, long blockSize, DataType type) {
        return new KvDequantize(sd, cache, layout, blockSize, type).outputVariable();
    }

    /** A copy of the cache with newKv [b, n_new, h_kv * d_qk] written at cacheSeqlens[i] + j. */
    public SDVariable kvAppend(SDVariable cache, SDVariable blockTable, SDVariable cacheSeqlens, SDVariable newKv,
                               CacheLayout layout, long blockSize) {
        return new KvAppend(sd, cache, blockTable, cacheSeqlens, newKv, layout, blockSize).outputVariable();
    }

    /** {@link #kvAppend} that first refuses newKv values the check rules out (FP8 layouts). */
    public SDVariable kvAppend(SDVariable cache, SDVariable blockTable, SDVariable cacheSeqlens, SDVariable newKv,
                               CacheLayout layout, long blockSize, Fp8Check check) {
        return new KvAppend(sd, cache, blockTable, cacheSeqlens, newKv, layout, blockSize, check).outputVariable();
    }

    /** Lightning indexer scores: q [b, s_q, h, d], k [b, s_k, d], w [b, s_q, h] -> [b, s_q, s_k]. */
    public SDVariable indexerScores(SDVariable q, SDVariable k, SDVariable w, boolean causal) {
        return new IndexerScores(sd, q, k, w, causal).outputVariable();
    }

    /** Fused indexer top-k: -> int32 [b, s_q, topk], -1 padded. */
    public SDVariable indexerTopK(SDVariable q, SDVariable k, SDVariable w, boolean causal, long topk) {
        return new IndexerTopK(sd, q, k, w, causal, topk).outputVariable();
    }

    /** Top-k of the last dim: [indices int32, values float32]. */
    public SDVariable[] topK(SDVariable scores, long k) {
        return new TopK(sd, scores, k).outputVariables();
    }

    /**
     * Embedding lookup that trains: {@code table [vocab, dim]} (a float type, usually a
     * variable), {@code indices} INT or LONG token ids of any shape -> {@code [..indices, dim]}.
     * Its gradient is a scatter-add into the table's gradient. Use it instead of
     * {@code sd.gather(table, indices, 0)}, which breaks {@code sd.fit} in ND4J 1.0.0-M2.1.
     */
    public SDVariable embedding(SDVariable table, SDVariable indices) {
        return new Embedding(sd, table, indices).outputVariable();
    }

    /** RoPE of x ([n, d], [n, h, d] or [b, s, h, d]) by positions (one per token). */
    public SDVariable rope(SDVariable x, SDVariable positions, RopeConfig rope, boolean inverse) {
        return new Rope(sd, x, positions, rope, inverse).outputVariable();
    }
}
