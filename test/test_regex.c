/* test/test_regex.c -- placeholder, being written. */
#include "test.h"

void suite_regex(void) {}
