package org.mla4j.samples;

import picocli.CommandLine;

/**
 * Option parsing of the samples, with picocli: each sample is a {@code @Command} whose
 * {@code @Option} fields hold their defaults. From Maven, options go through exec:java, e.g.
 * {@code mvn -B -q -pl samples exec:java -Dexec.args="--steps 300"}.
 */
final class SampleCli {
    private SampleCli() {}

    /**
     * Parses args into the options object; returns false when --help was asked for (the usage
     * is printed). A bad argument prints the problem and the usage and exits with status 2.
     */
    static boolean parse(Object options, String[] args) {
        CommandLine cl = new CommandLine(options);
        try {
            cl.parseArgs(args);
        } catch (CommandLine.ParameterException e) {
            System.err.println(e.getMessage());
            cl.usage(System.err);
            System.exit(2);
        }
        if (cl.isUsageHelpRequested()) {
            cl.usage(System.out);
            return false;
        }
        return true;
    }
}
