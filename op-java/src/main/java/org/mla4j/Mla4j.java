package org.mla4j;

import java.lang.reflect.Field;
import org.mla4j.exec.MlaCpuExecutioner;
import org.mla4j.exec.NativeLib;
import org.mla4j.ops.OpRegistry;
import org.nd4j.linalg.api.ops.executioner.OpExecutioner;
import org.nd4j.linalg.factory.Nd4j;

/**
 * Entry point of the plugin. Call {@link #install()} once, before building graphs that use
 * mla4j ops, computing their gradients or loading saved graphs:
 *
 * <pre>{@code
 * Mla4j.install();
 * SameDiff sd = SameDiff.create();
 * SDVariable out = Mla4j.ops(sd).denseDecode(...);
 * }</pre>
 *
 * <p>ND4J 1.0.0-M2.1 sends every custom op to its own native library by hash and has no hook
 * for foreign ops. install() therefore (1) makes ND4J use {@link MlaCpuExecutioner}, an
 * executioner that runs mla4j ops itself and passes every other op to ND4J unchanged, and (2)
 * registers each mla4j op by name, so SameDiff can rebuild it when it copies a graph for
 * gradients or loads one from disk. Calling it more than once is harmless.
 */
public final class Mla4j {
    private static volatile boolean installed;

    private Mla4j() {}

    /** Installs the executioner hook and registers the ops. Thread-safe and idempotent. */
    public static synchronized void install() {
        if (installed) return;
        NativeLib.load();
        OpRegistry.registerAll();
        String backend = currentBackendClassName();
        if (backend != null && !backend.contains(".cpu.")) {
            throw new IllegalStateException("mla4j: ND4J backend " + backend
                    + " is not supported by this build of mla4j; use nd4j-native (CPU)");
        }
        // Before ND4J initialises, the property alone picks our executioner; after, the
        // instance ND4J already made is replaced.
        System.setProperty("opexec", MlaCpuExecutioner.class.getName());
        OpExecutioner current = Nd4j.getExecutioner();
        if (!(current instanceof MlaCpuExecutioner)) {
            replaceExecutioner(new MlaCpuExecutioner());
        }
        installed = true;
    }

    /** Whether {@link #install()} has run in this JVM. */
    public static boolean isInstalled() {
        return installed && Nd4j.getExecutioner() instanceof MlaCpuExecutioner;
    }

    /** Version of the native C ABI and the targets compiled into it, e.g. "abi 1, cpu,sm90a". */
    public static String nativeInfo() {
        return NativeLib.describe();
    }

    /** The mla4j op namespace of a SameDiff instance: {@code Mla4j.ops(sd).attention(...)}. */
    public static org.mla4j.samediff.SDMla ops(org.nd4j.autodiff.samediff.SameDiff sd) {
        return new org.mla4j.samediff.SDMla(sd);
    }

    private static String currentBackendClassName() {
        try {
            return Nd4j.getBackend() == null ? null : Nd4j.getBackend().getClass().getName();
        } catch (RuntimeException e) {
            return null;
        }
    }

    private static void replaceExecutioner(OpExecutioner executioner) {
        try {
            Field f = Nd4j.class.getDeclaredField("OP_EXECUTIONER_INSTANCE");
            f.setAccessible(true);
            f.set(null, executioner);
        } catch (ReflectiveOperationException e) {
            throw new IllegalStateException("mla4j: cannot install the op executioner into ND4J "
                    + "(start the JVM with -Dopexec=" + MlaCpuExecutioner.class.getName() + ")", e);
        }
    }
}
