package org.mla4j.tests;

import org.mla4j.ops.CacheLayout;
import org.mla4j.ops.DenseDecode;
import org.mla4j.ops.RopeConfig;
import org.mla4j.tests.reference.Ref;
import org.mla4j.tests.support.Caches;
import org.mla4j.tests.support.Compare;
import org.mla4j.tests.support.Nd;
import org.mla4j.tests.support.Problems;
import org.mla4j.tests.support.Problems.Sink;
import org.mla4j.tests.support.TestRandom;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;

/**
 * One dense-decode problem over a paged cache, checked against the float64 reference: fields
 * set by a test, then {@link #run}. Cache tokens no request holds, and block-table entries
 * past a request's length, are garbage (NaN rows, out-of-range block ids). Runs wherever the
 * placement switch sends the op (the CPU, or a GPU in the gpu-tagged tests).
 */
public final class DenseDecodeCase {
    public DataType type = DataType.FLOAT;
    public CacheLayout layout = CacheLayout.PLAIN;
    public int b = 2, sQ = 1, hQ = 4, hKv = 1, dQk = 16, dV = 16, blockSize = 4;
    public int[] seqlens;
    public boolean causal = true;
    public Sink sink = Sink.NONE;
    public int ropeDim;

    public String describe() {
        return "dense decode " + type + " " + layout + " b=" + b + " s_q=" + sQ + " h_q=" + hQ + " h_kv=" + hKv
                + " d=" + dQk + "/" + dV + " block=" + blockSize + " seqlens=" + java.util.Arrays.toString(seqlens)
                + (causal ? " causal" : "") + " sink=" + sink + (ropeDim > 0 ? " vvpa=" + ropeDim : "");
    }

    /** Builds random inputs, runs the op with NaN-poisoned outputs and compares. */
    public void run(TestRandom r) {
        if (layout.isFp8()) {
            hKv = 1;
            dQk = layout.dQk();
        }
        if (seqlens == null) {
            seqlens = new int[b];
            for (int i = 0; i < b; i++) seqlens[i] = r.between(0, 3 * blockSize + 1);
        }
        int maxUsed = 0, used = 0;
        for (int len : seqlens) {
            maxUsed = Math.max(maxUsed, (len + blockSize - 1) / blockSize);
            used += (len + blockSize - 1) / blockSize;
        }
        int maxBlocks = maxUsed + 1, numBlocks = used + 2;
        // distinct blocks per request, in random order; entries past a request's length are garbage
        int[] perm = r.permutation(numBlocks);
        int[] table = new int[b * maxBlocks];
        boolean[] garbage = new boolean[numBlocks * blockSize];
        java.util.Arrays.fill(garbage, true);
        int next = 0;
        for (int i = 0; i < b; i++) {
            int blocks = (seqlens[i] + blockSize - 1) / blockSize;
            for (int k = 0; k < maxBlocks; k++) table[i * maxBlocks + k] = k < blocks ? perm[next++] : numBlocks + 1000 + k;
            for (int t = 0; t < seqlens[i]; t++) garbage[table[i * maxBlocks + t / blockSize] * blockSize + t % blockSize] = false;
        }
        Caches.Built cache = Caches.random(r, layout, type, numBlocks, blockSize, hKv, dQk, garbage);
        INDArray q = Nd.array(r.normal(b * sQ * hQ * dQk), type, b, sQ, hQ, dQk);
        double[] sinkValues = Problems.sink(r, sink, hQ);
        RopeConfig rope = ropeDim > 0 ? Problems.rope(r, ropeDim) : null;
        int[] pos = ropeDim > 0 ? Problems.positions(r, b * sQ, 50000) : null;
        double scale = Problems.defaultScale(dQk);
        DenseDecode.Options o = new DenseDecode.Options(dV).causal(causal).softmaxScale(scale);
        if (layout.isFp8()) o.fp8(layout, blockSize);
        if (rope != null) o.rope(rope);
        DenseDecode op = new DenseDecode(q, cache.array, Nd.ints(table, b, maxBlocks), Nd.ints(seqlens, b),
                sinkValues == null ? null : Nd.floats(sinkValues, hQ), pos == null ? null : Nd.ints(pos, b, sQ), o);
        INDArray out = Nd.nanFilled(type, b, sQ, hQ, dV);
        INDArray lse = Nd.nanFilled(DataType.FLOAT, b, hQ, sQ);
        op.addOutputArgument(out, lse);
        Nd4j.exec(op);

        Ref.Decode d = new Ref.Decode();
        d.b = b;
        d.sQ = sQ;
        d.hQ = hQ;
        d.hKv = hKv;
        d.dQk = dQk;
        d.dV = dV;
        d.q = Nd.values(q);
        d.cache = cache.paged;
        d.blockTable = table;
        d.maxBlocks = maxBlocks;
        d.seqlens = seqlens;
        d.causal = causal;
        d.scale = scale;
        d.sink = Problems.asFloat(sinkValues);
        d.positions = pos;
        d.rope = rope;
        Ref.Result want = Ref.decode(d);
        String ctx = describe() + (rope != null ? " " + rope : "") + "; " + r.tag();
        Compare.output("out", out, want.out, Compare.tolerance(type), ctx);
        Compare.closeAbs("lse", lse, want.lse, Compare.LSE_TOL, ctx);
    }
}
