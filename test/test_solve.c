/* test/test_solve.c -- placeholder, being written. */
#include "test.h"

void suite_solve(void) {}
