package org.mla4j.ops;

import java.util.ArrayList;
import java.util.List;
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
 * Sparse prefill (ops.md section 3): each query attends the key rows its indices select.
 *
 * <p>Inputs: {@code q [s_q, h_q, d_qk]}, {@code kv [s_kv, h_kv, d_qk]} (value = first d_v dims),
 * {@code indices int32 [s_q, h_kv, topk]}, then optionally {@code topkLength int32 [s_q]},
 * {@code sink float32 [h_q]}, {@code outPositions int32 [s_q]} (VVPA).
 * Outputs: {@code out [s_q, h_q, d_v]}, {@code maxLogit float32 [s_q, h_q]},
 * {@code lse float32 [s_q, h_q]}. Differentiable in q, kv and sink
 * ({@link SparsePrefillBp}).
 */
public class SparsePrefill extends MlaOp {
    public static final String OP_NAME = "mla_sparse_prefill";
    // iargs: d_v, hasTopkLength, hasSink, hasRotation, rope (4).  targs: scale, rope (4)

    public SparsePrefill() {}

    public SparsePrefill(SameDiff sd, SDVariable q, SDVariable kv, SDVariable indices, SDVariable topkLength,
                         SDVariable sink, SDVariable outPositions, long dV, double softmaxScale, RopeConfig rope) {
        super(sd, Inputs.of(q, kv, indices, topkLength, sink, outPositions));
        addArgs(dV, softmaxScale, rope, topkLength != null, sink != null, outPositions != null);
    }

    public SparsePrefill(INDArray q, INDArray kv, INDArray indices, INDArray topkLength, INDArray sink,
                         INDArray outPositions, long dV, double softmaxScale, RopeConfig rope) {
        super(Inputs.of(q, kv, indices, topkLength, sink, outPositions), null);
        addArgs(dV, softmaxScale, rope, topkLength != null, sink != null, outPositions != null);
    }

    private void addArgs(long dV, double scale, RopeConfig rope, boolean len, boolean sink, boolean rot) {
        addIArgument(dV, len ? 1 : 0, sink ? 1 : 0, rot ? 1 : 0);
        addTArgument(scale);
        (rope == null ? RopeConfig.none() : rope).addArgs(this);
    }

    @Override
    public String opName() { return OP_NAME; }

    @Override
    protected int numOutputs() { return 3; }

    long dV() { return iarg(0); }
    boolean hasTopkLength() { return iarg(1) != 0; }
    boolean hasSink() { return iarg(2) != 0; }
    boolean hasRotation() { return iarg(3) != 0; }
    RopeConfig rope() { return RopeConfig.fromArgs(iArguments, 4, tArguments, 1); }

    /** Inputs of the forward: 3 plus the optional ones. */
    int numForwardInputs() {
        return 3 + (hasTopkLength() ? 1 : 0) + (hasSink() ? 1 : 0) + (hasRotation() ? 1 : 0);
    }

    @Override
    public List<DataType> calculateOutputDataTypes(List<DataType> in) {
        return List.of(in.get(0), DataType.FLOAT, DataType.FLOAT);
    }

    @Override
    protected List<LongShapeDescriptor> outputShapes(INDArray[] in) {
        requireInputs(in, numForwardInputs(), "(q, kv, indices [, topkLength] [, sink] [, outPositions])");
        validate(OP_NAME, in, this);
        INDArray q = in[0];
        return list(desc(q.dataType(), q.size(0), q.size(1), dV()), desc(DataType.FLOAT, q.size(0), q.size(1)),
                desc(DataType.FLOAT, q.size(0), q.size(1)));
    }

    /** Checks the forward inputs (shared with the backward op). */
    static void validate(String op, INDArray[] in, SparsePrefill a) {
        INDArray q = in[0], kv = in[1], idx = in[2];
        Check.rank(op, "q", q, 3, "[s_q, h_q, d_qk]");
        Check.floatType(op, "q", q);
        Check.rank(op, "kv", kv, 3, "[s_kv, h_kv, d_qk]");
        Check.sameType(op, "kv", kv, "q", q);
        long sQ = q.size(0), hQ = q.size(1), dQk = q.size(2), hKv = kv.size(1);
        Check.dim(op, "kv", kv, 2, "d_qk", dQk);
        Check.positive(op, "h_kv", hKv);
        Check.divisible(op, "h_q", hQ, "h_kv", hKv);
        if (a.dV() <= 0 || a.dV() > dQk) throw Check.fail(op, "d_v must be in [1, " + dQk + "], got " + a.dV());
        Check.rank(op, "indices", idx, 3, "[s_q, h_kv, topk]");
        Check.type(op, "indices", idx, DataType.INT);
        Check.dim(op, "indices", idx, 0, "s_q", sQ);
        Check.dim(op, "indices", idx, 1, "h_kv", hKv);
        int next = 3;
        if (a.hasTopkLength()) {
            Check.shape(op, "topkLength", in[next], sQ);
            Check.type(op, "topkLength", in[next++], DataType.INT);
        }
        if (a.hasSink()) {
            Check.shape(op, "sink", in[next], hQ);
            Check.type(op, "sink", in[next++], DataType.FLOAT);
        }
        if (a.hasRotation()) {
            Check.shape(op, "outPositions", in[next], sQ);
            Check.type(op, "outPositions", in[next], DataType.INT);
        }
    }

    /**
     * Fills the params shared by forward and backward from the operands (host memory or
     * device copies).
     */
    void fillCommon(Operands ops, MlaLib.mla_sparse_prefill_params p, INDArray[] in) {
        INDArray q = in[0], kv = in[1], idx = in[2];
        int next = 3;
        INDArray len = hasTopkLength() ? in[next++] : null;
        INDArray sink = hasSink() ? in[next++] : null;
        INDArray pos = hasRotation() ? in[next] : null;
        p.dtype(NativeLib.dtype(q.dataType())).s_q(q.size(0)).s_kv(kv.size(0)).h_q(q.size(1))
                .h_kv(kv.size(1)).d_qk(q.size(2)).d_v(dV()).topk(idx.size(2))
                .q(ops.in(q)).q_stride(0, q.stride(0)).q_stride(1, q.stride(1))
                .kv(ops.in(kv)).kv_stride(0, kv.stride(0)).kv_stride(1, kv.stride(1))
                .indices(ints(ops.in(idx))).indices_stride(0, idx.stride(0)).indices_stride(1, idx.stride(1))
                .topk_length(ints(ops.in(len))).softmax_scale((float) Scale.resolve(targ(0), q.size(2)))
                .sink(floats(ops.in(sink)));
        Rotation.fill(p.out_rotation(), pos == null ? null : ints(ops.in(pos)), rope());
        p.exec().device(ops.device()).num_threads(0).stream(ops.stream());
    }

    @Override
    public boolean hasDeviceKernel() {
        return true;
    }

    @Override
    protected void compute(INDArray[] in, INDArray[] out) {
        place(ops -> {
            try (MlaLib.mla_sparse_prefill_params p = forwardParams(ops, in, out)) {
                if (ops.device() >= 0) {
                    // -1: the library refuses the call; the call itself then says why, with its status.
                    long ws = MlaLib.mla_sparse_prefill_fwd_workspace_size(p);
                    if (ws > 0) p.exec().workspace(ops.workspace(ws)).workspace_bytes(ws);
                }
                NativeLib.check(MlaLib.mla_sparse_prefill_fwd(p));
            }
        });
    }

    /**
     * The plan of this (eager) call on {@code device} (-1: the CPU): which implementation runs
     * it and why the others refused (the native plan query; nothing runs). Inputs are checked
     * as by a call.
     */
    public Plan plan(int device) {
        INDArray[] in = checkedInputs();
        INDArray[] out = plannedOutputs(in);
        try (MlaLib.mla_sparse_prefill_params p = forwardParams(new PlanOperands(device), in, out)) {
            return Plan.query(info -> MlaLib.mla_sparse_prefill_fwd_plan(p, info));
        }
    }

    /** The plan of this call where the placement switch sends it now ({@link #runsOn()}). */
    public Plan plan() {
        return plan(runsOn());
    }

    private MlaLib.mla_sparse_prefill_params forwardParams(Operands ops, INDArray[] in, INDArray[] out) {
        MlaLib.mla_sparse_prefill_params p = NativeLib.params(MlaLib.mla_sparse_prefill_params.class, MlaLib.mla_sparse_prefill_params::new);
        fillCommon(ops, p, in);
        INDArray o = out[0];
        p.out(ops.out(o)).out_stride(0, o.stride(0)).out_stride(1, o.stride(1))
                .max_logit(floats(ops.out(out[1]))).lse(floats(ops.out(out[2])));
        return p;
    }

    @Override
    public List<SDVariable> doDiff(List<SDVariable> grads) {
        SDVariable[] args = args();
        SDVariable[] outs = outputVariables();
        SDVariable[] bpIn = new SDVariable[args.length + 3];
        System.arraycopy(args, 0, bpIn, 0, args.length);
        bpIn[args.length] = outs[0];
        bpIn[args.length + 1] = outs[2];
        bpIn[args.length + 2] = grads.get(0);
        SparsePrefillBp bp = new SparsePrefillBp(sameDiff, bpIn, this);
        SDVariable[] g = bp.outputVariables();
        List<SDVariable> result = new ArrayList<>();
        result.add(g[0]);
        result.add(g[1]);
        int next = 2;
        for (int i = 2; i < args.length; i++) {
            boolean isSink = hasSink() && i == 3 + (hasTopkLength() ? 1 : 0);
            result.add(isSink ? g[next++] : sameDiff.zerosLike(args[i]));
        }
        return result;
    }
}
