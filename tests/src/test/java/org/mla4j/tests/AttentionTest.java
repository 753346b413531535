package org.mla4j.tests;

import static org.junit.jupiter.api.Assertions.assertEquals;

import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;
import org.junit.jupiter.params.provider.ValueSource;
import org.mla4j.Mla4j;
import org.mla4j.ops.Attention;
import org.mla4j.tests.reference.Ref;
import org.mla4j.tests.support.AttentionSetup;
import org.mla4j.tests.support.Compare;
import org.mla4j.tests.support.Nd;
import org.mla4j.tests.support.Problems.Sink;
import org.mla4j.tests.support.TestRandom;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;

/** Dense attention forward (ops.md section 4) against the float64 reference. */
class AttentionTest {

    @BeforeAll
    static void install() {
        Mla4j.install();
    }

    /** Runs the op with NaN-poisoned outputs and compares out and lse with the reference. */
    static INDArray[] check(AttentionSetup s) {
        INDArray out = Nd.nanFilled(s.type, s.outShape());
        INDArray lse = Nd.nanFilled(DataType.FLOAT, s.lseShape());
        Attention op = s.op();
        op.addOutputArgument(out, lse);
        INDArray[] res = Nd4j.exec(op);
        assertEquals(2, res.length);
        Ref.Result want = Ref.attention(s.ref);
        Compare.output("out", out, want.out, Compare.tolerance(s.type), s.ctx);
        Compare.closeAbs("lse", lse, s.refLse(want), Compare.LSE_TOL, s.ctx);
        return new INDArray[] {out, lse};
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
    void batchedAllTypes(String type) {
        TestRandom r = TestRandom.create();
        DataType t = DataType.valueOf(type);
        for (boolean causal : new boolean[] {false, true}) {
            AttentionSetup s = setup(t, 2, 5, 7, 4, 2, 24, 16);
            s.causal = causal;
            s.sink = Sink.FINITE;
            check(s.build(r));
        }
    }

    @ParameterizedTest
    @ValueSource(ints = {1, 3, 16, 64, 128})
    void queryHeads(int hQ) {
        TestRandom r = TestRandom.create();
        int hKv = hQ % 2 == 0 ? 2 : 1;
        AttentionSetup s = setup(DataType.FLOAT, 1, 3, 5, hQ, hKv, 16, 8);
        s.causal = true;
        s.sink = Sink.MIXED;
        check(s.build(r));
    }

    @ParameterizedTest
    @EnumSource(Sink.class)
    void sinks(Sink kind) {
        TestRandom r = TestRandom.create();
        for (DataType t : new DataType[] {DataType.FLOAT, DataType.BFLOAT16}) {
            AttentionSetup s = setup(t, 2, 3, 4, 6, 3, 16, 16);
            s.causal = true;
            s.sink = kind;
            check(s.build(r));
        }
    }

    @ParameterizedTest
    @ValueSource(ints = {1, 2, 4})
    void causalBottomRightWithLongerKeys(int sQ) {
        TestRandom r = TestRandom.create();
        AttentionSetup s = setup(DataType.DOUBLE, 2, sQ, 9, 4, 1, 16, 12);
        s.causal = true;
        check(s.build(r));
    }

    /** More queries than keys: the first queries of a causal mask see no key (out 0, lse +inf). */
    @Test
    void causalRowsWithoutKeys() {
        TestRandom r = TestRandom.create();
        for (Sink kind : new Sink[] {Sink.NONE, Sink.MIXED}) {
            AttentionSetup s = setup(DataType.FLOAT, 2, 6, 3, 3, 1, 8, 8);
            s.causal = true;
            s.sink = kind;
            INDArray lse = check(s.build(r))[1];
            assertEquals(Double.POSITIVE_INFINITY, lse.getDouble(0, 0, 0), s.ctx);
        }
    }

    @ParameterizedTest
    @ValueSource(ints = {1, 2, 5})
    void slidingWindow(int window) {
        TestRandom r = TestRandom.create();
        AttentionSetup s = setup(DataType.FLOAT, 2, 8, 10, 4, 2, 16, 16);
        s.causal = true;
        s.window = window;
        s.sink = Sink.FINITE;
        check(s.build(r));
    }

    /** mla.h: without causal, a window keeps only its lower bound j > i + s_k - s_q - w. */
    @Test
    void windowWithoutCausal() {
        TestRandom r = TestRandom.create();
        AttentionSetup s = setup(DataType.FLOAT, 1, 6, 6, 2, 1, 8, 8);
        s.window = 2;
        check(s.build(r));
    }

    @Test
    void valueAliasesKey() {
        TestRandom r = TestRandom.create();
        for (DataType t : Nd.FLOAT_TYPES) {
            AttentionSetup s = setup(t, 2, 4, 6, 8, 1, 40, 32);
            s.alias = true;
            s.causal = true;
            s.sink = Sink.FINITE;
            check(s.build(r));
        }
    }

    @Test
    void vvpaOutputRotation() {
        TestRandom r = TestRandom.create();
        for (boolean alias : new boolean[] {false, true}) {
            AttentionSetup s = setup(DataType.DOUBLE, 2, 3, 5, 4, 1, 24, 16);
            s.alias = alias;
            s.causal = true;
            s.ropeDim = 8;
            s.sink = Sink.FINITE;
            check(s.build(r));
        }
    }

    @Test
    void variableLength() {
        TestRandom r = TestRandom.create();
        for (DataType t : new DataType[] {DataType.FLOAT, DataType.BFLOAT16}) {
            AttentionSetup s = setup(t, 0, 0, 0, 4, 2, 16, 8);
            // a sequence without queries, one without keys, one with more keys than queries
            s.lensQ = new int[] {3, 0, 2, 5};
            s.lensK = new int[] {3, 2, 0, 7};
            s.causal = true;
            s.sink = Sink.MIXED;
            s.ropeDim = 4;
            check(s.build(r));
        }
    }

    @Test
    void zeroLengthKeys() {
        TestRandom r = TestRandom.create();
        AttentionSetup s = setup(DataType.FLOAT, 2, 3, 0, 2, 1, 8, 8);
        s.sink = Sink.FINITE;
        check(s.build(r));
    }

    /** MLA sizes: MHA mode (192 / 128) and the absorbed form (576 / 512, one KV head). */
    @Test
    void mlaSizes() {
        TestRandom r = TestRandom.create();
        AttentionSetup mha = setup(DataType.FLOAT, 2, 48, 48, 8, 8, 192, 128);
        mha.causal = true;
        check(mha.build(r));
        AttentionSetup absorbed = setup(DataType.BFLOAT16, 1, 24, 40, 16, 1, 576, 512);
        absorbed.alias = true;
        absorbed.causal = true;
        absorbed.sink = Sink.FINITE;
        absorbed.ropeDim = 64;
        check(absorbed.build(r));
    }

    @Test
    void viewsGiveTheSameResultAsContiguousInputs() {
        TestRandom r = TestRandom.create();
        AttentionSetup s = setup(DataType.FLOAT, 2, 4, 5, 4, 2, 16, 8);
        s.causal = true;
        s.sink = Sink.FINITE;
        s.build(r);
        INDArray[] base = Nd4j.exec(s.op());
        INDArray[][] variants = {
            {Nd.strided(s.q), Nd.strided(s.k), Nd.strided(s.v)},
            {Nd.offsetView(s.q), Nd.offsetView(s.k), Nd.offsetView(s.v)},
            {s.q.permute(0, 2, 1, 3).dup('c').permute(0, 2, 1, 3), s.k, s.v}};
        for (INDArray[] in : variants) {
            INDArray[] got = Nd4j.exec(s.op(in[0], in[1], in[2]));
            Compare.identical("out", got[0], base[0], s.ctx);
            Compare.identical("lse", got[1], base[1], s.ctx);
        }
        // a non-contiguous output array is filled too
        INDArray out = Nd.strided(Nd.nanFilled(DataType.FLOAT, s.outShape()));
        Attention op = s.op();
        op.addOutputArgument(out, Nd.nanFilled(DataType.FLOAT, s.lseShape()));
        Nd4j.exec(op);
        Compare.identical("strided out", out.dup('c'), base[0], s.ctx);
    }

    @Test
    void defaultSoftmaxScaleIsOneOverSqrtDqk() {
        TestRandom r = TestRandom.create();
        AttentionSetup s = setup(DataType.DOUBLE, 1, 3, 3, 2, 1, 20, 20);
        s.build(r);
        s.options.softmaxScale(0);
        s.ref.scale = (float) (1 / Math.sqrt(20));
        check(s);
    }
}
