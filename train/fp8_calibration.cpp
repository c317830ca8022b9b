#include "train/fp8_calibration.h"

#include <algorithm>
#include <cstdio>

#include "engine/ops.h"
#include "kernels/distill_loss.h"
#include "train/render.h"

namespace kd {

LogitComparison compare_logits(const float* full, const float* fp8, int64_t rows, int64_t classes) {
  LogitComparison c;
  if (rows == 0) return c;
  // distill_loss at T = 1 with the full-precision logits as the teacher: its per-row loss is
  // KL(full || fp8), and the rank of the full logits' top-1 among the FP8 logits is 0 when the
  // two agree.
  std::vector<float> kl(size_t(rows), 0.0f);
  std::vector<int32_t> rank(size_t(rows), 0);
  distill_loss_cpu<float>(DistillLossShape{rows, classes, 1}, DistillLossOptions{}, full, fp8, kl.data(), nullptr,
                          nullptr, rank.data());
  double kl_sum = 0;
  int64_t agree = 0;
  for (int64_t i = 0; i < rows; ++i) kl_sum += kl[size_t(i)], agree += rank[size_t(i)] == 0;
  c.agreement = double(agree) / double(rows);
  c.kl = kl_sum / double(rows);
  return c;
}

std::string Fp8Check::describe() const {
  if (teachers.empty()) return "no FP8 check";
  size_t low = 0, high = 0;
  for (size_t k = 1; k < teachers.size(); ++k) {
    if (teachers[k].agreement < teachers[low].agreement) low = k;
    if (teachers[k].kl > teachers[high].kl) high = k;
  }
  const bool several = teachers.size() > 1;
  char buf[256];
  std::snprintf(buf, sizeof buf, "top-1 agreement with full precision %.2f%%%s, KL %.3g%s, on %lld calibration images",
                100 * teachers[low].agreement,
                several ? (" (lowest: teacher " + std::to_string(low) + ")").c_str() : "", teachers[high].kl,
                several ? (" (largest: teacher " + std::to_string(high) + ")").c_str() : "", (long long)images);
  return buf;
}

Fp8Summary prepare_fp8_teachers(Context& ctx, const std::vector<Model*>& teachers,
                                const std::vector<int64_t>& resolutions, SourcePtr source, const EvalSettings& settings,
                                int64_t batches, int64_t batch_size, Fp8Check* check) {
  KD_CHECK(resolutions.size() == teachers.size(), "fp8 calibration: ", resolutions.size(), " resolutions for ",
           teachers.size(), " teachers");
  KD_CHECK(source && source->size() > 0, "fp8 calibration needs training images (data.train)");
  Fp8Summary total;
  for (Model* t : teachers) {
    const Fp8Summary s = enable_fp8(*t, batches);
    total.fp8_convs += s.fp8_convs, total.other_convs += s.other_convs;
  }
  total.calibration_images = std::min(source->size(), batches * batch_size);
  const int64_t checked = check ? std::min(total.calibration_images, kFp8CheckImages) : 0;
  // The calibration forwards compute in full precision (the convolutions only observe their
  // inputs): the first `checked` rows of each teacher's logits are the reference.
  std::vector<std::vector<float>> full(teachers.size());
  std::vector<int64_t> classes(teachers.size(), 0);
  int64_t seen = 0;
  for_each_centre_crop_batch(
      ctx, source, total.calibration_images, batch_size, settings.threads, settings.crop_fraction, settings.norm,
      resolutions, [&](const std::vector<Tensor>& x, int64_t rows) {
        const int64_t keep = std::min(rows, checked - seen);
        for (size_t k = 0; k < teachers.size(); ++k) {
          Tensor logits = teachers[k]->forward(ctx, x[k], Mode::eval);
          if (keep <= 0) continue;
          const Tensor host = ops::to_host_f32(ctx, logits);
          classes[k] = host.numel() / rows;
          full[k].insert(full[k].end(), host.data<float>(), host.data<float>() + keep * classes[k]);
        }
        seen += rows;
      });
  for (Model* t : teachers) finish_fp8_calibration(*t);
  if (!check) return total;

  // The same views again (the loader renders them identically), now through FP8.
  check->images = checked;
  check->teachers.assign(teachers.size(), LogitComparison{});
  std::vector<std::vector<float>> fp8(teachers.size());
  for_each_centre_crop_batch(ctx, source, checked, batch_size, settings.threads, settings.crop_fraction, settings.norm,
                             resolutions, [&](const std::vector<Tensor>& x, int64_t) {
                               for (size_t k = 0; k < teachers.size(); ++k) {
                                 const Tensor host = ops::to_host_f32(ctx, teachers[k]->forward(ctx, x[k], Mode::eval));
                                 fp8[k].insert(fp8[k].end(), host.data<float>(), host.data<float>() + host.numel());
                               }
                             });
  for (size_t k = 0; k < teachers.size(); ++k) {
    KD_CHECK(fp8[k].size() == full[k].size(), "fp8 check: teacher ", k, " gave ", fp8[k].size(),
             " logits on the second pass over the calibration images, ", full[k].size(), " on the first");
    check->teachers[k] = compare_logits(full[k].data(), fp8[k].data(), checked, classes[k]);
  }
  return total;
}

void require_fp8_fidelity(const Fp8Check& check, double min_agreement, double max_kl) {
  for (size_t k = 0; k < check.teachers.size(); ++k) {
    const LogitComparison& c = check.teachers[k];
    const std::string who = check.teachers.size() > 1 ? "teacher " + std::to_string(k) : "the teacher";
    char figures[160];
    std::snprintf(figures, sizeof figures, "top-1 agreement %.2f%%, KL %.3g on %lld calibration images",
                  100 * c.agreement, c.kl, (long long)check.images);
    KD_CHECK(c.agreement >= min_agreement, "teacher.precision = fp8 changes ", who,
             "'s function too much: its FP8 top-1 agrees with its full-precision top-1 on ", figures,
             ", below teacher.fp8_min_agreement = ", min_agreement,
             ". Run it in full precision (teacher.precision = default), or lower teacher.fp8_min_agreement");
    KD_CHECK(c.kl <= max_kl, "teacher.precision = fp8 changes ", who, "'s function too much: ", figures,
             ", above teacher.fp8_max_kl = ", max_kl,
             ". Run it in full precision (teacher.precision = default), or raise teacher.fp8_max_kl");
  }
}

}  // namespace kd
