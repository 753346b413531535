package org.mla4j.exec;

/**
 * Marks an ND4J op executioner that runs mla4j ops: {@link MlaCpuExecutioner} for the CPU
 * backend, {@code org.mla4j.cuda.MlaCudaExecutioner} (module mla4j-cuda) for ND4J's CUDA
 * backend.
 */
public interface MlaExecutioner {}
