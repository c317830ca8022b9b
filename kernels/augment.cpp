// The CPU augment: render_pixel's math with the per-axis work hoisted out of the pixel loop.
// A view's horizontal taps depend only on the output column and its vertical taps only on the
// row, so each is computed once per image (columns) or once per row, by the same functions
// render_pixel calls (view_source_coord, bilinear_axis), and every pixel only blends its four
// taps: the same operations on the same values, so the same bits as render_pixel, about 3x
// fewer instructions per pixel.
#include "kernels/augment.h"

#include <cmath>
#include <vector>

namespace kd {

namespace {

// Horizontal taps of every output column of one view source.
void column_taps(const ViewSource& v, int32_t src_w, int64_t out_h, int64_t out_w, AxisTaps* taps) {
  for (int64_t ox = 0; ox < out_w; ++ox) {
    float sy, sx;
    view_source_coord(v.box, v.flip != 0, out_h, out_w, 0, ox, &sy, &sx);
    taps[ox] = axis_taps(sx, src_w);
  }
}

AxisTaps row_taps(const ViewSource& v, int32_t src_h, int64_t out_h, int64_t out_w, int64_t oy) {
  float sy, sx;
  view_source_coord(v.box, v.flip != 0, out_h, out_w, oy, 0, &sy, &sx);
  return axis_taps(sy, src_h);
}

}  // namespace

void augment_cpu(const uint8_t* pixels, const SourceImage* sources, const ViewRecipe* recipes, int64_t n,
                 const Normalization& norm, int64_t out_h, int64_t out_w, float* out) {
  // Per image: out_w taps of source a, then out_w of source b (when mixed).
  std::vector<AxisTaps> cols(size_t(n * out_w * 2));
  for (int64_t i = 0; i < n; ++i) {
    const ViewRecipe& r = recipes[i];
    column_taps(r.a, sources[r.a.image].w, out_h, out_w, &cols[size_t(i * out_w * 2)]);
    if (r.lambda < 1.0f) column_taps(r.b, sources[r.b.image].w, out_h, out_w, &cols[size_t((i * 2 + 1) * out_w)]);
  }
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t i = 0; i < n; ++i)
    for (int64_t oy = 0; oy < out_h; ++oy) {
      const ViewRecipe& r = recipes[i];
      const bool mixed = r.lambda < 1.0f;
      const SourceView a = resolve_source(pixels, sources[r.a.image]);
      const SourceView b = mixed ? resolve_source(pixels, sources[r.b.image]) : a;
      const AxisTaps ya = row_taps(r.a, a.h, out_h, out_w, oy);
      const AxisTaps yb = mixed ? row_taps(r.b, b.h, out_h, out_w, oy) : ya;
      const AxisTaps* xa = &cols[size_t(i * out_w * 2)];
      const AxisTaps* xb = &cols[size_t((i * 2 + 1) * out_w)];
      float* row = out + (i * out_h + oy) * out_w * 3;
      for (int64_t ox = 0; ox < out_w; ++ox) {
        float va[3], vb[3] = {0, 0, 0};
        blend_taps3(a.pixels, a.w, ya, xa[ox], va);
        if (mixed) blend_taps3(b.pixels, b.w, yb, xb[ox], vb);
        mix_and_normalize(va, vb, r.lambda, norm, row + ox * 3);
      }
    }
}

}  // namespace kd
