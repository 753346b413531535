package org.mla4j.tests.gpu;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;
import org.junit.jupiter.params.provider.ValueSource;
import org.mla4j.Mla4j;
import org.mla4j.exec.Plan;
import org.mla4j.gpu.Gpu;
import org.mla4j.gpu.Placement;
import org.mla4j.ops.CacheLayout;
import org.mla4j.ops.SparsePrefill;
import org.mla4j.ops.SparsePrefillBp;
import org.mla4j.samediff.SDMla;
import org.mla4j.tests.SparseDecodeCase;
import org.mla4j.tests.SparsePrefillCase;
import org.mla4j.tests.reference.Ref;
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

/**
 * Sparse decode and the sparse prefill forward under the placement switch ({@code
 * Mla4j.useGpu(0)}): on the GPU over host arrays (copied in and out per call), eagerly and in
 * SameDiff graphs, against the float64 reference and against the same call on the CPU; the
 * implementation each call gets (sm90_sparse for bf16 576 / 512 on Hopper, cuda_core for the
 * rest); and the sparse prefill backward, which has no CUDA kernel, staying on the CPU inside
 * a graph whose forward runs on the GPU.
 */
@Tag("gpu")
class GpuSparsePlacementTest {

    /** Each side is within Compare.LSE_TOL of the reference, so within twice that of each other (outputs likewise). */
    private static final double GPU_VS_CPU_LSE = 2 * Compare.LSE_TOL;

    @BeforeAll
    static void gpu() {
        GpuTests.requireGpu();
        Mla4j.useGpu(0);
    }

    @AfterAll
    static void back() {
        Placement.reset();
    }

    /** The tensor-core implementation of the sparse family where the device has it (compute capability 9.0). */
    private static String sm90() {
        return Gpu.computeCapability(0) == 90 ? "sm90_sparse" : "cuda_core";
    }

    /** Runs a built case on the GPU against the reference, then on the CPU, and compares the two. */
    private static void onGpuAndCpu(SparseDecodeCase c, String implementation) {
        Plan plan = c.op().plan();
        assertEquals(implementation, plan.implementation(), c.ctx + "; " + plan);
        INDArray[] gpu = c.check();
        INDArray[] cpu = onCpu(c::check);
        Compare.close("out, GPU vs CPU", gpu[0], Nd.values(cpu[0]), 2 * Compare.tolerance(c.type), c.ctx);
        Compare.closeAbs("lse, GPU vs CPU", gpu[1], Nd.values(cpu[1]), GPU_VS_CPU_LSE, c.ctx);
    }

    private static INDArray[] onCpu(java.util.function.Supplier<INDArray[]> call) {
        Mla4j.useCpu();
        try {
            return call.get();
        } finally {
            Mla4j.useGpu(0);
        }
    }

    private static SparseDecodeCase deepSeek(CacheLayout layout) {
        SparseDecodeCase c = new SparseDecodeCase();
        c.type = DataType.BFLOAT16;
        c.keys.layout = layout;
        c.dQk = 576;
        c.dV = 512;
        c.keys.numBlocks = 6;
        c.keys.blockSize = 64;
        c.keys.topk = 200;
        c.b = 3;
        c.sQ = 2;
        c.hQ = 64;
        return c;
    }

    /** V3.2: FP8 V32 cache, h_q 128, lengths, a finite sink. */
    @Test
    void v32Cache() {
        TestRandom r = TestRandom.create();
        SparseDecodeCase c = deepSeek(CacheLayout.V32);
        c.hQ = 128;
        c.keys.topkLength = true;
        c.sink = Sink.FINITE;
        onGpuAndCpu(c.build(r), sm90());
    }

    /** V4: FP8 MODEL1 window and a MODEL1 extra key set with its own lengths, sink, VVPA. */
    @Test
    void model1WithExtraKeySet() {
        TestRandom r = TestRandom.create();
        SparseDecodeCase c = deepSeek(CacheLayout.MODEL1);
        c.keys.topk = 128;
        c.extra = new SparseDecodeCase.KeySpec();
        c.extra.layout = CacheLayout.MODEL1;
        c.extra.numBlocks = 3;
        c.extra.blockSize = 64;
        c.extra.topk = 64;
        c.extra.topkLength = true;
        c.sink = Sink.MIXED;
        c.ropeDim = 64;
        onGpuAndCpu(c.build(r), sm90());
    }

    /** BF16 rows (no peer kernel has sparse decode over them): every head count, s_q 1-4, odd block sizes. */
    @ParameterizedTest
    @ValueSource(ints = {1, 3, 16, 64, 128})
    void bf16Cache(int hQ) {
        TestRandom r = TestRandom.create();
        for (int sQ = 1; sQ <= 4; sQ++) {
            SparseDecodeCase c = deepSeek(CacheLayout.PLAIN);
            c.hQ = hQ;
            c.sQ = sQ;
            c.b = 2;
            c.keys.blockSize = new int[] {1, 61, 64, 2}[sQ - 1];
            c.keys.numBlocks = 300 / c.keys.blockSize + 1;
            c.keys.topk = 100 + sQ;
            c.keys.topkLength = sQ % 2 == 0;
            c.ropeDim = sQ == 3 ? 64 : 0;
            onGpuAndCpu(c.build(r), sm90());
        }
    }

    @ParameterizedTest
    @EnumSource(Sink.class)
    void sinks(Sink sink) {
        TestRandom r = TestRandom.create();
        SparseDecodeCase c = deepSeek(CacheLayout.V32);
        c.sink = sink;
        onGpuAndCpu(c.build(r), sm90());
    }

    /** Every index invalid (and topk_length 0 for request 0): out 0 and lse +inf, or the sink's. */
    @Test
    void noValidKey() {
        TestRandom r = TestRandom.create();
        for (Sink sink : new Sink[] {Sink.NONE, Sink.MIXED}) {
            SparseDecodeCase c = deepSeek(CacheLayout.MODEL1);
            c.keys.invalid = 1.0;
            c.keys.topkLength = true;
            c.extra = new SparseDecodeCase.KeySpec();
            c.extra.layout = CacheLayout.MODEL1;
            c.extra.blockSize = 64;
            c.extra.invalid = 1.0;
            c.sink = sink;
            onGpuAndCpu(c.build(r), sm90());
        }
    }

    /** float32 / float64 / float16 queries, small dims, FP8 layouts of other sizes: the CUDA-core kernel. */
    @ParameterizedTest
    @ValueSource(strings = {"FLOAT", "DOUBLE", "HALF"})
    void otherTypesTakeTheCudaCoreKernel(String type) {
        TestRandom r = TestRandom.create();
        SparseDecodeCase c = new SparseDecodeCase();
        c.type = DataType.valueOf(type);
        c.sQ = 2;
        c.hQ = 6;
        c.keys.topkLength = true;
        c.extra = new SparseDecodeCase.KeySpec();
        c.extra.topk = 9;
        c.sink = Sink.FINITE;
        c.ropeDim = 8;
        onGpuAndCpu(c.build(r), "cuda_core");
        for (CacheLayout l : new CacheLayout[] {Caches.V32_SMALL, Caches.MODEL1_SMALL}) {
            SparseDecodeCase f = new SparseDecodeCase();
            f.type = DataType.valueOf(type);
            f.keys.layout = l;
            f.dV = l.valueDims();
            f.hQ = 5;
            f.sink = Sink.MIXED;
            onGpuAndCpu(f.build(r), "cuda_core");
        }
    }

    @Test
    void plansNameTheImplementationAndWhyOthersRefused() {
        TestRandom r = TestRandom.create();
        SparseDecodeCase bf16 = deepSeek(CacheLayout.PLAIN).build(r);
        assertEquals(sm90(), bf16.op().plan(0).implementation(), bf16.ctx);
        assertEquals("cpu", bf16.op().plan(-1).implementation(), bf16.ctx);
        SparseDecodeCase f32 = deepSeek(CacheLayout.PLAIN);
        f32.type = DataType.FLOAT;
        Plan p = f32.build(r).op().plan(0);
        assertEquals("cuda_core", p.implementation(), p.toString());
        String why = p.refusal("sm90_sparse");
        assertNotNull(why, p.toString());
        if (Gpu.computeCapability(0) == 90) assertTrue(why.contains("float32"), p.toString());

        SparsePrefillCase pf = absorbedPrefill(DataType.BFLOAT16, 576, 64).build(r);
        assertEquals(sm90(), pf.op().plan().implementation(), pf.ctx);
        SparsePrefillCase pf32 = absorbedPrefill(DataType.FLOAT, 576, 64).build(r);
        Plan pp = pf32.op().plan();
        assertEquals("cuda_core", pp.implementation(), pp.toString());
        assertNotNull(pp.refusal("sm90_sparse"), pp.toString());
    }

    // ---- sparse prefill ----

    private static SparsePrefillCase absorbedPrefill(DataType type, int dQk, int hQ) {
        SparsePrefillCase c = new SparsePrefillCase();
        c.type = type;
        c.sQ = 5;
        c.sKv = 300;
        c.hQ = hQ;
        c.hKv = 1;
        c.dQk = dQk;
        c.dV = 512;
        c.topk = 128;
        return c;
    }

    /**
     * d 576 and 512 (V3.2 / V4), h_q 64 and 128, lengths, sink, VVPA: the forward on the GPU
     * and on the CPU against the reference and each other; the backward (CPU) from the GPU's
     * forward outputs against the reference.
     */
    @ParameterizedTest
    @ValueSource(ints = {576, 512})
    void sparsePrefillAbsorbed(int dQk) {
        TestRandom r = TestRandom.create();
        for (int hQ : new int[] {64, 128}) {
            SparsePrefillCase c = absorbedPrefill(DataType.BFLOAT16, dQk, hQ);
            c.topkLength = true;
            c.sink = hQ == 64 ? Sink.FINITE : Sink.MIXED;
            c.ropeDim = 64;
            c.build(r);
            prefillOnGpuAndCpu(c, sm90(), r);
        }
    }

    @Test
    void sparsePrefillNoValidKey() {
        TestRandom r = TestRandom.create();
        SparsePrefillCase c = absorbedPrefill(DataType.BFLOAT16, 576, 64);
        c.invalid = 1.0;
        c.sink = Sink.MIXED;
        prefillOnGpuAndCpu(c.build(r), sm90(), r);
    }

    @ParameterizedTest
    @ValueSource(strings = {"FLOAT", "DOUBLE", "HALF"})
    void sparsePrefillOtherTypes(String type) {
        TestRandom r = TestRandom.create();
        SparsePrefillCase c = new SparsePrefillCase();
        c.type = DataType.valueOf(type);
        c.hQ = 8;
        c.hKv = 2;
        c.topkLength = true;
        c.sink = Sink.FINITE;
        c.ropeDim = 8;
        prefillOnGpuAndCpu(c.build(r), "cuda_core", r);
    }

    private static void prefillOnGpuAndCpu(SparsePrefillCase c, String implementation, TestRandom r) {
        Plan plan = c.op().plan();
        assertEquals(implementation, plan.implementation(), c.ctx + "; " + plan);
        INDArray[] gpu = c.forward();
        INDArray[] cpu = onCpu(c::forward);
        Compare.close("out, GPU vs CPU", gpu[0], Nd.values(cpu[0]), 2 * Compare.tolerance(c.type), c.ctx);
        Compare.closeAbs("max_logit, GPU vs CPU", gpu[1], Nd.values(cpu[1]), GPU_VS_CPU_LSE, c.ctx);
        Compare.closeAbs("lse, GPU vs CPU", gpu[2], Nd.values(cpu[2]), GPU_VS_CPU_LSE, c.ctx);
        double[] dOut = Nd.roundTo(r.normal(c.sQ * c.hQ * c.dV), c.type);
        INDArray[] g = c.backward(gpu, dOut);
        Ref.SparsePrefillGrad want = Ref.sparsePrefillGrad(c.ref, dOut);
        Compare.close("dq from the GPU's forward", g[0], want.dq, Compare.tolerance(c.type), c.ctx);
        Compare.close("dkv from the GPU's forward", g[1], want.dkv, Compare.tolerance(c.type), c.ctx);
    }

    // ---- SameDiff graphs ----

    /** Sparse decode with an extra key set in a graph: the GPU's output is the CPU's. */
    @Test
    void sparseDecodeGraph() {
        TestRandom r = TestRandom.create();
        SparseDecodeCase c = deepSeek(CacheLayout.V32);
        c.extra = new SparseDecodeCase.KeySpec();
        c.extra.layout = CacheLayout.V32;
        c.extra.blockSize = 64;
        c.extra.topk = 50;
        c.extra.topkLength = true;
        c.sink = Sink.FINITE;
        c.build(r);
        SameDiff sd = SameDiff.create();
        SDMla m = Mla4j.ops(sd);
        SDVariable q = sd.placeHolder("q", DataType.BFLOAT16, c.b, c.sQ, c.hQ, c.dQk);
        SDVariable[] outs = m.sparseDecode(q, sd.constant("cache", c.keyArrays[0]), sd.constant("idx", c.keyArrays[1]), null,
                sd.constant("extraCache", c.extraArrays[0]), sd.constant("extraIdx", c.extraArrays[1]),
                sd.constant("extraLen", c.extraArrays[2]), sd.constant("sink", c.sinkArr), null, c.options);
        outs[0].rename("out");
        outs[1].rename("lse");
        Map<String, INDArray> gpu = sd.output(Map.of("q", c.q), "out", "lse");
        Map<String, INDArray> cpu = onCpuMap(() -> sd.output(Map.of("q", c.q), "out", "lse"));
        Compare.close("SameDiff out, GPU vs CPU", gpu.get("out"), Nd.values(cpu.get("out")), 2e-2, c.ctx);
        Compare.closeAbs("SameDiff lse, GPU vs CPU", gpu.get("lse"), Nd.values(cpu.get("lse")), GPU_VS_CPU_LSE, c.ctx);
        Ref.Result want = Ref.sparseDecode(c.ref);
        Compare.output("SameDiff out on the GPU", gpu.get("out"), want.out, 1e-2, c.ctx);
    }

    /**
     * Gradients of sum(out * w) through sparse prefill in a graph: the forward runs on the GPU,
     * its backward (no CUDA kernel) on the CPU; both against the float64 reference and against
     * the whole graph on the CPU.
     */
    @ParameterizedTest
    @ValueSource(strings = {"FLOAT", "BFLOAT16"})
    void sparsePrefillGradientsInAGraph(String type) {
        TestRandom r = TestRandom.create();
        DataType t = DataType.valueOf(type);
        SparsePrefillCase c = t == DataType.FLOAT ? new SparsePrefillCase() : absorbedPrefill(t, 576, 64);
        c.type = t;
        c.topkLength = true;
        c.sink = Sink.FINITE;
        c.build(r);
        double[] w = Nd.roundTo(r.normal(c.sQ * c.hQ * c.dV), t);
        SameDiff sd = SameDiff.create();
        SDMla m = Mla4j.ops(sd);
        SDVariable q = sd.var("q", c.q.dup());
        SDVariable kv = sd.var("kv", c.kv.dup());
        SDVariable sink = sd.var("sink", c.sinkArr.dup());
        SDVariable[] o = m.sparsePrefill(q, kv, sd.constant("idx", c.indices), sd.constant("len", c.lengths), sink, null,
                c.dV, c.scale, null);
        sd.sum("loss", o[0].mul(sd.constant("w", Nd.array(w, t, c.sQ, c.hQ, c.dV))));
        sd.setLossVariables("loss");

        SparsePrefill fwd = c.op();
        List<INDArray> bpIn = new ArrayList<>(List.of(c.inputs()));
        INDArray[] f = c.forward();
        bpIn.add(f[0]);
        bpIn.add(f[2]);
        bpIn.add(Nd.array(w, t, c.sQ, c.hQ, c.dV));
        assertEquals(0, fwd.runsOn(), "the forward runs on the GPU");
        assertEquals(-1, new SparsePrefillBp(bpIn.toArray(new INDArray[0]), fwd).runsOn(), "the backward on the CPU");

        Map<String, INDArray> gpu = sd.calculateGradients(null, "q", "kv", "sink");
        Map<String, INDArray> cpu = onCpuMap(() -> sd.calculateGradients(null, "q", "kv", "sink"));
        Ref.SparsePrefillGrad want = Ref.sparsePrefillGrad(c.ref, w);
        double tol = Compare.tolerance(t);
        Compare.close("dq", gpu.get("q"), want.dq, tol, c.ctx);
        Compare.close("dkv", gpu.get("kv"), want.dkv, tol, c.ctx);
        Compare.close("dsink", gpu.get("sink"), want.dsink, tol, c.ctx);
        for (String v : new String[] {"q", "kv", "sink"}) {
            Compare.close("d" + v + ", GPU forward vs CPU", gpu.get(v), Nd.values(cpu.get(v)), 2 * tol, c.ctx);
        }
    }

    private static Map<String, INDArray> onCpuMap(java.util.function.Supplier<Map<String, INDArray>> call) {
        Mla4j.useCpu();
        try {
            return call.get();
        } finally {
            Mla4j.useGpu(0);
        }
    }
}
