package org.mla4j.ops;

import java.util.List;
import org.mla4j.exec.NativeLib;
import org.mla4j.nativelib.MlaLib;
import org.nd4j.autodiff.samediff.SDVariable;
import org.nd4j.autodiff.samediff.SameDiff;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.api.shape.LongShapeDescriptor;

/**
 * The top-k keys of the lightning indexer per query, fused (no [s_q, s_k] matrix): inputs as
 * {@link IndexerScores}; output {@code indices int32 [b, s_q, topk]}, best first, -1 where
 * fewer than topk keys are visible.
 */
public class IndexerTopK extends MlaOp {
    public static final String OP_NAME = "mla_indexer_topk";
    // iargs: causal, topk

    public IndexerTopK() {}

    public IndexerTopK(SameDiff sd, SDVariable q, SDVariable k, SDVariable w, boolean causal, long topk) {
        super(sd, new SDVariable[] {q, k, w});
        addIArgument(causal ? 1 : 0, topk);
    }

    public IndexerTopK(INDArray q, INDArray k, INDArray w, INDArray qScale, INDArray kScale, boolean causal, long topk) {
        super(Inputs.of(q, k, w, qScale, kScale), null);
        addIArgument(causal ? 1 : 0, topk);
    }

    @Override
    public String opName() { return OP_NAME; }

    @Override
    protected int numOutputs() { return 1; }

    @Override
    public List<DataType> calculateOutputDataTypes(List<DataType> in) {
        return List.of(DataType.INT);
    }

    @Override
    protected List<LongShapeDescriptor> outputShapes(INDArray[] in) {
        IndexerScores.validate(OP_NAME, in);
        Check.positive(OP_NAME, "topk", iarg(1));
        return list(desc(DataType.INT, in[0].size(0), in[0].size(1), iarg(1)));
    }

    @Override
    protected void compute(INDArray[] in, INDArray[] out) {
        try (MlaLib.mla_indexer_params p = NativeLib.params(MlaLib.mla_indexer_params.class, MlaLib.mla_indexer_params::new)) {
            IndexerScores.fill(p, in, iarg(0) != 0);
            p.topk(iarg(1)).indices(NativeLib.intPtr(out[0]));
            NativeLib.check(MlaLib.mla_indexer_topk(p));
        }
    }

    @Override
    public List<SDVariable> doDiff(List<SDVariable> grads) {
        SDVariable[] a = args();
        return List.of(sameDiff.zerosLike(a[0]), sameDiff.zerosLike(a[1]), sameDiff.zerosLike(a[2]));
    }
}
