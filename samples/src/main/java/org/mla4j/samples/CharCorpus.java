package org.mla4j.samples;

import java.io.IOException;
import java.io.InputStream;
import java.nio.charset.StandardCharsets;
import java.util.Random;
import java.util.TreeSet;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;

/**
 * A character-level corpus: the text, its vocabulary (sorted distinct characters), a
 * train / held-out split, and random windows as model inputs and next-character targets.
 */
final class CharCorpus {
    final String text;
    final char[] vocab;
    private final int[] index = new int[Character.MAX_VALUE + 1];
    final int trainEnd;

    CharCorpus(String text, double trainFraction) {
        this.text = text;
        TreeSet<Character> chars = new TreeSet<>();
        for (char c : text.toCharArray()) chars.add(c);
        vocab = new char[chars.size()];
        int i = 0;
        for (char c : chars) {
            index[c] = i;
            vocab[i++] = c;
        }
        trainEnd = (int) (text.length() * trainFraction);
    }

    /** The corpus shipped with the samples: Genesis, King James Version (1611). */
    static CharCorpus embedded() {
        try (InputStream in = CharCorpus.class.getResourceAsStream("genesis-kjv.txt")) {
            if (in == null) throw new IllegalStateException("corpus resource genesis-kjv.txt is missing");
            return new CharCorpus(new String(in.readAllBytes(), StandardCharsets.UTF_8), 0.9);
        } catch (IOException e) {
            throw new IllegalStateException(e);
        }
    }

    int id(char c) {
        return index[c];
    }

    int[] encode(String s) {
        int[] ids = new int[s.length()];
        for (int i = 0; i < ids.length; i++) ids[i] = id(s.charAt(i));
        return ids;
    }

    /** {inputs [b, s], targets [b, s]} from random windows of the train or held-out part. */
    INDArray[] batch(Random rnd, int b, int s, boolean heldOut) {
        int lo = heldOut ? trainEnd : 0, hi = heldOut ? text.length() : trainEnd;
        int[][] x = new int[b][s], y = new int[b][s];
        for (int i = 0; i < b; i++) {
            int start = lo + rnd.nextInt(hi - lo - s - 1);
            for (int t = 0; t < s; t++) {
                x[i][t] = id(text.charAt(start + t));
                y[i][t] = id(text.charAt(start + t + 1));
            }
        }
        return new INDArray[] {Nd4j.createFromArray(x).castTo(DataType.INT), Nd4j.createFromArray(y).castTo(DataType.INT)};
    }
}
