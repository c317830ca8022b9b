// ResNet (BatchNorm) on the GPU against the CPU path (tests/models/model_cuda_check.h): the same
// parameter values on the same bf16-rounded images, 10 classes.
//
// Bounds from tests/reference/bf16_noise.py (timm's model, parameters randomised as here, every
// leaf module's output and input gradient rounded to bf16, against float64), about twice its noise:
//   resnet18, train, 2 x 64 x 64: logits 2.7e-2, parameter gradients 0.38 (cosine 0.928), input
//     gradient 0.39 (cosine 0.923, norm ratio 1.0), fc.weight 3.0e-2, fc.bias exact;
//   eval (running statistics from 3 training forwards, 4 x 64 x 64): resnet18 8.1e-3, resnet50
//     1.5e-2 (--eval).
// resnet50 in training mode is no test at these sizes: its last stage normalises 2 x 2 x 2 values
// per channel and bf16 alone gives a gradient cosine of 0.05 (0.19 at 4 x 128 x 128), so its
// Bottleneck path is checked in eval mode and the training ops through resnet18 (the same layers).
// NOT YET RUN ON A GPU: the bounds come from that model of the noise, not from kd's CUDA path.
#include <gtest/gtest.h>

#include "tests/models/model_cuda_check.h"
#include "tests/support/testing.h"

namespace kd {
namespace {

TEST(ResNetCuda, Resnet18TrainForwardBackwardMatchesCpu) {
  KD_REQUIRE_CUDA();
#if KD_HAVE_CUDA
  test::NetworkBounds b{0.1, 0.75, 0.8, 0.7};
  b.head_weight = 0.1;
  test::network_train_step_matches_cpu("resnet18", b, {"layer4.1.bn2.bias", "conv1.weight"});
#else
  GTEST_SKIP() << "built without CUDA";
#endif
}

TEST(ResNetCuda, FrozenTeacherEvalMatchesCpu) {
  KD_REQUIRE_CUDA();
#if KD_HAVE_CUDA
  test::network_frozen_eval_matches_cpu("resnet18", 3e-2);
  test::network_frozen_eval_matches_cpu("resnet50", 5e-2);
#else
  GTEST_SKIP() << "built without CUDA";
#endif
}

}  // namespace
}  // namespace kd
