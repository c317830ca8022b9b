// CPU softmax family and cross-entropy: one row at a time, rows in parallel. Every row is
// max-subtracted before exp, so any logit magnitude is safe, and sums run in double whatever T
// is (a 21k-class row summed in float would lose ~4 digits).
#include "kernels/softmax.h"

#include <cmath>

#include "kernels/check.h"

namespace kd {

namespace {

// max_c x[c] and log sum_c exp(x[c] - max): log softmax(x)[c] = x[c] - max - log_sum.
template <typename T>
void row_max_and_log_sum(int64_t classes, const T* x, double& max, double& log_sum) {
  max = double(x[0]);
  for (int64_t c = 1; c < classes; ++c) max = std::fmax(max, double(x[c]));
  double sum = 0;
  for (int64_t c = 0; c < classes; ++c) sum += std::exp(double(x[c]) - max);
  log_sum = std::log(sum);
}

void check_shape(const char* op, int64_t rows, int64_t classes) {
  KD_CHECK(rows >= 0 && classes >= 1, op, ": need rows >= 0 and classes >= 1, got rows ", rows, " classes ", classes);
}

// Serial, before any parallel loop: an exception must not leave an OpenMP region.
void check_labels(const char* op, int64_t rows, int64_t classes, const int32_t* labels) {
  for (int64_t r = 0; r < rows; ++r)
    KD_CHECK(labels[r] >= 0 && labels[r] < classes, op, ": row ", r, " has label ", labels[r], ", outside [0, ",
             classes, ")");
}

}  // namespace

template <typename T>
void softmax_cpu(int64_t rows, int64_t classes, const T* x, T* y) {
  check_shape("softmax", rows, classes);
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    const T* in = x + r * classes;
    T* out = y + r * classes;
    double max, log_sum;
    row_max_and_log_sum(classes, in, max, log_sum);
    // exp(x - max - log_sum) rather than exp(x - max) / sum: one pass, and the same rounding
    // as log_softmax followed by exp.
    const double shift = max + log_sum;
    for (int64_t c = 0; c < classes; ++c) out[c] = T(std::exp(double(in[c]) - shift));
  }
}

template <typename T>
void log_softmax_cpu(int64_t rows, int64_t classes, const T* x, T* y) {
  check_shape("log_softmax", rows, classes);
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    const T* in = x + r * classes;
    T* out = y + r * classes;
    double max, log_sum;
    row_max_and_log_sum(classes, in, max, log_sum);
    for (int64_t c = 0; c < classes; ++c) out[c] = T((double(in[c]) - max) - log_sum);
  }
}

// With target q (sum 1): loss = -sum_c q_c log p_c, and d loss / d x_c = p_c - q_c.
// For q = smoothed_target: loss = (1 - eps) (-log p_label) + (eps / classes) sum_c (-log p_c).
template <typename T>
void cross_entropy_cpu(int64_t rows, int64_t classes, const T* logits, const int32_t* labels, T label_smoothing,
                       T grad_scale, T* loss_rows, T* dlogits) {
  check_shape("cross_entropy", rows, classes);
  const double eps = double(label_smoothing), scale = double(grad_scale);
  KD_CHECK(eps >= 0 && eps <= 1, "cross_entropy: label smoothing ", eps, " outside [0, 1]");
  check_labels("cross_entropy", rows, classes, labels);
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    const T* x = logits + r * classes;
    const int64_t label = labels[r];
    double max, log_sum;
    row_max_and_log_sum(classes, x, max, log_sum);
    const double lse = max + log_sum;  // -log p_c = lse - x_c
    if (loss_rows) {
      double loss = (1.0 - eps) * (lse - double(x[label]));
      if (eps != 0) {
        double sum_neg_log_p = 0;
        for (int64_t c = 0; c < classes; ++c) sum_neg_log_p += lse - double(x[c]);
        loss += eps / double(classes) * sum_neg_log_p;
      }
      loss_rows[r] = T(loss);
    }
    if (dlogits) {
      T* d = dlogits + r * classes;
      for (int64_t c = 0; c < classes; ++c) {
        const double p = std::exp(double(x[c]) - lse);
        d[c] = T(scale * (p - smoothed_target(c == label, classes, eps)));
      }
    }
  }
}

template <typename T>
void topk_correct_cpu(int64_t rows, int64_t classes, const T* logits, const int32_t* labels, int k, int32_t* correct) {
  check_shape("topk_correct", rows, classes);
  KD_CHECK(k >= 1, "topk_correct: k must be >= 1, got ", k);
  check_labels("topk_correct", rows, classes, labels);
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    const T* x = logits + r * classes;
    const int64_t label = labels[r];
    int64_t above = 0;  // the label's 0-based rank
    for (int64_t c = 0; c < classes; ++c) above += ranks_above(x[c], c, x[label], label);
    correct[r] = above < k ? 1 : 0;
  }
}

template <typename T>
void argmax_rows_cpu(int64_t rows, int64_t classes, const T* x, int32_t* out) {
  check_shape("argmax_rows", rows, classes);
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    const T* row = x + r * classes;
    int64_t best = 0;
    for (int64_t c = 1; c < classes; ++c)
      if (ranks_above(row[c], c, row[best], best)) best = c;
    out[r] = int32_t(best);
  }
}

#define KD_INSTANTIATE_SOFTMAX(T)                                                               \
  template void softmax_cpu<T>(int64_t, int64_t, const T*, T*);                                 \
  template void log_softmax_cpu<T>(int64_t, int64_t, const T*, T*);                             \
  template void cross_entropy_cpu<T>(int64_t, int64_t, const T*, const int32_t*, T, T, T*, T*); \
  template void topk_correct_cpu<T>(int64_t, int64_t, const T*, const int32_t*, int, int32_t*); \
  template void argmax_rows_cpu<T>(int64_t, int64_t, const T*, int32_t*);
KD_INSTANTIATE_SOFTMAX(float)
KD_INSTANTIATE_SOFTMAX(double)
#undef KD_INSTANTIATE_SOFTMAX

}  // namespace kd
