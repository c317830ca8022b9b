// The fixed teacher of the paper's comparison ("precomputed teacher"): the teacher ensemble's
// logits on the centre crop of every training image, computed once when the run starts. The
// images go through the teacher in canonical batches of kFixedTeacherBatch consecutive indices,
// so an image's logits never depend on how the run is split over ranks or micro-batches (a CPU
// GEMM's rounding depends on the batch it sits in). Memory: images x teachers x classes floats
// on the host (ImageNet with 1,000 classes: 5 GB per teacher).
#pragma once
#include <cstdint>
#include <vector>

#include "data/source.h"
#include "engine/context.h"
#include "kernels/augment.h"
#include "models/model.h"

namespace kd {

constexpr int64_t kFixedTeacherBatch = 64;

class FixedTeacherTable {
 public:
  // Every image of `source` at its centre crop (side = short side x crop_fraction), rendered at
  // `resolution`, through every teacher.
  // resolutions: one per teacher.
  void compute(Context& ctx, const std::vector<Model*>& teachers, const SourcePtr& source,
               const std::vector<int64_t>& resolutions, float crop_fraction, const Normalization& norm,
               int loader_threads);
  bool ready() const { return images_ > 0; }
  // Logits [teachers, rows, classes] of the given source indices, on ctx's device.
  Tensor logits(Context& ctx, const std::vector<int64_t>& indices) const;

 private:
  std::vector<float> table_;  // [images, teachers, classes]
  int64_t images_ = 0, teachers_ = 0, classes_ = 0;
};

}  // namespace kd
