package org.mla4j.ops;

import java.util.List;
import java.util.function.Consumer;
import org.mla4j.exec.NativeLib;
import org.mla4j.exec.Operands;
import org.mla4j.exec.Plan;
import org.mla4j.exec.PlanOperands;
import org.mla4j.nativelib.MlaLib;
import org.nd4j.autodiff.samediff.SDVariable;
import org.nd4j.autodiff.samediff.SameDiff;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.api.shape.LongShapeDescriptor;

/**
 * Dense decode over a paged KV cache (ops.md section 1; MQA / absorbed MLA).
 *
 * <p>Inputs: {@code q [b, s_q, h_q, d_qk]}, {@code kCache} (PLAIN {@code [num_blocks,
 * block_size, h_kv, d_qk]} or FP8 bytes {@code [num_blocks, block_bytes]}),
 * {@code blockTable int32 [b, max_blocks_per_seq]}, {@code cacheSeqlens int32 [b]}, then
 * optionally {@code sink float32 [h_q]} and {@code outPositions int32 [b, s_q]} (VVPA).
 * Outputs: {@code out [b, s_q, h_q, d_v]} in q's type, {@code lse float32 [b, h_q, s_q]}.
 * The value is the first d_v dims of each cached key row.
 */
public class DenseDecode extends MlaOp {
    public static final String OP_NAME = "mla_dense_decode";
    // iargs: d_v, causal, hasSink, hasRotation, cache layout (5), rope (4)
    // targs: softmax scale (<= 0: 1/sqrt(d_qk)), rope (4)

    public DenseDecode() {}

    public DenseDecode(SameDiff sd, SDVariable q, SDVariable kCache, SDVariable blockTable,
                       SDVariable cacheSeqlens, SDVariable sink, SDVariable outPositions,
                       Options o) {
        super(sd, Inputs.of(q, kCache, blockTable, cacheSeqlens, sink, outPositions));
        addArgs(o, sink != null, outPositions != null);
    }

    public DenseDecode(INDArray q, INDArray kCache, INDArray blockTable, INDArray cacheSeqlens,
                       INDArray sink, INDArray outPositions, Options o) {
        super(Inputs.of(q, kCache, blockTable, cacheSeqlens, sink, outPositions), null);
        addArgs(o, sink != null, outPositions != null);
    }

    /** Options of dense decode. */
    public static final class Options {
        public long dV;
        public boolean causal;
        public double softmaxScale;
        public CacheLayout layout = CacheLayout.PLAIN;
        public long blockSize;
        public RopeConfig rope = RopeConfig.none();

        public Options(long dV) {
            this.dV = dV;
        }

        public Options causal(boolean c) { causal = c; return this; }
        public Options softmaxScale(double s) { softmaxScale = s; return this; }
        /** An FP8 cache: its layout and tokens per block. */
        public Options fp8(CacheLayout l, long blockSize) { layout = l; this.blockSize = blockSize; return this; }
        /** The VVPA output rotation (used when outPositions is given). */
        public Options rope(RopeConfig r) { rope = r; return this; }
    }

    private void addArgs(Options o, boolean sink, boolean rot) {
        addIArgument(o.dV, o.causal ? 1 : 0, sink ? 1 : 0, rot ? 1 : 0);
        addTArgument(o.softmaxScale);
        o.layout.addArgs(this, o.blockSize);
        o.rope.addArgs(this);
    }

    @Override
    public String opName() {
        return OP_NAME;
    }

    @Override
    protected int numOutputs() {
        return 2;
    }

    private long dV() { return iarg(0); }
    private boolean causal() { return iarg(1) != 0; }
    private boolean hasSink() { return iarg(2) != 0; }
    private boolean hasRotation() { return iarg(3) != 0; }
    private CacheLayout layout() { return CacheLayout.fromArgs(iArguments, 4); }
    private long blockSizeArg() { return iarg(8); }
    private RopeConfig rope() { return RopeConfig.fromArgs(iArguments, 9, tArguments, 1); }

    @Override
    public List<DataType> calculateOutputDataTypes(List<DataType> in) {
        return List.of(in.get(0), DataType.FLOAT);
    }

    @Override
    protected List<LongShapeDescriptor> outputShapes(INDArray[] in) {
        String op = OP_NAME;
        requireInputs(in, 4 + (hasSink() ? 1 : 0) + (hasRotation() ? 1 : 0),
                "(q, kCache, blockTable, cacheSeqlens" + (hasSink() ? ", sink" : "") + (hasRotation() ? ", outPositions" : "") + ")");
        INDArray q = in[0], cache = in[1], table = in[2], seqlens = in[3];
        Check.rank(op, "q", q, 4, "[b, s_q, h_q, d_qk]");
        Check.floatType(op, "q", q);
        long b = q.size(0), sQ = q.size(1), hQ = q.size(2), dQk = q.size(3);
        CacheLayout l = layout();
        CacheArg.validate(op, "kCache", cache, l, blockSizeArg(), dQk, 0);
        if (!l.isFp8()) {
            Check.sameType(op, "kCache", cache, "q", q);
            Check.divisible(op, "h_q", hQ, "h_kv", cache.size(2));
        }
        long dV = dV();
        if (dV <= 0 || dV > CacheArg.valueDims(l, dQk)) {
            throw Check.fail(op, "d_v must be in [1, " + CacheArg.valueDims(l, dQk) + "], got " + dV);
        }
        Check.rank(op, "blockTable", table, 2, "[b, max_blocks_per_seq]");
        Check.type(op, "blockTable", table, DataType.INT);
        Check.dim(op, "blockTable", table, 0, "b", b);
        Check.shape(op, "cacheSeqlens", seqlens, b);
        Check.type(op, "cacheSeqlens", seqlens, DataType.INT);
        int next = 4;
        if (hasSink()) {
            Check.shape(op, "sink", in[next], hQ);
            Check.type(op, "sink", in[next++], DataType.FLOAT);
        }
        if (hasRotation()) {
            Check.shape(op, "outPositions", in[next], b, sQ);
            Check.type(op, "outPositions", in[next], DataType.INT);
        }
        return list(desc(q.dataType(), b, sQ, hQ, dV), desc(DataType.FLOAT, b, hQ, sQ));
    }

    @Override
    public boolean hasDeviceKernel() {
        return true;
    }

    @Override
    protected void compute(INDArray[] in, INDArray[] out) {
        int next = 4;
        INDArray sink = hasSink() ? in[next++] : null;
        INDArray pos = hasRotation() ? in[next] : null;
        CacheLayout l = layout();
        long bs = blockSizeArg();
        place(ops -> launch(ops, in[0], c -> CacheArg.fill(c, in[1], l, bs, ops.in(in[1])), in[2], in[3],
                sink, pos, out[0], out[1], dV(), causal(), targ(0), rope()));
    }

    /**
     * The plan of this (eager) call on {@code device} (-1: the CPU): which implementation runs
     * it and why the others refused (the native plan query; nothing runs). Inputs are checked
     * as by a call.
     */
    public Plan plan(int device) {
        INDArray[] in = checkedInputs();
        INDArray[] out = plannedOutputs(in);
        int next = 4;
        INDArray sink = hasSink() ? in[next++] : null;
        INDArray pos = hasRotation() ? in[next] : null;
        CacheLayout l = layout();
        long bs = blockSizeArg();
        PlanOperands ops = new PlanOperands(device);
        return plan(ops, in[0], c -> CacheArg.fill(c, in[1], l, bs, ops.in(in[1])), in[2], in[3], sink, pos, out[0],
                out[1], dV(), causal(), targ(0), rope());
    }

    /** The plan of this call where the placement switch sends it now ({@link #runsOn()}). */
    public Plan plan() {
        return plan(runsOn());
    }

    /**
     * Fills the native parameters from the operands (host memory or device copies) and runs
     * the kernel; {@code cache} describes the cache (its data pointer included). Device calls
     * take their workspace from the operands.
     */
    public static void launch(Operands ops, INDArray q, Consumer<MlaLib.mla_cache> cache, INDArray table,
                              INDArray seqlens, INDArray sink, INDArray positions, INDArray out, INDArray lse,
                              long dV, boolean causal, double scaleArg, RopeConfig rope) {
        try (MlaLib.mla_dense_decode_params p = params(ops, q, cache, table, seqlens, sink, positions, out, lse, dV,
                causal, scaleArg, rope)) {
            if (ops.device() >= 0) {
                // -1: the library refuses the call; the call itself then says why, with its status.
                long ws = MlaLib.mla_dense_decode_workspace_size(p);
                if (ws > 0) p.exec().workspace(ops.workspace(ws)).workspace_bytes(ws);
            }
            NativeLib.check(MlaLib.mla_dense_decode(p));
        }
    }

    /** The plan of the call {@link #launch} would make with these arguments (nothing runs). */
    public static Plan plan(Operands ops, INDArray q, Consumer<MlaLib.mla_cache> cache, INDArray table,
                            INDArray seqlens, INDArray sink, INDArray positions, INDArray out, INDArray lse,
                            long dV, boolean causal, double scaleArg, RopeConfig rope) {
        try (MlaLib.mla_dense_decode_params p = params(ops, q, cache, table, seqlens, sink, positions, out, lse, dV,
                causal, scaleArg, rope)) {
            return Plan.query(info -> MlaLib.mla_dense_decode_plan(p, info));
        }
    }

    private static MlaLib.mla_dense_decode_params params(Operands ops, INDArray q, Consumer<MlaLib.mla_cache> cache,
                                                         INDArray table, INDArray seqlens, INDArray sink,
                                                         INDArray positions, INDArray out, INDArray lse, long dV,
                                                         boolean causal, double scaleArg, RopeConfig rope) {
        MlaLib.mla_dense_decode_params p = NativeLib.params(MlaLib.mla_dense_decode_params.class, MlaLib.mla_dense_decode_params::new);
        p.dtype(NativeLib.dtype(q.dataType())).b(q.size(0)).s_q(q.size(1)).h_q(q.size(2))
                .d_qk(q.size(3)).d_v(dV).q(ops.in(q))
                .q_stride(0, q.stride(0)).q_stride(1, q.stride(1)).q_stride(2, q.stride(2));
        cache.accept(p.cache());
        p.block_table(ints(ops.in(table))).max_blocks_per_seq(table.size(1))
                .block_table_stride(table.stride(0)).cache_seqlens(ints(ops.in(seqlens)))
                .softmax_scale((float) Scale.resolve(scaleArg, q.size(3))).causal(causal ? 1 : 0)
                .sink(floats(ops.in(sink)));
        Rotation.fill(p.out_rotation(), positions == null ? null : ints(ops.in(positions)), rope);
        p.out(ops.out(out)).out_stride(0, out.stride(0)).out_stride(1, out.stride(1))
                .out_stride(2, out.stride(2)).lse(floats(ops.out(lse)));
        p.exec().device(ops.device()).num_threads(0).stream(ops.stream());
        return p;
    }

    @Override
    public List<SDVariable> doDiff(List<SDVariable> grads) {
        throw Check.fail(OP_NAME, "is an inference op over a KV cache and has no gradient; "
                + "train with mla_attention (the same function on dense keys)");
    }
}
