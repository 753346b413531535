package org.mla4j.ops;

import java.util.List;
import org.mla4j.exec.HostOperands;
import org.mla4j.exec.NativeLib;
import org.mla4j.exec.Operands;
import org.mla4j.nativelib.MlaLib;
import org.nd4j.autodiff.samediff.SDVariable;
import org.nd4j.autodiff.samediff.SameDiff;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.api.shape.LongShapeDescriptor;

/**
 * Lightning indexer scores (DeepSeek Sparse Attention; ops.md section 6):
 * {@code scores[b, t, s] = sum_j w[b, t, j] * relu(q[b, t, j, :] . k[b, s, :])}, masked to
 * -inf where {@code s > t + s_k - s_q} when causal.
 *
 * <p>Inputs: {@code q [b, s_q, h, d]}, {@code k [b, s_k, d]}, {@code w [b, s_q, h]}; q and k
 * may be FP8 (UINT8 holding float8_e4m3 bytes), each then followed by its float32 scales
 * ({@code qScale [b, s_q, h]} after w, then {@code kScale [b, s_k]}). Output
 * {@code scores float32 [b, s_q, s_k]}. Differentiable in q, k and w for float inputs
 * ({@link IndexerScoresBp}). {@link IndexerTopK} computes the top-k without the score matrix.
 * Runs on a GPU under the placement switch ({@link org.mla4j.gpu.Placement}).
 */
public class IndexerScores extends MlaOp {
    public static final String OP_NAME = "mla_indexer_scores";
    // iargs: causal, (topk for IndexerTopK)

    public IndexerScores() {}

    public IndexerScores(SameDiff sd, SDVariable q, SDVariable k, SDVariable w, boolean causal) {
        super(sd, new SDVariable[] {q, k, w});
        addIArgument(causal ? 1 : 0);
    }

    public IndexerScores(INDArray q, INDArray k, INDArray w, INDArray qScale, INDArray kScale, boolean causal) {
        super(Inputs.of(q, k, w, qScale, kScale), null);
        addIArgument(causal ? 1 : 0);
    }

    @Override
    public String opName() { return OP_NAME; }

    @Override
    protected int numOutputs() { return 1; }

    boolean causal() { return iarg(0) != 0; }

    @Override
    public List<DataType> calculateOutputDataTypes(List<DataType> in) {
        return List.of(DataType.FLOAT);
    }

    @Override
    protected List<LongShapeDescriptor> outputShapes(INDArray[] in) {
        validate(opName(), in);
        return list(desc(DataType.FLOAT, in[0].size(0), in[0].size(1), in[1].size(1)));
    }

    static void validate(String op, INDArray[] in) {
        if (in.length < 3) throw Check.fail(op, "expected inputs (q, k, w [, qScale] [, kScale]), got " + in.length);
        INDArray q = in[0], k = in[1], w = in[2];
        Check.rank(op, "q", q, 4, "[b, s_q, h, d]");
        Check.rank(op, "k", k, 3, "[b, s_k, d]");
        Check.rank(op, "w", w, 3, "[b, s_q, h]");
        boolean q8 = q.dataType() == DataType.UINT8, k8 = k.dataType() == DataType.UINT8;
        if (!q8) Check.floatType(op, "q", q);
        if (!k8) Check.floatType(op, "k", k);
        Check.floatType(op, "w", w);
        long b = q.size(0), sQ = q.size(1), h = q.size(2), d = q.size(3);
        Check.dim(op, "k", k, 0, "b", b);
        Check.dim(op, "k", k, 2, "d", d);
        Check.shape(op, "w", w, b, sQ, h);
        int expected = 3 + (q8 ? 1 : 0) + (k8 ? 1 : 0);
        if (in.length != expected) {
            throw Check.fail(op, "expected " + expected + " inputs (q, k, w" + (q8 ? ", qScale" : "")
                    + (k8 ? ", kScale" : "") + ": FP8 q/k come with float32 scales), got " + in.length);
        }
        int next = 3;
        if (q8) {
            Check.shape(op, "qScale", in[next], b, sQ, h);
            Check.type(op, "qScale", in[next++], DataType.FLOAT);
        }
        if (k8) {
            Check.shape(op, "kScale", in[next], b, k.size(1));
            Check.type(op, "kScale", in[next], DataType.FLOAT);
        }
    }

    static int code(INDArray a) {
        return a.dataType() == DataType.UINT8 ? MlaLib.MLA_FP8_E4M3 : NativeLib.dtype(a.dataType());
    }

    /**
     * Fills the params shared by scores, top-k and backward from the operands (host memory or
     * device copies), with the device and stream of the call.
     */
    static void fill(MlaLib.mla_indexer_params p, Operands ops, INDArray[] in, boolean causal) {
        INDArray q = in[0], k = in[1], w = in[2];
        int next = 3;
        INDArray qs = q.dataType() == DataType.UINT8 ? in[next++] : null;
        INDArray ks = k.dataType() == DataType.UINT8 ? in[next] : null;
        p.q_dtype(code(q)).k_dtype(code(k)).w_dtype(code(w)).b(q.size(0)).s_q(q.size(1)).s_k(k.size(1))
                .h(q.size(2)).d(q.size(3)).q(ops.in(q)).k(ops.in(k)).w(ops.in(w))
                .q_scale(floats(ops.in(qs))).k_scale(floats(ops.in(ks))).causal(causal ? 1 : 0);
        p.exec().device(ops.device()).num_threads(0).stream(ops.stream());
    }

    /** {@link #fill(MlaLib.mla_indexer_params, Operands, INDArray[], boolean)} on the host. */
    static void fill(MlaLib.mla_indexer_params p, INDArray[] in, boolean causal) {
        fill(p, HostOperands.INSTANCE, in, causal);
    }

    @Override
    public boolean hasDeviceKernel() {
        return true;
    }

    @Override
    protected void compute(INDArray[] in, INDArray[] out) {
        boolean causal = causal();
        place(ops -> launch(ops, in, causal, out[0]));
    }

    /**
     * Fills the native parameters from the operands (host memory or device copies) and runs the
     * scores: {@code in} as the op's inputs, {@code scores} the output.
     */
    public static void launch(Operands ops, INDArray[] in, boolean causal, INDArray scores) {
        try (MlaLib.mla_indexer_params p = NativeLib.params(MlaLib.mla_indexer_params.class, MlaLib.mla_indexer_params::new)) {
            fill(p, ops, in, causal);
            p.scores(floats(ops.out(scores)));
            NativeLib.check(MlaLib.mla_indexer_scores(p));
        }
    }

    @Override
    public List<SDVariable> doDiff(List<SDVariable> grads) {
        SDVariable[] a = args();
        SDVariable[] g = new IndexerScoresBp(sameDiff, a[0], a[1], a[2], grads.get(0), causal()).outputVariables();
        // The kernel's gradients are float32; each is returned in its input's type.
        return List.of(g[0].castTo(a[0].dataType()), g[1].castTo(a[1].dataType()), g[2].castTo(a[2].dataType()));
    }
}
