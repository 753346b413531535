package org.mla4j.exec;

import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import org.mla4j.nativelib.MlaLib;

/**
 * What the native library decided for a call, from its plan query ({@code mla_*_plan} in
 * mla.h): the implementation that runs it ({@code "cpu"} on the CPU; on a GPU e.g.
 * {@code "sm90_sparse"}, {@code "sm90_wgmma"} or {@code "cuda_core"}; empty when none accepts
 * the call), the device workspace it needs, and one {@code "name: reason"} line per
 * implementation tried before it (or instead of it) that refused the call.
 */
public record Plan(String implementation, long workspaceBytes, List<String> refusals) {

    public Plan {
        refusals = Collections.unmodifiableList(new ArrayList<>(refusals));
    }

    /** Whether an implementation accepts the call (a call without one fails as unsupported). */
    public boolean runnable() {
        return !implementation.isEmpty();
    }

    /** Why implementation {@code name} refused the call, or null when it did not. */
    public String refusal(String name) {
        String prefix = name + ": ";
        for (String r : refusals) if (r.startsWith(prefix)) return r.substring(prefix.length());
        return null;
    }

    /** Reads the C struct the plan query filled. */
    static Plan of(MlaLib.mla_plan_info info) {
        List<String> lines = new ArrayList<>();
        for (String line : info.refusals().getString().split("\n")) if (!line.isBlank()) lines.add(line.trim());
        return new Plan(info.implementation().getString(), info.workspace_bytes(), lines);
    }

    /** Runs a plan query ({@code query} fills the struct and returns a status) and reads its answer. */
    public static Plan query(java.util.function.ToIntFunction<MlaLib.mla_plan_info> query) {
        try (MlaLib.mla_plan_info info = new MlaLib.mla_plan_info()) {
            NativeLib.check(query.applyAsInt(info));
            return of(info);
        }
    }

    @Override
    public String toString() {
        return (runnable() ? implementation : "no implementation") + (workspaceBytes > 0 ? " (workspace " + workspaceBytes
                + " bytes)" : "") + (refusals.isEmpty() ? "" : "; refused: " + String.join("; ", refusals));
    }
}
