package org.mla4j.tests;

import static org.junit.jupiter.api.Assertions.assertEquals;

import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;
import org.junit.jupiter.params.provider.ValueSource;
import org.mla4j.Mla4j;
import org.mla4j.ops.CacheLayout;
import org.mla4j.ops.SparseDecode;
import org.mla4j.tests.support.Caches;
import org.mla4j.tests.support.Compare;
import org.mla4j.tests.support.Nd;
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

    @ParameterizedTest
    @ValueSource(strings = {"FLOAT", "DOUBLE", "HALF", "BFLOAT16"})
    void plainCacheAllTypes(String type) {
        TestRandom r = TestRandom.create();
        SparseDecodeCase c = new SparseDecodeCase();
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
            SparseDecodeCase c = new SparseDecodeCase();
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
        SparseDecodeCase v32 = new SparseDecodeCase();
        v32.type = DataType.BFLOAT16;
        v32.keys.layout = CacheLayout.V32;
        v32.keys.numBlocks = 4;
        v32.keys.blockSize = 64;
        v32.keys.topk = 100;
        v32.hQ = 16;
        v32.dV = 512;
        v32.run(r);
        SparseDecodeCase v4 = new SparseDecodeCase();
        v4.type = DataType.BFLOAT16;
        v4.keys.layout = CacheLayout.MODEL1;
        v4.keys.numBlocks = 2;
        v4.keys.blockSize = 64;
        v4.keys.topk = 70;
        v4.extra = new SparseDecodeCase.KeySpec();
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
        SparseDecodeCase c = new SparseDecodeCase();
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
        SparseDecodeCase c = new SparseDecodeCase();
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
        SparseDecodeCase c = new SparseDecodeCase();
        c.sQ = sQ;
        c.keys.topkLength = true;
        c.extra = new SparseDecodeCase.KeySpec();
        c.extra.numBlocks = 2;
        c.extra.blockSize = 8;
        c.extra.topk = 9;
        c.run(r);
    }

    @ParameterizedTest
    @EnumSource(Sink.class)
    void sinks(Sink sink) {
        TestRandom r = TestRandom.create();
        SparseDecodeCase c = new SparseDecodeCase();
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
        SparseDecodeCase c = new SparseDecodeCase();
        c.type = DataType.BFLOAT16;
        c.keys.layout = Caches.MODEL1_SMALL;
        c.keys.topkLength = true;
        c.extra = new SparseDecodeCase.KeySpec();
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
            SparseDecodeCase c = new SparseDecodeCase();
            c.keys.invalid = 1.0;
            c.keys.layout = Caches.V32_SMALL;
            c.dV = c.keys.layout.valueDims();
            c.extra = new SparseDecodeCase.KeySpec();
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
