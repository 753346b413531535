package org.mla4j.tests;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeFalse;

import java.util.List;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.function.Executable;
import org.mla4j.Mla4j;
import org.mla4j.MlaException;
import org.mla4j.exec.Plan;
import org.mla4j.exec.PlanOperands;
import org.mla4j.gpu.Gpu;
import org.mla4j.ops.CacheLayout;
import org.mla4j.ops.DenseDecode;
import org.mla4j.ops.RopeConfig;
import org.mla4j.ops.SparseDecode;
import org.mla4j.ops.SparsePrefill;
import org.mla4j.tests.support.Caches;
import org.mla4j.tests.support.Compare;
import org.mla4j.tests.support.Nd;
import org.mla4j.tests.support.TestRandom;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;

/**
 * The plan queries from Java on a machine without a CUDA device (the gpu-tagged tests check
 * the GPU's choices): a CPU call plans "cpu", a plan checks its inputs like a call, and a GPU
 * call or plan is refused by the native library with a message that names the op, the device
 * and why, without reading any of the call's memory.
 */
class PlanQueryTest {

    @BeforeAll
    static void install() {
        Mla4j.install();
    }

    private static DenseDecode denseDecode(TestRandom r) {
        INDArray q = Nd.floats(r.normal(2 * 4 * 16), 2, 1, 4, 16);
        INDArray cache = Nd.floats(r.normal(3 * 4 * 16), 3, 4, 1, 16);
        return new DenseDecode(q, cache, Nd.ints(new int[] {0, 1, 2, 0}, 2, 2), Nd.ints(new int[] {5, 3}, 2), null, null,
                new DenseDecode.Options(16).causal(true));
    }

    private static SparseDecode sparseDecode(TestRandom r) {
        SparseDecodeCase c = new SparseDecodeCase();
        c.keys.layout = Caches.V32_SMALL;
        c.dV = c.keys.layout.valueDims();
        c.keys.topkLength = true;
        c.extra = new SparseDecodeCase.KeySpec();
        c.extra.layout = Caches.V32_SMALL;
        c.ropeDim = 16;
        return c.build(r).op();
    }

    private static SparsePrefill sparsePrefill(TestRandom r) {
        SparsePrefillCase c = new SparsePrefillCase();
        c.topkLength = true;
        c.ropeDim = 8;
        return c.build(r).op();
    }

    @Test
    void aCpuCallPlansTheCpuKernel() {
        TestRandom r = TestRandom.create();
        for (Plan p : List.of(denseDecode(r).plan(-1), sparseDecode(r).plan(-1), sparsePrefill(r).plan(-1),
                denseDecode(r).plan(), sparseDecode(r).plan(), sparsePrefill(r).plan())) {
            assertEquals("cpu", p.implementation(), p.toString());
            assertEquals(0, p.workspaceBytes(), p.toString());
            assertTrue(p.refusals().isEmpty() && p.runnable(), p.toString());
        }
    }

    @Test
    void aPlanChecksItsInputsLikeACall() {
        TestRandom r = TestRandom.create();
        INDArray q = Nd.floats(r.normal(2 * 4 * 16), 2, 1, 4, 16);
        INDArray cache = Nd.floats(r.normal(3 * 4 * 16), 3, 4, 1, 16);
        INDArray floatIdx = Nd4j.zeros(DataType.FLOAT, 2, 1, 5);
        SparseDecode badIndices = new SparseDecode(q, cache, floatIdx, null, null, null, null, null, null,
                new SparseDecode.Options(16));
        Compare.rejects(SparseDecode.OP_NAME, "indices", () -> badIndices.plan(-1));
        SparsePrefill badDv = new SparsePrefill(Nd.floats(r.normal(3 * 2 * 8), 3, 2, 8), Nd.floats(r.normal(4 * 8), 4, 1, 8),
                Nd.ints(new int[] {0, 1, 2}, 3, 1, 1), null, null, null, 9, 0, RopeConfig.none());
        Compare.rejects(SparsePrefill.OP_NAME, "d_v", () -> badDv.plan(-1));
    }

    /**
     * Without a CUDA device (or a CUDA build), a call or a plan for device 0 is MLA_ERR_UNSUPPORTED:
     * an MlaException naming the entry point and the device. The operands are stand-in
     * addresses that point nowhere: the library must refuse before reading any of them.
     */
    @Test
    void gpuCallsWithoutADeviceAreRefusedClearly() {
        assumeFalse(Gpu.available(), "this machine has a CUDA device");
        TestRandom r = TestRandom.create();
        refusedWithoutDevice("mla_dense_decode_plan", () -> denseDecode(r).plan(0));
        refusedWithoutDevice("mla_sparse_decode_plan", () -> sparseDecode(r).plan(0));
        refusedWithoutDevice("mla_sparse_prefill_fwd_plan", () -> sparsePrefill(r).plan(0));

        INDArray q = Nd.array(r.normal(2 * 2 * 8 * 576), DataType.BFLOAT16, 2, 2, 8, 576);
        INDArray cache = Nd4j.zeros(DataType.UINT8, 4, CacheLayout.V32.blockBytes(64));
        INDArray idx = Nd.ints(new int[2 * 2 * 3], 2, 2, 3);
        INDArray out = Nd4j.zeros(DataType.BFLOAT16, 2, 2, 8, 512);
        INDArray lse = Nd4j.zeros(DataType.FLOAT, 2, 8, 2);
        PlanOperands nowhere = new PlanOperands(0);
        SparseDecode.KeySet keys = new SparseDecode.KeySet(c -> c.kind(CacheLayout.V32.kind).data(nowhere.in(cache))
                .num_blocks(4).block_size(64).h_kv(1).dtype(org.mla4j.nativelib.MlaLib.MLA_UINT8)
                .d_nope(CacheLayout.V32.dNope).d_rope(CacheLayout.V32.dRope).tile(CacheLayout.V32.tile), idx, null);
        refusedWithoutDevice("mla_sparse_decode", () -> SparseDecode.launch(nowhere, q, keys, null, null, null, out, lse,
                512, 0, RopeConfig.none()));
    }

    private static void refusedWithoutDevice(String entry, Executable call) {
        MlaException e = assertThrows(MlaException.class, call, entry + " on device 0 without a device");
        String m = e.getMessage();
        assertTrue(m.contains(entry + ":") && m.contains("exec.device 0")
                && (m.contains("built without CUDA") || m.contains("no CUDA device is available")), m);
    }
}
