/* regex.c -- placeholder, being written. */
#include "internal.h"

#include <stdlib.h>

struct it__re {
    int unused;
};

int it__re_compile(it__re **out, const char *pattern, it_err *err)
{
    (void)pattern;
    *out = NULL;
    return it__fail(err, IT_EUNSUPPORTED, "regular expressions are not built yet");
}

void it__re_free(it__re *re) { free(re); }

int it__re_fullmatch(const it__re *re, const char *s, size_t len, size_t start)
{
    (void)re, (void)s, (void)len, (void)start;
    return 0;
}

int it__re_match(const it__re *re, const char *s, size_t len, size_t start, size_t *cap, size_t ncap)
{
    (void)re, (void)s, (void)len, (void)start, (void)cap, (void)ncap;
    return 0;
}

size_t it__re_groups(const it__re *re)
{
    (void)re;
    return 0;
}
