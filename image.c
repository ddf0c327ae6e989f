/* image.c -- CLIP image preprocessing of calibration images (binary PGM / PPM), as transformers'
 * CLIPImageProcessor does it on an image opened with PIL (the contract is in iteris.h, "Images").
 *
 * Four steps, each a function of its own so that the tests can check it against its reference:
 *   1. decode (PIL 9.4 PpmImagePlugin.py): P5 / P6, maxval scaling, grey replicated to RGB;
 *   2. resize (Pillow libImaging/Resample.c): a separable convolution, horizontal pass then
 *      vertical pass, each rounding to uint8 through 22-bit fixed-point weights;
 *   3. center crop (transformers image_transforms.center_crop), zero padding where the image is
 *      smaller than the crop;
 *   4. rescale in double then cast to float32 (image_transforms.rescale), normalise in float32
 *      (image_transforms.normalize), channel-first.
 * Every step reproduces the reference's arithmetic operation by operation, so the results are
 * bit-identical to PIL's resize and to the float32 tensors that transformers hands to the model.
 * This relies on IEEE float and double evaluated in their own precision (FLT_EVAL_METHOD 0, no
 * contraction: the Makefile passes -ffp-contract=off).
 */

#include "internal.h"

#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define TRY(expr)                                                                                  \
    do {                                                                                           \
        int try_rc_ = (expr);                                                                      \
        if (try_rc_ != IT_OK) return try_rc_;                                                      \
    } while (0)

#define CONFIG_MAX_BYTES ((size_t)16 << 20)         /* preprocessor_config.json is a few hundred bytes */
#define IMAGE_MAX_BYTES ((size_t)1 << 31)           /* 178956970 pixels x 6 bytes fit below this */
static const double OPENAI_CLIP_MEAN[3] = {0.48145466, 0.4578275, 0.40821073};
static const double OPENAI_CLIP_STD[3] = {0.26862954, 0.26130258, 0.27577711};

/* ============================================================================================ */
/* Decoding binary PGM / PPM (PIL 9.4 PpmImagePlugin.py)                                         */
/* ============================================================================================ */

/* Netpbm whitespace: the bytes PIL's b_whitespace lists. */
static int pnm_space(unsigned char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r';
}

/* Reads one header number at buf[*pos..len): skips whitespace and '#' comments (each up to and
 * including its CR or LF), takes 1 to 10 decimal digits (PIL's token limit) and the one whitespace
 * byte that ends them. what names the field in messages. */
static int pnm_token(const unsigned char *buf, size_t len, size_t *pos, const char *name, const char *what,
                     uint64_t *out, it_err *err)
{
    size_t i = *pos;
    for (;;) {
        while (i < len && pnm_space(buf[i])) i++;
        if (i >= len || buf[i] != '#') break;
        while (i < len && buf[i] != '\n' && buf[i] != '\r') i++;
        if (i < len) i++;
    }
    if (i >= len) return it__fail(err, IT_EFORMAT, "%s: truncated header: the file ends before the %s", name, what);
    uint64_t v = 0;
    size_t start = i;
    while (i < len && buf[i] >= '0' && buf[i] <= '9' && i - start < 11) v = v * 10 + (uint64_t)(buf[i++] - '0');
    if (i == start)
        return it__fail(err, IT_EFORMAT, "%s: header: expected the %s (a decimal number) at byte %zu", name, what, i);
    if (i - start > 10) return it__fail(err, IT_EFORMAT, "%s: header: the %s has more than 10 digits", name, what);
    if (i >= len) return it__fail(err, IT_EFORMAT, "%s: truncated header: the file ends in the %s", name, what);
    if (buf[i] == '#')
        return it__fail(err, IT_EFORMAT, "%s: header: a comment touches the %s at byte %zu (put whitespace before '#')",
                        name, what, i);
    if (!pnm_space(buf[i]))
        return it__fail(err, IT_EFORMAT, "%s: header: unexpected byte 0x%02x after the %s at byte %zu", name, buf[i],
                        what, i);
    *pos = i + 1;
    *out = v;
    return IT_OK;
}

/* The magic number: "P5" or "P6" followed by whitespace. Sets *channels (1 or 3). */
static int pnm_magic(const unsigned char *buf, size_t len, const char *name, int *channels, it_err *err)
{
    if (len < 3 || buf[0] != 'P' || !pnm_space(buf[2]) || buf[1] < '1' || buf[1] > '6')
        return it__fail(err, IT_EFORMAT,
                        "%s: not a binary PGM/PPM file (expected \"P5\" or \"P6\" and whitespace at the start)", name);
    if (buf[1] != '5' && buf[1] != '6')
        return it__fail(err, IT_EUNSUPPORTED, "%s: P%c (%s) is not supported: only binary PGM (P5) and PPM (P6)", name,
                        buf[1], buf[1] == '1' || buf[1] == '4' ? "a bitmap" : "a plain-text image");
    *channels = buf[1] == '5' ? 1 : 3;
    return IT_OK;
}

/* One sample scaled as PpmDecoder does for maxval != 255: min(255, round(v / maxval * 255)),
 * Python's round (to nearest, ties to even; rint in the default rounding mode). */
static uint8_t pnm_scale(unsigned v, unsigned maxval)
{
    double r = rint((double)v / (double)maxval * 255.0);
    return r > 255.0 ? 255 : (uint8_t)r;
}

/* Expands the samples at data (channels per pixel, bps bytes each) to RGB [n x 3]. */
static void pnm_expand(uint8_t *rgb, const unsigned char *data, size_t n, int channels, int bps, unsigned maxval)
{
    for (size_t i = 0; i < n * (size_t)channels; i++) {
        unsigned v = bps == 1 ? data[i] : (unsigned)data[2 * i] << 8 | data[2 * i + 1];
        uint8_t u = maxval == 255 ? (uint8_t)v : pnm_scale(v, maxval);
        if (channels == 3) rgb[i] = u;
        else rgb[3 * i] = rgb[3 * i + 1] = rgb[3 * i + 2] = u; /* convert("RGB") of mode "L" */
    }
}

int it_image_decode_pnm(const void *buffer, size_t len, const char *name, uint8_t **rgb, size_t *h, size_t *w,
                        int *grey, it_err *err)
{
    const unsigned char *buf = (const unsigned char *)buffer;
    *rgb = NULL;
    *h = *w = 0;
    int channels = 0;
    TRY(pnm_magic(buf, len, name, &channels, err));
    size_t pos = 3;
    uint64_t width, height, maxval, pixels, bytes;
    TRY(pnm_token(buf, len, &pos, name, "width", &width, err));
    TRY(pnm_token(buf, len, &pos, name, "height", &height, err));
    TRY(pnm_token(buf, len, &pos, name, "maxval", &maxval, err));
    if (width == 0 || height == 0)
        return it__fail(err, IT_EFORMAT, "%s: header: empty image (%" PRIu64 " x %" PRIu64 ")", name, width, height);
    if (maxval == 0 || maxval > 65535)
        return it__fail(err, IT_EFORMAT, "%s: header: maxval %" PRIu64 " is outside [1, 65535]", name, maxval);
    if (it__mul_u64(width, height, &pixels) != 0 || pixels > IT_IMAGE_MAX_PIXELS)
        return it__fail(err, IT_EFORMAT, "%s: %" PRIu64 " x %" PRIu64 " pixels is more than the limit of %" PRIu64
                        " (PIL's decompression-bomb bound)", name, width, height, IT_IMAGE_MAX_PIXELS);
    if (channels == 1 && maxval > 255)
        return it__fail(err, IT_EUNSUPPORTED,
                        "%s: 16-bit PGM (maxval %" PRIu64 ") is not supported: PIL reads it as mode I and "
                        "convert(\"RGB\") clips it at 255; convert it to 8 bits", name, maxval);
    int bps = maxval > 255 ? 2 : 1;
    bytes = pixels * (uint64_t)channels * (uint64_t)bps; /* < 2^31: pixels is bounded above */
    if (len - pos < bytes)
        return it__fail(err, IT_EFORMAT, "%s: truncated: %" PRIu64 " x %" PRIu64 " pixels need %" PRIu64
                        " bytes after the header, the file has %zu", name, width, height, bytes, len - pos);
    uint8_t *out = it__malloc_n((size_t)pixels, 3);
    if (!out) return it__fail(err, IT_ENOMEM, "%s: out of memory for %" PRIu64 " pixels", name, pixels);
    pnm_expand(out, buf + pos, (size_t)pixels, channels, bps, (unsigned)maxval);
    *rgb = out;
    *h = (size_t)height;
    *w = (size_t)width;
    if (grey) *grey = channels == 1;
    return IT_OK;
}

/* ============================================================================================ */
/* Resampling (Pillow libImaging/Resample.c)                                                     */
/* ============================================================================================ */
/*
 * Output pixel xx of an axis sees the input interval centred at center = (xx + 0.5) * scale, with
 * scale = in / out. The filter is stretched by filterscale = max(scale, 1) (antialiasing when
 * shrinking): input x gets weight f((x - center + 0.5) / filterscale) for x in
 * [int(center - support + 0.5), int(center + support + 0.5)) within the image, support =
 * filter support * filterscale. The weights are divided by their sum, then rounded to fixed point
 * with PRECISION_BITS = 32 - 8 - 2 fraction bits (away from zero at .5). A pass sums
 * pixel * weight in integers from 2^(PRECISION_BITS-1) (rounding) and clips the sum >> 22 to
 * [0, 255]. The horizontal pass runs first (only on the rows the vertical pass reads), then the
 * vertical pass on its uint8 result; a pass whose size does not change is skipped.
 */
#define PRECISION_BITS (32 - 8 - 2)
#define PIL_PI 3.14159265358979323846 /* M_PI, which strict C11 does not define */

static double filter_box(double x)
{
    return x > -0.5 && x <= 0.5 ? 1.0 : 0.0;
}

static double filter_bilinear(double x)
{
    if (x < 0.0) x = -x;
    return x < 1.0 ? 1.0 - x : 0.0;
}

static double filter_hamming(double x)
{
    if (x < 0.0) x = -x;
    if (x == 0.0) return 1.0;
    if (x >= 1.0) return 0.0;
    x = x * PIL_PI;
    return sin(x) / x * (0.54f + 0.46f * cos(x)); /* float constants, as Pillow writes them */
}

/* Keys' cubic convolution with a = -0.5 (Keys 1981, eq. 15). */
static double filter_bicubic(double x)
{
    const double a = -0.5;
    if (x < 0.0) x = -x;
    if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
    if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
    return 0.0;
}

static double sinc(double x)
{
    if (x == 0.0) return 1.0;
    x = x * PIL_PI;
    return sin(x) / x;
}

static double filter_lanczos(double x)
{
    return -3.0 <= x && x < 3.0 ? sinc(x) * sinc(x / 3) : 0.0;
}

typedef struct resample_filter {
    double (*f)(double x);
    double support;
} resample_filter;

/* Indexed by IT_RESAMPLE_*; NEAREST has no entry. */
static const resample_filter FILTERS[6] = {
    {NULL, 0.0}, {filter_lanczos, 3.0}, {filter_bilinear, 1.0}, {filter_bicubic, 2.0}, {filter_box, 0.5},
    {filter_hamming, 1.0},
};

/* The weights of one axis: output i reads count[i] inputs from first[i], with fixed-point weights
 * k[off[i] .. off[i] + count[i]). */
typedef struct axis_coeffs {
    size_t *first;  /* [out] */
    size_t *count;  /* [out] */
    size_t *off;    /* [out] */
    int32_t *k;     /* [sum of count] */
} axis_coeffs;

static void coeffs_free(axis_coeffs *c)
{
    free(c->first);
    free(c->count);
    free(c->off);
    free(c->k);
}

/* The window of output xx (precompute_coeffs' bounds): sets *xmin and *n. */
static void axis_window(double center, double support, size_t in, int64_t ksize, size_t *xmin, size_t *n)
{
    int64_t lo = (int64_t)(center - support + 0.5); /* truncation, as C's (int) in Pillow */
    int64_t hi = (int64_t)(center + support + 0.5);
    if (lo < 0) lo = 0;
    if (hi > (int64_t)in) hi = (int64_t)in;
    hi -= lo;
    if (hi < 0) hi = 0;
    if (hi > ksize) hi = ksize;
    *xmin = (size_t)lo;
    *n = (size_t)hi;
}

/* precompute_coeffs + normalize_coeffs_8bpc for an axis of in -> out pixels (box 0 .. in, in
 * float as Pillow holds it). IT_OK or IT_ENOMEM. */
static int axis_coeffs_make(axis_coeffs *c, size_t in, size_t out, const resample_filter *fl)
{
    memset(c, 0, sizeof *c);
    float in0 = 0.0f, in1 = (float)in;
    double scale = (double)(in1 - in0) / (double)out, filterscale = scale < 1.0 ? 1.0 : scale;
    double support = fl->support * filterscale, ss = 1.0 / filterscale;
    int64_t ksize = (int64_t)ceil(support) * 2 + 1;
    c->first = it__malloc_n(out, sizeof *c->first);
    c->count = it__malloc_n(out, sizeof *c->count);
    c->off = it__malloc_n(out, sizeof *c->off);
    double *w = it__malloc_n((size_t)ksize < in ? (size_t)ksize : in, sizeof *w); /* a window holds <= in inputs */
    size_t total = 0;
    for (size_t xx = 0; c->first && c->count && c->off && xx < out; xx++) {
        axis_window(in0 + ((double)xx + 0.5) * scale, support, in, ksize, &c->first[xx], &c->count[xx]);
        c->off[xx] = total;
        total += c->count[xx]; /* at most out * ksize, and at most about 2 * (in + out) * support */
    }
    c->k = it__malloc_n(total ? total : 1, sizeof *c->k);
    if (!c->first || !c->count || !c->off || !w || !c->k) {
        free(w);
        coeffs_free(c);
        return IT_ENOMEM;
    }
    for (size_t xx = 0; xx < out; xx++) {
        double center = in0 + ((double)xx + 0.5) * scale, ww = 0.0;
        size_t xmin = c->first[xx], n = c->count[xx];
        for (size_t x = 0; x < n; x++) {
            w[x] = fl->f(((double)(x + xmin) - center + 0.5) * ss);
            ww += w[x];
        }
        for (size_t x = 0; x < n; x++) {
            double v = ww != 0.0 ? w[x] / ww : w[x];
            double s = v * (double)(1 << PRECISION_BITS);
            c->k[c->off[xx] + x] = (int32_t)(v < 0 ? -0.5 + s : 0.5 + s);
        }
    }
    free(w);
    return IT_OK;
}

/* clip8: the fixed-point sum to a byte (Pillow's table lookup at ss >> PRECISION_BITS). */
static uint8_t clip8(int64_t ss)
{
    if (ss < 0) return 0;
    ss >>= PRECISION_BITS;
    return ss > 255 ? 255 : (uint8_t)ss;
}

/* Horizontal pass (ImagingResampleHorizontal_8bpc): out [rows x ow x 3] from rows y0 .. y0 + rows
 * of in [. x w x 3]. */
static void pass_horizontal(uint8_t *out, const uint8_t *in, size_t w, size_t y0, size_t rows, size_t ow,
                            const axis_coeffs *c)
{
    for (size_t y = 0; y < rows; y++) {
        const uint8_t *row = in + (y0 + y) * w * 3;
        for (size_t xx = 0; xx < ow; xx++) {
            const int32_t *k = c->k + c->off[xx];
            const uint8_t *p = row + c->first[xx] * 3;
            int64_t s0 = 1 << (PRECISION_BITS - 1), s1 = s0, s2 = s0;
            for (size_t x = 0; x < c->count[xx]; x++) {
                s0 += (int64_t)p[3 * x] * k[x];
                s1 += (int64_t)p[3 * x + 1] * k[x];
                s2 += (int64_t)p[3 * x + 2] * k[x];
            }
            uint8_t *o = out + (y * ow + xx) * 3;
            o[0] = clip8(s0);
            o[1] = clip8(s1);
            o[2] = clip8(s2);
        }
    }
}

/* Vertical pass (ImagingResampleVertical_8bpc): out [oh x w x 3] from in [. x w x 3], whose row
 * r holds source row r + y0 (the windows in c are in source rows). */
static void pass_vertical(uint8_t *out, const uint8_t *in, size_t w, size_t y0, size_t oh, const axis_coeffs *c)
{
    for (size_t yy = 0; yy < oh; yy++) {
        const int32_t *k = c->k + c->off[yy];
        const uint8_t *col = in + (c->first[yy] - y0) * w * 3;
        for (size_t i = 0; i < w * 3; i++) {
            int64_t s = 1 << (PRECISION_BITS - 1);
            for (size_t y = 0; y < c->count[yy]; y++) s += (int64_t)col[y * w * 3 + i] * k[y];
            out[yy * w * 3 + i] = clip8(s);
        }
    }
}

/* ImagingResampleInner: vertical weights first (they say which rows the horizontal pass needs),
 * horizontal pass into a temporary image, vertical pass into out. */
static int resample(uint8_t *out, const uint8_t *in, size_t h, size_t w, size_t oh, size_t ow,
                    const resample_filter *fl)
{
    axis_coeffs cv, ch;
    int need_h = ow != w, need_v = oh != h;
    if (!need_h && !need_v) {
        memcpy(out, in, h * w * 3);
        return IT_OK;
    }
    if (!need_h) {
        TRY(axis_coeffs_make(&cv, h, oh, fl));
        pass_vertical(out, in, w, 0, oh, &cv);
        coeffs_free(&cv);
        return IT_OK;
    }
    TRY(axis_coeffs_make(&ch, w, ow, fl));
    if (!need_v) {
        pass_horizontal(out, in, w, 0, h, ow, &ch);
        coeffs_free(&ch);
        return IT_OK;
    }
    if (axis_coeffs_make(&cv, h, oh, fl) != IT_OK) {
        coeffs_free(&ch);
        return IT_ENOMEM;
    }
    size_t y0 = cv.first[0], y1 = cv.first[oh - 1] + cv.count[oh - 1]; /* rows the vertical pass reads */
    uint8_t *tmp = it__malloc_n(y1 > y0 ? y1 - y0 : 1, ow * 3); /* ow * 3 <= 3 * 2^31: no overflow */
    if (tmp) {
        pass_horizontal(tmp, in, w, y0, y1 - y0, ow, &ch);
        pass_vertical(out, tmp, ow, y0, oh, &cv);
    }
    free(tmp);
    coeffs_free(&ch);
    coeffs_free(&cv);
    return tmp ? IT_OK : IT_ENOMEM;
}

int it_image_resize(uint8_t *out, const uint8_t *in, size_t h, size_t w, size_t oh, size_t ow, int filter,
                    it_err *err)
{
    if (filter < IT_RESAMPLE_LANCZOS || filter > IT_RESAMPLE_HAMMING)
        return it__fail(err, IT_EINVAL, "image resize: resample filter %d is not supported (1..5: lanczos, bilinear, "
                        "bicubic, box, hamming)", filter);
    if (!h || !w || !oh || !ow || h > INT32_MAX || w > INT32_MAX || oh > INT32_MAX || ow > INT32_MAX)
        return it__fail(err, IT_EINVAL, "image resize: bad size %zu x %zu -> %zu x %zu", h, w, oh, ow);
    if (resample(out, in, h, w, oh, ow, &FILTERS[filter]) != IT_OK)
        return it__fail(err, IT_ENOMEM, "image resize: out of memory (%zu x %zu -> %zu x %zu)", h, w, oh, ow);
    return IT_OK;
}

/* ============================================================================================ */
/* Resize size, crop, rescale and normalise (transformers image_transforms.py)                   */
/* ============================================================================================ */

void it_image_resize_size(const it_image_proc *p, size_t h, size_t w, size_t *oh, size_t *ow)
{
    *oh = h;
    *ow = w;
    if (!p->do_resize) return;
    if (!p->shortest) {
        *oh = (size_t)p->size_h;
        *ow = (size_t)p->size_w;
        return;
    }
    /* get_resize_output_image_size, default_to_square=False: int(N * long / short), the product
     * exact (below 2^53) and the quotient correctly rounded, as Python's int / int is. */
    size_t shrt = w <= h ? w : h, lng = w <= h ? h : w, n = (size_t)p->size_h;
    size_t nl = (size_t)((double)n * (double)lng / (double)shrt);
    *oh = w <= h ? nl : n;
    *ow = w <= h ? n : nl;
}

void it_image_center_crop(uint8_t *out, const uint8_t *in, size_t h, size_t w, size_t ch, size_t cw)
{
    /* top = (h - ch) // 2 with Python's floor division; the padded branch of center_crop places
     * the image at ceil((ch - h) / 2) = -top, which is the same mapping. */
    int64_t dh = (int64_t)h - (int64_t)ch, dw = (int64_t)w - (int64_t)cw;
    int64_t top = dh >= 0 ? dh / 2 : -((-dh + 1) / 2), left = dw >= 0 ? dw / 2 : -((-dw + 1) / 2);
    for (size_t y = 0; y < ch; y++) {
        int64_t sy = (int64_t)y + top;
        for (size_t x = 0; x < cw; x++) {
            int64_t sx = (int64_t)x + left;
            uint8_t *o = out + (y * cw + x) * 3;
            if (sy < 0 || sy >= (int64_t)h || sx < 0 || sx >= (int64_t)w) {
                o[0] = o[1] = o[2] = 0;
            } else {
                memcpy(o, in + ((size_t)sy * w + (size_t)sx) * 3, 3);
            }
        }
    }
}

void it_image_normalize(float *out, const uint8_t *in, size_t h, size_t w, const it_image_proc *p)
{
    for (size_t c = 0; c < 3; c++) {
        float m = (float)p->mean[c], s = (float)p->std[c];
        float *o = out + c * h * w;
        for (size_t i = 0; i < h * w; i++) {
            /* rescale: image.astype(float64) * scale, then .astype(float32) */
            float v = p->do_rescale ? (float)((double)in[3 * i + c] * p->rescale_factor) : (float)in[3 * i + c];
            /* normalize: (image - mean) / std with mean, std cast to the image's float32 */
            if (p->do_normalize) {
                float d = v - m;
                v = d / s;
            }
            o[i] = v;
        }
    }
}

int it_image_preprocess(const uint8_t *rgb, size_t h, size_t w, const it_image_proc *p, float **pixels, size_t *oh,
                        size_t *ow, it_err *err)
{
    *pixels = NULL;
    *oh = *ow = 0;
    size_t rh, rw, ch, cw, n;
    it_image_resize_size(p, h, w, &rh, &rw);
    if (it__mul_size(rh, rw, &n) != 0 || n > IT_IMAGE_MAX_PIXELS)
        return it__fail(err, IT_EUNSUPPORTED, "image of %zu x %zu: the resized image (%zu x %zu) would have more than "
                        "%" PRIu64 " pixels", h, w, rh, rw, IT_IMAGE_MAX_PIXELS);
    ch = p->do_center_crop ? (size_t)p->crop_h : rh;
    cw = p->do_center_crop ? (size_t)p->crop_w : rw;
    size_t cn;
    if (it__mul_size(ch, cw, &cn) != 0) cn = SIZE_MAX; /* then the allocations below fail */
    uint8_t *resized = it__malloc_n(n, 3), *cropped = it__malloc_n(cn, 3);
    float *out = it__malloc_n(cn, 3 * sizeof(float));
    int rc = resized && cropped && out ? IT_OK : it__fail(err, IT_ENOMEM, "image preprocessing: out of memory");
    if (rc == IT_OK) rc = it_image_resize(resized, rgb, h, w, rh, rw, p->resample, err);
    if (rc == IT_OK) {
        it_image_center_crop(cropped, resized, rh, rw, ch, cw);
        it_image_normalize(out, cropped, ch, cw, p);
        *pixels = out;
        *oh = ch;
        *ow = cw;
    } else {
        free(out);
    }
    free(resized);
    free(cropped);
    return rc;
}

int it_image_load(const char *path, const it_image_proc *p, float **pixels, size_t *height, size_t *width,
                  it_err *err)
{
    *pixels = NULL;
    *height = *width = 0;
    char *data;
    size_t len, h, w;
    uint8_t *rgb;
    int grey;
    TRY(it__read_file(path, IMAGE_MAX_BYTES, &data, &len, err));
    int rc = it_image_decode_pnm(data, len, path, &rgb, &h, &w, &grey, err);
    free(data);
    if (rc != IT_OK) return rc;
    if (grey && !p->do_convert_rgb) {
        rc = it__fail(err, IT_EUNSUPPORTED, "%s: a grey image needs do_convert_rgb (transformers cannot normalise one "
                      "channel with three means)", path);
    } else {
        rc = it_image_preprocess(rgb, h, w, p, pixels, height, width, err);
        if (rc != IT_OK) it__err_prefix(err, path);
    }
    free(rgb);
    return rc;
}

/* ============================================================================================ */
/* preprocessor_config.json (CLIPImageProcessor.__init__, get_size_dict)                         */
/* ============================================================================================ */

/* true or false; the default when absent or null. */
static int rd_bool(const it__jreader *r, const char *key, int *out)
{
    const it_json *v = it__jr_get(r, key);
    if (!v) return IT_OK;
    if (v->type != IT_JSON_TRUE && v->type != IT_JSON_FALSE) return it__jr_bad(r, key, "true or false", v);
    *out = v->type == IT_JSON_TRUE;
    return IT_OK;
}

/* A side length: an integer in [1, IT_IMAGE_MAX_SIDE] (v not NULL). */
static int take_side(const it__jreader *r, const char *key, const it_json *v, int64_t *out)
{
    if (v->type != IT_JSON_INT || !v->i_ok || v->i < 1 || v->i > IT_IMAGE_MAX_SIDE)
        return it__jr_bad(r, key, "an integer in [1, 65536]", v);
    *out = v->i;
    return IT_OK;
}

/* Whether the keys of object v are exactly the n names (get_size_dict's VALID_SIZE_DICT_KEYS). */
static int keys_are(const it_json *v, const char *const *names, size_t n)
{
    if (v->n != n) return 0;
    for (size_t i = 0; i < n; i++)
        if (!it_json_get(v, names[i])) return 0;
    return 1;
}

/* A size dict: an int (shortest edge when square is 0, N x N when 1), [H, W], or an object with one
 * of get_size_dict's key sets. Sets *shortest and h, w (h alone for a shortest edge). */
static int take_size_dict(const it__jreader *r, const char *key, const it_json *v, int square, int *shortest, int64_t *h,
                          int64_t *w)
{
    static const char *const HW[] = {"height", "width"}, *const SE[] = {"shortest_edge"},
                             *const SL[] = {"shortest_edge", "longest_edge"}, *const LE[] = {"longest_edge"},
                             *const MX[] = {"max_height", "max_width"};
    char sub[64];
    if (v->type == IT_JSON_INT) {
        TRY(take_side(r, key, v, h));
        *w = *h;
        *shortest = !square;
        return IT_OK;
    }
    if (v->type == IT_JSON_ARR && v->n == 2) {
        snprintf(sub, sizeof sub, "%s[0]", key);
        TRY(take_side(r, sub, &v->items[0], h));
        snprintf(sub, sizeof sub, "%s[1]", key);
        *shortest = 0;
        return take_side(r, sub, &v->items[1], w);
    }
    if (v->type != IT_JSON_OBJ) return it__jr_bad(r, key, "an integer, [height, width] or an object", v);
    if (keys_are(v, HW, 2)) {
        snprintf(sub, sizeof sub, "%s.height", key);
        TRY(take_side(r, sub, it_json_get(v, "height"), h));
        snprintf(sub, sizeof sub, "%s.width", key);
        *shortest = 0;
        return take_side(r, sub, it_json_get(v, "width"), w);
    }
    if ((keys_are(v, SE, 1) || keys_are(v, SL, 2)) && !square) {
        /* CLIPImageProcessor.resize reads shortest_edge only; longest_edge is never passed on */
        snprintf(sub, sizeof sub, "%s.shortest_edge", key);
        *shortest = 1;
        return take_side(r, sub, it_json_get(v, "shortest_edge"), h);
    }
    if (keys_are(v, SE, 1) || keys_are(v, SL, 2) || keys_are(v, LE, 1) || keys_are(v, MX, 2))
        return it__fail(r->err, IT_EUNSUPPORTED, "%s: %s: CLIPImageProcessor needs %s", r->path, key,
                        square ? "height and width" : "shortest_edge, or height and width");
    return it__fail(r->err, IT_EFORMAT, "%s: %s: expected the keys {height, width} or {shortest_edge}", r->path, key);
}

/* A number (integer literals count), finite; nonzero when nonzero is set. */
static int take_number(const it__jreader *r, const char *key, const it_json *v, int nonzero, double *out)
{
    if ((v->type != IT_JSON_INT && v->type != IT_JSON_NUM) || !isfinite(v->d) || (nonzero && v->d == 0.0))
        return it__jr_bad(r, key, nonzero ? "a nonzero number" : "a number", v);
    *out = v->d;
    return IT_OK;
}

/* image_mean / image_std: one number for every channel, or three. */
static int rd_channels(const it__jreader *r, const char *key, int nonzero, double out[3])
{
    const it_json *v = it__jr_get(r, key);
    if (!v) return IT_OK;
    if (v->type == IT_JSON_ARR) {
        if (v->n != 3)
            return it__fail(r->err, IT_EFORMAT, "%s: %s: expected 3 values (RGB), got %zu", r->path, key, v->n);
        for (size_t c = 0; c < 3; c++) TRY(take_number(r, key, &v->items[c], nonzero, &out[c]));
        return IT_OK;
    }
    TRY(take_number(r, key, v, nonzero, &out[0]));
    out[1] = out[2] = out[0];
    return IT_OK;
}

/* resample: PIL's filter number; NEAREST uses another code path (an affine transform). */
static int rd_resample(const it__jreader *r, int *out)
{
    const it_json *v = it__jr_get(r, "resample");
    if (!v) return IT_OK;
    if (v->type != IT_JSON_INT || !v->i_ok || v->i < 0 || v->i > 5)
        return it__jr_bad(r, "resample", "a PIL filter number in [0, 5]", v);
    if (v->i == IT_RESAMPLE_NEAREST)
        return it__fail(r->err, IT_EUNSUPPORTED, "%s: resample: 0 (nearest) is not supported; use 1..5", r->path);
    *out = (int)v->i;
    return IT_OK;
}

/* The processor class, when named: only CLIP's pipeline is implemented here. */
static int check_type(const it__jreader *r, const char *key)
{
    const it_json *v = it__jr_get(r, key);
    if (!v) return IT_OK;
    if (v->type != IT_JSON_STR) return it__jr_bad(r, key, "a class name", v);
    if (!strcmp(v->s, "CLIPImageProcessor") || !strcmp(v->s, "CLIPFeatureExtractor")) return IT_OK;
    return it__fail(r->err, IT_EUNSUPPORTED, "%s: %s: only CLIPImageProcessor is implemented, got \"%.100s\"", r->path,
                    key, v->s);
}

static int read_proc(it_image_proc *p, const it__jreader *r)
{
    TRY(check_type(r, "image_processor_type"));
    TRY(check_type(r, "feature_extractor_type"));
    TRY(rd_bool(r, "do_resize", &p->do_resize));
    const it_json *v = it__jr_get(r, "size");
    if (v) TRY(take_size_dict(r, "size", v, 0, &p->shortest, &p->size_h, &p->size_w));
    TRY(rd_resample(r, &p->resample));
    TRY(rd_bool(r, "do_center_crop", &p->do_center_crop));
    v = it__jr_get(r, "crop_size");
    int sq = 0;
    if (v) TRY(take_size_dict(r, "crop_size", v, 1, &sq, &p->crop_h, &p->crop_w));
    TRY(rd_bool(r, "do_rescale", &p->do_rescale));
    v = it__jr_get(r, "rescale_factor");
    if (v) TRY(take_number(r, "rescale_factor", v, 0, &p->rescale_factor));
    TRY(rd_bool(r, "do_normalize", &p->do_normalize));
    TRY(rd_channels(r, "image_mean", 0, p->mean));
    TRY(rd_channels(r, "image_std", 1, p->std));
    return rd_bool(r, "do_convert_rgb", &p->do_convert_rgb);
}

void it_image_proc_default(it_image_proc *p, int64_t default_size)
{
    int64_t n = default_size > 0 && default_size <= IT_IMAGE_MAX_SIDE ? default_size : 224;
    memset(p, 0, sizeof *p);
    p->do_resize = p->do_center_crop = p->do_rescale = p->do_normalize = p->do_convert_rgb = 1;
    p->shortest = 1;
    p->size_h = p->size_w = n;
    p->crop_h = p->crop_w = n;
    p->resample = IT_RESAMPLE_BICUBIC;
    p->rescale_factor = 1.0 / 255.0;
    memcpy(p->mean, OPENAI_CLIP_MEAN, sizeof p->mean);
    memcpy(p->std, OPENAI_CLIP_STD, sizeof p->std);
}

int it_image_proc_load(it_image_proc *p, const char *model_dir, int64_t default_size, it_err *err)
{
    it_image_proc_default(p, default_size);
    char *file = it__is_dir(model_dir) ? it__path_join(model_dir, "preprocessor_config.json") : it__strdup(model_dir);
    if (!file) return it__fail(err, IT_ENOMEM, "%s: out of memory", model_dir);
    if (!it__exists(file)) {
        free(file);
        return IT_OK;
    }
    it_image_proc_default(p, 224); /* a file: the class defaults for what it leaves out */
    char *text = NULL;
    size_t len = 0;
    it_json_doc *doc = NULL;
    int rc = it__read_file(file, CONFIG_MAX_BYTES, &text, &len, err);
    if (rc == IT_OK) {
        rc = it_json_parse(&doc, text, len, IT_JSON_NODUP, err);
        if (rc != IT_OK) it__err_prefix(err, file);
    }
    if (rc == IT_OK && it_json_root(doc)->type != IT_JSON_OBJ)
        rc = it__fail(err, IT_EFORMAT, "%s: expected a JSON object at the top level", file);
    if (rc == IT_OK) {
        it__jreader r = {file, it_json_root(doc), err};
        rc = read_proc(p, &r);
    }
    if (rc != IT_OK) it_image_proc_default(p, default_size);
    it_json_free(doc);
    free(text);
    free(file);
    return rc;
}
