package org.mla4j.gpu;

import org.bytedeco.javacpp.Pointer;

/** A block of native memory handed out by address. */
interface MemoryBlock extends AutoCloseable {
    long bytes();

    /** The address {@code offset} bytes in. */
    Pointer at(long offset);

    @Override
    void close();
}
