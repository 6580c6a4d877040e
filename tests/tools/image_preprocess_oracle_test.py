#!/usr/bin/python3
"""normserve-cli's image input (tools/image_decode, tools/image_preprocess) against PIL and
torchvision 0.14, the documented convention (preprocess.proto):

  torchvision.transforms.Compose([Resize(s), CenterCrop((h, w)), ToTensor(), Normalize(m, sd)])

applied to the PIL image, and the same steps on a float tensor with
torchvision.transforms.functional.resize(..., antialias=True).

Bounds, in pixel levels of 1/255 before Normalize (after it, divided by std):
  * decoding (PNG, JPEG, palette, RGBA, grey): 0. The same libpng and libjpeg-turbo with the
    same settings as PIL (islow DCT, fancy upsampling; palette expanded, alpha dropped).
  * resize vs torchvision on the float tensor (antialias=True, the same triangle filter of
    support max(1, in/out) in float32): 1e-3 levels (float32 rounding of the weights).
  * resize vs torchvision on the PIL image: 1 level. PIL resamples 8-bit images in two
    passes and rounds each pass to uint8 (<= 0.5 level each; the vertical pass is a convex
    combination, so the first rounding does not grow), with 22-bit fixed-point weights
    (~1e-4 level); normserve keeps floats, so the difference is at most 0.5 + 0.5 levels.
  * RGB to grey: 0.5 level (PIL rounds 0.299 R + 0.587 G + 0.114 B in fixed point; normserve
    rounds the float sum: the same except at exact .5 ties).
"""
import io
import os
import subprocess
import tempfile
import unittest

import numpy as np
import torch
import torchvision.transforms as T
import torchvision.transforms.functional as TF
from PIL import Image

DUMP = os.environ["PREPROCESS_DUMP"]
IMAGENET = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
LEVEL = 1.0 / 255.0


def photo(width, height, seed, channels=3):
    """A smooth image with edges and noise (what resizing meets in photographs), uint8."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    base = 128 + 90 * np.sin(x / 5.0 + seed) * np.cos(y / 7.0)
    base += 60 * ((x // 9 + y // 11) % 2)  # hard edges
    img = base[..., None] + rng.normal(0, 12, (height, width, channels))
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


class ImagePreprocessOracleTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()

    def tearDown(self):
        self.tmp.cleanup()

    def dump(self, image_bytes, suffix, chw, preprocess=None):
        path = os.path.join(self.tmp.name, "in" + suffix)
        with open(path, "wb") as f:
            f.write(image_bytes)
        out = os.path.join(self.tmp.name, "out.npy")
        args = [DUMP, path, out] + [str(d) for d in chw]
        if preprocess is not None:
            import json
            args.append(json.dumps(preprocess))
        r = subprocess.run(args, capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stderr)
        return np.load(out)[0].astype(np.float64)

    @staticmethod
    def encode(pil, fmt, **kw):
        b = io.BytesIO()
        pil.save(b, format=fmt, **kw)
        return b.getvalue()

    def test_decoding_is_exact(self):
        rgb = photo(31, 23, 1)
        gray = photo(31, 23, 2, channels=1)[..., 0]
        rgba = np.concatenate([rgb, photo(31, 23, 3, channels=1)], axis=2)
        cases = {
            "png rgb": (Image.fromarray(rgb), "PNG", ".png", {}),
            "png grey": (Image.fromarray(gray, "L"), "PNG", ".png", {}),
            "png rgba": (Image.fromarray(rgba, "RGBA"), "PNG", ".png", {}),
            "png palette": (Image.fromarray(rgb).quantize(64), "PNG", ".png", {}),
            "jpeg rgb": (Image.fromarray(rgb), "JPEG", ".jpg", {"quality": 90}),
            "jpeg grey": (Image.fromarray(gray, "L"), "JPEG", ".jpeg", {"quality": 75}),
            "ppm": (Image.fromarray(rgb), "PPM", ".ppm", {}),
        }
        for name, (pil, fmt, suffix, kw) in cases.items():
            with self.subTest(name):
                data = self.encode(pil, fmt, **kw)
                ref = Image.open(io.BytesIO(data))
                channels = 1 if ref.mode in ("L",) else 3
                ref = np.asarray(ref.convert("L" if channels == 1 else "RGB"), dtype=np.float64)
                ref = ref.reshape(23, 31, channels).transpose(2, 0, 1) / 255.0
                got = self.dump(data, suffix, (channels, 23, 31))
                # float32 of pixel / 255 against float64: the decoded levels are identical.
                self.assertLessEqual(np.abs(got - ref).max() / LEVEL, 1e-5, name)

    def check_pipeline(self, rgb, size, crop, suffix=".png", fmt="PNG", extra=None):
        data = self.encode(Image.fromarray(rgb), fmt)
        pre = {"resize_shorter_side": size, "center_crop": list(crop), **IMAGENET, **(extra or {})}
        got = self.dump(data, suffix, (3, crop[0], crop[1]), pre)
        pil = Image.open(io.BytesIO(data)).convert("RGB")
        # BGR reverses the channels before Normalize: mean/std are in the model's order.
        order = (lambda t: t.flip(0)) if (extra or {}).get("channel_order") == "BGR" else (
            lambda t: t)
        norm = T.Normalize(IMAGENET["mean"], IMAGENET["std"])
        # The documented convention, on the PIL image.
        ref_pil = norm(order(T.Compose([T.Resize(size), T.CenterCrop(crop), T.ToTensor()])(pil)))
        # The same steps on the float tensor, antialiased as PIL.
        x = TF.to_tensor(pil)
        x = TF.resize(x, size, interpolation=T.InterpolationMode.BILINEAR, antialias=True)
        ref_float = norm(order(TF.center_crop(x, list(crop))))
        ref_pil, ref_float = ref_pil.double().numpy(), ref_float.double().numpy()
        std = np.array(IMAGENET["std"])[:, None, None]
        self.assertEqual(got.shape, ref_pil.shape)
        # Back to pixel levels so the bounds read in 1/255 units.
        d_float = np.abs(got - ref_float) * std / LEVEL
        d_pil = np.abs(got - ref_pil) * std / LEVEL
        self.assertLessEqual(d_float.max(), 1e-3, f"vs torchvision float resize: {d_float.max()}")
        self.assertLessEqual(d_pil.max(), 1.0 + 1e-3, f"vs torchvision on PIL: {d_pil.max()}")
        return d_float.max(), d_pil.max()

    def test_resize_crop_normalize_match_torchvision(self):
        for name, (w, h, size, crop) in {
                "downscale landscape": (97, 61, 32, (28, 30)),
                "downscale portrait": (40, 75, 24, (24, 20)),
                "strong downscale": (300, 200, 16, (16, 16)),
                "upscale": (13, 9, 20, (19, 18)),
                "odd crop offsets": (50, 33, 33, (32, 31)),
        }.items():
            with self.subTest(name):
                df, dp = self.check_pipeline(photo(w, h, 7), size, crop)
                print(f"{name:20s} {w}x{h} -> {size}, crop {crop}: max |diff| "
                      f"{df:.2e} levels vs float resize, {dp:.3f} levels vs PIL")

    def test_jpeg_and_bgr(self):
        self.check_pipeline(photo(64, 48, 4), 32, (32, 32), ".jpg", "JPEG")
        self.check_pipeline(photo(64, 48, 5), 32, (32, 32), extra={"channel_order": "BGR"})

    def test_grey_replicated_and_rgb_to_luma(self):
        gray = photo(20, 16, 6, channels=1)[..., 0]
        data = self.encode(Image.fromarray(gray, "L"), "PNG")
        got = self.dump(data, ".png", (3, 16, 20))
        ref = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.float64)
        self.assertLessEqual(np.abs(got - ref.transpose(2, 0, 1) / 255.0).max() / LEVEL, 1e-5)
        rgb = photo(20, 16, 8)
        data = self.encode(Image.fromarray(rgb), "PNG")
        got = self.dump(data, ".png", (1, 16, 20))
        ref = np.asarray(Image.open(io.BytesIO(data)).convert("L"), dtype=np.float64) / 255.0
        self.assertLessEqual(np.abs(got[0] - ref).max() / LEVEL, 1.0)

    def test_refusals_name_the_file_and_sizes(self):
        data = self.encode(Image.fromarray(photo(12, 10, 9)), "PNG")
        path = os.path.join(self.tmp.name, "wrong.png")
        with open(path, "wb") as f:
            f.write(data)
        r = subprocess.run([DUMP, path, path + ".npy", "3", "8", "8"], capture_output=True,
                           text=True)
        self.assertEqual(r.returncode, 1)
        self.assertIn("wrong.png: image is 12x10, the model expects 8x8", r.stderr)
        r = subprocess.run([DUMP, path, path + ".npy", "3", "8", "8",
                            '{"resize_shorter_side": 9, "center_crop": [9, 9]}'],
                           capture_output=True, text=True)
        self.assertEqual(r.returncode, 1)
        self.assertIn("wrong.png: image is 12x10 (9x9 after preprocessing), the model expects 8x8",
                      r.stderr)
        # A thin image must not grow past the pixel bound when its shorter side is resized.
        thin = os.path.join(self.tmp.name, "thin.png")
        Image.fromarray(photo(8192, 1, 10)).save(thin)
        r = subprocess.run([DUMP, thin, thin + ".npy", "3", "224", "224",
                            '{"resize_shorter_side": 256, "center_crop": [224, 224]}'],
                           capture_output=True, text=True)
        self.assertEqual(r.returncode, 1)
        self.assertIn("thin.png: image is 8192x1; resizing its shorter side to 256 gives "
                      "2097152x256, more than 67108864 pixels", r.stderr)
        with open(path, "wb") as f:
            f.write(data[: len(data) // 2])
        r = subprocess.run([DUMP, path, path + ".npy", "3", "10", "12"], capture_output=True,
                           text=True)
        self.assertEqual(r.returncode, 1)
        self.assertIn("wrong.png: bad PNG", r.stderr)


if __name__ == "__main__":
    unittest.main(verbosity=2)
