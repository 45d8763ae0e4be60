/* A tiny C program that classifies 8x8 digit images with a logic-gate network exported by
 * polyir. model.c and model.h come from
 *     polyir codegen model.h5 -o model.c --header model.h --prefix digits_
 * build both together:
 *
 *     cc -O2 -o classify main.c model.c -lm -pthread
 *     ./classify digits.f32 450        (450 samples of 64 float32 pixels, one after another)
 *
 * prints the predicted class of each sample, one per line. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "model.h" /* digits_run and friends, documented in docs/c-abi.md */

enum { PIXELS = 64, CLASSES = 10 };

int main(int argc, char** argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s INPUTS.f32 N_SAMPLES\n", argv[0]);
        return 2;
    }
    long n = atol(argv[2]);
    float* x = malloc(sizeof(float) * PIXELS * n);
    float* scores = malloc(sizeof(float) * CLASSES * n);
    FILE* f = fopen(argv[1], "rb");
    if (n <= 0 || !x || !scores || !f || fread(x, sizeof(float), PIXELS * n, f) != (size_t)(PIXELS * n)) {
        fprintf(stderr, "cannot read %ld samples from %s\n", n, argv[1]);
        return 1;
    }
    fclose(f);
    const void* in[1] = {x};
    void* out[1] = {scores};
    if (digits_run(in, out, 1, n, 1) != 0) {  /* one time step, n samples, one thread */
        fprintf(stderr, "digits_run failed\n");
        return 1;
    }
    for (long i = 0; i < n; i++) {
        int best = 0;
        for (int c = 1; c < CLASSES; c++)
            if (scores[i * CLASSES + c] > scores[i * CLASSES + best]) best = c;
        printf("%d\n", best);
    }
    free(x);
    free(scores);
    return 0;
}
