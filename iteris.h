/* iteris.h -- IterIS LoRA merging in plain C11 (libc, libm, POSIX threads).
 *
 * IterIS (Chen et al., "IterIS: Iterative Inference-Solving Alignment for LoRA Merging", CVPR 2025,
 * arXiv 2411.15231) merges N LoRA adapters of one base model into one adapter, using a few unlabeled
 * samples per task: run the model, record the inputs of every LoRA-targeted layer, solve a regularised
 * least-squares problem per layer in closed form, re-run the merged model to refresh those inputs, repeat.
 *
 * This header is the whole public API. Conventions (see STYLE.md in the design notes):
 *   - every name starts with it_ (types, functions) or IT_ (constants);
 *   - a function returns an int status, IT_OK (0) or one of the IT_E* codes below, and never prints
 *     or exits; when it fails it fills the caller's it_err (which may be NULL) with a one-line message
 *     naming the file, tensor or key and what was expected;
 *   - objects come in *_open / *_load and *_close / *_free pairs, and *_close(NULL) does nothing;
 *   - views (it_tensor, it_json) point into memory owned by the handle they came from and are valid
 *     until that handle is closed.
 *
 * Usage: list the tensors of a checkpoint and convert one to float32.
 *
 *     it_err err;
 *     it_st *st;
 *     if (it_st_open(&st, "model.safetensors", &err) != IT_OK) {
 *         fprintf(stderr, "%s\n", err.msg);          // e.g. "model.safetensors: ... (InvalidOffset)"
 *         return 1;
 *     }
 *     for (size_t i = 0; i < it_st_count(st); i++) {
 *         const it_tensor *t = it_st_tensor(st, i);  // sorted by name
 *         printf("%s %s %llu elements\n", t->name, it_dtype_name(t->dtype), (unsigned long long)t->numel);
 *     }
 *     const it_tensor *w = it_st_find(st, "lm_head.weight");
 *     float *f = w ? malloc(w->numel * sizeof *f) : NULL;
 *     if (f && it_tensor_to_f32(w, f, &err) == IT_OK) { ... }
 *     free(f);
 *     it_st_close(st);
 */
#ifndef ITERIS_H
#define ITERIS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define IT_VERSION "0.1.0"

/* ============================================================================================ */
/* Status codes and error messages                                                               */
/* ============================================================================================ */

enum {
    IT_OK = 0,
    IT_ENOMEM,       /* out of memory, or a size computation that would overflow */
    IT_EIO,          /* a file could not be opened, read, written or renamed */
    IT_EFORMAT,      /* malformed input; the message names the file and the rule it breaks */
    IT_EINVAL,       /* an invalid argument or option */
    IT_ENOTFOUND,    /* a named file, tensor or key is absent */
    IT_EUNSUPPORTED, /* well-formed input that this version does not handle */
    IT_ENOTSPD       /* a matrix that should be symmetric positive definite is not */
};

#define IT_ERR_MAX 512

/* The error record filled by a failing call: the same code the call returns and a one-line,
 * NUL-terminated message without a trailing newline. */
typedef struct it_err {
    int code;
    char msg[IT_ERR_MAX];
} it_err;

/* A short, static description of a status code ("malformed input", ...). */
const char *it_strerror(int code);

/* ============================================================================================ */
/* JSON (json.c): a strict RFC 8259 parser                                                       */
/* ============================================================================================ */
/*
 * Accepts exactly RFC 8259 JSON text: one value with optional surrounding whitespace (space, tab,
 * LF, CR). Refuses: invalid UTF-8 anywhere (overlong forms, UTF-16 surrogates encoded in UTF-8,
 * code points above U+10FFFF), a byte order mark, control characters in strings, bad escapes, lone
 * or mismatched \u surrogates, leading zeros, "+1", ".5", "1.", NaN/Infinity, numbers whose
 * magnitude overflows a double, trailing commas, comments, and nesting deeper than
 * IT_JSON_MAX_DEPTH arrays/objects (so a megabyte of '[' is an error, not a stack overflow).
 * Every error message starts with "at byte N:" (N counted from 0 in the given text).
 *
 * Numbers follow serde_json (which the safetensors reference reader uses): an integer literal (no
 * fraction, no exponent) in [-2^63, 2^64) is IT_JSON_INT and kept exact, except "-0", which is the
 * float -0.0; every other number is IT_JSON_NUM. Both carry their value as a double in d.
 */
#define IT_JSON_MAX_DEPTH 128

typedef enum {
    IT_JSON_NULL,
    IT_JSON_FALSE,
    IT_JSON_TRUE,
    IT_JSON_INT, /* integer literal; exact in i (when i_ok) and in u (when u_ok) */
    IT_JSON_NUM, /* any other number: d */
    IT_JSON_STR, /* s, len */
    IT_JSON_ARR, /* items[n] */
    IT_JSON_OBJ  /* keys[n], keylens[n], items[n], in document order */
} it_json_type;

typedef struct it_json it_json;
struct it_json {
    it_json_type type;
    size_t pos;            /* byte offset of the value's first character in the text */
    int64_t i;             /* INT: the value, when i_ok */
    uint64_t u;            /* INT: the value, when u_ok (non-negative) */
    int i_ok, u_ok;        /* INT: whether the value fits int64 / uint64 */
    double d;              /* INT and NUM: the value as a double (correctly rounded) */
    const char *s;         /* STR: UTF-8 bytes, NUL-terminated (may also contain NUL) */
    size_t len;            /* STR: byte length, without the terminating NUL */
    size_t n;              /* ARR, OBJ: number of items */
    it_json *items;        /* ARR, OBJ: the values [n] */
    const char **keys;     /* OBJ: the keys [n], NUL-terminated */
    const size_t *keylens; /* OBJ: byte length of each key [n] */
    const size_t *keypos;  /* OBJ: byte offset of each key's opening quote [n] */
    size_t ndup;           /* OBJ: how many keys repeat an earlier key of this object (0 = none) */
};

typedef struct it_json_doc it_json_doc;

enum {
    IT_JSON_NODUP = 1 /* refuse an object in which a key appears twice (the error names it) */
};

/* Parses text[0..len). On success *out owns every node; free it with it_json_free. */
int it_json_parse(it_json_doc **out, const void *text, size_t len, unsigned flags, it_err *err);
const it_json *it_json_root(const it_json_doc *doc);
void it_json_free(it_json_doc *doc);

/* The value of the first member named key (compared bytewise, key NUL-terminated), or NULL when
 * obj is NULL, not an object, or has no such member. */
const it_json *it_json_get(const it_json *obj, const char *key);
/* Describes a value for a message, in buf[size]: "null", "true", "-3", "2.5", "64.0", "a string",
 * "an array", "an object". */
void it_json_describe(const it_json *v, char *buf, size_t size);

/* A static name for a type: "null", "false", "true", "integer", "number", "string", "array",
 * "object". */
const char *it_json_type_name(it_json_type type);

/* ============================================================================================ */
/* Element types (safetensors.c)                                                                 */
/* ============================================================================================ */

/* The dtypes of the safetensors format, in the order of the reference's Dtype enum: the reference
 * writer lays tensors out by this order, descending, then by name. */
typedef enum {
    IT_BOOL,
    IT_F4,          /* OCP MXFP4 e2m1, 4 bits */
    IT_F6_E2M3,     /* 6 bits */
    IT_F6_E3M2,     /* 6 bits */
    IT_U8,
    IT_I8,
    IT_F8_E5M2,     /* OCP fp8, with inf */
    IT_F8_E4M3,     /* OCP fp8 "fn": no inf, 0x7f/0xff are NaN */
    IT_F8_E8M0,     /* OCP MX scale: 2^(e-127), 0xff is NaN */
    IT_F8_E4M3FNUZ, /* AMD fp8: bias 8, no inf, no -0, 0x80 is NaN */
    IT_F8_E5M2FNUZ, /* AMD fp8: bias 16, no inf, no -0, 0x80 is NaN */
    IT_I16,
    IT_U16,
    IT_F16,
    IT_BF16,
    IT_I32,
    IT_U32,
    IT_F32,
    IT_C64,         /* complex: two f32 */
    IT_F64,
    IT_I64,
    IT_U64,
    IT_DTYPE_COUNT
} it_dtype;

const char *it_dtype_name(it_dtype dtype);                        /* "F32", ...; "?" if invalid */
int it_dtype_from_name(const char *name, size_t len, it_dtype *out); /* IT_OK or IT_ENOTFOUND */
int it_dtype_bits(it_dtype dtype);                                 /* bits per element */

/* Scalar conversions, exact or correctly rounded (round to nearest, ties to even). */
float it_f16_to_f32(uint16_t h);
float it_bf16_to_f32(uint16_t b);
uint16_t it_f32_to_f16(float f);  /* overflow gives inf; NaN stays NaN */
uint16_t it_f32_to_bf16(float f); /* NaN stays (quiet) NaN */
float it_f8_to_f32(it_dtype dtype, uint8_t v); /* any of the five 8-bit float dtypes */

/* ============================================================================================ */
/* safetensors (safetensors.c)                                                                   */
/* ============================================================================================ */

/* One tensor: a view into a file mapping (reading) or into the caller's memory (writing). */
typedef struct it_tensor {
    const char *name;
    it_dtype dtype;
    size_t ndim;
    const uint64_t *shape; /* [ndim]; ndim 0 is a scalar with one element */
    uint64_t numel;        /* product of shape */
    size_t nbytes;         /* numel * bits / 8 */
    const void *data;      /* [nbytes] little-endian, row-major, no alignment guaranteed */
    size_t file;           /* reading: index of the file (shard) that holds it */
    uint64_t begin;        /* reading: data_offsets[0], relative to that file's byte buffer */
} it_tensor;

typedef struct it_st it_st;

/* Opens a .safetensors file (memory-mapped; read into memory where mmap is not possible) or a
 * sharded checkpoint through its *.safetensors.index.json, whose shards are opened as one set.
 * Every rule of the reference reader is enforced, in its order; a broken rule is IT_EFORMAT with
 * the message "<file>: <what> (<reference error name>)", e.g. "(InvalidOffset)". Duplicate tensor
 * names are refused. */
int it_st_open(it_st **out, const char *path, it_err *err);

/* The same on an in-memory file image; buf is not copied and must outlive the handle. name is
 * used in messages. */
int it_st_open_mem(it_st **out, const void *buf, size_t len, const char *name, it_err *err);

void it_st_close(it_st *st);

size_t it_st_count(const it_st *st);
const it_tensor *it_st_tensor(const it_st *st, size_t i);     /* i < count, sorted by name */
const it_tensor *it_st_find(const it_st *st, const char *name); /* NULL if absent */

/* __metadata__: has_meta tells whether the key was present (an empty map counts); entries are in
 * document order (for a sharded set: the union over shards, first occurrence wins). */
int it_st_has_meta(const it_st *st);
size_t it_st_meta_count(const it_st *st);
void it_st_meta_at(const it_st *st, size_t i, const char **key, const char **value);
const char *it_st_meta_get(const it_st *st, const char *key); /* NULL if absent */

size_t it_st_file_count(const it_st *st);           /* 1, or the number of shards */
const char *it_st_file_path(const it_st *st, size_t i);

/* Converts a tensor to float32 (out has numel elements). Every float and integer dtype converts
 * (integers and F64 rounded to nearest); C64, F4 and F6 are IT_EUNSUPPORTED. */
int it_tensor_to_f32(const it_tensor *t, float *out, it_err *err);

/* Encodes n float32 values as dtype (F32, F64, F16 or BF16; others IT_EUNSUPPORTED) into dst,
 * little-endian. */
int it_f32_encode(void *dst, it_dtype dtype, const float *src, size_t n, it_err *err);

/* Writes tensors[0..n) to path exactly as the reference writer lays them out: tensors sorted by
 * dtype (descending enum order) then name, compact JSON header padded with spaces to a multiple of
 * 8 bytes. Only name, dtype, ndim, shape, data and nbytes of each tensor are used; nbytes must
 * match dtype and shape. meta_keys/meta_values hold nmeta entries, written in that order; with
 * meta_keys NULL the header has no __metadata__ at all. The file is written under a temporary
 * name in the same folder and renamed over path only when complete. */
int it_st_save(const char *path, const it_tensor *tensors, size_t n, const char *const *meta_keys,
               const char *const *meta_values, size_t nmeta, it_err *err);

/* ============================================================================================ */
/* Linear algebra (linalg.c, linalg_<isa>.c, thread.c)                                           */
/* ============================================================================================ */
/*
 * Matrices are row-major with a leading dimension (the distance between rows, in elements).
 * Every optimised routine has a naive twin (suffix _naive) with the same contract: the tests'
 * oracle. Work is split between threads by output blocks only, so every result is bit-identical
 * for any thread count. The micro-kernels are chosen at the first call from CPUID (AVX-512F,
 * AVX2+FMA, NEON, or portable C), or forced with the environment variable IT_ARCH=generic|avx2|
 * avx512|neon or it_set_kernels.
 */
#define IT_MAX_THREADS 256

/* Threads used by the library: ITERIS_THREADS, else all online CPUs, until set here. */
int it_set_threads(int n); /* IT_EINVAL outside [1, IT_MAX_THREADS] */
int it_get_threads(void);

/* The kernel set in use ("avx512", "avx2", "neon", "generic"), and a way to force one:
 * IT_EUNSUPPORTED when this CPU or build lacks it. */
const char *it_kernels(void);
int it_set_kernels(const char *name);

typedef enum { IT_N = 0, IT_T = 1 } it_op; /* op(X) = X or X^T */

/* C = alpha op(A) op(B) + beta C with C [m x n], op(A) [m x k], op(B) [k x n]; A is stored
 * [m x k] (IT_N) or [k x m] (IT_T), B likewise. With beta = 0, C is only written (NaNs in C do
 * not propagate). IT_OK, or IT_ENOMEM when the packing buffers cannot be allocated. */
int it_sgemm(it_op ta, it_op tb, size_t m, size_t n, size_t k, float alpha, const float *A, size_t lda,
             const float *B, size_t ldb, float beta, float *C, size_t ldc);
int it_dgemm(it_op ta, it_op tb, size_t m, size_t n, size_t k, double alpha, const double *A, size_t lda,
             const double *B, size_t ldb, double beta, double *C, size_t ldc);
/* Naive twins; it_sgemm_naive accumulates in double. */
void it_sgemm_naive(it_op ta, it_op tb, size_t m, size_t n, size_t k, float alpha, const float *A, size_t lda,
                    const float *B, size_t ldb, float beta, float *C, size_t ldc);
void it_dgemm_naive(it_op ta, it_op tb, size_t m, size_t n, size_t k, double alpha, const double *A, size_t lda,
                    const double *B, size_t ldb, double beta, double *C, size_t ldc);

/* Statistics over row blocks (DESIGN.md section 1), accumulated in double:
 *   it_gram:       G [d x d] += X^T X, X [rows x d]; only the upper triangle (j >= i) of G is
 *                  updated, the strict lower triangle is not touched;
 *   it_gram_cross: C [d1 x d2] += X^T Y, X [rows x d1], Y [rows x d2] (same rows).
 * IT_OK or IT_ENOMEM. */
int it_gram(double *G, size_t ldg, const float *X, size_t ldx, size_t rows, size_t d);
int it_gram_cross(double *C, size_t ldc, const float *X, size_t ldx, const float *Y, size_t ldy, size_t rows,
                  size_t d1, size_t d2);
void it_gram_naive(double *G, size_t ldg, const float *X, size_t ldx, size_t rows, size_t d);
void it_gram_cross_naive(double *C, size_t ldc, const float *X, size_t ldx, const float *Y, size_t ldy,
                         size_t rows, size_t d1, size_t d2);

/* Cholesky A = L L^T of a symmetric positive definite A [n x n]: reads the lower triangle, writes
 * L there; the strict upper triangle is not touched. IT_ENOTSPD if a pivot is not positive (or
 * not finite): *pivot (if not NULL) is its 0-based index, and A is partly overwritten; IT_ENOMEM. */
int it_dpotrf(double *A, size_t lda, size_t n, size_t *pivot);
int it_dpotrf_naive(double *A, size_t lda, size_t n, size_t *pivot);

/* Triangular solves with many right-hand sides, L [n x n] lower triangular (upper triangle not
 * read), overwriting B with X:
 *   it_dtrsm_left:  op(L) X = B, B [n x m];
 *   it_dtrsm_right: X op(L) = B, B [m x n].
 * IT_OK or IT_ENOMEM. A zero on the diagonal of L gives infinities, as in LAPACK. */
int it_dtrsm_left(it_op op, size_t n, size_t m, const double *L, size_t ldl, double *B, size_t ldb);
int it_dtrsm_right(it_op op, size_t m, size_t n, const double *L, size_t ldl, double *B, size_t ldb);
void it_dtrsm_left_naive(it_op op, size_t n, size_t m, const double *L, size_t ldl, double *B, size_t ldb);
void it_dtrsm_right_naive(it_op op, size_t m, size_t n, const double *L, size_t ldl, double *B, size_t ldb);

/* X = P Q^-1 for Q [n x n] symmetric positive definite and P [m x n]: P is overwritten by X and
 * the lower triangle of Q by its Cholesky factor. IT_ENOTSPD as it_dpotrf. */
int it_dposv_right(double *Q, size_t ldq, size_t n, double *P, size_t ldp, size_t m, size_t *pivot);

/* Truncated SVD W ~ U diag(S) Vt of W [m x n] at rank r <= min(m, n): U [m x r], S [r]
 * (descending, >= 0), Vt [r x n], with orthonormal columns of U and rows of Vt; *energy (if not
 * NULL) = sum(S^2) / ||W||_F^2, the retained energy (1 when W = 0). Accurate to the Eckart-Young
 * optimum: small matrices by one-sided Jacobi, large ones by subspace iteration from a seeded
 * random start until the retained energy converges. */
int it_svd(const double *W, size_t m, size_t n, size_t r, double *U, double *S, double *Vt, double *energy,
           uint64_t seed, it_err *err);
/* The full SVD by one-sided Jacobi (the oracle): U [m x k], S [k], Vt [k x n], k = min(m, n). */
int it_svd_jacobi(const double *W, size_t m, size_t n, double *U, double *S, double *Vt, it_err *err);

/* Benchmarks (bench.c): one routine ("sgemm", "dgemm", "gram", "dpotrf" (f64 Cholesky), "svd")
 * at size n, on it_get_threads() threads; the fastest of several runs. */
typedef struct it_bench_result {
    const char *routine;
    size_t n;
    int threads;
    double gflops, seconds;
} it_bench_result;

int it_bench(const char *routine, size_t n, it_bench_result *out, it_err *err);

/* `iteris bench unet` (bench_unet.c): writes into the existing folder dir a UNet2DConditionModel of
 * Stable Diffusion 1.5's sizes (config.json + diffusion_pytorch_model.safetensors, F32 or F16)
 * with seeded random weights; *params gets their number (859,520,964). */
int it_bench_unet_write(const char *dir, int f16, uint64_t *params, it_err *err);

/* ============================================================================================ */
/* Model and adapter configuration (model.c, lora.c)                                             */
/* ============================================================================================ */

typedef enum {
    IT_ARCH_UNKNOWN,
    IT_ARCH_LLAMA, /* Llama family: llama, mistral, qwen2 (model_type kept in it_config) */
    IT_ARCH_T5,
    IT_ARCH_CLIP,
    IT_ARCH_UNET   /* diffusers UNet2DConditionModel */
} it_arch;

#define IT_NAME_MAX 64

/* The sizes of a model, read from its config.json. Fields that do not apply are 0 (or ""). The
 * struct describes the file: settings a forward pass may not implement (scaled RoPE, per-block UNet
 * head counts) are recorded here, and each forward pass checks the fields it needs. */
typedef struct it_config {
    it_arch arch;
    char model_type[IT_NAME_MAX];   /* "llama", "qwen2", "t5", "clip", "unet" ... */
    char class_name[IT_NAME_MAX];   /* architectures[0] or _class_name */
    /* transformers (Llama family, T5, CLIP text tower) */
    int64_t vocab_size;
    int64_t hidden;                 /* hidden_size / d_model */
    int64_t intermediate;           /* intermediate_size / d_ff */
    int64_t layers;                 /* num_hidden_layers / num_layers */
    int64_t decoder_layers;         /* T5 */
    int64_t heads;
    int64_t kv_heads;               /* Llama GQA */
    int64_t head_dim;
    int64_t max_position_embeddings; /* Llama family, CLIP text tower (reference default when absent) */
    double norm_eps;                /* CLIP: the text tower's */
    char act[IT_NAME_MAX];          /* hidden_act / dense_act_fn; CLIP: the text tower's */
    int gated;                      /* T5 is_gated_act */
    int64_t rel_buckets;            /* T5 relative_attention_num_buckets (32) */
    int64_t rel_max_distance;       /* T5 relative_attention_max_distance (128) */
    int64_t decoder_start_token_id; /* T5 (its config files set 0, the pad id); -1 when absent */
    int64_t eos_token_id;           /* T5: stops greedy decoding; CLIP text: chooses the pooling (FACTS 6.4) */
    int64_t num_channels;           /* CLIP vision tower (3) */
    int tie_word_embeddings;
    int attention_bias, mlp_bias;
    /* RoPE (Llama family, FACTS 4.4), from rope_scaling or v5 rope_parameters (which wins) */
    double rope_theta;
    char rope_type[IT_NAME_MAX];    /* "default", "linear", "dynamic", "llama3", "yarn", ... as written */
    double rope_factor;             /* factor; 0 when absent */
    double rope_low_freq_factor;    /* llama3 low_freq_factor; 0 when absent */
    double rope_high_freq_factor;   /* llama3 high_freq_factor; 0 when absent */
    int64_t rope_original_max_pos;  /* original_max_position_embeddings; 0 when absent */
    double rope_attention_factor;   /* yarn / longrope attention_factor; 0 when absent */
    double partial_rotary_factor;   /* in (0, 1]; 1 when absent */
    /* CLIP vision tower and projection */
    int64_t vision_hidden, vision_intermediate, vision_layers, vision_heads;
    int64_t image_size, patch_size, projection_dim;
    char vision_act[IT_NAME_MAX];   /* the vision tower's hidden_act */
    double vision_norm_eps;         /* the vision tower's layer_norm_eps */
    /* UNet */
    int64_t in_channels, out_channels, sample_size, layers_per_block, cross_attention_dim;
    int64_t norm_groups;
    int64_t attention_head_dim;     /* block 0's entry of attention_head_dims */
    int use_linear_projection;      /* proj_in / proj_out are Linear (SD2.x), not 1x1 Conv2d */
    int64_t nblocks;                /* number of entries of block_out_channels, 1 to 8 */
    int64_t block_out_channels[8];  /* [nblocks] */
    int64_t attention_head_dims[8]; /* [nblocks] heads per block (diffusers' attention_head_dim) */
    int64_t transformer_layers[8];  /* [nblocks] transformer_layers_per_block */
} it_config;

/* Reads config.json (path may be the file or the folder that holds it). */
int it_config_load(it_config *cfg, const char *path, it_err *err);

/* A one-line human description of a configuration ("llama (LlamaForCausalLM): hidden 64, ..."). */
void it_config_describe(const it_config *cfg, char *buf, size_t size);

/* One entry of rank_pattern or alpha_pattern: a PEFT pattern key and its value. */
typedef struct it_lora_pattern {
    char *key;
    double value;
} it_lora_pattern;

/* The fields of a PEFT adapter_config.json that decide what an adapter does. Strings and arrays
 * are owned by the struct: release them with it_lora_config_free. */
typedef struct it_lora_config {
    char peft_type[IT_NAME_MAX];    /* "LORA" */
    char task_type[IT_NAME_MAX];    /* "CAUSAL_LM", ... or "" */
    char bias[IT_NAME_MAX];         /* "none", "all", "lora_only" */
    int64_t r;
    double lora_alpha;
    int use_rslora, use_dora, fan_in_fan_out, lora_bias;
    char *target_regex;             /* target_modules given as one string (a regex), or NULL */
    size_t ntargets;
    char **targets;                 /* target_modules given as a list [ntargets] */
    char *exclude_regex;            /* exclude_modules as a string, or NULL */
    size_t nexclude;
    char **exclude;                 /* exclude_modules as a list [nexclude] */
    size_t nlayers;
    int64_t *layers_to_transform;   /* [nlayers]; none when 0 */
    size_t nlayers_pattern;
    char **layers_pattern;          /* [nlayers_pattern] */
    size_t nmodules_to_save;
    char **modules_to_save;         /* [nmodules_to_save] */
    size_t nrank_pattern;
    it_lora_pattern *rank_pattern;  /* [nrank_pattern], in file order */
    size_t nalpha_pattern;
    it_lora_pattern *alpha_pattern; /* [nalpha_pattern], in file order */
    char *base_model;               /* base_model_name_or_path, or NULL (informational) */
} it_lora_config;

/* Reads adapter_config.json (path may be the file or the adapter folder). On failure *cfg holds
 * nothing that needs freeing. */
int it_lora_config_load(it_lora_config *cfg, const char *path, it_err *err);
/* The same from text in memory; name stands for the file in messages. With strict, also what
 * it_adapter_load refuses (DoRA, lora_bias, PiSSA-style initialisation, ...: not a plain delta). */
int it_lora_config_parse(it_lora_config *cfg, const char *name, const char *text, size_t len, int strict, it_err *err);
void it_lora_config_free(it_lora_config *cfg); /* frees the members; NULL is harmless */

/* A one-line human description ("LoRA r 4, alpha 16 (scale 4), targets q_proj, ..."). */
void it_lora_config_describe(const it_lora_config *cfg, char *buf, size_t size);


/* ============================================================================================ */
/* Adapters (lora.c, lora_files.c): PEFT folders, kohya and diffusers Stable Diffusion files    */
/* ============================================================================================ */

typedef enum {
    IT_ADAPTER_PEFT,      /* a folder: adapter_config.json + adapter_model.safetensors (keys with or without
                           * "base_model.model.", as transformers' load_adapter takes them) */
    IT_ADAPTER_KOHYA,     /* one .safetensors: lora_unet_* / lora_te_* with lora_down / lora_up / alpha */
    IT_ADAPTER_DIFFUSERS  /* one .safetensors in diffusers' own namings (unet.* / text_encoder.*) */
} it_adapter_format;

typedef enum {
    IT_LORA_LINEAR,       /* nn.Linear (or HF Conv1D with fan_in_fan_out) */
    IT_LORA_CONV1X1,      /* nn.Conv2d with a 1x1 kernel: a per-pixel linear on the channels */
    IT_LORA_EMBEDDING     /* nn.Embedding: lora_embedding_A [r, num_embeddings], _B [dim, r] */
} it_lora_kind;

/* One adapted module, always in the linear view: the delta is dW = scale * B A, [d_out x d_in],
 * acting as y = x dW^T on input rows x [d_in]. For an embedding d_in is the number of embeddings
 * and d_out the embedding size (the base tensor is [d_in, d_out]: transposed is 1); for a
 * fan_in_fan_out module the base tensor is stored [d_in, d_out] as well. */
typedef struct it_lora_module {
    char *name;           /* module path in its model ("model.layers.0.self_attn.q_proj"); for a
                           * kohya module not yet resolved, its kohya name ("lora_unet_..._to_q") */
    char component[16];   /* "" for a PEFT folder (one model); "unet", "text_encoder",
                           * "text_encoder_2" for Stable Diffusion files */
    it_lora_kind kind;
    int transposed;       /* the base weight is stored [d_in, d_out] (fan_in_fan_out, embeddings) */
    int64_t d_out, d_in, r;
    double alpha, scale;  /* scale = alpha / r, or alpha / sqrt(r) with use_rslora; a diffusers component with
                           * neither alphas nor lora_adapter_metadata has diffusers' alpha, the rank of its
                           * first lora_B, so scale first_r / r where ranks differ */
    float *A;             /* [r x d_in], row-major, converted to f32 */
    float *B;             /* [d_out x r] */
} it_lora_module;

typedef struct it_adapter {
    char *path;           /* as given */
    it_adapter_format format;
    int has_config;       /* cfg was read from adapter_config.json (PEFT) */
    it_lora_config cfg;   /* zeroed when has_config is 0 */
    size_t n;
    it_lora_module *mods; /* [n], sorted by (component, name) */
    size_t nwarn;
    char **warn;          /* [nwarn] one-line notes (tensors ignored as PEFT ignores them, modules where peft
                           * 0.10's rules give another selection, rank or alpha than current peft's, ...) */
} it_adapter;

/* Reads an adapter: a PEFT folder (or its adapter_config.json), or one .safetensors file in kohya
 * or diffusers naming. Validates what can be validated without the base model (shapes of A and B
 * agree, r matches the configuration, no DoRA, no lora_bias, no LyCORIS, ...). Only plain deltas on
 * the unchanged base are read: IT_EUNSUPPORTED, naming the key, for PiSSA / OLoRA / CorDA / LoftQ
 * initialisations, QALoRA, aLoRA, target_parameters, layer_replication, saved embedding copies and
 * trainable tokens. PEFT rules are current peft's (lazy layer-index regex, independent rank_pattern and
 * alpha_pattern lookups). A diffusers file's __metadata__ "lora_adapter_metadata" (flat
 * "<component>.<LoraConfig field>" keys) gives each component's r, lora_alpha, use_rslora and
 * patterns; keys of another component than unet, text_encoder and text_encoder_2 are IT_EUNSUPPORTED. */
int it_adapter_load(it_adapter **out, const char *path, it_err *err);
void it_adapter_free(it_adapter *a);

/* The module of that component and name, or NULL. */
const it_lora_module *it_adapter_find(const it_adapter *a, const char *component, const char *name);

/* Maps kohya names of one component ("unet", "text_encoder") to module paths, given the module
 * paths of that component's model (e.g. every tensor name ending in ".weight", without it): a kohya
 * name is "lora_unet_" / "lora_te_" + the path with every '.' replaced by '_' ("lora_te1_" is
 * text_encoder too, "lora_te2_" text_encoder_2); a UNet attention module may also be spelt as in the
 * original LDM / SGM checkpoints (input_blocks.<i>.1..., middle_block.1..., output_blocks.<i>.1...,
 * FACTS.md 7.4, with layers_per_block read off the paths' down_blocks.<d>.resnets.<j>). A kohya
 * module that names no module is IT_ENOTFOUND
 * naming it; one whose spelling fits two model paths, or two modules that come to name one path, are
 * IT_EFORMAT; another component is IT_EINVAL. On failure the adapter is unchanged. Modules already
 * resolved are left as they are; the modules are sorted again. */
int it_adapter_resolve(it_adapter *a, const char *component, const char *const *modules, size_t nmodules,
                       it_err *err);

/* Fits an adapter to one model: the modules of component (a Stable Diffusion file's "unet" or
 * "text_encoder" part, kohya names resolved against modules, the model's module paths, as
 * it_adapter_resolve does) become plain modules (component ""), as a PEFT folder's are; modules of
 * other components are dropped, with a note in warn naming the component and how many. component
 * "" or NULL keeps only the plain modules. Errors as it_adapter_resolve's. */
int it_adapter_select(it_adapter *a, const char *component, const char *const *modules, size_t nmodules,
                      it_err *err);

/* dW = scale * B A into delta [d_out x d_in] (row-major, linear view), accumulated in double. */
void it_lora_delta(const it_lora_module *m, double *delta);

/* PEFT's target rule (current peft's check_target_module_exists, FACTS.md 2.5) for a module path:
 * *out = 1 when cfg adapts it. IT_EFORMAT for a pattern this implementation cannot evaluate. */
int it_lora_targets(const it_lora_config *cfg, const char *module, int *out, it_err *err);

/* The rank and alpha PEFT gives a module (rank_pattern / alpha_pattern, FACTS.md 2.6), and the
 * scale that follows (alpha / r, or alpha / sqrt(r) with use_rslora). */
int it_lora_module_rank(const it_lora_config *cfg, const char *module, int64_t *r, double *alpha, double *scale,
                        it_err *err);


/* ============================================================================================ */
/* Models and their sites (model.c, model_<arch>.c)                                              */
/* ============================================================================================ */
/*
 * A model is loaded from a folder (config.json + safetensors, single or sharded; f32, f16 or bf16
 * on disk, computed in f32). Every linear layer is a site: a base weight W0 [d_out x d_in] (linear
 * view), an optional delta, and an observer that receives the site's input rows. Sites that read
 * the same input (q, k, v; gate, up) share a group; groups are numbered in execution order (the
 * sweep schedule's stages).
 */
typedef struct it_model it_model;
typedef struct it_sample it_sample; /* a calibration sample (below) */

/* A tensor named by reference in a samples file: {"file": .., "tensor": .., "index": k}. */
typedef struct it_tensor_ref {
    char *file;            /* resolved against the samples file's folder; NULL: not given */
    char *tensor;
    int64_t index;         /* one item of the first dimension, or -1: all of it */
} it_tensor_ref;

typedef struct it_model_site {
    const char *name;      /* module path as PEFT writes it: "model.layers.0.self_attn.q_proj" */
    int64_t d_out, d_in;
    size_t group;          /* sites with the same input share a group; groups in execution order */
    const float *w0;       /* [d_out x d_in] row-major f32 (mapped when the file holds f32) */
    const float *bias;     /* [d_out] or NULL */
} it_model_site;

/* A delta installed at a site: y = x W0^T + b + x dW^T, computed unmerged as PEFT does:
 * low-rank: + scale * (x A^T) B^T; dense: + x D^T. */
typedef struct it_delta {
    const float *A, *B;    /* low-rank: A [r x d_in], B [d_out x r] (NULL: dense or none) */
    int64_t r;
    double scale;
    const float *dense;    /* dense: D [d_out x d_in] */
} it_delta;

/* Called with the input rows of a site, x [nrows x d_in], before the site's product. Return 0 to
 * go on, 1 to stop the forward pass there (it then returns IT_OK and produces no output). */
typedef int (*it_observer)(void *ctx, size_t site, const float *x, size_t nrows, size_t d_in);

/* Loads the model folder dir (config.json + model.safetensors, model.safetensors.index.json, or the
 * folder's one *.safetensors). Llama family only for now (llama, mistral, qwen2; names with or
 * without "model."); other architectures, activations or rope types (yarn, longrope, partial
 * rotary) are IT_EUNSUPPORTED naming config.json; a missing tensor is IT_ENOTFOUND and a wrong shape
 * IT_EFORMAT, naming the file, the tensor and the expected shape. Sites are in execution order;
 * lm_head is the last (its w0 is embed_tokens when tied).
 *
 * A diffusers Stable Diffusion 1.x / 2.x pipeline folder (model_index.json naming a ...Pipeline
 * with unet UNet2DConditionModel and text_encoder CLIPTextModel, and no second text encoder;
 * unet/, text_encoder/, scheduler/scheduler_config.json, tokenizer/) loads as one model
 * (model_sd.c): its sites are the text encoder's, named "text_encoder.<path>", then the UNet's,
 * "unet.<path>" (the names of diffusers' LoRA files); groups: the text encoder's, then the UNet's.
 * Its config is the UNet's with class_name the pipeline's and model_type "stable-diffusion";
 * it_model_weights gives NULL (it has no checkpoint of its own) and it_model_component "unet"
 * (fit adapters with it_model_fit_adapter). It runs prompt samples ("input_ids", "seed",
 * ntimesteps; see it_sample) through the text encoder and the UNet, giving the UNet's "sample", or
 * a UNet's raw tensors through the UNet alone. */
int it_model_load(it_model **out, const char *dir, it_err *err);
void it_model_free(it_model *m);
const it_config *it_model_config(const it_model *m);
const it_st *it_model_weights(const it_model *m);         /* the base checkpoint */
const char *it_model_dir(const it_model *m);              /* the model folder, as given */
/* The Stable Diffusion component the model is, for adapters in SD file formats: "unet" for a UNet
 * (and a pipeline), "text_encoder" for a CLIP text model, "" for anything else. */
const char *it_model_component(const it_model *m);
/* Fits adapter ad to model m (model_sd.c). A pipeline: the "unet" and "text_encoder" modules of
 * a Stable Diffusion file (kohya names resolved against each part's module paths) become plain
 * modules "unet.<path>" / "text_encoder.<path>"; plain modules (a PEFT folder) target the UNet and
 * get "unet." unless they already start with "unet." or "text_encoder."; other components are
 * dropped with a note in ad->warn; one module named twice is IT_EFORMAT. Another model: its
 * component's part (it_adapter_select with it_model_component and the checkpoint's module paths,
 * its tensor names ending in ".weight" without it). Errors as it_adapter_resolve's. */
int it_model_fit_adapter(const it_model *m, it_adapter *ad, it_err *err);
size_t it_model_site_count(const it_model *m);
const it_model_site *it_model_site_at(const it_model *m, size_t i);
int it_model_find_site(const it_model *m, const char *name, size_t *i); /* IT_ENOTFOUND */
size_t it_model_group_count(const it_model *m);

/* Installs (d not NULL) or removes (NULL) the delta of site i. The model keeps the pointers: the
 * arrays must stay valid while installed. */
void it_model_set_delta(it_model *m, size_t i, const it_delta *d);
void it_model_clear_deltas(it_model *m);
void it_model_set_observer(it_model *m, it_observer fn, void *ctx);

/* A causal language model on one sample: ids [n] (positions 0..n-1, batch 1, no padding);
 * logits [n x vocab] (may be NULL: the last site, lm_head, is then observed but not computed).
 * IT_EINVAL for an id outside the vocabulary, n = 0 or n beyond max_position_embeddings;
 * IT_EUNSUPPORTED for n beyond a sliding window (Mistral, Qwen2 with use_sliding_window), which is
 * not implemented. One call at a time per model (the deltas, observer and scratch are the model's). */
int it_model_forward(it_model *m, const int32_t *ids, size_t n, float *logits, it_err *err);

/* The outputs of one forward pass under the reference library's names (DESIGN.md section 3), each
 * flattened to [rows, cols]:
 *   Llama family   logits [n, vocab]
 *   T5             logits [ndec, vocab], encoder_last_hidden_state [n, d_model];
 *                  T5EncoderModel: last_hidden_state [n, d_model]
 *   CLIP           text_embeds [1, proj] (L2-normalised in a CLIPModel, as it returns them),
 *                  text_last_hidden_state [n, hidden], text_pooler_output [1, hidden] (text given);
 *                  image_embeds [B, proj], vision_last_hidden_state [B * (patches + 1), hidden],
 *                  vision_pooler_output [B, hidden] (images given); a single tower has no projection
 *                  outputs unless it is a ...WithProjection class.
 * eval compares the outputs marked eval: logits (with KL and top-1: logits set); CLIP: the
 * embeddings (text_embeds, image_embeds; a tower without projection: its last_hidden_state /
 * pooler_output); T5EncoderModel: last_hidden_state. */
#define IT_MAX_OUTPUTS 8
typedef struct it_output {
    const char *name;      /* static string */
    size_t rows, cols;
    float *data;           /* [rows x cols], owned (it_outputs_free) */
    int eval;              /* compared by eval */
} it_output;

typedef struct it_outputs {
    size_t n;
    it_output o[IT_MAX_OUTPUTS];
    int logits;            /* the eval outputs are logits over the vocabulary (KL, top-1 apply) */
} it_outputs;

void it_outputs_free(it_outputs *o);

/* Any architecture on one sample (ids, decoder ids, pixels as the architecture needs; batch 1 for
 * text, the sample's images as one batch). out NULL: the sites are observed, and what follows the
 * last one is not computed. IT_EINVAL naming the model folder for a sample the model cannot take
 * (no ids for a text model, ids outside the vocabulary or beyond the context, no decoder ids for a
 * T5 model, pixels of another shape). On failure *out holds nothing. */
int it_model_run(it_model *m, const it_sample *s, it_outputs *out, it_err *err);

/* 1 when the model is an encoder-decoder (T5ForConditionalGeneration): its samples need
 * decoder_input_ids (given, or made by it_samples_complete). */
int it_model_needs_decoder_ids(const it_model *m);

/* Greedy decoding with the model as it is (deltas installed): the decoder input starts with
 * decoder_start_token_id and each step appends the argmax of the last position's logits, until
 * eos_token_id comes (not appended) or max_new tokens have been appended. *dec (malloc'd) gets
 * [1 + at most max_new] ids. IT_EUNSUPPORTED for a model without a decoder. */
int it_model_generate(it_model *m, const int32_t *ids, size_t n, size_t max_new, int32_t **dec, size_t *ndec,
                      it_err *err);

/* ============================================================================================ */
/* Calibration samples (data.c)                                                                  */
/* ============================================================================================ */
/*
 * The files of `--data` and `--inputs` (DESIGN.md section 3): JSON Lines, one sample a line.
 *   - Lines are cut at LF (a CR before it is whitespace, so CRLF files read the same); a line of
 *     only spaces, tabs and CRs is skipped; the last line needs no newline.
 *   - Every other line is one JSON object (strict RFC 8259, duplicate keys refused) with:
 *       "input_ids" or "ids": a non-empty array of integer literals in [0, 2^31-1] (3.0, -1,
 *           2^31 or a non-array are refused); when both are given they must be equal;
 *       "decoder_input_ids": optional, the same rules (the T5 decoder's input);
 *       "text": a string (kept for when a tokenizer is loaded);
 *       "name": a string, optional, kept for reports;
 *       "seed": an integer in [0, 2^64), optional (default 0): a pipeline prompt's noise.
 *     A sample needs token ids or text. Strings holding U+0000 are refused. Other keys (tensor
 *     references such as {"pixel_values": {"file": .., "tensor": .., "index": 0}}) are ignored.
 * A broken rule is IT_EFORMAT "<path>: line N: <what>", naming the key (for a JSON syntax error:
 * "<path>: line N: at byte K: ...", K counted from the line's start); a file without samples is
 * IT_EFORMAT "<path>: no samples"; a file over 1 GiB is refused unread (IT_EFORMAT).
 */
struct it_sample {
    int32_t *ids;          /* [n] "input_ids" (or "ids"); NULL and n = 0 when only text is given */
    size_t n;
    int32_t *dec_ids;      /* [ndec] "decoder_input_ids", or NULL and ndec = 0 (then made by
                            * it_samples_complete for an encoder-decoder model) */
    size_t ndec;
    char *text;            /* "text" (UTF-8, NUL-terminated), or NULL */
    char *name;            /* "name", or NULL */
    size_t line;           /* the sample's 1-based line in the file */
    /* Images (CLIP): "image": a binary PPM/PGM path, or "pixel_values": {"file", "tensor", "index"}
     * naming a float tensor [B, C, H, W] (index picks one item of B; without it all B are the
     * sample's). Paths are taken relative to the samples file's folder. it_samples_load_pixels
     * fills pixels. */
    char *image;           /* the resolved image path, or NULL */
    it_tensor_ref ref_pixels; /* "pixel_values" */
    float *pixels;         /* [nimages x C x H x W] once loaded, or NULL */
    size_t nimages, channels, height, width;
    /* A UNet's raw inputs, given by reference as "sample", "timestep" and "encoder_hidden_states"
     * ({"file", "tensor", "index"} each, the reference library's names; it_samples_load_pixels
     * loads them): nlatents latents, one timestep each, and their text states. */
    it_tensor_ref ref_latents, ref_timestep, ref_context;
    float *latents;        /* [nlatents x lat_c x lat_h x lat_w], or NULL */
    size_t nlatents, lat_c, lat_h, lat_w;
    float *timesteps;      /* [nlatents] */
    float *context;        /* [nlatents x nctx x dctx] */
    size_t nctx, dctx;
    /* A prompt for a Stable Diffusion pipeline (input_ids, padded to 77 by the pipeline): "seed", a
     * non-negative integer (default 0), seeds the ntimesteps noisy latents and timesteps it runs
     * with (model_sd.c); ntimesteps 0 means 4 (not read from the file: set by the caller). */
    uint64_t seed;
    size_t ntimesteps;
};

typedef struct it_samples {
    char *path;            /* the file, as given (used in messages) */
    size_t n;              /* >= 1 */
    it_sample *s;          /* [n] in file order */
} it_samples;

/* Reads a samples file. On success *out owns everything; free it with it_samples_free. */
int it_samples_load(it_samples **out, const char *path, it_err *err);
/* The same on text[0..len) in memory; name (NULL: "(memory)") stands for the path in messages. */
int it_samples_parse(it_samples **out, const char *text, size_t len, const char *name, it_err *err);
void it_samples_free(it_samples *s);

/* Fills the ids of every sample that gives "text" and no ids: tokenizer t's encode with its special
 * tokens (add_special_tokens=True). Errors name the samples file and the line. */
typedef struct it_tokenizer it_tokenizer;
int it_samples_tokenize(it_samples *s, const it_tokenizer *t, it_err *err);

/* Loads the pixels of every sample that names an image or a pixel_values tensor, for model m: a
 * PPM/PGM image is resized, cropped and normalised by the model folder's preprocessor_config.json
 * (CLIPImageProcessor), a tensor is taken as it is (any float dtype) and must be [B, C, H, W] with
 * the model's channels and image_size. Errors name the samples file, the line and the image. */
int it_samples_load_pixels(it_samples *s, const it_model *m, it_err *err);

/* `--samples k --seed S`: k distinct samples, idx [k] in increasing (file) order. The rule: the
 * first k steps of a Fisher-Yates shuffle of 0..n-1 run from the front (step i swaps positions i
 * and i + u, u uniform in [0, n-i)), the draws taken from splitmix64 seeded with S with rejection
 * (no modulo bias); the k indices it leaves in front, sorted. The result depends only on (n, k, S),
 * and k == n gives every sample. IT_EINVAL, naming the file, for k == 0 or k > n; IT_ENOMEM. */
int it_samples_choose(const it_samples *s, size_t k, uint64_t seed, size_t *idx, it_err *err);

/* The same choice, with the samples not chosen in rest [n - k] (may be NULL), in file order: the
 * held-out part (for eval and --alpha auto) of a calibration choice. idx is exactly what
 * it_samples_choose gives for (k, seed); k == n leaves rest empty. */
int it_samples_split(const it_samples *s, size_t k, uint64_t seed, size_t *idx, size_t *rest, it_err *err);

/* ============================================================================================ */
/* Tokenizers (tokenizer.c, tokenizer_model.c): tokenizer.json, text to ids                       */
/* ============================================================================================ */
/*
 * it_tokenizer_encode gives the ids `tokenizer.encode(text, add_special_tokens=True)` gives in
 * transformers (the Rust crate's pipeline: added tokens, normalizer, pre-tokenizer, model,
 * post-processor). Supported:
 *   models          BPE (merges as "a b" strings or [a, b] pairs; unk_token, fuse_unk,
 *                   byte_fallback, ignore_merges, continuing_subword_prefix, end_of_word_suffix;
 *                   dropout null or 0) and Unigram (unk_id, byte_fallback);
 *   normalizers     NFC NFD NFKC NFKD, Lowercase, Strip, StripAccents, Prepend, Replace (any
 *                   String pattern; Regex "\s+", " {2,}", "\s" and " +"), Precompiled
 *                   (SentencePiece charsmaps), Sequence;
 *   pre-tokenizers  ByteLevel (with or without its GPT-2 regex), Split (String patterns, and the
 *                   GPT-2, Llama-3, Qwen2 and CLIP regexes, hand-coded), Metaspace,
 *                   WhitespaceSplit, Digits, Punctuation, Sequence;
 *   post-processors TemplateProcessing (single), RobertaProcessing, BertProcessing, ByteLevel,
 *                   Sequence;
 *   added tokens    both passes, with single_word, lstrip, rstrip and normalized.
 * Anything else (WordPiece and WordLevel models, another Split regex, BertNormalizer, ...) is
 * IT_EUNSUPPORTED naming the file and the component. The file's truncation and padding are
 * ignored, as transformers overrides them on every call. */
/* dir: a model folder (reads dir/tokenizer.json) or the file itself. */
int it_tokenizer_load(it_tokenizer **out, const char *dir, it_err *err);
/* The same from the text of a tokenizer.json in memory; name stands for the file in messages. */
int it_tokenizer_parse(it_tokenizer **out, const char *name, const char *text, size_t len, it_err *err);
void it_tokenizer_free(it_tokenizer *t);

/* ids: malloc'd [*n] (NULL when *n is 0); add_special: the post-processor's tokens. Invalid UTF-8
 * is IT_EINVAL. */
int it_tokenizer_encode(const it_tokenizer *t, const char *text, size_t len, int add_special, int32_t **ids, size_t *n,
                        it_err *err);

/* The tokenizer of model m's folder: its tokenizer.json (a Stable Diffusion pipeline's:
 * tokenizer/tokenizer.json). Absent: IT_ENOTFOUND naming the file. */
int it_tokenizer_for_model(it_tokenizer **out, const it_model *m, it_err *err);

/* The id of a token string (an added token, else the model's vocabulary), or -1. */
int32_t it_tokenizer_token_id(const it_tokenizer *t, const char *token);

/* ============================================================================================ */
/* Images (image.c)                                                                              */
/* ============================================================================================ */
/*
 * CLIP image preprocessing for calibration samples given as binary PGM / PPM files.
 *
 * The pipeline is transformers' CLIPImageProcessor.preprocess (models/clip/image_processing_clip.py,
 * image_transforms.py, version 4.40) on an image opened with PIL (Pillow 9.4, PpmImagePlugin.py):
 *
 *     file --read--> RGB uint8 [h x w x 3]       PIL's PPM reader; P5 grey replicated (convert("RGB"))
 *          --resize--> uint8 [rh x rw x 3]        PIL Image.resize (libImaging/Resample.c), bit-exact
 *          --crop--> uint8 [ch x cw x 3]          transformers center_crop (zero padding if smaller)
 *          --rescale, normalize--> float32 [3 x ch x cw]
 *
 * Usage:
 *
 *     it_image_proc p;
 *     it_err err;
 *     float *px;
 *     size_t h, w;
 *     if (it_image_proc_load(&p, "clip-model", 224, &err) != IT_OK ||
 *         it_image_load("cat.ppm", &p, &px, &h, &w, &err) != IT_OK) { puts(err.msg); return 1; }
 *     ... px[(c * h + y) * w + x] ...
 *     free(px);
 */
/* PIL's resampling filters, numbered as PIL.Image.Resampling (and transformers' PILImageResampling). */
enum {
    IT_RESAMPLE_NEAREST = 0, /* not supported (PIL uses an affine transform, not Resample.c) */
    IT_RESAMPLE_LANCZOS = 1,
    IT_RESAMPLE_BILINEAR = 2,
    IT_RESAMPLE_BICUBIC = 3,
    IT_RESAMPLE_BOX = 4,
    IT_RESAMPLE_HAMMING = 5
};

/* Limits: PIL refuses images of more than 2 * Image.MAX_IMAGE_PIXELS pixels (DecompressionBombError);
 * the same bound applies to the resized image. Sizes in preprocessor_config.json are at most
 * IT_IMAGE_MAX_SIDE. */
#define IT_IMAGE_MAX_PIXELS ((uint64_t)178956970)
#define IT_IMAGE_MAX_SIDE 65536

/* preprocessor_config.json of a model folder (CLIPImageProcessor); defaults = CLIPImageProcessor's
 * when the file is absent (size shortest_edge 224, crop 224x224, bicubic, rescale 1/255, OpenAI
 * mean/std), except that default_size (the model's vision image_size) replaces 224 when the file
 * is absent. */
typedef struct it_image_proc {
    int do_resize;
    int shortest;          /* 1: size {"shortest_edge": size_h}, the short side becomes size_h;
                            * 0: size {"height": size_h, "width": size_w}, an exact size */
    int64_t size_h, size_w; /* size_w unused when shortest */
    int resample;          /* IT_RESAMPLE_* (not NEAREST) */
    int do_center_crop;
    int64_t crop_h, crop_w;
    int do_rescale;
    double rescale_factor; /* as written (a Python float), 1/255 by default */
    int do_normalize;
    double mean[3], std[3]; /* as written; used as float32, as numpy does */
    int do_convert_rgb;    /* 0: a grey (P5) image is refused, as transformers cannot normalise it */
} it_image_proc;

/* Reads model_dir/preprocessor_config.json (model_dir may also be the file itself). Keys read:
 * do_resize, size ({"shortest_edge": N}, optionally with "longest_edge", which CLIP ignores;
 * {"height": H, "width": W}; an int N = shortest edge; [H, W]), resample (1..5), do_center_crop,
 * crop_size ({"height", "width"}; an int N = N x N; [H, W]), do_rescale, rescale_factor,
 * do_normalize, image_mean / image_std (3 numbers or one for all channels), do_convert_rgb; null
 * means the default, as in the Python constructor. Other keys are ignored, but an
 * image_processor_type / feature_extractor_type that is not CLIP's is IT_EUNSUPPORTED. A missing
 * file gives the defaults (with default_size, if > 0, in place of 224); a bad value is IT_EFORMAT
 * naming the file and key. */
int it_image_proc_load(it_image_proc *p, const char *model_dir, int64_t default_size, it_err *err);

/* The defaults above, without a file. */
void it_image_proc_default(it_image_proc *p, int64_t default_size);

/* Reads a P5/P6 file and preprocesses it: *pixels = malloc'd [3 x height x width] float32. */
int it_image_load(const char *path, const it_image_proc *p, float **pixels, size_t *height, size_t *width,
                  it_err *err);

/* ---- the steps, exposed for tests ---- */

/* Decodes a binary PGM (P5) or PPM (P6) held in buf[0..len) as PIL 9.4 reads it: header tokens
 * separated by whitespace and '#' comments (to CR or LF), one whitespace byte after maxval, then
 * the samples (1 byte each, or 2 big-endian when maxval > 255). maxval 255 is taken as is; another
 * maxval scales each sample to round(v / maxval * 255), clamped at 255 (PpmDecoder). A 16-bit P5 is
 * IT_EUNSUPPORTED: PIL reads it as mode "I", which convert("RGB") clips at 255. Bytes after the
 * image are ignored. grey: a P5 image is RGB with r = g = b (convert("RGB")); *grey (if not NULL)
 * tells which. *rgb = malloc'd [h x w x 3]. Any malformed input is IT_EFORMAT "<name>: <problem>". */
int it_image_decode_pnm(const void *buf, size_t len, const char *name, uint8_t **rgb, size_t *h, size_t *w,
                        int *grey, it_err *err);

/* The size the resize step gives an h x w image: transformers' get_resize_output_image_size
 * (default_to_square=False: the short side becomes N, the long side int(N * long / short)) or the
 * exact size. No resize: h x w. */
void it_image_resize_size(const it_image_proc *p, size_t h, size_t w, size_t *oh, size_t *ow);

/* PIL's Image.resize((ow, oh), filter) of an RGB image (Resample.c, ImagingResampleInner):
 * out [oh x ow x 3] from in [h x w x 3]. IT_EINVAL for an unsupported filter or a zero size,
 * IT_ENOMEM. */
int it_image_resize(uint8_t *out, const uint8_t *in, size_t h, size_t w, size_t oh, size_t ow, int filter,
                    it_err *err);

/* transformers' center_crop: out [ch x cw x 3], out(y, x) = in(y + top, x + left) with
 * top = floor((h - ch) / 2), left = floor((w - cw) / 2), and 0 where that lies outside in. */
void it_image_center_crop(uint8_t *out, const uint8_t *in, size_t h, size_t w, size_t ch, size_t cw);

/* rescale then normalize, channel-first: out [3 x h x w] from in [h x w x 3], with
 * v = float32(double(u8) * rescale_factor) (or float32(u8) without rescale), then
 * (v - float32(mean[c])) / float32(std[c]) in float32. */
void it_image_normalize(float *out, const uint8_t *in, size_t h, size_t w, const it_image_proc *p);

/* resize, crop, rescale, normalize of rgb [h x w x 3]: *pixels = malloc'd [3 x *oh x *ow]. */
int it_image_preprocess(const uint8_t *rgb, size_t h, size_t w, const it_image_proc *p, float **pixels, size_t *oh,
                        size_t *ow, it_err *err);

/* ============================================================================================ */
/* The solve (iteris.c): one site at a time, free of any architecture                            */
/* ============================================================================================ */

/* Merging methods; it_method_name gives the names reports use (DESIGN.md section 3). */
typedef enum {
    IT_METHOD_ITERIS,  /* IterIS (DESIGN.md section 1) */
    IT_METHOD_REGMEAN, /* RegMean (Jin et al. 2023) */
    IT_METHOD_LINEAR,  /* task arithmetic: sum_i w_i dW_i */
    IT_METHOD_TIES,    /* TIES (Yadav et al. 2023): trim, elect sign, disjoint mean */
    IT_METHOD_DARE,    /* DARE (Yu et al. 2024): drop, rescale, sum */
    IT_METHOD_CAT      /* exact concatenation of the low-rank factors: sum_i w_i dW_i, no approximation */
} it_method;

const char *it_method_name(it_method m);
int it_method_parse(const char *name, it_method *m); /* IT_EINVAL for an unknown name */

typedef struct it_solve_opts {
    it_method method;
    double alpha1, alpha2; /* IterIS: a1, a2 (default 1e-7, the official implementation's) */
    double reg_mix;        /* IterIS: beta of Xh = (1 - beta) Xt + beta X, in [0, 1] (default 0) */
    int with_pretrain;     /* solve for (and output) the whole weight W0 + dW instead of the delta */
    const double *weights; /* [nweights] manual weights, or NULL for the method's default: 1 for
                            * iteris, regmean, ties and cat; 1/N for linear and dare */
    size_t nweights;       /* must equal the number of tasks when weights is set */
    double regmean_alpha;  /* RegMean: scale of the Grams' off-diagonal entries (default 0.9) */
    double density;        /* TIES: fraction of entries kept per task (default 0.2) */
    int ties_frequency;    /* TIES: elect the sign by the count of signs, not the total (default 0) */
    double drop;           /* DARE: drop probability p (default 0.5) */
    uint64_t seed;         /* DARE's masks (default 0) */
} it_solve_opts;

void it_solve_opts_default(it_solve_opts *o);
/* IT_EINVAL naming the first option out of range (or a weights count other than ntasks). */
int it_solve_opts_check(const it_solve_opts *o, size_t ntasks, it_err *err);

/* One task's part in a site. dW_i is scale * B A when A is set, else the dense delta when set,
 * else 0 (the task does not adapt the site; with the union-of-targets rule its model runs W0 there).
 * Statistics are d_in x d_in, row-major, both triangles filled: xx = X_i^T X_i, xt = X_i^T Xt_i,
 * tt = Xt_i^T Xt_i (xt and tt NULL mean Xt_i = X_i, iteration 0). Methods without statistics
 * (linear, ties, dare, cat) read none of them. */
typedef struct it_site_task {
    const float *A, *B;    /* [r x d_in], [d_out x r] */
    int64_t r;
    double scale;
    const double *delta;   /* [d_out x d_in] */
    const double *xx, *xt, *tt;
    double out_norm2;      /* ||X_i (W0 + dW_i)^T||_F^2 when known, or < 0 to compute it from xx */
} it_site_task;

typedef struct it_site {
    const char *name;      /* for messages */
    int64_t d_out, d_in;
    const float *w0;       /* the base weight [d_out x d_in] in the linear view, or NULL for zero */
    size_t ntasks;
    const it_site_task *tasks;
} it_site;

/* What a solve reports besides W*. */
typedef struct it_site_info {
    double ridge;          /* the ridge added to Q, relative to its mean diagonal, so that Cholesky
                            * succeeded (0: none was needed) */
    double *lambda;        /* [ntasks] out, or NULL: IterIS's adaptive weights l_i (times m_i not
                            * included) */
} it_site_info;

/* W* [d_out x d_in] (double, row-major) for one site by the chosen method: the merged delta, or the
 * whole weight with with_pretrain. IT_EINVAL for options out of range, statistics that are not
 * finite or reach no task; IT_ENOTSPD if Q stays singular under every ridge tried; IT_ENOMEM. */
int it_site_solve(const it_site *site, const it_solve_opts *o, double *wstar, it_site_info *info, it_err *err);


/* One site of a merge: a module that at least one adapter adapts (the union of the targets,
 * DESIGN.md section 3), with each adapter's module there or NULL. */
typedef struct it_site_def {
    char *name;
    it_lora_kind kind;
    int transposed;
    int64_t d_out, d_in;
    int64_t rank_sum;                 /* the sum of the adapters' ranks here */
    const it_lora_module **mods;      /* [nadapters]: adapter i's module, or NULL (dW_i = 0) */
} it_site_def;

/* The sites of a merge of nad adapters for one component ("" for PEFT folders, "unet",
 * "text_encoder"), in name order, each checked against the base checkpoint: "<site>.weight" must
 * exist with the module's shape ([d_out, d_in], transposed [d_in, d_out], [d_out, d_in, 1, 1] for a
 * 1x1 convolution). A mismatch is IT_EFORMAT naming the first offending sites (up to three) and
 * the adapter; adapters that disagree on a site's shape or kind likewise. base may be NULL (no
 * check). */
int it_sites_union(const it_adapter *const *ad, size_t nad, const char *component, const it_st *base,
                   it_site_def **out, size_t *nout, it_err *err);
void it_sites_free(it_site_def *sites, size_t n);

/* Called after each site of it_solve_features: k of nsites, with its info (lambda [ntasks]). */
typedef void (*it_solve_progress)(void *ctx, const char *site, size_t k, size_t nsites, const it_site_info *info,
                                  size_t ntasks);

/* `iteris solve`: the solve on supplied features (DESIGN.md section 3), so that other
 * implementations can be checked against this one. The file holds, per site, <site>.delta.<i>
 * (dW_i [d_out x d_in], scale folded in; absent: the task does not adapt the site), <site>.X.<i>
 * (X_i [rows x d_in]), optionally <site>.Xt.<i> (Xt_i, same rows; default X_i) and <site>.weight
 * (W0; default 0), tasks i = 0..N-1, any float dtype. o->weights, when set, has N entries. Writes
 * <site> = W* [d_out x d_in] as F32 or F64 to out (atomically). */
int it_solve_features(const char *features, const char *out, it_dtype out_dtype, const it_solve_opts *o,
                      it_solve_progress progress, void *ctx, it_err *err);


/* ============================================================================================ */
/* The merge (iteris.c): statistics streamed from the forward passes, the two schedules           */
/* ============================================================================================ */

typedef enum {
    IT_SCHEDULE_ITERATE, /* the paper's: solve every site, install, re-run, repeat */
    IT_SCHEDULE_SWEEP    /* site groups in execution order, each from the merged earlier groups */
} it_schedule;

/* One task: its adapter and its calibration samples. */
typedef struct it_task {
    const it_adapter *adapter;
    const it_sample *const *samples; /* [nsamples] */
    size_t nsamples;
} it_task;

/* What the merge reports after each iteration (iterate) or site group (sweep). */
typedef struct it_merge_step {
    const char *schedule;  /* "iterate" or "sweep" */
    size_t step, nsteps;   /* 0-based iteration or group, and how many at most */
    double seconds;        /* since the merge began */
    double eta;            /* seconds still to go, estimated */
    double max_change;     /* max over sites of ||W*_t - W*_{t-1}||_F / ||W*_t||_F (iterate; -1 at 0) */
    const double *objective; /* [ntasks] sum over the solved sites of l_i ||X_i V_i^T - Xt_i W*^T||_F^2 */
    size_t ntasks;
} it_merge_step;

typedef struct it_merge_opts {
    it_solve_opts solve;
    it_schedule schedule;
    int iters;             /* iterate: at most this many solves (default 5) */
    double tol;            /* iterate: stop when max_change < tol (default 1e-4) */
    int recompute_x;       /* X_i policy: 0 keeps X_i's rows in memory (default); 1 recomputes them
                            * with task i's model beside each pass of the merged model (memory for one
                            * sample, twice the forward passes); the results are the same */
    void (*progress)(void *ctx, const it_merge_step *step);
    void *ctx;
} it_merge_opts;

void it_merge_opts_default(it_merge_opts *o);

/* The merged sites and the run's figures. */
typedef struct it_merge_result {
    size_t nsites, ntasks;
    it_site_def *sites;    /* [nsites] the union of the targets, by name */
    double **wstar;        /* [nsites][d_out x d_in] */
    double *ridge;         /* [nsites] */
    double *lambda;        /* [nsites x ntasks] adaptive weights (iteris) */
    size_t *rows;          /* [nsites x ntasks] calibration rows that reached each site */
    size_t nsteps;
    it_merge_step *steps;  /* [nsteps] with objective arrays owned here */
    float **installed;     /* [nsites] W* - W0 or W* as f32, installed in the model as dense deltas */
    it_delta *deltas;      /* [nsites] the installed it_delta records */
} it_merge_result;

/* Merges the tasks' adapters into m's sites. On success the merged deltas stay installed in m (the
 * merged model) and point into the result: clear them (it_model_clear_deltas) before freeing it. */
int it_merge(it_model *m, const it_task *tasks, size_t ntasks, const it_merge_opts *o, it_merge_result **out,
             it_err *err);
void it_merge_result_free(it_merge_result *r);

/* The held-out alignment error of a merge result r (for --alpha auto): on each task's samples,
 * sum over sites and tasks of l_i ||X_i V_i^T - Xt_i W*^T||_F^2, X_i from task i's own model and
 * Xt_i from the model with r's deltas; l_i from r (the calibration merge). No labels needed. The
 * tasks must name the same adapters as r's merge. m's deltas are cleared. */
int it_merge_alignment(it_model *m, const it_task *tasks, size_t ntasks, const it_merge_opts *o,
                       const it_merge_result *r, double *out, it_err *err);

/* eval (DESIGN.md section 3) for one task on its held-out samples, z the model's eval outputs
 * (it_outputs: logits; CLIP's embeddings): rel_err = ||z_merged - z_i|| / ||z_i - z_base|| over all
 * of them (0 perfect, 1 no better than the base); for logits kl = mean per-token KL(p_i ||
 * p_merged) and top1 = the fraction of tokens whose argmax agrees (NaN for other outputs). tokens
 * counts the rows compared. The merged model is m with the deltas merged[k] at sites
 * merged_site[k], or merged_model when that is not NULL. Samples of an encoder-decoder model need
 * their decoder ids (it_samples_complete). */
typedef struct it_eval_result {
    double rel_err, kl, top1;
    size_t tokens;
} it_eval_result;

int it_eval_task(it_model *m, const it_adapter *ad, const it_delta *merged, const size_t *merged_site, size_t nmerged,
                 it_model *merged_model, const it_sample *const *samples, size_t nsamples, it_eval_result *out,
                 it_err *err);

/* For an encoder-decoder model (it_model_needs_decoder_ids), fills the decoder ids of every sample
 * of ss that has none by greedy decoding (it_model_generate, at most gen_len new tokens) with
 * adapter ad installed alone (NULL: the model as it is), so that task i's X_i and Xt_i, and eval's
 * three models, all see the same positions. Then, for every model, checks each sample against m (ids
 * inside the vocabulary and the context, decoder ids, pixel / latent shapes), so that a bad sample is
 * refused before any work. Errors name the samples file and line. */
int it_samples_complete(it_model *m, const it_adapter *ad, it_samples *ss, size_t gen_len, it_err *err);

/* ============================================================================================ */
/* Demo (demo.c): `iteris demo`, the whole pipeline on files it makes itself                     */
/* ============================================================================================ */
/*
 * Two cases, each three tasks merged six ways. llama: writes, in the real formats, a small Llama
 * model (dir/base: config.json of a LlamaForCausalLM, model.safetensors with every tensor), three
 * PEFT adapters (dir/adapters/task<k>, k = 1..3: adapter_config.json, adapter_model.safetensors,
 * all seven linear modules of each layer) whose tasks read disjoint token ranges whose embeddings
 * span different subspaces, and each task's calibration and held-out samples
 * (dir/data/task<k>.jsonl, dir/data/task<k>_heldout.jsonl). t5: the same under dir/t5 for a small
 * flan-t5 style T5ForConditionalGeneration (adapters on q, k, v, o of every attention, wi_0, wi_1,
 * wo; task_type SEQ_2_SEQ_LM), its samples holding input_ids only: each task's decoder inputs are
 * made by greedy decoding with its own adapter (it_samples_complete). Each case reads its files back
 * with it_model_load, it_adapter_load and it_samples_load; merges with iteris (iterate schedule),
 * iteris-sweep, regmean, linear, ties and dare (it_merge on the calibration samples) and evaluates
 * every merge on every task's held-out samples (it_eval_task). demo.c's header comment describes
 * the construction.
 */
#define IT_DEMO_MAX_TASKS 8
#define IT_DEMO_MAX_METHODS 8
#define IT_DEMO_MAX_CASES 4

/* One method's row of a case's table. */
typedef struct it_demo_method {
    char name[16];                            /* "iteris", "iteris-sweep", "regmean", ... */
    it_eval_result task[IT_DEMO_MAX_TASKS];   /* [ntasks] on the held-out samples */
    double mean_rel_err;                      /* the mean of task[k].rel_err */
    double seconds;                           /* the merge's wall time (not the evaluation's) */
} it_demo_method;

/* One case: a model, its tasks, the table. */
typedef struct it_demo_case {
    char model[16];                           /* "llama" (files in dir), "t5" (files in dir/t5) */
    size_t ntasks, nmethods;                  /* 3 and 6 */
    it_demo_method method[IT_DEMO_MAX_METHODS]; /* [nmethods] in the order above */
    double seconds;                           /* the case: building, merging, evaluating */
} it_demo_case;

typedef struct it_demo_result {
    size_t ncases;                            /* 2: llama, then t5 */
    it_demo_case cases[IT_DEMO_MAX_CASES];    /* [ncases] */
    double seconds;                           /* the whole run */
    char dir[4096];                           /* the folder that holds the files */
} it_demo_result;

/* Builds the demo's files in dir (created if needed, its parent must exist; or, when dir is NULL, a
 * fresh mkdtemp folder "iteris-demo-XXXXXX" under $TMPDIR or /tmp, kept for the user to look at),
 * then, case by case, merges with each method and evaluates on the held-out samples. progress (may
 * be NULL) gets one line per step (the folder, and for each case the model, the data, each
 * adapter, the decoder inputs (t5), each method's result). Deterministic: one fixed seed per case,
 * so every number but the timings is bit-identical on every run and for any thread count. IT_EINVAL
 * when dir is too long, IT_EIO when a file cannot be written, or whatever the readers and the merge
 * return; the cases done before a failure are kept in *out (ncases counts the failed one). */
int it_demo_run(const char *dir, it_demo_result *out, void (*progress)(void *ctx, const char *line), void *ctx,
                it_err *err);

/* ============================================================================================ */
/* Merge outputs (output.c): delta, lora, model                                                  */
/* ============================================================================================ */

/* One merged site, as the writers take it. */
typedef struct it_merged_site {
    const char *name;      /* module path ("model.layers.0.self_attn.q_proj") */
    it_lora_kind kind;     /* decides the tensor names and shapes of a lora output */
    int transposed;        /* the base tensor is stored [d_in, d_out] (fan_in_fan_out, embeddings) */
    int64_t d_out, d_in;
    const double *w;       /* W* [d_out x d_in] as solved: the delta, or the whole weight (with_pretrain) */
    const float *w0;       /* the base weight [d_out x d_in] (linear view), needed by lora with_pretrain */
    int64_t rank_hint;     /* the sum of the input adapters' ranks here (the default output rank) */
    const double *exact_A; /* cat: the exact factors, delta = exact_B exact_A; NULL otherwise */
    const double *exact_B; /* [d_out x exact_r], exact_A [exact_r x d_in] */
    int64_t exact_r;
} it_merged_site;

/* Every file the library writes goes to a temporary name beside it ("<path>.tmp.XXXXXX") and is
 * renamed into place when complete. An output set makes several files one unit: between
 * it_out_begin and it_out_end the renames wait; it_out_end(1, err) renames every file finished since
 * it_out_begin (with the signals that end a process held off, so that none cuts the renames in two),
 * it_out_end(0, NULL) removes them and the folders it_make_dir made meanwhile. A failure part way (a
 * full disk, no memory, an interrupt) so leaves nothing new behind. Sets nest (only the outermost
 * end acts; an inner end(0) makes the outer end(1) fail); one set at a time per process.
 * it_write_lora and it_write_model are each a set of their own. */
void it_out_begin(void);
int it_out_end(int commit, it_err *err);

/* Removes every temporary output file that exists now and the folders made for the open set (unlink
 * and rmdir only: async-signal-safe), for a signal handler. */
void it_out_remove_partial(void);

/* Handlers for SIGINT, SIGTERM and SIGHUP (those not ignored) that call it_out_remove_partial and
 * then end the process by the same signal: an interrupted merge leaves no partial output. */
void it_out_cleanup_on_signals(void);

/* Can dir be an output folder: a folder this process may write in, or a name whose parent is one?
 * For a check before the work (the CLI's --out). */
int it_out_check_dir(const char *dir, it_err *err);

/* Creates a folder if it does not exist (its parent must). */
int it_make_dir(const char *dir, it_err *err);

/* Writes a text file atomically (a temporary name in the same folder, renamed when complete). */
int it_write_text(const char *path, const char *text, it_err *err);

/* `--format delta`: one safetensors file, <site> = W* [d_out x d_in] f32; the metadata says whether
 * the tensors are whole weights ("iteris_with_pretrain": "true") or deltas. */
int it_write_delta(const char *path, const it_merged_site *sites, size_t n, int with_pretrain, it_err *err);

typedef struct it_lora_out_opts {
    int64_t rank;          /* r of the output; 0: per site the sum of the input ranks (exact factors
                            * for cat), capped at min(d_out, d_in), and r the largest of those */
    int with_pretrain;     /* sites' w are whole weights: the delta is w - w0 */
    const char *base_model; /* base_model_name_or_path, or NULL */
    const char *task_type;  /* task_type, or NULL */
    uint64_t seed;         /* the SVD's random start */
    int diffusers;         /* write diffusers' LoRA file instead (a Stable Diffusion pipeline's sites,
                            * named "unet.<path>" / "text_encoder.<path>"): dir/pytorch_lora_weights.safetensors
                            * with keys "<site>.lora_A.weight" / ".lora_B.weight", no adapter_config.json
                            * (no alphas: diffusers then takes alpha = r, scale 1, as written) */
} it_lora_out_opts;

/* `--format lora`: a PEFT adapter in folder dir (created if needed), or with o->diffusers a
 * diffusers LoRA file there. energy [n] (if not NULL) receives each site's retained energy, *rank
 * the r written. */
int it_write_lora(const char *dir, const it_merged_site *sites, size_t n, const it_lora_out_opts *o, double *energy,
                  int64_t *rank, it_err *err);

/* `--format model`: the files of base_dir copied to dir with each site's tensor "<site>.weight"
 * replaced by W0 + W* (W* with with_pretrain) in its own dtype; subfolders and pickled weight files
 * (.bin, .pt, .pth, .ckpt: they would hold the unmerged weights) are not copied. Every
 * site must have its tensor in one of the base's safetensors files (checked before writing). */
int it_write_model(const char *dir, const char *base_dir, const it_merged_site *sites, size_t n, int with_pretrain,
                   it_err *err);

#ifdef __cplusplus
}
#endif

#endif /* ITERIS_H */
