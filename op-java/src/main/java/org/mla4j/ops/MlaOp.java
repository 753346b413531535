package org.mla4j.ops;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.function.Consumer;
import org.bytedeco.javacpp.FloatPointer;
import org.bytedeco.javacpp.IntPointer;
import org.bytedeco.javacpp.Pointer;
import org.mla4j.Mla4j;
import org.mla4j.exec.HostOperands;
import org.mla4j.exec.Operands;
import org.mla4j.gpu.DeviceCall;
import org.mla4j.gpu.Placement;
import org.nd4j.autodiff.samediff.SDVariable;
import org.nd4j.autodiff.samediff.SameDiff;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.api.ops.DynamicCustomOp;
import org.nd4j.linalg.api.ops.OpContext;
import org.nd4j.linalg.api.shape.LongShapeDescriptor;
import org.nd4j.linalg.factory.Nd4j;

/**
 * Base of every mla4j op. An op keeps all of its state in its i/t/b arguments (SameDiff copies
 * ops through FlatBuffers and keeps only those), computes its output shapes in Java, and runs
 * through {@link org.mla4j.exec.MlaCpuExecutioner}, which calls {@link #execute(OpContext)}.
 *
 * <p>Inputs whose elements are not laid out row-major and contiguous are copied once before
 * the native call; outputs that are not are computed into a temporary and copied back.
 *
 * <p>Threads: an eager op object is one call (it holds its arrays): build one per call, never
 * share it. Op objects inside a SameDiff graph are shared by every thread that calls
 * {@code output()} on the graph; that is safe, because a graph run passes each thread's arrays
 * in its own {@link OpContext} and {@link #execute(OpContext)} only reads the op's arguments.
 */
public abstract class MlaOp extends DynamicCustomOp {

    protected MlaOp() {}

    protected MlaOp(SameDiff sd, SDVariable... inputs) {
        super(null, sd, inputs);
    }

    protected MlaOp(INDArray[] inputs, INDArray[] outputs) {
        super(null, inputs, outputs);
        // Eager ops are built to run now; ND4J would hide the missing install() behind a generic
        // "calculateOutputShape failed" exception, so report it here, first.
        if (!Mla4j.isInstalled()) throw notInstalled();
    }

    @Override
    public abstract String opName();

    /** Validates the inputs (throwing {@link org.mla4j.MlaException}) and returns output shapes. */
    protected abstract List<LongShapeDescriptor> outputShapes(INDArray[] in);

    /** Runs the native kernel: in and out are row-major contiguous and validated. */
    protected abstract void compute(INDArray[] in, INDArray[] out);

    /**
     * libnd4j does not know mla4j ops: only the plugin executioner can run them. ND4J's own
     * executioner asks for the hash first, so this is where a missing install() is reported.
     */
    @Override
    public long opHash() {
        if (!Mla4j.isInstalled()) throw notInstalled();
        return 0L;
    }

    private IllegalStateException notInstalled() {
        return new IllegalStateException("mla4j op '" + opName() + "' cannot run: call "
                + "org.mla4j.Mla4j.install() once before using mla4j ops (it installs the "
                + "executioner that runs them)");
    }

    /**
     * All state is in the i/t/b arguments, which FlatBuffers copies keep; there are no named
     * properties (ND4J's default looks them up in libnd4j's op descriptors, where mla4j ops
     * are unknown).
     */
    @Override
    public Map<String, Object> propertiesForFunction() {
        return new LinkedHashMap<>();
    }

    @Override
    public void setPropertiesForFunction(Map<String, Object> properties) {
        // no named properties: see propertiesForFunction()
    }

    @Override
    public int getNumOutputs() {
        return numOutputs();
    }

    /** Number of outputs. */
    protected abstract int numOutputs();

    @Override
    public List<LongShapeDescriptor> calculateOutputShape() {
        return calculateOutputShape(null);
    }

    /**
     * SameDiff asks for the output shapes before it runs an op: without install() this is the
     * first mla4j code a loaded or built graph reaches (ND4J's executioner would otherwise fail
     * later, after logging a misleading native error).
     */
    @Override
    public List<LongShapeDescriptor> calculateOutputShape(OpContext oc) {
        if (!Mla4j.isInstalled()) throw notInstalled();
        return outputShapes(inputs(oc));
    }

    /** Executes eagerly (oc == null: the op's own arrays) or inside SameDiff (oc given). */
    public INDArray[] execute(OpContext oc) {
        INDArray[] in = inputs(oc);
        List<LongShapeDescriptor> shapes = outputShapes(in);
        INDArray[] given = oc != null ? oc.getOutputArrays().toArray(new INDArray[0])
                : outputArguments().toArray(new INDArray[0]);
        INDArray[] out = new INDArray[shapes.size()];
        boolean allocated = given.length != shapes.size();
        for (int i = 0; i < out.length; i++) {
            LongShapeDescriptor s = shapes.get(i);
            if (!allocated && given[i] != null && Arrays.equals(given[i].shape(), s.getShape())
                    && given[i].dataType() == s.dataType()) {
                out[i] = given[i];
            } else if (!allocated) {
                throw Check.fail(opName(), "output " + i + " must have shape "
                        + Arrays.toString(s.getShape()) + " and type " + s.dataType() + ", got "
                        + (given[i] == null ? "null" : Arrays.toString(given[i].shape()) + " "
                        + given[i].dataType()));
            } else {
                out[i] = Nd4j.createUninitialized(s.dataType(), s.getShape());
            }
        }
        INDArray[] cin = new INDArray[in.length];
        for (int i = 0; i < in.length; i++) cin[i] = contiguous(in[i]);
        INDArray[] cout = new INDArray[out.length];
        for (int i = 0; i < out.length; i++) cout[i] = isContiguous(out[i]) ? out[i] : out[i].dup('c');
        compute(cin, cout);
        for (int i = 0; i < out.length; i++) if (cout[i] != out[i]) out[i].assign(cout[i]);
        if (allocated) {
            if (oc != null) {
                oc.setOutputArrays(out);
            } else {
                clearOutputs();
                for (INDArray o : out) addOutputArgument(o);
            }
        }
        return out;
    }

    private void clearOutputs() {
        if (outputArguments != null) outputArguments.clear();
    }

    private INDArray[] inputs(OpContext oc) {
        List<INDArray> list = oc != null ? oc.getInputArrays() : inputArguments();
        return list == null ? new INDArray[0] : list.toArray(new INDArray[0]);
    }

    /** Row-major and dense: each stride is the product of the later sizes (size-1 dims may have any stride). */
    static boolean isContiguous(INDArray a) {
        long[] shape = a.shape(), stride = a.stride();
        long expected = 1;
        for (int i = shape.length - 1; i >= 0; i--) {
            if (shape[i] != 1 && stride[i] != expected) return false;
            expected *= shape[i];
        }
        return true;
    }

    private static INDArray contiguous(INDArray a) {
        return a == null || isContiguous(a) ? a : a.dup('c');
    }

    private static final ThreadLocal<Operands> BACKEND_OPERANDS = new ThreadLocal<>();

    /**
     * Whether {@link #compute} can run on operands in device memory (the op has a CUDA kernel).
     * An executioner of a GPU array backend runs such ops with {@link #executeOn}; others need
     * their arrays on the host.
     */
    public boolean hasDeviceKernel() {
        return false;
    }

    /**
     * Runs this op with operands an array backend provides in place (its device buffers and
     * stream), for executioners of GPU array backends; only for ops with
     * {@link #hasDeviceKernel()}.
     */
    public INDArray[] executeOn(Operands backendOperands, OpContext oc) {
        if (!hasDeviceKernel()) {
            throw new IllegalStateException("mla4j op '" + opName() + "' has no CUDA kernel: run it on host arrays");
        }
        BACKEND_OPERANDS.set(backendOperands);
        try {
            return execute(oc);
        } finally {
            BACKEND_OPERANDS.remove();
        }
    }

    /** Operands set by {@link #executeOn} for this thread, or null. */
    protected static Operands backendOperands() {
        return BACKEND_OPERANDS.get();
    }

    /**
     * Where the placement switch runs this op now: the CUDA device it chose
     * ({@link Placement#device()}) when the op has a CUDA kernel, else -1 (the CPU): an op
     * without one runs on the CPU whatever the switch says.
     */
    public int runsOn() {
        return hasDeviceKernel() ? Placement.device() : -1;
    }

    /**
     * Runs {@code launch} where {@link #runsOn()} says: on the host with the arrays' own
     * memory, or on a GPU with device copies of the operands (outputs copied back before this
     * returns). Ops call this from {@link #compute}.
     */
    protected void place(Consumer<Operands> launch) {
        Operands backend = BACKEND_OPERANDS.get();
        if (backend != null) {
            launch.accept(backend);
            return;
        }
        int device = runsOn();
        if (device < 0) {
            launch.accept(HostOperands.INSTANCE);
            return;
        }
        try (DeviceCall call = DeviceCall.open(device)) {
            launch.accept(call);
            call.finish();
        }
    }

    /**
     * An eager op's inputs, checked, as {@link #compute} would get them (row-major
     * contiguous): for plan queries, which must see the strides a call passes.
     */
    protected INDArray[] checkedInputs() {
        INDArray[] in = inputs(null);
        outputShapes(in);
        INDArray[] c = new INDArray[in.length];
        for (int i = 0; i < in.length; i++) c[i] = contiguous(in[i]);
        return c;
    }

    /** Outputs of the shapes a call on {@code in} writes (uninitialised), for plan queries. */
    protected INDArray[] plannedOutputs(INDArray[] in) {
        List<LongShapeDescriptor> shapes = outputShapes(in);
        INDArray[] out = new INDArray[shapes.size()];
        for (int i = 0; i < out.length; i++) out[i] = Nd4j.createUninitialized(shapes.get(i).dataType(), shapes.get(i).getShape());
        return out;
    }

    static IntPointer ints(Pointer p) {
        return p == null ? null : new IntPointer(p);
    }

    static FloatPointer floats(Pointer p) {
        return p == null ? null : new FloatPointer(p);
    }

    /** Descriptor of an output. */
    protected static LongShapeDescriptor desc(DataType t, long... shape) {
        return LongShapeDescriptor.fromShape(shape, t);
    }

    protected static List<LongShapeDescriptor> list(LongShapeDescriptor... d) {
        return new ArrayList<>(Arrays.asList(d));
    }

    // ---- argument access: state lives in i/t/b args so SameDiff's copies keep it ----

    protected long iarg(int i) {
        return iArguments.get(i);
    }

    protected double targ(int i) {
        return tArguments.get(i);
    }

    protected boolean barg(int i) {
        return bArguments.get(i);
    }

    /** Number of inputs the op expects given its flags; checked before anything else. */
    protected void requireInputs(INDArray[] in, int expected, String layout) {
        if (in.length != expected) {
            throw Check.fail(opName(), "expected " + expected + " inputs " + layout + ", got "
                    + in.length);
        }
    }
}
