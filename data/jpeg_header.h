// A JPEG's frame header (size, components, coding) read without a decoder: the markers up to
// the first start-of-frame. The GPU decode path needs the size on the host before the device
// decodes (to lay out the batch and draw the views), and it must not depend on libjpeg.
#pragma once
#include <cstddef>
#include <cstdint>

namespace kd {

struct JpegFrame {
  int width = 0, height = 0;
  int components = 0;        // 1 grey, 3 YCbCr/RGB, 4 CMYK/YCCK
  bool progressive = false;  // SOF2/6/10/14
  bool lossless = false;     // SOF3/7/11/15 (no decoder kd uses reads these)
};

// A JPEG's start-of-image marker (FF D8 FF).
bool looks_like_jpeg(const uint8_t* data, size_t size);

// False when the bytes are not a JPEG whose frame header lies within them (no start-of-image,
// a segment running past the end, a scan before any frame, a zero or absurd size). Reads no
// byte outside [data, data + size).
bool read_jpeg_frame(const uint8_t* data, size_t size, JpegFrame* frame);

}  // namespace kd
