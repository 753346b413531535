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
 * Backward of {@link Embedding}: inputs table (for its shape and type; its values are not read),
 * indices, dOut {@code [..indices, dim]}; output dTable {@code [vocab, dim]}, row v the sum of the
 * dOut rows of the ids equal to v (a scatter-add, accumulated in float32, float64 for DOUBLE).
 */
public class EmbeddingBp extends MlaOp {
    public static final String OP_NAME = "mla_embedding_bp";

    public EmbeddingBp() {}

    public EmbeddingBp(SameDiff sd, SDVariable table, SDVariable indices, SDVariable dOut) {
        super(sd, new SDVariable[] {table, indices, dOut});
    }

    public EmbeddingBp(INDArray table, INDArray indices, INDArray dOut) {
        super(Inputs.of(table, indices, dOut), null);
    }

    @Override
    public String opName() { return OP_NAME; }

    @Override
    protected int numOutputs() { return 1; }

    @Override
    public List<DataType> calculateOutputDataTypes(List<DataType> in) {
        return List.of(in.get(0));
    }

    @Override
    protected List<LongShapeDescriptor> outputShapes(INDArray[] in) {
        requireInputs(in, 3, "(table, indices, dOut)");
        INDArray table = in[0], indices = in[1], dOut = in[2];
        Embedding.validate(OP_NAME, table, indices);
        long[] expected = Arrays.copyOf(indices.shape(), indices.rank() + 1);
        expected[expected.length - 1] = table.size(1);
        Check.shape(OP_NAME, "dOut", dOut, expected);
        Check.sameType(OP_NAME, "dOut", dOut, "table", table);
        return list(desc(table.dataType(), table.shape()));
    }

    @Override
    protected void compute(INDArray[] in, INDArray[] out) {
        INDArray ids = Embedding.int32Ids(OP_NAME, in[1], in[0].size(0));
        try (MlaLib.mla_embedding_params p = new MlaLib.mla_embedding_params()) {
            Embedding.fill(p, in[0], ids);
            p.table(null).dout(NativeLib.ptr(in[2])).dtable(NativeLib.ptr(out[0]));
            NativeLib.check(MlaLib.mla_embedding_bwd(p));
        }
    }

    @Override
    public List<SDVariable> doDiff(List<SDVariable> grads) {
        throw Check.fail(OP_NAME, "second derivatives are not supported");
    }
}
