package org.mla4j.tests;

import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;
import org.junit.jupiter.params.provider.ValueSource;
import org.mla4j.Mla4j;
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
 * Dense decode over a paged cache (ops.md section 1) against the float64 reference. Cache
 * tokens that no request holds, and block-table entries past a request's length, are garbage
 * (NaN rows, out-of-range block ids): a correct op never reads them.
 */
class DenseDecodeTest {

    @BeforeAll
    static void install() {
        Mla4j.install();
    }

    @ParameterizedTest
    @ValueSource(strings = {"FLOAT", "DOUBLE", "HALF", "BFLOAT16"})
    void plainCacheAllTypes(String type) {
        TestRandom r = TestRandom.create();
        DenseDecodeCase c = new DenseDecodeCase();
        c.type = DataType.valueOf(type);
        c.b = 3;
        c.sQ = 2;
        c.dQk = 40;
        c.dV = 32;
        c.sink = Sink.FINITE;
        c.run(r);
    }

    @ParameterizedTest
    @ValueSource(ints = {1, 2, 61, 64, 256})
    void blockSizes(int bs) {
        TestRandom r = TestRandom.create();
        DenseDecodeCase c = new DenseDecodeCase();
        c.blockSize = bs;
        c.b = 3;
        c.hQ = 3;
        c.dQk = 8;
        c.dV = 8;
        c.seqlens = new int[] {bs * 2 + 1, bs, Math.max(0, bs - 1)};
        c.run(r);
    }

    @ParameterizedTest
    @ValueSource(ints = {1, 3, 16, 64, 128})
    void queryHeads(int hQ) {
        TestRandom r = TestRandom.create();
        DenseDecodeCase c = new DenseDecodeCase();
        c.hQ = hQ;
        c.sQ = 2;
        c.dQk = 16;
        c.dV = 12;
        c.sink = Sink.MIXED;
        c.run(r);
    }

    @Test
    void groupedKeyValueHeads() {
        TestRandom r = TestRandom.create();
        DenseDecodeCase c = new DenseDecodeCase();
        c.hQ = 6;
        c.hKv = 3;
        c.sQ = 2;
        c.run(r);
    }

    /** Multi-token decode: query j sees t <= seqlen - s_q + j; a sequence shorter than s_q leaves rows empty. */
    @ParameterizedTest
    @ValueSource(ints = {1, 2, 4})
    void multiTokenCausal(int sQ) {
        TestRandom r = TestRandom.create();
        for (boolean causal : new boolean[] {true, false}) {
            DenseDecodeCase c = new DenseDecodeCase();
            c.sQ = sQ;
            c.b = 4;
            c.causal = causal;
            c.seqlens = new int[] {0, 1, sQ, 9};
            c.sink = Sink.FINITE;
            c.run(r);
        }
    }

    @ParameterizedTest
    @EnumSource(Sink.class)
    void sinks(Sink sink) {
        TestRandom r = TestRandom.create();
        DenseDecodeCase c = new DenseDecodeCase();
        c.sink = sink;
        c.hQ = 6;
        c.type = DataType.BFLOAT16;
        c.run(r);
    }

    @Test
    void zeroLengthCaches() {
        TestRandom r = TestRandom.create();
        DenseDecodeCase c = new DenseDecodeCase();
        c.seqlens = new int[] {0, 0};
        c.sink = Sink.MIXED;
        c.run(r);
    }

    @Test
    void fp8CachesDeepSeekSizes() {
        TestRandom r = TestRandom.create();
        DenseDecodeCase v32 = new DenseDecodeCase();
        v32.layout = CacheLayout.V32;
        v32.blockSize = 64;
        v32.b = 2;
        v32.sQ = 2;
        v32.hQ = 16;
        v32.dV = 512;
        v32.seqlens = new int[] {150, 37};
        v32.type = DataType.BFLOAT16;
        v32.run(r);
        DenseDecodeCase model1 = new DenseDecodeCase();
        model1.layout = CacheLayout.MODEL1;
        model1.blockSize = 64;
        model1.hQ = 8;
        model1.dV = 512;
        model1.seqlens = new int[] {70, 1};
        model1.sink = Sink.FINITE;
        model1.ropeDim = 64;
        model1.run(r);
    }

    @ParameterizedTest
    @ValueSource(ints = {1, 2, 61})
    void fp8CachesSmallLayouts(int bs) {
        TestRandom r = TestRandom.create();
        for (CacheLayout l : new CacheLayout[] {Caches.V32_SMALL, Caches.MODEL1_SMALL}) {
            for (DataType t : Nd.FLOAT_TYPES) {
                DenseDecodeCase c = new DenseDecodeCase();
                c.layout = l;
                c.type = t;
                c.blockSize = bs;
                c.sQ = 2;
                c.hQ = 3;
                c.dV = l.valueDims();
                c.sink = Sink.FINITE;
                c.ropeDim = l.kind == CacheLayout.KIND_MODEL1 ? 16 : 0;
                c.run(r);
            }
        }
    }

    @Test
    void stridedQueryGivesTheSameResult() {
        TestRandom r = TestRandom.create();
        INDArray q = Nd.floats(r.normal(2 * 2 * 4 * 8), 2, 2, 4, 8);
        INDArray cache = Nd.floats(r.normal(4 * 2 * 8), 4, 2, 1, 8);
        INDArray table = Nd.ints(new int[] {3, 1, 0, 2}, 2, 2);
        INDArray seqlens = Nd.ints(new int[] {3, 4}, 2);
        DenseDecode.Options o = new DenseDecode.Options(8).causal(true);
        INDArray[] base = Nd4j.exec(new DenseDecode(q, cache, table, seqlens, null, null, o));
        for (INDArray view : new INDArray[] {Nd.strided(q), Nd.offsetView(q)}) {
            INDArray[] got = Nd4j.exec(new DenseDecode(view, Nd.offsetView(cache), Nd.strided(table), seqlens, null, null, o));
            Compare.identical("out", got[0], base[0], r.tag());
            Compare.identical("lse", got[1], base[1], r.tag());
        }
    }
}
