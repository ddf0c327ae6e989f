#!/usr/bin/env python3
"""Writes the fixtures of test/test_image.c into data/image/ (run from the repository root):

  <name>.ppm / <name>.pgm          small binary images, built deterministically
  <config>/preprocessor_config.json CLIPImageProcessor configurations
  expected.safetensors              what the references make of them:
    decode/<img>                    U8 [h, w, 3]   np.array(Image.open(f).convert("RGB")) (small images)
    resize/<img>/<f>/<oh>x<ow>      U8 [oh, ow, 3] Image.resize((ow, oh), resample=f) of that RGB image
    pre/<config>/<img>              F32 [3, ch, cw] CLIPImageProcessor.preprocess(Image.open(f))["pixel_values"][0]
                                    ("absent32" is the processor with no file and default_size 32)

Needs Pillow and numpy (Debian: python3-pil, python3-numpy; made with Pillow 9.4.0, numpy 1.24.2).
transformers is not needed: the steps of CLIPImageProcessor.preprocess (transformers 4.40,
models/clip/image_processing_clip.py and image_transforms.py) are written out below with the same
numpy operations and dtypes.
"""
import io
import json
import math
import os
import struct

import numpy as np
from PIL import Image

OUT = "data/image"
OPENAI_CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
OPENAI_CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


# ---- images ------------------------------------------------------------------------------------

def pattern(h, w, c, seed):
    """Smooth gradients, hard 0/255 edges (bicubic overshoot and clipping) and noise, uint8."""
    rng = np.random.RandomState(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([(x * 255.0 / max(w - 1, 1)), (y * 255.0 / max(h - 1, 1)), ((x + y) * 37.0) % 256], -1)[..., :c]
    noise = rng.randint(-40, 41, size=(h, w, c))
    img = np.clip(base + noise, 0, 255)
    checker = ((x // 3 + y // 4) % 2 == 0)[..., None]
    img = np.where(checker & (rng.rand(h, w, 1) < 0.3), 255 * (rng.rand(h, w, 1) < 0.5), img)
    return img.astype(np.uint8)


def pnm(magic, w, h, maxval, samples, header=None):
    head = header if header is not None else b"%s\n%d %d\n%d\n" % (magic, w, h, maxval)
    if maxval > 255:
        body = np.asarray(samples, dtype=">u2").tobytes()
    else:
        body = np.asarray(samples, dtype=np.uint8).tobytes()
    return head + body


def images():
    """name -> file bytes."""
    out = {}
    out["a.ppm"] = pnm(b"P6", 7, 5, 255, pattern(5, 7, 3, 1))
    out["b.ppm"] = pnm(b"P6", 40, 30, 255, pattern(30, 40, 3, 2),
                       header=b"P6\n# a comment\n40 30 # another\n#\n255\n")
    out["c.ppm"] = pnm(b"P6", 300, 200, 255, pattern(200, 300, 3, 3))
    out["d.pgm"] = pnm(b"P5", 45, 61, 255, pattern(61, 45, 1, 4))
    rng = np.random.RandomState(5)
    out["e.ppm"] = pnm(b"P6", 23, 17, 1000, rng.randint(0, 1001, size=(17, 23, 3)))
    samples = rng.randint(0, 101, size=(13, 19))
    samples[0, :4] = [101, 120, 255, 0]  # above maxval: PIL clamps at 255
    out["f.pgm"] = pnm(b"P5", 19, 13, 100, samples)
    return out


# ---- configurations ----------------------------------------------------------------------------

CONFIGS = {
    # as CLIPImageProcessor.save_pretrained writes it, at a small size
    "s48c40": {
        "crop_size": {"height": 40, "width": 40}, "do_center_crop": True, "do_convert_rgb": True,
        "do_normalize": True, "do_rescale": True, "do_resize": True,
        "image_mean": OPENAI_CLIP_MEAN, "image_processor_type": "CLIPImageProcessor",
        "image_std": OPENAI_CLIP_STD, "resample": 3, "rescale_factor": 0.00392156862745098,
        "size": {"shortest_edge": 48},
    },
    # exact size, bilinear, one mean/std for all channels, a crop of odd sizes
    "hw": {
        "size": {"height": 36, "width": 52}, "crop_size": {"height": 31, "width": 45}, "resample": 2,
        "image_mean": 0.5, "image_std": 0.5, "feature_extractor_type": "CLIPFeatureExtractor",
    },
    # legacy ints: size = shortest edge, crop_size = square, larger than the image (zero padding)
    "legacy": {"size": 24, "crop_size": 33, "resample": 3, "do_resize": True},
    # no crop, no normalisation: the rescaled image at its resized size
    "nocrop": {"size": {"shortest_edge": 20, "longest_edge": 1000}, "do_center_crop": False, "do_normalize": False},
    # no rescale: (uint8 - mean) / std in float32; crop as a list; box filter
    "norescale": {
        "size": [16, 21], "crop_size": [12, 14], "do_rescale": False, "resample": 4,
        "image_mean": [120, 110.5, 100], "image_std": [50, 60.25, 70],
    },
    # lanczos and hamming, taller crop than the image
    "lanczos": {"size": {"shortest_edge": 18}, "crop_size": {"height": 25, "width": 17}, "resample": 1},
    "hamming": {"size": {"shortest_edge": 26}, "crop_size": {"height": 20, "width": 22}, "resample": 5},
}


def size_dict(size, default_to_square):
    """image_processing_utils.get_size_dict."""
    if isinstance(size, dict):
        return size
    if isinstance(size, int):
        return {"height": size, "width": size} if default_to_square else {"shortest_edge": size}
    return {"height": size[0], "width": size[1]}


def processor(cfg, default_size=224):
    """CLIPImageProcessor.__init__ with cfg as keyword arguments."""
    return {
        "do_resize": cfg.get("do_resize", True),
        "size": size_dict(cfg.get("size") or {"shortest_edge": default_size}, False),
        "resample": cfg.get("resample", 3),
        "do_center_crop": cfg.get("do_center_crop", True),
        "crop_size": size_dict(cfg.get("crop_size") or {"height": default_size, "width": default_size}, True),
        "do_rescale": cfg.get("do_rescale", True),
        "rescale_factor": cfg.get("rescale_factor", 1 / 255),
        "do_normalize": cfg.get("do_normalize", True),
        "image_mean": cfg.get("image_mean") or OPENAI_CLIP_MEAN,
        "image_std": cfg.get("image_std") or OPENAI_CLIP_STD,
        "do_convert_rgb": cfg.get("do_convert_rgb", True),
    }


# ---- transformers 4.40, the numpy steps ----------------------------------------------------------

def get_resize_output_image_size(image, size, default_to_square):
    if isinstance(size, (tuple, list)):
        return tuple(size)
    if default_to_square:
        return (size, size)
    height, width = image.shape[:2]
    short, long = (width, height) if width <= height else (height, width)
    requested_new_short = size
    new_short, new_long = requested_new_short, int(requested_new_short * long / short)
    return (new_long, new_short) if width <= height else (new_short, new_long)


def resize(image, size, resample):
    """image_transforms.resize on a channels-last uint8 image: to_pil_image (no rescale for uint8),
    PIL resize, back to numpy."""
    pil = Image.fromarray(image.astype(np.uint8))
    height, width = size
    return np.array(pil.resize((width, height), resample=resample, reducing_gap=None))


def center_crop(image, size):
    """image_transforms.center_crop, channels-last in and out (it works in CHW inside)."""
    image = image.transpose(2, 0, 1)
    orig_height, orig_width = image.shape[-2:]
    crop_height, crop_width = size
    top = (orig_height - crop_height) // 2
    bottom = top + crop_height
    left = (orig_width - crop_width) // 2
    right = left + crop_width
    if top >= 0 and bottom <= orig_height and left >= 0 and right <= orig_width:
        return image[..., top:bottom, left:right].transpose(1, 2, 0)
    new_height = max(crop_height, orig_height)
    new_width = max(crop_width, orig_width)
    new_shape = image.shape[:-2] + (new_height, new_width)
    new_image = np.zeros_like(image, shape=new_shape)
    top_pad = math.ceil((new_height - orig_height) / 2)
    bottom_pad = top_pad + orig_height
    left_pad = math.ceil((new_width - orig_width) / 2)
    right_pad = left_pad + orig_width
    new_image[..., top_pad:bottom_pad, left_pad:right_pad] = image
    top += top_pad
    bottom += top_pad
    left += left_pad
    right += left_pad
    new_image = new_image[..., max(0, top):min(new_height, bottom), max(0, left):min(new_width, right)]
    return new_image.transpose(1, 2, 0)


def rescale(image, scale, dtype=np.float32):
    rescaled_image = image * scale  # uint8 * Python float: float64
    return rescaled_image.astype(dtype)


def normalize(image, mean, std):
    if not np.issubdtype(image.dtype, np.floating):
        image = image.astype(np.float32)
    num_channels = image.shape[-1]
    mean = mean if isinstance(mean, list) else [mean] * num_channels
    std = std if isinstance(std, list) else [std] * num_channels
    mean = np.array(mean, dtype=image.dtype)
    std = np.array(std, dtype=image.dtype)
    return (image - mean) / std


def preprocess(pil, p):
    """CLIPImageProcessor.preprocess for one PIL image; the pixel values [3, h, w]."""
    if p["do_convert_rgb"] and pil.mode != "RGB":
        pil = pil.convert("RGB")  # convert_to_rgb
    image = np.array(pil)  # to_numpy_array
    assert image.ndim == 3 and image.shape[0] not in (1, 3)  # else infer_channel_dimension_format says FIRST
    if p["do_resize"]:
        size = p["size"]
        if "shortest_edge" in size:
            out = get_resize_output_image_size(image, size["shortest_edge"], False)
        else:
            out = get_resize_output_image_size(image, (size["height"], size["width"]), True)
        image = resize(image, out, p["resample"])
    if p["do_center_crop"]:
        image = center_crop(image, (p["crop_size"]["height"], p["crop_size"]["width"]))
    if p["do_rescale"]:
        image = rescale(image, p["rescale_factor"])
    if p["do_normalize"]:
        image = normalize(image, p["image_mean"], p["image_std"])
    return np.ascontiguousarray(image.transpose(2, 0, 1))  # to_channel_dimension_format FIRST


# ---- safetensors ---------------------------------------------------------------------------------

def save_safetensors(path, tensors):
    dtypes = {np.dtype(np.uint8): "U8", np.dtype(np.float32): "F32"}
    header, blobs, off = {}, [], 0
    for name in sorted(tensors):
        a = np.ascontiguousarray(tensors[name])
        raw = a.astype(a.dtype.newbyteorder("<")).tobytes()
        header[name] = {"dtype": dtypes[a.dtype], "shape": list(a.shape), "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))


# ---- the cases -------------------------------------------------------------------------------------

RESIZES = {  # image -> [(filter, oh, ow)]: up, down, one axis only, unchanged
    "a.ppm": [(3, 44, 61), (3, 5, 13), (3, 9, 7), (3, 5, 7), (3, 3, 2), (2, 11, 17), (1, 4, 9)],
    "b.ppm": [(3, 24, 32), (3, 64, 85), (3, 17, 41), (3, 30, 40), (1, 19, 23), (2, 45, 29), (4, 13, 21),
              (5, 26, 38)],
    "c.ppm": [(3, 23, 37), (3, 48, 72), (3, 200, 45), (3, 31, 300), (3, 7, 5), (1, 40, 61), (2, 33, 50),
              (4, 29, 43), (5, 21, 31)],
    "d.pgm": [(3, 32, 24), (3, 100, 73)],
}


def main():
    os.makedirs(OUT, exist_ok=True)
    tensors = {}
    files = images()
    for name, data in files.items():
        with open(os.path.join(OUT, name), "wb") as f:
            f.write(data)
    for cname, cfg in CONFIGS.items():
        os.makedirs(os.path.join(OUT, cname), exist_ok=True)
        with open(os.path.join(OUT, cname, "preprocessor_config.json"), "w") as f:
            json.dump(cfg, f, indent=2)
            f.write("\n")
    procs = {c: processor(cfg) for c, cfg in CONFIGS.items()}
    procs["absent32"] = processor({}, default_size=32)
    for name, data in files.items():
        pil = Image.open(io.BytesIO(data))
        rgb = np.array(pil.convert("RGB"))
        if rgb.size <= 10000:  # c.ppm is its own expected decode (raw bytes, maxval 255)
            tensors["decode/" + name] = rgb
        for flt, oh, ow in RESIZES.get(name, []):
            tensors["resize/%s/%d/%dx%d" % (name, flt, oh, ow)] = np.array(
                Image.fromarray(rgb).resize((ow, oh), resample=flt))
        for cname, p in procs.items():
            tensors["pre/%s/%s" % (cname, name)] = preprocess(Image.open(io.BytesIO(data)), p)
    save_safetensors(os.path.join(OUT, "expected.safetensors"), tensors)
    print("%d tensors in %s/expected.safetensors" % (len(tensors), OUT))


if __name__ == "__main__":
    main()
