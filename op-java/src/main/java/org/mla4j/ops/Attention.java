package org.mla4j.ops;

import java.util.ArrayList;
import java.util.List;
import org.mla4j.exec.NativeLib;
import org.mla4j.nativelib.MlaLib;
import org.nd4j.autodiff.samediff.SDVariable;
import org.nd4j.autodiff.samediff.SameDiff;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.api.shape.LongShapeDescriptor;

/**
 * Dense attention for training and prefill (ops.md section 4), memory O(sequence).
 *
 * <p>Batched: {@code q [b, s_q, h_q, d_qk]}, {@code k [b, s_k, h_kv, d_qk]},
 * {@code v [b, s_k, h_kv, d_v]}. Variable length: {@code q [total_q, h_q, d_qk]}, {@code k},
 * {@code v} packed likewise, plus {@code cuSeqlensQ}, {@code cuSeqlensK} (int32 [n + 1]).
 * Without v, the value is the first d_v dims of k (absorbed MLA). Optional {@code sink
 * float32 [h_q]} and {@code outPositions int32} (one per query row: [b, s_q] or [total_q]).
 * Inputs in order: q, k, [v], [cuSeqlensQ, cuSeqlensK], [sink], [outPositions].
 * Outputs: {@code out [.., h_q, d_v]} in q's type and {@code lse float32} ([b, h_q, s_q] or
 * [h_q, total_q]). Causal masks align bottom-right; a window w keeps keys
 * {@code [t - w + 1, t]}. Differentiable in q, k, v and sink ({@link AttentionBp}).
 */
public class Attention extends MlaOp {
    public static final String OP_NAME = "mla_attention";
    // iargs: d_v, causal, window, hasV, varlen, hasSink, hasRotation, rope (4). targs: scale, rope (4)

    public Attention() {}

    public Attention(SameDiff sd, SDVariable q, SDVariable k, SDVariable v, SDVariable cuSeqlensQ,
                     SDVariable cuSeqlensK, SDVariable sink, SDVariable outPositions, Options o) {
        super(sd, Inputs.of(q, k, v, cuSeqlensQ, cuSeqlensK, sink, outPositions));
        addArgs(o, v != null, cuSeqlensQ != null, sink != null, outPositions != null);
    }

    public Attention(INDArray q, INDArray k, INDArray v, INDArray cuSeqlensQ, INDArray cuSeqlensK,
                     INDArray sink, INDArray outPositions, Options o) {
        super(Inputs.of(q, k, v, cuSeqlensQ, cuSeqlensK, sink, outPositions), null);
        addArgs(o, v != null, cuSeqlensQ != null, sink != null, outPositions != null);
    }

    /** Options of dense attention. dV is only read when v is absent (value aliases k). */
    public static final class Options {
        public long dV;
        public boolean causal;
        public long window;
        public double softmaxScale;
        public RopeConfig rope = RopeConfig.none();

        public Options causal(boolean c) { causal = c; return this; }
        public Options window(long w) { window = w; return this; }
        public Options softmaxScale(double s) { softmaxScale = s; return this; }
        /** Value = first dV dims of k (no v input). */
        public Options valueFromKey(long dV) { this.dV = dV; return this; }
        public Options rope(RopeConfig r) { rope = r; return this; }
    }

    private void addArgs(Options o, boolean hasV, boolean varlen, boolean sink, boolean rot) {
        addIArgument(o.dV, o.causal ? 1 : 0, o.window, hasV ? 1 : 0, varlen ? 1 : 0, sink ? 1 : 0, rot ? 1 : 0);
        addTArgument(o.softmaxScale);
        o.rope.addArgs(this);
    }

    @Override
    public String opName() { return OP_NAME; }

    @Override
    protected int numOutputs() { return 2; }

    boolean causal() { return iarg(1) != 0; }
    long window() { return iarg(2); }
    boolean hasV() { return iarg(3) != 0; }
    boolean varlen() { return iarg(4) != 0; }
    boolean hasSink() { return iarg(5) != 0; }
    boolean hasRotation() { return iarg(6) != 0; }
    RopeConfig rope() { return RopeConfig.fromArgs(iArguments, 7, tArguments, 1); }

    int numForwardInputs() {
        return 2 + (hasV() ? 1 : 0) + (varlen() ? 2 : 0) + (hasSink() ? 1 : 0) + (hasRotation() ? 1 : 0);
    }

    int sinkSlot() { return hasSink() ? 2 + (hasV() ? 1 : 0) + (varlen() ? 2 : 0) : -1; }

    long dV(INDArray[] in) {
        return hasV() ? in[2].size(in[2].rank() - 1) : iarg(0);
    }

    @Override
    public List<DataType> calculateOutputDataTypes(List<DataType> in) {
        return List.of(in.get(0), DataType.FLOAT);
    }

    @Override
    protected List<LongShapeDescriptor> outputShapes(INDArray[] in) {
        requireInputs(in, numForwardInputs(), "(q, k [, v] [, cuSeqlensQ, cuSeqlensK] [, sink] [, outPositions])");
        validate(OP_NAME, in, this);
        INDArray q = in[0];
        long dV = dV(in);
        if (varlen()) {
            return list(desc(q.dataType(), q.size(0), q.size(1), dV), desc(DataType.FLOAT, q.size(1), q.size(0)));
        }
        return list(desc(q.dataType(), q.size(0), q.size(1), q.size(2), dV),
                desc(DataType.FLOAT, q.size(0), q.size(2), q.size(1)));
    }

    static void validate(String op, INDArray[] in, Attention a) {
        INDArray q = in[0], k = in[1];
        int rank = a.varlen() ? 3 : 4;
        String layout = a.varlen() ? "[total, h, d]" : "[b, s, h, d]";
        Check.rank(op, "q", q, rank, layout);
        Check.floatType(op, "q", q);
        Check.rank(op, "k", k, rank, layout);
        Check.sameType(op, "k", k, "q", q);
        int h = rank - 2, d = rank - 1;
        long hQ = q.size(h), dQk = q.size(d), hKv = k.size(h);
        Check.dim(op, "k", k, d, "d_qk", dQk);
        Check.positive(op, "h_kv", hKv);
        Check.divisible(op, "h_q", hQ, "h_kv", hKv);
        if (!a.varlen()) Check.dim(op, "k", k, 0, "b", q.size(0));
        int next = 2;
        if (a.hasV()) {
            INDArray v = in[next++];
            Check.rank(op, "v", v, rank, layout);
            Check.sameType(op, "v", v, "q", q);
            for (int i = 0; i < d - 1; i++) Check.dim(op, "v", v, i, i == h ? "h_kv" : "leading", k.size(i));
            Check.dim(op, "v", v, h, "h_kv", hKv);
            Check.positive(op, "d_v", v.size(d));
        } else {
            long dV = a.iarg(0);
            if (dV <= 0 || dV > dQk) throw Check.fail(op, "d_v (value = first d_v dims of k) must be in [1, " + dQk + "], got " + dV);
        }
        if (a.varlen()) {
            INDArray cq = in[next++], ck = in[next++];
            Check.rank(op, "cuSeqlensQ", cq, 1, "[n + 1]");
            Check.type(op, "cuSeqlensQ", cq, DataType.INT);
            Check.shape(op, "cuSeqlensK", ck, cq.length());
            Check.type(op, "cuSeqlensK", ck, DataType.INT);
            checkCumulative(op, "cuSeqlensQ", cq, q.size(0));
            checkCumulative(op, "cuSeqlensK", ck, k.size(0));
        }
        if (a.window() < 0) throw Check.fail(op, "window must be >= 0 (0 = none), got " + a.window());
        if (a.hasSink()) {
            Check.shape(op, "sink", in[next], hQ);
            Check.type(op, "sink", in[next++], DataType.FLOAT);
        }
        if (a.hasRotation()) {
            INDArray pos = in[next];
            Check.type(op, "outPositions", pos, DataType.INT);
            long rows = a.varlen() ? q.size(0) : q.size(0) * q.size(1);
            if (pos.length() != rows) {
                throw Check.fail(op, "outPositions must hold one position per query row (" + rows + "), got "
                        + pos.length());
            }
        }
    }

    private static void checkCumulative(String op, String arg, INDArray cu, long total) {
        if (cu.length() < 1) throw Check.fail(op, arg + " must have at least 1 entry, got 0");
        int[] c = cu.toIntVector();
        if (c[0] != 0) throw Check.fail(op, arg + "[0] must be 0, got " + c[0]);
        for (int i = 1; i < c.length; i++) {
            if (c[i] < c[i - 1]) throw Check.fail(op, arg + " must be non-decreasing, got " + c[i - 1] + " then " + c[i] + " at " + i);
        }
        if (c[c.length - 1] != total) {
            throw Check.fail(op, arg + " must end at the packed length " + total + ", got " + c[c.length - 1]);
        }
    }

    private static long maxLength(INDArray cu) {
        int[] c = cu.toIntVector();
        long m = 0;
        for (int i = 1; i < c.length; i++) m = Math.max(m, c[i] - c[i - 1]);
        return m;
    }

    /** Fills the params shared by forward and backward. */
    void fillCommon(MlaLib.mla_attention_params p, INDArray[] in) {
        INDArray q = in[0], k = in[1];
        int next = 2;
        INDArray v = hasV() ? in[next++] : k;
        INDArray cq = varlen() ? in[next++] : null, ck = varlen() ? in[next++] : null;
        INDArray sink = hasSink() ? in[next++] : null;
        INDArray pos = hasRotation() ? in[next] : null;
        int r = q.rank();
        p.dtype(NativeLib.dtype(q.dataType())).h_q(q.size(r - 2)).h_kv(k.size(r - 2)).d_qk(q.size(r - 1)).d_v(dV(in));
        if (varlen()) {
            p.b(cq.length() - 1).s_q(maxLength(cq)).s_k(maxLength(ck))
                    .cu_seqlens_q(NativeLib.intPtr(cq)).cu_seqlens_k(NativeLib.intPtr(ck))
                    .total_q(q.size(0)).total_k(k.size(0));
        } else {
            p.b(q.size(0)).s_q(q.size(1)).s_k(k.size(1)).cu_seqlens_q(null).cu_seqlens_k(null);
        }
        p.q(NativeLib.ptr(q)).k(NativeLib.ptr(k)).v(NativeLib.ptr(v));
        strides(q, p.q_stride());
        strides(k, p.k_stride());
        strides(v, p.v_stride());
        p.softmax_scale((float) Scale.resolve(targ(0), q.size(r - 1))).causal(causal() ? 1 : 0)
                .window(window()).sink(NativeLib.floatPtr(sink));
        Rotation.fill(p.out_rotation(), pos, rope());
        p.exec().device(-1).num_threads(0);
    }

    /** {batch, token, head} strides; for packed [total, h, d] the batch stride is 0. */
    static void strides(INDArray a, org.bytedeco.javacpp.LongPointer s) {
        if (a.rank() == 4) {
            s.put(0, a.stride(0)).put(1, a.stride(1)).put(2, a.stride(2));
        } else {
            s.put(0, 0L).put(1, a.stride(0)).put(2, a.stride(1));
        }
    }

    @Override
    protected void compute(INDArray[] in, INDArray[] out) {
        try (MlaLib.mla_attention_params p = NativeLib.params(MlaLib.mla_attention_params.class, MlaLib.mla_attention_params::new)) {
            fillCommon(p, in);
            p.out(NativeLib.ptr(out[0])).lse(NativeLib.floatPtr(out[1]));
            strides(out[0], p.out_stride());
            NativeLib.check(MlaLib.mla_attention_fwd(p));
        }
    }

    @Override
    public List<SDVariable> doDiff(List<SDVariable> grads) {
        SDVariable[] args = args();
        SDVariable[] outs = outputVariables();
        SDVariable[] bpIn = new SDVariable[args.length + 3];
        System.arraycopy(args, 0, bpIn, 0, args.length);
        bpIn[args.length] = outs[0];
        bpIn[args.length + 1] = outs[1];
        bpIn[args.length + 2] = grads.get(0);
        SDVariable[] g = new AttentionBp(sameDiff, bpIn, this).outputVariables();
        List<SDVariable> result = new ArrayList<>();
        int next = 0;
        result.add(g[next++]);                       // dq
        result.add(g[next++]);                       // dk
        if (hasV()) result.add(g[next++]);           // dv
        for (int i = hasV() ? 3 : 2; i < args.length; i++) {
            result.add(i == sinkSlot() ? g[next++] : sameDiff.zerosLike(args[i]));
        }
        return result;
    }
}
