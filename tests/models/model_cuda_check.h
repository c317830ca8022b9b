// Whole networks on the GPU against the CPU path: the same parameter and buffer values (copied by
// name from the CPU store) on the same bf16-rounded images, 10 classes. The bounds a test passes
// come from tests/reference/bf16_noise.py --arch ARCH: timm's model with the same randomised
// parameters, every leaf module's output and input gradient rounded to bf16, against float64 (the
// noise a correct bf16 network shows); a wrong op gives errors of order one and a cosine near 0.
#pragma once
#if KD_HAVE_CUDA
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "engine/ops.h"
#include "models/model.h"
#include "tests/kernels/cuda_test_util.h"
#include "tests/support/testing.h"

namespace kd::test {

// The CPU model from its own init, then as bf16_noise.py: every 1-D weight (norm scales) in
// [0.5, 1.5], every 1-D bias in [-0.2, 0.2], the classifier's weight uniform with variance 1 / in;
// convolutions keep the model's init.
inline std::unique_ptr<Model> make_randomised_cpu_model(const std::string& arch, Context& cpu) {
  ModelSpec spec;
  spec.arch = arch;
  spec.num_classes = 10;
  std::unique_ptr<Model> model = create_model(spec, cpu, 31);
  const std::string head_weight = model->head_params().at(0);
  uint64_t salt = 0;
  for (Param& p : model->params().params()) {
    ++salt;
    const bool is_1d = p.shape.size() == 1, ends_weight = p.name.size() > 7 && p.name.rfind(".weight") == p.name.size() - 7;
    double lo, hi;
    if (is_1d && ends_weight) {
      lo = 0.5, hi = 1.5;
    } else if (is_1d) {
      lo = -0.2, hi = 0.2;
    } else if (p.name == head_weight) {
      hi = std::sqrt(3.0 / double(p.view_cols())), lo = -hi;
    } else {
      continue;
    }
    const std::vector<float> v = random_vector<float>(size_t(p.numel()), 31 + salt, lo, hi);
    std::copy(v.begin(), v.end(), p.value.data<float>());
  }
  return model;
}

// The same architecture on the GPU with the CPU model's values (parameters and buffers, by name).
inline std::unique_ptr<Model> copy_model_to_gpu(const Model& cpu_model, Context& gpu, bool trainable) {
  std::unique_ptr<Model> model = create_model(cpu_model.spec());
  model->params().allocate(gpu, trainable);
  for (const auto* list : {&cpu_model.params().params(), &cpu_model.params().buffers()})
    for (const Param& p : *list) model->params().get(p.name).value.copy_from(p.value, &gpu);
  model->params().sync_compute(gpu);
  return model;
}

inline Tensor random_images(const Shape& shape, uint64_t seed) {
  const std::vector<float> v = random_bf16(size_t(shape_numel(shape)), seed).values;
  Tensor t = Tensor::zeros_cpu(shape, DType::f32);
  std::copy(v.begin(), v.end(), t.data<float>());
  return t;
}

inline std::vector<float> host_vector(Context& ctx, const Tensor& t) {
  const Tensor h = ops::to_host_f32(ctx, t);
  return std::vector<float>(h.data<float>(), h.data<float>() + h.numel());
}

inline double cosine_of(const std::vector<float>& a, const std::vector<float>& b) {
  double dot = 0, na = 0, nb = 0;
  for (size_t i = 0; i < a.size(); ++i) dot += double(a[i]) * b[i], na += double(a[i]) * a[i], nb += double(b[i]) * b[i];
  return na > 0 && nb > 0 ? dot / std::sqrt(na * nb) : 0.0;
}

inline double norm_ratio(const std::vector<float>& a, const std::vector<float>& b) {
  double na = 0, nb = 0;
  for (size_t i = 0; i < a.size(); ++i) na += double(a[i]) * a[i], nb += double(b[i]) * b[i];
  return nb > 0 ? std::sqrt(na / nb) : 0.0;
}

struct NetworkBounds {
  double logits, cosine, dinput;
  double dinput_cosine;      // the input gradient's direction: a zero or wrong-layer dx fails it
  double head_weight = 0.3;  // the classifier's weight gradient (bf16 features, f32 logits gradient)
};

// One training-mode forward and backward (2 x 64 x 64 images) on both paths. The classifier's bias
// gradient is the f32 logits gradient summed (no bf16 on its way): within 1e-2. `extra`: more
// parameters whose gradient error is printed.
inline void network_train_step_matches_cpu(const std::string& arch, const NetworkBounds& b,
                                           const std::vector<std::string>& extra = {}) {
  Context& gpu = cuda_test_context();
  auto cpu = Context::cpu(DType::f32);
  const std::unique_ptr<Model> ref = make_randomised_cpu_model(arch, *cpu);
  const std::unique_ptr<Model> dev = copy_model_to_gpu(*ref, gpu, /*trainable=*/true);
  const Tensor images = random_images({2, 64, 64, 3}, 32);

  const Tensor ref_logits = ref->forward(*cpu, ops::to_activation(*cpu, images), Mode::train);
  const Tensor dev_logits = dev->forward(gpu, ops::to_activation(gpu, images), Mode::train);
  ASSERT_EQ(dev_logits.dtype(), DType::f32);
  const std::vector<float> logits_ref = host_vector(*cpu, ref_logits), logits_dev = host_vector(gpu, dev_logits);

  Tensor dy = Tensor::zeros_cpu(ref_logits.shape(), DType::f32);
  const std::vector<float> dlogits = random_vector<float>(size_t(dy.numel()), 33);
  std::copy(dlogits.begin(), dlogits.end(), dy.data<float>());
  ref->params().zero_grads(*cpu);
  dev->params().zero_grads(gpu);
  const std::vector<float> dx_ref = host_vector(*cpu, ref->backward(*cpu, dy));
  const std::vector<float> dx_dev = host_vector(gpu, dev->backward(gpu, dy.to(Device::cuda, &gpu)));
  const std::vector<float> grads_ref = host_vector(*cpu, ref->params().grads());
  const std::vector<float> grads_dev = host_vector(gpu, dev->params().grads());
  ASSERT_EQ(grads_ref.size(), grads_dev.size());

  bool finite = true;
  for (float g : grads_dev) finite &= std::isfinite(g);
  const double cosine = cosine_of(grads_dev, grads_ref);
  auto grad_error = [&](const std::string& name) {
    const Param& p = ref->params().get(name);
    EXPECT_EQ(dev->params().get(name).offset, p.offset) << name;
    return rel_l2(grads_dev.data() + p.offset, grads_ref.data() + p.offset, size_t(p.numel()));
  };
  const std::vector<std::string> head = ref->head_params();
  const double err_logits = rel_l2(logits_dev, logits_ref), err_dx = rel_l2(dx_dev, dx_ref);
  const double err_w = grad_error(head.at(0)), err_b = grad_error(head.at(1));
  std::printf("[ cuda-vs-cpu ] %s train: logits %.2e, input grad %.2e, param grads %.2e (cosine %.3f), %s %.2e, %s %.2e",
              arch.c_str(), err_logits, err_dx, rel_l2(grads_dev, grads_ref), cosine, head[0].c_str(), err_w,
              head[1].c_str(), err_b);
  for (const std::string& name : extra) std::printf(", %s %.2e", name.c_str(), grad_error(name));
  std::printf("\n");
  EXPECT_LE(err_logits, b.logits);
  EXPECT_TRUE(finite) << "non-finite parameter gradients on the GPU";
  EXPECT_GE(cosine, b.cosine);
  EXPECT_LE(err_b, 1e-2);
  EXPECT_LE(err_w, b.head_weight);
  EXPECT_LE(err_dx, b.dinput);
  // The relative error alone would pass an all-zero dx when its bound is near 1.
  const double dx_cosine = cosine_of(dx_dev, dx_ref), dx_ratio = norm_ratio(dx_dev, dx_ref);
  std::printf("[ cuda-vs-cpu ] %s input grad: cosine %.3f, norm ratio %.3f\n", arch.c_str(), dx_cosine, dx_ratio);
  EXPECT_GE(dx_cosine, b.dinput_cosine);
  EXPECT_GE(dx_ratio, 0.5);
  EXPECT_LE(dx_ratio, 2.0);
}

// The frozen-teacher path: running statistics from 3 training forwards on the CPU, then eval-mode
// logits of the frozen GPU copy (4 x 64 x 64) against the CPU's, within `bound`.
inline void network_frozen_eval_matches_cpu(const std::string& arch, double bound) {
  Context& gpu = cuda_test_context();
  auto cpu = Context::cpu(DType::f32);
  const std::unique_ptr<Model> ref = make_randomised_cpu_model(arch, *cpu);
  const Tensor warmup = random_images({4, 64, 64, 3}, 34);
  for (int i = 0; i < 3; ++i) ref->forward(*cpu, ops::to_activation(*cpu, warmup), Mode::train);
  const std::unique_ptr<Model> dev = copy_model_to_gpu(*ref, gpu, /*trainable=*/false);
  dev->freeze_for_inference(gpu);
  const Tensor images = random_images({4, 64, 64, 3}, 35);
  const std::vector<float> want = host_vector(*cpu, ref->forward(*cpu, ops::to_activation(*cpu, images), Mode::eval));
  const std::vector<float> got = host_vector(gpu, dev->forward(gpu, ops::to_activation(gpu, images), Mode::eval));
  const double err = rel_l2(got, want);
  std::printf("[ cuda-vs-cpu ] %s frozen eval: logits %.2e\n", arch.c_str(), err);
  EXPECT_LE(err, bound) << mismatches(got, want, bound, 1e-3, 10);
}

}  // namespace kd::test
#endif
