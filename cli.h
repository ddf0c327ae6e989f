/* cli.h -- what the command line's files (main.c, cli_bench.c) share. Not part of the library. */
#ifndef ITERIS_CLI_H
#define ITERIS_CLI_H

#include "iteris.h"

int cli_usage(const char *why);  /* prints why and the usage text; returns 2 */
int cli_fail(const it_err *err); /* prints "iteris: <message>"; returns 1 */
long cli_positive(const char *s); /* a decimal integer > 0, or 0 */

int cli_bench_unet(int argc, char **argv); /* `iteris bench unet` (cli_bench.c) */
int cli_tokenize(int argc, char **argv);   /* `iteris tokenize` (cli_tokenize.c) */

#endif
