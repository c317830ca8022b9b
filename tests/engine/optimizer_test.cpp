// The optimizer over a parameter store: schedules, decay only on kernels, clipping folded into the
// update, NaN gradients leave the weights untouched, and state round-trips through a checkpoint.
#include "engine/optim/optimizer.h"

#include <gtest/gtest.h>

#include <cmath>

#include "engine/safetensors.h"
#include "kernels/optim.h"
#include "kernels/step_stats.h"
#include "tests/data/data_fixtures.h"
#include "tests/support/testing.h"

namespace kd {
namespace {

TEST(Schedule, WarmupThenCosineLinearConstant) {
  ScheduleConfig s;
  s.total_steps = 110, s.warmup_steps = 10;
  EXPECT_DOUBLE_EQ(scheduled_lr(s, 1.0, 0), 0.1);
  EXPECT_DOUBLE_EQ(scheduled_lr(s, 1.0, 9), 1.0);
  EXPECT_DOUBLE_EQ(scheduled_lr(s, 1.0, 10), 1.0);
  EXPECT_NEAR(scheduled_lr(s, 1.0, 60), 0.5, 1e-12);
  EXPECT_NEAR(scheduled_lr(s, 1.0, 110), 0.0, 1e-12);
  s.decay = "linear";
  EXPECT_NEAR(scheduled_lr(s, 2.0, 35), 1.5, 1e-12);
  s.final_fraction = 0.1;
  EXPECT_NEAR(scheduled_lr(s, 2.0, 110), 0.2, 1e-12);
  s.decay = "constant";
  EXPECT_DOUBLE_EQ(scheduled_lr(s, 2.0, 100), 2.0);
  s.decay = "step";
  EXPECT_THROW(scheduled_lr(s, 1.0, 1), Error);
}

struct Fixture {
  std::unique_ptr<Context> ctx = Context::cpu();
  ParamStore store;
  Param *kernel, *bias;
  Fixture() {
    kernel = store.add("conv.weight", {4, 3}, ParamInit::normal, true, ParamLayout::same, 1.0f);
    bias = store.add("conv.bias", {4}, ParamInit::normal, false, ParamLayout::same, 1.0f);
    store.allocate(*ctx);
    store.init(3, *ctx);
  }
  void set_grads(float v) {
    float* g = store.grads().data<float>();
    for (int64_t i = 0; i < store.numel(); ++i) g[i] = v * float(i + 1);
  }
};

TEST(Optimizer, AdamMatchesTheElementFormulaWithDecayOnKernelsOnly) {
  Fixture f;
  OptimizerConfig c;
  c.lr = 0.01, c.weight_decay = 0.1, c.clip_norm = 0;
  ScheduleConfig s;
  s.total_steps = 10, s.decay = "constant";
  auto opt = Optimizer::create(f.store, c, s, *f.ctx);
  EXPECT_EQ(f.store.decay_numel(), 12);
  std::vector<float> w(f.store.values().data<float>(), f.store.values().data<float>() + f.store.numel());
  std::vector<float> m(w.size()), v(w.size());
  for (int step = 1; step <= 3; ++step) {
    f.set_grads(0.5f * float(step));
    std::vector<float> g(f.store.grads().data<float>(), f.store.grads().data<float>() + f.store.numel());
    opt->step(*f.ctx);
    AdamHyper h;
    h.lr = 0.01f, h.step = step;
    const float b1 = adam_bias_correction(h.beta1, step), b2 = adam_bias_correction(h.beta2, step);
    for (size_t i = 0; i < w.size(); ++i) adam_update_element(h, b1, b2, i < 12 ? 0.1f : 0.0f, w[i], g[i], m[i], v[i]);
  }
  for (size_t i = 0; i < w.size(); ++i) EXPECT_FLOAT_EQ(f.store.values().data<float>()[i], w[i]) << i;
  for (int64_t i = 0; i < f.store.numel(); ++i) EXPECT_EQ(f.store.grads().data<float>()[i], 0.0f) << "zeroed";
}

TEST(Optimizer, ClippingScalesTheGradientToTheNorm) {
  Fixture a, b;
  OptimizerConfig c;
  c.name = "sgd", c.lr = 0.1, c.momentum = 0, c.clip_norm = 1.0;
  ScheduleConfig s;
  s.decay = "constant";
  auto clipped = Optimizer::create(a.store, c, s, *a.ctx);
  c.clip_norm = 0;
  auto plain = Optimizer::create(b.store, c, s, *b.ctx);
  a.set_grads(1.0f);
  b.set_grads(1.0f);
  double norm = 0;
  for (int64_t i = 0; i < a.store.numel(); ++i) norm += double(i + 1) * double(i + 1);
  norm = std::sqrt(norm);
  // Scale b's gradient by hand: the clipped update must equal it.
  for (int64_t i = 0; i < b.store.numel(); ++i) b.store.grads().data<float>()[i] /= float(norm);
  const StepStats st = clipped->step(*a.ctx);
  plain->step(*b.ctx);
  EXPECT_NEAR(st.grad_norm, norm, 1e-4);
  EXPECT_LT(test::rel_l2(a.store.values().data<float>(), b.store.values().data<float>(), size_t(a.store.numel())), 1e-6);
}

TEST(Optimizer, NonFiniteGradientsLeaveTheWeightsUntouched) {
  Fixture f;
  auto opt = Optimizer::create(f.store, OptimizerConfig{}, ScheduleConfig{}, *f.ctx);
  std::vector<float> before(f.store.values().data<float>(), f.store.values().data<float>() + f.store.numel());
  f.set_grads(1.0f);
  f.store.grads().data<float>()[5] = NAN;
  const StepStats st = opt->step(*f.ctx);
  EXPECT_FALSE(st.finite);
  EXPECT_EQ(opt->steps_done(), 0);
  for (size_t i = 0; i < before.size(); ++i) EXPECT_EQ(f.store.values().data<float>()[i], before[i]);
}

// The step without host waits (run.step_stats = device) on the CPU: bitwise the plain step for
// each optimizer; a block whose loss is not finite skips the update, and the schedule moves on.
TEST(Optimizer, TheDeferredStepIsThePlainStepBitwiseAndSkipsANonFiniteLoss) {
  for (const char* name : {"adam", "sgd", "shampoo"}) {
    Fixture a, b;
    OptimizerConfig c;
    c.name = name, c.lr = 0.05, c.weight_decay = 0.01, c.clip_norm = 2.0;
    c.shampoo.start_step = 2, c.shampoo.precondition_every = 2;
    ScheduleConfig s;
    s.total_steps = 10, s.warmup_steps = 2;
    auto plain = Optimizer::create(a.store, c, s, *a.ctx), deferred = Optimizer::create(b.store, c, s, *b.ctx);
    for (int step = 1; step <= 5; ++step) {
      a.set_grads(0.3f * float(step) * (step % 2 ? 1.0f : -1.0f));
      b.set_grads(0.3f * float(step) * (step % 2 ? 1.0f : -1.0f));
      const StepStats st = plain->step(*a.ctx);
      double stats[kStatWidth] = {};
      stats[kStatLossSum] = 1.25;
      deferred->step_deferred(*b.ctx, stats);
      EXPECT_EQ(stats[kStatApplied], 1.0) << name;
      EXPECT_EQ(std::sqrt(stats[kStatGradSumSq]), st.grad_norm) << name << " step " << step;
      EXPECT_LT(stats[kStatGradScale], 1.0) << name << ": the norm exceeds optim.clip_norm";
      for (int64_t i = 0; i < a.store.numel(); ++i)
        ASSERT_EQ(a.store.values().data<float>()[i], b.store.values().data<float>()[i]) << name << " step " << step;
      EXPECT_EQ(b.store.grads().data<float>()[0], 0.0f) << "zeroed";
    }
    const std::vector<float> before(b.store.values().data<float>(), b.store.values().data<float>() + b.store.numel());
    b.set_grads(1.0f);
    double stats[kStatWidth] = {};
    stats[kStatLossSum] = NAN;
    deferred->step_deferred(*b.ctx, stats);
    EXPECT_EQ(stats[kStatApplied], 0.0) << name;
    EXPECT_EQ(deferred->steps_done(), 6) << name << ": a skipped step still counts";
    for (size_t i = 0; i < before.size(); ++i) ASSERT_EQ(b.store.values().data<float>()[i], before[i]) << name;
    EXPECT_EQ(b.store.grads().data<float>()[3], 0.0f) << "zeroed";
  }
}

// The deferred step's halves (a CUDA graph captures the second): begin_deferred writes the
// schedule into the block (lr, Adam's bias corrections, the step) and moves the count on;
// enqueue_deferred takes lr and the step from the block, not from the optimizer, so a block
// carrying twice the lr moves the weights twice as far (SGD's first step: w -= lr g).
TEST(Optimizer, TheDeferredUpdateTakesItsScheduleFromTheBlock) {
  Fixture a, b;
  OptimizerConfig c;
  c.name = "sgd", c.lr = 0.05, c.clip_norm = 0;
  ScheduleConfig s;
  s.total_steps = 10, s.warmup_steps = 4;
  auto one = Optimizer::create(a.store, c, s, *a.ctx), two = Optimizer::create(b.store, c, s, *b.ctx);
  const std::vector<float> w0(a.store.values().data<float>(), a.store.values().data<float>() + a.store.numel());
  a.set_grads(0.5f), b.set_grads(0.5f);
  double sa[kStatWidth] = {}, sb[kStatWidth] = {};
  const double lr = one->begin_deferred(*a.ctx, sa);
  EXPECT_EQ(lr, 0.05 * 1 / 4) << "warmup's first step";
  EXPECT_EQ(two->begin_deferred(*b.ctx, sb), lr);
  EXPECT_EQ(one->steps_done(), 1);
  EXPECT_EQ(sa[kStatLr], lr);
  EXPECT_EQ(sa[kStatStep], 1.0);
  EXPECT_EQ(sa[kStatBias1], double(adam_bias_correction(0.9f, 1)));
  EXPECT_EQ(sa[kStatBias2], double(adam_bias_correction(0.999f, 1)));
  sb[kStatLr] = 2 * lr;
  one->enqueue_deferred(*a.ctx, sa);
  two->enqueue_deferred(*b.ctx, sb);
  for (int64_t i = 0; i < a.store.numel(); ++i) {
    const double da = double(a.store.values().data<float>()[i]) - w0[size_t(i)];
    const double db = double(b.store.values().data<float>()[i]) - w0[size_t(i)];
    ASSERT_NE(da, 0.0);
    ASSERT_NEAR(db, 2 * da, 1e-6 * std::fabs(da) + 1e-7) << i;
  }
}

TEST(Optimizer, StateRoundTripsThroughACheckpoint) {
  test::TempDir dir;
  Fixture a, b;
  OptimizerConfig c;
  auto first = Optimizer::create(a.store, c, ScheduleConfig{}, *a.ctx);
  a.set_grads(0.3f);
  first->step(*a.ctx);
  SafetensorsWriter w;
  a.store.save(w, *a.ctx);
  first->save(w, *a.ctx);
  w.write(dir.file("c.safetensors"));
  SafetensorsFile file = SafetensorsFile::open(dir.file("c.safetensors"));
  auto second = Optimizer::create(b.store, c, ScheduleConfig{}, *b.ctx);
  b.store.load(file, *b.ctx);
  second->load(file, *b.ctx);
  EXPECT_EQ(second->steps_done(), 1);
  a.set_grads(0.7f);
  b.set_grads(0.7f);
  first->step(*a.ctx);
  second->step(*b.ctx);
  for (int64_t i = 0; i < a.store.numel(); ++i)
    EXPECT_EQ(a.store.values().data<float>()[i], b.store.values().data<float>()[i]) << "bitwise, element " << i;
  OptimizerConfig sgd;
  sgd.name = "sgd";
  auto wrong = Optimizer::create(b.store, sgd, ScheduleConfig{}, *b.ctx);
  EXPECT_THROW(wrong->load(file, *b.ctx), Error);
}

}  // namespace
}  // namespace kd
