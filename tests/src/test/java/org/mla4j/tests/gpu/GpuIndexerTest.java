package org.mla4j.tests.gpu;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.Map;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;
import org.mla4j.Mla4j;
import org.mla4j.MlaException;
import org.mla4j.gpu.Placement;
import org.mla4j.ops.IndexerScores;
import org.mla4j.ops.IndexerTopK;
import org.mla4j.ops.TopK;
import org.mla4j.samediff.SDMla;
import org.mla4j.tests.reference.Formats;
import org.mla4j.tests.reference.Ref;
import org.mla4j.tests.support.Compare;
import org.mla4j.tests.support.GpuTests;
import org.mla4j.tests.support.Nd;
import org.mla4j.tests.support.TestRandom;
import org.nd4j.autodiff.samediff.SDVariable;
import org.nd4j.autodiff.samediff.SameDiff;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;

/**
 * The lightning indexer and top-k under the placement switch ({@code Mla4j.useGpu(0)}): the ops
 * run on the GPU over host arrays. Scores must match the float64 reference (ops.md section 8)
 * on DeepSeek's shape (h 64, d 128: the tensor-core kernel) and on others (the CUDA-core
 * kernel); the fused top-k must be exactly the top-k of the GPU's own scores, and the plain
 * top-k exactly the reference's (the rules leave no freedom), eagerly and inside SameDiff.
 */
@Tag("gpu")
class GpuIndexerTest {

    @BeforeAll
    static void gpu() {
        GpuTests.requireGpu();
        Mla4j.useGpu(0);
    }

    @AfterAll
    static void back() {
        Placement.reset();
    }

    /** Indexer inputs and the values the op sees (FP8: bytes times row scales). */
    private static final class Inputs {
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
            q = Nd.array(r.normal(b * sQ * h * d, 0.5), t, b, sQ, h, d);
            k = Nd.array(r.normal(b * sK * d, 0.5), t, b, sK, d);
            w = Nd.array(r.normal(b * sQ * h, 0.25), DataType.FLOAT, b, sQ, h);
            qv = Nd.values(q);
            kv = Nd.values(k);
            wv = Nd.values(w);
        }

        /** FP8 q and k: e4m3 bytes with one float32 scale per row. */
        Inputs(TestRandom r, int b, int sQ, int sK, int h, int d) {
            this.b = b;
            this.sQ = sQ;
            this.sK = sK;
            this.h = h;
            this.d = d;
            double[] qs = new double[b * sQ * h], ks = new double[b * sK];
            int[] qb = fp8Rows(r, b * sQ * h, d, qs), kb = fp8Rows(r, b * sK, d, ks);
            q = Nd.bytes(qb, b, sQ, h, d);
            k = Nd.bytes(kb, b, sK, d);
            qScale = Nd.floats(qs, b, sQ, h);
            kScale = Nd.floats(ks, b, sK);
            w = Nd.floats(r.normal(b * sQ * h, 0.25), b, sQ, h);
            qv = dequantize(qb, qs, d);
            kv = dequantize(kb, ks, d);
            wv = Nd.values(w);
        }

        private static int[] fp8Rows(TestRandom r, int rows, int d, double[] scales) {
            int[] bytes = new int[rows * d];
            for (int row = 0; row < rows; row++) {
                double[] x = r.normal(d, 0.5);
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

        INDArray[] arrays() {
            return qScale == null ? new INDArray[] {q, k, w} : new INDArray[] {q, k, w, qScale, kScale};
        }

        double[] reference(boolean causal) {
            return Ref.indexerScores(qv, kv, wv, b, sQ, sK, h, d, causal);
        }

        String describe(boolean causal) {
            return "indexer " + q.dataType() + " b=" + b + " s_q=" + sQ + " s_k=" + sK + " h=" + h + " d=" + d
                    + (causal ? " causal" : "");
        }
    }

    private static INDArray gpuScores(Inputs in, boolean causal) {
        INDArray out = Nd.nanFilled(DataType.FLOAT, in.b, in.sQ, in.sK);
        IndexerScores op = new IndexerScores(in.q, in.k, in.w, in.qScale, in.kScale, causal);
        op.addOutputArgument(out);
        Nd4j.exec(op);
        return out;
    }

    private static INDArray gpuTopK(Inputs in, boolean causal, int topk) {
        INDArray idx = Nd.intPoison(in.b, in.sQ, topk);
        IndexerTopK op = new IndexerTopK(in.q, in.k, in.w, in.qScale, in.kScale, causal, topk);
        op.addOutputArgument(idx);
        Nd4j.exec(op);
        return idx;
    }

    /** Scores on the tensor-core shape (bf16) and on others (CUDA-core kernel), causal or not. */
    @ParameterizedTest
    @ValueSource(strings = {"BFLOAT16", "FLOAT", "HALF"})
    void scoresMatchTheReference(String type) {
        TestRandom r = TestRandom.create();
        DataType t = DataType.valueOf(type);
        for (boolean causal : new boolean[] {true, false}) {
            for (int[] s : new int[][] {{2, 3, 300, 64, 128}, {2, 2, 77, 4, 32}, {1, 9, 5, 64, 128}}) {
                Inputs in = new Inputs(r, t, s[0], s[1], s[2], s[3], s[4]);
                String ctx = in.describe(causal) + "; " + r.tag();
                Compare.close("scores", gpuScores(in, causal), in.reference(causal), 1e-5, ctx);
            }
        }
    }

    @Test
    void fp8ScoresMatchTheReference() {
        TestRandom r = TestRandom.create();
        for (int sQ : new int[] {1, 2, 5}) {
            Inputs in = new Inputs(r, 2, sQ, 500, 64, 128);
            String ctx = in.describe(true) + " fp8; " + r.tag();
            Compare.close("scores", gpuScores(in, true), in.reference(true), 1e-3, ctx);
        }
    }

    /** The fused top-k is the top-k of the GPU's own scores, index for index. */
    @ParameterizedTest
    @ValueSource(ints = {1, 64, 100, 2048})
    void fusedTopKIsTheTopKOfTheScores(int topk) {
        TestRandom r = TestRandom.create();
        for (boolean causal : new boolean[] {true, false}) {
            Inputs in = new Inputs(r, DataType.BFLOAT16, 2, 3, 1500, 64, 128);
            double[] scores = Nd.values(gpuScores(in, causal));
            Ref.TopK want = Ref.topk(scores, in.b * in.sQ, in.sK, topk);
            assertArrayEquals(want.indices, Nd.intValues(gpuTopK(in, causal, topk)),
                    "fused top-k " + topk + "; " + in.describe(causal) + "; " + r.tag());
        }
        Inputs fp8 = new Inputs(r, 1, 4, 700, 64, 128);
        double[] scores = Nd.values(gpuScores(fp8, true));
        assertArrayEquals(Ref.topk(scores, 4, 700, topk).indices, Nd.intValues(gpuTopK(fp8, true, topk)),
                "fused top-k " + topk + " fp8; " + r.tag());
    }

    /** Plain top-k: the reference's indices and values exactly (ties, NaN, infinities, zeros). */
    @Test
    void topkMatchesTheReferenceExactly() {
        TestRandom r = TestRandom.create();
        double[] pool = {-1, 0, -0.0, 0.5, 2, Double.NEGATIVE_INFINITY, Double.NaN, Double.POSITIVE_INFINITY};
        int rows = 5, n = 3000;
        double[] s = new double[rows * n];
        for (int i = 0; i < s.length; i++) s[i] = r.nextInt(4) == 0 ? pool[r.nextInt(pool.length)] : r.normal(1)[0];
        s = Nd.roundTo(s, DataType.FLOAT);
        for (int k : new int[] {1, 77, 2048, 5000}) {
            long[] outShape = Nd.longs(rows, k);
            INDArray idx = Nd.intPoison(outShape);
            INDArray values = Nd.nanFilled(DataType.FLOAT, outShape);
            TopK op = new TopK(Nd.floats(s, rows, n), k);
            op.addOutputArgument(idx, values);
            Nd4j.exec(op);
            Ref.TopK want = Ref.topk(s, rows, n, k);
            assertArrayEquals(want.indices, Nd.intValues(idx), "indices k=" + k + "; " + r.tag());
            assertArrayEquals(want.values, Nd.values(values), 0.0, "values k=" + k + "; " + r.tag());
        }
    }

    /** A graph with both indexer ops: the GPU's scores match the CPU's, its top-k is theirs. */
    @Test
    void sameDiffGraphOnTheGpu() {
        TestRandom r = TestRandom.create();
        Inputs in = new Inputs(r, DataType.BFLOAT16, 2, 2, 900, 64, 128);
        int topk = 256;
        SameDiff sd = SameDiff.create();
        SDVariable vq = sd.placeHolder("q", DataType.BFLOAT16, in.b, in.sQ, in.h, in.d);
        SDMla ops = Mla4j.ops(sd);
        SDVariable k = sd.constant("k", in.k), w = sd.constant("w", in.w);
        ops.indexerScores(vq, k, w, true).rename("scores");
        ops.indexerTopK(vq, k, w, true, topk).rename("topk");
        Map<String, INDArray> onGpu = sd.output(Map.of("q", in.q), "scores", "topk");
        Mla4j.useCpu();
        Map<String, INDArray> onCpu;
        try {
            onCpu = sd.output(Map.of("q", in.q), "scores", "topk");
        } finally {
            Mla4j.useGpu(0);
        }
        double[] gpuScores = Nd.values(onGpu.get("scores"));
        String ctx = in.describe(true) + "; " + r.tag();
        Compare.close("SameDiff scores, GPU vs CPU", gpuScores, Nd.values(onCpu.get("scores")), 1e-5, ctx);
        Compare.close("SameDiff scores, GPU vs reference", gpuScores, in.reference(true), 1e-5, ctx);
        assertArrayEquals(Ref.topk(gpuScores, in.b * in.sQ, in.sK, topk).indices, Nd.intValues(onGpu.get("topk")),
                "SameDiff top-k on the GPU; " + ctx);
        assertEquals(in.b * in.sQ * topk, Nd.intValues(onCpu.get("topk")).length, ctx);
    }

    /** A top-k past what the GPU sorts in shared memory is refused by name, not run wrongly. */
    @Test
    void aTopKBeyondTheDeviceSortIsRefused() {
        TestRandom r = TestRandom.create();
        double[] s = r.normal(2 * 20000);
        MlaException e = assertThrows(MlaException.class, () -> Nd4j.exec(new TopK(Nd.floats(s, 2, 20000), 16385)));
        assertTrue(e.getMessage().contains("mla_topk") && e.getMessage().contains("16384"), e.getMessage());
    }
}
