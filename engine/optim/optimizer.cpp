#include "engine/optim/optimizer.h"

#include <cmath>

#include "engine/safetensors.h"
#include "kernels/optim.h"

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

Optimizer::Optimizer(ParamStore& params, const OptimizerConfig& config, const ScheduleConfig& schedule, Context& ctx)
    : params_(params), config_(config), schedule_(schedule) {
  KD_CHECK(config.name == "adam" || config.name == "sgd", "unknown optimizer '", config.name, "' (use adam or sgd)");
  KD_CHECK(config.lr > 0, "optimizer: lr must be positive, got ", config.lr);
  KD_CHECK(params.allocated(), "optimizer: the parameters are not allocated");
  KD_CHECK(ctx.param_dtype() == DType::f32, "optimizer: parameters must be f32, not ", dtype_name(ctx.param_dtype()));
  scheduled_lr(schedule, config.lr, 0);  // validates the decay name
  m_ = Tensor::empty({params.numel()}, DType::f32, ctx);
  fill_zero(m_.raw(), ctx.device(), m_.nbytes(), &ctx);
  if (config.name == "adam") {
    v_ = Tensor::empty({params.numel()}, DType::f32, ctx);
    fill_zero(v_.raw(), ctx.device(), v_.nbytes(), &ctx);
  }
}

StepStats Optimizer::step(Context& ctx) {
  StepStats stats;
  const int64_t n = params_.numel(), nd = params_.decay_numel();
  float* w = params_.values().data<float>();
  float* g = params_.grads().data<float>();
  // Global norm (also the NaN/Inf detector: a single bad element makes it non-finite).
  if (ctx.is_cuda()) {
#if KD_HAVE_CUDA
    Tensor sum = Tensor::empty({1}, DType::f64, ctx);
    sum_squares_cuda(ctx.cuda_handles(), n, g, sum.data<double>());
    stats.grad_norm = std::sqrt(sum.to(Device::cpu, &ctx).data<double>()[0]);
#endif
  } else {
    stats.grad_norm = std::sqrt(sum_squares_cpu(n, g));
  }
  stats.finite = std::isfinite(stats.grad_norm);
  stats.lr = scheduled_lr(schedule_, config_.lr, steps_done_);
  if (!stats.finite) {
    params_.zero_grads(ctx);
    return stats;
  }
  const float scale = config_.clip_norm > 0 && stats.grad_norm > config_.clip_norm
                          ? float(config_.clip_norm / stats.grad_norm)
                          : 1.0f;
  const float wd = float(config_.weight_decay);
  const int64_t t = steps_done_ + 1;
  if (config_.name == "adam") {
    AdamHyper h;
    h.lr = float(stats.lr), h.beta1 = float(config_.beta1), h.beta2 = float(config_.beta2), h.eps = float(config_.eps);
    h.step = t;
    float *m = m_.data<float>(), *v = v_.data<float>();
    if (ctx.is_cuda()) {
#if KD_HAVE_CUDA
      bf16* wc = params_.compute_values().data<bf16>();
      adam_update_cuda(ctx.cuda_handles(), nd, h, wd, scale, w, g, m, v, wc);
      adam_update_cuda(ctx.cuda_handles(), n - nd, h, 0.0f, scale, w + nd, g + nd, m + nd, v + nd, wc + nd);
#endif
    } else {
      adam_update_cpu(nd, h, wd, scale, w, g, m, v);
      adam_update_cpu(n - nd, h, 0.0f, scale, w + nd, g + nd, m + nd, v + nd);
    }
  } else {
    SgdHyper h;
    h.lr = float(stats.lr), h.momentum = float(config_.momentum), h.nesterov = config_.nesterov, h.step = t;
    float* buf = m_.data<float>();
    if (ctx.is_cuda()) {
#if KD_HAVE_CUDA
      bf16* wc = params_.compute_values().data<bf16>();
      sgd_update_cuda(ctx.cuda_handles(), nd, h, wd, scale, w, g, buf, wc);
      sgd_update_cuda(ctx.cuda_handles(), n - nd, h, 0.0f, scale, w + nd, g + nd, buf + nd, wc + nd);
#endif
    } else {
      sgd_update_cpu(nd, h, wd, scale, w, g, buf);
      sgd_update_cpu(n - nd, h, 0.0f, scale, w + nd, g + nd, buf + nd);
    }
  }
  params_.zero_grads(ctx);
  ++steps_done_;
  return stats;
}

// State is saved per parameter, under "optimizer.<state>.<parameter name>" in the parameter's
// file layout, so a checkpoint does not depend on how kd lays out its buffers.
void Optimizer::save(SafetensorsWriter& out, Context& ctx) const {
  for (const auto& [state_name, state] : {std::pair<const char*, const Tensor*>{"m", &m_}, {"v", &v_}}) {
    if (!state->defined()) continue;
    const Tensor host = state->to(Device::cpu, &ctx);
    for (const Param& p : params_.params()) {
      Tensor file = Tensor::zeros_cpu(p.file_shape, DType::f32);
      to_file_layout(p, host.data<float>() + p.offset, file.data<float>());
      out.add(std::string("optimizer.") + state_name + "." + p.name, file);
    }
  }
  Tensor step = Tensor::zeros_cpu({1}, DType::i64);
  step.data<int64_t>()[0] = steps_done_;
  out.add("optimizer.step", step);
  out.set_metadata("optimizer", config_.name);
}

void Optimizer::load(const SafetensorsFile& file, Context& ctx) {
  const auto it = file.metadata().find("optimizer");
  KD_CHECK(it != file.metadata().end(), file.path(), ": no optimizer state in this checkpoint");
  KD_CHECK(it->second == config_.name, file.path(), ": optimizer state is for '", it->second, "', the run uses '",
           config_.name, "'");
  for (const auto& [state_name, state] : {std::pair<const char*, Tensor*>{"m", &m_}, {"v", &v_}}) {
    if (!state->defined()) continue;
    Tensor host = Tensor::zeros_cpu({params_.numel()}, DType::f32);
    const std::string flat = std::string("optimizer.") + state_name;
    if (file.contains(flat)) {
      // Written before state was saved by name: one flat tensor in the first round's layout.
      const Tensor legacy = file.tensor_as(flat, {params_.numel()}, DType::f32);
      for (const Param& p : params_.params())
        std::copy_n(legacy.data<float>() + params_.legacy_offset(p), p.numel(), host.data<float>() + p.offset);
    } else {
      for (const Param& p : params_.params()) {
        const std::string name = flat + "." + p.name;
        KD_CHECK(file.contains(name), file.path(), ": optimizer state '", name, "' is missing");
        const Tensor stored = file.tensor_as(name, p.file_shape, DType::f32);
        from_file_layout(p, stored.data<float>(), host.data<float>() + p.offset);
      }
    }
    state->copy_from(host, &ctx);
  }
  steps_done_ = file.tensor("optimizer.step", {1}).data<int64_t>()[0];
}

}  // namespace kd
