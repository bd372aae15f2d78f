/*
 * tests/fuzz_reseal.c: `fuzz_reseal WORLD_DIR` re-seals a world that tests/fuzz_inputs.py
 * has edited (world_reseal: new manifest hashes and fingerprint), so that the edit reaches
 * world_load's record checks instead of stopping at the hash check.
 */
#include <stdio.h>

#include "data.h"

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: fuzz_reseal WORLD_DIR\n");
        return 2;
    }
    world_reseal(argv[1]);
    return 0;
}
