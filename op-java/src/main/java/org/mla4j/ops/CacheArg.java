package org.mla4j.ops;

import org.bytedeco.javacpp.Pointer;
import org.mla4j.exec.NativeLib;
import org.mla4j.nativelib.MlaLib;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;

/** Checks a paged-cache input against its layout and fills the C struct that describes it. */
final class CacheArg {
    private CacheArg() {}

    /** The block size: from the shape for PLAIN caches, from the op's argument for FP8 ones. */
    static long blockSize(INDArray cache, CacheLayout l, long blockSizeArg) {
        return l.isFp8() ? blockSizeArg : cache.size(1);
    }

    static void validate(String op, String arg, INDArray cache, CacheLayout l, long blockSizeArg,
                         long dQk, long requireHkv) {
        Check.notNull(op, arg, cache);
        if (!l.isFp8()) {
            Check.rank(op, arg, cache, 4, "[num_blocks, block_size, h_kv, d_qk]");
            Check.floatType(op, arg, cache);
            Check.dim(op, arg, cache, 3, "d_qk", dQk);
            if (requireHkv > 0) Check.dim(op, arg, cache, 2, "h_kv", requireHkv);
            Check.positive(op, arg + " block_size", cache.size(1));
            return;
        }
        Check.rank(op, arg, cache, 2, "[num_blocks, block_bytes] (" + l.name() + " FP8 bytes)");
        Check.type(op, arg, cache, DataType.UINT8);
        Check.positive(op, arg + " block size", blockSizeArg);
        if (l.dQk() != dQk) {
            throw Check.fail(op, arg + " layout " + l + " holds " + l.dQk() + " dims per token but d_qk is " + dQk);
        }
        if (requireHkv > 1) {
            throw Check.fail(op, arg + " is an FP8 " + l.name() + " cache with one KV head, but h_kv must be " + requireHkv);
        }
        long bytes = blockBytes(op, arg + " layout", l, blockSizeArg);
        if (cache.size(1) != bytes) {
            throw Check.fail(op, arg + " has " + cache.size(1) + " bytes per block, but a " + l
                    + " block of " + blockSizeArg + " tokens takes " + bytes);
        }
    }

    /** Bytes of one block of an FP8 layout; an invalid layout is reported as a bad argument of op. */
    static long blockBytes(String op, String arg, CacheLayout l, long blockSize) {
        try {
            return l.blockBytes(blockSize);
        } catch (org.mla4j.MlaException e) {
            throw Check.fail(op, arg + " " + l + " is not a valid FP8 layout for block size " + blockSize
                    + " (d_nope must be a positive multiple of tile, d_rope even)");
        }
    }

    static void fill(MlaLib.mla_cache c, INDArray cache, CacheLayout l, long blockSizeArg) {
        fill(c, cache, l, blockSizeArg, NativeLib.ptr(cache));
    }

    /** As above, with the cache's elements at {@code data} (host or device memory). */
    static void fill(MlaLib.mla_cache c, INDArray cache, CacheLayout l, long blockSizeArg, Pointer data) {
        c.kind(l.kind).data(data).num_blocks(cache.size(0))
                .block_size(blockSize(cache, l, blockSizeArg));
        if (l.isFp8()) {
            c.dtype(MlaLib.MLA_UINT8).h_kv(1).d_nope(l.dNope).d_rope(l.dRope).tile(l.tile);
        } else {
            c.dtype(NativeLib.dtype(cache.dataType())).h_kv(cache.size(2))
                    .block_stride(cache.stride(0)).token_stride(cache.stride(1)).head_stride(cache.stride(2));
        }
    }

    /** Value dims a cache provides. */
    static long valueDims(CacheLayout l, long dQk) {
        return l.isFp8() ? l.valueDims() : dQk;
    }
}
