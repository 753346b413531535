package org.mla4j.ops;

import java.util.List;
import org.mla4j.exec.NativeLib;
import org.mla4j.exec.Operands;
import org.mla4j.nativelib.MlaLib;
import org.nd4j.autodiff.samediff.SDVariable;
import org.nd4j.autodiff.samediff.SameDiff;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.api.shape.LongShapeDescriptor;

/**
 * Top-k over the last dim of {@code scores float32 [rows, n]} (or any rank, rows = all leading
 * dims): outputs {@code indices int32 [.., k]} (descending, ties to the lower index, -inf and
 * NaN never chosen, -1 padding) and {@code values float32 [.., k]} (-inf where -1). Runs on a
 * GPU under the placement switch ({@link org.mla4j.gpu.Placement}).
 */
public class TopK extends MlaOp {
    public static final String OP_NAME = "mla_topk";

    public TopK() {}

    public TopK(SameDiff sd, SDVariable scores, long k) {
        super(sd, scores);
        addIArgument(k);
    }

    public TopK(INDArray scores, long k) {
        super(Inputs.of(scores), null);
        addIArgument(k);
    }

    @Override
    public String opName() { return OP_NAME; }

    @Override
    protected int numOutputs() { return 2; }

    @Override
    public List<DataType> calculateOutputDataTypes(List<DataType> in) {
        return List.of(DataType.INT, DataType.FLOAT);
    }

    @Override
    protected List<LongShapeDescriptor> outputShapes(INDArray[] in) {
        requireInputs(in, 1, "(scores)");
        INDArray s = in[0];
        Check.type(OP_NAME, "scores", s, DataType.FLOAT);
        if (s.rank() < 1) throw Check.fail(OP_NAME, "scores must have rank >= 1, got a scalar");
        Check.positive(OP_NAME, "k", iarg(0));
        long[] shape = s.shape().clone();
        shape[shape.length - 1] = iarg(0);
        return list(desc(DataType.INT, shape), desc(DataType.FLOAT, shape));
    }

    @Override
    public boolean hasDeviceKernel() {
        return true;
    }

    @Override
    protected void compute(INDArray[] in, INDArray[] out) {
        long k = iarg(0);
        place(ops -> launch(ops, in[0], k, out[0], out[1]));
    }

    /**
     * Fills the native parameters from the operands (host memory or device copies) and runs the
     * top-k over the last dimension of {@code scores}.
     */
    public static void launch(Operands ops, INDArray scores, long k, INDArray indices, INDArray values) {
        long n = scores.size(scores.rank() - 1);
        try (MlaLib.mla_topk_params p = NativeLib.params(MlaLib.mla_topk_params.class, MlaLib.mla_topk_params::new)) {
            p.rows(n == 0 ? 0 : scores.length() / n).n(n).k(k).scores(floats(ops.in(scores)))
                    .indices(ints(ops.out(indices))).values(floats(ops.out(values)));
            p.exec().device(ops.device()).num_threads(0).stream(ops.stream());
            NativeLib.check(MlaLib.mla_topk(p));
        }
    }

    @Override
    public List<SDVariable> doDiff(List<SDVariable> grads) {
        return List.of(sameDiff.zerosLike(args()[0]));
    }
}
