// FP8 teachers (teacher.precision = "fp8", engine/fp8_teacher.h): FP8 turned on in each teacher
// and its activation scales calibrated on the first `batches` x `batch_size` images of the
// training source (index order), rendered as evaluation renders them (centre crops) at each
// teacher's resolution. The same images in every run of a configuration, fresh or resumed, so a
// resumed run's teachers compute the same function.
#pragma once
#include <cstdint>
#include <vector>

#include "engine/fp8_teacher.h"
#include "models/model.h"
#include "train/evaluate.h"

namespace kd {

Fp8Summary prepare_fp8_teachers(Context& ctx, const std::vector<Model*>& teachers,
                                const std::vector<int64_t>& resolutions, SourcePtr source, const EvalSettings& settings,
                                int64_t batches, int64_t batch_size);

}  // namespace kd
