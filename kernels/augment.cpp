// The CPU augment: render_pixel's math with the per-axis work hoisted out of the pixel loop.
// A view's horizontal taps depend only on the output column and its vertical taps only on the
// row, so each is computed once per image (columns) or once per row, by the same functions
// render_pixel calls (view_source_coord, bilinear_axis), and every pixel only blends its four
// taps: the same operations on the same values, so the same bits as render_pixel, about 3x
// fewer instructions per pixel; on x86-64 a pixel's three channels share SSE lanes.
#include "kernels/augment.h"

#include <cmath>
#include <vector>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

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

#if defined(__SSE2__)
// One source pixel's 3 channels as floats in lanes 0-2. Three bytes are read, never four (the
// last pixel of the packed buffer has nothing after it), and combined in a register (a 3-byte
// copy through memory would stall the 4-byte reload).
inline __m128 load_pixel(const uint8_t* p) {
  const uint32_t bytes = uint32_t(p[0]) | uint32_t(p[1]) << 8 | uint32_t(p[2]) << 16;
  const __m128i zero = _mm_setzero_si128();
  const __m128i words = _mm_unpacklo_epi8(_mm_cvtsi32_si128(int(bytes)), zero);
  return _mm_cvtepi32_ps(_mm_unpacklo_epi16(words, zero));
}

// blend_taps3 on 4 lanes: top = p00 + fx (p01 - p00), bottom likewise, top + fy (bottom - top).
inline __m128 blend_taps3_sse(const uint8_t* img, int32_t w, const AxisTaps& ty, const AxisTaps& tx) {
  const __m128 p00 = load_pixel(img + (int64_t(ty.i0) * w + tx.i0) * 3);
  const __m128 p01 = load_pixel(img + (int64_t(ty.i0) * w + tx.i1) * 3);
  const __m128 p10 = load_pixel(img + (int64_t(ty.i1) * w + tx.i0) * 3);
  const __m128 p11 = load_pixel(img + (int64_t(ty.i1) * w + tx.i1) * 3);
  const __m128 fx = _mm_set1_ps(tx.frac), fy = _mm_set1_ps(ty.frac);
  const __m128 top = _mm_add_ps(p00, _mm_mul_ps(fx, _mm_sub_ps(p01, p00)));
  const __m128 bottom = _mm_add_ps(p10, _mm_mul_ps(fx, _mm_sub_ps(p11, p10)));
  return _mm_add_ps(top, _mm_mul_ps(fy, _mm_sub_ps(bottom, top)));
}
#endif

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
      int64_t ox = 0;
#if defined(__SSE2__)
      // The three channels of a pixel as one 4-lane vector (lane 3 unused): the same IEEE
      // operations in the same order per lane as blend_taps3 and mix_and_normalize, so the same
      // bits (x86-64 compilers do not contract a * b + c into an FMA without -mfma). Every
      // pixel but a row's last stores 4 lanes; the next pixel overwrites the fourth.
      const __m128 scale = _mm_setr_ps(norm.scale[0], norm.scale[1], norm.scale[2], 0.0f);
      const __m128 shift = _mm_setr_ps(norm.shift[0], norm.shift[1], norm.shift[2], 0.0f);
      const __m128 lambda = _mm_set1_ps(r.lambda), rest = _mm_set1_ps(1.0f - r.lambda);
      for (; ox + 1 < out_w; ++ox) {
        __m128 v = blend_taps3_sse(a.pixels, a.w, ya, xa[ox]);
        if (mixed) v = _mm_add_ps(_mm_mul_ps(lambda, v), _mm_mul_ps(rest, blend_taps3_sse(b.pixels, b.w, yb, xb[ox])));
        _mm_storeu_ps(row + ox * 3, _mm_add_ps(_mm_mul_ps(v, scale), shift));
      }
#endif
      for (; ox < out_w; ++ox) {
        float va[3], vb[3] = {0, 0, 0};
        blend_taps3(a.pixels, a.w, ya, xa[ox], va);
        if (mixed) blend_taps3(b.pixels, b.w, yb, xb[ox], vb);
        mix_and_normalize(va, vb, r.lambda, norm, row + ox * 3);
      }
    }
}

}  // namespace kd
