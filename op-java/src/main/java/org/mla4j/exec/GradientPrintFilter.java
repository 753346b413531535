package org.mla4j.exec;

import java.io.PrintStream;
import java.nio.charset.Charset;

/**
 * Drops the line "Added differentiated op NAME" that ND4J 1.0.0-M2.1's
 * {@code SameDiff.createGradFunction} writes to {@code System.out} (a plain println, not a logger,
 * so no logging configuration reaches it) for every op of every graph it differentiates. Every
 * other output passes unchanged. {@link org.mla4j.Mla4j#install()} puts it in front of
 * {@code System.out} unless {@code -Dmla4j.nd4jGradientPrints=true}.
 */
public final class GradientPrintFilter extends PrintStream {
    static final String PREFIX = "Added differentiated op ";
    /** System property that keeps ND4J's lines. */
    public static final String KEEP_PROPERTY = "mla4j.nd4jGradientPrints";

    private GradientPrintFilter(PrintStream out) {
        super(out, true, stdoutCharset());
    }

    /** Puts the filter in front of System.out, once, unless the property asks to keep the lines. */
    public static synchronized void install() {
        if (Boolean.getBoolean(KEEP_PROPERTY) || System.out instanceof GradientPrintFilter) return;
        System.setOut(new GradientPrintFilter(System.out));
    }

    @Override
    public void println(String line) {
        if (line != null && line.startsWith(PREFIX)) return;
        super.println(line);
    }

    /** The charset the JDK gave System.out (JDK 17: sun.stdout.encoding, else the default). */
    private static Charset stdoutCharset() {
        String name = System.getProperty("stdout.encoding", System.getProperty("sun.stdout.encoding"));
        try {
            return name == null ? Charset.defaultCharset() : Charset.forName(name);
        } catch (RuntimeException e) {
            return Charset.defaultCharset();
        }
    }
}
