/* tests/test.h: the tiny harness every test binary uses.
 *   TEST(cond, fmt, ...)  counts a pass or prints "FAIL file:line: message" and counts a failure
 *   return test_summary(); prints "N passed, N failed" and returns non-zero on any failure */
#ifndef PULSE_TEST_H
#define PULSE_TEST_H
#include <stdio.h>

static int test_passed, test_failed;

#define TEST(cond, ...) do { \
    if (cond) test_passed++; \
    else { test_failed++; printf("FAIL %s:%d: ", __FILE__, __LINE__); printf(__VA_ARGS__); printf("\n"); } \
} while (0)

static inline int test_summary(void) {
    printf("%d passed, %d failed\n", test_passed, test_failed);
    return test_failed ? 1 : 0;
}
#endif
