package org.mla4j.samples;

import java.io.PrintStream;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * Collects measured rows and prints them: one progress line per row as it finishes, then a
 * markdown table of everything and the side-by-side groups.
 */
final class BenchReport {
    /** One measured (or failed) case. */
    record Row(BenchCase c, BenchTimer.Timing timing, String error) {
        boolean ok() { return error == null; }
        double gflops() { return ok() && c.flops() > 0 ? c.flops() / (timing.medianMs() * 1e6) : Double.NaN; }
        double gbytes() { return ok() && c.bytes() > 0 ? c.bytes() / (timing.medianMs() * 1e6) : Double.NaN; }
    }

    private final PrintStream out;
    private final List<Row> rows = new ArrayList<>();
    private double gemmGflops = Double.NaN;
    private double copyGbytes = Double.NaN;

    BenchReport(PrintStream out) {
        this.out = out;
    }

    void setCeilings(double gemmGflops, double copyGbytes) {
        this.gemmGflops = gemmGflops;
        this.copyGbytes = copyGbytes;
    }

    double gemmGflops() { return gemmGflops; }
    double copyGbytes() { return copyGbytes; }

    /** Fraction of the row's ceiling, as text ("23% gemm"), or "-". */
    String fraction(Row r) {
        if (!r.ok()) return "-";
        if (r.c().bound() == BenchCase.Bound.COMPUTE && r.c().flops() > 0 && gemmGflops > 0) {
            return String.format("%.0f%% gemm", 100 * r.gflops() / gemmGflops);
        }
        if (r.c().bound() == BenchCase.Bound.MEMORY && r.c().bytes() > 0 && copyGbytes > 0) {
            return String.format("%.0f%% copy", 100 * r.gbytes() / copyGbytes);
        }
        return "-";
    }

    /** Records a row and prints its progress line. */
    Row add(Row r, int index, int total) {
        rows.add(r);
        String head = String.format("[%2d/%d] %-30s %-34s %-5s", index, total, r.c().op, r.c().impl, r.c().dtype);
        if (!r.ok()) {
            out.println(head + "  FAILED: " + r.error());
        } else {
            StringBuilder s = new StringBuilder(head);
            s.append(String.format(" %10s ms", ms(r.timing().medianMs())));
            if (r.c().flops() > 0) s.append(String.format("  %8.2f GFLOP/s", r.gflops()));
            if (r.c().bytes() > 0) s.append(String.format("  %7s GB/s", rate(r.gbytes())));
            s.append("  ").append(fraction(r));
            s.append(String.format("  (%d samples x %d, spread %s-%s ms)", r.timing().samples(),
                    r.timing().runsPerSample(), ms(r.timing().minMs()), ms(r.timing().maxMs())));
            out.println(s);
        }
        out.flush();
        return r;
    }

    List<Row> rows() { return rows; }

    /** The full markdown table. */
    void printTable() {
        out.println("| # | op | implementation | dtype | shape | median ms | GFLOP/s | GB/s | of ceiling | note |");
        out.println("|---|---|---|---|---|---:|---:|---:|---:|---|");
        int i = 1;
        for (Row r : rows) {
            BenchCase c = r.c();
            String note = r.ok() ? c.note() : "FAILED: " + r.error();
            out.printf("| %d | %s | %s | %s | %s | %s | %s | %s | %s | %s |%n", i++, c.op, c.impl, c.dtype, c.shape,
                    r.ok() ? ms(r.timing().medianMs()) : "-", rate(r.gflops()), rate(r.gbytes()), fraction(r),
                    note.replace("|", "/"));
        }
        out.flush();
    }

    /** Rows that share a group, each with its rate, its fraction of the ceiling and its time relative to the group's first row. */
    void printGroups() {
        Map<String, List<Row>> groups = new LinkedHashMap<>();
        for (Row r : rows) {
            if (r.c().group() != null) groups.computeIfAbsent(r.c().group(), g -> new ArrayList<>()).add(r);
        }
        for (Map.Entry<String, List<Row>> g : groups.entrySet()) {
            if (g.getValue().size() < 2) continue;
            out.println("  " + g.getKey());
            Row ref = g.getValue().get(0);
            for (Row r : g.getValue()) {
                String rel = r.ok() && ref.ok()
                        ? String.format("%6.2fx the time of the first row", r.timing().medianMs() / ref.timing().medianMs())
                        : "";
                String speed = r.c().bound() == BenchCase.Bound.MEMORY ? rate(r.gbytes()) + " GB/s" : rate(r.gflops()) + " GFLOP/s";
                out.printf("    %-28s %-40s %-5s %-40s %10s ms %15s %10s  %s%n", trim(r.c().op, 28), trim(r.c().impl, 40),
                        r.c().dtype, trim(r.c().shape, 40), r.ok() ? ms(r.timing().medianMs()) : "FAILED", speed, fraction(r), rel);
            }
        }
        out.flush();
    }

    static String ms(double v) {
        if (Double.isNaN(v)) return "-";
        if (v >= 100) return String.format("%.1f", v);
        if (v >= 1) return String.format("%.2f", v);
        return String.format("%.4f", v);
    }

    static String rate(double v) {
        if (Double.isNaN(v)) return "-";
        if (v >= 100) return String.format("%.1f", v);
        if (v >= 0.1) return String.format("%.2f", v);
        return String.format("%.2g", v);
    }

    private static String trim(String s, int n) {
        return s.length() <= n ? s : s.substring(0, n - 1) + "~";
    }
}
