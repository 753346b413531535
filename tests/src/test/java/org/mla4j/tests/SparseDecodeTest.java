package org.mla4j.tests;

import static org.junit.jupiter.api.Assertions.assertEquals;

import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;
import org.junit.jupiter.params.provider.ValueSource;
import org.mla4j.Mla4j;
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
 * Sparse decode (ops.md section 2) against the float64 reference: V32, MODEL1 and PLAIN caches,
 * two key sets in one softmax, topk_length, invalid indices, garbage (NaN) in every cache row
 * that no counted index selects.
 */
class SparseDecodeTest {

    @BeforeAll
    static void install() {
        Mla4j.install();
    }

    /** One key set: its layout, geometry and how its indices are drawn. */
    static final class KeySpec {
        CacheLayout layout = CacheLayout.PLAIN;
        int numBlocks = 3, blockSize = 16, topk = 37;
        boolean topkLength;
        /** Share of entries that are invalid (negative or past the cache). */
        double invalid = 0.2;
    }

    /** One sparse-decode problem; fields set by a test, then {@link #run}. */
    static final class Case {
        DataType type = DataType.FLOAT;
        int b = 2, sQ = 1, hQ = 4, dQk = 24, dV = 24;
        KeySpec keys = new KeySpec();
        KeySpec extra;
        Sink sink = Sink.NONE;
        int ropeDim;

        String describe() {
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

        void run(TestRandom r) {
            if (keys.layout.isFp8()) dQk = keys.layout.dQk();
            INDArray q = Nd.array(r.normal(b * sQ * hQ * dQk), type, b, sQ, hQ, dQk);
            INDArray[] k1 = new INDArray[3], k2 = new INDArray[3];
            Ref.SparseDecode d = new Ref.SparseDecode();
            d.keys = keySet(r, keys, k1);
            d.extra = extra == null ? null : keySet(r, extra, k2);
            double[] sinkValues = Problems.sink(r, sink, hQ);
            RopeConfig rope = ropeDim > 0 ? Problems.rope(r, ropeDim) : null;
            int[] pos = ropeDim > 0 ? Problems.positions(r, b * sQ, 50000) : null;
            double scale = Problems.defaultScale(dQk) * (0.5 + r.nextDouble());
            SparseDecode.Options o = new SparseDecode.Options(dV).softmaxScale(scale);
            if (keys.layout.isFp8()) o.fp8(keys.layout, keys.blockSize);
            if (extra != null && extra.layout.isFp8()) o.extraFp8(extra.layout, extra.blockSize);
            if (rope != null) o.rope(rope);
            SparseDecode op = new SparseDecode(q, k1[0], k1[1], k1[2], k2[0], k2[1], k2[2],
                    sinkValues == null ? null : Nd.floats(sinkValues, hQ), pos == null ? null : Nd.ints(pos, b, sQ), o);
            INDArray out = Nd.nanFilled(type, b, sQ, hQ, dV);
            INDArray lse = Nd.nanFilled(DataType.FLOAT, b, hQ, sQ);
            op.addOutputArgument(out, lse);
            Nd4j.exec(op);

            d.b = b;
            d.sQ = sQ;
            d.hQ = hQ;
            d.dQk = dQk;
            d.dV = dV;
            d.q = Nd.values(q);
            d.scale = (float) scale;
            d.sink = Problems.asFloat(sinkValues);
            d.positions = pos;
            d.rope = rope;
            Ref.Result want = Ref.sparseDecode(d);
            String ctx = describe() + (rope != null ? " " + rope : "") + "; " + r.tag();
            Compare.output("out", out, want.out, Compare.tolerance(type), ctx);
            Compare.closeAbs("lse", lse, want.lse, Compare.LSE_TOL, ctx);
        }
    }

    @ParameterizedTest
    @ValueSource(strings = {"FLOAT", "DOUBLE", "HALF", "BFLOAT16"})
    void plainCacheAllTypes(String type) {
        TestRandom r = TestRandom.create();
        Case c = new Case();
        c.type = DataType.valueOf(type);
        c.sQ = 2;
        c.dV = 16;
        c.keys.topkLength = true;
        c.sink = Sink.FINITE;
        c.run(r);
    }

    @ParameterizedTest
    @ValueSource(strings = {"FLOAT", "DOUBLE", "HALF", "BFLOAT16"})
    void fp8CachesAllQueryTypes(String type) {
        TestRandom r = TestRandom.create();
        for (CacheLayout l : new CacheLayout[] {Caches.V32_SMALL, Caches.MODEL1_SMALL}) {
            Case c = new Case();
            c.type = DataType.valueOf(type);
            c.keys.layout = l;
            c.dV = l.valueDims();
            c.sQ = 2;
            c.keys.topkLength = true;
            c.sink = Sink.FINITE;
            c.ropeDim = l.kind == CacheLayout.KIND_MODEL1 ? 16 : 0;
            c.run(r);
        }
    }

    /** DeepSeek sizes: V3.2 (V32, d 576 / 512) and V4 (MODEL1 window + compressed extra set, VVPA). */
    @Test
    void deepSeekSizes() {
        TestRandom r = TestRandom.create();
        Case v32 = new Case();
        v32.type = DataType.BFLOAT16;
        v32.keys.layout = CacheLayout.V32;
        v32.keys.numBlocks = 4;
        v32.keys.blockSize = 64;
        v32.keys.topk = 100;
        v32.hQ = 16;
        v32.dV = 512;
        v32.run(r);
        Case v4 = new Case();
        v4.type = DataType.BFLOAT16;
        v4.keys.layout = CacheLayout.MODEL1;
        v4.keys.numBlocks = 2;
        v4.keys.blockSize = 64;
        v4.keys.topk = 70;
        v4.extra = new KeySpec();
        v4.extra.layout = CacheLayout.MODEL1;
        v4.extra.numBlocks = 3;
        v4.extra.blockSize = 64;
        v4.extra.topk = 45;
        v4.extra.topkLength = true;
        v4.hQ = 8;
        v4.dV = 512;
        v4.sink = Sink.FINITE;
        v4.ropeDim = 64;
        v4.run(r);
    }

    @ParameterizedTest
    @ValueSource(ints = {1, 2, 61, 64, 256})
    void blockSizes(int bs) {
        TestRandom r = TestRandom.create();
        Case c = new Case();
        c.keys.layout = Caches.MODEL1_SMALL;
        c.keys.blockSize = bs;
        c.keys.numBlocks = bs >= 61 ? 2 : 40;
        c.keys.topk = 45;
        c.dV = c.keys.layout.valueDims();
        c.hQ = 3;
        c.run(r);
    }

    @ParameterizedTest
    @ValueSource(ints = {1, 3, 16, 64, 128})
    void queryHeads(int hQ) {
        TestRandom r = TestRandom.create();
        Case c = new Case();
        c.hQ = hQ;
        c.dQk = 16;
        c.dV = 16;
        c.keys.topk = 20;
        c.sink = Sink.MIXED;
        c.run(r);
    }

    @ParameterizedTest
    @ValueSource(ints = {1, 2, 4})
    void queriesPerRequest(int sQ) {
        TestRandom r = TestRandom.create();
        Case c = new Case();
        c.sQ = sQ;
        c.keys.topkLength = true;
        c.extra = new KeySpec();
        c.extra.numBlocks = 2;
        c.extra.blockSize = 8;
        c.extra.topk = 9;
        c.run(r);
    }

    @ParameterizedTest
    @EnumSource(Sink.class)
    void sinks(Sink sink) {
        TestRandom r = TestRandom.create();
        Case c = new Case();
        c.sink = sink;
        c.hQ = 6;
        c.keys.layout = Caches.V32_SMALL;
        c.dV = c.keys.layout.valueDims();
        c.run(r);
    }

    /** Two key sets in one softmax, the extra set in another layout with the same value dims. */
    @Test
    void twoKeySets() {
        TestRandom r = TestRandom.create();
        Case c = new Case();
        c.type = DataType.BFLOAT16;
        c.keys.layout = Caches.MODEL1_SMALL;
        c.keys.topkLength = true;
        c.extra = new KeySpec();
        c.extra.layout = CacheLayout.PLAIN;
        c.extra.topk = 11;
        c.extra.topkLength = true;
        c.dV = c.keys.layout.valueDims();
        c.sQ = 2;
        c.sink = Sink.FINITE;
        c.run(r);
    }

    @Test
    void allIndicesInvalid() {
        TestRandom r = TestRandom.create();
        for (Sink sink : new Sink[] {Sink.NONE, Sink.MIXED}) {
            Case c = new Case();
            c.keys.invalid = 1.0;
            c.keys.layout = Caches.V32_SMALL;
            c.dV = c.keys.layout.valueDims();
            c.extra = new KeySpec();
            c.extra.layout = Caches.V32_SMALL;
            c.extra.invalid = 1.0;
            c.sink = sink;
            c.run(r);
        }
    }

    /** topk_length 0 for every request, and an empty cache (no blocks) as the extra set. */
    @Test
    void topkLengthZeroAndEmptyCache() {
        TestRandom r = TestRandom.create();
        int b = 2, hQ = 2, d = 8;
        INDArray q = Nd.floats(r.normal(b * hQ * d), b, 1, hQ, d);
        INDArray cache = Nd.floats(r.normal(2 * 4 * d), 2, 4, 1, d);
        INDArray idx = Nd.ints(new int[] {0, 1, 2, 3, 4, 5}, b, 1, 3);
        INDArray empty = Nd4j.create(DataType.FLOAT, 0, 4, 1, d);
        INDArray emptyIdx = Nd.ints(new int[] {0, -1, 3, 0}, b, 1, 2);
        SparseDecode op = new SparseDecode(q, cache, idx, Nd.ints(new int[] {0, 0}, b), empty, emptyIdx, null, null, null,
                new SparseDecode.Options(d));
        INDArray out = Nd.nanFilled(DataType.FLOAT, b, 1, hQ, d);
        INDArray lse = Nd.nanFilled(DataType.FLOAT, b, hQ, 1);
        op.addOutputArgument(out, lse);
        Nd4j.exec(op);
        Compare.output("out", out, new double[b * hQ * d], 1e-5, r.tag());
        for (double v : Nd.values(lse)) assertEquals(Double.POSITIVE_INFINITY, v, r.tag());
    }

    @Test
    void stridedInputsGiveTheSameResult() {
        TestRandom r = TestRandom.create();
        INDArray q = Nd.floats(r.normal(2 * 2 * 4 * 16), 2, 2, 4, 16);
        INDArray cache = Nd.floats(r.normal(3 * 8 * 16), 3, 8, 1, 16);
        INDArray idx = Nd.ints(new int[] {0, 5, 23, -1, 7, 8, 9, 30, 2, 3, 4, 1, 11, 12, 13, 14}, 2, 2, 4);
        SparseDecode.Options o = new SparseDecode.Options(16);
        INDArray[] base = Nd4j.exec(new SparseDecode(q, cache, idx, null, null, null, null, null, null, o));
        INDArray[] got = Nd4j.exec(new SparseDecode(Nd.strided(q), Nd.offsetView(cache), Nd.strided(idx), null, null, null,
                null, null, null, o));
        Compare.identical("out", got[0], base[0], r.tag());
        Compare.identical("lse", got[1], base[1], r.tag());
    }
}
