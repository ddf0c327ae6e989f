/* test_config.c -- config.json (it_config) and adapter_config.json (it_lora_config): every fixture
 * field by field against its file, the reference defaults on minimal files written here, and
 * refusal of bad files with the right code and a message that names the file and the key. */
#include "test.h"

#include "iteris.h"

#include <math.h>
#include <string.h>
#include <sys/stat.h>

/* ============================================================================================ */
/* Helpers                                                                                       */
/* ============================================================================================ */

/* Writes json to a temporary config.json and loads it. */
static int cfg_from(const char *json, it_config *c, it_err *e)
{
    const char *p = test_tmppath("config.json");
    CHECK(test_write_file(p, json, strlen(json)) == 0);
    return it_config_load(c, p, e);
}

static int lora_from(const char *json, it_lora_config *c, it_err *e)
{
    const char *p = test_tmppath("adapter_config.json");
    CHECK(test_write_file(p, json, strlen(json)) == 0);
    return it_lora_config_load(c, p, e);
}

/* The message of a refused file names the file first, then holds want. */
static void check_msg(const it_err *e, const char *path, const char *want, const char *json)
{
    CHECKF(strncmp(e->msg, path, strlen(path)) == 0, "message does not start with the path: %s", e->msg);
    CHECKF(strstr(e->msg, want) != NULL, "for %s: message \"%s\" lacks \"%s\"", json, e->msg, want);
    CHECKF(strchr(e->msg, '\n') == NULL, "message has a newline: %s", e->msg);
}

/* ============================================================================================ */
/* Fixture model configs                                                                         */
/* ============================================================================================ */

/* data/llama/base/config.json, through the folder and through the file. */
static void config_llama_fixture(void)
{
    const char *paths[] = {test_data("llama/base"), test_data("llama/base/config.json"), test_data("llama/base/")};
    for (int k = 0; k < 3; k++) {
        it_config c;
        it_err e;
        int rc = it_config_load(&c, paths[k], &e);
        CHECKF(rc == IT_OK, "%s: %s", paths[k], e.msg);
        if (rc != IT_OK) continue;
        CHECK(c.arch == IT_ARCH_LLAMA);
        CHECK(!strcmp(c.model_type, "llama") && !strcmp(c.class_name, "LlamaForCausalLM"));
        CHECK(c.vocab_size == 256 && c.hidden == 64 && c.intermediate == 160 && c.layers == 2);
        CHECK(c.heads == 4 && c.kv_heads == 2 && c.head_dim == 16 && c.decoder_layers == 0);
        CHECK(c.rope_theta == 10000.0 && c.norm_eps == 1e-6 && !strcmp(c.act, "silu") && c.gated == 1);
        CHECK(c.tie_word_embeddings == 0 && c.attention_bias == 0 && c.mlp_bias == 0);
        CHECK(c.max_position_embeddings == 128 && !strcmp(c.rope_type, "default") && c.rope_factor == 0);
        CHECK(c.rope_low_freq_factor == 0 && c.rope_high_freq_factor == 0 && c.rope_original_max_pos == 0);
        CHECK(c.rope_attention_factor == 0 && c.partial_rotary_factor == 1.0);
        CHECK(c.vision_hidden == 0 && c.nblocks == 0 && c.projection_dim == 0 && c.vision_act[0] == 0);
        char line[512];
        it_config_describe(&c, line, sizeof line);
        CHECKF(!strcmp(line, "llama (LlamaForCausalLM): vocab 256, hidden 64, intermediate 160, layers 2, heads 4 "
                             "(kv 2, head_dim 16), silu, rope_theta 10000, rms_norm_eps 1e-06, untied head"),
               "describe: %s", line);
    }
}

static void config_qwen2_fixture(void)
{
    it_config c;
    it_err e;
    int rc = it_config_load(&c, test_data("qwen2/base"), &e);
    CHECKF(rc == IT_OK, "%s", e.msg);
    CHECK(c.arch == IT_ARCH_LLAMA && !strcmp(c.model_type, "qwen2") && !strcmp(c.class_name, "Qwen2ForCausalLM"));
    CHECK(c.vocab_size == 256 && c.hidden == 64 && c.intermediate == 160 && c.layers == 2);
    CHECK(c.heads == 4 && c.kv_heads == 2 && c.head_dim == 16);
    CHECK(c.rope_theta == 10000.0 && c.norm_eps == 1e-6 && !strcmp(c.act, "silu"));
    CHECK(c.tie_word_embeddings == 0);
    char line[512];
    it_config_describe(&c, line, sizeof line);
    CHECKF(strstr(line, "qwen2 (Qwen2ForCausalLM): vocab 256, hidden 64") && strstr(line, "kv 2, head_dim 16"), "%s",
           line);
}

static void config_t5_fixture(void)
{
    it_config c;
    it_err e;
    int rc = it_config_load(&c, test_data("t5/base/config.json"), &e);
    CHECKF(rc == IT_OK, "%s", e.msg);
    CHECK(c.arch == IT_ARCH_T5 && !strcmp(c.model_type, "t5") && !strcmp(c.class_name, "T5ForConditionalGeneration"));
    CHECK(c.vocab_size == 256 && c.hidden == 64 && c.intermediate == 128 && c.head_dim == 16);
    CHECK(c.layers == 2 && c.decoder_layers == 2 && c.heads == 4 && c.kv_heads == 0);
    CHECK(!strcmp(c.act, "gelu_new") && c.gated == 1 && c.norm_eps == 1e-6 && c.tie_word_embeddings == 0);
    CHECK(c.rope_theta == 0 && c.rope_type[0] == 0 && c.partial_rotary_factor == 0 && c.max_position_embeddings == 0);
    char line[512];
    it_config_describe(&c, line, sizeof line);
    CHECKF(!strcmp(line, "t5 (T5ForConditionalGeneration): vocab 256, d_model 64, d_ff 128, layers 2 encoder + 2 "
                         "decoder, heads 4 (d_kv 16), gated gelu_new, layer_norm_epsilon 1e-06, untied head"),
           "describe: %s", line);
}

static void config_clip_fixture(void)
{
    it_config c;
    it_err e;
    int rc = it_config_load(&c, test_data("clip/base"), &e);
    CHECKF(rc == IT_OK, "%s", e.msg);
    CHECK(c.arch == IT_ARCH_CLIP && !strcmp(c.model_type, "clip") && !strcmp(c.class_name, "CLIPModel"));
    CHECK(c.vocab_size == 256 && c.hidden == 64 && c.intermediate == 128 && c.layers == 2 && c.heads == 4);
    CHECK(c.head_dim == 16);
    CHECK(c.vision_hidden == 64 && c.vision_intermediate == 128 && c.vision_layers == 2 && c.vision_heads == 4);
    CHECK(c.image_size == 32 && c.patch_size == 8 && c.projection_dim == 32);
    CHECK(!strcmp(c.act, "quick_gelu") && c.norm_eps == 1e-5); /* both from the CLIP defaults */
    CHECK(!strcmp(c.vision_act, "quick_gelu") && c.vision_norm_eps == 1e-5 && c.max_position_embeddings == 32);
    char line[512];
    it_config_describe(&c, line, sizeof line);
    CHECKF(!strcmp(line, "clip (CLIPModel): text vocab 256, hidden 64, intermediate 128, layers 2, heads 4; vision "
                         "hidden 64, intermediate 128, layers 2, heads 4, image 32, patch 8; projection 32, "
                         "quick_gelu, layer_norm_eps 1e-05"),
           "describe: %s", line);
}

static void config_unet_fixture(void)
{
    it_config c;
    it_err e;
    int rc = it_config_load(&c, test_data("unet/base"), &e);
    CHECKF(rc == IT_OK, "%s", e.msg);
    CHECK(c.arch == IT_ARCH_UNET && !strcmp(c.model_type, "unet") && !strcmp(c.class_name, "UNet2DConditionModel"));
    CHECK(c.nblocks == 2 && c.block_out_channels[0] == 32 && c.block_out_channels[1] == 64);
    CHECK(c.layers_per_block == 1 && c.cross_attention_dim == 32 && c.attention_head_dim == 8 && c.heads == 8);
    CHECK(c.norm_groups == 8 && c.in_channels == 4 && c.out_channels == 4 && c.sample_size == 8);
    CHECK(!strcmp(c.act, "silu") && c.norm_eps == 1e-5 && c.vocab_size == 0 && c.hidden == 0);
    CHECK(c.attention_head_dims[0] == 8 && c.attention_head_dims[1] == 8 && c.attention_head_dims[2] == 0);
    CHECK(c.transformer_layers[0] == 1 && c.transformer_layers[1] == 1 && c.transformer_layers[2] == 0);
    CHECK(c.use_linear_projection == 0 && c.max_position_embeddings == 0 && c.rope_type[0] == 0);
    char line[512];
    it_config_describe(&c, line, sizeof line);
    CHECKF(!strcmp(line, "unet (UNet2DConditionModel): block_out_channels [32, 64], layers_per_block 1, "
                         "cross_attention_dim 32, attention_head_dim 8 (= heads), norm groups 8, in 4, out 4, "
                         "sample 8, silu, norm_eps 1e-05"),
           "describe: %s", line);
}

/* ============================================================================================ */
/* Defaults on minimal configs                                                                   */
/* ============================================================================================ */

static void config_llama_defaults(void)
{
    it_config c;
    it_err e;
    CHECK(cfg_from("{\"model_type\":\"llama\"}", &c, &e) == IT_OK); /* LlamaConfig() */
    CHECK(c.vocab_size == 32000 && c.hidden == 4096 && c.intermediate == 11008 && c.layers == 32);
    CHECK(c.heads == 32 && c.kv_heads == 32 && c.head_dim == 128 && c.class_name[0] == 0);
    CHECK(c.rope_theta == 10000.0 && c.norm_eps == 1e-6 && !strcmp(c.act, "silu") && !c.tie_word_embeddings);
    CHECK(c.max_position_embeddings == 2048 && !strcmp(c.rope_type, "default") && c.partial_rotary_factor == 1.0);

    CHECK(cfg_from("{\"model_type\":\"llama\",\"hidden_size\":64,\"num_attention_heads\":4,"
                   "\"num_key_value_heads\":null,\"head_dim\":null,\"tie_word_embeddings\":true,"
                   "\"attention_bias\":true,\"mlp_bias\":true,\"rope_scaling\":null}",
                   &c, &e) == IT_OK);
    CHECK(c.hidden == 64 && c.heads == 4 && c.kv_heads == 4 && c.head_dim == 16);
    CHECK(c.tie_word_embeddings && c.attention_bias && c.mlp_bias);
    char line[512];
    it_config_describe(&c, line, sizeof line);
    CHECKF(strstr(line, "tied head, attention bias, mlp bias") && strstr(line, "(no model_type)") == NULL, "%s", line);

    /* explicit head_dim: q_proj is heads * head_dim wide and hidden need not divide */
    CHECK(cfg_from("{\"model_type\":\"llama\",\"hidden_size\":66,\"num_attention_heads\":4,\"head_dim\":32}", &c, &e) ==
          IT_OK);
    CHECK(c.head_dim == 32 && c.hidden == 66);
}

static void config_llama_family_defaults(void)
{
    it_config c;
    it_err e;
    CHECK(cfg_from("{\"model_type\":\"mistral\"}", &c, &e) == IT_OK);
    CHECK(c.arch == IT_ARCH_LLAMA && c.intermediate == 14336 && c.heads == 32 && c.kv_heads == 8);
    CHECK(c.max_position_embeddings == 131072);
    CHECK(cfg_from("{\"model_type\":\"mistral\",\"num_key_value_heads\":null}", &c, &e) == IT_OK);
    CHECK(c.kv_heads == 32); /* None -> num_attention_heads */
    CHECK(cfg_from("{\"model_type\":\"qwen2\"}", &c, &e) == IT_OK);
    CHECK(c.vocab_size == 151936 && c.intermediate == 22016 && c.kv_heads == 32 && c.rope_theta == 10000.0);
    CHECK(c.max_position_embeddings == 32768);
}

/* rope_theta at the top level or in v5's rope_parameters (which wins); every RoPE variant is
 * recorded as written, known or not. */
static void config_llama_rope(void)
{
    it_config c;
    it_err e;
    char line[512];
    CHECK(cfg_from("{\"model_type\":\"llama\",\"rope_theta\":500000.0}", &c, &e) == IT_OK && c.rope_theta == 500000.0);
    CHECK(cfg_from("{\"model_type\":\"llama\",\"rope_parameters\":{\"rope_type\":\"default\",\"rope_theta\":1000000}}",
                   &c, &e) == IT_OK);
    CHECK(c.rope_theta == 1e6 && !strcmp(c.rope_type, "default"));
    CHECK(cfg_from("{\"model_type\":\"llama\",\"rope_theta\":5,\"rope_parameters\":{\"rope_theta\":7}}", &c, &e) ==
          IT_OK);
    CHECK(c.rope_theta == 7);
    CHECK(cfg_from("{\"model_type\":\"llama\",\"rope_scaling\":{\"type\":\"default\"}}", &c, &e) == IT_OK);
    CHECK(!strcmp(c.rope_type, "default") && c.rope_factor == 0);
    it_config_describe(&c, line, sizeof line);
    CHECKF(!strstr(line, "rope default") && strstr(line, "rope_theta 10000, rms_norm_eps"), "%s", line);

    /* Llama-3.1 (meta-llama/Llama-3.1-8B config.json) */
    int rc = cfg_from("{\"model_type\":\"llama\",\"architectures\":[\"LlamaForCausalLM\"],\"hidden_size\":64,"
                      "\"num_attention_heads\":4,\"max_position_embeddings\":131072,\"rope_theta\":500000.0,"
                      "\"rms_norm_eps\":1e-05,\"rope_scaling\":{\"factor\":8.0,\"low_freq_factor\":1.0,"
                      "\"high_freq_factor\":4.0,\"original_max_position_embeddings\":8192,\"rope_type\":\"llama3\"}}",
                      &c, &e);
    CHECKF(rc == IT_OK, "%s", e.msg);
    CHECK(!strcmp(c.rope_type, "llama3") && c.rope_factor == 8.0 && c.rope_low_freq_factor == 1.0);
    CHECK(c.rope_high_freq_factor == 4.0 && c.rope_original_max_pos == 8192 && c.rope_attention_factor == 0);
    CHECK(c.max_position_embeddings == 131072 && c.rope_theta == 500000.0 && c.partial_rotary_factor == 1.0);
    it_config_describe(&c, line, sizeof line);
    CHECKF(strstr(line, ", rope_theta 500000, rope llama3 x8 (low 1, high 4, orig 8192), rms_norm_eps 1e-05,"), "%s",
           line);

    /* the legacy spelling: "type" and a bare factor */
    CHECK(cfg_from("{\"model_type\":\"llama\",\"rope_scaling\":{\"type\":\"linear\",\"factor\":2.0}}", &c, &e) ==
          IT_OK);
    CHECK(!strcmp(c.rope_type, "linear") && c.rope_factor == 2.0 && c.rope_low_freq_factor == 0);
    CHECK(c.rope_original_max_pos == 0);
    it_config_describe(&c, line, sizeof line);
    CHECKF(strstr(line, ", rope linear x2, rms_norm_eps"), "%s", line);
    /* rope_type wins over "type"; a null rope_type reads "type" */
    CHECK(cfg_from("{\"model_type\":\"llama\",\"rope_scaling\":{\"type\":\"linear\",\"rope_type\":\"dynamic\","
                   "\"factor\":4}}",
                   &c, &e) == IT_OK);
    CHECK(!strcmp(c.rope_type, "dynamic") && c.rope_factor == 4.0);
    CHECK(cfg_from("{\"model_type\":\"llama\",\"rope_scaling\":{\"type\":\"linear\",\"rope_type\":null,\"factor\":3}}",
                   &c, &e) == IT_OK);
    CHECK(!strcmp(c.rope_type, "linear") && c.rope_factor == 3.0);

    /* v5 rope_parameters (Qwen2.5 yarn), with rope_theta and partial_rotary_factor; it wins over
     * rope_scaling and over the top-level keys */
    rc = cfg_from("{\"model_type\":\"qwen2\",\"rope_theta\":10000,\"partial_rotary_factor\":1.0,"
                  "\"rope_scaling\":{\"rope_type\":\"linear\",\"factor\":2.0},"
                  "\"rope_parameters\":{\"rope_type\":\"yarn\",\"factor\":4.0,\"rope_theta\":1000000.0,"
                  "\"original_max_position_embeddings\":32768,\"attention_factor\":1.25,\"beta_fast\":32,"
                  "\"partial_rotary_factor\":0.5,\"low_freq_factor\":null}}",
                  &c, &e);
    CHECKF(rc == IT_OK, "%s", e.msg);
    CHECK(!strcmp(c.rope_type, "yarn") && c.rope_factor == 4.0 && c.rope_theta == 1e6);
    CHECK(c.rope_original_max_pos == 32768 && c.rope_attention_factor == 1.25 && c.partial_rotary_factor == 0.5);
    CHECK(c.rope_low_freq_factor == 0 && c.rope_high_freq_factor == 0 && c.max_position_embeddings == 32768);
    it_config_describe(&c, line, sizeof line);
    CHECKF(strstr(line, ", rope_theta 1e+06, rope yarn x4 (orig 32768, attention 1.25), partial rotary 0.5,"), "%s",
           line);

    /* Llama-3.2 through rope_parameters; unknown types are recorded as written */
    CHECK(cfg_from("{\"model_type\":\"llama\",\"rope_parameters\":{\"rope_type\":\"llama3\",\"factor\":32,"
                   "\"low_freq_factor\":1,\"high_freq_factor\":4,\"original_max_position_embeddings\":8192,"
                   "\"rope_theta\":500000}}",
                   &c, &e) == IT_OK);
    it_config_describe(&c, line, sizeof line);
    CHECKF(strstr(line, "rope llama3 x32 (low 1, high 4, orig 8192)"), "%s", line);
    CHECK(cfg_from("{\"model_type\":\"mistral\",\"rope_scaling\":{\"rope_type\":\"longrope\",\"short_factor\":[1,1],"
                   "\"long_factor\":[2,2]},\"partial_rotary_factor\":0.25}",
                   &c, &e) == IT_OK);
    CHECK(!strcmp(c.rope_type, "longrope") && c.rope_factor == 0 && c.partial_rotary_factor == 0.25);
    CHECK(cfg_from("{\"model_type\":\"llama\",\"rope_scaling\":{\"type\":\"su\",\"factor\":0.5}}", &c, &e) == IT_OK);
    CHECK(!strcmp(c.rope_type, "su") && c.rope_factor == 0.5);
    it_config_describe(&c, line, sizeof line);
    CHECKF(strstr(line, ", rope su x0.5, rms_norm_eps"), "%s", line);

    struct {
        const char *json;
        int code;
        const char *want;
    } bad[] = {
        {"\"rope_scaling\":{\"rope_type\":\"llama3\",\"factor\":\"8\"}", IT_EFORMAT,
         "rope_scaling.factor: expected a positive number, got a string"},
        {"\"rope_scaling\":{\"type\":\"linear\",\"factor\":-2}", IT_EFORMAT,
         "rope_scaling.factor: expected a positive number, got -2"},
        {"\"rope_scaling\":{\"type\":\"linear\",\"factor\":0.5}", IT_EFORMAT,
         "rope_scaling.factor: expected a number >= 1 for rope_scaling.type \"linear\", got 0.5"},
        {"\"rope_scaling\":{\"type\":\"dynamic\"}", IT_EFORMAT,
         "rope_scaling.factor: missing, and rope_scaling.type \"dynamic\" needs it"},
        {"\"rope_scaling\":{\"rope_type\":\"llama3\",\"factor\":8.0}", IT_EFORMAT,
         "rope_scaling.low_freq_factor: missing, and rope_scaling.rope_type \"llama3\" needs it"},
        {"\"rope_scaling\":{\"rope_type\":\"llama3\",\"factor\":8,\"low_freq_factor\":1,\"high_freq_factor\":[4]}",
         IT_EFORMAT, "rope_scaling.high_freq_factor: expected a positive number, got an array"},
        {"\"rope_scaling\":{\"rope_type\":\"llama3\",\"factor\":8,\"low_freq_factor\":0,\"high_freq_factor\":4}",
         IT_EFORMAT, "rope_scaling.low_freq_factor: expected a positive number, got 0"},
        {"\"rope_scaling\":{\"rope_type\":\"llama3\",\"original_max_position_embeddings\":8192.5}", IT_EFORMAT,
         "rope_scaling.original_max_position_embeddings: expected a positive integer, got 8192.5"},
        {"\"rope_parameters\":{\"rope_type\":\"yarn\",\"factor\":4,\"attention_factor\":\"1\"}", IT_EFORMAT,
         "rope_parameters.attention_factor: expected a positive number, got a string"},
        {"\"rope_parameters\":{\"rope_type\":\"yarn\",\"rope_theta\":10000}", IT_EFORMAT,
         "rope_parameters.factor: missing, and rope_parameters.rope_type \"yarn\" needs it"},
        {"\"rope_scaling\":{\"rope_type\":8}", IT_EFORMAT,
         "rope_scaling.rope_type: expected a non-empty string, got 8"},
        {"\"rope_scaling\":{\"type\":\"\"}", IT_EFORMAT, "rope_scaling.type: expected a non-empty string"},
        {"\"partial_rotary_factor\":1.5", IT_EFORMAT, "partial_rotary_factor: expected a number in (0, 1], got 1.5"},
        {"\"partial_rotary_factor\":0", IT_EFORMAT, "partial_rotary_factor: expected a positive number, got 0"},
        {"\"rope_parameters\":{\"partial_rotary_factor\":2}", IT_EFORMAT,
         "rope_parameters.partial_rotary_factor: expected a number in (0, 1], got 2"},
        {"\"max_position_embeddings\":\"4096\"", IT_EFORMAT,
         "max_position_embeddings: expected a positive integer, got a string"},
        {"\"rope_parameters\":{\"full_attention\":{\"rope_type\":\"default\"}}", IT_EUNSUPPORTED,
         "rope_parameters.full_attention: per-layer-type RoPE parameters are not supported"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char json[256];
        snprintf(json, sizeof json, "{\"model_type\":\"llama\",%s}", bad[i].json);
        rc = cfg_from(json, &c, &e);
        CHECKF(rc == bad[i].code, "%s: rc %d (%s)", json, rc, e.msg);
        check_msg(&e, test_tmppath("config.json"), bad[i].want, json);
        CHECK(c.arch == IT_ARCH_UNKNOWN && c.rope_type[0] == 0 && c.rope_factor == 0); /* zeroed on failure */
    }
}

static void config_t5_defaults(void)
{
    it_config c;
    it_err e;
    CHECK(cfg_from("{\"model_type\":\"t5\"}", &c, &e) == IT_OK); /* T5Config() */
    CHECK(c.vocab_size == 32128 && c.hidden == 512 && c.head_dim == 64 && c.intermediate == 2048);
    CHECK(c.layers == 6 && c.decoder_layers == 6 && c.heads == 8 && c.norm_eps == 1e-6);
    CHECK(!strcmp(c.act, "relu") && c.gated == 0 && c.tie_word_embeddings == 1);

    CHECK(cfg_from("{\"model_type\":\"t5\",\"num_layers\":3,\"num_decoder_layers\":null,"
                   "\"feed_forward_proj\":\"gated-gelu\"}",
                   &c, &e) == IT_OK);
    CHECK(c.layers == 3 && c.decoder_layers == 3 && !strcmp(c.act, "gelu_new") && c.gated == 1);
    CHECK(cfg_from("{\"model_type\":\"t5\",\"feed_forward_proj\":\"gated-silu\"}", &c, &e) == IT_OK);
    CHECK(!strcmp(c.act, "silu") && c.gated == 1);
    CHECK(cfg_from("{\"model_type\":\"t5\",\"feed_forward_proj\":\"gelu\"}", &c, &e) == IT_OK);
    CHECK(!strcmp(c.act, "gelu") && c.gated == 0);
    /* explicit dense_act_fn / is_gated_act win over feed_forward_proj */
    CHECK(cfg_from("{\"model_type\":\"t5\",\"feed_forward_proj\":\"gated-gelu\",\"dense_act_fn\":\"gelu\","
                   "\"is_gated_act\":false}",
                   &c, &e) == IT_OK);
    CHECK(!strcmp(c.act, "gelu") && c.gated == 0);

    CHECK(cfg_from("{\"model_type\":\"mt5\"}", &c, &e) == IT_OK); /* MT5Config() */
    CHECK(c.arch == IT_ARCH_T5 && c.vocab_size == 250112 && c.intermediate == 1024 && c.layers == 8 && c.heads == 6);
    CHECK(!strcmp(c.act, "gelu_new") && c.gated == 1 && c.tie_word_embeddings == 0);

    const char *bad[] = {"\"foo-gelu\"", "\"gated-gelu-x\"", "\"gated-\"", "\"\"", "7"};
    for (int i = 0; i < 5; i++) {
        char json[128];
        snprintf(json, sizeof json, "{\"model_type\":\"t5\",\"feed_forward_proj\":%s}", bad[i]);
        CHECKF(cfg_from(json, &c, &e) == IT_EFORMAT, "%s", json);
        check_msg(&e, test_tmppath("config.json"), "feed_forward_proj", json);
    }
}

static void config_clip_defaults(void)
{
    it_config c;
    it_err e;
    const char *json[] = {"{\"model_type\":\"clip\"}",
                          "{\"model_type\":\"clip\",\"text_config\":null,\"vision_config\":{}}"};
    for (int k = 0; k < 2; k++) {
        CHECK(cfg_from(json[k], &c, &e) == IT_OK); /* openai/clip-vit-base-patch32 */
        CHECK(c.vocab_size == 49408 && c.hidden == 512 && c.intermediate == 2048 && c.layers == 12 && c.heads == 8);
        CHECK(c.vision_hidden == 768 && c.vision_intermediate == 3072 && c.vision_layers == 12 && c.vision_heads == 12);
        CHECK(c.image_size == 224 && c.patch_size == 32 && c.projection_dim == 512);
        CHECK(!strcmp(c.act, "quick_gelu") && c.norm_eps == 1e-5);
    }
    /* a standalone text encoder (the SD1.5 text_encoder/config.json shape) */
    CHECK(cfg_from("{\"model_type\":\"clip_text_model\",\"architectures\":[\"CLIPTextModel\"],\"hidden_size\":768,"
                   "\"num_attention_heads\":12,\"intermediate_size\":3072}",
                   &c, &e) == IT_OK);
    CHECK(c.arch == IT_ARCH_CLIP && c.hidden == 768 && c.heads == 12 && c.head_dim == 64 && c.vision_hidden == 0);
    char line[512];
    it_config_describe(&c, line, sizeof line);
    CHECKF(strstr(line, "CLIPTextModel") && strstr(line, "hidden 768") && !strstr(line, "vision"), "%s", line);
    CHECK(cfg_from("{\"model_type\":\"clip_vision_model\",\"patch_size\":14}", &c, &e) == IT_OK);
    CHECK(c.hidden == 0 && c.vision_hidden == 768 && c.patch_size == 14);
    CHECK(!strcmp(c.vision_act, "quick_gelu") && c.vision_norm_eps == 1e-5 && c.act[0] == 0 && c.norm_eps == 0);
    CHECK(c.max_position_embeddings == 0);
    it_config_describe(&c, line, sizeof line);
    CHECKF(strstr(line, "patch 14; projection 512, quick_gelu, layer_norm_eps 1e-05"), "%s", line);
    /* towers that disagree on the activation and epsilon each keep their own */
    int rc = cfg_from("{\"model_type\":\"clip\",\"text_config\":{\"hidden_act\":\"gelu\",\"layer_norm_eps\":1e-6,"
                      "\"max_position_embeddings\":77},\"vision_config\":{\"hidden_act\":\"quick_gelu\"}}",
                      &c, &e);
    CHECKF(rc == IT_OK, "%s", e.msg);
    CHECK(!strcmp(c.act, "gelu") && c.norm_eps == 1e-6 && !strcmp(c.vision_act, "quick_gelu"));
    CHECK(c.vision_norm_eps == 1e-5 && c.max_position_embeddings == 77);
    it_config_describe(&c, line, sizeof line);
    CHECKF(strstr(line, "projection 512, text gelu, layer_norm_eps 1e-06, vision quick_gelu, layer_norm_eps 1e-05"),
           "%s", line);
    CHECK(cfg_from("{\"model_type\":\"clip\",\"vision_config\":{\"hidden_act\":\"gelu\"}}", &c, &e) == IT_OK);
    CHECK(!strcmp(c.act, "quick_gelu") && !strcmp(c.vision_act, "gelu") && c.norm_eps == c.vision_norm_eps);
    const char *bad[] = {"{\"model_type\":\"clip\",\"vision_config\":{\"hidden_act\":null}}",
                         "{\"model_type\":\"clip\",\"vision_config\":{\"layer_norm_eps\":\"1e-5\"}}",
                         "{\"model_type\":\"clip\",\"text_config\":{\"max_position_embeddings\":0}}"};
    const char *want[] = {"vision_config.hidden_act: expected a non-empty string, got null",
                          "vision_config.layer_norm_eps: expected a positive number, got a string",
                          "text_config.max_position_embeddings: expected a positive integer, got 0"};
    for (int i = 0; i < 3; i++) {
        CHECKF(cfg_from(bad[i], &c, &e) == IT_EFORMAT, "%s", bad[i]);
        check_msg(&e, test_tmppath("config.json"), want[i], bad[i]);
    }
}

static void config_unet_defaults(void)
{
    it_config c;
    it_err e;
    CHECK(cfg_from("{\"_class_name\":\"UNet2DConditionModel\"}", &c, &e) == IT_OK); /* diffusers __init__ */
    CHECK(c.arch == IT_ARCH_UNET && !strcmp(c.model_type, "unet"));
    CHECK(c.nblocks == 4 && c.block_out_channels[0] == 320 && c.block_out_channels[1] == 640);
    CHECK(c.block_out_channels[2] == 1280 && c.block_out_channels[3] == 1280);
    CHECK(c.layers_per_block == 2 && c.cross_attention_dim == 1280 && c.attention_head_dim == 8);
    CHECK(c.norm_groups == 32 && c.in_channels == 4 && c.out_channels == 4 && c.sample_size == 0);
    CHECK(!strcmp(c.act, "silu") && c.norm_eps == 1e-5 && c.use_linear_projection == 0);
    for (int i = 0; i < 4; i++) CHECK(c.attention_head_dims[i] == 8 && c.transformer_layers[i] == 1);
    char line[512];
    it_config_describe(&c, line, sizeof line);
    CHECKF(strstr(line, "[320, 640, 1280, 1280]") && strstr(line, "sample unset"), "%s", line);
    CHECKF(strstr(line, "attention_head_dim 8 (= heads), norm groups") != NULL, "%s", line);

    /* SD2.x (stabilityai/stable-diffusion-2-1 unet/config.json): heads per block, Linear proj_in */
    int rc = cfg_from("{\"_class_name\":\"UNet2DConditionModel\",\"attention_head_dim\":[5,10,20,20],"
                      "\"block_out_channels\":[320,640,1280,1280],\"cross_attention_dim\":1024,"
                      "\"use_linear_projection\":true,\"num_attention_heads\":null,\"sample_size\":96}",
                      &c, &e);
    CHECKF(rc == IT_OK, "%s", e.msg);
    CHECK(c.attention_head_dims[0] == 5 && c.attention_head_dims[1] == 10 && c.attention_head_dims[2] == 20);
    CHECK(c.attention_head_dims[3] == 20 && c.attention_head_dim == 5 && c.heads == 5);
    CHECK(c.use_linear_projection == 1 && c.cross_attention_dim == 1024 && c.transformer_layers[3] == 1);
    it_config_describe(&c, line, sizeof line);
    CHECKF(strstr(line, "cross_attention_dim 1024, attention_head_dim [5, 10, 20, 20] (= heads), linear projection, "
                        "norm groups 32"),
           "%s", line);
    /* SDXL-style transformer depth per block */
    rc = cfg_from("{\"_class_name\":\"UNet2DConditionModel\",\"block_out_channels\":[320,640,1280],"
                  "\"attention_head_dim\":[5,10,20],\"transformer_layers_per_block\":[1,2,10],"
                  "\"use_linear_projection\":true}",
                  &c, &e);
    CHECKF(rc == IT_OK, "%s", e.msg);
    CHECK(c.transformer_layers[0] == 1 && c.transformer_layers[1] == 2 && c.transformer_layers[2] == 10);
    CHECK(c.transformer_layers[3] == 0 && c.attention_head_dims[3] == 0);
    it_config_describe(&c, line, sizeof line);
    CHECKF(strstr(line, "(= heads), transformer_layers_per_block [1, 2, 10], linear projection"), "%s", line);
    CHECK(cfg_from("{\"_class_name\":\"UNet2DConditionModel\",\"transformer_layers_per_block\":2}", &c, &e) == IT_OK);
    CHECK(c.transformer_layers[0] == 2 && c.transformer_layers[3] == 2);
    it_config_describe(&c, line, sizeof line);
    CHECKF(strstr(line, "(= heads), transformer_layers_per_block 2, norm groups"), "%s", line);

    /* per-block lists with one value everywhere are that value */
    CHECK(cfg_from("{\"_class_name\":\"UNet2DConditionModel\",\"block_out_channels\":[32,64],"
                   "\"attention_head_dim\":[4,4],\"layers_per_block\":[1,1],\"cross_attention_dim\":[16,16],"
                   "\"transformer_layers_per_block\":[1,1],\"norm_num_groups\":16,"
                   "\"down_block_types\":[\"CrossAttnDownBlock2D\",\"DownBlock2D\"]}",
                   &c, &e) == IT_OK);
    CHECK(c.attention_head_dim == 4 && c.layers_per_block == 1 && c.cross_attention_dim == 16 && c.norm_groups == 16);
    CHECK(c.attention_head_dims[1] == 4 && c.transformer_layers[1] == 1);

    struct {
        const char *extra;
        int code;
        const char *want;
    } bad[] = {
        {"\"attention_head_dim\":[5,10,20]", IT_EFORMAT, "attention_head_dim: 3 entries, but block_out_channels has 4"},
        {"\"attention_head_dim\":[5,10,\"20\",20]", IT_EFORMAT,
         "attention_head_dim[2]: expected a positive integer, got a string"},
        {"\"attention_head_dim\":0", IT_EFORMAT, "attention_head_dim: expected a positive integer, got 0"},
        {"\"transformer_layers_per_block\":[1,1,1,1,1]", IT_EFORMAT,
         "transformer_layers_per_block: 5 entries, but block_out_channels has 4"},
        {"\"transformer_layers_per_block\":[1,0,1,1]", IT_EFORMAT,
         "transformer_layers_per_block[1]: expected a positive integer, got 0"},
        {"\"transformer_layers_per_block\":\"1\"", IT_EFORMAT,
         "transformer_layers_per_block: expected a positive integer, got a string"},
        {"\"transformer_layers_per_block\":[[1,1],[2,2],[3,3],[4,4]]", IT_EUNSUPPORTED,
         "transformer_layers_per_block[0]: per-layer lists"},
        {"\"use_linear_projection\":1", IT_EFORMAT, "use_linear_projection: expected true or false, got 1"},
        {"\"cross_attention_dim\":[768,768,1024,1024]", IT_EUNSUPPORTED,
         "cross_attention_dim: per-block values that differ (block 0: 768, block 2: 1024)"},
        {"\"num_attention_heads\":8", IT_EUNSUPPORTED, "num_attention_heads"},
        {"\"block_out_channels\":[1,2,3,4,5,6,7,8,9],\"norm_num_groups\":1", IT_EUNSUPPORTED, "9 blocks"},
        {"\"block_out_channels\":[48,64]", IT_EFORMAT, "block_out_channels[0] 48 is not a multiple of norm_num_groups 32"},
        {"\"block_out_channels\":[]", IT_EFORMAT, "block_out_channels: expected a non-empty array, got an array"},
        {"\"block_out_channels\":[32,\"64\"]", IT_EFORMAT, "block_out_channels[]: expected a positive integer, got a string"},
        {"\"layers_per_block\":[1,1,1]", IT_EFORMAT, "layers_per_block: 3 entries, but block_out_channels has 4"},
        {"\"down_block_types\":[\"DownBlock2D\"]", IT_EFORMAT, "down_block_types: 1 entries"},
        {"\"up_block_types\":\"UpBlock2D\"", IT_EFORMAT, "up_block_types: expected an array of block names"},
        {"\"norm_num_groups\":null", IT_EFORMAT, "norm_num_groups: expected a positive integer, got null"},
        {"\"act_fn\":null", IT_EFORMAT, "act_fn: expected a non-empty string, got null"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char json[256];
        snprintf(json, sizeof json, "{\"_class_name\":\"UNet2DConditionModel\",%s}", bad[i].extra);
        CHECKF(cfg_from(json, &c, &e) == bad[i].code, "%s", json);
        check_msg(&e, test_tmppath("config.json"), bad[i].want, json);
        CHECK(c.arch == IT_ARCH_UNKNOWN && c.nblocks == 0); /* zeroed on failure */
    }
}

/* An unknown model loads as IT_ARCH_UNKNOWN with its names; its other keys are not read. */
static void config_unknown(void)
{
    it_config c;
    it_err e;
    CHECK(cfg_from("{\"model_type\":\"bert\",\"architectures\":[\"BertModel\"],\"hidden_size\":\"x\"}", &c, &e) ==
          IT_OK);
    CHECK(c.arch == IT_ARCH_UNKNOWN && !strcmp(c.model_type, "bert") && !strcmp(c.class_name, "BertModel"));
    char line[256];
    it_config_describe(&c, line, sizeof line);
    CHECKF(!strcmp(line, "bert (BertModel): architecture not supported"), "%s", line);
    CHECK(cfg_from("{\"_class_name\":\"AutoencoderKL\",\"architectures\":[]}", &c, &e) == IT_OK);
    CHECK(c.arch == IT_ARCH_UNKNOWN && c.model_type[0] == 0 && !strcmp(c.class_name, "AutoencoderKL"));
    CHECK(cfg_from("{}", &c, &e) == IT_OK && c.arch == IT_ARCH_UNKNOWN);
    it_config_describe(&c, line, sizeof line);
    CHECKF(!strcmp(line, "(no model_type): architecture not supported"), "%s", line);
    /* model_type is matched whole: a prefix or an embedded NUL is not "llama" */
    CHECK(cfg_from("{\"model_type\":\"llama\\u0000x\"}", &c, &e) == IT_OK && c.arch == IT_ARCH_UNKNOWN);
    CHECK(cfg_from("{\"model_type\":\"llam\"}", &c, &e) == IT_OK && c.arch == IT_ARCH_UNKNOWN);
}

/* Names longer than the fixed buffers are cut at a UTF-8 boundary; activations are refused. */
static void config_long_names(void)
{
    char json[700], name[300];
    it_config c;
    it_err e;
    memset(name, 'x', 200);
    name[200] = 0;
    snprintf(json, sizeof json, "{\"model_type\":\"%s\",\"architectures\":[\"%s\"]}", name, name);
    CHECK(cfg_from(json, &c, &e) == IT_OK);
    CHECK(strlen(c.model_type) == IT_NAME_MAX - 1 && strlen(c.class_name) == IT_NAME_MAX - 1);
    CHECK(strspn(c.model_type, "x") == IT_NAME_MAX - 1);
    /* 62 ASCII bytes then a 2-byte character: the character does not fit and is dropped whole */
    memset(name, 'a', 62);
    memcpy(name + 62, "\xc3\xa9z", 4);
    snprintf(json, sizeof json, "{\"model_type\":\"%s\"}", name);
    CHECK(cfg_from(json, &c, &e) == IT_OK && strlen(c.model_type) == 62);
    char line[600];
    it_config_describe(&c, line, sizeof line);
    CHECK(strlen(line) < sizeof line);
    memset(name, 'g', 100);
    name[100] = 0;
    snprintf(json, sizeof json, "{\"model_type\":\"llama\",\"hidden_act\":\"%s\"}", name);
    CHECK(cfg_from(json, &c, &e) == IT_EFORMAT);
    check_msg(&e, test_tmppath("config.json"), "hidden_act: expected a name of at most 63 bytes", json);
}

/* ============================================================================================ */
/* Refused model configs                                                                         */
/* ============================================================================================ */

static void config_bad(void)
{
    struct {
        const char *json;
        const char *want;
    } bad[] = {
        {"{\"model_type\":\"llama\",\"hidden_size\":\"64\"}", "hidden_size: expected a positive integer, got a string"},
        {"{\"model_type\":\"llama\",\"hidden_size\":-64}", "hidden_size: expected a positive integer, got -64"},
        {"{\"model_type\":\"llama\",\"hidden_size\":64.5}", "hidden_size: expected a positive integer, got 64.5"},
        {"{\"model_type\":\"llama\",\"hidden_size\":64.0}", "hidden_size: expected a positive integer, got 64.0"},
        {"{\"model_type\":\"llama\",\"hidden_size\":0}", "hidden_size: expected a positive integer, got 0"},
        {"{\"model_type\":\"llama\",\"hidden_size\":null}", "hidden_size: expected a positive integer, got null"},
        {"{\"model_type\":\"llama\",\"hidden_size\":[64]}", "hidden_size: expected a positive integer, got an array"},
        {"{\"model_type\":\"llama\",\"vocab_size\":18446744073709551615}",
         "vocab_size: expected a positive integer, got 18446744073709551615"},
        {"{\"model_type\":\"llama\",\"vocab_size\":4294967296}", "vocab_size: 4294967296 is too large"},
        {"{\"model_type\":\"llama\",\"hidden_size\":64,\"num_attention_heads\":5}",
         "hidden_size 64 is not a multiple of num_attention_heads 5"},
        {"{\"model_type\":\"llama\",\"hidden_size\":64,\"num_attention_heads\":4,\"num_key_value_heads\":3}",
         "num_attention_heads 4 is not a multiple of num_key_value_heads 3"},
        {"{\"model_type\":\"qwen2\",\"num_key_value_heads\":0}", "num_key_value_heads: expected a positive integer, got 0"},
        {"{\"model_type\":\"llama\",\"head_dim\":-1}", "head_dim: expected a positive integer, got -1"},
        {"{\"model_type\":\"llama\",\"rms_norm_eps\":\"1e-6\"}", "rms_norm_eps: expected a positive number, got a string"},
        {"{\"model_type\":\"llama\",\"rms_norm_eps\":-1e-6}", "rms_norm_eps: expected a positive number, got -1e-06"},
        {"{\"model_type\":\"llama\",\"rope_theta\":0}", "rope_theta: expected a positive number, got 0"},
        {"{\"model_type\":\"llama\",\"tie_word_embeddings\":\"false\"}",
         "tie_word_embeddings: expected true or false, got a string"},
        {"{\"model_type\":\"llama\",\"attention_bias\":0}", "attention_bias: expected true or false, got 0"},
        {"{\"model_type\":\"llama\",\"hidden_act\":5}", "hidden_act: expected a non-empty string, got 5"},
        {"{\"model_type\":\"llama\",\"hidden_act\":\"\"}", "hidden_act: expected a non-empty string, got a string"},
        {"{\"model_type\":\"llama\",\"rope_scaling\":\"linear\"}", "rope_scaling: expected an object, got a string"},
        {"{\"model_type\":\"llama\",\"rope_parameters\":{\"rope_theta\":\"1e4\"}}",
         "rope_parameters.rope_theta: expected a positive number, got a string"},
        {"{\"model_type\":5}", "model_type: expected a string, got 5"},
        {"{\"model_type\":\"llama\",\"architectures\":\"LlamaForCausalLM\"}", "architectures: expected an array"},
        {"{\"model_type\":\"llama\",\"architectures\":[5]}", "architectures[0]: expected a class name string, got 5"},
        {"{\"_class_name\":true}", "_class_name: expected a class name string, got true"},
        {"{\"model_type\":\"t5\",\"d_kv\":\"64\"}", "d_kv: expected a positive integer, got a string"},
        {"{\"model_type\":\"t5\",\"num_decoder_layers\":-2}", "num_decoder_layers: expected a positive integer, got -2"},
        {"{\"model_type\":\"t5\",\"is_gated_act\":\"yes\"}", "is_gated_act: expected true or false, got a string"},
        {"{\"model_type\":\"t5\",\"tie_word_embeddings\":null}", "tie_word_embeddings: expected true or false, got null"},
        {"{\"model_type\":\"clip\",\"text_config\":{\"hidden_size\":60,\"num_attention_heads\":8}}",
         "text_config.hidden_size 60 is not a multiple of text_config.num_attention_heads 8"},
        {"{\"model_type\":\"clip\",\"vision_config\":[]}", "vision_config: expected an object, got an array"},
        {"{\"model_type\":\"clip\",\"vision_config\":{\"patch_size\":-1}}",
         "vision_config.patch_size: expected a positive integer, got -1"},
        {"{\"model_type\":\"clip\",\"projection_dim\":1.5}", "projection_dim: expected a positive integer, got 1.5"},
        {"{\"model_type\":\"clip_text_model\",\"hidden_size\":100,\"num_attention_heads\":3}",
         "hidden_size 100 is not a multiple of num_attention_heads 3"},
        {"{\"model_type\":\"llama\",}", "at byte"},                                      /* invalid JSON */
        {"{\"model_type\":\"llama\",\"hidden_size\":64,\"hidden_size\":32}", "hidden_size"}, /* duplicate key */
        {"[{\"model_type\":\"llama\"}]", "expected a JSON object at the top level, got an array"},
        {"", "at byte 0"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        it_config c;
        it_err e = {0, ""};
        int rc = cfg_from(bad[i].json, &c, &e);
        CHECKF(rc == IT_EFORMAT && e.code == IT_EFORMAT, "%s: rc %d (%s)", bad[i].json, rc, e.msg);
        check_msg(&e, test_tmppath("config.json"), bad[i].want, bad[i].json);
        CHECK(c.arch == IT_ARCH_UNKNOWN && c.hidden == 0 && c.model_type[0] == 0); /* zeroed on failure */
    }
    test_note("%zu bad model configs refused", sizeof bad / sizeof bad[0]);
}

/* A missing file is IT_ENOTFOUND naming the path; a folder is looked into for config.json. */
static void config_missing(void)
{
    it_config c;
    it_lora_config l;
    it_err e;
    CHECK(it_config_load(&c, "data/no-such-model/config.json", &e) == IT_ENOTFOUND);
    CHECKF(strstr(e.msg, "data/no-such-model/config.json") != NULL, "%s", e.msg);
    char empty[4096];
    snprintf(empty, sizeof empty, "%s", test_tmppath("empty-folder"));
    CHECK(mkdir(empty, 0755) == 0);
    CHECK(it_config_load(&c, empty, NULL) == IT_ENOTFOUND); /* err may be NULL */
    CHECK(it_config_load(&c, empty, &e) == IT_ENOTFOUND);
    CHECKF(strstr(e.msg, empty) && strstr(e.msg, "empty-folder/config.json"), "%s", e.msg);
    CHECK(it_lora_config_load(&l, empty, &e) == IT_ENOTFOUND);
    CHECKF(strstr(e.msg, "/adapter_config.json") != NULL, "%s", e.msg);
    CHECK(l.targets == NULL && l.ntargets == 0 && l.base_model == NULL);
    CHECK(it_lora_config_load(&l, "data/no-such-adapter", &e) == IT_ENOTFOUND);
    CHECKF(strstr(e.msg, "data/no-such-adapter") != NULL, "%s", e.msg);
}

/* ============================================================================================ */
/* Adapter configs                                                                               */
/* ============================================================================================ */

/* Every fixture adapter, field by field against its adapter_config.json (targets in file order). */
static void lora_fixtures(void)
{
    static const struct {
        const char *dir;
        int64_t r;
        double alpha;
        int rslora;
        const char *task;
        const char *targets; /* space-separated, in file order */
    } fx[] = {
        {"llama/adapters/lora_r4_a16_all", 4, 16, 0, "CAUSAL_LM", "gate_proj v_proj o_proj k_proj up_proj down_proj q_proj"},
        {"llama/adapters/lora_r4_a8_mlp", 4, 8, 0, "CAUSAL_LM", "up_proj gate_proj down_proj"},
        {"llama/adapters/lora_r8_a8_rslora_attn", 8, 8, 1, "CAUSAL_LM", "k_proj v_proj o_proj q_proj"},
        {"qwen2/adapters/lora_r4_a16_all", 4, 16, 0, "CAUSAL_LM", "gate_proj v_proj o_proj k_proj up_proj down_proj q_proj"},
        {"qwen2/adapters/lora_r4_a8_mlp", 4, 8, 0, "CAUSAL_LM", "up_proj gate_proj down_proj"},
        {"qwen2/adapters/lora_r8_a8_rslora_attn", 8, 8, 1, "CAUSAL_LM", "k_proj v_proj o_proj q_proj"},
        {"t5/adapters/lora_r4_a16_all", 4, 16, 0, "SEQ_2_SEQ_LM", "wo wi_0 q k v o wi_1"},
        {"t5/adapters/lora_r4_a8_mlp", 4, 8, 0, "SEQ_2_SEQ_LM", "wo wi_1 wi_0"},
        {"t5/adapters/lora_r8_a8_rslora_attn", 8, 8, 1, "SEQ_2_SEQ_LM", "q k v o"},
        {"clip/adapters/lora_r4_a16_all", 4, 16, 0, "", "v_proj k_proj fc2 fc1 out_proj q_proj"},
        {"clip/adapters/lora_r4_a8_mlp", 4, 8, 0, "", "fc2 fc1"},
        {"clip/adapters/lora_r8_a8_rslora_attn", 8, 8, 1, "", "q_proj v_proj k_proj out_proj"},
        {"unet/adapters/lora_r4_a16_all", 4, 16, 0, "", "to_v to_k to_out.0 to_q"},
        {"unet/adapters/lora_r4_a8_qv", 4, 8, 0, "", "to_v to_q"},
        {"unet/adapters/lora_r8_a8_rslora_all", 8, 8, 1, "", "to_v to_k to_out.0 to_q"},
    };
    for (size_t k = 0; k < sizeof fx / sizeof fx[0]; k++) {
        it_lora_config c;
        it_err e;
        char file[256];
        snprintf(file, sizeof file, "%s/adapter_config.json", fx[k].dir);
        int rc = it_lora_config_load(&c, k % 2 ? test_data(fx[k].dir) : test_data(file), &e);
        CHECKF(rc == IT_OK, "%s: %s", fx[k].dir, e.msg);
        if (rc != IT_OK) continue;
        CHECKF(c.r == fx[k].r && c.lora_alpha == fx[k].alpha && c.use_rslora == fx[k].rslora, "%s", fx[k].dir);
        CHECK(!strcmp(c.peft_type, "LORA") && !strcmp(c.bias, "none") && !strcmp(c.task_type, fx[k].task));
        CHECK(!c.use_dora && !c.fan_in_fan_out && !c.lora_bias && c.target_regex == NULL);
        CHECK(c.exclude_regex == NULL && c.nexclude == 0 && c.nlayers == 0 && c.layers_to_transform == NULL);
        CHECK(c.nlayers_pattern == 0 && c.nmodules_to_save == 0 && c.nrank_pattern == 0 && c.nalpha_pattern == 0);
        CHECK(c.base_model && !strcmp(c.base_model, "base"));
        char joined[256] = "";
        for (size_t i = 0; i < c.ntargets; i++)
            snprintf(joined + strlen(joined), sizeof joined - strlen(joined), "%s%s", i ? " " : "", c.targets[i]);
        CHECKF(!strcmp(joined, fx[k].targets), "%s: targets \"%s\"", fx[k].dir, joined);

        char line[512], want[512];
        it_lora_config_describe(&c, line, sizeof line);
        double scale = fx[k].rslora ? fx[k].alpha / sqrt((double)fx[k].r) : fx[k].alpha / (double)fx[k].r;
        snprintf(want, sizeof want, "LoRA r %d, alpha %g, scale %g (%s), targets %s%s%s", (int)fx[k].r, fx[k].alpha,
                 scale, fx[k].rslora ? "alpha/sqrt(r), rsLoRA" : "alpha/r", fx[k].targets, fx[k].task[0] ? ", task " : "",
                 fx[k].task);
        CHECKF(!strcmp(line, want), "describe \"%s\", want \"%s\"", line, want);
        it_lora_config_free(&c);
        CHECK(c.targets == NULL && c.ntargets == 0 && c.base_model == NULL && c.r == 0);
    }
    it_lora_config c;
    CHECK(it_lora_config_load(&c, test_data("llama/adapters/lora_r8_a8_rslora_attn"), NULL) == IT_OK);
    char line[512];
    it_lora_config_describe(&c, line, sizeof line);
    CHECKF(strstr(line, "scale 2.82843 (alpha/sqrt(r), rsLoRA)") != NULL, "%s", line);
    it_lora_config_free(&c);
}

/* LoraConfig defaults for an empty file, and null for every key whose default allows it. */
static void lora_defaults(void)
{
    const char *json[] = {"{}", "{\"peft_type\":null,\"use_rslora\":null,\"use_dora\":null,\"fan_in_fan_out\":null,"
                                "\"lora_bias\":null,\"target_modules\":null,\"exclude_modules\":null,"
                                "\"layers_to_transform\":null,\"layers_pattern\":null,\"modules_to_save\":null,"
                                "\"rank_pattern\":null,\"alpha_pattern\":{},\"task_type\":null,"
                                "\"base_model_name_or_path\":null,\"target_modules_to_ignore\":[1]}"};
    for (int k = 0; k < 2; k++) {
        it_lora_config c;
        it_err e;
        int rc = lora_from(json[k], &c, &e);
        CHECKF(rc == IT_OK, "%s", e.msg);
        CHECK(c.r == 8 && c.lora_alpha == 8 && !strcmp(c.peft_type, "LORA") && !strcmp(c.bias, "none"));
        CHECK(!c.use_rslora && !c.use_dora && !c.fan_in_fan_out && !c.lora_bias && c.task_type[0] == 0);
        CHECK(c.target_regex == NULL && c.ntargets == 0 && c.targets == NULL && c.exclude_regex == NULL);
        CHECK(c.nexclude == 0 && c.nlayers == 0 && c.nlayers_pattern == 0 && c.nmodules_to_save == 0);
        CHECK(c.nrank_pattern == 0 && c.rank_pattern == NULL && c.nalpha_pattern == 0 && c.base_model == NULL);
        char line[256];
        it_lora_config_describe(&c, line, sizeof line);
        CHECKF(!strcmp(line, "LoRA r 8, alpha 8, scale 1 (alpha/r), targets unset (the model type's default)"), "%s",
               line);
        it_lora_config_free(&c);
    }
}

/* Every optional field at once; patterns keep file order, unknown keys are ignored. */
static void lora_full(void)
{
    const char *json =
        "{\"peft_type\":\"LORA\",\"r\":16,\"lora_alpha\":12.5,\"use_rslora\":false,\"use_dora\":true,"
        "\"fan_in_fan_out\":true,\"lora_bias\":true,\"bias\":\"lora_only\",\"target_modules\":\".*\\\\.(q|v)_proj\","
        "\"exclude_modules\":[\"lm_head\",\"model.layers.0.self_attn.q_proj\"],\"layers_to_transform\":[0,2,5],"
        "\"layers_pattern\":[\"layers\",\"h\"],\"modules_to_save\":[\"classifier\",\"score\"],"
        "\"rank_pattern\":{\"z_proj\":4,\"^model.layers.0.self_attn.v_proj\":2},\"alpha_pattern\":{\"v_proj\":4.5},"
        "\"task_type\":\"SEQ_CLS\",\"base_model_name_or_path\":\"meta-llama/Llama-2-7b-hf\","
        "\"megatron_config\":{\"x\":[1,2]},\"loftq_config\":{},\"lora_dropout\":0.05,\"revision\":null}";
    it_lora_config c;
    it_err e;
    int rc = lora_from(json, &c, &e);
    CHECKF(rc == IT_OK, "%s", e.msg);
    if (rc != IT_OK) return;
    CHECK(c.r == 16 && c.lora_alpha == 12.5 && c.use_dora && c.fan_in_fan_out && c.lora_bias && !c.use_rslora);
    CHECK(!strcmp(c.bias, "lora_only") && !strcmp(c.task_type, "SEQ_CLS"));
    CHECK(c.target_regex && !strcmp(c.target_regex, ".*\\.(q|v)_proj") && c.ntargets == 0 && c.targets == NULL);
    CHECK(c.nexclude == 2 && !strcmp(c.exclude[0], "lm_head") && !strcmp(c.exclude[1], "model.layers.0.self_attn.q_proj"));
    CHECK(c.nlayers == 3 && c.layers_to_transform[0] == 0 && c.layers_to_transform[1] == 2 && c.layers_to_transform[2] == 5);
    CHECK(c.nlayers_pattern == 2 && !strcmp(c.layers_pattern[0], "layers") && !strcmp(c.layers_pattern[1], "h"));
    CHECK(c.nmodules_to_save == 2 && !strcmp(c.modules_to_save[0], "classifier") && !strcmp(c.modules_to_save[1], "score"));
    CHECK(c.nrank_pattern == 2 && !strcmp(c.rank_pattern[0].key, "z_proj") && c.rank_pattern[0].value == 4);
    CHECK(!strcmp(c.rank_pattern[1].key, "^model.layers.0.self_attn.v_proj") && c.rank_pattern[1].value == 2);
    CHECK(c.nalpha_pattern == 1 && !strcmp(c.alpha_pattern[0].key, "v_proj") && c.alpha_pattern[0].value == 4.5);
    CHECK(c.base_model && !strcmp(c.base_model, "meta-llama/Llama-2-7b-hf"));
    char line[1024];
    it_lora_config_describe(&c, line, sizeof line);
    CHECKF(!strcmp(line, "LoRA r 16, alpha 12.5, scale 0.78125 (alpha/r), targets regex \".*\\.(q|v)_proj\", exclude "
                         "lm_head model.layers.0.self_attn.q_proj, layers 0 2 5, layers_pattern layers h, rank_pattern "
                         "2 entries, alpha_pattern 1 entry, fan_in_fan_out, DoRA, lora_bias, bias lora_only, "
                         "modules_to_save classifier score, task SEQ_CLS"),
           "%s", line);
    /* a short buffer gets a NUL-terminated prefix */
    char small[20];
    memset(small, 'Z', sizeof small);
    it_lora_config_describe(&c, small, sizeof small);
    CHECK(small[19] == 0 && strncmp(small, line, 19) == 0);
    it_lora_config_free(&c);
    it_lora_config_free(&c); /* freeing a freed (zeroed) config is harmless */
    it_lora_config_free(NULL);

    /* the other spellings: one layer index, one layers_pattern, exclude regex, "all-linear" */
    CHECK(lora_from("{\"target_modules\":\"all-linear\",\"layers_to_transform\":3,\"layers_pattern\":\"blocks\","
                    "\"exclude_modules\":\"lm_head\",\"use_rslora\":true,\"r\":4,\"lora_alpha\":16}",
                    &c, &e) == IT_OK);
    CHECK(c.target_regex && !strcmp(c.target_regex, "all-linear") && c.nlayers == 1 && c.layers_to_transform[0] == 3);
    CHECK(c.nlayers_pattern == 1 && !strcmp(c.layers_pattern[0], "blocks"));
    CHECK(c.exclude_regex && !strcmp(c.exclude_regex, "lm_head") && c.nexclude == 0);
    it_lora_config_describe(&c, line, sizeof line);
    CHECKF(strstr(line, "scale 8 (alpha/sqrt(r), rsLoRA), targets regex \"all-linear\", exclude regex \"lm_head\"") != NULL,
           "%s", line);
    it_lora_config_free(&c);
    CHECK(lora_from("{\"target_modules\":[\"all-linear\"],\"target_modules_x\":5,\"lora_alpha\":-3}", &c, &e) == IT_OK);
    CHECK(c.ntargets == 1 && !strcmp(c.targets[0], "all-linear") && c.target_regex == NULL && c.lora_alpha == -3);
    it_lora_config_free(&c);
}

/* Bad adapter configs: IT_EFORMAT naming the key (IT_EUNSUPPORTED for another PEFT method), and
 * nothing left allocated -- valgrind / ASan see the partial lists freed. */
static void lora_bad(void)
{
    struct {
        const char *json;
        int code;
        const char *want;
    } bad[] = {
        {"{\"r\":0}", IT_EFORMAT, "r: expected a positive integer, got 0"},
        {"{\"r\":2.5}", IT_EFORMAT, "r: expected a positive integer, got 2.5"},
        {"{\"r\":8.0}", IT_EFORMAT, "r: expected a positive integer, got 8.0"},
        {"{\"r\":\"8\"}", IT_EFORMAT, "r: expected a positive integer, got a string"},
        {"{\"r\":-4}", IT_EFORMAT, "r: expected a positive integer, got -4"},
        {"{\"r\":null}", IT_EFORMAT, "r: expected a positive integer, got null"},
        {"{\"r\":4294967296}", IT_EFORMAT, "r: expected a positive integer, got 4294967296"},
        {"{\"lora_alpha\":\"8\"}", IT_EFORMAT, "lora_alpha: expected a finite number, got a string"},
        {"{\"lora_alpha\":[8]}", IT_EFORMAT, "lora_alpha: expected a finite number, got an array"},
        {"{\"use_rslora\":\"yes\"}", IT_EFORMAT, "use_rslora: expected true or false, got a string"},
        {"{\"use_dora\":1}", IT_EFORMAT, "use_dora: expected true or false, got 1"},
        {"{\"fan_in_fan_out\":\"false\"}", IT_EFORMAT, "fan_in_fan_out: expected true or false, got a string"},
        {"{\"lora_bias\":{}}", IT_EFORMAT, "lora_bias: expected true or false, got an object"},
        {"{\"peft_type\":\"LOHA\"}", IT_EUNSUPPORTED, "peft_type \"LOHA\" is not supported"},
        {"{\"peft_type\":\"lora\"}", IT_EUNSUPPORTED, "peft_type \"lora\" is not supported"},
        {"{\"peft_type\":5}", IT_EFORMAT, "peft_type: expected a string, got 5"},
        {"{\"bias\":\"some\"}", IT_EFORMAT, "bias: expected \"none\", \"all\" or \"lora_only\", got \"some\""},
        {"{\"bias\":null}", IT_EFORMAT, "bias: expected \"none\", \"all\" or \"lora_only\", got null"},
        {"{\"target_modules\":5}", IT_EFORMAT, "target_modules: expected a string or an array of strings, got 5"},
        {"{\"target_modules\":{\"q\":1}}", IT_EFORMAT, "target_modules: expected a string or an array of strings"},
        {"{\"target_modules\":[\"q_proj\",\"k_proj\",5]}", IT_EFORMAT, "target_modules[2]: expected a string, got 5"},
        {"{\"target_modules\":[\"q\\u0000x\"]}", IT_EFORMAT, "target_modules[0]: the string contains a NUL character"},
        {"{\"target_modules\":\"q\\u0000x\"}", IT_EFORMAT, "target_modules: the string contains a NUL character"},
        {"{\"exclude_modules\":[null]}", IT_EFORMAT, "exclude_modules[0]: expected a string, got null"},
        {"{\"modules_to_save\":\"classifier\"}", IT_EFORMAT, "modules_to_save: expected an array of strings, got a string"},
        {"{\"layers_pattern\":[\"layers\",1]}", IT_EFORMAT, "layers_pattern[1]: expected a string, got 1"},
        {"{\"layers_to_transform\":[0,-1]}", IT_EFORMAT, "layers_to_transform: expected a non-negative layer index"},
        {"{\"layers_to_transform\":\"0\"}", IT_EFORMAT, "layers_to_transform: expected a non-negative layer index"},
        {"{\"layers_to_transform\":[0,1.5]}", IT_EFORMAT, "got 1.5"},
        {"{\"rank_pattern\":{\"q_proj\":0}}", IT_EFORMAT, "rank_pattern.q_proj: expected a positive integer, got 0"},
        {"{\"rank_pattern\":{\"a\":4,\"b\":2.5}}", IT_EFORMAT, "rank_pattern.b: expected a positive integer, got 2.5"},
        {"{\"rank_pattern\":[]}", IT_EFORMAT, "rank_pattern: expected an object, got an array"},
        {"{\"rank_pattern\":{\"a\\u0000b\":4}}", IT_EFORMAT, "the string contains a NUL character"},
        {"{\"alpha_pattern\":{\"v_proj\":\"16\"}}", IT_EFORMAT, "alpha_pattern.v_proj: expected a finite number"},
        {"{\"task_type\":5}", IT_EFORMAT, "task_type: expected a string, got 5"},
        {"{\"base_model_name_or_path\":[]}", IT_EFORMAT, "base_model_name_or_path: expected a string, got an array"},
        {"{\"r\":4,\"r\":8}", IT_EFORMAT, "\"r\""}, /* duplicate key, named by the parser */
        {"{\"r\":4", IT_EFORMAT, "at byte"},
        {"\"LORA\"", IT_EFORMAT, "expected a JSON object at the top level, got a string"},
        /* failures after lists and patterns were allocated */
        {"{\"target_modules\":[\"q\",\"v\"],\"exclude_modules\":[\"x\"],\"layers_pattern\":\"layers\","
         "\"modules_to_save\":[\"c\"],\"layers_to_transform\":[1],\"rank_pattern\":{\"a\":4},"
         "\"alpha_pattern\":{\"a\":4,\"b\":null}}",
         IT_EFORMAT, "alpha_pattern.b: expected a finite number, got null"},
        {"{\"target_modules\":\"q\",\"base_model_name_or_path\":\"b\",\"task_type\":[]}", IT_EFORMAT, "task_type"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        it_lora_config c;
        it_err e = {0, ""};
        int rc = lora_from(bad[i].json, &c, &e);
        CHECKF(rc == bad[i].code && e.code == rc, "%s: rc %d (%s)", bad[i].json, rc, e.msg);
        check_msg(&e, test_tmppath("adapter_config.json"), bad[i].want, bad[i].json);
        CHECK(c.targets == NULL && c.target_regex == NULL && c.rank_pattern == NULL && c.alpha_pattern == NULL);
        CHECK(c.base_model == NULL && c.layers_to_transform == NULL && c.ntargets == 0 && c.r == 0);
        it_lora_config_free(&c); /* harmless after a failure */
    }
    test_note("%zu bad adapter configs refused", sizeof bad / sizeof bad[0]);
}

/* describe writes at most size bytes, always NUL-terminated, and size 0 writes nothing. */
static void config_describe_truncation(void)
{
    it_config c;
    it_err e;
    CHECK(it_config_load(&c, test_data("clip/base"), &e) == IT_OK);
    char full[512], part[512];
    it_config_describe(&c, full, sizeof full);
    for (size_t n = 1; n < strlen(full) + 3; n += 7) {
        memset(part, 'Z', sizeof part);
        it_config_describe(&c, part, n);
        CHECKF(strlen(part) == (n - 1 < strlen(full) ? n - 1 : strlen(full)), "size %zu: \"%s\"", n, part);
        CHECK(strncmp(part, full, strlen(part)) == 0);
    }
    part[0] = 'Z';
    it_config_describe(&c, part, 0);
    CHECK(part[0] == 'Z');
    it_config_describe(NULL, part, sizeof part);
    CHECK(part[0] == 0);
}

void suite_config(void)
{
    RUN(config_llama_fixture);
    RUN(config_qwen2_fixture);
    RUN(config_t5_fixture);
    RUN(config_clip_fixture);
    RUN(config_unet_fixture);
    RUN(config_llama_defaults);
    RUN(config_llama_family_defaults);
    RUN(config_llama_rope);
    RUN(config_t5_defaults);
    RUN(config_clip_defaults);
    RUN(config_unet_defaults);
    RUN(config_unknown);
    RUN(config_long_names);
    RUN(config_bad);
    RUN(config_missing);
    RUN(config_describe_truncation);
    RUN(lora_fixtures);
    RUN(lora_defaults);
    RUN(lora_full);
    RUN(lora_bad);
}
