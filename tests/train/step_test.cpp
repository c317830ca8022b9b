// The training step feeds teacher and student what the teaching strategy says: for function
// matching, the teacher's input is exactly the student's mixed view (same crop, flip, partner and
// lambda) rendered at the teacher's resolution, also when the batch is split into micro-batches
// or the rank holds only part of the global batch. Checked on synthetic images whose pixels are
// a known linear function of position, so every rendered pixel has an exact expected value.
#include "train/step.h"

#include <gtest/gtest.h>

#include <cmath>

#include "engine/comm.h"
#include "engine/layers.h"
#include "tests/support/testing.h"

namespace kd {
namespace {

constexpr int32_t kH = 12, kW = 16;
constexpr int64_t kBatch = 8, kClasses = 4, kStudentRes = 8, kTeacherRes = 12;

// Image `id`: v(y, x) = 8 id + 2 y + x on every channel.
float pixel_value(int64_t id, float y, float x) { return float(8 * id) + 2 * y + x; }

Image linear_image(int64_t id) {
  Image im;
  im.height = kH, im.width = kW;
  im.pixels.resize(size_t(kH * kW * 3));
  for (int y = 0; y < kH; ++y)
    for (int x = 0; x < kW; ++x)
      for (int c = 0; c < 3; ++c)
        im.pixels[size_t((y * kW + x) * 3 + c)] = uint8_t(pixel_value(id, float(y), float(x)));
  return im;
}

// A model that records its inputs: global average pool and a dense head (so backward works).
class Probe final : public Model {
 public:
  explicit Probe(const ModelSpec& spec) : Model(spec) {
    head_ = std::make_unique<Linear>(params_, "head", 3, spec.num_classes, false, Linear::Init::timm_head);
  }
  Tensor forward(Context& ctx, const Tensor& x, Mode mode) override {
    inputs.push_back(x.to(Device::cpu, &ctx));
    return head_->forward(ctx, pool_.forward(ctx, x, mode), mode);
  }
  Tensor backward(Context& ctx, const Tensor& dy) override { return pool_.backward(ctx, head_->backward(ctx, dy)); }
  int64_t forward_macs(int64_t, int64_t) const override { return 3 * spec_.num_classes; }
  std::vector<Tensor> inputs;

 private:
  GlobalAvgPool pool_;
  std::unique_ptr<Linear> head_;
};

std::unique_ptr<Probe> make_probe(Context& ctx, uint64_t seed, bool frozen) {
  ModelSpec spec;
  spec.arch = "probe";
  spec.num_classes = kClasses;
  auto p = std::make_unique<Probe>(spec);
  p->params().allocate(ctx, !frozen);
  p->params().init(seed, ctx);
  if (frozen) p->set_frozen(true);
  return p;
}

// The exact value of pixel (oy, ox) of a view of image `id` (bilinear reproduces the linear
// function; coordinates outside the image clamp to its edge, as the renderer does).
float view_value(const ViewSource& v, int64_t id, int64_t res, int64_t oy, int64_t ox) {
  float sy, sx;
  view_source_coord(v.box, v.flip != 0, res, res, oy, ox, &sy, &sx);
  sy = std::min(std::max(sy, 0.0f), float(kH - 1));
  sx = std::min(std::max(sx, 0.0f), float(kW - 1));
  return pixel_value(id, sy, sx);
}

// Checks `got` ([rows, res, res, 3]) against the recipes of global slots [first, first + rows).
// image_of(v) maps a recipe's image index (global-batch numbering) to the image id.
void expect_views(const Tensor& got, const std::vector<ViewRecipe>& recipes, int64_t first, int64_t res,
                  const std::string& what) {
  ASSERT_EQ(got.shape(), (Shape{got.dim(0), res, res, 3})) << what;
  auto p = [&got](int64_t i) {
    return got.dtype() == DType::f64 ? got.data<double>()[i] : double(got.data<float>()[i]);
  };
  double worst = 0;
  for (int64_t r = 0; r < got.dim(0); ++r) {
    const ViewRecipe& v = recipes[size_t(first + r)];
    for (int64_t oy = 0; oy < res; ++oy)
      for (int64_t ox = 0; ox < res; ++ox) {
        float want = view_value(v.a, v.a.image, res, oy, ox);
        if (v.lambda != 1.0f) want = v.lambda * want + (1 - v.lambda) * view_value(v.b, v.b.image, res, oy, ox);
        for (int c = 0; c < 3; ++c)
          worst = std::max(worst, std::fabs(p(((r * res + oy) * res + ox) * 3 + c) - double(want)));
      }
  }
  EXPECT_LT(worst, 2e-4) << what << ": largest pixel error " << worst;
}

StepConfig config_for(TeachingStrategy strategy, int64_t accumulate) {
  StepConfig c;
  c.mode = RunMode::distill;
  c.seed = 5;
  c.strategy = strategy;
  for (int ch = 0; ch < 3; ++ch) c.norm.scale[ch] = 1, c.norm.shift[ch] = 0;  // pixel units
  c.student_resolution = kStudentRes, c.teacher_resolution = kTeacherRes;
  c.global_batch = kBatch;
  c.accumulate = accumulate;
  return c;
}

// The share of global batch `step` that a rank holding slots [slot0, slot0 + n) loads: image id
// g for slot g, then (function matching) the partner, the image of slot slot0 - 1.
RankBatch share(int64_t step, int64_t slot0, int64_t n, bool partner) {
  RankBatch b;
  b.step = step, b.slot0 = slot0, b.has_partner = partner;
  for (int64_t g = slot0; g < slot0 + n; ++g) {
    b.images.push_back(linear_image(g));
    b.labels.push_back(int32_t(g % kClasses));
    b.indices.push_back(g);
  }
  if (partner) b.images.push_back(linear_image((slot0 + kBatch - 1) % kBatch));
  return b;
}

TEST(Step, TeacherSeesTheStudentsViewAtItsResolutionForEveryStrategyAndSplit) {
  auto ctx = Context::cpu();
  auto comm = make_local_communicator();
  for (TeachingStrategy strategy : {TeachingStrategy::fixed, TeachingStrategy::independent,
                                    TeachingStrategy::consistent, TeachingStrategy::function_matching}) {
    // (accumulate, slot0, slots): a whole batch, two micro-batches, and rank 1 of 2.
    for (auto [accumulate, slot0, n] :
         {std::tuple<int64_t, int64_t, int64_t>{1, 0, kBatch}, {2, 0, kBatch}, {1, kBatch / 2, kBatch / 2}}) {
      const std::string what = std::string(teaching_strategy_name(strategy)) + ", accumulate " +
                               std::to_string(accumulate) + ", slots from " + std::to_string(slot0);
      const StepConfig c = config_for(strategy, accumulate);
      auto student = make_probe(*ctx, 1, false);
      auto teacher = make_probe(*ctx, 2, true);
      OptimizerConfig oc;
      ScheduleConfig sc;
      auto optimizer = Optimizer::create(student->params(), oc, sc, *ctx);
      GradSyncOptions go;
      go.accumulate = accumulate;
      GradientSync sync(student->params(), *comm, go, *ctx);
      StepRunner runner(c, *student, {teacher.get()}, *optimizer, sync);
      const int64_t step = 3;
      runner.run(*ctx, share(step, slot0, n, c.needs_partner()));

      // The reference: the whole global batch's recipes on one rank (image index == slot == id).
      std::vector<ImageSize> sizes(size_t(kBatch), ImageSize{kH, kW});
      const TrainViews views = make_train_views(c.recipe, strategy, sizes, c.seed, step);
      ASSERT_EQ(int64_t(student->inputs.size()), accumulate) << what;
      ASSERT_EQ(int64_t(teacher->inputs.size()), accumulate) << what;
      const int64_t m = n / accumulate;
      for (int64_t k = 0; k < accumulate; ++k) {
        expect_views(student->inputs[size_t(k)], views.student, slot0 + k * m, kStudentRes,
                     what + ": student, micro-batch " + std::to_string(k));
        expect_views(teacher->inputs[size_t(k)], views.teacher, slot0 + k * m, kTeacherRes,
                     what + ": teacher, micro-batch " + std::to_string(k));
      }
      if (strategy == TeachingStrategy::function_matching) {
        EXPECT_LT(views.lambda, 1.0f);
        for (int64_t g = 0; g < kBatch; ++g) EXPECT_EQ(views.student[size_t(g)].b.image, (g + kBatch - 1) % kBatch);
      }
      if (strategy == TeachingStrategy::consistent || strategy == TeachingStrategy::function_matching) {
        for (int64_t g = 0; g < kBatch; ++g)
          EXPECT_EQ(views.teacher[size_t(g)].a.box.x0, views.student[size_t(g)].a.box.x0) << "one crop for both";
      }
    }
  }
}

// An ensemble of two teachers at their own resolutions (12 and 16 px; the student at 8): each
// teacher sees the student's mixed view at its resolution, and the loss and the student's
// gradient are the KL against the mean of the two teachers' softmaxes, computed here by hand.
TEST(Step, AnEnsembleAtTwoResolutionsSeesOneRecipeAndMatchesTheHandComputedKl) {
  auto ctx = Context::cpu(DType::f64);
  auto comm = make_local_communicator();
  StepConfig c = config_for(TeachingStrategy::function_matching, 1);
  c.teacher_resolutions = {12, 16};
  auto student = make_probe(*ctx, 1, false);
  auto t1 = make_probe(*ctx, 2, true), t2 = make_probe(*ctx, 3, true);
  OptimizerConfig oc;  // plain SGD in f64: Shampoo with SGD grafting before it preconditions
  oc.name = "shampoo", oc.shampoo.graft = "sgd", oc.shampoo.start_step = 1000;
  oc.lr = 0.5, oc.momentum = 0, oc.clip_norm = 0;
  ScheduleConfig sc;
  sc.decay = "constant";
  auto optimizer = Optimizer::create(student->params(), oc, sc, *ctx);
  GradientSync sync(student->params(), *comm, GradSyncOptions{}, *ctx);
  StepRunner runner(c, *student, {t1.get(), t2.get()}, *optimizer, sync);
  const Tensor w_before = student->params().values().to(Device::cpu);
  const StepResult r = runner.run(*ctx, share(4, 0, kBatch, true));

  std::vector<ImageSize> sizes(size_t(kBatch), ImageSize{kH, kW});
  const TrainViews views = make_train_views(c.recipe, c.strategy, sizes, c.seed, 4);
  ASSERT_EQ(t1->inputs.size(), 1u);
  ASSERT_EQ(t2->inputs.size(), 1u);
  expect_views(t1->inputs[0], views.student, 0, 12, "teacher 1 at 12 px");
  expect_views(t2->inputs[0], views.student, 0, 16, "teacher 2 at 16 px");
  expect_views(student->inputs[0], views.student, 0, kStudentRes, "student at 8 px");

  // The logits again (the probes are deterministic), then the KL by hand.
  auto logits = [&](Probe& m, const Tensor& x) { return m.forward(*ctx, x, Mode::eval).to(Device::cpu); };
  auto fresh = make_probe(*ctx, 1, false);  // the student before its step
  const Tensor ls = logits(*fresh, student->inputs[0]), la = logits(*t1, t1->inputs[0]),
               lb = logits(*t2, t2->inputs[0]);
  double loss = 0;
  std::vector<double> dlogits(size_t(kBatch * kClasses));
  for (int64_t i = 0; i < kBatch; ++i) {
    auto softmax = [&](const Tensor& l) {
      std::vector<double> p(kClasses);
      double mx = -1e300, z = 0;
      for (int64_t j = 0; j < kClasses; ++j) mx = std::max(mx, l.data<double>()[i * kClasses + j]);
      for (int64_t j = 0; j < kClasses; ++j) z += p[size_t(j)] = std::exp(l.data<double>()[i * kClasses + j] - mx);
      for (double& v : p) v /= z;
      return p;
    };
    const auto pa = softmax(la), pb = softmax(lb), ps = softmax(ls);
    for (int64_t j = 0; j < kClasses; ++j) {
      const double pt = 0.5 * (pa[size_t(j)] + pb[size_t(j)]);
      loss += pt * (std::log(pt) - std::log(ps[size_t(j)]));
      dlogits[size_t(i * kClasses + j)] = (ps[size_t(j)] - pt) / double(kBatch);
    }
  }
  EXPECT_NEAR(r.loss_sum, loss, 1e-6 * std::fabs(loss)) << "summed KL over the batch (rows kept as float)";
  // The head's gradient, from the SGD step: g = (w_before - w_after) / lr; expected: pooled^T dlogits.
  const Tensor w_after = student->params().values().to(Device::cpu);
  const Param& bias = student->params().get("head.bias");
  for (int64_t j = 0; j < kClasses; ++j) {
    double want = 0;
    for (int64_t i = 0; i < kBatch; ++i) want += dlogits[size_t(i * kClasses + j)];
    const int64_t at = bias.offset + j;
    EXPECT_NEAR((w_before.data<double>()[at] - w_after.data<double>()[at]) / oc.lr, want, 1e-10) << "bias " << j;
  }
}

}  // namespace
}  // namespace kd
