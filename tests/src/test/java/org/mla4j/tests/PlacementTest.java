package org.mla4j.tests;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeFalse;

import java.util.ArrayList;
import java.util.List;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.mla4j.Mla4j;
import org.mla4j.MlaException;
import org.mla4j.cache.DeviceKvCache;
import org.mla4j.exec.HostOperands;
import org.mla4j.gpu.Gpu;
import org.mla4j.gpu.Placement;
import org.mla4j.ops.DenseDecode;
import org.mla4j.ops.SparsePrefill;
import org.mla4j.ops.SparsePrefillBp;
import org.mla4j.tests.support.Nd;
import org.mla4j.tests.support.Problems;
import org.mla4j.tests.support.TestRandom;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;

/**
 * The placement switch and the GPU entry points on a machine without a CUDA device: the
 * switch falls back or refuses as documented, ops keep running on the CPU, and asking for a
 * device that is not there is an error that says so.
 */
class PlacementTest {

    @BeforeAll
    static void install() {
        Mla4j.install();
    }

    @AfterEach
    void reset() {
        System.clearProperty(Placement.PROPERTY);
        Placement.reset();
    }

    @Test
    void defaultsToTheCpu() {
        assertEquals(-1, Mla4j.device());
    }

    @Test
    void aBadPropertyValueIsNamed() {
        System.setProperty(Placement.PROPERTY, "tpu");
        MlaException e = assertThrows(MlaException.class, Mla4j::device);
        assertTrue(e.getMessage().contains(Placement.PROPERTY) && e.getMessage().contains("tpu"), e.getMessage());
    }

    @Test
    void withoutADeviceGpuFallsBackAndAnOrdinalIsRefused() {
        assumeFalse(Gpu.available(), "this machine has a CUDA device");
        System.setProperty(Placement.PROPERTY, "gpu");
        assertEquals(-1, Mla4j.device());
        System.setProperty(Placement.PROPERTY, "0");
        MlaException e = assertThrows(MlaException.class, Mla4j::device);
        assertTrue(e.getMessage().contains("CUDA device 0 does not exist"), e.getMessage());
        assertThrows(MlaException.class, () -> Mla4j.useGpu(0));
        assertThrows(MlaException.class, () -> DeviceKvCache.plain(0, DataType.BFLOAT16, 64, 16, 4, 1, 4));
    }

    /** With "gpu" asked for and no device, dense decode still runs (on the CPU) and is right. */
    @Test
    void opsRunOnTheCpuWhenNoDeviceIsThere() {
        assumeFalse(Gpu.available(), "this machine has a CUDA device");
        System.setProperty(Placement.PROPERTY, "gpu");
        TestRandom r = TestRandom.create();
        DenseDecodeCase c = new DenseDecodeCase();
        c.b = 2;
        c.sQ = 2;
        c.hQ = 4;
        c.run(r);
    }

    /**
     * With "gpu" asked for and no device, sparse decode and the sparse prefill forward (which
     * have CUDA kernels) and its backward (which has none) run on the CPU and are right.
     */
    @Test
    void sparseOpsRunOnTheCpuWhenNoDeviceIsThere() {
        assumeFalse(Gpu.available(), "this machine has a CUDA device");
        System.setProperty(Placement.PROPERTY, "gpu");
        TestRandom r = TestRandom.create();
        SparseDecodeCase d = new SparseDecodeCase();
        d.sQ = 2;
        d.keys.topkLength = true;
        d.extra = new SparseDecodeCase.KeySpec();
        d.extra.topk = 7;
        d.run(r);
        SparsePrefillCase p = new SparsePrefillCase();
        p.topkLength = true;
        p.sink = Problems.Sink.FINITE;
        p.build(r).checkBoth(r);
    }

    /** Each op says whether it has a CUDA kernel; one without runs on the CPU whatever the switch says. */
    @Test
    void opsSayWhereTheyRun() {
        TestRandom r = TestRandom.create();
        SparsePrefillCase p = new SparsePrefillCase().build(r);
        SparsePrefill fwd = p.op();
        INDArray[] out = Nd4j.exec(fwd);
        List<INDArray> bpIn = new ArrayList<>(List.of(p.inputs()));
        bpIn.add(out[0]);
        bpIn.add(out[2]);
        bpIn.add(out[0].dup());
        SparsePrefillBp bp = new SparsePrefillBp(bpIn.toArray(new INDArray[0]), fwd);
        SparseDecodeCase d = new SparseDecodeCase().build(r);
        assertTrue(fwd.hasDeviceKernel() && d.op().hasDeviceKernel(), "sparse prefill forward and sparse decode have CUDA kernels");
        assertFalse(bp.hasDeviceKernel(), "the sparse prefill backward has no CUDA kernel");
        assertEquals(-1, bp.runsOn());
        assertEquals(Mla4j.device(), fwd.runsOn());
        assertEquals(Mla4j.device(), d.op().runsOn());
        IllegalStateException e = assertThrows(IllegalStateException.class, () -> bp.executeOn(HostOperands.INSTANCE, null));
        assertTrue(e.getMessage().contains("mla_sparse_prefill_bp") && e.getMessage().contains("no CUDA kernel"), e.getMessage());
    }

    @Test
    void aCpuCacheWithoutRowTypeIsRefused() {
        MlaException e = assertThrows(MlaException.class, () -> DeviceKvCache.plain(0, DataType.INT, 64, 16, 4, 1, 4));
        assertTrue(e.getMessage().contains("DeviceKvCache"), e.getMessage());
    }
}
