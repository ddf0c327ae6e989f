/* test/test_model.c -- placeholder, being written. */
#include "test.h"

void suite_model(void) {}
