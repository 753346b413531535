package org.mla4j.tests.gpu;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;
import org.mla4j.Mla4j;
import org.mla4j.MlaException;
import org.mla4j.cache.DeviceKvCache;
import org.mla4j.cache.KvCache;
import org.mla4j.cache.PagedKvCache;
import org.mla4j.cache.SparseKeys;
import org.mla4j.exec.Plan;
import org.mla4j.gpu.Gpu;
import org.mla4j.gpu.Placement;
import org.mla4j.ops.CacheLayout;
import org.mla4j.ops.RopeConfig;
import org.mla4j.tests.support.CacheFill;
import org.mla4j.tests.support.Compare;
import org.mla4j.tests.support.GpuTests;
import org.mla4j.tests.support.Nd;
import org.mla4j.tests.support.Problems;
import org.mla4j.tests.support.Problems.Sink;
import org.mla4j.tests.support.TestRandom;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;
import org.nd4j.linalg.indexing.NDArrayIndex;

/**
 * Sparse decode from the device-resident cache against the host cache fed the same rows (the
 * host one runs the CPU kernel, itself checked against the float64 reference in
 * CacheSparseDecodeTest): BF16, V32 and MODEL1 pools, an extra key set in a second cache,
 * lengths, sink and VVPA; the output-reusing form; the plan; refusals.
 */
@Tag("gpu")
class DeviceKvCacheSparseTest {

    @BeforeAll
    static void gpu() {
        GpuTests.requireGpu();
        Mla4j.useCpu();  // the host caches run the CPU kernel whatever -Dmla4j.device says
    }

    @AfterAll
    static void back() {
        Placement.reset();
    }

    private static CacheLayout layout(String name) {
        return name.equals("V32") ? CacheLayout.V32 : name.equals("MODEL1") ? CacheLayout.MODEL1 : CacheLayout.PLAIN;
    }

    private static KvCache host(CacheLayout l, int bs, int batch, int perSeq) {
        return l.isFp8() ? PagedKvCache.fp8(l, bs, batch * perSeq, batch, perSeq)
                : PagedKvCache.plain(DataType.BFLOAT16, 576, bs, batch * perSeq, batch, perSeq);
    }

    private static DeviceKvCache device(CacheLayout l, int bs, int batch, int perSeq) {
        return l.isFp8() ? DeviceKvCache.fp8(0, l, bs, batch * perSeq, batch, perSeq)
                : DeviceKvCache.plain(0, DataType.BFLOAT16, 576, bs, batch * perSeq, batch, perSeq);
    }

    private static String sm90() {
        return Gpu.computeCapability(0) == 90 ? "sm90_sparse" : "cuda_core";
    }

    /** One sparse-decode step's inputs: bf16 queries, slots from token positions, lengths, sink, VVPA. */
    private static final class Step {
        INDArray q, positions, idx, len, extraPositions, extraIdx, extraLen, sink, outPositions;
        RopeConfig rope;
        double scale;
        int dV;

        SparseKeys extra(KvCache cache) {
            return cache == null ? null : new SparseKeys(cache, extraIdx, extraLen);
        }
    }

    private static Step step(TestRandom r, KvCache keys, KvCache extra, int sQ, int hQ, int topk, int extraTopk) {
        Step s = new Step();
        int b = keys.maxBatch(), dQk = keys.dQk();
        s.dV = keys.layout().isFp8() ? keys.layout().valueDims() : 512;
        s.q = Nd.array(r.normal(b * sQ * hQ * dQk), DataType.BFLOAT16, b, sQ, hQ, dQk);
        s.positions = Nd.ints(CacheFill.positions(r, keys, b, sQ, topk), b, sQ, topk);
        s.idx = keys.slots(s.positions);
        int[] len = new int[b];
        for (int i = 0; i < b; i++) len[i] = i == 0 ? 0 : r.between(1, topk + 2);
        s.len = Nd.ints(len, b);
        if (extra != null) {
            s.extraPositions = Nd.ints(CacheFill.positions(r, extra, b, sQ, extraTopk), b, sQ, extraTopk);
            s.extraIdx = extra.slots(s.extraPositions);
            int[] el = new int[b];
            for (int i = 0; i < b; i++) el[i] = r.between(0, extraTopk + 1);
            s.extraLen = Nd.ints(el, b);
        }
        s.sink = Nd.floats(Problems.sink(r, Sink.MIXED, hQ), hQ);
        s.rope = Problems.rope(r, 64);
        s.outPositions = Nd.ints(Problems.positions(r, b * sQ, 60000), b, sQ);
        s.scale = Problems.defaultScale(dQk);
        return s;
    }

    private static INDArray[] decode(KvCache c, KvCache extra, Step s) {
        return c.sparseDecode(s.q, s.dV, s.scale, s.idx, s.len, s.extra(extra), s.sink, s.outPositions, s.rope);
    }

    /** The two caches were fed the same rows: same slots, and decode gives the host's results. */
    @ParameterizedTest
    @CsvSource({"PLAIN, 64", "PLAIN, 61", "V32, 64", "V32, 1", "MODEL1, 64", "MODEL1, 61"})
    void decodesLikeTheHostCache(String layoutName, int bs) {
        TestRandom r = TestRandom.create();
        CacheLayout l = layout(layoutName);
        int batch = 3, perSeq = 260 / bs + 2, extraBs = Math.min(bs, 16), extraPerSeq = 40 / extraBs + 2;
        String ctx = l + " block " + bs + "; " + r.tag();
        try (KvCache h = host(l, bs, batch, perSeq); DeviceKvCache d = device(l, bs, batch, perSeq);
             KvCache he = host(l, extraBs, batch, extraPerSeq); DeviceKvCache de = device(l, extraBs, batch, extraPerSeq)) {
            CacheFill.fill(r, new int[] {1, 40, 3, 2, 120, 1, 64}, h, d);
            CacheFill.fill(r, new int[] {7, 2, 20, 1}, he, de);
            for (int sQ : new int[] {1, 2}) {
                int hQ = sQ == 1 ? 128 : 64;
                String at = ctx + " s_q " + sQ;
                Step s = step(r, h, he, sQ, hQ, 160, 24);
                assertArrayEquals(Nd.intValues(s.idx), Nd.intValues(d.slots(s.positions)), at);
                assertArrayEquals(Nd.intValues(s.extraIdx), Nd.intValues(de.slots(s.extraPositions)), at);
                INDArray[] want = decode(h, he, s);
                INDArray[] got = decode(d, de, s);
                Compare.close("out", got[0], Nd.values(want[0]), 1e-2, at);
                Compare.closeAbs("lse", got[1], Nd.values(want[1]), 2e-3, at);
                // without the extra set, lengths, sink and rotation
                INDArray[] want1 = h.sparseDecode(s.q, s.dV, s.scale, s.idx, null);
                INDArray[] got1 = d.sparseDecode(s.q, s.dV, s.scale, s.idx, null);
                Compare.close("out, one key set", got1[0], Nd.values(want1[0]), 1e-2, at);
                Compare.closeAbs("lse, one key set", got1[1], Nd.values(want1[1]), 2e-3, at);
                Plan p = d.sparseDecodePlan(s.q, s.dV, s.scale, s.idx, s.len, s.extra(de), s.sink, s.outPositions, s.rope);
                assertEquals(sm90(), p.implementation(), at + "; " + p);
            }
        }
    }

    /** The indices name rows of any sequence: more queries than sequences is fine. */
    @Test
    void queriesAreNotBoundToTheSequences() {
        TestRandom r = TestRandom.create();
        try (KvCache h = host(CacheLayout.V32, 64, 2, 3); DeviceKvCache d = device(CacheLayout.V32, 64, 2, 3)) {
            CacheFill.fill(r, new int[] {100, 30}, h, d);
            int b = 5, topk = 70;
            int[] idx = new int[b * topk];
            for (int k = 0; k < idx.length; k++) idx[k] = r.between(-3, 6 * 64 + 3);
            INDArray q = Nd.array(r.normal(b * 16 * 576), DataType.BFLOAT16, b, 1, 16, 576);
            INDArray[] want = h.sparseDecode(q, 512, 0.04, Nd.ints(idx, b, 1, topk), null);
            INDArray[] got = d.sparseDecode(q, 512, 0.04, Nd.ints(idx, b, 1, topk), null);
            Compare.close("out", got[0], Nd.values(want[0]), 1e-2, r.tag());
            Compare.closeAbs("lse", got[1], Nd.values(want[1]), 2e-3, r.tag());
        }
    }

    /** Outputs kept between steps: the same values as the allocating form, step after step. */
    @Test
    void intoReusesItsOutputs() {
        TestRandom r = TestRandom.create();
        try (DeviceKvCache d = device(CacheLayout.MODEL1, 64, 2, 4); DeviceKvCache e = device(CacheLayout.MODEL1, 16, 2, 4)) {
            CacheFill.fill(r, new int[] {90, 5}, d);
            CacheFill.fill(r, new int[] {20, 3}, e);
            INDArray out = Nd4j.createUninitialized(DataType.BFLOAT16, 2, 2, 64, 512);
            INDArray lse = Nd4j.createUninitialized(DataType.FLOAT, 2, 64, 2);
            for (int t = 0; t < 2; t++) {
                Step s = step(r, d, e, 2, 64, 50, 10);
                d.sparseDecodeInto(s.q, s.dV, s.scale, s.idx, s.len, s.extra(e), s.sink, s.outPositions, s.rope, out, lse);
                INDArray[] fresh = decode(d, e, s);
                Compare.identical("out", out, fresh[0], "step " + t + "; " + r.tag());
                Compare.identical("lse", lse, fresh[1], "step " + t + "; " + r.tag());
            }
        }
    }

    @Test
    void badArgumentsAreNamed() {
        TestRandom r = TestRandom.create();
        String op = "DeviceKvCache.sparseDecode";
        try (DeviceKvCache d = device(CacheLayout.PLAIN, 16, 2, 4); DeviceKvCache v32 = device(CacheLayout.V32, 16, 2, 4);
             KvCache hostExtra = host(CacheLayout.PLAIN, 16, 2, 4)) {
            CacheFill.fill(r, new int[] {20}, d);
            INDArray q = Nd.array(r.normal(2 * 4 * 576), DataType.BFLOAT16, 2, 1, 4, 576);
            INDArray idx = Nd.ints(new int[2 * 3], 2, 1, 3);
            Compare.rejects(op, "q", () -> d.sparseDecode(q.castTo(DataType.FLOAT), 512, 0, idx, null));
            Compare.rejects(op, "dV", () -> d.sparseDecode(q, 577, 0, idx, null));
            Compare.rejects(op, "indices", () -> d.sparseDecode(q, 512, 0, idx.castTo(DataType.FLOAT), null));
            Compare.rejects(op, "indices", () -> d.sparseDecode(q, 512, 0, Nd.ints(new int[3], 1, 1, 3), null));
            Compare.rejects(op, "topkLength", () -> d.sparseDecode(q, 512, 0, idx, Nd.ints(new int[3], 3)));
            Compare.rejects(op, "extra", () -> d.sparseDecode(q, 512, 0, idx, null, new SparseKeys(hostExtra, idx), null,
                    null, null));
            Compare.rejects(op, "extra", () -> d.sparseDecode(q, 512, 0, idx, null, new SparseKeys(v32, idx), null, null,
                    null));
            Compare.rejects(op, "sink", () -> d.sparseDecode(q, 512, 0, idx, null, null, Nd.floats(new double[3], 3), null,
                    null));
            INDArray lse = Nd4j.zeros(DataType.FLOAT, 2, 4, 1);
            Compare.rejects(op, "out", () -> d.sparseDecodeInto(q, 512, 0, idx, null, null, null, null, null,
                    Nd4j.zeros(DataType.BFLOAT16, 2, 1, 4, 511), lse));
            Compare.rejects(op, "out", () -> d.sparseDecodeInto(q, 512, 0, idx, null, null, null, null, null,
                    Nd4j.zeros(DataType.BFLOAT16, 2, 1, 4, 1024).get(NDArrayIndex.all(), NDArrayIndex.all(),
                            NDArrayIndex.all(), NDArrayIndex.interval(0, 512)), lse));
            MlaException e = assertThrows(MlaException.class, () -> hostExtra.sparseDecode(q, 512, 0, idx, null,
                    new SparseKeys(d, idx), null, null, null));
            assertTrue(e.getMessage().contains("PagedKvCache.sparseDecode") && e.getMessage().contains("extra"),
                    e.getMessage());
            d.close();
            assertThrows(IllegalStateException.class, () -> d.sparseDecode(q, 512, 0, idx, null));
        }
    }
}
