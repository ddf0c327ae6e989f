/* iteris.c -- the IterIS solve and the baselines (being written). */
#include "internal.h"
