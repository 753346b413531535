package org.mla4j.tests.gpu;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;

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
import org.mla4j.ops.CacheLayout;
import org.mla4j.ops.DenseDecode;
import org.mla4j.samediff.SDMla;
import org.mla4j.tests.DenseDecodeCase;
import org.mla4j.tests.support.Caches;
import org.mla4j.tests.support.Compare;
import org.mla4j.tests.support.GpuTests;
import org.mla4j.tests.support.Nd;
import org.mla4j.tests.support.Problems.Sink;
import org.mla4j.tests.support.TestRandom;
import org.nd4j.autodiff.samediff.SDVariable;
import org.nd4j.autodiff.samediff.SameDiff;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;

/**
 * The placement switch: with {@code Mla4j.useGpu(0)} dense decode runs on the GPU over host
 * arrays (copied in and out per call) and must match the float64 reference on the corner
 * cases of ops.md section 8, eagerly and inside SameDiff.
 */
@Tag("gpu")
class GpuPlacementTest {

    @BeforeAll
    static void gpu() {
        GpuTests.requireGpu();
        Mla4j.useGpu(0);
    }

    @AfterAll
    static void back() {
        Placement.reset();
    }

    private static DenseDecodeCase mla(TestRandom r) {
        DenseDecodeCase c = new DenseDecodeCase();
        c.type = DataType.BFLOAT16;
        c.dQk = 576;
        c.dV = 512;
        c.hQ = 128;
        c.blockSize = 64;
        return c;
    }

    @ParameterizedTest
    @ValueSource(ints = {1, 3, 16, 63, 64, 128})
    void queryHeads(int hQ) {
        TestRandom r = TestRandom.create();
        for (int sQ : new int[] {1, 2, 4}) {
            DenseDecodeCase c = mla(r);
            c.hQ = hQ;
            c.sQ = sQ;
            c.b = 4;
            c.seqlens = new int[] {0, sQ - 1, 200, 77};
            c.sink = Sink.values()[sQ % Sink.values().length];
            c.ropeDim = sQ == 2 ? 64 : 0;
            c.run(r);
        }
    }

    @ParameterizedTest
    @ValueSource(ints = {1, 2, 61, 64, 256})
    void blockSizes(int bs) {
        TestRandom r = TestRandom.create();
        DenseDecodeCase c = mla(r);
        c.blockSize = bs;
        c.hQ = 16;
        c.sQ = 2;
        c.b = 3;
        c.seqlens = new int[] {bs * 3 + 1, bs, Math.max(0, bs - 1)};
        c.run(r);
    }

    /** Long and uneven sequences: the split-KV schedule and its combine kernel. */
    @Test
    void longUnevenSequences() {
        TestRandom r = TestRandom.create();
        DenseDecodeCase c = mla(r);
        c.b = 3;
        c.sQ = 2;
        c.seqlens = new int[] {3000, 5, 1200};
        c.sink = Sink.FINITE;
        c.ropeDim = 64;
        c.run(r);
    }

    @ParameterizedTest
    @ValueSource(strings = {"FLOAT", "DOUBLE", "HALF"})
    void otherTypesAndHeadDims(String type) {
        TestRandom r = TestRandom.create();
        DenseDecodeCase c = new DenseDecodeCase();
        c.type = DataType.valueOf(type);
        c.b = 3;
        c.sQ = 2;
        c.hQ = 6;
        c.hKv = 3;
        c.dQk = 40;
        c.dV = 32;
        c.sink = Sink.MIXED;
        c.run(r);
    }

    @ParameterizedTest
    @ValueSource(strings = {"V32", "MODEL1"})
    void fp8Caches(String layout) {
        TestRandom r = TestRandom.create();
        for (int bs : new int[] {1, 61, 64}) {
            DenseDecodeCase c = new DenseDecodeCase();
            c.layout = layout.equals("V32") ? CacheLayout.V32 : CacheLayout.MODEL1;
            c.type = DataType.BFLOAT16;
            c.hQ = bs == 64 ? 128 : 16;
            c.sQ = bs == 1 ? 1 : 2;
            c.dV = c.layout.valueDims();
            c.blockSize = bs;
            c.b = 3;
            c.seqlens = new int[] {2 * bs + 5, 0, 130};
            c.sink = Sink.FINITE;
            c.run(r);
        }
    }

    @Test
    void zeroLengthCaches() {
        TestRandom r = TestRandom.create();
        DenseDecodeCase c = mla(r);
        c.b = 2;
        c.sQ = 2;
        c.seqlens = new int[] {0, 0};
        c.sink = Sink.FINITE;
        c.run(r);
    }

    /** A SameDiff graph with the op gives the same result on the GPU as on the CPU. */
    @Test
    void sameDiffGraphMatchesCpu() {
        TestRandom r = TestRandom.create();
        int b = 2, sQ = 1, hQ = 64, dQk = 576, dV = 512, bs = 64, blocks = 8;
        Caches.Built cache = Caches.random(r, CacheLayout.PLAIN, DataType.BFLOAT16, blocks, bs, 1, dQk, null);
        INDArray q = Nd.array(r.normal(b * sQ * hQ * dQk), DataType.BFLOAT16, b, sQ, hQ, dQk);
        INDArray table = Nd.ints(new int[] {3, 1, 0, 2, 7, 5, 4, 6}, b, 4);
        INDArray lens = Nd.ints(new int[] {200, 131}, b);
        SameDiff sd = SameDiff.create();
        SDVariable vq = sd.placeHolder("q", DataType.BFLOAT16, b, sQ, hQ, dQk);
        SDMla ops = Mla4j.ops(sd);
        SDVariable[] outs = ops.denseDecode(vq, sd.constant("cache", cache.array), sd.constant("table", table),
                sd.constant("lens", lens), null, null, new DenseDecode.Options(dV).causal(true));
        outs[0].rename("out");
        INDArray onGpu = sd.output(Map.of("q", q), "out").get("out").castTo(DataType.DOUBLE);
        Mla4j.useCpu();
        INDArray onCpu;
        try {
            onCpu = sd.output(Map.of("q", q), "out").get("out").castTo(DataType.DOUBLE);
        } finally {
            Mla4j.useGpu(0);
        }
        Compare.close("SameDiff out, GPU vs CPU", onGpu, Nd.values(onCpu), 1e-2, "b=2 h_q=64 576/512 bf16");
    }

    @Test
    void aMissingDeviceIsNamed() {
        MlaException e = assertThrows(MlaException.class, () -> Mla4j.useGpu(99));
        assertEquals(true, e.getMessage().contains("CUDA device 99"), e.getMessage());
    }
}
