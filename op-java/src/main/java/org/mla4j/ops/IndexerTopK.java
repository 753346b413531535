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
 * The top-k keys of the lightning indexer per query, fused (no [s_q, s_k] matrix): inputs as
 * {@link IndexerScores}; output {@code indices int32 [b, s_q, topk]}, best first, -1 where
 * fewer than topk keys are visible. Runs on a GPU under the placement switch
 * ({@link org.mla4j.gpu.Placement}), with the workspace the native query asks for.
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
    public boolean hasDeviceKernel() {
        return true;
    }

    @Override
    protected void compute(INDArray[] in, INDArray[] out) {
        boolean causal = iarg(0) != 0;
        long topk = iarg(1);
        place(ops -> launch(ops, in, causal, topk, out[0]));
    }

    /**
     * Fills the native parameters from the operands (host memory or device copies) and runs the
     * fused top-k; a device call takes its workspace from the operands.
     */
    public static void launch(Operands ops, INDArray[] in, boolean causal, long topk, INDArray indices) {
        try (MlaLib.mla_indexer_params p = NativeLib.params(MlaLib.mla_indexer_params.class, MlaLib.mla_indexer_params::new)) {
            IndexerScores.fill(p, ops, in, causal);
            p.topk(topk).indices(ints(ops.out(indices)));
            if (ops.device() >= 0) {
                long ws = MlaLib.mla_indexer_topk_workspace_size(p);
                if (ws < 0) NativeLib.check(MlaLib.MLA_ERR_INVALID_ARGUMENT);
                p.exec().workspace(ops.workspace(ws)).workspace_bytes(ws);
            }
            NativeLib.check(MlaLib.mla_indexer_topk(p));
        }
    }

    @Override
    public List<SDVariable> doDiff(List<SDVariable> grads) {
        SDVariable[] a = args();
        return List.of(sameDiff.zerosLike(a[0]), sameDiff.zerosLike(a[1]), sameDiff.zerosLike(a[2]));
    }
}
