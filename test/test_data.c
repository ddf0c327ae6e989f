/* test/test_data.c -- placeholder, being written. */
#include "test.h"

void suite_data(void) {}
