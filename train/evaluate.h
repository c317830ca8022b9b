// Evaluation on centre crops (eval.resize: direct samples the centred square box straight to the
// input size, bilinearly, as training views are rendered; bilinear, bicubic and area resize the
// image on the host as timm's eval transforms do (data/resize.h), then take the centre crop):
// student top-1/top-5
// against the labels, and with teachers the ensemble's top-1, the student/teacher agreement
// (the teacher's top-1 class within the student's top-1 / top-5) and the mean KL(teacher ||
// student) at temperature 1.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "data/source.h"
#include "engine/comm.h"
#include "engine/context.h"
#include "models/model.h"
#include "train/options.h"

namespace kd {

struct EvalResult {
  int64_t images = 0;
  double student_top1 = 0, student_top5 = 0;
  bool has_teacher = false;
  double teacher_top1 = 0, agree_top1 = 0, agree_top5 = 0, kl = 0;  // the ensemble (mean of softmaxes)
  std::vector<double> each_teacher_top1, each_agree_top1;            // per teacher, when there are several
  double wall_s = 0;
  bool interrupted = false;     // SIGINT/SIGTERM stopped it part-way (one process only): counts are partial
  std::string json() const;     // {"images": .., "student_top1": .., ...}
  std::string summary() const;  // one console line
};

// Teacher logits on the evaluation set (this rank's part) never change during a run: computed
// once, then reused.
struct TeacherEvalCache {
  std::vector<float> logits;  // [teachers, images, classes]
  int64_t teachers = 0, classes = 0;
  bool filled = false;
};

struct EvalSettings {
  int64_t student_resolution = 224, teacher_resolution = 224;
  std::vector<int64_t> teacher_resolutions;  // per teacher (empty: teacher_resolution for all)
  int64_t batch_size = 256;
  int threads = 2;
  Normalization norm;
  float crop_fraction = 0.875f;
  std::string resize = "direct";  // eval.resize
};
EvalSettings eval_settings(const TrainOptions& o);

// With a communicator of several ranks, each evaluates its contiguous part of the test set and
// the counts are summed: every rank returns the result over the whole set.
EvalResult evaluate(Context& ctx, Model& student, const std::vector<Model*>& teachers, SourcePtr test,
                    const EvalSettings& settings, TeacherEvalCache* cache = nullptr, Communicator* comm = nullptr);

}  // namespace kd
