// kd's losses and optimizers (float) against PyTorch (float64 on the same float32 inputs), from
// the file tests/reference/make_loss_fixtures.py writes. Tolerance: relative L2 <= 1e-5 for every
// value and gradient (DESIGN.md's fp32 bound); each comparison prints its measured error.
#include <gtest/gtest.h>

#include <cstdio>
#include <string>
#include <vector>

#include "engine/safetensors.h"
#include "kernels/distill_loss.h"
#include "kernels/optim.h"
#include "kernels/softmax.h"
#include "tests/support/testing.h"

namespace kd {
namespace {

constexpr double kTolerance = 1e-5;

const SafetensorsFile& fixtures() {
  static const SafetensorsFile file = SafetensorsFile::open(std::string(KD_PARITY_DIR) + "/loss.safetensors");
  return file;
}

int64_t meta_int(const char* key) { return std::stoll(fixtures().metadata().at(key)); }
float meta_float(const char* key) { return std::stof(fixtures().metadata().at(key)); }

std::vector<float> floats(const std::string& name, const Shape& shape) {
  const Tensor t = fixtures().tensor_f32(name, shape);
  const float* p = t.data<float>();
  return std::vector<float>(p, p + t.numel());
}

std::vector<int32_t> ints(const std::string& name, const Shape& shape) {
  const Tensor t = fixtures().tensor(name, shape);
  const int32_t* p = t.data<int32_t>();
  return std::vector<int32_t>(p, p + t.numel());
}

void expect_close(const std::string& what, const std::vector<float>& kd, const std::vector<float>& torch) {
  const double err = test::rel_l2(kd, torch);
  std::printf("  %-44s rel_l2 %.2e\n", what.c_str(), err);
  EXPECT_LE(err, kTolerance) << what;
}

struct Dims {
  int64_t rows = meta_int("rows"), classes = meta_int("classes"), teachers = meta_int("teachers");
};

TEST(Loss, SoftmaxAndLogSoftmaxMatchTorch) {
  const Dims d;
  const auto x = floats("softmax/x", {d.rows, d.classes});
  std::vector<float> y(x.size()), log_y(x.size());
  softmax_cpu<float>(d.rows, d.classes, x.data(), y.data());
  log_softmax_cpu<float>(d.rows, d.classes, x.data(), log_y.data());
  expect_close("softmax", y, floats("softmax/y", {d.rows, d.classes}));
  expect_close("log_softmax", log_y, floats("softmax/log_y", {d.rows, d.classes}));
}

TEST(Loss, CrossEntropyMatchesTorchWithAndWithoutLabelSmoothing) {
  const Dims d;
  const auto logits = floats("ce/logits", {d.rows, d.classes});
  const auto labels = ints("ce/labels", {d.rows});
  for (const std::string suffix : {"", "_ls"}) {
    const float ls = suffix.empty() ? 0.0f : meta_float("ce_ls");
    std::vector<float> loss(size_t(d.rows)), dlogits(logits.size());
    cross_entropy_cpu<float>(d.rows, d.classes, logits.data(), labels.data(), ls, 1.0f / float(d.rows), loss.data(),
                             dlogits.data());
    double mean = 0;
    for (float v : loss) mean += v / double(d.rows);
    expect_close("cross_entropy" + suffix + " per row", loss, floats("ce/loss_rows" + suffix, {d.rows}));
    expect_close("cross_entropy" + suffix + " mean", {float(mean)}, floats("ce/loss" + suffix, {1}));
    expect_close("cross_entropy" + suffix + " dlogits", dlogits, floats("ce/dlogits" + suffix, {d.rows, d.classes}));
  }
}

// One distance with the first `teachers` teachers: per-row loss and the gradient of the mean.
void check_distill(const std::string& run, DistillDistance distance, int64_t teachers, float temperature,
                   float label_smoothing = 0) {
  const Dims d;
  const auto student = floats("distill/student", {d.rows, d.classes});
  const auto all_teachers = floats("distill/teachers", {d.teachers, d.rows, d.classes});
  DistillLossShape shape;
  shape.rows = d.rows, shape.classes = d.classes, shape.teachers = teachers;
  DistillLossOptions o;
  o.distance = distance, o.temperature = temperature, o.grad_scale = 1.0f / float(d.rows);
  o.label_smoothing = label_smoothing, o.epsilon = meta_float("epsilon");
  std::vector<float> loss(size_t(d.rows)), dstudent(student.size());
  std::vector<int32_t> top1(size_t(d.rows)), rank(size_t(d.rows));
  // the first `teachers` of [K, R, C] are a contiguous prefix
  distill_loss_cpu<float>(shape, o, all_teachers.data(), student.data(), loss.data(), dstudent.data(), top1.data(),
                          rank.data());
  expect_close(run + " loss", loss, floats("distill/" + run + "/loss", {d.rows}));
  expect_close(run + " dstudent", dstudent, floats("distill/" + run + "/dstudent", {d.rows, d.classes}));
  EXPECT_EQ(top1, ints("distill/top1_k" + std::to_string(teachers), {d.rows})) << run;
}

TEST(Loss, DistillKlMatchesTorchForOneAndThreeTeachersAtT1AndT4) {
  for (int64_t k : {1, 3})
    for (float t : {1.0f, 4.0f})
      check_distill("kl_k" + std::to_string(k) + "_t" + std::to_string(int(t)), DistillDistance::kl, k, t);
}

TEST(Loss, DistillHardMatchesTorchWithAndWithoutLabelSmoothing) {
  for (int64_t k : {1, 3}) {
    check_distill("hard_k" + std::to_string(k) + "_t1", DistillDistance::hard, k, 1.0f);
    check_distill("hardls_k" + std::to_string(k) + "_t1", DistillDistance::hard, k, 1.0f, meta_float("hard_ls"));
  }
}

TEST(Loss, DistillL2AndEuclideanDistancesMatchTorch) {
  for (int64_t k : {1, 3}) {
    const std::string suffix = "_k" + std::to_string(k) + "_t1";
    check_distill("l2" + suffix, DistillDistance::l2, k, 1.0f);
    check_distill("euclidean" + suffix, DistillDistance::euclidean, k, 1.0f);
    check_distill("logsoftmax_euclidean" + suffix, DistillDistance::logsoftmax_euclidean, k, 1.0f);
  }
}

TEST(Loss, AdamWMatchesTorchOverSeveralSteps) {
  const int64_t steps = meta_int("steps"), n = meta_int("params");
  const auto grads = floats("adamw/grads", {steps, n});
  auto w = floats("adamw/w0", {n});
  std::vector<float> m(size_t(n), 0.0f), v(size_t(n), 0.0f);
  AdamHyper h;
  h.lr = meta_float("adam_lr"), h.beta1 = meta_float("adam_beta1"), h.beta2 = meta_float("adam_beta2");
  h.eps = meta_float("adam_eps");
  for (int64_t s = 0; s < steps; ++s) {
    h.step = s + 1;
    adam_update_cpu(n, h, meta_float("adam_wd"), 1.0f, w.data(), grads.data() + s * n, m.data(), v.data());
  }
  expect_close("adamw w", w, floats("adamw/w", {n}));
  expect_close("adamw m", m, floats("adamw/m", {n}));
  expect_close("adamw v", v, floats("adamw/v", {n}));
}

TEST(Loss, SgdMomentumMatchesTorchWithoutWeightDecay) {
  // torch.optim.SGD couples weight decay into the gradient; kd decouples it: compared at wd = 0.
  const int64_t steps = meta_int("steps"), n = meta_int("params");
  const auto grads = floats("sgd/grads", {steps, n});
  auto w = floats("sgd/w0", {n});
  std::vector<float> buf(size_t(n), 0.0f);
  SgdHyper h;
  h.lr = meta_float("sgd_lr"), h.momentum = meta_float("sgd_momentum"), h.nesterov = false;
  for (int64_t s = 0; s < steps; ++s) {
    h.step = s + 1;
    sgd_update_cpu(n, h, 0.0f, 1.0f, w.data(), grads.data() + s * n, buf.data());
  }
  expect_close("sgd w", w, floats("sgd/w", {n}));
  expect_close("sgd momentum buffer", buf, floats("sgd/buf", {n}));
}

}  // namespace
}  // namespace kd
