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
 * Appends {@code newKv [b, n_new, h_kv * d_qk]} to a paged cache at positions
 * {@code cacheSeqlens[i] + j} of request i (through {@code blockTable}), quantising for the FP8
 * layouts (ops.md section 5). Inputs: cache, blockTable, cacheSeqlens, newKv. The output is
 * the updated cache: eagerly, pass the cache itself as the output to update it in place
 * ({@link #inPlace}); in a graph the output is a new array. cacheSeqlens is not changed.
 */
public class KvAppend extends MlaOp {
    public static final String OP_NAME = "mla_kv_append";
    // iargs: layout (5, with block size for FP8)

    public KvAppend() {}

    public KvAppend(SameDiff sd, SDVariable cache, SDVariable blockTable, SDVariable cacheSeqlens,
                    SDVariable newKv, CacheLayout layout, long blockSize) {
        super(sd, new SDVariable[] {cache, blockTable, cacheSeqlens, newKv});
        layout.addArgs(this, blockSize);
    }

    private KvAppend(INDArray[] in, INDArray[] out, CacheLayout layout, long blockSize) {
        super(Inputs.of(in), out);
        layout.addArgs(this, blockSize);
    }

    /** An op that writes into {@code cache} itself. */
    public static KvAppend inPlace(INDArray cache, INDArray blockTable, INDArray cacheSeqlens,
                                   INDArray newKv, CacheLayout layout, long blockSize) {
        return new KvAppend(new INDArray[] {cache, blockTable, cacheSeqlens, newKv}, new INDArray[] {cache}, layout, blockSize);
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
        requireInputs(in, 4, "(cache, blockTable, cacheSeqlens, newKv)");
        CacheLayout l = CacheLayout.fromArgs(iArguments, 0);
        INDArray cache = in[0], table = in[1], seqlens = in[2], kv = in[3];
        Check.rank(OP_NAME, "newKv", kv, 3, "[b, n_new, h_kv * d_qk]");
        Check.floatType(OP_NAME, "newKv", kv);
        long b = kv.size(0);
        long dQk = l.isFp8() ? l.dQk() : cache.size(3);
        long hKv = l.isFp8() ? 1 : cache.size(2);
        CacheArg.validate(OP_NAME, "cache", cache, l, iarg(4), dQk, 0);
        Check.dim(OP_NAME, "newKv", kv, 2, "h_kv * d_qk", hKv * dQk);
        Check.rank(OP_NAME, "blockTable", table, 2, "[b, max_blocks_per_seq]");
        Check.type(OP_NAME, "blockTable", table, DataType.INT);
        Check.dim(OP_NAME, "blockTable", table, 0, "b", b);
        Check.shape(OP_NAME, "cacheSeqlens", seqlens, b);
        Check.type(OP_NAME, "cacheSeqlens", seqlens, DataType.INT);
        return list(desc(cache.dataType(), cache.shape()));
    }

    @Override
    protected void compute(INDArray[] in, INDArray[] out) {
        CacheLayout l = CacheLayout.fromArgs(iArguments, 0);
        INDArray cache = in[0], kv = in[3];
        INDArray target = out[0];
        if (target.data().address() != cache.data().address()) target.assign(cache);
        long hKv = l.isFp8() ? 1 : cache.size(2);
        try (MlaLib.mla_append_params p = new MlaLib.mla_append_params()) {
            p.dtype(NativeLib.dtype(kv.dataType())).b(kv.size(0)).n_new(kv.size(1)).d_qk(kv.size(2) / hKv)
                    .new_kv(NativeLib.ptr(kv)).new_kv_stride(0, kv.stride(0)).new_kv_stride(1, kv.stride(1));
            CacheArg.fill(p.cache(), target, l, iarg(4));
            p.cache_out(NativeLib.ptr(target)).block_table(NativeLib.intPtr(in[1]))
                    .max_blocks_per_seq(in[1].size(1)).block_table_stride(in[1].stride(0))
                    .cache_seqlens(NativeLib.intPtr(in[2]));
            p.exec().device(-1).num_threads(0);
            NativeLib.check(MlaLib.mla_kv_append(p));
        }
    }

    @Override
    public List<SDVariable> doDiff(List<SDVariable> grads) {
        throw Check.fail(OP_NAME, "a cache append has no gradient");
    }
}
