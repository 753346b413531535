package org.mla4j.gpu;

import org.mla4j.MlaException;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * The switch that sends plugin ops to a GPU while ND4J's arrays stay on the CPU backend.
 * Set it with the system property {@value #PROPERTY} ({@code cpu}, the default; {@code gpu}:
 * device 0 when one is present, else the CPU with a warning; or a device ordinal, which must
 * exist) or at run time with {@link #useGpu(int)} / {@link #useCpu()} (also on
 * {@link org.mla4j.Mla4j}). With a GPU chosen, ops that have a CUDA kernel copy their inputs to
 * the device, run there and copy their outputs back; ops without one run on the CPU as before
 * (each op says which: {@code MlaOp.hasDeviceKernel()}, and where it runs now:
 * {@code MlaOp.runsOn()}). The switch is one per JVM: a change is seen by every thread's next
 * op.
 */
public final class Placement {
    /** System property of the switch. */
    public static final String PROPERTY = "mla4j.device";
    private static final Logger LOG = LoggerFactory.getLogger(Placement.class);

    private static volatile Integer chosen;     // set at run time; null: the property decides
    private static volatile Parsed parsed;      // the property value last parsed, and its device

    private record Parsed(String value, int device) {}

    private Placement() {}

    /** Runs plugin ops that have a CUDA kernel on {@code device} (which must exist). */
    public static void useGpu(int device) {
        Gpu.requireDevice("Placement.useGpu", device);
        chosen = device;
    }

    /** Runs every plugin op on the CPU. */
    public static void useCpu() {
        chosen = -1;
    }

    /** Forgets run-time choices: the system property decides again. */
    public static void reset() {
        chosen = null;
    }

    /** The device plugin ops run on: a CUDA ordinal, or -1 for the CPU. */
    public static int device() {
        Integer c = chosen;
        return c != null ? c : fromProperty();
    }

    private static int fromProperty() {
        String v = System.getProperty(PROPERTY, "cpu").trim().toLowerCase(java.util.Locale.ROOT);
        Parsed last = parsed;
        if (last != null && last.value().equals(v)) return last.device();
        int device;
        if (v.isEmpty() || v.equals("cpu")) {
            device = -1;
        } else if (v.equals("gpu") || v.equals("cuda")) {
            device = Gpu.available() ? 0 : -1;
            if (device < 0) LOG.warn("mla4j: {}={} but no CUDA device is available; plugin ops run on the CPU", PROPERTY, v);
        } else {
            try {
                device = Integer.parseInt(v);
            } catch (NumberFormatException e) {
                throw new MlaException("mla4j: system property " + PROPERTY + " must be cpu, gpu or a CUDA device ordinal, got '" + v + "'");
            }
            Gpu.requireDevice("system property " + PROPERTY, device);
        }
        parsed = new Parsed(v, device);
        return device;
    }
}
