/* test/test_image.c -- CLIP image preprocessing (image.c) against the references that
 * test/gen_image_fixture.py ran (data/image/): PIL's PPM decoding and Image.resize byte for byte,
 * CLIPImageProcessor's float32 pixel values bit for bit; every malformed-file refusal; the
 * preprocessor_config.json variants; and hand-checked properties that need no fixture. */
#include "test.h"

#include "iteris.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* ============================================================================================ */
/* Helpers                                                                                       */
/* ============================================================================================ */

/* Whether msg is one line of printable ASCII. */
static int one_line(const char *msg)
{
    for (const char *c = msg; *c; c++)
        if ((unsigned char)*c < 0x20 || (unsigned char)*c >= 0x7F) return 0;
    return 1;
}

/* Decodes the fixture image data/image/<name>; NULL on failure (reported). */
static uint8_t *decode_fixture(const char *name, size_t *h, size_t *w, int line)
{
    char rel[64];
    snprintf(rel, sizeof rel, "image/%s", name);
    size_t len;
    unsigned char *buf = test_read_file(test_data(rel), &len);
    if (!buf) {
        test_fail(__FILE__, line, "cannot read %s", test_data(rel));
        return NULL;
    }
    uint8_t *rgb = NULL;
    it_err e = {0, ""};
    if (it_image_decode_pnm(buf, len, name, &rgb, h, w, NULL, &e) != IT_OK)
        test_fail(__FILE__, line, "decode %s: %s", name, e.msg);
    free(buf);
    return rgb;
}

/* The expected tensors; NULL on failure (reported). */
static it_st *open_expected(void)
{
    it_st *st = NULL;
    it_err e = {0, ""};
    if (it_st_open(&st, test_data("image/expected.safetensors"), &e) != IT_OK) {
        test_fail(__FILE__, __LINE__, "%s", e.msg);
        return NULL;
    }
    return st;
}

/* ============================================================================================ */
/* Against PIL and transformers                                                                  */
/* ============================================================================================ */

/* decode/<img>: PIL's Image.open(f).convert("RGB"), maxval scaling and grey included; c.ppm
 * (maxval 255) is its own pixel bytes. */
static void test_image_decode_fixtures(void)
{
    it_st *st = open_expected();
    if (!st) return;
    size_t checked = 0;
    for (size_t i = 0; i < it_st_count(st); i++) {
        const it_tensor *t = it_st_tensor(st, i);
        if (strncmp(t->name, "decode/", 7) != 0) continue;
        size_t h = 0, w = 0;
        uint8_t *rgb = decode_fixture(t->name + 7, &h, &w, __LINE__);
        if (!rgb) continue;
        CHECKF(t->dtype == IT_U8 && t->ndim == 3 && t->shape[0] == h && t->shape[1] == w && t->shape[2] == 3,
               "%s: shape", t->name);
        if (t->numel == h * w * 3) CHECKF(memcmp(rgb, t->data, t->nbytes) == 0, "%s differs from PIL", t->name);
        free(rgb);
        checked++;
    }
    CHECK(checked == 5);
    size_t h, w, len;
    uint8_t *rgb = decode_fixture("c.ppm", &h, &w, __LINE__);
    unsigned char *raw = test_read_file(test_data("image/c.ppm"), &len);
    CHECK(rgb && raw && h == 200 && w == 300 && len == 15 + 180000);
    if (rgb && raw && len == 15 + 180000) CHECK(memcmp(rgb, raw + 15, 180000) == 0);
    free(rgb);
    free(raw);
    it_st_close(st);
}

/* resize/<img>/<filter>/<oh>x<ow>: Image.resize((ow, oh), filter) of the decoded image, byte for
 * byte, for up- and down-scaling, one axis only, an unchanged size, and all five filters. */
static void test_image_resize_pil(void)
{
    it_st *st = open_expected();
    if (!st) return;
    size_t checked = 0, bytes = 0, differ = 0;
    int maxdiff = 0;
    for (size_t i = 0; i < it_st_count(st); i++) {
        const it_tensor *t = it_st_tensor(st, i);
        char img[32];
        int filter;
        size_t oh, ow, h = 0, w = 0;
        if (sscanf(t->name, "resize/%31[^/]/%d/%zux%zu", img, &filter, &oh, &ow) != 4) continue;
        uint8_t *rgb = decode_fixture(img, &h, &w, __LINE__);
        uint8_t *out = malloc(oh * ow * 3);
        it_err e = {0, ""};
        int rc = rgb && out ? it_image_resize(out, rgb, h, w, oh, ow, filter, &e) : -1;
        CHECKF(rc == IT_OK, "%s: %s", t->name, e.msg);
        CHECKF(t->numel == oh * ow * 3, "%s: shape", t->name);
        if (rc == IT_OK && t->numel == oh * ow * 3) {
            const uint8_t *want = (const uint8_t *)t->data;
            size_t n = 0;
            for (size_t k = 0; k < oh * ow * 3; k++) {
                int d = abs((int)out[k] - (int)want[k]);
                if (d > maxdiff) maxdiff = d;
                n += d != 0;
            }
            CHECKF(n == 0, "%s: %zu of %zu bytes differ from PIL", t->name, n, oh * ow * 3);
            differ += n;
            bytes += oh * ow * 3;
        }
        free(rgb);
        free(out);
        checked++;
    }
    CHECK(checked == 26);
    test_note("%zu resizes against PIL: %zu of %zu bytes differ, max abs diff %d", checked, differ, bytes, maxdiff);
    it_st_close(st);
}

/* pre/<config>/<img>: it_image_proc_load + it_image_load against CLIPImageProcessor's pixel values
 * (transformers' numpy steps in float64 / float32); expected bit-identical. */
static void test_image_preprocess_fixtures(void)
{
    it_st *st = open_expected();
    if (!st) return;
    size_t checked = 0, values = 0, differ = 0;
    double maxabs = 0, maxrel = 0;
    for (size_t i = 0; i < it_st_count(st); i++) {
        const it_tensor *t = it_st_tensor(st, i);
        char cfg[32], img[32], rel[96];
        if (sscanf(t->name, "pre/%31[^/]/%31s", cfg, img) != 2) continue;
        it_image_proc p;
        it_err e = {0, ""};
        int absent = !strcmp(cfg, "absent32");
        snprintf(rel, sizeof rel, "image/%s", cfg);
        int rc = it_image_proc_load(&p, absent ? test_tmppath("no-model") : test_data(rel), absent ? 32 : 0, &e);
        CHECKF(rc == IT_OK, "%s: %s", t->name, e.msg);
        float *px = NULL;
        size_t h = 0, w = 0;
        snprintf(rel, sizeof rel, "image/%s", img);
        if (rc == IT_OK) rc = it_image_load(test_data(rel), &p, &px, &h, &w, &e);
        CHECKF(rc == IT_OK, "%s: %s", t->name, e.msg);
        CHECKF(t->dtype == IT_F32 && t->ndim == 3 && t->shape[0] == 3 && t->shape[1] == h && t->shape[2] == w,
               "%s: shape [3 x %zu x %zu]", t->name, h, w);
        if (rc == IT_OK && t->dtype == IT_F32 && t->numel == 3 * h * w) {
            float *want = malloc(t->numel * sizeof *want);
            size_t n = 0;
            if (want && it_tensor_to_f32(t, want, NULL) == IT_OK) {
                for (size_t k = 0; k < t->numel; k++) {
                    double d = fabs((double)px[k] - (double)want[k]);
                    if (d > maxabs) maxabs = d;
                    if (fabs(want[k]) > 0 && d / fabs(want[k]) > maxrel) maxrel = d / fabs(want[k]);
                    n += memcmp(&px[k], &want[k], sizeof(float)) != 0;
                }
            }
            CHECKF(n == 0, "%s: %zu of %zu values differ from transformers", t->name, n, (size_t)t->numel);
            differ += n;
            values += t->numel;
            free(want);
        }
        free(px);
        checked++;
    }
    CHECK(checked == 48);
    test_note("%zu preprocessed images: %zu of %zu float32 values differ, max abs diff %g, max rel diff %g", checked,
              differ, values, maxabs, maxrel);
    it_st_close(st);
}

/* ============================================================================================ */
/* Malformed files                                                                               */
/* ============================================================================================ */

/* Checks that decoding text[0..len) fails with code and a one-line message "bad.pnm: ..." that
 * contains needle. */
static void refuse(const char *text, size_t len, int code, const char *needle, int line)
{
    uint8_t *rgb = (uint8_t *)&rgb; /* not NULL, to see it cleared */
    size_t h = 1, w = 1;
    it_err e = {0, ""};
    int rc = it_image_decode_pnm(text, len, "bad.pnm", &rgb, &h, &w, NULL, &e);
    if (rc != code || e.code != code)
        test_fail(__FILE__, line, "rc %d (err.code %d), want %d: %s", rc, e.code, code, e.msg);
    if (rc == IT_OK) free(rgb);
    else if (rgb || h || w) test_fail(__FILE__, line, "outputs not cleared");
    if (strncmp(e.msg, "bad.pnm: ", 9) != 0) test_fail(__FILE__, line, "message \"%s\" does not name the file", e.msg);
    if (needle && !strstr(e.msg, needle)) test_fail(__FILE__, line, "message \"%s\" lacks \"%s\"", e.msg, needle);
    if (!one_line(e.msg)) test_fail(__FILE__, line, "message is not one printable line: %s", e.msg);
}
#define REFUSE(lit, code, needle) refuse((lit), sizeof(lit) - 1, (code), (needle), __LINE__)

static void test_image_malformed(void)
{
    REFUSE("", IT_EFORMAT, "not a binary PGM/PPM");
    REFUSE("P6", IT_EFORMAT, "not a binary PGM/PPM");
    REFUSE("P7\n1 1\n255\n", IT_EFORMAT, "not a binary PGM/PPM");
    REFUSE("GIF89a", IT_EFORMAT, "not a binary PGM/PPM");
    REFUSE("P6#c\n1 1\n255\nabc", IT_EFORMAT, "not a binary PGM/PPM");
    REFUSE("p6\n1 1\n255\nabc", IT_EFORMAT, "not a binary PGM/PPM");
    REFUSE("P3\n1 1\n255\n1 2 3\n", IT_EUNSUPPORTED, "plain-text");
    REFUSE("P4\n8 1\n\xff", IT_EUNSUPPORTED, "bitmap");
    REFUSE("P6\n", IT_EFORMAT, "ends before the width");
    REFUSE("P6\n7 5\n", IT_EFORMAT, "ends before the maxval");
    REFUSE("P6\n7 5\n255", IT_EFORMAT, "ends in the maxval");
    REFUSE("P6\n7 # comment to the end", IT_EFORMAT, "ends before the height");
    REFUSE("P6\n7 5\n255\n\x01\x02", IT_EFORMAT, "need 105 bytes after the header, the file has 2");
    REFUSE("P5\n2 2\n255\n\x01\x02\x03", IT_EFORMAT, "truncated");
    REFUSE("P6\n1 1\n1000\n\x01\x02\x03\x04\x05", IT_EFORMAT, "need 6 bytes");
    REFUSE("P6\n1 1\n0\n\x01\x02\x03", IT_EFORMAT, "maxval 0 is outside");
    REFUSE("P6\n1 1\n65536\n\x01\x02\x03\x04\x05\x06", IT_EFORMAT, "maxval 65536 is outside");
    REFUSE("P6\n0 5\n255\n", IT_EFORMAT, "empty image");
    REFUSE("P6\n5 0\n255\n", IT_EFORMAT, "empty image");
    REFUSE("P6\n100000 100000\n255\n\x01", IT_EFORMAT, "more than the limit");
    REFUSE("P6\n9999999999 9999999999\n255\n", IT_EFORMAT, "more than the limit");
    REFUSE("P6\n12345678901 1\n255\n", IT_EFORMAT, "more than 10 digits");
    REFUSE("P6\n-1 1\n255\n", IT_EFORMAT, "expected the width");
    REFUSE("P6\n+1 1\n255\n", IT_EFORMAT, "expected the width");
    REFUSE("P6\n1x 1\n255\n", IT_EFORMAT, "unexpected byte 0x78 after the width");
    REFUSE("P6\n1 1\n255#c\n\x01\x02\x03", IT_EFORMAT, "comment touches the maxval");
    REFUSE("P6\n1 1\n255", IT_EFORMAT, "ends in the maxval");
    REFUSE("P5\n1 1\n65535\n\x01\x02", IT_EUNSUPPORTED, "16-bit PGM");
    /* comments anywhere between tokens, CR endings, tabs; extra bytes after the image ignored */
    static const char good[] = "P6 # c1\r2\t# c2\n#\n1 #c3\r\n255\n\x01\x02\x03\x04\x05\x06trailing";
    uint8_t *rgb = NULL;
    size_t h = 0, w = 0;
    int grey = -1;
    it_err e = {0, ""};
    CHECKF(it_image_decode_pnm(good, sizeof good - 1, "good", &rgb, &h, &w, &grey, &e) == IT_OK, "%s", e.msg);
    CHECK(rgb && h == 1 && w == 2 && grey == 0 && rgb[0] == 1 && rgb[5] == 6);
    free(rgb);
    /* grey replicated; maxval 3 scales to round(v / 3 * 255) and clamps above maxval */
    static const char pgm[] = "P5\n4 1\n3\n\x00\x01\x02\x07";
    CHECKF(it_image_decode_pnm(pgm, sizeof pgm - 1, "pgm", &rgb, &h, &w, &grey, &e) == IT_OK, "%s", e.msg);
    static const uint8_t want[12] = {0, 0, 0, 85, 85, 85, 170, 170, 170, 255, 255, 255};
    CHECK(rgb && h == 1 && w == 4 && grey == 1 && !memcmp(rgb, want, 12));
    free(rgb);
    /* 16-bit PPM: big-endian samples scaled to 8 bits: 500 / 1000 * 255 = 127.5 -> 128, 250 -> 63.75 -> 64,
     * 1001 clamped to 255 */
    static const char ppm16[] = "P6\n1 1\n1000\n\x01\xf4\x00\xfa\x03\xe9";
    CHECKF(it_image_decode_pnm(ppm16, sizeof ppm16 - 1, "ppm16", &rgb, &h, &w, &grey, &e) == IT_OK, "%s", e.msg);
    CHECK(rgb && rgb[0] == 128 && rgb[1] == 64 && rgb[2] == 255);
    free(rgb);
    /* Python's round: ties to even (1 / 102 * 255 = 2.5 -> 2, 3 / 102 * 255 = 7.5 -> 8, 1 / 10 * 255 = 25.5 -> 26) */
    static const char ties[] = "P6\n1 1\n102\n\x01\x03\x04";
    CHECKF(it_image_decode_pnm(ties, sizeof ties - 1, "ties", &rgb, &h, &w, &grey, &e) == IT_OK, "%s", e.msg);
    CHECK(rgb && rgb[0] == 2 && rgb[1] == 8 && rgb[2] == 10);
    free(rgb);
}

/* it_image_load names the file; a missing file, a grey image without do_convert_rgb. */
static void test_image_load_errors(void)
{
    it_image_proc p;
    it_image_proc_default(&p, 0);
    float *px = (float *)&px;
    size_t h = 1, w = 1;
    it_err e = {0, ""};
    const char *path = test_tmppath("bad.ppm");
    CHECK(test_write_file(path, "P6\n2 2\n255\n\x01", 12) == 0);
    CHECK(it_image_load(path, &p, &px, &h, &w, &e) == IT_EFORMAT && !px && !h && !w);
    CHECKF(!strncmp(e.msg, path, strlen(path)) && strstr(e.msg, "truncated") && one_line(e.msg), "%s", e.msg);
    CHECK(it_image_load(test_tmppath("absent.ppm"), &p, &px, &h, &w, &e) == IT_ENOTFOUND || e.code == IT_EIO);
    CHECKF(strstr(e.msg, "absent.ppm") != NULL, "%s", e.msg);
    p.do_convert_rgb = 0;
    CHECK(it_image_load(test_data("image/d.pgm"), &p, &px, &h, &w, &e) == IT_EUNSUPPORTED);
    CHECKF(strstr(e.msg, "do_convert_rgb") && one_line(e.msg), "%s", e.msg);
    CHECK(it_image_load(test_data("image/a.ppm"), &p, &px, &h, &w, &e) == IT_OK && h == 224 && w == 224);
    free(px);
}

/* Every prefix and many one-byte mutations of a good file: an image or a one-line IT_EFORMAT /
 * IT_EUNSUPPORTED, never a crash (the sanitizer builds check the memory accesses). */
static void test_image_fuzz(void)
{
    size_t len;
    unsigned char *good = test_read_file(test_data("image/b.ppm"), &len);
    if (!good) {
        CHECK(good != NULL);
        return;
    }
    unsigned char *buf = malloc(len);
    uint64_t s = 0x9E3779B97F4A7C15u;
    size_t ok = 0, bad = 0;
    for (size_t i = 0; buf && i < 3000; i++) {
        size_t n = len;
        memcpy(buf, good, len);
        if (i < 120) {
            n = i; /* prefixes, the header's bytes among them */
        } else {
            for (int m = 0; m < 1 + (int)(i % 3); m++) {
                s = s * 6364136223846793005u + 1442695040888963407u;
                buf[(s >> 33) % 80 % len] = (unsigned char)(s >> 20);
            }
        }
        uint8_t *rgb = NULL;
        size_t h, w;
        it_err e = {0, ""};
        int rc = it_image_decode_pnm(buf, n, "fuzz", &rgb, &h, &w, NULL, &e);
        if (rc == IT_OK) {
            ok++;
            CHECK(rgb && h * w * 3 <= len);
            free(rgb);
        } else {
            bad++;
            CHECKF((rc == IT_EFORMAT || rc == IT_EUNSUPPORTED) && one_line(e.msg) && !rgb, "%d %s", rc, e.msg);
        }
    }
    test_note("fuzz: %zu decoded, %zu refused", ok, bad);
    free(buf);
    free(good);
}

/* ============================================================================================ */
/* preprocessor_config.json                                                                      */
/* ============================================================================================ */

/* Writes text as a model folder's preprocessor_config.json and loads it. */
static int load_cfg(const char *text, int64_t def, it_image_proc *p, it_err *e)
{
    const char *dir = test_tmpdir();
    CHECK(test_write_file(test_tmppath("preprocessor_config.json"), text, strlen(text)) == 0);
    return it_image_proc_load(p, dir, def, e);
}

static void cfg_refuse(const char *text, int code, const char *needle, int line)
{
    it_image_proc p;
    it_err e = {0, ""};
    int rc = load_cfg(text, 0, &p, &e);
    if (rc != code) test_fail(__FILE__, line, "rc %d, want %d: %s", rc, code, e.msg);
    if (!strstr(e.msg, "preprocessor_config.json")) test_fail(__FILE__, line, "message \"%s\" lacks the file", e.msg);
    if (needle && !strstr(e.msg, needle)) test_fail(__FILE__, line, "message \"%s\" lacks \"%s\"", e.msg, needle);
    if (!one_line(e.msg)) test_fail(__FILE__, line, "message is not one line: %s", e.msg);
    if (p.size_h != 224 || !p.do_resize) test_fail(__FILE__, line, "defaults not restored");
}
#define CFG_REFUSE(text, code, needle) cfg_refuse((text), (code), (needle), __LINE__)

static void test_image_config(void)
{
    it_image_proc p;
    it_err e = {0, ""};
    /* absent file: the defaults, with the model's image size */
    CHECK(it_image_proc_load(&p, test_tmppath("no-such-model"), 336, &e) == IT_OK);
    CHECK(p.do_resize && p.shortest && p.size_h == 336 && p.crop_h == 336 && p.crop_w == 336);
    CHECK(p.resample == IT_RESAMPLE_BICUBIC && p.do_center_crop && p.do_rescale && p.do_normalize && p.do_convert_rgb);
    CHECK(p.rescale_factor == 1.0 / 255 && p.mean[0] == 0.48145466 && p.std[2] == 0.27577711);
    /* a file: what it leaves out is the class default (224), not the model's size */
    CHECK(load_cfg("{}", 336, &p, &e) == IT_OK && p.size_h == 224 && p.crop_h == 224);
    CHECK(load_cfg("{\"size\": 300, \"crop_size\": 280, \"unknown\": [1, {}]}", 0, &p, &e) == IT_OK);
    CHECK(p.shortest && p.size_h == 300 && p.crop_h == 280 && p.crop_w == 280);
    CHECK(load_cfg("{\"size\": [30, 40], \"crop_size\": [20, 25]}", 0, &p, &e) == IT_OK);
    CHECK(!p.shortest && p.size_h == 30 && p.size_w == 40 && p.crop_h == 20 && p.crop_w == 25);
    CHECK(load_cfg("{\"size\": {\"shortest_edge\": 64, \"longest_edge\": 9}}", 0, &p, &e) == IT_OK);
    CHECK(p.shortest && p.size_h == 64);
    CHECK(load_cfg("{\"size\": null, \"image_mean\": null, \"image_std\": 2, \"resample\": 2, \"do_resize\": false, "
                   "\"rescale_factor\": 1, \"image_processor_type\": \"CLIPImageProcessor\"}", 0, &p, &e) == IT_OK);
    CHECK(p.size_h == 224 && p.mean[1] == 0.4578275 && p.std[0] == 2 && p.std[2] == 2 && p.resample == 2);
    CHECK(!p.do_resize && p.rescale_factor == 1.0);
    CFG_REFUSE("[]", IT_EFORMAT, "JSON object");
    CFG_REFUSE("{\"size\": 1,}", IT_EFORMAT, NULL);
    CFG_REFUSE("{\"size\": 1, \"size\": 2}", IT_EFORMAT, "size");
    CFG_REFUSE("{\"do_resize\": \"yes\"}", IT_EFORMAT, "do_resize: expected true or false");
    CFG_REFUSE("{\"size\": 0}", IT_EFORMAT, "size: expected an integer in [1, 65536], got 0");
    CFG_REFUSE("{\"size\": 70000}", IT_EFORMAT, "size");
    CFG_REFUSE("{\"size\": 2.5}", IT_EFORMAT, "size");
    CFG_REFUSE("{\"size\": [1, 2, 3]}", IT_EFORMAT, "size");
    CFG_REFUSE("{\"size\": {\"height\": 5}}", IT_EFORMAT, "size: expected the keys");
    CFG_REFUSE("{\"size\": {\"height\": 5, \"width\": -1}}", IT_EFORMAT, "size.width");
    CFG_REFUSE("{\"size\": {\"shortest_edge\": 5, \"height\": 5}}", IT_EFORMAT, "size");
    CFG_REFUSE("{\"size\": {\"longest_edge\": 5}}", IT_EUNSUPPORTED, "shortest_edge");
    CFG_REFUSE("{\"size\": {\"max_height\": 5, \"max_width\": 5}}", IT_EUNSUPPORTED, "size");
    CFG_REFUSE("{\"crop_size\": {\"shortest_edge\": 5}}", IT_EUNSUPPORTED, "crop_size: CLIPImageProcessor needs");
    CFG_REFUSE("{\"resample\": 0}", IT_EUNSUPPORTED, "nearest");
    CFG_REFUSE("{\"resample\": 6}", IT_EFORMAT, "resample");
    CFG_REFUSE("{\"rescale_factor\": \"1/255\"}", IT_EFORMAT, "rescale_factor");
    CFG_REFUSE("{\"image_mean\": [0.5, 0.5]}", IT_EFORMAT, "image_mean: expected 3 values");
    CFG_REFUSE("{\"image_std\": [0.5, 0, 0.5]}", IT_EFORMAT, "image_std: expected a nonzero number");
    CFG_REFUSE("{\"image_processor_type\": \"ViTImageProcessor\"}", IT_EUNSUPPORTED, "ViTImageProcessor");
    CFG_REFUSE("{\"feature_extractor_type\": 3}", IT_EFORMAT, "feature_extractor_type");
    /* the path may name the file itself */
    CHECK(it_image_proc_load(&p, test_data("image/hw/preprocessor_config.json"), 0, &e) == IT_OK);
    CHECK(!p.shortest && p.size_h == 36 && p.size_w == 52 && p.crop_h == 31 && p.mean[2] == 0.5);
}

/* ============================================================================================ */
/* Properties without a fixture                                                                  */
/* ============================================================================================ */

/* get_resize_output_image_size, the crop offsets (floor division), the float32 steps. */
static void test_image_steps(void)
{
    it_image_proc p;
    it_image_proc_default(&p, 224);
    size_t oh, ow;
    it_image_resize_size(&p, 200, 300, &oh, &ow);
    CHECK(oh == 224 && ow == 336);
    it_image_resize_size(&p, 5, 7, &oh, &ow); /* int(224 * 7 / 5) = int(313.6) */
    CHECK(oh == 224 && ow == 313);
    it_image_resize_size(&p, 7, 5, &oh, &ow);
    CHECK(oh == 313 && ow == 224);
    it_image_resize_size(&p, 224, 1000, &oh, &ow);
    CHECK(oh == 224 && ow == 1000);
    p.shortest = 0;
    p.size_h = 3;
    p.size_w = 4;
    it_image_resize_size(&p, 200, 300, &oh, &ow);
    CHECK(oh == 3 && ow == 4);
    p.do_resize = 0;
    it_image_resize_size(&p, 200, 300, &oh, &ow);
    CHECK(oh == 200 && ow == 300);

    /* crop 5 x 1 -> 2 x 4: top = 3 // 2 = 1, left = -3 // 2 = -2 (image columns at 2 only) */
    uint8_t in[15], out[24];
    for (int i = 0; i < 15; i++) in[i] = (uint8_t)(10 + i);
    it_image_center_crop(out, in, 5, 1, 2, 4);
    static const uint8_t want[24] = {0, 0, 0, 0, 0, 0, 13, 14, 15, 0, 0, 0, 0, 0, 0, 0, 0, 0, 16, 17, 18, 0, 0, 0};
    CHECK(!memcmp(out, want, 24));

    /* resize to the same size copies; an unsupported filter is refused */
    uint8_t same[15];
    it_err e = {0, ""};
    CHECK(it_image_resize(same, in, 5, 1, 5, 1, IT_RESAMPLE_BICUBIC, &e) == IT_OK && !memcmp(same, in, 15));
    CHECK(it_image_resize(same, in, 5, 1, 5, 1, IT_RESAMPLE_NEAREST, &e) == IT_EINVAL);
    /* a constant image stays constant under every filter (weights sum to 1 in fixed point) */
    uint8_t flat[6 * 7 * 3], big[13 * 4 * 3];
    memset(flat, 77, sizeof flat);
    for (int f = 1; f <= 5; f++) {
        CHECK(it_image_resize(big, flat, 6, 7, 13, 4, f, &e) == IT_OK);
        int ok = 1;
        for (size_t i = 0; i < sizeof big; i++) ok &= big[i] == 77;
        CHECKF(ok, "filter %d", f);
    }

    /* rescale in double then float32; normalise in float32; channel-first */
    it_image_proc_default(&p, 224);
    uint8_t px[6] = {0, 128, 255, 1, 2, 3};
    float o[6];
    it_image_normalize(o, px, 1, 2, &p);
    for (int c = 0; c < 3; c++)
        for (int x = 0; x < 2; x++) {
            float v = (float)((double)px[3 * x + c] * (1.0 / 255)), m = (float)p.mean[c], s = (float)p.std[c];
            float d = v - m;
            float want_v = d / s;
            CHECK(memcmp(&o[c * 2 + x], &want_v, sizeof(float)) == 0);
        }
    p.do_rescale = p.do_normalize = 0;
    it_image_normalize(o, px, 1, 2, &p);
    CHECK(o[0] == 0 && o[1] == 1 && o[2] == 128 && o[5] == 3);
}

void suite_image(void)
{
    RUN(test_image_decode_fixtures);
    RUN(test_image_resize_pil);
    RUN(test_image_preprocess_fixtures);
    RUN(test_image_malformed);
    RUN(test_image_load_errors);
    RUN(test_image_fuzz);
    RUN(test_image_config);
    RUN(test_image_steps);
}
