// Resizing decoded images on the host, as the evaluation of pretrained models expects: timm's
// eval transforms resize the short side with bicubic (antialiased when downscaling), big_vision's
// distillation evals with area. The filters are PyTorch's (F.interpolate with antialias=True,
// align_corners=False; mode="area" is adaptive average pooling), so a PyTorch test can hold kd to
// them; results are rounded to uint8 like an image library's.
//
// Antialiased separable resampling, per axis of scale s = in / out: output i has centre
// c = s (i + 0.5) and reads inputs j in [max(0, floor(c - r + 0.5)), min(in, floor(c + r + 0.5)))
// with r = support * max(s, 1), weights filter((j - c + 0.5) / max(s, 1)) normalised to sum 1
// (support: bilinear 1, bicubic 2; bicubic a = -0.5).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "data/image.h"

namespace kd {

enum class ResizeFilter : uint8_t { bilinear, bicubic, area };
ResizeFilter parse_resize_filter(const std::string& name);  // throws naming bilinear, bicubic, area

// The taps of one axis: for output i, inputs [first[i], first[i] + count[i]) with weights.
struct ResizeTaps {
  std::vector<int32_t> first, count;
  std::vector<float> weights;   // count[i] weights per output, back to back
  std::vector<int64_t> offset;  // where output i's weights start
};
ResizeTaps resize_taps(int64_t in, int64_t out, ResizeFilter filter);

// HWC float resample (no rounding) and the uint8 image version (rounded, clamped).
std::vector<float> resize_hwc(const float* in, int64_t h, int64_t w, int64_t c, int64_t out_h, int64_t out_w,
                              ResizeFilter filter);
Image resize_image(const Image& in, int64_t out_h, int64_t out_w, ResizeFilter filter);

// timm's eval geometry: resize the short side to floor(res / crop_fraction) (the long side
// scaled alike, truncated), then a centred res x res crop (offsets rounded as torchvision's
// CenterCrop). Returns the resized image and the crop's top-left corner.
struct EvalResize {
  Image image;
  int32_t top = 0, left = 0;
};
EvalResize resize_for_eval(const Image& in, int64_t res, double crop_fraction, ResizeFilter filter);

}  // namespace kd
