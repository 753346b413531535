package org.mla4j.ops;

import java.util.Arrays;
import java.util.List;
import org.mla4j.exec.NativeLib;
import org.mla4j.nativelib.MlaLib;
import org.nd4j.autodiff.samediff.SDVariable;
import org.nd4j.autodiff.samediff.SameDiff;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.api.shape.LongShapeDescriptor;

/**
 * Backward of {@link IndexerScores} for float operands: inputs q, k, w, dScores
 * {@code float32 [b, s_q, s_k]}; outputs dq, dk, dw (float32, in the shapes of q, k, w).
 * Masked positions contribute nothing; relu'(x) is 0 for x <= 0.
 */
public class IndexerScoresBp extends MlaOp {
    public static final String OP_NAME = "mla_indexer_scores_bp";

    public IndexerScoresBp() {}

    public IndexerScoresBp(SameDiff sd, SDVariable q, SDVariable k, SDVariable w, SDVariable dScores, boolean causal) {
        super(sd, new SDVariable[] {q, k, w, dScores});
        addIArgument(causal ? 1 : 0);
    }

    public IndexerScoresBp(INDArray q, INDArray k, INDArray w, INDArray dScores, boolean causal) {
        super(Inputs.of(q, k, w, dScores), null);
        addIArgument(causal ? 1 : 0);
    }

    @Override
    public String opName() { return OP_NAME; }

    @Override
    protected int numOutputs() { return 3; }

    @Override
    public List<DataType> calculateOutputDataTypes(List<DataType> in) {
        return List.of(DataType.FLOAT, DataType.FLOAT, DataType.FLOAT);
    }

    @Override
    protected List<LongShapeDescriptor> outputShapes(INDArray[] in) {
        requireInputs(in, 4, "(q, k, w, dScores)");
        IndexerScores.validate(OP_NAME, Arrays.copyOf(in, 3));
        INDArray q = in[0], k = in[1], w = in[2];
        Check.shape(OP_NAME, "dScores", in[3], q.size(0), q.size(1), k.size(1));
        Check.type(OP_NAME, "dScores", in[3], DataType.FLOAT);
        return list(desc(DataType.FLOAT, q.shape()), desc(DataType.FLOAT, k.shape()), desc(DataType.FLOAT, w.shape()));
    }

    @Override
    protected void compute(INDArray[] in, INDArray[] out) {
        try (MlaLib.mla_indexer_params p = NativeLib.params(MlaLib.mla_indexer_params.class, MlaLib.mla_indexer_params::new)) {
            IndexerScores.fill(p, Arrays.copyOf(in, 3), iarg(0) != 0);
            p.dscores(NativeLib.floatPtr(in[3])).dq(NativeLib.floatPtr(out[0])).dk(NativeLib.floatPtr(out[1]))
                    .dw(NativeLib.floatPtr(out[2]));
            NativeLib.check(MlaLib.mla_indexer_scores_bwd(p));
        }
    }

    @Override
    public List<SDVariable> doDiff(List<SDVariable> grads) {
        throw Check.fail(OP_NAME, "second derivatives are not supported");
    }
}
