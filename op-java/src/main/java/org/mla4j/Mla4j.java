package org.mla4j;

import java.lang.reflect.Field;
import org.mla4j.exec.GradientPrintFilter;
import org.mla4j.exec.MlaExecutioner;
import org.mla4j.exec.NativeLib;
import org.mla4j.gpu.Placement;
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
 * for foreign ops. install() therefore (1) makes ND4J use {@link org.mla4j.exec.MlaCpuExecutioner}, an
 * executioner that runs mla4j ops itself and passes every other op to ND4J unchanged, and (2)
 * registers each mla4j op by name, so SameDiff can rebuild it when it copies a graph for
 * gradients or loads one from disk. It also filters out the "Added differentiated op ..." lines
 * ND4J prints for every graph it differentiates ({@link GradientPrintFilter}). Calling it more
 * than once is harmless.
 *
 * <p>Threads: install() may be called from any number of threads at once (the native library
 * loads once, the ops register once, one executioner serves every thread), and a network
 * holding an mla4j layer calls it when it is built, so worker threads and Spark executors
 * need no setup of their own. What else may be shared between threads: README, "Scaling out".
 */
public final class Mla4j {
    /**
     * The executioners by name: each extends its backend's executioner, so naming the other
     * backend's class must not load it (an application on ND4J's CUDA backend leaves nd4j-native
     * out of its class path).
     */
    static final String CPU_EXECUTIONER = "org.mla4j.exec.MlaCpuExecutioner";
    /** The executioner for ND4J's CUDA backend, in the module org.mla4j:mla4j-cuda. */
    static final String CUDA_EXECUTIONER = "org.mla4j.cuda.MlaCudaExecutioner";
    private static volatile boolean installed;

    private Mla4j() {}

    /** Installs the executioner hook and registers the ops. Thread-safe and idempotent. */
    public static void install() {
        if (installed) return;
        // ND4J starts first, outside any lock. Its start-up registers the op names
        // (OpNameRegistration), which initialises ImportClassMapping, whose own initialisation
        // needs ND4J: a thread that began ImportClassMapping (registerAll) while another thread
        // was starting ND4J would wait for it forever, and it for the first.
        Nd4j.getBackend();
        installOnce();
    }

    private static synchronized void installOnce() {
        if (installed) return;
        NativeLib.load();
        OpRegistry.registerAll();
        GradientPrintFilter.install();
        String backend = currentBackendClassName();
        String executioner = CPU_EXECUTIONER;
        if (backend != null && backend.contains(".jcublas.")) {
            executioner = CUDA_EXECUTIONER;
        } else if (backend != null && !backend.contains(".cpu.")) {
            throw new IllegalStateException("mla4j: ND4J backend " + backend
                    + " is not supported; use nd4j-native (CPU) or nd4j-cuda-11.6 with org.mla4j:mla4j-cuda");
        }
        // Before ND4J initialises, the property alone picks our executioner; after, the
        // instance ND4J already made is replaced.
        System.setProperty("opexec", executioner);
        OpExecutioner current = Nd4j.getExecutioner();
        if (!(current instanceof MlaExecutioner)) {
            replaceExecutioner(newExecutioner(executioner));
        }
        installed = true;
    }

    /** Whether {@link #install()} has run in this JVM. */
    public static boolean isInstalled() {
        return installed && Nd4j.getExecutioner() instanceof MlaExecutioner;
    }

    /** Version of the native C ABI and the targets compiled into it, e.g. "abi 1, cpu,sm90a". */
    public static String nativeInfo() {
        return NativeLib.describe();
    }

    /**
     * Runs plugin ops that have a CUDA kernel (dense decode, sparse decode, the sparse prefill
     * forward) on GPU {@code device}, copying their operands in and results out; ND4J's arrays
     * stay on the CPU backend and every other op runs on the CPU. The same switch as
     * {@code -Dmla4j.device=<ordinal>} (or {@code gpu}); see {@link Placement}.
     */
    public static void useGpu(int device) {
        Placement.useGpu(device);
    }

    /** Runs every plugin op on the CPU (the default). */
    public static void useCpu() {
        Placement.useCpu();
    }

    /** Where plugin ops with a CUDA kernel run: a CUDA device ordinal, or -1 for the CPU. */
    public static int device() {
        return Placement.device();
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

    private static OpExecutioner newExecutioner(String className) {
        try {
            return (OpExecutioner) Class.forName(className).getDeclaredConstructor().newInstance();
        } catch (ClassNotFoundException e) {
            throw new IllegalStateException("mla4j: ND4J runs on its CUDA backend; add the module "
                    + "org.mla4j:mla4j-cuda (class " + className + ") to the class path", e);
        } catch (ReflectiveOperationException e) {
            throw new IllegalStateException("mla4j: cannot create the executioner " + className, e);
        }
    }

    private static void replaceExecutioner(OpExecutioner executioner) {
        try {
            Field f = Nd4j.class.getDeclaredField("OP_EXECUTIONER_INSTANCE");
            f.setAccessible(true);
            f.set(null, executioner);
        } catch (ReflectiveOperationException e) {
            throw new IllegalStateException("mla4j: cannot install the op executioner into ND4J "
                    + "(start the JVM with -Dopexec=" + executioner.getClass().getName() + ")", e);
        }
    }
}
