// JPEG test inputs made with libjpeg itself: photo-like content (gradients, texture, a sharp
// saturated patch, mild noise) at any size, encoded at a chosen quality, chroma subsampling and
// progression; and the per-pixel difference of two decodes.
#pragma once
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <random>
#include <vector>

#include <cstdio>  // jpeglib.h needs FILE and size_t declared first
#include <jpeglib.h>

#include "data/image.h"

namespace kd {

inline std::vector<uint8_t> photo_like(int w, int h, int channels, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> noise(0.0, 3.0);
  std::vector<uint8_t> px(size_t(w) * h * channels);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x)
      for (int c = 0; c < channels; ++c) {
        double v = 60 + 120.0 * x / w + 40 * std::sin(0.07 * y + c) + 25 * std::sin(0.31 * x) * std::cos(0.23 * y);
        if (x > w / 3 && x < w / 2 && y > h / 4 && y < h / 2) v = c == 0 ? 230 : 30;  // a sharp, saturated patch
        px[(size_t(y) * w + x) * channels + c] = uint8_t(std::clamp(v + noise(rng), 0.0, 255.0));
      }
  return px;
}

inline std::vector<uint8_t> encode(const std::vector<uint8_t>& px, int w, int h, int channels, int quality, bool progressive,
                            bool chroma_444) {
  jpeg_compress_struct cinfo;
  jpeg_error_mgr err;
  cinfo.err = jpeg_std_error(&err);
  jpeg_create_compress(&cinfo);
  unsigned char* out = nullptr;
  unsigned long out_size = 0;
  jpeg_mem_dest(&cinfo, &out, &out_size);
  cinfo.image_width = JDIMENSION(w), cinfo.image_height = JDIMENSION(h), cinfo.input_components = channels;
  cinfo.in_color_space = channels == 1 ? JCS_GRAYSCALE : channels == 4 ? JCS_CMYK : JCS_RGB;
  jpeg_set_defaults(&cinfo);
  jpeg_set_quality(&cinfo, quality, TRUE);
  if (progressive) jpeg_simple_progression(&cinfo);
  if (chroma_444 && channels == 3)
    for (int i = 0; i < 3; ++i) cinfo.comp_info[i].h_samp_factor = cinfo.comp_info[i].v_samp_factor = 1;
  jpeg_start_compress(&cinfo, TRUE);
  while (cinfo.next_scanline < cinfo.image_height) {
    JSAMPROW row = const_cast<uint8_t*>(px.data()) + size_t(cinfo.next_scanline) * w * channels;
    jpeg_write_scanlines(&cinfo, &row, 1);
  }
  jpeg_finish_compress(&cinfo);
  jpeg_destroy_compress(&cinfo);
  std::vector<uint8_t> bytes(out, out + out_size);
  std::free(out);
  return bytes;
}

struct Diff {
  double mean = 0;
  int max = 0;
};

inline Diff compare(const Image& a, const Image& b) {
  EXPECT_EQ(a.width, b.width);
  EXPECT_EQ(a.height, b.height);
  Diff d;
  if (a.pixels.size() != b.pixels.size()) return {1e9, 255};
  for (size_t i = 0; i < a.pixels.size(); ++i) {
    const int e = std::abs(int(a.pixels[i]) - int(b.pixels[i]));
    d.mean += e, d.max = std::max(d.max, e);
  }
  d.mean /= double(a.pixels.size());
  return d;
}

}  // namespace kd
