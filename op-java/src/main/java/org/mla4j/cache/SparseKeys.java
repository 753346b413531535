package org.mla4j.cache;

import org.mla4j.MlaException;
import org.nd4j.linalg.api.ndarray.INDArray;

/**
 * The extra key set of a sparse decode (ops.md section 2): another cache of the same kind
 * (V4 keeps its compressed entries there beside the sliding window), the slots of it each
 * query attends ({@code indices INT [b, s_q, extra_topk]}, {@code block * blockSize + offset};
 * {@link KvCache#slots} turns token positions into slots) and optionally how many of them
 * count per request ({@code topkLength INT [b]}). Both key sets share one softmax.
 */
public record SparseKeys(KvCache cache, INDArray indices, INDArray topkLength) {

    public SparseKeys {
        if (cache == null || indices == null) {
            throw new MlaException("SparseKeys: cache and indices must not be null (topkLength may be)");
        }
    }

    /** A key set whose every index counts. */
    public SparseKeys(KvCache cache, INDArray indices) {
        this(cache, indices, null);
    }
}
