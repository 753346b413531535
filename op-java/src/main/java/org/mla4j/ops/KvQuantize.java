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
 * Quantises {@code kv [num_blocks, block_size, d_qk]} (a float type) into an FP8 paged cache
 * {@code UINT8 [num_blocks, block_bytes]} in the V32 or MODEL1 layout (ops.md section 5). Tile
 * scales are powers of two: {@code 2^ceil(log2(max(amax / 448, 1e-4)))}: one huge or non-finite
 * value zeroes the rest of its tile unless an {@link Fp8Check} refuses it.
 */
public class KvQuantize extends MlaOp {
    public static final String OP_NAME = "mla_kv_quantize";
    // iargs: layout (5; block size unused: from kv's shape), FP8 check (1). targs: check limit (1)

    public KvQuantize() {}

    public KvQuantize(SameDiff sd, SDVariable kv, CacheLayout layout) {
        this(sd, kv, layout, Fp8Check.OFF);
    }

    /** With a check of kv's values before quantising ({@link Fp8Check}). */
    public KvQuantize(SameDiff sd, SDVariable kv, CacheLayout layout, Fp8Check check) {
        super(sd, kv);
        layout.addArgs(this, 0);
        check.addArgs(this);
    }

    public KvQuantize(INDArray kv, CacheLayout layout) {
        this(kv, layout, Fp8Check.OFF);
    }

    /** With a check of kv's values before quantising ({@link Fp8Check}). */
    public KvQuantize(INDArray kv, CacheLayout layout, Fp8Check check) {
        super(Inputs.of(kv), null);
        layout.addArgs(this, 0);
        check.addArgs(this);
    }

    @Override
    public String opName() { return OP_NAME; }

    @Override
    protected int numOutputs() { return 1; }

    CacheLayout layout() { return CacheLayout.fromArgs(iArguments, 0); }

    Fp8Check check() { return Fp8Check.fromArgs(iArguments, CacheLayout.NUM_IARGS, tArguments, 0); }

    @Override
    public List<DataType> calculateOutputDataTypes(List<DataType> in) {
        return List.of(DataType.UINT8);
    }

    @Override
    protected List<LongShapeDescriptor> outputShapes(INDArray[] in) {
        requireInputs(in, 1, "(kv)");
        INDArray kv = in[0];
        Check.rank(OP_NAME, "kv", kv, 3, "[num_blocks, block_size, d_qk]");
        Check.floatType(OP_NAME, "kv", kv);
        CacheLayout l = layout();
        if (!l.isFp8()) throw Check.fail(OP_NAME, "layout must be V32 or MODEL1, got PLAIN");
        Check.positive(OP_NAME, "kv block_size", kv.size(1));
        Check.dim(OP_NAME, "kv", kv, 2, "d_qk of " + l, l.dQk());
        return list(desc(DataType.UINT8, kv.size(0), CacheArg.blockBytes(OP_NAME, "layout", l, kv.size(1))));
    }

    @Override
    protected void compute(INDArray[] in, INDArray[] out) {
        INDArray kv = in[0];
        CacheLayout l = layout();
        check().verify(OP_NAME, "kv", kv, l.tile);
        try (MlaLib.mla_quant_params p = NativeLib.params(MlaLib.mla_quant_params.class, MlaLib.mla_quant_params::new)) {
            p.dtype(NativeLib.dtype(kv.dataType())).kv(NativeLib.ptr(kv));
            CacheArg.fill(p.cache(), out[0], l, kv.size(1));
            p.cache_out(NativeLib.ptr(out[0]));
            p.exec().device(-1).num_threads(0);
            NativeLib.check(MlaLib.mla_kv_quantize(p));
        }
    }

    @Override
    public List<SDVariable> doDiff(List<SDVariable> grads) {
        throw Check.fail(OP_NAME, "quantisation has no gradient");
    }
}
