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
 * Dequantises an FP8 paged cache {@code UINT8 [num_blocks, block_bytes]} (V32 or MODEL1) into
 * {@code kv [num_blocks, block_size, d_qk]} of the requested float type.
 */
public class KvDequantize extends MlaOp {
    public static final String OP_NAME = "mla_kv_dequantize";
    // iargs: layout (5, with block size), output dtype code

    public KvDequantize() {}

    public KvDequantize(SameDiff sd, SDVariable cache, CacheLayout layout, long blockSize, DataType outType) {
        super(sd, cache);
        layout.addArgs(this, blockSize);
        addIArgument(outType.toInt());
    }

    public KvDequantize(INDArray cache, CacheLayout layout, long blockSize, DataType outType) {
        super(Inputs.of(cache), null);
        layout.addArgs(this, blockSize);
        addIArgument(outType.toInt());
    }

    @Override
    public String opName() { return OP_NAME; }

    @Override
    protected int numOutputs() { return 1; }

    private DataType outType() { return DataType.fromInt((int) iarg(5)); }

    @Override
    public List<DataType> calculateOutputDataTypes(List<DataType> in) {
        return List.of(outType());
    }

    @Override
    protected List<LongShapeDescriptor> outputShapes(INDArray[] in) {
        requireInputs(in, 1, "(cache)");
        CacheLayout l = CacheLayout.fromArgs(iArguments, 0);
        if (!l.isFp8()) throw Check.fail(OP_NAME, "layout must be V32 or MODEL1, got PLAIN");
        DataType t = outType();
        if (NativeLib.dtype(t) < 0 || t == DataType.INT || t == DataType.UINT8) {
            throw Check.fail(OP_NAME, "output type must be FLOAT, DOUBLE, HALF or BFLOAT16, got " + t);
        }
        CacheArg.validate(OP_NAME, "cache", in[0], l, iarg(4), l.dQk(), 1);
        return list(desc(t, in[0].size(0), iarg(4), l.dQk()));
    }

    @Override
    protected void compute(INDArray[] in, INDArray[] out) {
        CacheLayout l = CacheLayout.fromArgs(iArguments, 0);
        try (MlaLib.mla_quant_params p = NativeLib.params(MlaLib.mla_quant_params.class, MlaLib.mla_quant_params::new)) {
            p.dtype(NativeLib.dtype(out[0].dataType())).kv(NativeLib.ptr(out[0]));
            CacheArg.fill(p.cache(), in[0], l, iarg(4));
            p.cache_out(null);
            p.exec().device(-1).num_threads(0);
            NativeLib.check(MlaLib.mla_kv_dequantize(p));
        }
    }

    @Override
    public List<SDVariable> doDiff(List<SDVariable> grads) {
        throw Check.fail(OP_NAME, "dequantisation of a cache has no gradient");
    }
}
