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

    /** One dense-decode problem; fields set by a test, then {@link #run}. */
    static final class Case {
        DataType type = DataType.FLOAT;
        CacheLayout layout = CacheLayout.PLAIN;
        int b = 2, sQ = 1, hQ = 4, hKv = 1, dQk = 16, dV = 16, blockSize = 4;
        int[] seqlens;
        boolean causal = true;
        Sink sink = Sink.NONE;
        int ropeDim;

        String describe() {
            return "dense decode " + type + " " + layout + " b=" + b + " s_q=" + sQ + " h_q=" + hQ + " h_kv=" + hKv
                    + " d=" + dQk + "/" + dV + " block=" + blockSize + " seqlens=" + java.util.Arrays.toString(seqlens)
                    + (causal ? " causal" : "") + " sink=" + sink + (ropeDim > 0 ? " vvpa=" + ropeDim : "");
        }

        /** Builds random inputs, runs the op with NaN-poisoned outputs and compares. */
        void run(TestRandom r) {
            if (layout.isFp8()) {
                hKv = 1;
                dQk = layout.dQk();
            }
            if (seqlens == null) {
                seqlens = new int[b];
                for (int i = 0; i < b; i++) seqlens[i] = r.between(0, 3 * blockSize + 1);
            }
            int maxUsed = 0, used = 0;
            for (int len : seqlens) {
                maxUsed = Math.max(maxUsed, (len + blockSize - 1) / blockSize);
                used += (len + blockSize - 1) / blockSize;
            }
            int maxBlocks = maxUsed + 1, numBlocks = used + 2;
            // distinct blocks per request, in random order; entries past a request's length are garbage
            int[] perm = r.permutation(numBlocks);
            int[] table = new int[b * maxBlocks];
            boolean[] garbage = new boolean[numBlocks * blockSize];
            java.util.Arrays.fill(garbage, true);
            int next = 0;
            for (int i = 0; i < b; i++) {
                int blocks = (seqlens[i] + blockSize - 1) / blockSize;
                for (int k = 0; k < maxBlocks; k++) table[i * maxBlocks + k] = k < blocks ? perm[next++] : numBlocks + 1000 + k;
                for (int t = 0; t < seqlens[i]; t++) garbage[table[i * maxBlocks + t / blockSize] * blockSize + t % blockSize] = false;
            }
            Caches.Built cache = Caches.random(r, layout, type, numBlocks, blockSize, hKv, dQk, garbage);
            INDArray q = Nd.array(r.normal(b * sQ * hQ * dQk), type, b, sQ, hQ, dQk);
            double[] sinkValues = Problems.sink(r, sink, hQ);
            RopeConfig rope = ropeDim > 0 ? Problems.rope(r, ropeDim) : null;
            int[] pos = ropeDim > 0 ? Problems.positions(r, b * sQ, 50000) : null;
            double scale = Problems.defaultScale(dQk);
            DenseDecode.Options o = new DenseDecode.Options(dV).causal(causal).softmaxScale(scale);
            if (layout.isFp8()) o.fp8(layout, blockSize);
            if (rope != null) o.rope(rope);
            DenseDecode op = new DenseDecode(q, cache.array, Nd.ints(table, b, maxBlocks), Nd.ints(seqlens, b),
                    sinkValues == null ? null : Nd.floats(sinkValues, hQ), pos == null ? null : Nd.ints(pos, b, sQ), o);
            INDArray out = Nd.nanFilled(type, b, sQ, hQ, dV);
            INDArray lse = Nd.nanFilled(DataType.FLOAT, b, hQ, sQ);
            op.addOutputArgument(out, lse);
            Nd4j.exec(op);

            Ref.Decode d = new Ref.Decode();
            d.b = b;
            d.sQ = sQ;
            d.hQ = hQ;
            d.hKv = hKv;
            d.dQk = dQk;
            d.dV = dV;
            d.q = Nd.values(q);
            d.cache = cache.paged;
            d.blockTable = table;
            d.maxBlocks = maxBlocks;
            d.seqlens = seqlens;
            d.causal = causal;
            d.scale = scale;
            d.sink = Problems.asFloat(sinkValues);
            d.positions = pos;
            d.rope = rope;
            Ref.Result want = Ref.decode(d);
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
        Case c = new Case();
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
        Case c = new Case();
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
        Case c = new Case();
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
            Case c = new Case();
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
        Case c = new Case();
        c.sink = sink;
        c.hQ = 6;
        c.type = DataType.BFLOAT16;
        c.run(r);
    }

    @Test
    void zeroLengthCaches() {
        TestRandom r = TestRandom.create();
        Case c = new Case();
        c.seqlens = new int[] {0, 0};
        c.sink = Sink.MIXED;
        c.run(r);
    }

    @Test
    void fp8CachesDeepSeekSizes() {
        TestRandom r = TestRandom.create();
        Case v32 = new Case();
        v32.layout = CacheLayout.V32;
        v32.blockSize = 64;
        v32.b = 2;
        v32.sQ = 2;
        v32.hQ = 16;
        v32.dV = 512;
        v32.seqlens = new int[] {150, 37};
        v32.type = DataType.BFLOAT16;
        v32.run(r);
        Case model1 = new Case();
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
                Case c = new Case();
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
