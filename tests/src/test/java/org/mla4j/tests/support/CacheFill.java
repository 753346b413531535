package org.mla4j.tests.support;

import org.mla4j.cache.KvCache;
import org.nd4j.linalg.api.ndarray.INDArray;

/**
 * Fills paged caches the way a decode loop does (appends of varying batch, a sequence reset
 * half-way, so sequences' blocks interleave in the pool) and draws token positions of their
 * sequences for sparse decode, with the slots they must map to, worked out from the block
 * table independently of the caches' own {@code slots}.
 */
public final class CacheFill {
    private CacheFill() {}

    /** Appends the same random rows to every cache (all of one geometry): n tokens per step. */
    public static void fill(TestRandom r, int[] steps, KvCache... caches) {
        KvCache first = caches[0];
        int batch = first.maxBatch(), d = first.dQk();
        for (int s = 0; s < steps.length; s++) {
            int b = s % 2 == 0 ? batch : Math.max(1, batch - 1), n = steps[s];
            INDArray rows = Nd.array(r.normal(b * n * d), first.rowType(), b, n, d);
            for (KvCache c : caches) c.append(rows);
            if (s == steps.length / 2 && batch > 1) {
                for (KvCache c : caches) c.reset(1);
            }
        }
    }

    /**
     * Positions [b, sQ, topk] of sequence i in row i: mostly distinct tokens it holds, some
     * outside it (negative or past its length), which must map to -1.
     */
    public static int[] positions(TestRandom r, KvCache c, int b, int sQ, int topk) {
        int[] p = new int[b * sQ * topk];
        for (int i = 0; i < b; i++) {
            int len = c.length(i);
            for (int j = 0; j < sQ; j++) {
                int[] pick = r.distinct(Math.max(len, 1), Math.min(Math.max(len, 1), topk));
                for (int e = 0; e < topk; e++) {
                    int v = e < pick.length && len > 0 ? pick[e] : -1;
                    if (r.nextDouble() < 0.15) v = r.nextBoolean() ? -1 - r.nextInt(3) : len + r.nextInt(4);
                    p[(i * sQ + j) * topk + e] = v;
                }
            }
        }
        return p;
    }

    /** The slot of each position: block table entry times block size plus offset, -1 outside. */
    public static int[] slots(KvCache c, INDArray blockTable, int[] positions, int b) {
        int perRow = positions.length / b, bs = c.blockSize();
        int[] s = new int[positions.length];
        for (int i = 0; i < b; i++) {
            for (int k = i * perRow; k < (i + 1) * perRow; k++) {
                int t = positions[k];
                s[k] = t >= 0 && t < c.length(i) ? blockTable.getInt(i, t / bs) * bs + t % bs : -1;
            }
        }
        return s;
    }
}
