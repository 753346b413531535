package org.mla4j.tests;

import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;
import org.junit.jupiter.params.provider.ValueSource;
import org.mla4j.Mla4j;
import org.mla4j.ops.SparsePrefill;
import org.mla4j.tests.reference.Ref;
import org.mla4j.tests.support.Compare;
import org.mla4j.tests.support.Nd;
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

    @ParameterizedTest
    @ValueSource(strings = {"FLOAT", "DOUBLE", "HALF", "BFLOAT16"})
    void allTypes(String type) {
        TestRandom r = TestRandom.create();
        SparsePrefillCase c = new SparsePrefillCase();
        c.type = DataType.valueOf(type);
        c.topkLength = true;
        c.sink = Sink.FINITE;
        c.build(r).checkBoth(r);
    }

    @ParameterizedTest
    @ValueSource(ints = {1, 3, 16, 64, 128})
    void queryHeads(int hQ) {
        TestRandom r = TestRandom.create();
        SparsePrefillCase c = new SparsePrefillCase();
        c.hQ = hQ;
        c.hKv = hQ % 2 == 0 ? 2 : 1;
        c.sQ = 3;
        c.dQk = 16;
        c.dV = 8;
        c.sink = Sink.MIXED;
        c.build(r).checkBoth(r);
    }

    @ParameterizedTest
    @EnumSource(Sink.class)
    void sinks(Sink sink) {
        TestRandom r = TestRandom.create();
        SparsePrefillCase c = new SparsePrefillCase();
        c.sink = sink;
        c.hQ = 6;
        c.type = DataType.DOUBLE;
        c.build(r).checkBoth(r);
    }

    @Test
    void allIndicesInvalidAndTopkLengthZero() {
        TestRandom r = TestRandom.create();
        SparsePrefillCase c = new SparsePrefillCase();
        c.invalid = 1.0;
        c.sink = Sink.MIXED;
        c.build(r).checkBoth(r);
        SparsePrefillCase z = new SparsePrefillCase();
        z.topkLength = true;
        z.sQ = 1; // its only query has topk_length 0
        z.sink = Sink.FINITE;
        z.build(r).checkBoth(r);
    }

    /** topk not a multiple of 64, many queries selecting the same rows (scatter-add in dkv). */
    @Test
    void sharedRowsAndOddTopk() {
        TestRandom r = TestRandom.create();
        SparsePrefillCase c = new SparsePrefillCase();
        c.sQ = 20;
        c.sKv = 9;
        c.topk = 70;
        c.invalid = 0.5;
        c.hQ = 8;
        c.hKv = 2;
        c.build(r).checkBoth(r);
    }

    @Test
    void vvpa() {
        TestRandom r = TestRandom.create();
        SparsePrefillCase c = new SparsePrefillCase();
        c.type = DataType.DOUBLE;
        c.dQk = 32;
        c.dV = 32;
        c.ropeDim = 8;
        c.sink = Sink.FINITE;
        c.build(r).checkBoth(r);
    }

    /** DeepSeek V3.2 absorbed sizes (d 576 / 512, one KV head) at a small sequence. */
    @Test
    void absorbedSizes() {
        TestRandom r = TestRandom.create();
        SparsePrefillCase c = new SparsePrefillCase();
        c.type = DataType.BFLOAT16;
        c.sQ = 6;
        c.sKv = 150;
        c.hQ = 16;
        c.dQk = 576;
        c.dV = 512;
        c.topk = 100;
        c.sink = Sink.FINITE;
        c.build(r).checkBoth(r);
    }

    /** Central differences of sum(out * w) through the float64 forward vs op and reference gradients. */
    @Test
    void finiteDifferences() {
        TestRandom r = TestRandom.create();
        SparsePrefillCase c = new SparsePrefillCase();
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
        INDArray[] lib = c.backward(Nd4j.exec(c.op()), w);
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

    private static double centralDifference(SparsePrefillCase c, INDArray x, int i, double h, double[] w) {
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

    private static double loss(SparsePrefillCase c, double[] w) {
        double[] out = Nd.values(Nd4j.exec(c.op())[0]);
        double l = 0;
        for (int i = 0; i < out.length; i++) l += out[i] * w[i];
        return l;
    }

    @Test
    void stridedInputsGiveTheSameResult() {
        TestRandom r = TestRandom.create();
        SparsePrefillCase c = new SparsePrefillCase();
        c.garbage = false;
        c.build(r);
        INDArray[] base = Nd4j.exec(c.op());
        INDArray[] got = Nd4j.exec(new SparsePrefill(Nd.strided(c.q), Nd.offsetView(c.kv), Nd.strided(c.indices), null, null,
                null, c.dV, c.scale, null));
        for (int i = 0; i < 3; i++) Compare.identical("output " + i, got[i], base[i], c.ctx);
    }
}
