/* bench_unet.c -- an SD-1.5-sized UNet for `iteris bench unet`: config.json and random weights in
 * diffusers' layout (UNet2DConditionModel of Stable Diffusion 1.5: block_out_channels 320, 640,
 * 1280, 1280; 2 layers per block; 8 heads; cross-attention dim 768; 32 norm groups; conv
 * proj_in / proj_out; 859,520,964 parameters), written to a folder that it_model_load reads like a
 * real checkpoint. The values are seeded uniform noise of standard deviation 0.02 (the numbers a
 * step computes mean nothing; its time and memory do). To keep the writer's own memory small, every
 * tensor's bytes are a seeded window of one pool of random values twice the largest tensor.
 */
#include "internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_TENSORS 1024
#define NAME_LEN 96

typedef struct layout {
    size_t n;
    char (*name)[NAME_LEN];
    uint64_t (*shape)[4];
    size_t *ndim;
    int oom;
} layout;

static void add(layout *l, const char *name, size_t ndim, uint64_t a, uint64_t b, uint64_t c, uint64_t d)
{
    if (l->n == MAX_TENSORS) {
        l->oom = 1;
        return;
    }
    snprintf(l->name[l->n], NAME_LEN, "%s", name);
    uint64_t s[4] = {a, b, c, d};
    memcpy(l->shape[l->n], s, sizeof s);
    l->ndim[l->n++] = ndim;
}

static void add2(layout *l, const char *p, const char *what, size_t ndim, uint64_t a, uint64_t b, uint64_t c,
                 uint64_t d)
{
    char name[NAME_LEN];
    snprintf(name, sizeof name, "%s.%s", p, what);
    add(l, name, ndim, a, b, c, d);
}

static void conv(layout *l, const char *p, uint64_t ci, uint64_t co, uint64_t k)
{
    add2(l, p, "weight", 4, co, ci, k, k);
    add2(l, p, "bias", 1, co, 0, 0, 0);
}

static void norm(layout *l, const char *p, uint64_t c)
{
    add2(l, p, "weight", 1, c, 0, 0, 0);
    add2(l, p, "bias", 1, c, 0, 0, 0);
}

static void linear(layout *l, const char *p, uint64_t in, uint64_t out, int bias)
{
    add2(l, p, "weight", 2, out, in, 0, 0);
    if (bias) add2(l, p, "bias", 1, out, 0, 0, 0);
}

/* A ResNet block ci -> co with the time embedding of width T. */
static void resnet(layout *l, const char *p, uint64_t ci, uint64_t co, uint64_t T)
{
    char q[NAME_LEN];
    snprintf(q, sizeof q, "%s.norm1", p), norm(l, q, ci);
    snprintf(q, sizeof q, "%s.conv1", p), conv(l, q, ci, co, 3);
    snprintf(q, sizeof q, "%s.time_emb_proj", p), linear(l, q, T, co, 1);
    snprintf(q, sizeof q, "%s.norm2", p), norm(l, q, co);
    snprintf(q, sizeof q, "%s.conv2", p), conv(l, q, co, co, 3);
    if (ci != co) snprintf(q, sizeof q, "%s.conv_shortcut", p), conv(l, q, ci, co, 1);
}

/* A Transformer2D block of c channels with one BasicTransformerBlock (cross dim x). */
static void transformer(layout *l, const char *p, uint64_t c, uint64_t x)
{
    char q[NAME_LEN];
    snprintf(q, sizeof q, "%s.norm", p), norm(l, q, c);
    snprintf(q, sizeof q, "%s.proj_in", p), conv(l, q, c, c, 1);
    snprintf(q, sizeof q, "%s.proj_out", p), conv(l, q, c, c, 1);
    static const char *const norms[3] = {"norm1", "norm2", "norm3"}, *const attn[2] = {"attn1", "attn2"};
    for (int k = 0; k < 3; k++) snprintf(q, sizeof q, "%s.transformer_blocks.0.%s", p, norms[k]), norm(l, q, c);
    for (int a = 0; a < 2; a++) {
        uint64_t kv = a ? x : c;
        snprintf(q, sizeof q, "%s.transformer_blocks.0.%s.to_q", p, attn[a]), linear(l, q, c, c, 0);
        snprintf(q, sizeof q, "%s.transformer_blocks.0.%s.to_k", p, attn[a]), linear(l, q, kv, c, 0);
        snprintf(q, sizeof q, "%s.transformer_blocks.0.%s.to_v", p, attn[a]), linear(l, q, kv, c, 0);
        snprintf(q, sizeof q, "%s.transformer_blocks.0.%s.to_out.0", p, attn[a]), linear(l, q, c, c, 1);
    }
    snprintf(q, sizeof q, "%s.transformer_blocks.0.ff.net.0.proj", p), linear(l, q, c, 8 * c, 1);
    snprintf(q, sizeof q, "%s.transformer_blocks.0.ff.net.2", p), linear(l, q, 4 * c, c, 1);
}

/* SD 1.5's UNet: the tensors in diffusers' names. */
static void sd15(layout *l)
{
    static const uint64_t boc[4] = {320, 640, 1280, 1280};
    const uint64_t T = 4 * boc[0], X = 768;
    char p[NAME_LEN];
    conv(l, "conv_in", 4, boc[0], 3);
    linear(l, "time_embedding.linear_1", boc[0], T, 1);
    linear(l, "time_embedding.linear_2", T, T, 1);
    uint64_t ch = boc[0];
    for (int i = 0; i < 4; i++) {
        for (int j = 0; j < 2; j++) {
            snprintf(p, sizeof p, "down_blocks.%d.resnets.%d", i, j), resnet(l, p, j ? boc[i] : ch, boc[i], T);
            if (i < 3) snprintf(p, sizeof p, "down_blocks.%d.attentions.%d", i, j), transformer(l, p, boc[i], X);
        }
        if (i < 3) snprintf(p, sizeof p, "down_blocks.%d.downsamplers.0.conv", i), conv(l, p, boc[i], boc[i], 3);
        ch = boc[i];
    }
    resnet(l, "mid_block.resnets.0", 1280, 1280, T);
    transformer(l, "mid_block.attentions.0", 1280, X);
    resnet(l, "mid_block.resnets.1", 1280, 1280, T);
    static const uint64_t rev[4] = {1280, 1280, 640, 320};
    uint64_t prev = rev[0];
    for (int i = 0; i < 4; i++) {
        uint64_t co = rev[i], cin = rev[i + 1 < 4 ? i + 1 : 3];
        for (int j = 0; j < 3; j++) {
            uint64_t skip = j == 2 ? cin : co, rin = j == 0 ? prev : co;
            snprintf(p, sizeof p, "up_blocks.%d.resnets.%d", i, j), resnet(l, p, rin + skip, co, T);
            if (i > 0) snprintf(p, sizeof p, "up_blocks.%d.attentions.%d", i, j), transformer(l, p, co, X);
        }
        if (i < 3) snprintf(p, sizeof p, "up_blocks.%d.upsamplers.0.conv", i), conv(l, p, co, co, 3);
        prev = co;
    }
    norm(l, "conv_norm_out", boc[0]);
    conv(l, "conv_out", boc[0], 4, 3);
}

static const char SD15_CONFIG[] =
    "{\n  \"_class_name\": \"UNet2DConditionModel\",\n  \"_diffusers_version\": \"0.27.2\",\n  \"act_fn\": \"silu\",\n"
    "  \"attention_head_dim\": 8,\n  \"block_out_channels\": [320, 640, 1280, 1280],\n  \"center_input_sample\": false,\n"
    "  \"cross_attention_dim\": 768,\n  \"down_block_types\": [\"CrossAttnDownBlock2D\", \"CrossAttnDownBlock2D\", "
    "\"CrossAttnDownBlock2D\", \"DownBlock2D\"],\n  \"downsample_padding\": 1,\n  \"flip_sin_to_cos\": true,\n"
    "  \"freq_shift\": 0,\n  \"in_channels\": 4,\n  \"layers_per_block\": 2,\n  \"mid_block_scale_factor\": 1,\n"
    "  \"norm_eps\": 1e-05,\n  \"norm_num_groups\": 32,\n  \"out_channels\": 4,\n  \"sample_size\": 64,\n"
    "  \"up_block_types\": [\"UpBlock2D\", \"CrossAttnUpBlock2D\", \"CrossAttnUpBlock2D\", \"CrossAttnUpBlock2D\"]\n}\n";

int it_bench_unet_write(const char *dir, int f16, uint64_t *params, it_err *err)
{
    layout l = {0};
    l.name = calloc(MAX_TENSORS, sizeof *l.name);
    l.shape = calloc(MAX_TENSORS, sizeof *l.shape);
    l.ndim = calloc(MAX_TENSORS, sizeof *l.ndim);
    it_tensor *t = calloc(MAX_TENSORS, sizeof *t);
    int rc = l.name && l.shape && l.ndim && t ? IT_OK : it__fail(err, IT_ENOMEM, "out of memory");
    if (rc == IT_OK) sd15(&l);
    if (rc == IT_OK && l.oom) rc = it__fail(err, IT_ENOMEM, "bench unet: too many tensors");
    uint64_t largest = 0, total = 0;
    for (size_t i = 0; rc == IT_OK && i < l.n; i++) {
        uint64_t n = 1;
        for (size_t k = 0; k < l.ndim[i]; k++) n *= l.shape[i][k];
        largest = n > largest ? n : largest;
        total += n;
    }
    size_t es = f16 ? 2 : 4, pool_n = (size_t)(2 * largest);
    unsigned char *pool = rc == IT_OK ? it__malloc_n(pool_n, es) : NULL;
    if (rc == IT_OK && !pool) rc = it__fail(err, IT_ENOMEM, "bench unet: out of memory for the weights pool");
    uint64_t s = 20251124u;
    for (size_t i = 0; rc == IT_OK && i < pool_n; i++) { /* uniform on [-a, a], a = 0.02 sqrt(3): std 0.02 */
        float v = (float)(((double)(it__splitmix64(&s) >> 11) * 0x1p-53 * 2.0 - 1.0) * 0.034641016);
        rc = it_f32_encode(pool + i * es, f16 ? IT_F16 : IT_F32, &v, 1, err); /* little-endian on any host */
    }
    for (size_t i = 0; rc == IT_OK && i < l.n; i++) {
        uint64_t n = 1;
        for (size_t k = 0; k < l.ndim[i]; k++) n *= l.shape[i][k];
        size_t off = (size_t)(it__splitmix64(&s) % (pool_n - n + 1));
        t[i] = (it_tensor){l.name[i], f16 ? IT_F16 : IT_F32, l.ndim[i], l.shape[i], n, (size_t)n * es,
                           pool + off * es, 0, 0};
    }
    char *cfg = rc == IT_OK ? it__path_join(dir, "config.json") : NULL;
    char *wts = rc == IT_OK ? it__path_join(dir, "diffusion_pytorch_model.safetensors") : NULL;
    if (rc == IT_OK && (!cfg || !wts)) rc = it__fail(err, IT_ENOMEM, "out of memory");
    if (rc == IT_OK) rc = it_write_text(cfg, SD15_CONFIG, err);
    if (rc == IT_OK) rc = it_st_save(wts, t, l.n, NULL, NULL, 0, err);
    if (rc == IT_OK && params) *params = total;
    free(cfg), free(wts), free(pool), free(t), free(l.name), free(l.shape), free(l.ndim);
    return rc;
}
