// MobileNetV3 on the GPU against the CPU path (tests/models/model_cuda_check.h): the same
// parameter values on the same bf16-rounded images, 2 x 64 x 64, 10 classes.
//
// The GPU keeps activations and their gradients in bf16, and training-mode BatchNorm over the few
// pixels of the last stages (2 x 2 x 2 values per channel at 64 x 64) amplifies that rounding.
// tests/reference/bf16_noise.py --arch <arch> measures it in PyTorch (timm's model, parameters
// randomised as here, every leaf module's output and input gradient rounded to bf16): against
// float64, large_100: logits 0.21, parameter gradients 0.57 (cosine 0.835), input gradient 0.63,
// classifier.weight 0.12, classifier.bias exact; small_100: logits 0.057, gradients 0.33 (cosine
// 0.945), input gradient 0.33, classifier.weight 0.08; the input gradient's cosine with float64
// is 0.797 (large) and 0.944 (small), norm ratios 0.96 and 0.94 (bounds 0.5, 0.75, a ratio in
// [0.5, 2]: an all-zero dx fails). kd rounds in a few more places (BatchNorm before its
// activation, the squeeze-excite product), so the bounds leave about twice that noise;
// a wrong op (a sign, a dropped branch, a misplaced gate) gives errors of order one and a cosine
// near zero. Eval mode (running statistics, the frozen-teacher path) measured 5e-3 (large) and
// 3e-3 (small) on the logits; bound 3e-2. NOT YET RUN ON A GPU: the bounds come from that model
// of the noise, not from a measurement of kd's CUDA path.
#include <gtest/gtest.h>

#include "tests/models/model_cuda_check.h"
#include "tests/support/testing.h"

namespace kd {
namespace {

TEST(MobileNetV3Cuda, LargeTrainForwardBackwardMatchesCpu) {
  KD_REQUIRE_CUDA();
#if KD_HAVE_CUDA
  test::network_train_step_matches_cpu("mobilenetv3_large_100", {0.5, 0.5, 1.2, 0.5}, {"conv_head.bias"});
#else
  GTEST_SKIP() << "built without CUDA";
#endif
}

TEST(MobileNetV3Cuda, SmallTrainForwardBackwardMatchesCpu) {
  KD_REQUIRE_CUDA();
#if KD_HAVE_CUDA
  test::network_train_step_matches_cpu("mobilenetv3_small_100", {0.25, 0.7, 0.8, 0.75}, {"conv_head.bias"});
#else
  GTEST_SKIP() << "built without CUDA";
#endif
}

TEST(MobileNetV3Cuda, FrozenTeacherEvalMatchesCpu) {
  KD_REQUIRE_CUDA();
#if KD_HAVE_CUDA
  test::network_frozen_eval_matches_cpu("mobilenetv3_large_100", 3e-2);
  test::network_frozen_eval_matches_cpu("mobilenetv3_small_100", 3e-2);
#else
  GTEST_SKIP() << "built without CUDA";
#endif
}

}  // namespace
}  // namespace kd
