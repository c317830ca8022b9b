// The fused augmentation: from uint8 source images and one view recipe per output image,
// crop + bilinear resize + horizontal flip + mixup of two sources + mean/std normalisation,
// written NHWC. The same recipe rendered at two resolutions gives the teacher's and the
// student's view of exactly the same augmented image.
//
// Geometry (half-pixel centres, as tf.image.resize / PyTorch align_corners=False): output
// pixel (oy, ox) of an out_h x out_w view of box (y0, x0, h, w) samples the source at
//   sy = y0 + (oy + 0.5) * h / out_h - 0.5,   sx = x0 + (ox' + 0.5) * w / out_w - 0.5,
// ox' = flip ? out_w - 1 - ox : ox, bilinear between the four neighbours, edges clamped.
#pragma once
#include <math.h>

#include <cstdint>

#include "kernels/common.h"
#include "kernels/cuda_handles.h"

namespace kd {

struct CropBox {
  float y0 = 0, x0 = 0, h = 1, w = 1;  // in source pixels
};

struct ViewSource {
  int32_t image = 0;  // index into the batch's source images
  uint8_t flip = 0;
  CropBox box;
};

// out = lambda * render(a) + (1 - lambda) * render(b); b is not read when lambda == 1.
struct ViewRecipe {
  ViewSource a, b;
  float lambda = 1.0f;
};

// A source image inside one packed buffer of uint8 HWC pixels with 3 channels.
struct SourceImage {
  int64_t offset = 0;  // bytes from the start of the buffer
  int32_t h = 0, w = 0;
};

// Per-channel normalisation folded into one multiply-add: v = pixel * scale[c] + shift[c],
// scale = 1 / (255 std), shift = -mean / std (BiT: mean = std = 0.5 -> [-1, 1]).
struct Normalization {
  float scale[3] = {2.0f / 255.0f, 2.0f / 255.0f, 2.0f / 255.0f};
  float shift[3] = {-1.0f, -1.0f, -1.0f};
  static Normalization from_mean_std(const float mean[3], const float std_dev[3]) {
    Normalization n;
    for (int c = 0; c < 3; ++c) n.scale[c] = 1.0f / (255.0f * std_dev[c]), n.shift[c] = -mean[c] / std_dev[c];
    return n;
  }
};

// Source coordinate of output pixel (oy, ox) (see the header comment).
KD_HD void view_source_coord(const CropBox& box, bool flip, int64_t out_h, int64_t out_w, int64_t oy, int64_t ox,
                             float* sy, float* sx) {
  const int64_t fx = flip ? out_w - 1 - ox : ox;
  *sy = box.y0 + (float(oy) + 0.5f) * box.h / float(out_h) - 0.5f;
  *sx = box.x0 + (float(fx) + 0.5f) * box.w / float(out_w) - 0.5f;
}

// The two neighbours and the weight of the upper one along one axis, clamped to [0, size).
KD_HD void bilinear_axis(float s, int32_t size, int32_t* i0, int32_t* i1, float* frac) {
  const float fl = floorf(s);
  int32_t lo = int32_t(fl);
  float f = s - fl;
  if (lo < 0) lo = 0, f = 0.0f;
  if (lo >= size - 1) lo = size - 1, f = 0.0f;
  *i0 = lo;
  *i1 = lo + 1 < size ? lo + 1 : size - 1;
  *frac = f;
}

// The bilinear taps of one axis: bilinear_axis's result.
struct AxisTaps {
  int32_t i0 = 0, i1 = 0;
  float frac = 0;
};

KD_HD AxisTaps axis_taps(float s, int32_t size) {
  AxisTaps t;
  bilinear_axis(s, size, &t.i0, &t.i1, &t.frac);
  return t;
}

// The 3 channels of one source image blended from four taps; out[c] in pixel units.
KD_HD void blend_taps3(const uint8_t* img, int32_t w, const AxisTaps& ty, const AxisTaps& tx, float out[3]) {
  const int32_t y0 = ty.i0, y1 = ty.i1, x0 = tx.i0, x1 = tx.i1;
  const float fy = ty.frac, fx = tx.frac;
  const uint8_t* p00 = img + (int64_t(y0) * w + x0) * 3;
  const uint8_t* p01 = img + (int64_t(y0) * w + x1) * 3;
  const uint8_t* p10 = img + (int64_t(y1) * w + x0) * 3;
  const uint8_t* p11 = img + (int64_t(y1) * w + x1) * 3;
  for (int c = 0; c < 3; ++c) {
    const float top = float(p00[c]) + fx * (float(p01[c]) - float(p00[c]));
    const float bottom = float(p10[c]) + fx * (float(p11[c]) - float(p10[c]));
    out[c] = top + fy * (bottom - top);
  }
}

// Bilinear sample of all 3 channels of one source image at (sy, sx); out[c] in pixel units.
KD_HD void sample_bilinear3(const uint8_t* img, int32_t h, int32_t w, float sy, float sx, float out[3]) {
  blend_taps3(img, w, axis_taps(sy, h), axis_taps(sx, w), out);
}

// out = lambda * va + (1 - lambda) * vb (vb only read when lambda < 1), normalised.
KD_HD void mix_and_normalize(const float va[3], const float vb[3], float lambda, const Normalization& norm,
                             float out[3]) {
  for (int c = 0; c < 3; ++c) {
    const float v = lambda < 1.0f ? lambda * va[c] + (1.0f - lambda) * vb[c] : va[c];
    out[c] = v * norm.scale[c] + norm.shift[c];
  }
}

// A source image resolved to its first byte.
struct SourceView {
  const uint8_t* pixels = nullptr;
  int32_t h = 0, w = 0;
};

KD_HD SourceView resolve_source(const uint8_t* pixels, const SourceImage& s) {
  SourceView v;
  v.pixels = pixels + s.offset;
  v.h = s.h;
  v.w = s.w;
  return v;
}

// One normalised output pixel of a recipe whose sources are resolved: all 3 channels. `b` is not
// read when r.lambda == 1.
KD_HD void render_resolved_pixel(const SourceView& a, const SourceView& b, const ViewRecipe& r,
                                 const Normalization& norm, int64_t out_h, int64_t out_w, int64_t oy, int64_t ox,
                                 float out[3]) {
  float sy, sx, va[3], vb[3] = {0, 0, 0};
  view_source_coord(r.a.box, r.a.flip != 0, out_h, out_w, oy, ox, &sy, &sx);
  sample_bilinear3(a.pixels, a.h, a.w, sy, sx, va);
  if (r.lambda < 1.0f) {
    view_source_coord(r.b.box, r.b.flip != 0, out_h, out_w, oy, ox, &sy, &sx);
    sample_bilinear3(b.pixels, b.h, b.w, sy, sx, vb);
  }
  mix_and_normalize(va, vb, r.lambda, norm, out);
}

// One normalised output pixel of a recipe: all 3 channels.
KD_HD void render_pixel(const uint8_t* pixels, const SourceImage* sources, const ViewRecipe& r,
                        const Normalization& norm, int64_t out_h, int64_t out_w, int64_t oy, int64_t ox,
                        float out[3]) {
  const SourceView a = resolve_source(pixels, sources[r.a.image]);
  const SourceView b = r.lambda < 1.0f ? resolve_source(pixels, sources[r.b.image]) : a;
  render_resolved_pixel(a, b, r, norm, out_h, out_w, oy, ox, out);
}

// ---- how augment_cuda cuts a batch into thread blocks ----
//
// The output of one (image, view) is a run of h * w pixels (h * w * 3 contiguous bf16), cut
// into tiles of tile_px pixels, one block each. An image's tiles of view 0 come first, then its
// tiles of view 1, then the next image's: both views of an image are rendered close in time,
// while its sources are still in L2.
struct AugmentPartition {
  int64_t images = 0;
  int64_t pixels[2] = {0, 0};  // per image, in each view (0: no second view)
  int64_t tiles[2] = {0, 0};   // per image, in each view
  int64_t tile_px = 1;
};

// Pixels [begin, end) (flat index oy * w + ox) of view `view` of image `image`.
struct AugmentTile {
  int32_t view = 0;
  int64_t image = 0, begin = 0, end = 0;
};

// h2 = w2 = 0: one view.
KD_HD AugmentPartition augment_partition(int64_t n, int64_t h1, int64_t w1, int64_t h2, int64_t w2, int64_t tile_px) {
  AugmentPartition p;
  p.images = n;
  p.tile_px = tile_px;
  p.pixels[0] = h1 * w1;
  p.pixels[1] = h2 * w2;
  for (int v = 0; v < 2; ++v) p.tiles[v] = ceil_div(p.pixels[v], tile_px);
  return p;
}

KD_HD int64_t augment_blocks(const AugmentPartition& p) { return p.images * (p.tiles[0] + p.tiles[1]); }

KD_HD AugmentTile augment_tile(const AugmentPartition& p, int64_t block) {
  const int64_t per_image = p.tiles[0] + p.tiles[1];
  AugmentTile t;
  t.image = block / per_image;
  int64_t k = block - t.image * per_image;
  t.view = k < p.tiles[0] ? 0 : 1;
  if (t.view == 1) k -= p.tiles[0];
  t.begin = k * p.tile_px;
  const int64_t pixels = t.view == 1 ? p.pixels[1] : p.pixels[0];  // (a select: no local-memory copy on a GPU)
  t.end = t.begin + p.tile_px < pixels ? t.begin + p.tile_px : pixels;
  return t;
}

// out [n, out_h, out_w, 3] f32 on the host.
void augment_cpu(const uint8_t* pixels, const SourceImage* sources, const ViewRecipe* recipes, int64_t n,
                 const Normalization& norm, int64_t out_h, int64_t out_w, float* out);

// Device pointers throughout (pixels, sources and recipes copied to the device by the caller;
// every recipe's image indices valid). Writes both views of the same recipes in one launch:
// first [n, h1, w1, 3] and second [n, h2, w2, 3] bf16; second may be null (one view). Outputs
// need only bf16 (2-byte) alignment. Bytes that must move: 6 per output pixel written, plus each
// recipe's source regions read once (about 3 bytes per box pixel, or 3 * 4 per output pixel
// when downscaling by more than 2: bilinear taps skip the rest).
void augment_cuda(const CudaHandles& h, const uint8_t* pixels, const SourceImage* sources, const ViewRecipe* recipes,
                  int64_t n, const Normalization& norm, int64_t h1, int64_t w1, bf16* first, int64_t h2, int64_t w2,
                  bf16* second);

}  // namespace kd
