package org.mla4j.tests;

import static org.junit.jupiter.api.Assertions.assertEquals;

import java.util.ArrayList;
import java.util.List;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;
import org.junit.jupiter.params.provider.ValueSource;
import org.mla4j.Mla4j;
import org.mla4j.ops.RopeConfig;
import org.mla4j.ops.SparsePrefill;
import org.mla4j.ops.SparsePrefillBp;
import org.mla4j.tests.reference.Ref;
import org.mla4j.tests.support.Compare;
import org.mla4j.tests.support.Nd;
import org.mla4j.tests.support.Problems;
import org.mla4j.tests.support.Problems.Sink;
import org.mla4j.tests.support.TestRandom;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;

/**
 * Sparse prefill forward (out, max_logit, lse) and backward (dq, dkv, dsink) of ops.md
 * section 3 against the float64 reference; kv rows that no counted index selects hold NaN.
 */
class SparsePrefillTest {

    @BeforeAll
    static void install() {
        Mla4j.install();
    }

    /** One sparse-prefill problem; fields set by a test, then {@link #build}. */
    static final class Case {
        DataType type = DataType.FLOAT;
        int sQ = 5, sKv = 30, hQ = 4, hKv = 1, dQk = 24, dV = 16, topk = 13;
        boolean topkLength;
        double invalid = 0.2;
        Sink sink = Sink.NONE;
        int ropeDim;
        /** NaN in the kv rows no query selects (off for finite differences). */
        boolean garbage = true;

        INDArray q, kv, indices, lengths, sinkArr, positions;
        double scale;
        RopeConfig rope;
        Ref.SparsePrefill ref;
        String ctx;

        Case build(TestRandom r) {
            int[] idx = new int[sQ * hKv * topk];
            for (int row = 0; row < sQ * hKv; row++) {
                int[] pick = r.distinct(sKv, Math.min(sKv, topk));
                for (int e = 0; e < topk; e++) {
                    int v = e < pick.length ? pick[e] : -1;
                    if (r.nextDouble() < invalid) v = r.nextBoolean() ? -1 - r.nextInt(3) : sKv + r.nextInt(20);
                    idx[row * topk + e] = v;
                }
            }
            int[] len = null;
            if (topkLength) {
                len = new int[sQ];
                for (int i = 0; i < sQ; i++) len[i] = i == 0 ? 0 : r.between(0, topk + 2);
            }
            double[] kvValues = r.normal(sKv * hKv * dQk);
            if (garbage) {
                boolean[] used = new boolean[sKv];
                for (int i = 0; i < sQ; i++)
                    for (int g = 0; g < hKv; g++) {
                        int count = len == null ? topk : Math.max(0, Math.min(topk, len[i]));
                        for (int e = 0; e < count; e++) {
                            int v = idx[(i * hKv + g) * topk + e];
                            if (v >= 0 && v < sKv) used[v] = true;
                        }
                    }
                for (int row = 0; row < sKv; row++) {
                    if (used[row]) continue;
                    for (int c = 0; c < hKv * dQk; c++) kvValues[row * hKv * dQk + c] = Double.NaN;
                }
            }
            q = Nd.array(r.normal(sQ * hQ * dQk), type, sQ, hQ, dQk);
            kv = Nd.array(kvValues, type, sKv, hKv, dQk);
            indices = Nd.ints(idx, sQ, hKv, topk);
            lengths = len == null ? null : Nd.ints(len, sQ);
            double[] s = Problems.sink(r, sink, hQ);
            sinkArr = s == null ? null : Nd.floats(s, hQ);
            rope = ropeDim > 0 ? Problems.rope(r, ropeDim) : null;
            int[] pos = ropeDim > 0 ? Problems.positions(r, sQ, 50000) : null;
            positions = pos == null ? null : Nd.ints(pos, sQ);
            scale = Problems.defaultScale(dQk) * (0.5 + r.nextDouble());

            ref = new Ref.SparsePrefill();
            ref.sQ = sQ;
            ref.sKv = sKv;
            ref.hQ = hQ;
            ref.hKv = hKv;
            ref.dQk = dQk;
            ref.dV = dV;
            ref.topk = topk;
            ref.q = Nd.values(q);
            ref.kv = Nd.values(kv);
            ref.indices = idx;
            ref.topkLength = len;
            ref.scale = (float) scale;
            ref.sink = Problems.asFloat(s);
            ref.positions = pos;
            ref.rope = rope;
            ctx = "sparse prefill " + type + " s_q=" + sQ + " s_kv=" + sKv + " h_q=" + hQ + " h_kv=" + hKv + " d=" + dQk + "/"
                    + dV + " topk=" + topk + (topkLength ? " lengths" : "") + " invalid=" + invalid + " sink=" + sink
                    + (rope != null ? " vvpa " + rope : "") + "; " + r.tag();
            return this;
        }

        SparsePrefill op() {
            return new SparsePrefill(q, kv, indices, lengths, sinkArr, positions, dV, scale, rope);
        }

        INDArray[] inputs() {
            List<INDArray> l = new ArrayList<>();
            for (INDArray a : new INDArray[] {q, kv, indices, lengths, sinkArr, positions}) if (a != null) l.add(a);
            return l.toArray(new INDArray[0]);
        }
    }

    static INDArray[] forward(Case c) {
        INDArray out = Nd.nanFilled(c.type, c.sQ, c.hQ, c.dV);
        INDArray maxLogit = Nd.nanFilled(DataType.FLOAT, c.sQ, c.hQ);
        INDArray lse = Nd.nanFilled(DataType.FLOAT, c.sQ, c.hQ);
        SparsePrefill op = c.op();
        op.addOutputArgument(out, maxLogit, lse);
        Nd4j.exec(op);
        Ref.Result want = Ref.sparsePrefill(c.ref);
        Compare.output("out", out, want.out, Compare.tolerance(c.type), c.ctx);
        Compare.closeAbs("max_logit", maxLogit, want.maxLogit, Compare.LSE_TOL, c.ctx);
        Compare.closeAbs("lse", lse, want.lse, Compare.LSE_TOL, c.ctx);
        return new INDArray[] {out, maxLogit, lse};
    }

    /** The op's gradients (dq, dkv, [dsink]) for dOut, outputs poisoned first. */
    static INDArray[] backward(Case c, INDArray[] fwd, double[] dOut) {
        List<INDArray> in = new ArrayList<>(List.of(c.inputs()));
        in.add(fwd[0]);
        in.add(fwd[2]);
        in.add(Nd.array(dOut, c.type, c.sQ, c.hQ, c.dV));
        SparsePrefillBp bp = new SparsePrefillBp(in.toArray(new INDArray[0]), c.op());
        List<INDArray> outs = new ArrayList<>(List.of(Nd.nanFilled(c.type, c.q.shape()), Nd.nanFilled(c.type, c.kv.shape())));
        if (c.sinkArr != null) outs.add(Nd.nanFilled(DataType.FLOAT, c.hQ));
        bp.addOutputArgument(outs.toArray(new INDArray[0]));
        assertEquals(outs.size(), Nd4j.exec(bp).length, c.ctx);
        return outs.toArray(new INDArray[0]);
    }

    static void checkBoth(Case c, TestRandom r) {
        INDArray[] fwd = forward(c);
        double[] dOut = Nd.roundTo(r.normal(c.sQ * c.hQ * c.dV), c.type);
        INDArray[] g = backward(c, fwd, dOut);
        Ref.SparsePrefillGrad want = Ref.sparsePrefillGrad(c.ref, dOut);
        double tol = Compare.tolerance(c.type);
        Compare.close("dq", g[0], want.dq, tol, c.ctx);
        Compare.close("dkv", g[1], want.dkv, tol, c.ctx);
        if (c.sinkArr != null) Compare.close("dsink", g[2], want.dsink, tol, c.ctx);
    }

    @ParameterizedTest
    @ValueSource(strings = {"FLOAT", "DOUBLE", "HALF", "BFLOAT16"})
    void allTypes(String type) {
        TestRandom r = TestRandom.create();
        Case c = new Case();
        c.type = DataType.valueOf(type);
        c.topkLength = true;
        c.sink = Sink.FINITE;
        checkBoth(c.build(r), r);
    }

    @ParameterizedTest
    @ValueSource(ints = {1, 3, 16, 64, 128})
    void queryHeads(int hQ) {
        TestRandom r = TestRandom.create();
        Case c = new Case();
        c.hQ = hQ;
        c.hKv = hQ % 2 == 0 ? 2 : 1;
        c.sQ = 3;
        c.dQk = 16;
        c.dV = 8;
        c.sink = Sink.MIXED;
        checkBoth(c.build(r), r);
    }

    @ParameterizedTest
    @EnumSource(Sink.class)
    void sinks(Sink sink) {
        TestRandom r = TestRandom.create();
        Case c = new Case();
        c.sink = sink;
        c.hQ = 6;
        c.type = DataType.DOUBLE;
        checkBoth(c.build(r), r);
    }

    @Test
    void allIndicesInvalidAndTopkLengthZero() {
        TestRandom r = TestRandom.create();
        Case c = new Case();
        c.invalid = 1.0;
        c.sink = Sink.MIXED;
        checkBoth(c.build(r), r);
        Case z = new Case();
        z.topkLength = true;
        z.sQ = 1; // its only query has topk_length 0
        z.sink = Sink.FINITE;
        checkBoth(z.build(r), r);
    }

    /** topk not a multiple of 64, many queries selecting the same rows (scatter-add in dkv). */
    @Test
    void sharedRowsAndOddTopk() {
        TestRandom r = TestRandom.create();
        Case c = new Case();
        c.sQ = 20;
        c.sKv = 9;
        c.topk = 70;
        c.invalid = 0.5;
        c.hQ = 8;
        c.hKv = 2;
        checkBoth(c.build(r), r);
    }

    @Test
    void vvpa() {
        TestRandom r = TestRandom.create();
        Case c = new Case();
        c.type = DataType.DOUBLE;
        c.dQk = 32;
        c.dV = 32;
        c.ropeDim = 8;
        c.sink = Sink.FINITE;
        checkBoth(c.build(r), r);
    }

    /** DeepSeek V3.2 absorbed sizes (d 576 / 512, one KV head) at a small sequence. */
    @Test
    void absorbedSizes() {
        TestRandom r = TestRandom.create();
        Case c = new Case();
        c.type = DataType.BFLOAT16;
        c.sQ = 6;
        c.sKv = 150;
        c.hQ = 16;
        c.dQk = 576;
        c.dV = 512;
        c.topk = 100;
        c.sink = Sink.FINITE;
        checkBoth(c.build(r), r);
    }

    /** Central differences of sum(out * w) through the float64 forward vs op and reference gradients. */
    @Test
    void finiteDifferences() {
        TestRandom r = TestRandom.create();
        Case c = new Case();
        c.type = DataType.DOUBLE;
        c.sQ = 3;
        c.sKv = 4;
        c.hQ = 2;
        c.dQk = 4;
        c.dV = 3;
        c.topk = 3;
        c.invalid = 0.1;
        c.sink = Sink.FINITE;
        c.ropeDim = 2;
        c.garbage = false;
        c.build(r);
        double[] w = r.normal(c.sQ * c.hQ * c.dV);
        INDArray[] lib = backward(c, Nd4j.exec(c.op()), w);
        Ref.SparsePrefillGrad ref = Ref.sparsePrefillGrad(c.ref, w);
        INDArray[] targets = {c.q, c.kv};
        double[][] refGrads = {ref.dq, ref.dkv};
        String[] names = {"dq", "dkv"};
        for (int t = 0; t < 2; t++) {
            double[] fd = new double[(int) targets[t].length()];
            for (int i = 0; i < fd.length; i++) fd[i] = centralDifference(c, targets[t], i, 1e-6, w);
            Compare.close(names[t] + " (op vs finite differences)", Nd.values(lib[t]), fd, 1e-6, c.ctx);
            Compare.close(names[t] + " (reference vs finite differences)", refGrads[t], fd, 1e-6, c.ctx);
        }
        double[] fdSink = new double[c.hQ];
        for (int h = 0; h < c.hQ; h++) fdSink[h] = centralDifference(c, c.sinkArr, h, 1e-2, w);
        Compare.close("dsink (op vs finite differences)", Nd.values(lib[2]), fdSink, 1e-3, c.ctx);
        Compare.close("dsink (reference vs finite differences)", ref.dsink, fdSink, 1e-3, c.ctx);
    }

    private static double centralDifference(Case c, INDArray x, int i, double h, double[] w) {
        INDArray flat = x.reshape(x.length());
        double x0 = flat.getDouble(i);
        flat.putScalar(i, x0 + h);
        double up = loss(c, w);
        flat.putScalar(i, x0 - h);
        double down = loss(c, w);
        flat.putScalar(i, x0);
        double step = x.dataType() == DataType.FLOAT ? (float) (x0 + h) - (float) (x0 - h) : 2 * h;
        return (up - down) / step;
    }

    private static double loss(Case c, double[] w) {
        double[] out = Nd.values(Nd4j.exec(c.op())[0]);
        double l = 0;
        for (int i = 0; i < out.length; i++) l += out[i] * w[i];
        return l;
    }

    @Test
    void stridedInputsGiveTheSameResult() {
        TestRandom r = TestRandom.create();
        Case c = new Case();
        c.garbage = false;
        c.build(r);
        INDArray[] base = Nd4j.exec(c.op());
        INDArray[] got = Nd4j.exec(new SparsePrefill(Nd.strided(c.q), Nd.offsetView(c.kv), Nd.strided(c.indices), null, null,
                null, c.dV, c.scale, null));
        for (int i = 0; i < 3; i++) Compare.identical("output " + i, got[i], base[i], c.ctx);
    }
}
