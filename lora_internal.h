/* lora_internal.h -- what lora.c (PEFT's LoRA configuration, target and pattern rules) gives
 * lora_files.c (the adapter files). Private to those two files; not part of the API. */
#ifndef ITERIS_LORA_INTERNAL_H
#define ITERIS_LORA_INTERNAL_H

#include "internal.h"

/* Reads adapter_config.json (path: the file or the folder that holds it) to load an adapter: the rules
 * of it_lora_config_load, and then every setting whose weights are not a plain delta on the unchanged
 * base is IT_EUNSUPPORTED naming the key (use_dora, lora_bias, init_lora_weights "pissa*", "olora",
 * "corda", "loftq" or unknown, use_qalora, alora_invocation_tokens, target_parameters,
 * layer_replication). Messages start with the file's path. */
int it__lora_config_read(it_lora_config *cfg, const char *path, it_err *err);

/* The same rules on a JSON object in memory (diffusers' lora_adapter_metadata); messages start with
 * where. On failure *cfg holds nothing that needs freeing. */
int it__lora_config_json(it_lora_config *cfg, const it_json *obj, const char *where, it_err *err);

/* A configuration's patterns, compiled: cfg must outlive it. Messages name the config key, not the
 * file (the caller prefixes it). */
typedef struct it__lora_matcher it__lora_matcher;
int it__lora_matcher_new(it__lora_matcher **out, const it_lora_config *cfg, it_err *err);
void it__lora_matcher_free(it__lora_matcher *m); /* NULL is harmless */

/* *sel: current peft adapts module (check_target_module_exists); *old_sel: peft 0.10 would (its greedy
 * layer-index regexes), equal to *sel where the two cannot differ. IT_EFORMAT for a layers_pattern
 * whose group 1 is not a layer number, IT_ENOMEM as it__lora_rank. */
int it__lora_select(const it__lora_matcher *m, const char *module, int *sel, int *old_sel, it_err *err);

/* The rank, alpha and scale of a module under current peft (independent rank_pattern and alpha_pattern
 * lookups), and under peft 0.10 (one key from chain(rank_pattern, alpha_pattern)), when known.
 * IT_ENOMEM when a pattern's working memory cannot be had. */
typedef struct it__lora_rank_info {
    int64_t r;
    double alpha, scale;
    int old_known;        /* 0: one of the config's keys does not compile in peft 0.10's form */
    int64_t old_r;
    double old_alpha;
} it__lora_rank_info;
int it__lora_rank(const it__lora_matcher *m, const char *module, it__lora_rank_info *out, it_err *err);

/* *saved = 1 when a tensor key lies in a modules_to_save module ("(^|.*\.)<m>($|\..*)"), else 0. */
int it__lora_saved(const it__lora_matcher *m, const char *key, int *saved, it_err *err);

#endif /* ITERIS_LORA_INTERNAL_H */
