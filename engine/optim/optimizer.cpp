#include "engine/optim/optimizer.h"

#include <cmath>
#include <cstring>

#include "engine/optim/kinds.h"
#include "engine/safetensors.h"
#include "kernels/optim.h"
#include "kernels/step_stats.h"

namespace kd {

double scheduled_lr(const ScheduleConfig& s, double peak_lr, int64_t step) {
  KD_CHECK(s.decay == "cosine" || s.decay == "linear" || s.decay == "constant", "unknown schedule decay '", s.decay,
           "' (use cosine, linear or constant)");
  if (step < s.warmup_steps) return peak_lr * double(step + 1) / double(s.warmup_steps);
  const double span = double(std::max<int64_t>(1, s.total_steps - s.warmup_steps));
  const double t = std::min(1.0, double(step - s.warmup_steps) / span);
  const double floor = peak_lr * s.final_fraction;
  if (s.decay == "cosine") return floor + (peak_lr - floor) * 0.5 * (1.0 + std::cos(M_PI * t));
  if (s.decay == "linear") return peak_lr + (floor - peak_lr) * t;
  return peak_lr;  // constant
}

std::unique_ptr<Optimizer> Optimizer::create(ParamStore& params, const OptimizerConfig& config,
                                             const ScheduleConfig& schedule, Context& ctx) {
  if (config.name == "adam") return make_adamw(params, config, schedule, ctx);
  if (config.name == "sgd") return make_sgd(params, config, schedule, ctx);
  if (config.name == "shampoo") return make_shampoo(params, config, schedule, ctx);
  KD_FAIL("unknown optimizer '", config.name, "' (optim.name: adam, sgd or shampoo)");
}

Optimizer::Optimizer(ParamStore& params, const OptimizerConfig& config, const ScheduleConfig& schedule, Context& ctx)
    : params_(params), config_(config), schedule_(schedule) {
  KD_CHECK(config.lr > 0, "optim.lr must be positive, got ", config.lr);
  KD_CHECK(params.allocated() && params.trainable(), "optimizer: the parameters are not allocated for training");
  scheduled_lr(schedule, config.lr, 0);  // validates the decay name
}

namespace {
// Sum of squares of the gradients in double (the global norm, and the NaN/Inf detector) into
// *result, in the context's device memory.
void gradient_sum_squares(const ParamStore& params, Context& ctx, double* result) {
  const int64_t n = params.numel();
  if (ctx.is_cuda()) {
#if KD_HAVE_CUDA
    sum_squares_cuda(ctx.cuda_handles(), n, params.grads().data<float>(), result);
    return;
#endif
  }
  if (params.grads().dtype() == DType::f64) {
    double total = 0;
    const double* g = params.grads().data<double>();
    for (int64_t i = 0; i < n; ++i) total += g[i] * g[i];
    *result = total;
    return;
  }
  *result = sum_squares_cpu(n, params.grads().data<float>());
}

// step_gate on the block where it lives: the context's device memory.
void gate_in_place(Context& ctx, double clip_norm, double* stats) {
  if (ctx.is_cuda()) {
#if KD_HAVE_CUDA
    step_gate_cuda(ctx.cuda_handles(), clip_norm, stats);
    return;
#endif
  }
  step_gate_cpu(clip_norm, stats);
}
}  // namespace

StepStats Optimizer::step(Context& ctx) {
  // The gate of step_deferred on a host block whose loss is finite: only the gradients decide.
  double gate[kStatWidth] = {};
  if (ctx.is_cuda()) {
    Tensor sum = Tensor::empty({1}, DType::f64, ctx);
    gradient_sum_squares(params_, ctx, sum.data<double>());
    gate[kStatGradSumSq] = sum.to(Device::cpu, &ctx).data<double>()[0];
  } else {
    gradient_sum_squares(params_, ctx, &gate[kStatGradSumSq]);
  }
  step_gate_cpu(config_.clip_norm, gate);
  StepStats stats;
  stats.grad_norm = std::sqrt(gate[kStatGradSumSq]);
  stats.finite = gate[kStatApplied] != 0;
  stats.lr = scheduled_lr(schedule_, config_.lr, steps_done_);
  if (!stats.finite) {
    params_.zero_grads(ctx);
    return stats;
  }
  UpdateArgs args;
  args.step = steps_done_ + 1;
  args.lr = stats.lr;
  args.grad_scale = gate[kStatGradScale];
  update(ctx, args);
  params_.zero_grads(ctx);
  ++steps_done_;
  return stats;
}

void Optimizer::step_deferred(Context& ctx, double* stats) {
  begin_deferred(ctx, stats);
  enqueue_deferred(ctx, stats);
}

double Optimizer::begin_deferred(Context& ctx, double* stats) {
  StepScalars s;
  s.step = steps_done_ + 1;
  s.lr = scheduled_lr(schedule_, config_.lr, steps_done_);
  s.bias1 = adam_bias_correction(float(config_.beta1), s.step);
  s.bias2 = adam_bias_correction(float(config_.beta2), s.step);
  double block[4];
  store_step_scalars(s, block);
  if (ctx.is_cuda()) {  // a stream-ordered upload from the staging ring: no wait
    std::memcpy(ctx.host_staging(sizeof block), block, sizeof block);
    ctx.upload_staging(stats + kStatLr, sizeof block);
  } else {
    std::memcpy(stats + kStatLr, block, sizeof block);
  }
  ++steps_done_;  // a skipped step counts too (as skip_step)
  return s.lr;
}

void Optimizer::enqueue_deferred(Context& ctx, double* stats) {
  gradient_sum_squares(params_, ctx, stats + kStatGradSumSq);
  gate_in_place(ctx, config_.clip_norm, stats);
  UpdateArgs args;
  bool apply = true;
  if (ctx.is_cuda() && gates_on_device()) {
    args.step_stats = stats;  // the update kernels read gate and schedule there (args' are unused)
  } else {
    double host[kStatWidth];
    const double* block = stats;
    if (ctx.is_cuda()) {  // (the one wait: this optimizer's update needs the factor on the host)
      copy_bytes(host, Device::cpu, stats, Device::cuda, sizeof host, &ctx);
      block = host;
    }
    apply = block[kStatApplied] != 0;
    args.grad_scale = block[kStatGradScale];
    const StepScalars s = load_step_scalars(block + kStatLr);
    args.lr = s.lr, args.step = s.step;
  }
  if (apply) update(ctx, args);
  params_.zero_grads(ctx);
}

void Optimizer::skip_step(Context& ctx) {
  params_.zero_grads(ctx);
  ++steps_done_;
}

void Optimizer::save(SafetensorsWriter& out, Context& ctx) const {
  save_state(out, ctx);
  Tensor step = Tensor::zeros_cpu({1}, DType::i64);
  step.data<int64_t>()[0] = steps_done_;
  out.add("optimizer.step", step);
  out.set_metadata("optimizer", kind());
}

void Optimizer::load(const SafetensorsFile& file, Context& ctx) {
  const auto it = file.metadata().find("optimizer");
  KD_CHECK(it != file.metadata().end(), file.path(), ": no optimizer state in this checkpoint");
  KD_CHECK(it->second == kind(), file.path(), ": optimizer state is for '", it->second, "', the run uses '", kind(),
           "' (optim.name)");
  load_state(file, ctx);
  const Tensor step = file.tensor("optimizer.step", {1});
  KD_CHECK(step.dtype() == DType::i64, file.path(), ": 'optimizer.step' holds ", dtype_name(step.dtype()),
           ", expected i64");
  steps_done_ = step.data<int64_t>()[0];
}

Tensor Optimizer::make_flat_state(Context& ctx) const {
  Tensor t = Tensor::empty({params_.numel()}, ctx.param_dtype(), ctx);
  fill_zero(t.raw(), ctx.device(), t.nbytes(), &ctx);
  return t;
}

// Per parameter, in its file layout, so a checkpoint does not depend on kd's buffer layout.
void Optimizer::save_flat_state(SafetensorsWriter& out, Context& ctx, const std::string& state,
                                const Tensor& flat) const {
  const Tensor host = flat.to(Device::cpu, &ctx);
  for (const Param& p : params_.params()) {
    Tensor file = Tensor::zeros_cpu(p.file_shape, host.dtype());
    if (host.dtype() == DType::f64)
      to_file_layout(p, host.data<double>() + p.offset, file.data<double>());
    else
      to_file_layout(p, host.data<float>() + p.offset, file.data<float>());
    out.add("optimizer." + state + "." + p.name, file);
  }
}

void Optimizer::load_flat_state(const SafetensorsFile& file, Context& ctx, const std::string& state,
                                Tensor& flat) const {
  const DType dtype = flat.dtype();
  Tensor host = Tensor::zeros_cpu({params_.numel()}, dtype);
  const std::string whole = "optimizer." + state;
  auto copy_in = [&](const Param& p, const Tensor& src, bool file_layout, int64_t offset) {
    if (dtype == DType::f64) {
      if (file_layout)
        from_file_layout(p, src.data<double>(), host.data<double>() + p.offset);
      else
        std::copy_n(src.data<double>() + offset, p.numel(), host.data<double>() + p.offset);
    } else {
      if (file_layout)
        from_file_layout(p, src.data<float>(), host.data<float>() + p.offset);
      else
        std::copy_n(src.data<float>() + offset, p.numel(), host.data<float>() + p.offset);
    }
  };
  if (file.contains(whole)) {
    // Written before state was saved by name: one flat tensor in the first round's layout.
    const Tensor legacy = file.tensor_as(whole, {params_.numel()}, dtype);
    for (const Param& p : params_.params()) copy_in(p, legacy, false, params_.legacy_offset(p));
  } else {
    for (const Param& p : params_.params()) {
      const std::string name = whole + "." + p.name;
      KD_CHECK(file.contains(name), file.path(), ": optimizer state '", name, "' is missing (a checkpoint of another ",
               "model or optimizer?)");
      copy_in(p, file.tensor_as(name, p.file_shape, dtype), true, 0);
    }
  }
  flat.copy_from(host, &ctx);
}

}  // namespace kd
