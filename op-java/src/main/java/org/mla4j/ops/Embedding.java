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
 * Embedding lookup (ops.md section 9): {@code table [vocab, dim]} (a float type) and token ids
 * {@code indices} (INT or LONG, any shape, each in [0, vocab)) give {@code out [..indices, dim]},
 * the table rows of the ids. Its gradient ({@link EmbeddingBp}) is a scatter-add of the incoming
 * rows into a {@code [vocab, dim]} table gradient: work proportional to the ids, not a product
 * with a one-hot {@code [ids, vocab]} matrix.
 *
 * <p>Why an op of its own: in ND4J 1.0.0-M2.1, {@code sd.gather(table, ids, 0)} computes the right
 * forward and gradient, but {@code sd.fit} with it fails ("One of Input arguments was closed
 * before call"), with or without mla4j.
 */
public class Embedding extends MlaOp {
    public static final String OP_NAME = "mla_embedding";

    public Embedding() {}

    public Embedding(SameDiff sd, SDVariable table, SDVariable indices) {
        super(sd, new SDVariable[] {table, indices});
    }

    public Embedding(INDArray table, INDArray indices) {
        super(Inputs.of(table, indices), null);
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
        requireInputs(in, 2, "(table, indices)");
        validate(OP_NAME, in[0], in[1]);
        long[] shape = Arrays.copyOf(in[1].shape(), in[1].rank() + 1);
        shape[shape.length - 1] = in[0].size(1);
        return list(desc(in[0].dataType(), shape));
    }

    /** Checks the table and the ids' type (their values are checked by the native call). */
    static void validate(String op, INDArray table, INDArray indices) {
        Check.rank(op, "table", table, 2, "[vocab, dim]");
        Check.floatType(op, "table", table);
        Check.positive(op, "table vocab (dim 0)", table.size(0));
        Check.positive(op, "table dim (dim 1)", table.size(1));
        Check.notNull(op, "indices", indices);
        if (indices.dataType() != DataType.INT && indices.dataType() != DataType.LONG) {
            throw Check.fail(op, "indices must be INT or LONG token ids, got " + indices.dataType());
        }
    }

    /**
     * The ids as the contiguous int32 array the C ABI takes; LONG ids are narrowed after a
     * range check (a value past the int32 range must not wrap into a valid id).
     */
    static INDArray int32Ids(String op, INDArray indices, long vocab) {
        if (indices.dataType() == DataType.INT) return indices;
        if (indices.length() > 0) {
            long min = indices.minNumber().longValue(), max = indices.maxNumber().longValue();
            if (min < 0 || max >= vocab) {
                throw Check.fail(op, "indices must be token ids in [0, vocab " + vocab + "), got values from " + min
                        + " to " + max);
            }
        }
        return indices.castTo(DataType.INT);
    }

    /** Fills the sizes, table and ids of the native parameters. */
    static void fill(MlaLib.mla_embedding_params p, INDArray table, INDArray ids) {
        p.dtype(NativeLib.dtype(table.dataType())).n(ids.length()).vocab(table.size(0)).dim(table.size(1))
                .table(NativeLib.ptr(table)).table_stride(table.size(1)).indices(NativeLib.intPtr(ids));
        p.exec().device(-1).num_threads(0);
    }

    @Override
    protected void compute(INDArray[] in, INDArray[] out) {
        INDArray ids = int32Ids(OP_NAME, in[1], in[0].size(0));
        try (MlaLib.mla_embedding_params p = new MlaLib.mla_embedding_params()) {
            fill(p, in[0], ids);
            p.out(NativeLib.ptr(out[0]));
            NativeLib.check(MlaLib.mla_embedding_fwd(p));
        }
    }

    @Override
    public List<SDVariable> doDiff(List<SDVariable> grads) {
        SDVariable[] a = args();
        SDVariable dTable = new EmbeddingBp(sameDiff, a[0], a[1], grads.get(0)).outputVariable();
        return List.of(dTable, sameDiff.zerosLike(a[1]));
    }
}
