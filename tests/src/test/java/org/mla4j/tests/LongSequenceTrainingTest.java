package org.mla4j.tests;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.File;
import java.nio.charset.StandardCharsets;
import java.util.List;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;

/**
 * Memory O(sequence): a training step (forward + backward) of attention over 12000 tokens runs
 * in a JVM limited to 256 MB of heap and 400 MB of off-heap ND4J memory, while one 12000 x 12000
 * float32 score matrix alone takes 576 MB.
 */
class LongSequenceTrainingTest {
    @Test
    void trainsAStepWhoseScoreMatrixWouldNotFit() throws Exception {
        int s = 12000;
        long scoreMatrixBytes = 4L * s * s;
        long offHeapLimit = 400L << 20;
        assertTrue(scoreMatrixBytes > Math.max(offHeapLimit, 256L << 20), "the s x s matrix must exceed each limit");
        String java = System.getProperty("java.home") + File.separator + "bin" + File.separator + "java";
        ProcessBuilder pb = new ProcessBuilder(List.of(java, "-Xmx256m",
                "-Dorg.bytedeco.javacpp.maxbytes=" + offHeapLimit,
                "-Dorg.bytedeco.javacpp.maxphysicalbytes=" + (offHeapLimit + (1L << 30)),
                "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn",
                "-cp", System.getProperty("java.class.path"), LongSequenceStep.class.getName(), Integer.toString(s)));
        pb.redirectErrorStream(true);
        Process p = pb.start();
        byte[] out = p.getInputStream().readAllBytes();
        assertTrue(p.waitFor(5, TimeUnit.MINUTES), "the long-sequence step did not finish");
        String text = new String(out, StandardCharsets.UTF_8);
        assertEquals(0, p.exitValue(), "long-sequence step failed:\n" + text);
        assertTrue(text.contains("ok "), text);
    }
}
