/* test/test_lora.c -- placeholder, being written. */
#include "test.h"

void suite_lora(void) {}
