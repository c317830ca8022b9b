// FP8 teachers (teacher.precision = "fp8", engine/fp8_teacher.h): FP8 turned on in each teacher
// and its activation scales calibrated on the first `batches` x `batch_size` images of the
// training source (index order), rendered as evaluation renders them (centre crops) at each
// teacher's resolution. The same images in every run of a configuration, fresh or resumed, so a
// resumed run's teachers compute the same function.
//
// Then a check of what FP8 changed: the calibration forwards run in full precision, so their
// logits on the first calibration images are kept and compared with the FP8 teacher's on the same
// views (top-1 agreement, KL). A run refuses a teacher that FP8 moves beyond
// teacher.fp8_min_agreement / teacher.fp8_max_kl before it trains a step on it: a days-long
// distillation from a broken teacher is the costliest way to find out.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "engine/fp8_teacher.h"
#include "models/model.h"
#include "train/evaluate.h"

namespace kd {

// Top-1 agreement of two [rows, classes] logit arrays and the mean KL(softmax(full) ||
// softmax(fp8)) at temperature 1 (the evaluation's agreement and KL).
struct LogitComparison {
  double agreement = 0, kl = 0;
};
LogitComparison compare_logits(const float* full, const float* fp8, int64_t rows, int64_t classes);

// The check of each teacher, on the first `images` calibration images.
struct Fp8Check {
  int64_t images = 0;
  std::vector<LogitComparison> teachers;
  // "top-1 agreement with full precision 99.41%, KL 0.00071, on 512 calibration images" (the
  // lowest agreement and the largest KL over the teachers, each named when there are several).
  std::string describe() const;
};
// The most calibration images the check compares (their full-precision logits stay on the host:
// 1,024 rows of 21,843 classes are 89 MB).
constexpr int64_t kFp8CheckImages = 1024;

// With `check`, the comparison above is made and written there.
Fp8Summary prepare_fp8_teachers(Context& ctx, const std::vector<Model*>& teachers,
                                const std::vector<int64_t>& resolutions, SourcePtr source, const EvalSettings& settings,
                                int64_t batches, int64_t batch_size, Fp8Check* check = nullptr);

// Throws naming the teacher, its figures and the option to change when FP8 moved a teacher's
// top-1 agreement below min_agreement or its KL above max_kl.
void require_fp8_fidelity(const Fp8Check& check, double min_agreement, double max_kl);

}  // namespace kd
