// bench_kernels: the fused data and loss kernels — augment, distill_loss, cross_entropy.
#include <algorithm>
#include <cmath>
#include <memory>
#include <random>

#include "kernels/augment.h"
#include "kernels/distill_loss.h"
#include "kernels/random.h"
#include "kernels/softmax.h"
#include "tools/bench/harness.h"

namespace kd::bench {
namespace {

// ---- augment: teacher 224 px + student 160 px views of the same recipes, with mixup ----

struct AugmentInputs {
  std::vector<uint8_t> pixels;
  std::vector<SourceImage> sources;
  std::vector<ViewRecipe> recipes;
  double source_bytes = 0;  // what the crop boxes cover, see crop_bytes
};

// An inception-style crop: 8%-100% of the area, aspect 3/4-4/3, anywhere in the image.
CropBox random_crop(std::mt19937_64& rng, int32_t h, int32_t w) {
  std::uniform_real_distribution<double> u(0.0, 1.0);
  const double area = (0.08 + 0.92 * u(rng)) * h * w;
  const double aspect = std::exp(std::log(0.75) + std::log(16.0 / 9.0) * u(rng));
  const double bw = std::min<double>(w, std::sqrt(area * aspect)), bh = std::min<double>(h, std::sqrt(area / aspect));
  CropBox b;
  b.h = float(bh), b.w = float(bw), b.y0 = float(u(rng) * (h - bh)), b.x0 = float(u(rng) * (w - bw));
  return b;
}

// Source bytes a crop's bilinear taps read: the box rounded up to whole pixels plus one on each
// side, clipped to the image, 3 bytes a pixel.
double crop_bytes(const CropBox& b, const SourceImage& s) {
  return std::min<double>(s.h, std::ceil(b.h) + 2) * std::min<double>(s.w, std::ceil(b.w) + 2) * 3;
}

AugmentInputs augment_inputs(int64_t n, uint64_t seed) {
  AugmentInputs in;
  std::mt19937_64 rng(seed);
  for (int64_t i = 0; i < n; ++i) {  // 224..288 px a side: "256 x 256-ish" like a resized dataset
    SourceImage s;
    s.h = int32_t(224 + rng() % 65), s.w = int32_t(224 + rng() % 65);
    s.offset = int64_t(in.pixels.size());
    in.pixels.resize(in.pixels.size() + size_t(s.h) * size_t(s.w) * 3);
    in.sources.push_back(s);
  }
  for (size_t i = 0; i < in.pixels.size(); ++i) in.pixels[i] = uint8_t(random_bits(seed, 1, i));
  for (int64_t i = 0; i < n; ++i) {
    ViewRecipe r;
    r.a.image = int32_t(i), r.b.image = int32_t((i + 1) % n);
    r.a.flip = uint8_t(rng() & 1), r.b.flip = uint8_t(rng() & 1);
    r.a.box = random_crop(rng, in.sources[size_t(i)].h, in.sources[size_t(i)].w);
    r.b.box = random_crop(rng, in.sources[size_t(r.b.image)].h, in.sources[size_t(r.b.image)].w);
    r.lambda = 0.1f + 0.8f * float(rng() % 1000) / 1000.0f;  // every image mixed
    in.source_bytes += crop_bytes(r.a.box, in.sources[size_t(i)]) + crop_bytes(r.b.box, in.sources[size_t(r.b.image)]);
    in.recipes.push_back(r);
  }
  return in;
}

Case augment_case(const Env& env) {
  const int64_t n = env.batch(), res[2] = {224, 160};
  auto in = std::make_shared<AugmentInputs>(augment_inputs(n, 11));
  const int64_t out_px = n * (res[0] * res[0] + res[1] * res[1]);
  Case c;
  c.shape = dims({n}) + " u8 224-288 px -> 224 + 160 px, mixup";
  c.bytes = double(out_px) * 3 * double(env.act_size()) + in->source_bytes;
  c.note =
      "augment: both views written (3 channels x activation bytes a pixel) + source bytes of every crop box "
      "(+1 px border for the bilinear taps), for source a and mixup source b, read once for both views";
  c.copies = env.copies_for(double(in->pixels.size()) + double(out_px) * 3 * double(env.act_size()));
  auto pixels = std::make_shared<Buf>(typed_buf(env, in->pixels, c.copies));
  auto sources = std::make_shared<Buf>(typed_buf(env, in->sources, 1));
  auto recipes = std::make_shared<Buf>(typed_buf(env, in->recipes, 1));
  auto out0 = std::make_shared<Buf>(act_out(env, n * res[0] * res[0] * 3, c.copies));
  auto out1 = std::make_shared<Buf>(act_out(env, n * res[1] * res[1] * 3, c.copies));
  const Normalization norm;
  c.run = [=, &env](int k) {
    const uint8_t* px = pixels->at<uint8_t>(k);
    const SourceImage* src = sources->at<SourceImage>(0);
    const ViewRecipe* rec = recipes->at<ViewRecipe>(0);
    if (!env.cuda) {
      augment_cpu(px, src, rec, n, norm, res[0], res[0], out0->at<float>(k));
      augment_cpu(px, src, rec, n, norm, res[1], res[1], out1->at<float>(k));
    }
    KD_BENCH_CUDA(if (env.cuda) augment_cuda(env.h(), px, src, rec, n, norm, res[0], res[0], out0->at<bf16>(k), res[1],
                                             res[1], out1->at<bf16>(k)));
  };
  c.check = [=, &env, run = c.run] {
    out0->fill_bytes(0xFF), out1->fill_bytes(0xFF);
    run(0);
    Check chk;
    const Buf* outs[2] = {out0.get(), out1.get()};
    for (int v = 0; v < 2; ++v) {
      auto ref = zeros<float>(n * res[v] * res[v] * 3);
      if (env.cuda) {  // the CPU reference
        augment_cpu(in->pixels.data(), in->sources.data(), in->recipes.data(), n, norm, res[v], res[v], ref.data());
      } else {  // the CPU loop against the per-pixel math it is built on, serially
        for (int64_t i = 0; i < n; ++i)
          for (int64_t p = 0; p < res[v] * res[v]; ++p)
            render_pixel(in->pixels.data(), in->sources.data(), in->recipes[size_t(i)], norm, res[v], res[v],
                         p / res[v], p % res[v], &ref[size_t((i * res[v] * res[v] + p) * 3)]);
      }
      chk.rel("view" + std::to_string(res[v]), read_act(env, *outs[v]), ref, env.tol_act());
    }
    return chk;
  };
  return c;
}

// ---- distill_loss (kl) and cross_entropy over fp32 logits ----

int64_t loss_rows(const Env& env) { return env.cuda ? (env.quick ? 64 : 256) : (env.quick ? 8 : 32); }

Case distill_case(const Env& env, int64_t classes, int64_t teachers) {
  DistillLossShape s;
  s.rows = loss_rows(env), s.classes = classes, s.teachers = teachers;
  DistillLossOptions o;  // kl, temperature 1 (function matching)
  o.grad_scale = 1.0f / float(s.rows);
  const int64_t rc = s.rows * classes;
  // Logits are not rounded to bf16: exact ties would leave the top-1 class to rounding.
  auto t = std::make_shared<std::vector<float>>(uniform(teachers * rc, 21 + uint64_t(teachers), -8, 8, false));
  auto st = std::make_shared<std::vector<float>>(uniform(rc, 22, -4, 4, false));
  Case c;
  c.shape =
      dims({s.rows, classes}) + " x (" + std::to_string(teachers) + " teacher" + (teachers > 1 ? "s" : "") + " + 1)";
  c.bytes = double((teachers + 1) * rc * 4 + rc * 4 + s.rows * 12);
  c.note = "distill_loss: teacher and student logits read (fp32), dstudent written (fp32), + loss, top-1, rank per row";
  c.copies = env.copies_for(double((teachers + 2) * rc * 4));
  auto bt = std::make_shared<Buf>(typed_buf(env, *t, c.copies)),
       bs = std::make_shared<Buf>(typed_buf(env, *st, c.copies));
  auto loss = std::make_shared<Buf>(env, 4, s.rows, c.copies), ds = std::make_shared<Buf>(env, 4, rc, c.copies);
  auto top1 = std::make_shared<Buf>(env, 4, s.rows, c.copies), rank = std::make_shared<Buf>(env, 4, s.rows, c.copies);
  c.run = [=, &env](int k) {
    if (!env.cuda)
      distill_loss_cpu<float>(s, o, bt->at<float>(k), bs->at<float>(k), loss->at<float>(k), ds->at<float>(k),
                              top1->at<int32_t>(k), rank->at<int32_t>(k));
    KD_BENCH_CUDA(if (env.cuda) distill_loss_cuda(env.h(), s, o, bt->at<float>(k), bs->at<float>(k), loss->at<float>(k),
                                                  ds->at<float>(k), top1->at<int32_t>(k), rank->at<int32_t>(k)));
  };
  c.check = [=, run = c.run] {
    for (Buf* b : {loss.get(), ds.get(), top1.get(), rank.get()}) b->fill_bytes(0xFF);
    run(0);
    auto ref_loss = zeros<double>(s.rows), ref_ds = zeros<double>(rc);
    auto ref_top1 = zeros<int32_t>(s.rows), ref_rank = zeros<int32_t>(s.rows);
    distill_loss_cpu<double>(s, o, to_double(*t).data(), to_double(*st).data(), ref_loss.data(), ref_ds.data(),
                             ref_top1.data(), ref_rank.data());
    Check chk;
    chk.rel("loss", read<float>(*loss), ref_loss, 1e-5);
    chk.rel("dstudent", read<float>(*ds), ref_ds, 1e-5);
    const std::vector<int32_t> got_top1 = read<int32_t>(*top1), got_rank = read<int32_t>(*rank);
    int64_t bad_top1 = 0, bad_rank = 0;
    for (size_t r = 0; r < size_t(s.rows); ++r)
      bad_top1 += got_top1[r] != ref_top1[r], bad_rank += got_rank[r] != ref_rank[r];
    chk.exact("top1", bad_top1);
    chk.exact("rank", bad_rank);
    return chk;
  };
  return c;
}

Case cross_entropy_case(const Env& env, int64_t classes) {
  const int64_t rows = loss_rows(env), rc = rows * classes;
  const float grad_scale = 1.0f / float(rows);
  auto logits = std::make_shared<std::vector<float>>(uniform(rc, 31, -4, 4, false));
  auto labels = std::make_shared<std::vector<int32_t>>(size_t(rows));
  for (int64_t r = 0; r < rows; ++r)
    (*labels)[size_t(r)] = int32_t(random_bits(32, 0, uint64_t(r)) % uint64_t(classes));
  Case c;
  c.shape = dims({rows, classes});
  c.bytes = double(2 * rc * 4 + rows * 8);
  c.note = "cross_entropy: logits read, dlogits written (fp32), + label and loss per row";
  c.copies = env.copies_for(double(2 * rc * 4));
  auto bl = std::make_shared<Buf>(typed_buf(env, *logits, c.copies));
  auto blab = std::make_shared<Buf>(typed_buf(env, *labels, c.copies));
  auto loss = std::make_shared<Buf>(env, 4, rows, c.copies), dl = std::make_shared<Buf>(env, 4, rc, c.copies);
  c.run = [=, &env](int k) {
    if (!env.cuda)
      cross_entropy_cpu<float>(rows, classes, bl->at<float>(k), blab->at<int32_t>(k), 0.0f, grad_scale,
                               loss->at<float>(k), dl->at<float>(k));
    KD_BENCH_CUDA(if (env.cuda) cross_entropy_cuda(env.h(), rows, classes, bl->at<float>(k), blab->at<int32_t>(k), 0.0f,
                                                   grad_scale, loss->at<float>(k), dl->at<float>(k)));
  };
  c.check = [=, run = c.run] {
    loss->fill_bytes(0xFF), dl->fill_bytes(0xFF);
    run(0);
    auto ref_loss = zeros<double>(rows), ref_dl = zeros<double>(rc);
    cross_entropy_cpu<double>(rows, classes, to_double(*logits).data(), labels->data(), 0.0, double(grad_scale),
                              ref_loss.data(), ref_dl.data());
    Check chk;
    chk.rel("loss", read<float>(*loss), ref_loss, 1e-5);
    chk.rel("dlogits", read<float>(*dl), ref_dl, 1e-5);
    return chk;
  };
  return c;
}

}  // namespace

void add_loss_cases(Registry& r) {
  r.push_back({"augment.t224_s160.mixup", augment_case});
  for (int64_t classes : {1000, 21843})
    for (int64_t teachers : {1, 2})
      r.push_back({"distill_loss.kl.c" + std::to_string(classes) + ".t" + std::to_string(teachers),
                   [=](const Env& env) { return distill_case(env, classes, teachers); }});
  for (int64_t classes : {1000, 21843})
    r.push_back({"cross_entropy.c" + std::to_string(classes),
                 [=](const Env& env) { return cross_entropy_case(env, classes); }});
}

}  // namespace kd::bench
