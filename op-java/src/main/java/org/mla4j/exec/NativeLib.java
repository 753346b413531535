package org.mla4j.exec;

import java.util.IdentityHashMap;
import java.util.Map;
import java.util.function.Supplier;
import org.bytedeco.javacpp.BytePointer;
import org.bytedeco.javacpp.FloatPointer;
import org.bytedeco.javacpp.IntPointer;
import org.bytedeco.javacpp.Loader;
import org.bytedeco.javacpp.Pointer;
import org.mla4j.MlaException;
import org.mla4j.nativelib.MlaLib;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;

/**
 * Loads libmla4j and turns ND4J arrays into the raw pointers and codes of the C ABI. Thread-safe:
 * the library loads once however many threads ask; the error message {@link #check} reports is
 * the calling thread's own (the C ABI keeps one per thread).
 */
public final class NativeLib {
    private static volatile boolean loaded;
    private static final ThreadLocal<Map<Class<?>, Pointer>> PARAMS =
            ThreadLocal.withInitial(IdentityHashMap::new);

    private NativeLib() {}

    /** Loads the native library (once). */
    public static void load() {
        if (loaded) return;
        synchronized (NativeLib.class) {
            if (loaded) return;
            Loader.load(MlaLib.class);
            int abi = MlaLib.mla_abi_version();
            if (abi != MlaLib.MLA_ABI_VERSION) {
                throw new IllegalStateException("mla4j: native library ABI " + abi
                        + " does not match the Java binding's ABI " + MlaLib.MLA_ABI_VERSION);
            }
            loaded = true;
        }
    }

    /**
     * A zeroed params struct of the C ABI for one call, used in try-with-resources like a new
     * one. Each thread keeps one struct per type and hands it out again (a new JavaCPP struct
     * costs an allocation, a deallocator registration and a memory-usage check every call): the
     * cache holds a reference of its own, so close() only returns the struct. While a struct is
     * handed out, a nested request on the same thread gets a new one.
     */
    public static <P extends Pointer> P params(Class<P> type, Supplier<P> make) {
        Map<Class<?>, Pointer> cache = PARAMS.get();
        P p = type.cast(cache.get(type));
        if (p == null) {
            p = make.get();
            p.retainReference();  // the cache's own reference
            cache.put(type, p);
        } else if (p.referenceCount() > 1) {
            return make.get();    // in use further up this thread's stack
        }
        p.zero();
        return p.retainReference();
    }

    public static String describe() {
        load();
        return "abi " + MlaLib.mla_abi_version() + ", targets " + MlaLib.mla_build_targets().getString()
                + ", CUDA devices " + MlaLib.mla_cuda_device_count();
    }

    /** Throws an {@link MlaException} with the library's message unless status is MLA_OK. */
    public static void check(int status) {
        if (status == MlaLib.MLA_OK) return;
        BytePointer msg = MlaLib.mla_last_error();
        String text = msg == null ? "" : msg.getString();
        String kind;
        switch (status) {
            case MlaLib.MLA_ERR_INVALID_ARGUMENT: kind = "invalid argument"; break;
            case MlaLib.MLA_ERR_UNSUPPORTED: kind = "unsupported"; break;
            case MlaLib.MLA_ERR_DEVICE: kind = "device error"; break;
            case MlaLib.MLA_ERR_OUT_OF_MEMORY: kind = "out of memory"; break;
            default: kind = "internal error";
        }
        if (status == MlaLib.MLA_ERR_INVALID_ARGUMENT || status == MlaLib.MLA_ERR_UNSUPPORTED) {
            throw new MlaException(text.isEmpty() ? kind : text);
        }
        throw new IllegalStateException("mla4j native " + kind + ": " + text);
    }

    /** The C dtype code of an ND4J type, or -1 when the C ABI has none. */
    public static int dtype(DataType t) {
        switch (t) {
            case FLOAT: return MlaLib.MLA_FLOAT32;
            case DOUBLE: return MlaLib.MLA_FLOAT64;
            case HALF: return MlaLib.MLA_FLOAT16;
            case BFLOAT16: return MlaLib.MLA_BFLOAT16;
            case INT: return MlaLib.MLA_INT32;
            case UBYTE: return MlaLib.MLA_UINT8;
            default: return -1;
        }
    }

    /** Address of the first element of a (possibly view) array; null for null. */
    public static Pointer ptr(INDArray a) {
        return a == null ? null : a.data().addressPointer();
    }

    public static IntPointer intPtr(INDArray a) {
        return a == null ? null : new IntPointer(a.data().addressPointer());
    }

    public static FloatPointer floatPtr(INDArray a) {
        return a == null ? null : new FloatPointer(a.data().addressPointer());
    }
}
