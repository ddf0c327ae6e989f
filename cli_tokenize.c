/* cli_tokenize.c -- `iteris tokenize --model DIR TEXT`: the ids a model's tokenizer.json gives a
 * text, as a JSON list (part of the command line, like main.c). */
#include "cli.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int cli_tokenize(int argc, char **argv)
{
    const char *dir = NULL, *text = NULL;
    int special = 1;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--model") && i + 1 < argc) dir = argv[++i];
        else if (!strcmp(argv[i], "--no-special")) special = 0;
        else if (!text && (argv[i][0] != '-' || !argv[i][1])) text = argv[i];
        else return cli_usage("tokenize: --model DIR (or its tokenizer.json) TEXT [--no-special]");
    }
    if (!dir || !text) return cli_usage("tokenize: --model DIR (or its tokenizer.json) TEXT [--no-special]");
    it_err err = {0};
    it_tokenizer *t = NULL;
    int32_t *ids = NULL;
    size_t n = 0;
    int rc = it_tokenizer_load(&t, dir, &err);
    if (rc == IT_OK) rc = it_tokenizer_encode(t, text, strlen(text), special, &ids, &n, &err);
    if (rc == IT_OK) {
        putchar('[');
        for (size_t i = 0; i < n; i++) printf("%s%d", i ? ", " : "", (int)ids[i]);
        puts("]");
    }
    free(ids);
    it_tokenizer_free(t);
    return rc == IT_OK ? (fflush(stdout) == 0 ? 0 : 1) : cli_fail(&err);
}
