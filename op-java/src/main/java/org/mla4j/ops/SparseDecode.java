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
 * Token-sparse decode (DeepSeek Sparse Attention; ops.md section 2), one KV head.
 *
 * <p>Inputs, in order (optional ones only when given): {@code q [b, s_q, h_q, d_qk]},
 * {@code kCache} (FP8 bytes {@code [num_blocks, block_bytes]} or PLAIN
 * {@code [num_blocks, block_size, 1, d_qk]}), {@code indices int32 [b, s_q, topk]} (each
 * {@code block * block_size + offset}), [{@code topkLength int32 [b]}], [{@code extraCache},
 * {@code extraIndices int32 [b, s_q, extra_topk]}, [{@code extraTopkLength int32 [b]}]],
 * [{@code sink float32 [h_q]}], [{@code outPositions int32 [b, s_q]}].
 * Both key sets share one softmax. Outputs {@code out [b, s_q, h_q, d_v]},
 * {@code lse float32 [b, h_q, s_q]}.
 */
public class SparseDecode extends MlaOp {
    public static final String OP_NAME = "mla_sparse_decode";
    // iargs: d_v, hasTopkLength, hasExtra, hasExtraTopkLength, hasSink, hasRotation,
    //        layout (5), extra layout (5), rope (4).  targs: scale, rope (4)

    public SparseDecode() {}

    public SparseDecode(SameDiff sd, SDVariable q, SDVariable kCache, SDVariable indices, SDVariable topkLength,
                        SDVariable extraCache, SDVariable extraIndices, SDVariable extraTopkLength,
                        SDVariable sink, SDVariable outPositions, Options o) {
        super(sd, Inputs.of(q, kCache, indices, topkLength, extraCache, extraIndices, extraTopkLength, sink, outPositions));
        addArgs(o, topkLength != null, extraCache != null, extraTopkLength != null, sink != null, outPositions != null);
    }

    public SparseDecode(INDArray q, INDArray kCache, INDArray indices, INDArray topkLength,
                        INDArray extraCache, INDArray extraIndices, INDArray extraTopkLength,
                        INDArray sink, INDArray outPositions, Options o) {
        super(Inputs.of(q, kCache, indices, topkLength, extraCache, extraIndices, extraTopkLength, sink, outPositions), null);
        addArgs(o, topkLength != null, extraCache != null, extraTopkLength != null, sink != null, outPositions != null);
    }

    /** Options of sparse decode. */
    public static final class Options {
        public long dV;
        public double softmaxScale;
        public CacheLayout layout = CacheLayout.PLAIN;
        public long blockSize;
        public CacheLayout extraLayout = CacheLayout.PLAIN;
        public long extraBlockSize;
        public RopeConfig rope = RopeConfig.none();

        public Options(long dV) { this.dV = dV; }

        public Options softmaxScale(double s) { softmaxScale = s; return this; }
        public Options fp8(CacheLayout l, long blockSize) { layout = l; this.blockSize = blockSize; return this; }
        public Options extraFp8(CacheLayout l, long blockSize) { extraLayout = l; extraBlockSize = blockSize; return this; }
        public Options rope(RopeConfig r) { rope = r; return this; }
    }

    private void addArgs(Options o, boolean topkLen, boolean extra, boolean extraTopkLen, boolean sink, boolean rot) {
        addIArgument(o.dV, topkLen ? 1 : 0, extra ? 1 : 0, extraTopkLen ? 1 : 0, sink ? 1 : 0, rot ? 1 : 0);
        addTArgument(o.softmaxScale);
        o.layout.addArgs(this, o.blockSize);
        o.extraLayout.addArgs(this, o.extraBlockSize);
        o.rope.addArgs(this);
    }

    @Override
    public String opName() { return OP_NAME; }

    @Override
    protected int numOutputs() { return 2; }

    private boolean flag(int i) { return iarg(i) != 0; }
    private CacheLayout layout() { return CacheLayout.fromArgs(iArguments, 6); }
    private long blockSizeArg() { return iarg(10); }
    private CacheLayout extraLayout() { return CacheLayout.fromArgs(iArguments, 11); }
    private long extraBlockSizeArg() { return iarg(15); }
    private RopeConfig rope() { return RopeConfig.fromArgs(iArguments, 16, tArguments, 1); }

    /** Positions of the optional inputs: topkLength, extraCache, extraIndices, extraTopkLength, sink, positions (-1 absent). */
    private int[] slots() {
        int[] s = new int[6];
        int next = 3;
        s[0] = flag(1) ? next++ : -1;
        s[1] = flag(2) ? next++ : -1;
        s[2] = flag(2) ? next++ : -1;
        s[3] = flag(2) && flag(3) ? next++ : -1;
        s[4] = flag(4) ? next++ : -1;
        s[5] = flag(5) ? next++ : -1;
        return s;
    }

    private int numInputs() {
        int n = 3;
        for (int s : slots()) if (s >= 0) n++;
        return n;
    }

    @Override
    public List<DataType> calculateOutputDataTypes(List<DataType> in) {
        return List.of(in.get(0), DataType.FLOAT);
    }

    @Override
    protected List<LongShapeDescriptor> outputShapes(INDArray[] in) {
        String op = OP_NAME;
        requireInputs(in, numInputs(), "(q, kCache, indices [, topkLength] [, extraCache, extraIndices [, extraTopkLength]] [, sink] [, outPositions])");
        INDArray q = in[0];
        Check.rank(op, "q", q, 4, "[b, s_q, h_q, d_qk]");
        Check.floatType(op, "q", q);
        long b = q.size(0), sQ = q.size(1), hQ = q.size(2), dQk = q.size(3);
        int[] s = slots();
        CacheLayout l = layout();
        checkKeySet(op, "kCache", in[1], l, blockSizeArg(), "indices", in[2], "topkLength", s[0] >= 0 ? in[s[0]] : null, q);
        long valueDims = CacheArg.valueDims(l, dQk);
        if (s[1] >= 0) {
            CacheLayout el = extraLayout();
            checkKeySet(op, "extraCache", in[s[1]], el, extraBlockSizeArg(), "extraIndices", in[s[2]],
                    "extraTopkLength", s[3] >= 0 ? in[s[3]] : null, q);
            if (CacheArg.valueDims(el, dQk) != valueDims) {
                throw Check.fail(op, "extraCache (" + el + ") provides " + CacheArg.valueDims(el, dQk)
                        + " value dims but kCache (" + l + ") provides " + valueDims);
            }
        }
        long dV = iarg(0);
        if (dV <= 0 || dV > valueDims) {
            throw Check.fail(op, "d_v must be in [1, " + valueDims + "] for a " + l.name() + " cache, got " + dV);
        }
        if (s[4] >= 0) {
            Check.shape(op, "sink", in[s[4]], hQ);
            Check.type(op, "sink", in[s[4]], DataType.FLOAT);
        }
        if (s[5] >= 0) {
            Check.shape(op, "outPositions", in[s[5]], b, sQ);
            Check.type(op, "outPositions", in[s[5]], DataType.INT);
        }
        return list(desc(q.dataType(), b, sQ, hQ, dV), desc(DataType.FLOAT, b, hQ, sQ));
    }

    private static void checkKeySet(String op, String cacheArg, INDArray cache, CacheLayout l, long bs,
                                    String idxArg, INDArray idx, String lenArg, INDArray len, INDArray q) {
        long b = q.size(0), sQ = q.size(1), dQk = q.size(3);
        CacheArg.validate(op, cacheArg, cache, l, bs, dQk, 1);
        if (!l.isFp8()) Check.sameType(op, cacheArg, cache, "q", q);
        Check.rank(op, idxArg, idx, 3, "[b, s_q, topk]");
        Check.type(op, idxArg, idx, DataType.INT);
        Check.dim(op, idxArg, idx, 0, "b", b);
        Check.dim(op, idxArg, idx, 1, "s_q", sQ);
        if (len != null) {
            Check.shape(op, lenArg, len, b);
            Check.type(op, lenArg, len, DataType.INT);
        }
    }

    @Override
    public boolean hasDeviceKernel() {
        return true;
    }

    @Override
    protected void compute(INDArray[] in, INDArray[] out) {
        int[] s = slots();
        place(ops -> launch(ops, in[0], keySet(ops, in, 1, 2, s[0], layout(), blockSizeArg()),
                s[1] >= 0 ? keySet(ops, in, s[1], s[2], s[3], extraLayout(), extraBlockSizeArg()) : null,
                s[4] >= 0 ? in[s[4]] : null, s[5] >= 0 ? in[s[5]] : null, out[0], out[1], iarg(0), targ(0), rope()));
    }

    /**
     * The plan of this (eager) call on {@code device} (-1: the CPU): which implementation runs
     * it and why the others refused (the native plan query; nothing runs). Inputs are checked
     * as by a call.
     */
    public Plan plan(int device) {
        INDArray[] in = checkedInputs();
        INDArray[] out = plannedOutputs(in);
        int[] s = slots();
        PlanOperands ops = new PlanOperands(device);
        return plan(ops, in[0], keySet(ops, in, 1, 2, s[0], layout(), blockSizeArg()),
                s[1] >= 0 ? keySet(ops, in, s[1], s[2], s[3], extraLayout(), extraBlockSizeArg()) : null,
                s[4] >= 0 ? in[s[4]] : null, s[5] >= 0 ? in[s[5]] : null, out[0], out[1], iarg(0), targ(0), rope());
    }

    /** The plan of this call where the placement switch sends it now ({@link #runsOn()}). */
    public Plan plan() {
        return plan(runsOn());
    }

    private static KeySet keySet(Operands ops, INDArray[] in, int cache, int idx, int len, CacheLayout l, long bs) {
        INDArray c = in[cache];
        return new KeySet(k -> CacheArg.fill(k, c, l, bs, ops.in(c)), in[idx], len >= 0 ? in[len] : null);
    }

    /**
     * One key set of a sparse-decode call: {@code cache} fills the cache descriptor (its data
     * pointer included, in the call's memory), {@code indices int32 [b, s_q, topk]} are slots
     * {@code block * block_size + offset} of that cache, {@code topkLength int32 [b]} is
     * optional.
     */
    public record KeySet(Consumer<MlaLib.mla_cache> cache, INDArray indices, INDArray topkLength) {}

    /**
     * Fills the native parameters from the operands (host memory or device copies) and runs
     * the kernel; {@code extra} may be null. Device calls take their workspace from the
     * operands.
     */
    public static void launch(Operands ops, INDArray q, KeySet keys, KeySet extra, INDArray sink, INDArray positions,
                              INDArray out, INDArray lse, long dV, double scaleArg, RopeConfig rope) {
        try (MlaLib.mla_sparse_decode_params p = params(ops, q, keys, extra, sink, positions, out, lse, dV, scaleArg, rope)) {
            if (ops.device() >= 0) {
                // -1: the library refuses the call; the call itself then says why, with its status.
                long ws = MlaLib.mla_sparse_decode_workspace_size(p);
                if (ws > 0) p.exec().workspace(ops.workspace(ws)).workspace_bytes(ws);
            }
            NativeLib.check(MlaLib.mla_sparse_decode(p));
        }
    }

    /** The plan of the call {@link #launch} would make with these arguments (nothing runs). */
    public static Plan plan(Operands ops, INDArray q, KeySet keys, KeySet extra, INDArray sink, INDArray positions,
                            INDArray out, INDArray lse, long dV, double scaleArg, RopeConfig rope) {
        try (MlaLib.mla_sparse_decode_params p = params(ops, q, keys, extra, sink, positions, out, lse, dV, scaleArg, rope)) {
            return Plan.query(info -> MlaLib.mla_sparse_decode_plan(p, info));
        }
    }

    private static MlaLib.mla_sparse_decode_params params(Operands ops, INDArray q, KeySet keys, KeySet extra,
                                                          INDArray sink, INDArray positions, INDArray out,
                                                          INDArray lse, long dV, double scaleArg, RopeConfig rope) {
        MlaLib.mla_sparse_decode_params p = NativeLib.params(MlaLib.mla_sparse_decode_params.class, MlaLib.mla_sparse_decode_params::new);
        p.dtype(NativeLib.dtype(q.dataType())).b(q.size(0)).s_q(q.size(1)).h_q(q.size(2))
                .d_qk(q.size(3)).d_v(dV).q(ops.in(q))
                .q_stride(0, q.stride(0)).q_stride(1, q.stride(1)).q_stride(2, q.stride(2));
        fillKeys(ops, p.keys(), keys);
        if (extra != null) {
            fillKeys(ops, p.extra(), extra);
        } else {
            p.extra().cache().data(null);
            p.extra().indices(null).topk(0).topk_length(null);
        }
        p.softmax_scale((float) Scale.resolve(scaleArg, q.size(3))).sink(floats(ops.in(sink)));
        Rotation.fill(p.out_rotation(), positions == null ? null : ints(ops.in(positions)), rope);
        p.out(ops.out(out)).out_stride(0, out.stride(0)).out_stride(1, out.stride(1))
                .out_stride(2, out.stride(2)).lse(floats(ops.out(lse)));
        p.exec().device(ops.device()).num_threads(0).stream(ops.stream());
        return p;
    }

    private static void fillKeys(Operands ops, MlaLib.mla_sparse_keys k, KeySet s) {
        s.cache().accept(k.cache());
        INDArray idx = s.indices();
        k.indices(ints(ops.in(idx))).topk(idx.size(2)).indices_stride(0, idx.stride(0))
                .indices_stride(1, idx.stride(1)).topk_length(ints(ops.in(s.topkLength())));
    }

    @Override
    public List<SDVariable> doDiff(List<SDVariable> grads) {
        throw Check.fail(OP_NAME, "is an inference op over a KV cache and has no gradient; "
                + "train with mla_sparse_prefill (the same function on dense keys)");
    }
}
