#include "engine/ops.h"

#include <algorithm>
#include <cstring>

#include "engine/ops_internal.h"
#include "kernels/softmax.h"
#include "kernels/step_stats.h"
#if KD_HAVE_CUDA
#include "kernels/cast.h"
#endif

// Tensor-level ops at the edges of a step: host <-> device conversion, augmentation and losses.
namespace kd::ops {

using namespace detail;

// Host f32/f64 -> host tensor of the other float type.
static Tensor convert_host(const Tensor& t, DType to) {
  if (t.dtype() == to) return t;
  Tensor out = Tensor::zeros_cpu(t.shape(), to);
  const size_t n = size_t(t.numel());
  if (to == DType::f64)
    std::copy(t.data<float>(), t.data<float>() + n, out.data<double>());
  else
    std::copy(t.data<double>(), t.data<double>() + n, out.data<float>());
  return out;
}

Tensor to_activation(Context& ctx, const Tensor& host) {
  KD_CHECK(host.device() == Device::cpu && (host.dtype() == DType::f32 || host.dtype() == DType::f64),
           "to_activation: expected a host f32 or f64 tensor, got ", host.describe());
  if (!ctx.is_cuda()) return convert_host(host, ctx.activation_dtype());
#if KD_HAVE_CUDA
  Tensor staging = convert_host(host, DType::f32).to(Device::cuda, &ctx);
  Tensor out = Tensor::empty(host.shape(), DType::bf16, ctx);
  cast_f32_to_bf16_cuda(ctx.cuda_handles(), out.numel(), staging.data<float>(), out.data<bf16>());
  return out;
#else
  no_cuda_path("to_activation");
#endif
}

Tensor to_host_f32(Context& ctx, const Tensor& t) {
  if (t.device() == Device::cpu) {
    KD_CHECK(t.dtype() == DType::f32 || t.dtype() == DType::f64, "to_host_f32: expected f32 or f64, got ",
             t.describe());
    return convert_host(t, DType::f32);
  }
#if KD_HAVE_CUDA
  if (t.dtype() == DType::f32) return t.to(Device::cpu, &ctx);
  check_dtype(t, DType::bf16, "to_host_f32");
  Tensor wide = Tensor::empty(t.shape(), DType::f32, ctx);
  cast_bf16_to_f32_cuda(ctx.cuda_handles(), t.numel(), t.data<bf16>(), wide.data<float>());
  return wide.to(Device::cpu, &ctx);
#else
  no_cuda_path("to_host_f32");
#endif
}

// --- data and losses -----------------------------------------------------------------------------

namespace {

void check_recipes(const std::vector<SourceImage>& sources, const std::vector<ViewRecipe>& recipes,
                   const std::vector<int64_t>& resolutions, size_t bytes) {
  KD_CHECK(!recipes.empty() && !resolutions.empty(), "augment: empty batch or no view");
  for (int64_t r : resolutions) KD_CHECK(r > 0, "augment: view size ", r);
  for (const ViewRecipe& r : recipes) {
    KD_CHECK(r.a.image >= 0 && size_t(r.a.image) < sources.size() && r.b.image >= 0 &&
                 size_t(r.b.image) < sources.size(),
             "augment: a recipe names source ", r.a.image, "/", r.b.image, " of ", sources.size());
  }
  for (const SourceImage& src : sources)
    KD_CHECK(src.h > 0 && src.w > 0 && src.offset >= 0 && size_t(src.offset) + size_t(src.h) * src.w * 3 <= bytes,
             "augment: source image ", src.h, "x", src.w, " at byte ", src.offset, " lies outside the ", bytes,
             "-byte pixel buffer");
}

// The CPU reference's views, one resolution at a time.
std::vector<Tensor> augment_views_cpu(Context& ctx, const uint8_t* pixels, const std::vector<SourceImage>& sources,
                                      const std::vector<ViewRecipe>& recipes, const Normalization& norm,
                                      const std::vector<int64_t>& resolutions) {
  const int64_t n = int64_t(recipes.size());
  std::vector<Tensor> views;
  for (int64_t r : resolutions) {
    Tensor out = Tensor::zeros_cpu({n, r, r, 3}, DType::f32);
    augment_cpu(pixels, sources.data(), recipes.data(), n, norm, r, r, out.data<float>());
    views.push_back(to_activation(ctx, out));
  }
  return views;
}

#if KD_HAVE_CUDA
// Uploads recipes, sources and then the pixels `write_pixels` writes (each 256-byte aligned) in
// one copy from the context's pinned staging buffer (a fresh pageable buffer cost page faults and
// a driver copy every step), and renders the views two at a time, reading pixels from
// `device_pixels` when given (already on the device; write_pixels is then null) or else from the
// uploaded ones.
std::vector<Tensor> augment_cuda_views(Context& ctx, const PixelWriter* write_pixels, size_t host_bytes,
                                       const uint8_t* device_pixels, const std::vector<SourceImage>& sources,
                                       const std::vector<ViewRecipe>& recipes, const Normalization& norm,
                                       const std::vector<int64_t>& resolutions) {
  const int64_t n = int64_t(recipes.size());
  auto align = [](size_t b) { return (b + 255) / 256 * 256; };
  const size_t recipe_bytes = align(recipes.size() * sizeof(ViewRecipe));
  const size_t source_bytes = align(sources.size() * sizeof(SourceImage));
  const size_t total = recipe_bytes + source_bytes + host_bytes;
  uint8_t* host = ctx.host_staging(total);
  std::memcpy(host, recipes.data(), recipes.size() * sizeof(ViewRecipe));
  std::memcpy(host + recipe_bytes, sources.data(), sources.size() * sizeof(SourceImage));
  if (write_pixels) (*write_pixels)(host + recipe_bytes + source_bytes);
  const uint8_t* base = ctx.upload_staging_for_kernels(total);
  const uint8_t* pixels = device_pixels ? device_pixels : base + recipe_bytes + source_bytes;
  std::vector<Tensor> views;
  for (size_t v = 0; v < resolutions.size(); v += 2) {  // the kernel renders two views per launch
    const int64_t r1 = resolutions[v], r2 = v + 1 < resolutions.size() ? resolutions[v + 1] : 0;
    Tensor first = Tensor::empty({n, r1, r1, 3}, DType::bf16, ctx), second;
    if (r2 > 0) second = Tensor::empty({n, r2, r2, 3}, DType::bf16, ctx);
    augment_cuda(ctx.cuda_handles(), pixels, reinterpret_cast<const SourceImage*>(base + recipe_bytes),
                 reinterpret_cast<const ViewRecipe*>(base), n, norm, r1, r1, first.data<bf16>(), r2, r2,
                 r2 > 0 ? second.data<bf16>() : nullptr);
    views.push_back(first);
    if (r2 > 0) views.push_back(second);
  }
  return views;
}
#endif

}  // namespace

std::vector<Tensor> augment_views(Context& ctx, const PixelWriter& write_pixels, size_t bytes,
                                  const std::vector<SourceImage>& sources, const std::vector<ViewRecipe>& recipes,
                                  const Normalization& norm, const std::vector<int64_t>& resolutions) {
  check_recipes(sources, recipes, resolutions, bytes);
  if (ctx.is_cuda()) {
#if KD_HAVE_CUDA
    return augment_cuda_views(ctx, &write_pixels, bytes, nullptr, sources, recipes, norm, resolutions);
#else
    no_cuda_path("augment");
#endif
  }
  std::vector<uint8_t> pixels(bytes);
  write_pixels(pixels.data());
  return augment_views_cpu(ctx, pixels.data(), sources, recipes, norm, resolutions);
}

std::vector<Tensor> augment_views(Context& ctx, const uint8_t* pixels, size_t bytes,
                                  const std::vector<SourceImage>& sources, const std::vector<ViewRecipe>& recipes,
                                  const Normalization& norm, const std::vector<int64_t>& resolutions) {
  check_recipes(sources, recipes, resolutions, bytes);
  if (ctx.is_cuda()) {
#if KD_HAVE_CUDA
    const PixelWriter copy = [pixels, bytes](uint8_t* dst) {
      const int64_t chunk = int64_t(1) << 20;
#pragma omp parallel for schedule(static)
      for (int64_t off = 0; off < int64_t(bytes); off += chunk)
        std::memcpy(dst + off, pixels + off, size_t(std::min(chunk, int64_t(bytes) - off)));
    };
    return augment_cuda_views(ctx, &copy, bytes, nullptr, sources, recipes, norm, resolutions);
#else
    no_cuda_path("augment");
#endif
  }
  return augment_views_cpu(ctx, pixels, sources, recipes, norm, resolutions);  // the pixels read in place
}

std::vector<Tensor> augment_views(Context& ctx, const Tensor& device_pixels, const std::vector<SourceImage>& sources,
                                  const std::vector<ViewRecipe>& recipes, const Normalization& norm,
                                  const std::vector<int64_t>& resolutions) {
  KD_CHECK(ctx.is_cuda() && device_pixels.device() == Device::cuda && device_pixels.dtype() == DType::u8 &&
               device_pixels.ndim() == 1,
           "augment: device pixels must be a 1-d u8 tensor on the GPU, got ", device_pixels.describe());
  check_recipes(sources, recipes, resolutions, size_t(device_pixels.dim(0)));
#if KD_HAVE_CUDA
  return augment_cuda_views(ctx, nullptr, 0, device_pixels.data<uint8_t>(), sources, recipes, norm, resolutions);
#else
  no_cuda_path("augment");
  return {};
#endif
}

std::pair<Tensor, Tensor> augment(Context& ctx, const uint8_t* pixels, size_t bytes,
                                  const std::vector<SourceImage>& sources, const std::vector<ViewRecipe>& recipes,
                                  const Normalization& norm, int64_t h1, int64_t w1, int64_t h2, int64_t w2) {
  KD_CHECK(h1 == w1 && h2 == w2, "augment: square views only, got ", h1, "x", w1, " and ", h2, "x", w2);
  std::vector<int64_t> resolutions{h1};
  if (h2 > 0) resolutions.push_back(h2);
  std::vector<Tensor> views = augment_views(ctx, pixels, bytes, sources, recipes, norm, resolutions);
  return {views[0], views.size() > 1 ? views[1] : Tensor()};
}

LossResult distill_loss(Context& ctx, const Tensor& teacher_logits, const Tensor& student_logits,
                        const DistillLossOptions& options, bool need_grad, bool read_back) {
  KD_CHECK(student_logits.ndim() == 2 && teacher_logits.ndim() == 3, "distill_loss: expected teacher [k, rows, ",
           "classes] and student [rows, classes], got ", teacher_logits.describe(), " and ", student_logits.describe());
  DistillLossShape s{student_logits.dim(0), student_logits.dim(1), teacher_logits.dim(0)};
  check_param(ctx, student_logits, {s.rows, s.classes}, "distill_loss", "student logits");
  check_param(ctx, teacher_logits, {s.teachers, s.rows, s.classes}, "distill_loss", "teacher logits");
  LossResult r;
  Tensor loss = Tensor::empty({s.rows}, ctx.param_dtype(), ctx);
  Tensor top1 = Tensor::empty({s.rows}, DType::i32, ctx), rank = Tensor::empty({s.rows}, DType::i32, ctx);
  if (need_grad) r.dlogits = Tensor::empty({s.rows, s.classes}, ctx.param_dtype(), ctx);
  if (ctx.is_cuda()) {
#if KD_HAVE_CUDA
    distill_loss_cuda(ctx.cuda_handles(), s, options, teacher_logits.data<float>(), student_logits.data<float>(),
                      loss.data<float>(), need_grad ? r.dlogits.data<float>() : nullptr, top1.data<int32_t>(),
                      rank.data<int32_t>());
#else
    no_cuda_path("distill_loss");
#endif
  } else {
    with_cpu_precision(ctx, [&](auto zero) {
      using T = decltype(zero);
      distill_loss_cpu<T>(s, options, teacher_logits.data<T>(), student_logits.data<T>(), loss.data<T>(),
                          need_grad ? r.dlogits.data<T>() : nullptr, top1.data<int32_t>(), rank.data<int32_t>());
    });
  }
  r.loss = loss, r.rank = rank;
  if (!read_back) return r;
  Tensor loss_host = to_host_f32(ctx, loss);
  r.loss_rows.assign(loss_host.data<float>(), loss_host.data<float>() + s.rows);
  Tensor top1_host = top1.to(Device::cpu, &ctx), rank_host = rank.to(Device::cpu, &ctx);
  r.teacher_top1.assign(top1_host.data<int32_t>(), top1_host.data<int32_t>() + s.rows);
  r.student_rank.assign(rank_host.data<int32_t>(), rank_host.data<int32_t>() + s.rows);
  return r;
}

LossResult cross_entropy(Context& ctx, const Tensor& logits, const std::vector<int32_t>& labels,
                         float label_smoothing, float grad_scale, bool need_grad, bool read_back) {
  KD_CHECK(logits.ndim() == 2 && int64_t(labels.size()) == logits.dim(0), "cross_entropy: ", labels.size(),
           " labels for logits ", logits.describe());
  const int64_t rows = logits.dim(0), classes = logits.dim(1);
  for (int64_t i = 0; i < rows; ++i)
    KD_CHECK(labels[size_t(i)] >= 0 && labels[size_t(i)] < classes, "cross_entropy: row ", i, " has label ",
             labels[size_t(i)], " outside [0, ", classes, ")");
  const Tensor host = Tensor::borrow(const_cast<int32_t*>(labels.data()), {rows}, DType::i32, Device::cpu);
  return cross_entropy(ctx, logits, ctx.is_cuda() ? upload(ctx, host) : host, label_smoothing, grad_scale, need_grad,
                       read_back);
}

LossResult cross_entropy(Context& ctx, const Tensor& logits, const Tensor& labels, float label_smoothing,
                         float grad_scale, bool need_grad, bool read_back) {
  KD_CHECK(logits.ndim() == 2 && labels.ndim() == 1 && labels.dim(0) == logits.dim(0) && labels.dtype() == DType::i32 &&
               labels.device() == ctx.device(),
           "cross_entropy: labels ", labels.describe(), " for logits ", logits.describe(), " (i32 rows on ",
           device_name(ctx.device()), ")");
  const int64_t rows = logits.dim(0), classes = logits.dim(1);
  check_param(ctx, logits, {rows, classes}, "cross_entropy", "logits");
  LossResult r;
  Tensor loss = Tensor::empty({rows}, ctx.param_dtype(), ctx);
  if (need_grad) r.dlogits = Tensor::empty({rows, classes}, ctx.param_dtype(), ctx);
  if (ctx.is_cuda()) {
#if KD_HAVE_CUDA
    cross_entropy_cuda(ctx.cuda_handles(), rows, classes, logits.data<float>(), labels.data<int32_t>(),
                       label_smoothing, grad_scale, loss.data<float>(), need_grad ? r.dlogits.data<float>() : nullptr);
#else
    no_cuda_path("cross_entropy");
#endif
  } else {
    with_cpu_precision(ctx, [&](auto zero) {
      using T = decltype(zero);
      cross_entropy_cpu<T>(rows, classes, logits.data<T>(), labels.data<int32_t>(), T(label_smoothing),
                           T(grad_scale), loss.data<T>(), need_grad ? r.dlogits.data<T>() : nullptr);
    });
  }
  r.loss = loss;
  if (!read_back) return r;
  Tensor loss_host = to_host_f32(ctx, loss);
  r.loss_rows.assign(loss_host.data<float>(), loss_host.data<float>() + rows);
  return r;
}

void flag_nonfinite(Context& ctx, const Tensor& t, double* flag) {
  check_dtype(t, ctx.param_dtype(), "flag_nonfinite");
  dispatch(
      ctx, "flag_nonfinite",
      [&] { KD_IF_CUDA(flag_nonfinite_cuda(ctx.cuda_handles(), t.numel(), t.data<float>(), flag);) },
      [&](auto zero) {
        using T = decltype(zero);
        flag_nonfinite_cpu<T>(t.numel(), t.data<T>(), flag);
      });
}

void add_to_step_stats(Context& ctx, const LossResult& loss, double* stats) {
  KD_CHECK(loss.loss.defined() && loss.loss.ndim() == 1, "add_to_step_stats: no per-row losses");
  const int64_t rows = loss.loss.dim(0);
  KD_CHECK(!loss.rank.defined() || loss.rank.shape() == loss.loss.shape(), "add_to_step_stats: ",
           loss.rank.describe(), " ranks for ", rows, " rows");
  const int32_t* rank = loss.rank.defined() ? loss.rank.data<int32_t>() : nullptr;
  dispatch(
      ctx, "add_to_step_stats",
      [&] { KD_IF_CUDA(add_loss_rows_cuda(ctx.cuda_handles(), rows, loss.loss.data<float>(), rank, stats);) },
      [&](auto zero) {
        using T = decltype(zero);
        add_loss_rows_cpu<T>(rows, loss.loss.data<T>(), rank, stats);
      });
}

}  // namespace kd::ops
