/* model_llama.c -- placeholder, being written. */
#include "internal.h"
