package org.mla4j.tests;

import org.mla4j.ops.CacheLayout;
import org.mla4j.ops.RopeConfig;
import org.mla4j.ops.SparseDecode;
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
 * One sparse-decode problem (ops.md section 2), checked against the float64 reference: fields
 * set by a test, then {@link #build} and {@link #check} (or {@link #run}). Cache rows no
 * counted index selects are garbage (NaN rows, NaN codes and scales). Runs wherever the
 * placement switch sends the op (the CPU, or a GPU in the gpu-tagged tests).
 */
public final class SparseDecodeCase {

    /** One key set: its layout, geometry and how its indices are drawn. */
    public static final class KeySpec {
        public CacheLayout layout = CacheLayout.PLAIN;
        public int numBlocks = 3, blockSize = 16, topk = 37;
        public boolean topkLength;
        /** Share of entries that are invalid (negative or past the cache). */
        public double invalid = 0.2;
    }

    public DataType type = DataType.FLOAT;
    public int b = 2, sQ = 1, hQ = 4, dQk = 24, dV = 24;
    public KeySpec keys = new KeySpec();
    public KeySpec extra;
    public Sink sink = Sink.NONE;
    public int ropeDim;

    /** Built by {@link #build}: the op's inputs, options and the reference problem. */
    public INDArray q, sinkArr, positions;
    public INDArray[] keyArrays = new INDArray[3], extraArrays = new INDArray[3];
    public SparseDecode.Options options;
    public Ref.SparseDecode ref;
    public String ctx;

    public String describe() {
        return "sparse decode " + type + " b=" + b + " s_q=" + sQ + " h_q=" + hQ + " d=" + dQk + "/" + dV
                + " keys=" + describe(keys) + (extra != null ? " extra=" + describe(extra) : "") + " sink=" + sink
                + (ropeDim > 0 ? " vvpa=" + ropeDim : "");
    }

    private static String describe(KeySpec k) {
        return k.layout + "[" + k.numBlocks + "x" + k.blockSize + ", topk " + k.topk + (k.topkLength ? ", lengths" : "")
                + ", invalid " + k.invalid + "]";
    }

    /** Indices [b, sQ, topk]: distinct valid entries mixed with invalid ones. */
    private static int[] indices(TestRandom r, KeySpec k, int rows) {
        int keys = k.numBlocks * k.blockSize;
        int[] idx = new int[rows * k.topk];
        for (int row = 0; row < rows; row++) {
            int[] pick = r.distinct(keys, Math.min(keys, k.topk));
            for (int e = 0; e < k.topk; e++) {
                int v = e < pick.length ? pick[e] : -1;
                if (r.nextDouble() < k.invalid) v = r.nextBoolean() ? -1 - r.nextInt(5) : keys + r.nextInt(50);
                idx[row * k.topk + e] = v;
            }
        }
        return idx;
    }

    private static int[] lengths(TestRandom r, KeySpec k, int b) {
        if (!k.topkLength) return null;
        int[] len = new int[b];
        for (int i = 0; i < b; i++) len[i] = i == 0 ? 0 : r.between(0, k.topk + 3);
        return len;
    }

    /** Tokens that no counted entry selects: garbage. */
    private static boolean[] garbage(KeySpec k, int[] idx, int[] len, int b, int sQ) {
        boolean[] g = new boolean[k.numBlocks * k.blockSize];
        java.util.Arrays.fill(g, true);
        for (int i = 0; i < b; i++)
            for (int j = 0; j < sQ; j++) {
                int count = len == null ? k.topk : Math.max(0, Math.min(k.topk, len[i]));
                for (int e = 0; e < count; e++) {
                    int v = idx[(i * sQ + j) * k.topk + e];
                    if (v >= 0 && v < g.length) g[v] = false;
                }
            }
        return g;
    }

    private Ref.KeySet keySet(TestRandom r, KeySpec k, INDArray[] arrays) {
        int[] idx = indices(r, k, b * sQ);
        int[] len = lengths(r, k, b);
        Caches.Built cache = Caches.random(r, k.layout, type, k.numBlocks, k.blockSize, 1, dQk, garbage(k, idx, len, b, sQ));
        arrays[0] = cache.array;
        arrays[1] = Nd.ints(idx, b, sQ, k.topk);
        arrays[2] = len == null ? null : Nd.ints(len, b);
        Ref.KeySet s = new Ref.KeySet();
        s.cache = cache.paged;
        s.indices = idx;
        s.topk = k.topk;
        s.topkLength = len;
        return s;
    }

    /** Draws the inputs and the reference problem. */
    public SparseDecodeCase build(TestRandom r) {
        if (keys.layout.isFp8()) dQk = keys.layout.dQk();
        q = Nd.array(r.normal(b * sQ * hQ * dQk), type, b, sQ, hQ, dQk);
        ref = new Ref.SparseDecode();
        ref.keys = keySet(r, keys, keyArrays);
        ref.extra = extra == null ? null : keySet(r, extra, extraArrays);
        double[] sinkValues = Problems.sink(r, sink, hQ);
        RopeConfig rope = ropeDim > 0 ? Problems.rope(r, ropeDim) : null;
        int[] pos = ropeDim > 0 ? Problems.positions(r, b * sQ, 50000) : null;
        double scale = Problems.defaultScale(dQk) * (0.5 + r.nextDouble());
        options = new SparseDecode.Options(dV).softmaxScale(scale);
        if (keys.layout.isFp8()) options.fp8(keys.layout, keys.blockSize);
        if (extra != null && extra.layout.isFp8()) options.extraFp8(extra.layout, extra.blockSize);
        if (rope != null) options.rope(rope);
        sinkArr = sinkValues == null ? null : Nd.floats(sinkValues, hQ);
        positions = pos == null ? null : Nd.ints(pos, b, sQ);

        ref.b = b;
        ref.sQ = sQ;
        ref.hQ = hQ;
        ref.dQk = dQk;
        ref.dV = dV;
        ref.q = Nd.values(q);
        ref.scale = (float) scale;
        ref.sink = Problems.asFloat(sinkValues);
        ref.positions = pos;
        ref.rope = rope;
        ctx = describe() + (rope != null ? " " + rope : "") + "; " + r.tag();
        return this;
    }

    /** The eager op on the built inputs. */
    public SparseDecode op() {
        return new SparseDecode(q, keyArrays[0], keyArrays[1], keyArrays[2], extraArrays[0], extraArrays[1],
                extraArrays[2], sinkArr, positions, options);
    }

    /** Runs the op into NaN-poisoned outputs, compares them with the reference and returns [out, lse]. */
    public INDArray[] check() {
        SparseDecode op = op();
        INDArray out = Nd.nanFilled(type, b, sQ, hQ, dV);
        INDArray lse = Nd.nanFilled(DataType.FLOAT, b, hQ, sQ);
        op.addOutputArgument(out, lse);
        Nd4j.exec(op);
        Ref.Result want = Ref.sparseDecode(ref);
        Compare.output("out", out, want.out, Compare.tolerance(type), ctx);
        Compare.closeAbs("lse", lse, want.lse, Compare.LSE_TOL, ctx);
        return new INDArray[] {out, lse};
    }

    /** {@link #build} then {@link #check}. */
    public INDArray[] run(TestRandom r) {
        return build(r).check();
    }
}
