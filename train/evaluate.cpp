#include "train/evaluate.h"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <optional>
#include <sstream>

#include "data/loader.h"
#include "data/resize.h"
#include "engine/fault_injection.h"
#include "engine/ops.h"
#include "kernels/softmax.h"
#include "train/loop.h"
#include "train/pipeline.h"
#include "train/run_log.h"

namespace kd {

std::string EvalResult::json() const {
  std::ostringstream o;  // json_number: null, not nan, for a value that is not finite
  o << "{\"images\": " << images << ", \"student_top1\": " << json_number(student_top1)
    << ", \"student_top5\": " << json_number(student_top5);
  if (has_teacher)
    o << ", \"teacher_top1\": " << json_number(teacher_top1) << ", \"agreement\": " << json_number(agree_top1)
      << ", \"agreement_top5\": " << json_number(agree_top5) << ", \"kl\": " << json_number(kl);
  if (!each_teacher_top1.empty()) {
    o << ", \"each_teacher_top1\": [";
    for (size_t m = 0; m < each_teacher_top1.size(); ++m) o << (m ? ", " : "") << json_number(each_teacher_top1[m]);
    o << "], \"each_agreement\": [";
    for (size_t m = 0; m < each_agree_top1.size(); ++m) o << (m ? ", " : "") << json_number(each_agree_top1[m]);
    o << "]";
  }
  o << ", \"wall_s\": " << json_number(wall_s) << "}";
  return o.str();
}

std::string EvalResult::summary() const {
  char buf[256];
  if (has_teacher)
    std::snprintf(buf, sizeof buf,
                  "eval on %lld images: student top-1 %.2f%% top-5 %.2f%% | teacher top-1 %.2f%% | agreement %.2f%% "
                  "(top-5 %.2f%%) | KL %.4f | %.1fs",
                  (long long)images, 100 * student_top1, 100 * student_top5, 100 * teacher_top1, 100 * agree_top1,
                  100 * agree_top5, kl, wall_s);
  else
    std::snprintf(buf, sizeof buf, "eval on %lld images: top-1 %.2f%% top-5 %.2f%% | %.1fs", (long long)images,
                  100 * student_top1, 100 * student_top5, wall_s);
  std::string line = buf;
  for (size_t m = 0; m < each_teacher_top1.size(); ++m) {
    std::snprintf(buf, sizeof buf, "%s teacher %zu: top-1 %.2f%%, agreement %.2f%%", m ? ";" : " |", m,
                  100 * each_teacher_top1[m], 100 * each_agree_top1[m]);
    line += buf;
  }
  return line;
}

EvalSettings eval_settings(const TrainOptions& o) {
  EvalSettings s;
  s.student_resolution = o.augment.resolution;
  s.teacher_resolution = o.augment.teacher_resolution > 0 ? o.augment.teacher_resolution : o.augment.resolution;
  if (o.mode == RunMode::distill) s.teacher_resolutions = o.step_config().teacher_resolutions;
  s.batch_size = o.eval.batch_size;
  s.threads = int(o.data.loader_threads);
  s.norm = o.augment.normalization();
  s.crop_fraction = float(o.augment.eval_crop_fraction);
  s.resize = o.eval.resize;
  return s;
}

namespace {
// Each resolution from images resized on the host (eval.resize) and its centre crop, copied out.
std::vector<Tensor> render_resized(Context& ctx, const std::vector<Image>& images, const EvalSettings& settings,
                                   const std::vector<int64_t>& resolutions) {
  const ResizeFilter filter = parse_resize_filter(settings.resize);
  for (const Image& im : images)
    KD_CHECK(!im.on_device(), "eval.resize=", settings.resize, " resizes decoded images on the host, but ", im.origin,
             " is left for the GPU to decode (data.jpeg_decoder=nvjpeg): use eval.resize=direct or another decoder");
  std::vector<Tensor> out;
  for (int64_t res : resolutions) {
    std::vector<Image> resized(images.size());
    std::vector<ViewRecipe> recipes(images.size());
#pragma omp parallel for schedule(dynamic)
    for (size_t i = 0; i < images.size(); ++i) {
      EvalResize r = resize_for_eval(images[i], res, settings.crop_fraction, filter);
      resized[i] = std::move(r.image);
      recipes[i].a.image = int32_t(i);
      recipes[i].a.box = CropBox{float(r.top), float(r.left), float(res), float(res)};  // a copy: scale 1
    }
    out.push_back(render_views(ctx, pack_images(resized), recipes, settings.norm, res).first);
  }
  return out;
}
}  // namespace

EvalResult evaluate(Context& ctx, Model& student, const std::vector<Model*>& teachers, SourcePtr test,
                    const EvalSettings& settings, TeacherEvalCache* cache, Communicator* comm) {
  const auto started = std::chrono::steady_clock::now();
  const int64_t total = test->size(), classes = student.spec().num_classes, k = int64_t(teachers.size());
  const int64_t ranks = comm ? comm->size() : 1, rank = comm ? comm->rank() : 0;
  const int64_t first = total * rank / ranks, n = total * (rank + 1) / ranks - first;  // this rank's part
  LoaderOptions lo;
  lo.batch_size = int(settings.batch_size);
  lo.num_threads = settings.threads;
  lo.prefetch_batches = 2;
  std::optional<Loader> loader;
  if (n > 0) loader.emplace(test, range_plan(first, n, settings.batch_size), lo);

  const bool use_cache = cache && k > 0;
  const bool fill_cache = use_cache && !cache->filled;
  if (fill_cache) cache->logits.assign(size_t(k * n * classes), 0.0f), cache->teachers = k, cache->classes = classes;
  EvalResult r;
  r.has_teacher = k > 0;
  double kl_sum = 0;
  int64_t correct1 = 0, correct5 = 0, teacher_correct = 0, agree1 = 0, agree5 = 0, seen = 0;
  std::vector<int64_t> each_correct(size_t(k), 0), each_agree(size_t(k), 0);
  std::vector<int64_t> resolutions{settings.student_resolution};  // the student's, then each teacher's
  for (int64_t m = 0; m < k; ++m)
    resolutions.push_back(settings.teacher_resolutions.empty() ? settings.teacher_resolution
                                                               : settings.teacher_resolutions[size_t(m)]);
  while (loader) {
    fault::point("evaluate.batch");
    // A signal ends a lone process's evaluation early (ranks may hold different numbers of
    // batches, so a job's evaluation runs to its end and the loop stops after it).
    if (ranks == 1 && stop_requested()) {
      r.interrupted = true;
      break;
    }
    auto batch = loader->next();
    if (!batch) break;
    const PackedImages packed = pack_images(batch->images);
    const int64_t rows = int64_t(batch->size());
    auto views = make_eval_views(packed.file_sizes, settings.crop_fraction);
    place_views(views, packed);
    const bool teachers_now = k > 0 && !(use_cache && cache->filled);
    const std::vector<int64_t> wanted = teachers_now ? resolutions : std::vector<int64_t>{resolutions[0]};
    std::vector<Tensor> xv = settings.resize == "direct"
                                 ? render_views_at(ctx, packed, views, settings.norm, wanted)
                                 : render_resized(ctx, batch->images, settings, wanted);
    Tensor student_logits = student.forward(ctx, xv[0], Mode::eval);
    Tensor host = ops::to_host_f32(ctx, student_logits);
    std::vector<int32_t> hit1(static_cast<size_t>(rows)), hit5(static_cast<size_t>(rows));
    topk_correct_cpu<float>(rows, classes, host.data<float>(), batch->labels.data(), 1, hit1.data());
    topk_correct_cpu<float>(rows, classes, host.data<float>(), batch->labels.data(), 5, hit5.data());
    for (int64_t i = 0; i < rows; ++i) correct1 += hit1[size_t(i)], correct5 += hit5[size_t(i)];
    if (k > 0) {
      // Teacher logits [k, rows, classes] on the host: from the cache or computed now.
      std::vector<float> t(static_cast<size_t>(k * rows * classes));
      if (use_cache && cache->filled) {
        for (int64_t m = 0; m < k; ++m)
          std::copy_n(cache->logits.begin() + (m * n + seen) * classes, rows * classes, t.begin() + m * rows * classes);
      } else {
        Tensor logits =
            ops::to_host_f32(ctx, teacher_logits(ctx, teachers, std::vector<Tensor>(xv.begin() + 1, xv.end())));
        std::copy_n(logits.data<float>(), t.size(), t.begin());
        if (fill_cache)
          for (int64_t m = 0; m < k; ++m)
            std::copy_n(t.begin() + m * rows * classes, rows * classes, cache->logits.begin() + (m * n + seen) * classes);
      }
      DistillLossShape s{rows, classes, k};
      DistillLossOptions o;  // kl at T = 1
      std::vector<float> kl(static_cast<size_t>(rows));
      std::vector<int32_t> top1(static_cast<size_t>(rows)), rank(static_cast<size_t>(rows));
      distill_loss_cpu<float>(s, o, t.data(), host.data<float>(), kl.data(), nullptr, top1.data(), rank.data());
      for (int64_t i = 0; i < rows; ++i) {
        kl_sum += kl[size_t(i)];
        teacher_correct += top1[size_t(i)] == batch->labels[size_t(i)];
        agree1 += rank[size_t(i)] == 0;
        agree5 += rank[size_t(i)] < 5;
      }
      for (int64_t m = 0; k > 1 && m < k; ++m) {  // each teacher alone
        distill_loss_cpu<float>(DistillLossShape{rows, classes, 1}, o, t.data() + m * rows * classes,
                                host.data<float>(), nullptr, nullptr, top1.data(), rank.data());
        for (int64_t i = 0; i < rows; ++i) {
          each_correct[size_t(m)] += top1[size_t(i)] == batch->labels[size_t(i)];
          each_agree[size_t(m)] += rank[size_t(i)] == 0;
        }
      }
    }
    seen += rows;
  }
  if (fill_cache && !r.interrupted) cache->filled = true;
  if (comm && comm->size() > 1) {
    std::vector<double> sums = {double(seen),  double(correct1), double(correct5), double(teacher_correct),
                                double(agree1), double(agree5),   kl_sum};
    for (int64_t m = 0; m < k; ++m) sums.push_back(double(each_correct[size_t(m)])), sums.push_back(double(each_agree[size_t(m)]));
    comm->all_reduce_host(sums.data(), int64_t(sums.size()), ReduceOp::sum);
    seen = int64_t(sums[0]), correct1 = int64_t(sums[1]), correct5 = int64_t(sums[2]);
    teacher_correct = int64_t(sums[3]), agree1 = int64_t(sums[4]), agree5 = int64_t(sums[5]), kl_sum = sums[6];
    for (int64_t m = 0; m < k; ++m)
      each_correct[size_t(m)] = int64_t(sums[size_t(7 + 2 * m)]), each_agree[size_t(m)] = int64_t(sums[size_t(8 + 2 * m)]);
  }
  KD_CHECK(seen > 0, "evaluation: the test split is empty");
  r.images = seen;
  r.student_top1 = double(correct1) / double(seen);
  r.student_top5 = double(correct5) / double(seen);
  if (k > 0) {
    r.teacher_top1 = double(teacher_correct) / double(seen);
    r.agree_top1 = double(agree1) / double(seen);
    r.agree_top5 = double(agree5) / double(seen);
    r.kl = kl_sum / double(seen);
    for (int64_t m = 0; k > 1 && m < k; ++m) {
      r.each_teacher_top1.push_back(double(each_correct[size_t(m)]) / double(seen));
      r.each_agree_top1.push_back(double(each_agree[size_t(m)]) / double(seen));
    }
  }
  r.wall_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  return r;
}

}  // namespace kd
