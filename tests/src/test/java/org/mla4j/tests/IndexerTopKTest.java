package org.mla4j.tests;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;
import org.mla4j.Mla4j;
import org.mla4j.ops.IndexerScores;
import org.mla4j.ops.IndexerScoresBp;
import org.mla4j.ops.IndexerTopK;
import org.mla4j.ops.TopK;
import org.mla4j.tests.reference.Formats;
import org.mla4j.tests.reference.Ref;
import org.mla4j.tests.support.Compare;
import org.mla4j.tests.support.Nd;
import org.mla4j.tests.support.TestRandom;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;

/** Lightning indexer scores and their backward, fused indexer top-k and plain top-k (ops.md section 6). */
class IndexerTopKTest {

    @BeforeAll
    static void install() {
        Mla4j.install();
    }

    /** Indexer inputs in a float type, as arrays and as the values the op sees. */
    static final class Inputs {
        final int b, sQ, sK, h, d;
        final INDArray q, k, w;
        INDArray qScale, kScale;
        final double[] qv, kv, wv;

        Inputs(TestRandom r, DataType t, int b, int sQ, int sK, int h, int d) {
            this.b = b;
            this.sQ = sQ;
            this.sK = sK;
            this.h = h;
            this.d = d;
            q = Nd.array(r.normal(b * sQ * h * d), t, b, sQ, h, d);
            k = Nd.array(r.normal(b * sK * d), t, b, sK, d);
            w = Nd.array(r.normal(b * sQ * h, 0.5), t, b, sQ, h);
            qv = Nd.values(q);
            kv = Nd.values(k);
            wv = Nd.values(w);
        }

        /** FP8 q and k: e4m3 bytes with one float32 scale per row (dequantised = byte value * scale). */
        Inputs(TestRandom r, int b, int sQ, int sK, int h, int d) {
            this.b = b;
            this.sQ = sQ;
            this.sK = sK;
            this.h = h;
            this.d = d;
            double[] qs = new double[b * sQ * h], ks = new double[b * sK];
            int[] qb = fp8Rows(r, b * sQ * h, d, qs);
            int[] kb = fp8Rows(r, b * sK, d, ks);
            q = Nd.bytes(qb, b, sQ, h, d);
            k = Nd.bytes(kb, b, sK, d);
            qScale = Nd.floats(qs, b, sQ, h);
            kScale = Nd.floats(ks, b, sK);
            w = Nd.floats(r.normal(b * sQ * h, 0.5), b, sQ, h);
            qv = dequantize(qb, qs, d);
            kv = dequantize(kb, ks, d);
            wv = Nd.values(w);
        }

        private static int[] fp8Rows(TestRandom r, int rows, int d, double[] scales) {
            int[] bytes = new int[rows * d];
            for (int row = 0; row < rows; row++) {
                double[] x = r.normal(d, 2.0);
                double amax = 0;
                for (double v : x) amax = Math.max(amax, Math.abs(v));
                scales[row] = (float) Formats.tileScale(amax);
                for (int c = 0; c < d; c++) bytes[row * d + c] = Formats.toE4m3(x[c] / scales[row]);
            }
            return bytes;
        }

        private static double[] dequantize(int[] bytes, double[] scales, int d) {
            double[] v = new double[bytes.length];
            for (int i = 0; i < v.length; i++) v[i] = Formats.e4m3(bytes[i]) * scales[i / d];
            return v;
        }

        double[] scores(boolean causal) {
            return Ref.indexerScores(qv, kv, wv, b, sQ, sK, h, d, causal);
        }

        String describe() {
            return "indexer " + q.dataType() + "/" + k.dataType() + "/" + w.dataType() + " b=" + b + " s_q=" + sQ + " s_k=" + sK
                    + " h=" + h + " d=" + d;
        }
    }

    private static INDArray scores(Inputs in, boolean causal) {
        INDArray out = Nd.nanFilled(DataType.FLOAT, in.b, in.sQ, in.sK);
        IndexerScores op = new IndexerScores(in.q, in.k, in.w, in.qScale, in.kScale, causal);
        op.addOutputArgument(out);
        Nd4j.exec(op);
        return out;
    }

    @ParameterizedTest
    @ValueSource(strings = {"FLOAT", "DOUBLE", "HALF", "BFLOAT16"})
    void scoresAllTypes(String type) {
        TestRandom r = TestRandom.create();
        for (boolean causal : new boolean[] {true, false}) {
            Inputs in = new Inputs(r, DataType.valueOf(type), 2, 5, 9, 3, 16);
            String ctx = in.describe() + (causal ? " causal" : "") + "; " + r.tag();
            Compare.close("scores", scores(in, causal), in.scores(causal), 1e-5, ctx);
        }
    }

    @Test
    void scoresWithFp8Operands() {
        TestRandom r = TestRandom.create();
        Inputs in = new Inputs(r, 2, 4, 6, 4, 32);
        String ctx = in.describe() + "; " + r.tag();
        Compare.close("scores", scores(in, true), in.scores(true), 1e-5, ctx);
    }

    @Test
    void scoresModerateSize() {
        TestRandom r = TestRandom.create();
        Inputs in = new Inputs(r, DataType.BFLOAT16, 1, 64, 64, 8, 64);
        Compare.close("scores", scores(in, true), in.scores(true), 1e-5, in.describe() + "; " + r.tag());
    }

    @ParameterizedTest
    @ValueSource(strings = {"FLOAT", "DOUBLE", "BFLOAT16"})
    void scoresBackward(String type) {
        TestRandom r = TestRandom.create();
        for (boolean causal : new boolean[] {true, false}) {
            Inputs in = new Inputs(r, DataType.valueOf(type), 2, 4, 6, 3, 8);
            double[] ds = r.normal(in.b * in.sQ * in.sK);
            double[] masked = in.scores(causal);
            // values at masked positions must contribute nothing
            for (int i = 0; i < ds.length; i++) if (masked[i] == Double.NEGATIVE_INFINITY) ds[i] = 1e6;
            ds = Nd.roundTo(ds, DataType.FLOAT);
            INDArray[] outs = {Nd.nanFilled(DataType.FLOAT, in.q.shape()), Nd.nanFilled(DataType.FLOAT, in.k.shape()),
                Nd.nanFilled(DataType.FLOAT, in.w.shape())};
            IndexerScoresBp op = new IndexerScoresBp(in.q, in.k, in.w, Nd.floats(ds, in.b, in.sQ, in.sK), causal);
            op.addOutputArgument(outs);
            Nd4j.exec(op);
            double[][] want = Ref.indexerGrad(in.qv, in.kv, in.wv, ds, in.b, in.sQ, in.sK, in.h, in.d, causal);
            String ctx = in.describe() + (causal ? " causal" : "") + "; " + r.tag();
            Compare.close("dq", outs[0], want[0], 1e-5, ctx);
            Compare.close("dk", outs[1], want[1], 1e-5, ctx);
            Compare.close("dw", outs[2], want[2], 1e-5, ctx);
        }
    }

    /** relu'(0) = 0: a dot product of exactly zero passes no gradient to q or k. */
    @Test
    void reluAtZeroPassesNoGradient() {
        INDArray q = Nd.floats(new double[] {1, -1, 0, 0}, 1, 1, 1, 4);
        INDArray k = Nd.floats(new double[] {1, 1, 0, 0, 2, 0, 0, 0}, 1, 2, 4);
        INDArray w = Nd.floats(new double[] {0.5}, 1, 1, 1);
        INDArray ds = Nd.floats(new double[] {3, 1}, 1, 1, 2);
        INDArray[] g = Nd4j.exec(new IndexerScoresBp(q, k, w, ds, false));
        // key 0: dot 0 -> nothing; key 1: dot 2 -> dq = 1 * 0.5 * k1, dk1 = 0.5 * q, dw = 1 * 2
        assertArrayEquals(new double[] {1, 0, 0, 0}, Nd.values(g[0]), 0.0);
        assertArrayEquals(new double[] {0, 0, 0, 0, 0.5, -0.5, 0, 0}, Nd.values(g[1]), 0.0);
        assertArrayEquals(new double[] {2}, Nd.values(g[2]), 0.0);
    }

    // ---- top-k ------------------------------------------------------------------------------------

    private static void checkTopK(double[] scores, long[] shape, int k, String ctx) {
        int n = (int) shape[shape.length - 1], rows = scores.length / Math.max(n, 1);
        long[] outShape = shape.clone();
        outShape[outShape.length - 1] = k;
        INDArray idx = Nd.intPoison(outShape);
        INDArray values = Nd.nanFilled(DataType.FLOAT, outShape);
        TopK op = new TopK(Nd.floats(scores, shape), k);
        op.addOutputArgument(idx, values);
        Nd4j.exec(op);
        Ref.TopK want = Ref.topk(Nd.roundTo(scores, DataType.FLOAT), rows, n, k);
        assertArrayEquals(want.indices, Nd.intValues(idx), "indices; " + ctx);
        assertArrayEquals(want.values, Nd.values(values), 0.0, "values; " + ctx);
    }

    @Test
    void topkTiesInfinitiesAndNaN() {
        TestRandom r = TestRandom.create();
        double[] pool = {-1, 0, -0.0, 0.5, 2, Double.NEGATIVE_INFINITY, Double.NaN, Double.POSITIVE_INFINITY};
        int rows = 6, n = 23;
        double[] s = new double[rows * n];
        for (int i = 0; i < s.length; i++) s[i] = pool[r.nextInt(pool.length)];
        for (int j = 0; j < n; j++) s[j] = j % 2 == 0 ? Double.NEGATIVE_INFINITY : Double.NaN; // a row with nothing to choose
        for (int k : new int[] {1, 5, 23, 30}) checkTopK(s, Nd.longs(rows, n), k, "k=" + k + "; " + r.tag());
    }

    @Test
    void topkRandomRanks() {
        TestRandom r = TestRandom.create();
        checkTopK(r.normal(2 * 3 * 100), Nd.longs(2, 3, 100), 37, r.tag());
        checkTopK(r.normal(40), Nd.longs(40), 7, r.tag());
        checkTopK(r.normal(3 * 1000), Nd.longs(3, 1000), 65, r.tag());
    }

    /**
     * Fused indexer top-k: -1 exactly past the visible keys, distinct visible indices, best
     * first, and the chosen set is a top set of the reference scores (up to float rounding
     * between near-equal scores).
     */
    @ParameterizedTest
    @ValueSource(ints = {1, 4, 13})
    void indexerTopK(int topk) {
        TestRandom r = TestRandom.create();
        for (boolean causal : new boolean[] {true, false}) {
            Inputs in = new Inputs(r, DataType.FLOAT, 2, 6, 9, 2, 16);
            checkIndexerTopK(in, causal, topk, r);
        }
        checkIndexerTopK(new Inputs(r, 1, 5, 7, 2, 16), true, 3, r);
    }

    private static void checkIndexerTopK(Inputs in, boolean causal, int topk, TestRandom r) {
        INDArray idx = Nd.intPoison(in.b, in.sQ, topk);
        IndexerTopK op = new IndexerTopK(in.q, in.k, in.w, in.qScale, in.kScale, causal, topk);
        op.addOutputArgument(idx);
        Nd4j.exec(op);
        int[] got = Nd.intValues(idx);
        double[] s = in.scores(causal);
        String ctx = in.describe() + " topk=" + topk + (causal ? " causal" : "") + "; " + r.tag();
        for (int row = 0; row < in.b * in.sQ; row++) {
            int t = row % in.sQ;
            int visible = causal ? Math.max(0, Math.min(in.sK, t + in.sK - in.sQ + 1)) : in.sK;
            int count = Math.min(topk, visible);
            boolean[] chosen = new boolean[in.sK];
            double worstChosen = Double.POSITIVE_INFINITY, scale = 1;
            for (int j = 0; j < in.sK; j++) if (j < visible) scale = Math.max(scale, Math.abs(s[row * in.sK + j]));
            double tol = 1e-5 * scale;
            for (int e = 0; e < topk; e++) {
                int v = got[row * topk + e];
                if (e >= count) {
                    assertEquals(-1, v, "row " + row + " entry " + e + " past the visible keys; " + ctx);
                    continue;
                }
                assertTrue(v >= 0 && v < visible && !chosen[v], "row " + row + " entry " + e + " = " + v + "; " + ctx);
                chosen[v] = true;
                double sv = s[row * in.sK + v];
                if (e > 0) {
                    double prev = s[row * in.sK + got[row * topk + e - 1]];
                    assertTrue(prev >= sv - tol, "row " + row + ": not best first at " + e + "; " + ctx);
                }
                worstChosen = Math.min(worstChosen, sv);
            }
            for (int j = 0; j < visible; j++) {
                if (chosen[j]) continue;
                assertTrue(s[row * in.sK + j] <= worstChosen + tol,
                        "row " + row + ": key " + j + " (" + s[row * in.sK + j] + ") beats a chosen one (" + worstChosen + "); " + ctx);
            }
        }
    }
}
