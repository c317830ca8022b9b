// JPEG syntax (ITU T.81, B.1): the stream is markers 0xFF xx; all but SOI, EOI, RSTn and TEM
// start a segment whose first two bytes (big-endian) give its length including themselves.
// Fill bytes 0xFF may precede a marker. A frame header (SOFn, n = 0..15 but 4, 8, 12) holds
// precision (1 byte), height (2), width (2), component count (1).
#include "data/jpeg_header.h"

namespace kd {

namespace {
bool is_sof(uint8_t m) { return m >= 0xC0 && m <= 0xCF && m != 0xC4 && m != 0xC8 && m != 0xCC; }
bool stands_alone(uint8_t m) { return m == 0x01 || (m >= 0xD0 && m <= 0xD9); }  // TEM, RSTn, SOI, EOI
}  // namespace

bool looks_like_jpeg(const uint8_t* data, size_t size) {
  return size >= 3 && data[0] == 0xFF && data[1] == 0xD8 && data[2] == 0xFF;
}

bool read_jpeg_frame(const uint8_t* data, size_t size, JpegFrame* frame) {
  if (data == nullptr || size < 4 || data[0] != 0xFF || data[1] != 0xD8) return false;
  size_t at = 2;
  while (at < size) {
    if (data[at] != 0xFF) return false;  // garbage between segments
    while (at < size && data[at] == 0xFF) ++at;  // fill bytes
    if (at >= size) return false;
    const uint8_t marker = data[at++];
    if (stands_alone(marker)) {
      if (marker == 0xD9) return false;  // end of image before any frame
      continue;
    }
    if (marker == 0xDA) return false;  // a scan before any frame header
    if (size - at < 2) return false;
    const size_t length = size_t(data[at]) << 8 | data[at + 1];
    if (length < 2 || length > size - at) return false;
    if (is_sof(marker)) {
      if (length < 8) return false;
      const uint8_t* p = data + at + 2;  // precision, height, width, components
      frame->height = int(p[1]) << 8 | p[2];
      frame->width = int(p[3]) << 8 | p[4];
      frame->components = p[5];
      const uint8_t coding = marker & 0x03;  // 0 baseline/sequential, 2 progressive, 3 lossless
      frame->progressive = coding == 2;
      frame->lossless = coding == 3;
      // A height of 0 means "defined by a later DNL marker": no decoder kd uses supports it.
      return frame->width > 0 && frame->height > 0 && frame->components >= 1 && frame->components <= 4;
    }
    at += length;
  }
  return false;
}

}  // namespace kd
