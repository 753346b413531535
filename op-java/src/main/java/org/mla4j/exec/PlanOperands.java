package org.mla4j.exec;

import java.util.IdentityHashMap;
import java.util.Map;
import org.bytedeco.javacpp.Pointer;
import org.nd4j.linalg.api.ndarray.INDArray;

/**
 * Operands of a plan query: the native plan queries read sizes, dtypes, layouts and options,
 * and pointers only for their alignment, never the data (mla.h, "GPU plans and workspaces").
 * Each array gets a stand-in address, 256-byte aligned and laid out as
 * {@link org.mla4j.gpu.DeviceCall}'s staging area places copies, so the plan is the one a call
 * through the placement switch gets; arrays {@linkplain #bind bound} to real memory (a
 * device-resident cache) keep their address. Nothing here is ever dereferenced.
 */
public final class PlanOperands implements Operands {
    private static final long ALIGN = 256;
    /** Where the stand-in addresses start: any 256-aligned value; the queries never read it. */
    private static final long BASE = 1L << 40;

    private final int device;
    private final Map<INDArray, Pointer> bound = new IdentityHashMap<>();
    private long next = BASE;

    public PlanOperands(int device) {
        this.device = device;
    }

    /** Uses {@code address} for {@code array} (memory that already holds it). */
    public PlanOperands bind(INDArray array, Pointer address) {
        bound.put(array, address);
        return this;
    }

    @Override public int device() { return device; }
    @Override public Pointer stream() { return null; }
    @Override public Pointer in(INDArray a) { return standIn(a); }
    @Override public Pointer out(INDArray a) { return standIn(a); }
    @Override public Pointer inOut(INDArray a) { return standIn(a); }
    @Override public Pointer workspace(long bytes) { return bytes <= 0 ? null : take(bytes); }

    private Pointer standIn(INDArray a) {
        if (a == null) return null;
        Pointer p = bound.get(a);
        return p != null ? p : take(a.length() * a.dataType().width());
    }

    private Pointer take(long bytes) {
        Pointer p = new Address(next);
        next += Math.max(ALIGN, (bytes + ALIGN - 1) / ALIGN * ALIGN);
        return p;
    }

    /** A pointer that only carries an address. */
    private static final class Address extends Pointer {
        Address(long a) {
            this.address = a;
        }
    }
}
