package org.mla4j.ops;

import java.util.List;
import java.util.function.Consumer;
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
 * Appends {@code newKv [b, n_new, h_kv * d_qk]} to a paged cache at positions
 * {@code cacheSeqlens[i] + j} of request i (through {@code blockTable}), quantising for the FP8
 * layouts (ops.md section 5). Inputs: cache, blockTable, cacheSeqlens, newKv. The output is
 * the updated cache: eagerly, pass the cache itself as the output to update it in place
 * ({@link #inPlace}); in a graph the output is a new array. cacheSeqlens is not changed.
 */
public class KvAppend extends MlaOp {
    public static final String OP_NAME = "mla_kv_append";
    // iargs: layout (5, with block size for FP8), FP8 check (1). targs: check limit (1)

    public KvAppend() {}

    public KvAppend(SameDiff sd, SDVariable cache, SDVariable blockTable, SDVariable cacheSeqlens,
                    SDVariable newKv, CacheLayout layout, long blockSize) {
        this(sd, cache, blockTable, cacheSeqlens, newKv, layout, blockSize, Fp8Check.OFF);
    }

    /** With a check of newKv's values before an FP8 cache quantises them ({@link Fp8Check}). */
    public KvAppend(SameDiff sd, SDVariable cache, SDVariable blockTable, SDVariable cacheSeqlens,
                    SDVariable newKv, CacheLayout layout, long blockSize, Fp8Check check) {
        super(sd, new SDVariable[] {cache, blockTable, cacheSeqlens, newKv});
        layout.addArgs(this, blockSize);
        check.addArgs(this);
    }

    private KvAppend(INDArray[] in, INDArray[] out, CacheLayout layout, long blockSize, Fp8Check check) {
        super(Inputs.of(in), out);
        layout.addArgs(this, blockSize);
        check.addArgs(this);
    }

    /** An op that writes into {@code cache} itself. */
    public static KvAppend inPlace(INDArray cache, INDArray blockTable, INDArray cacheSeqlens,
                                   INDArray newKv, CacheLayout layout, long blockSize) {
        return inPlace(cache, blockTable, cacheSeqlens, newKv, layout, blockSize, Fp8Check.OFF);
    }

    /** An op that writes into {@code cache} itself, checking newKv first for an FP8 layout ({@link Fp8Check}). */
    public static KvAppend inPlace(INDArray cache, INDArray blockTable, INDArray cacheSeqlens,
                                   INDArray newKv, CacheLayout layout, long blockSize, Fp8Check check) {
        return new KvAppend(new INDArray[] {cache, blockTable, cacheSeqlens, newKv}, new INDArray[] {cache}, layout,
                blockSize, check);
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
    public boolean hasDeviceKernel() {
        return true;
    }

    @Override
    protected void compute(INDArray[] in, INDArray[] out) {
        CacheLayout l = CacheLayout.fromArgs(iArguments, 0);
        if (l.isFp8()) {
            Fp8Check.fromArgs(iArguments, CacheLayout.NUM_IARGS, tArguments, 0).verify(OP_NAME, "newKv", in[3], l.tile);
        }
        INDArray cache = in[0], target = out[0];
        if (target.data().address() != cache.data().address()) target.assign(cache);
        long bs = iarg(4);
        // On the host unless the arrays are already on a device (a GPU array backend): copying
        // a host cache to a GPU to write a few rows would cost more than the write. A
        // device-resident cache appends on the GPU (DeviceKvCache).
        Operands ops = backendOperands() != null ? backendOperands() : HostOperands.INSTANCE;
        launch(ops, in[3], c -> CacheArg.fill(c, target, l, bs, ops.inOut(target)), l.isFp8() ? 1 : cache.size(2),
                in[1], in[2]);
    }

    /**
     * Fills the native parameters from the operands (host memory or device copies) and runs
     * the append; {@code cache} describes the cache written in place (its data pointer
     * included).
     */
    public static void launch(Operands ops, INDArray kv, Consumer<MlaLib.mla_cache> cache, long hKv, INDArray table,
                              INDArray seqlens) {
        try (MlaLib.mla_append_params p = NativeLib.params(MlaLib.mla_append_params.class, MlaLib.mla_append_params::new)) {
            p.dtype(NativeLib.dtype(kv.dataType())).b(kv.size(0)).n_new(kv.size(1)).d_qk(kv.size(2) / hKv)
                    .new_kv(ops.in(kv)).new_kv_stride(0, kv.stride(0)).new_kv_stride(1, kv.stride(1));
            cache.accept(p.cache());
            p.cache_out(p.cache().data()).block_table(ints(ops.in(table)))
                    .max_blocks_per_seq(table.size(1)).block_table_stride(table.stride(0))
                    .cache_seqlens(ints(ops.in(seqlens)));
            p.exec().device(ops.device()).num_threads(0).stream(ops.stream());
            NativeLib.check(MlaLib.mla_kv_append(p));
        }
    }

    @Override
    public List<SDVariable> doDiff(List<SDVariable> grads) {
        throw Check.fail(OP_NAME, "a cache append has no gradient");
    }
}
