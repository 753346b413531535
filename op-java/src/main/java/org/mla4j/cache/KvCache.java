package org.mla4j.cache;

import org.mla4j.ops.CacheLayout;
import org.mla4j.ops.RopeConfig;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;

/**
 * A paged KV cache for decode: sequences 0..maxBatch-1 append rows of {@code dQk} values (one
 * KV head) and attend everything they hold with dense decode, or the rows a top-k selected
 * with sparse decode. {@link PagedKvCache} keeps it in host memory; {@link DeviceKvCache} on a
 * GPU. Not thread-safe: one decoding loop owns a cache (separate caches on separate threads
 * are fine).
 */
public interface KvCache extends AutoCloseable {
    CacheLayout layout();

    int dQk();

    int blockSize();

    int maxBatch();

    /** Tokens cached for sequence i. */
    int length(int i);

    /** Bytes the cache pool takes. */
    long bytes();

    /** Element type of a PLAIN cache; FLOAT for the FP8 layouts (rows are quantised on append). */
    DataType rowType();

    /**
     * The query type decode takes: a PLAIN cache's row type; for FP8 caches BFLOAT16 on a GPU
     * (the tensor-core path) and null on the host (any floating-point type).
     */
    DataType queryType();

    /** Appends {@code rows [b, n, dQk]} to sequences 0..b-1 (n tokens each). */
    void append(INDArray rows);

    /**
     * Dense decode of {@code q [b, s_q, h_q, dQk]} against sequences 0..b-1.
     *
     * @return [out [b, s_q, h_q, dV] in q's type, lse float32 [b, h_q, s_q]]
     */
    default INDArray[] decode(INDArray q, int dV, boolean causal, double softmaxScale) {
        return decode(q, dV, causal, softmaxScale, null, null, null);
    }

    /** Dense decode with an optional sink [h_q] and VVPA output rotation (positions [b, s_q]). */
    INDArray[] decode(INDArray q, int dV, boolean causal, double softmaxScale, INDArray sink,
                      INDArray outPositions, RopeConfig rope);

    /**
     * Sparse decode (ops.md section 2) of {@code q [b, s_q, h_q, dQk]} over the rows of this
     * cache that {@code indices INT [b, s_q, topk]} select: slots {@code block * blockSize +
     * offset} of the pool (see {@link #slots}); a negative slot or one past the pool is skipped.
     * Only the first {@code topkLength[i]} entries of request i count when {@code topkLength
     * INT [b]} is given. {@code extra} (optional) is a second key set, a cache of the same kind
     * with its own indices and lengths, in the same softmax. Optional: {@code sink FLOAT [h_q]},
     * the VVPA output rotation ({@code outPositions INT [b, s_q]} with {@code rope}).
     *
     * @return [out [b, s_q, h_q, dV] in q's type, lse float32 [b, h_q, s_q]]
     */
    INDArray[] sparseDecode(INDArray q, int dV, double softmaxScale, INDArray indices, INDArray topkLength,
                            SparseKeys extra, INDArray sink, INDArray outPositions, RopeConfig rope);

    /** Sparse decode over this cache alone, without sink or rotation. */
    default INDArray[] sparseDecode(INDArray q, int dV, double softmaxScale, INDArray indices, INDArray topkLength) {
        return sparseDecode(q, dV, softmaxScale, indices, topkLength, null, null, null, null);
    }

    /**
     * The slots sparse decode takes for token positions: {@code positions INT [b, ...]} holds
     * positions of sequence i in row i (e.g. a top-k over that sequence); each becomes
     * {@code block * blockSize + offset} of the block that holds it, or -1 when the sequence
     * does not hold that position.
     */
    INDArray slots(INDArray positions);

    /** Forgets sequence i and returns its blocks to the pool. */
    void reset(int i);

    /** Frees what the cache holds outside the Java heap (device memory); a no-op on the host. */
    @Override
    default void close() {}
}
