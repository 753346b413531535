package org.mla4j.tests;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.ArrayList;
import java.util.List;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;
import org.mla4j.Mla4j;
import org.mla4j.ops.Attention;
import org.mla4j.ops.AttentionBp;
import org.mla4j.tests.reference.Ref;
import org.mla4j.tests.support.AttentionSetup;
import org.mla4j.tests.support.Compare;
import org.mla4j.tests.support.Nd;
import org.mla4j.tests.support.Problems.Sink;
import org.mla4j.tests.support.TestRandom;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;

/**
 * Dense attention backward (ops.md section 4): dq, dk, dv and dsink against the analytic
 * float64 reference, and both against central finite differences on a tiny float64 case.
 */
class AttentionBackwardTest {

    @BeforeAll
    static void install() {
        Mla4j.install();
    }

    /** Gradients from the op: dq, dk, [dv], [dsink], outputs poisoned with NaN first. */
    static INDArray[] backward(AttentionSetup s, double[] dOut) {
        Attention fwd = s.op();
        INDArray[] fo = Nd4j.exec(fwd);
        List<INDArray> in = new ArrayList<>(List.of(s.inputs()));
        in.add(fo[0]);
        in.add(fo[1]);
        in.add(Nd.array(dOut, s.type, s.outShape()));
        AttentionBp bp = new AttentionBp(in.toArray(new INDArray[0]), fwd);
        List<INDArray> outs = new ArrayList<>();
        outs.add(Nd.nanFilled(s.type, s.q.shape()));
        outs.add(Nd.nanFilled(s.type, s.k.shape()));
        if (s.v != null) outs.add(Nd.nanFilled(s.type, s.v.shape()));
        if (s.sinkArr != null) outs.add(Nd.nanFilled(DataType.FLOAT, s.hQ));
        bp.addOutputArgument(outs.toArray(new INDArray[0]));
        INDArray[] res = Nd4j.exec(bp);
        assertEquals(outs.size(), res.length, s.ctx);
        return outs.toArray(new INDArray[0]);
    }

    static void check(AttentionSetup s, TestRandom r) {
        double[] dOut = Nd.roundTo(r.normal((int) prod(s.outShape())), s.type);
        INDArray[] g = backward(s, dOut);
        Ref.AttentionGrad want = Ref.attentionGrad(s.ref, dOut);
        double tol = Compare.tolerance(s.type);
        int next = 0;
        Compare.close("dq", g[next++], want.dq, tol, s.ctx);
        Compare.close("dk", g[next++], want.dk, tol, s.ctx);
        if (s.v != null) Compare.close("dv", g[next++], want.dv, tol, s.ctx);
        if (s.sinkArr != null) Compare.close("dsink", g[next], want.dsink, tol, s.ctx);
    }

    static long prod(long[] shape) {
        long n = 1;
        for (long d : shape) n *= d;
        return n;
    }

    private static AttentionSetup setup(DataType t, int b, int sQ, int sK, int hQ, int hKv, int dQk, int dV) {
        AttentionSetup s = new AttentionSetup();
        s.type = t;
        s.b = b;
        s.sQ = sQ;
        s.sK = sK;
        s.hQ = hQ;
        s.hKv = hKv;
        s.dQk = dQk;
        s.dV = dV;
        return s;
    }

    @ParameterizedTest
    @ValueSource(strings = {"FLOAT", "DOUBLE", "HALF", "BFLOAT16"})
    void allTypes(String type) {
        TestRandom r = TestRandom.create();
        AttentionSetup s = setup(DataType.valueOf(type), 2, 4, 6, 4, 2, 16, 12);
        s.causal = true;
        s.sink = Sink.FINITE;
        check(s.build(r), r);
    }

    @ParameterizedTest
    @ValueSource(ints = {1, 3, 16, 64})
    void queryHeads(int hQ) {
        TestRandom r = TestRandom.create();
        AttentionSetup s = setup(DataType.DOUBLE, 1, 3, 4, hQ, 1, 8, 8);
        s.causal = true;
        s.sink = Sink.MIXED;
        check(s.build(r), r);
    }

    @Test
    void windowAndRowsWithoutKeys() {
        TestRandom r = TestRandom.create();
        AttentionSetup s = setup(DataType.FLOAT, 2, 6, 4, 2, 1, 8, 8);
        s.causal = true;
        s.window = 2;
        s.sink = Sink.MIXED;
        check(s.build(r), r);
    }

    @Test
    void aliasedValueAddsIntoDk() {
        TestRandom r = TestRandom.create();
        for (DataType t : new DataType[] {DataType.DOUBLE, DataType.BFLOAT16}) {
            AttentionSetup s = setup(t, 2, 3, 5, 8, 1, 24, 16);
            s.alias = true;
            s.causal = true;
            s.sink = Sink.FINITE;
            check(s.build(r), r);
        }
    }

    @Test
    void vvpaRotatesTheIncomingGradient() {
        TestRandom r = TestRandom.create();
        AttentionSetup s = setup(DataType.DOUBLE, 1, 4, 4, 4, 2, 16, 16);
        s.causal = true;
        s.ropeDim = 8;
        s.alias = true;
        check(s.build(r), r);
    }

    @Test
    void variableLength() {
        TestRandom r = TestRandom.create();
        AttentionSetup s = setup(DataType.FLOAT, 0, 0, 0, 4, 2, 16, 8);
        s.lensQ = new int[] {2, 0, 4, 1};
        s.lensK = new int[] {3, 1, 4, 0};
        s.causal = true;
        s.sink = Sink.FINITE;
        s.ropeDim = 4;
        check(s.build(r), r);
    }

    @Test
    void moderateSize() {
        TestRandom r = TestRandom.create();
        AttentionSetup s = setup(DataType.FLOAT, 1, 40, 40, 8, 2, 96, 64);
        s.causal = true;
        s.sink = Sink.FINITE;
        check(s.build(r), r);
    }

    /**
     * Central differences of loss = sum(out * w) through the op's float64 forward, against the
     * op's backward and the reference's analytic gradient (which this also validates).
     */
    @Test
    void finiteDifferences() {
        TestRandom r = TestRandom.create();
        AttentionSetup s = setup(DataType.DOUBLE, 1, 3, 4, 2, 1, 5, 3);
        s.causal = true;
        s.sink = Sink.FINITE;
        s.ropeDim = 2;
        s.build(r);
        double[] w = r.normal((int) prod(s.outShape()));
        INDArray[] lib = backward(s, w);
        Ref.AttentionGrad ref = Ref.attentionGrad(s.ref, w);
        INDArray[] targets = {s.q, s.k, s.v};
        double[][] refGrads = {ref.dq, ref.dk, ref.dv};
        String[] names = {"dq", "dk", "dv"};
        for (int t = 0; t < 3; t++) {
            double[] fd = new double[(int) targets[t].length()];
            for (int i = 0; i < fd.length; i++) fd[i] = centralDifference(s, targets[t], i, 1e-6, w);
            Compare.close(names[t] + " (op vs finite differences)", Nd.values(lib[t]), fd, 1e-6, s.ctx);
            Compare.close(names[t] + " (reference vs finite differences)", refGrads[t], fd, 1e-6, s.ctx);
        }
        // the sink is float32: a coarser step
        double[] fdSink = new double[s.hQ];
        for (int h = 0; h < s.hQ; h++) fdSink[h] = centralDifference(s, s.sinkArr, h, 1e-2, w);
        Compare.close("dsink (op vs finite differences)", Nd.values(lib[3]), fdSink, 1e-3, s.ctx);
        Compare.close("dsink (reference vs finite differences)", ref.dsink, fdSink, 1e-3, s.ctx);
        assertTrue(Compare.relErr(Nd.values(lib[3]), ref.dsink) < 1e-5, "dsink op vs reference; " + s.ctx);
    }

    private static double centralDifference(AttentionSetup s, INDArray x, int i, double h, double[] w) {
        INDArray flat = x.reshape(x.length());
        double x0 = flat.getDouble(i);
        flat.putScalar(i, x0 + h);
        double up = loss(s, w);
        flat.putScalar(i, x0 - h);
        double down = loss(s, w);
        flat.putScalar(i, x0);
        double step = (x.dataType() == DataType.FLOAT) ? ((float) (x0 + h) - (float) (x0 - h)) : 2 * h;
        return (up - down) / step;
    }

    private static double loss(AttentionSetup s, double[] w) {
        double[] out = Nd.values(Nd4j.exec(s.op())[0]);
        double l = 0;
        for (int i = 0; i < out.length; i++) l += out[i] * w[i];
        return l;
    }
}
