// CPU reference of the distillation loss: rows in parallel, each row in double through a few
// per-thread buffers of `classes` doubles (the teacher distribution, the student's, the
// gradient). The per-element formulas are the KD_HD functions of the header, shared with CUDA.
#include "kernels/distill_loss.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/check.h"

namespace kd {

namespace {

struct DistanceName {
  DistillDistance distance;
  const char* name;
};
constexpr DistanceName kDistanceNames[] = {{DistillDistance::kl, "kl"},
                                           {DistillDistance::hard, "hard"},
                                           {DistillDistance::l2, "l2"},
                                           {DistillDistance::euclidean, "euclidean"},
                                           {DistillDistance::logsoftmax_euclidean, "logsoftmax_euclidean"}};

}  // namespace

DistillDistance parse_distill_distance(const std::string& name) {
  std::string valid;
  for (const DistanceName& d : kDistanceNames) {
    if (name == d.name) return d.distance;
    valid += (valid.empty() ? "" : ", ") + std::string(d.name);
  }
  KD_FAIL("unknown distillation distance '", name, "' (valid: ", valid, ")");
}

const char* distill_distance_name(DistillDistance d) {
  for (const DistanceName& n : kDistanceNames)
    if (n.distance == d) return n.name;
  KD_FAIL("invalid DistillDistance value ", int(d));
}

void check_distill_loss_args(const DistillLossShape& s, const DistillLossOptions& o) {
  KD_CHECK(s.rows >= 0 && s.classes >= 1 && s.teachers >= 1,
           "distill_loss: need rows >= 0, classes >= 1, teachers >= 1, got rows ", s.rows, " classes ", s.classes,
           " teachers ", s.teachers);
  distill_distance_name(o.distance);  // throws on a value outside the enum
  KD_CHECK(std::isfinite(o.temperature) && o.temperature > 0, "distill_loss: temperature must be positive, got ",
           o.temperature);
  KD_CHECK(std::isfinite(o.grad_scale), "distill_loss: grad_scale must be finite, got ", o.grad_scale);
  KD_CHECK(o.label_smoothing >= 0 && o.label_smoothing < 1, "distill_loss: label smoothing ", o.label_smoothing,
           " outside [0, 1)");
  KD_CHECK(std::isfinite(o.epsilon) && o.epsilon >= 0, "distill_loss: epsilon must be >= 0, got ", o.epsilon);
}

LogitRowsPlan distill_loss_cuda_plan(const DistillLossShape& s, int64_t max_shared_bytes) {
  return logit_rows_plan(s.classes, s.teachers + 1, s.teachers * kDistillTeacherStatBytes, max_shared_bytes);
}

namespace {

// p = softmax(x / temperature); returns lse = log sum_c exp(x_c / temperature), so that
// log p_c = x_c / temperature - lse exactly (no log of a rounded probability).
template <typename T>
double softmax_row(int64_t classes, const T* x, double temperature, double* p) {
  double max = double(x[0]) / temperature;
  for (int64_t c = 1; c < classes; ++c) max = std::fmax(max, double(x[c]) / temperature);
  double sum = 0;
  for (int64_t c = 0; c < classes; ++c) sum += p[c] = std::exp(double(x[c]) / temperature - max);
  for (int64_t c = 0; c < classes; ++c) p[c] /= sum;
  return max + std::log(sum);
}

// Per-thread row buffers, `classes` doubles each.
struct RowBuffers {
  std::vector<double> teacher_p, teacher_p1, student_p, grad, scratch;
  explicit RowBuffers(int64_t classes)
      : teacher_p(size_t(classes)),
        teacher_p1(size_t(classes)),
        student_p(size_t(classes)),
        grad(size_t(classes)),
        scratch(size_t(classes)) {}
};

template <typename T>
class DistillRow {
 public:
  DistillRow(const DistillLossShape& s, const DistillLossOptions& o, const T* teacher_logits, const T* student_logits)
      : s_(s), o_(o), t_(teacher_logits), student_(student_logits) {}

  // teacher k's logits of row r
  const T* teacher(int64_t k, int64_t r) const { return t_ + (k * s_.rows + r) * s_.classes; }

  // mean = mean_k softmax(t_k / temperature)
  void teacher_mean_probs(int64_t r, double temperature, double* mean, double* scratch) const {
    if (s_.teachers == 1) {
      softmax_row(s_.classes, teacher(0, r), temperature, mean);
      return;
    }
    std::fill(mean, mean + s_.classes, 0.0);
    for (int64_t k = 0; k < s_.teachers; ++k) {
      softmax_row(s_.classes, teacher(k, r), temperature, scratch);
      for (int64_t c = 0; c < s_.classes; ++c) mean[c] += scratch[c];
    }
    const double inv = 1.0 / double(s_.teachers);
    for (int64_t c = 0; c < s_.classes; ++c) mean[c] *= inv;
  }

  // Fills b.grad with d loss_r / d s (before grad_scale) and returns loss_r. top1 is the
  // teacher's top-1 class (only used by hard). teacher_p holds the teacher distribution at the
  // temperature when the distance is kl.
  double loss_and_grad(int64_t r, int64_t top1, RowBuffers& b) const {
    const int64_t C = s_.classes, K = s_.teachers;
    const T* s = student_ + r * C;
    double* g = b.grad.data();
    double* ps = b.student_p.data();
    switch (o_.distance) {
      case DistillDistance::kl: {
        const double temp = double(o_.temperature);
        const double lse = softmax_row(C, s, temp, ps);
        const double* pt = b.teacher_p.data();
        double kl = 0;
        for (int64_t c = 0; c < C; ++c) {
          kl += kl_element(pt[c], std::log(pt[c]), double(s[c]) / temp - lse);
          g[c] = kl_grad_element(temp, ps[c], pt[c]);
        }
        return temp * temp * kl;
      }
      case DistillDistance::hard: {
        const double ls = double(o_.label_smoothing);
        const double lse = softmax_row(C, s, 1.0, ps);
        const double on = hard_target(true, C, ls), off = hard_target(false, C, ls);
        const double log_on = std::log(on), log_off = std::log(off);
        double kl = 0;
        for (int64_t c = 0; c < C; ++c) {
          const bool is_top1 = c == top1;
          kl += kl_element(is_top1 ? on : off, is_top1 ? log_on : log_off, double(s[c]) - lse);
          g[c] = ps[c] - (is_top1 ? on : off);
        }
        return kl;
      }
      case DistillDistance::l2: {
        // mean_k sum_c (s - t_k)^2, gradient mean_k 2 (s - t_k)
        std::fill(g, g + C, 0.0);
        double loss = 0;
        for (int64_t k = 0; k < K; ++k) {
          const T* t = teacher(k, r);
          for (int64_t c = 0; c < C; ++c) {
            const double diff = double(s[c]) - double(t[c]);
            loss += diff * diff;
            g[c] += 2 * diff;
          }
        }
        for (int64_t c = 0; c < C; ++c) g[c] /= double(K);
        return loss / double(K);
      }
      case DistillDistance::euclidean: {
        std::fill(g, g + C, 0.0);
        double loss = 0;
        for (int64_t k = 0; k < K; ++k) {
          const T* t = teacher(k, r);
          double sq = 0;
          for (int64_t c = 0; c < C; ++c) {
            const double diff = double(s[c]) - double(t[c]);
            sq += diff * diff;
          }
          const double dist = std::sqrt(sq + double(o_.epsilon));
          loss += dist;
          for (int64_t c = 0; c < C; ++c) g[c] += euclidean_grad_element(double(s[c]) - double(t[c]), dist);
        }
        for (int64_t c = 0; c < C; ++c) g[c] /= double(K);
        return loss / double(K);
      }
      case DistillDistance::logsoftmax_euclidean: {
        // diff_c = log p_s,c - log p_t,c = (s_c - t_c) - (lse_s - lse_t)
        std::fill(g, g + C, 0.0);
        const double lse_s = softmax_row(C, s, 1.0, ps);
        double* diff = b.scratch.data();
        double loss = 0;
        for (int64_t k = 0; k < K; ++k) {
          const T* t = teacher(k, r);
          const double lse_t = softmax_row(C, t, 1.0, b.teacher_p1.data());
          double sq = 0;
          for (int64_t c = 0; c < C; ++c) {
            diff[c] = (double(s[c]) - double(t[c])) - (lse_s - lse_t);
            sq += diff[c] * diff[c];
          }
          const double dist = std::sqrt(sq + double(o_.epsilon));
          loss += dist;
          double sum_u = 0;
          for (int64_t c = 0; c < C; ++c) sum_u += diff[c] = euclidean_grad_element(diff[c], dist);  // u_c
          for (int64_t c = 0; c < C; ++c) g[c] += logsoftmax_euclidean_grad_element(diff[c], ps[c], sum_u);
        }
        for (int64_t c = 0; c < C; ++c) g[c] /= double(K);
        return loss / double(K);
      }
    }
    return 0;  // unreachable: check_distill_loss_args() rejected other values
  }

 private:
  const DistillLossShape& s_;
  const DistillLossOptions& o_;
  const T* t_;
  const T* student_;
};

int64_t argmax(int64_t n, const double* p) {
  int64_t best = 0;
  for (int64_t c = 1; c < n; ++c)
    if (ranks_above(p[c], c, p[best], best)) best = c;
  return best;
}

}  // namespace

template <typename T>
void distill_loss_cpu(const DistillLossShape& s, const DistillLossOptions& o, const T* teacher_logits,
                      const T* student_logits, T* loss_rows, T* dstudent, int32_t* teacher_top1,
                      int32_t* student_rank) {
  check_distill_loss_args(s, o);
  const DistillRow<T> row(s, o, teacher_logits, student_logits);
  const int64_t C = s.classes;
  const bool is_kl = o.distance == DistillDistance::kl, is_hard = o.distance == DistillDistance::hard;
  const bool need_loss = loss_rows || dstudent, need_top1 = teacher_top1 || student_rank || (is_hard && need_loss);
  const double temperature = double(o.temperature), grad_scale = double(o.grad_scale);
#pragma omp parallel
  {
    RowBuffers b(C);
#pragma omp for schedule(static)
    for (int64_t r = 0; r < s.rows; ++r) {
      // The teacher distribution at temperature 1 gives top-1; kl needs it at T (the same at T = 1).
      if (is_kl && need_loss) row.teacher_mean_probs(r, temperature, b.teacher_p.data(), b.scratch.data());
      int64_t top1 = -1;
      if (need_top1) {
        double* p1 = b.teacher_p1.data();
        if (is_kl && need_loss && temperature == 1.0)
          p1 = b.teacher_p.data();
        else
          row.teacher_mean_probs(r, 1.0, p1, b.scratch.data());
        top1 = argmax(C, p1);
      }
      if (need_loss) {
        const double loss = row.loss_and_grad(r, top1, b);
        if (loss_rows) loss_rows[r] = T(loss);
        if (dstudent)
          for (int64_t c = 0; c < C; ++c) dstudent[r * C + c] = T(grad_scale * b.grad[size_t(c)]);
      }
      if (teacher_top1) teacher_top1[r] = int32_t(top1);
      if (student_rank) {
        const T* x = student_logits + r * C;
        int64_t above = 0;
        for (int64_t c = 0; c < C; ++c) above += ranks_above(x[c], c, x[top1], top1);
        student_rank[r] = int32_t(above);
      }
    }
  }
}

template void distill_loss_cpu<float>(const DistillLossShape&, const DistillLossOptions&, const float*, const float*,
                                      float*, float*, int32_t*, int32_t*);
template void distill_loss_cpu<double>(const DistillLossShape&, const DistillLossOptions&, const double*, const double*,
                                       double*, double*, int32_t*, int32_t*);

}  // namespace kd
