// JPEG decoding with libjpeg-turbo through the libjpeg API: the same pixels as stb_image within
// JPEG's decoder tolerance, faster (SIMD IDCT and colour conversion), and at a reduced size when
// the view needs fewer pixels than the file holds: libjpeg-turbo's DCT scaling decodes at M/8 of
// the full size (M = 1..8) for little more than the cost of the smaller image.
// Errors are DecodeErrors naming the origin, as stb_image's: a truncated or corrupt file (libjpeg
// would fill the missing rows with grey and warn; here any corrupt-data warning is an error), a
// CMYK file (no RGB conversion in libjpeg), a header larger than the decoder accepts (refused
// before anything is allocated).
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

#include "data/image.h"
#include "data/jpeg_header.h"  // looks_like_jpeg

namespace kd {

struct JpegInfo {
  int width = 0, height = 0;
  int components = 0;  // 1 grey, 3 YCbCr/RGB, 4 CMYK/YCCK
};

// The header alone; DecodeError when it does not parse.
JpegInfo read_jpeg_info(const uint8_t* data, size_t size, const std::string& origin);

// The smallest M of 1, 2, 4, 8 (the scales with fast IDCTs) such that a crop of crop_w x crop_h
// full-size pixels, decoded at M/8, still has at least out_w x out_h pixels on both axes (so the
// scaling never makes the view upsample what the full decode would not).
int choose_dct_scale(double crop_w, double crop_h, int out_w, int out_h);
// libjpeg's output size at M/8: ceil(size * M / 8).
inline int dct_scaled_size(int size, int scale_num) { return (size * scale_num + 7) / 8; }

// Decodes to RGB (grey broadcast) at scale_num/8 of the full size.
// A header over max_pixels is refused before anything is allocated.
Image decode_jpeg(const uint8_t* data, size_t size, const std::string& origin, int scale_num = 8,
                  int64_t max_pixels = kDefaultMaxImagePixels);

// The rows or columns [begin, end) of the image decoded at M/8 that views reading [lo, hi) of
// the full-size axis (pixel edges at integers) need: every bilinear tap plus one unread pixel on
// each side, clipped to [0, scaled_size). Never empty.
struct AxisRange {
  int begin = 0, end = 0;
};
AxisRange decoded_range(double lo, double hi, int scale_num, int scaled_size);

// Decodes only what `need` says the views read (data/image.h ViewNeed), asked with the header's
// size: the DCT scale from choose_dct_scale, rows above the region skipped (jpeg_skip_scanlines:
// entropy-decoded, but no IDCT or colour conversion), rows below it never decoded, columns
// outside it cropped (jpeg_crop_scanline, which widens the crop to whole iMCU columns). The
// Image's placement fields say where its pixels sit. A file that is corrupt only outside the
// region therefore decodes; the pixels the views read are intact.
Image decode_jpeg_region(const uint8_t* data, size_t size, const std::string& origin, const ViewNeedFn& need,
                         int64_t max_pixels = kDefaultMaxImagePixels);

}  // namespace kd
