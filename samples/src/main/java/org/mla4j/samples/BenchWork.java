package org.mla4j.samples;

import java.util.HashSet;
import java.util.Set;

/**
 * How work is counted, the way FlashMLA's tests count it (and /work/shared/gpu/README.md quotes).
 * <ul>
 * <li>Attention forward: {@code 2 (d_qk + d_v)} FLOP per (query head, attended key): one
 * multiply-add per dim for q.k and one per dim for p.v. Causal attention counts only the pairs a
 * query may attend (bottom-right aligned); softmax and masking are not counted.</li>
 * <li>Attention backward: {@link #BACKWARD_FACTOR} times the forward of the same shape.</li>
 * <li>Decode (dense or sparse): {@code 2 h_q s_q N (d_qk + d_v)} over the N tokens each query
 * attends; bytes = q + the unique KV rows read (in their stored format) + out.</li>
 * <li>Lightning indexer: {@code 2 h (d + 1)} FLOP per visible (query, key) pair: the h dot products
 * of d dims and the weighted sum of their relu.</li>
 * <li>Memory-bound ops (quantise, append, RoPE, top-k): bytes read + bytes written.</li>
 * </ul>
 */
final class BenchWork {
    /** Backward / forward FLOP ratio used for every backward. */
    static final double BACKWARD_FACTOR = 2.5;

    private BenchWork() {}

    /** Key positions one (batch, head) attends: all s_q * s_k, or, causal, those with key <= query + s_k - s_q. */
    static long attendedPairs(long sQ, long sK, boolean causal) {
        if (!causal) return sQ * sK;
        long pairs = 0;
        for (long j = 0; j < sQ; j++) pairs += Math.max(0, Math.min(sK, sK - sQ + j + 1));
        return pairs;
    }

    /** Forward attention FLOP over b batches and h_q query heads. */
    static double attentionFlops(long b, long hQ, long sQ, long sK, long dQk, long dV, boolean causal) {
        return 2.0 * (dQk + dV) * hQ * b * attendedPairs(sQ, sK, causal);
    }

    /** Decode FLOP: 2 h_q s_q N (d_qk + d_v) summed over requests, N = keys attended per query row. */
    static double decodeFlops(long hQ, long totalQueryRowsTimesKeys, long dQk, long dV) {
        return 2.0 * hQ * totalQueryRowsTimesKeys * (dQk + dV);
    }

    /** Indexer FLOP: 2 h (d + 1) per visible (query, key) pair (dot products, weighted relu sum). */
    static double indexerFlops(long b, long h, long d, long sQ, long sK, boolean causal) {
        return 2.0 * h * (d + 1) * b * attendedPairs(sQ, sK, causal);
    }

    /** Number of distinct valid (>= 0) entries of an index array. */
    static long uniqueValid(int[] indices) {
        Set<Integer> seen = new HashSet<>();
        for (int i : indices) if (i >= 0) seen.add(i);
        return seen.size();
    }
}
