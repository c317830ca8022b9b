#include "kernels/augment.h"

#include <cmath>

namespace kd {

void augment_cpu(const uint8_t* pixels, const SourceImage* sources, const ViewRecipe* recipes, int64_t n,
                 const Normalization& norm, int64_t out_h, int64_t out_w, float* out) {
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t i = 0; i < n; ++i)
    for (int64_t oy = 0; oy < out_h; ++oy)
      for (int64_t ox = 0; ox < out_w; ++ox)
        render_pixel(pixels, sources, recipes[i], norm, out_h, out_w, oy, ox,
                     out + ((i * out_h + oy) * out_w + ox) * 3);
}

}  // namespace kd
