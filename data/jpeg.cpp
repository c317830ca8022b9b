// libjpeg reports errors through a callback that must not return: it longjmps back here (the
// libjpeg convention; no C++ objects with destructors live between setjmp and the calls that may
// jump), and warnings are counted so a corrupt or truncated file fails instead of decoding grey.
#include "data/jpeg.h"

#include <algorithm>
#include <cmath>
#include <csetjmp>
#include <cstdio>
#include <memory>

// jpeglib.h needs FILE and size_t declared first.
#include <jpeglib.h>

namespace kd {

namespace {


struct ErrorManager {
  jpeg_error_mgr pub;
  std::jmp_buf jump;
  char message[JMSG_LENGTH_MAX] = {0};
};

void on_error(j_common_ptr cinfo) {
  auto* err = reinterpret_cast<ErrorManager*>(cinfo->err);
  (*cinfo->err->format_message)(cinfo, err->message);
  std::longjmp(err->jump, 1);
}

// Warnings (level -1) are corrupt-data reports: keep the first, count them all.
void on_message(j_common_ptr cinfo, int level) {
  auto* err = reinterpret_cast<ErrorManager*>(cinfo->err);
  if (level >= 0) return;  // trace messages
  if (cinfo->err->num_warnings++ == 0) (*cinfo->err->format_message)(cinfo, err->message);
}

struct Decompressor {
  jpeg_decompress_struct cinfo;
  ErrorManager err;
  Decompressor() {
    cinfo.err = jpeg_std_error(&err.pub);
    err.pub.error_exit = on_error;
    err.pub.emit_message = on_message;
    jpeg_create_decompress(&cinfo);
  }
  ~Decompressor() { jpeg_destroy_decompress(&cinfo); }
};

void check_size(size_t size, const std::string& origin) {
  if (size == 0) throw DecodeError(origin, "empty file", DecodeError::Kind::empty);
  if (size > size_t(1) << 31)
    throw DecodeError(origin, "file of " + std::to_string(size) + " bytes is too large", DecodeError::Kind::too_large);
}

}  // namespace

JpegInfo read_jpeg_info(const uint8_t* data, size_t size, const std::string& origin) {
  check_size(size, origin);
  Decompressor d;
  if (setjmp(d.err.jump)) throw DecodeError(origin, std::string("not a readable JPEG (") + d.err.message + ")");
  jpeg_mem_src(&d.cinfo, data, static_cast<unsigned long>(size));
  jpeg_read_header(&d.cinfo, TRUE);
  return {int(d.cinfo.image_width), int(d.cinfo.image_height), d.cinfo.num_components};
}

int choose_dct_scale(double crop_w, double crop_h, int out_w, int out_h) {
  KD_CHECK(crop_w > 0 && crop_h > 0 && out_w > 0 && out_h > 0, "choose_dct_scale: need positive sizes, got crop ",
           crop_w, "x", crop_h, ", output ", out_w, "x", out_h);
  // Powers of two only: libjpeg-turbo's SIMD IDCTs cover 1/8, 2/8, 4/8 and 8/8; the other M/8
  // run generic C code, and measured slower than the full-size decode they replace (kd
  // bench-decode on photos: 947 images/s with 5/8-7/8 among the scales, 1,130 at 8/8).
  for (int m = 1; m < 8; m *= 2)
    if (crop_w * m / 8 >= out_w && crop_h * m / 8 >= out_h) return m;
  return 8;
}

AxisRange decoded_range(double lo, double hi, int scale_num, int scaled_size) {
  // A view of [lo, hi) samples decoded coordinates [lo s - 0.5, hi s - 0.5] (half-pixel centres,
  // kernels/augment.h), s = M/8, so its bilinear taps are the pixels floor(lo s - 0.5) ..
  // floor(hi s - 0.5) + 1. One more pixel on each side is decoded but never read: libjpeg's
  // fancy upsampler treats a cropped region's first and last columns as image edges, so they
  // may differ from a whole decode's.
  const double s = scale_num / 8.0;
  AxisRange r;
  r.begin = int(std::clamp(std::floor(lo * s - 0.5) - 1.0, 0.0, double(scaled_size - 1)));
  r.end = int(std::clamp(std::floor(hi * s - 0.5) + 3.0, double(r.begin + 1), double(scaled_size)));
  return r;
}

namespace {

// Shared by the whole and the region decode: `need` null decodes everything at scale_num/8.
Image decode(const uint8_t* data, size_t size, const std::string& origin, const int whole_scale,
             const ViewNeedFn* need, const int64_t max_pixels) {
  check_size(size, origin);
  Decompressor d;
  // On the heap: a local changed between setjmp and longjmp would be indeterminate after the jump.
  const auto image = std::make_unique<Image>();
  const auto view = std::make_unique<ViewNeed>();
  const auto scale = std::make_unique<int>(whole_scale);
  if (setjmp(d.err.jump)) {
    const std::string why = d.err.message;
    if (why.find("color conversion") != std::string::npos || d.cinfo.jpeg_color_space == JCS_CMYK ||
        d.cinfo.jpeg_color_space == JCS_YCCK)
      throw DecodeError(origin, "CMYK JPEG (" + why + "); convert it to RGB", DecodeError::Kind::unsupported);
    throw DecodeError(origin, "corrupt JPEG (" + why + ")");
  }
  jpeg_mem_src(&d.cinfo, data, static_cast<unsigned long>(size));
  jpeg_read_header(&d.cinfo, TRUE);
  const int full_w = int(d.cinfo.image_width), full_h = int(d.cinfo.image_height);
  check_image_pixels(full_w, full_h, max_pixels, origin);
  if (d.cinfo.jpeg_color_space == JCS_CMYK || d.cinfo.jpeg_color_space == JCS_YCCK)
    throw DecodeError(origin, "CMYK JPEG; convert it to RGB", DecodeError::Kind::unsupported);
  if (need) {
    *view = (*need)(full_h, full_w);  // may throw a kd::Error (a broken recipe): not a bad image
    KD_CHECK(std::isfinite(view->y0) && std::isfinite(view->x0) && view->h > 0 && view->w > 0 && view->out_h > 0 &&
                 view->out_w > 0,
             "decode_jpeg_region: bad view need (box ", view->y0, ",", view->x0, " ", view->h, "x", view->w,
             ", output ", view->out_h, "x", view->out_w, ") for ", origin);
    *scale = choose_dct_scale(view->w, view->h, view->out_w, view->out_h);
  }
  const int scale_num = *scale;
  d.cinfo.out_color_space = JCS_RGB;
  d.cinfo.scale_num = unsigned(scale_num);
  d.cinfo.scale_denom = 8;
  jpeg_start_decompress(&d.cinfo);
  const int scaled_h = int(d.cinfo.output_height), scaled_w = int(d.cinfo.output_width);
  AxisRange rows{0, scaled_h}, cols{0, scaled_w};
  if (need) {
    rows = decoded_range(view->y0, double(view->y0) + view->h, scale_num, scaled_h);
    cols = decoded_range(view->x0, double(view->x0) + view->w, scale_num, scaled_w);
    if (cols.begin > 0 || cols.end < scaled_w) {
      JDIMENSION x = JDIMENSION(cols.begin), w = JDIMENSION(cols.end - cols.begin);
      jpeg_crop_scanline(&d.cinfo, &x, &w);  // x moves left to an iMCU edge, w grows to match
      cols = {int(x), int(x + w)};
    }
    if (rows.begin > 0) jpeg_skip_scanlines(&d.cinfo, JDIMENSION(rows.begin));
  }
  image->width = int(d.cinfo.output_width);
  image->height = rows.end - rows.begin;
  image->pixels.resize(size_t(image->width) * image->height * Image::channels);
  const size_t stride = size_t(image->width) * Image::channels;
  while (int(d.cinfo.output_scanline) < rows.end) {
    JSAMPROW row = image->pixels.data() + (d.cinfo.output_scanline - JDIMENSION(rows.begin)) * stride;
    jpeg_read_scanlines(&d.cinfo, &row, 1);
  }
  // A whole decode reads to the end, so truncation anywhere is seen; a region decode stops after
  // its last row (the destructor aborts the rest).
  if (!need) jpeg_finish_decompress(&d.cinfo);
  if (d.err.pub.num_warnings > 0) throw DecodeError(origin, std::string("corrupt JPEG (") + d.err.message + ")");
  if (need || scale_num != 8) {
    image->full_height = full_h, image->full_width = full_w;
    image->offset_y = rows.begin, image->offset_x = cols.begin;
    image->scale_num = scale_num;
  }
  return std::move(*image);
}

}  // namespace

Image decode_jpeg(const uint8_t* data, size_t size, const std::string& origin, int scale_num, int64_t max_pixels) {
  KD_CHECK(scale_num >= 1 && scale_num <= 8, "decode_jpeg: scale ", scale_num, "/8 is not one of 1/8 .. 8/8");
  return decode(data, size, origin, scale_num, nullptr, max_pixels);
}

Image decode_jpeg_region(const uint8_t* data, size_t size, const std::string& origin, const ViewNeedFn& need,
                         int64_t max_pixels) {
  KD_CHECK(need != nullptr, "decode_jpeg_region: no view need for ", origin);
  return decode(data, size, origin, 8, &need, max_pixels);
}

}  // namespace kd
