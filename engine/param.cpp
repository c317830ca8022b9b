#include "engine/param.h"

#include <algorithm>
#include <cmath>
#include <set>

#include "engine/context.h"
#include "engine/safetensors.h"
#include "kernels/random.h"
#if KD_HAVE_CUDA
#include "kernels/cast.h"
#endif

namespace kd {

Param* ParamStore::add(const std::string& name, const Shape& shape, ParamInit init, bool decay, ParamLayout layout,
                       float init_std, const Shape& file_shape) {
  KD_CHECK(!allocated(), "parameter '", name, "' declared after the store was allocated");
  for (const auto* list : {&params_, &buffers_})
    for (const Param& p : *list) KD_CHECK(p.name != name, "parameter '", name, "' declared twice");
  Param p;
  p.name = name;
  p.shape = shape;
  p.layout = layout;
  if (layout == ParamLayout::conv_oihw) {
    KD_CHECK(shape.size() == 4, "conv weight '", name, "' must be 4-D, got ", shape_str(shape));
    p.file_shape = {shape[0], shape[3], shape[1], shape[2]};
  } else {
    p.file_shape = file_shape.empty() ? shape : file_shape;
    KD_CHECK(shape_numel(p.file_shape) == shape_numel(shape), "parameter '", name, "': file shape ",
             shape_str(p.file_shape), " does not hold ", shape_str(shape));
  }
  p.decay = decay;
  p.init = init;
  p.init_std = init_std;
  p.index = int32_t(params_.size());
  p.store = this;
  numel_ += p.numel();
  params_.push_back(std::move(p));
  return &params_.back();
}

Param* ParamStore::add_buffer(const std::string& name, const Shape& shape, ParamInit init, bool scalar,
                              DType file_dtype, bool host) {
  KD_CHECK(!allocated(), "buffer '", name, "' declared after the store was allocated");
  for (const auto* list : {&params_, &buffers_})
    for (const Param& p : *list) KD_CHECK(p.name != name, "buffer '", name, "' declared twice");
  Param p;
  p.name = name;
  p.shape = shape;
  p.file_shape = scalar ? Shape{} : shape;
  KD_CHECK(shape_numel(p.file_shape) == shape_numel(shape), "buffer '", name, "': a scalar buffer holds one element, not ",
           shape_str(shape));
  p.init = init;
  p.buffer = true;
  p.host = host;
  p.file_dtype = file_dtype;
  p.index = int32_t(buffers_.size());
  p.store = this;
  buffers_.push_back(std::move(p));
  return &buffers_.back();
}

void Param::grad_written() const {
  if (store) store->on_grad_written(*this);
}

void ParamStore::allocate(Context& ctx, bool trainable) {
  KD_CHECK(!allocated(), "parameter store allocated twice");
  // Decayed parameters first, then the rest: the optimizer is then two flat passes. Each part
  // in reverse declaration order: backward's order (see the header).
  int64_t offset = 0;
  for (bool decayed : {true, false})
    for (auto p = params_.rbegin(); p != params_.rend(); ++p)
      if (p->decay == decayed) p->offset = offset, offset += p->numel();
  decay_numel_ = 0;
  for (const Param& p : params_) decay_numel_ += p.decay ? p.numel() : 0;
  values_ = Tensor::empty({numel_}, ctx.param_dtype(), ctx);
  fill_zero(values_.raw(), ctx.device(), values_.nbytes(), &ctx);
  if (trainable) {
    grads_ = Tensor::empty({numel_}, ctx.param_dtype(), ctx);
    fill_zero(grads_.raw(), ctx.device(), grads_.nbytes(), &ctx);
  }
  if (ctx.is_cuda()) compute_ = Tensor::empty({numel_}, DType::bf16, ctx);
  for (Param& p : params_) {
    p.value = values_.slice_rows(p.offset, p.offset + p.numel()).reshape(p.shape);
    if (trainable) p.grad = grads_.slice_rows(p.offset, p.offset + p.numel()).reshape(p.shape);
    p.compute = ctx.is_cuda() ? compute_.slice_rows(p.offset, p.offset + p.numel()).reshape(p.shape) : p.value;
  }
  // Buffers: their own flat buffers (device, and host for counters), outside the optimizer's.
  int64_t device_numel = 0, host_numel = 0;
  for (Param& p : buffers_) {
    int64_t& at = p.host ? host_numel : device_numel;
    p.offset = at;
    at += p.numel();
  }
  if (device_numel > 0) {
    buffer_values_ = Tensor::empty({device_numel}, ctx.param_dtype(), ctx);
    fill_zero(buffer_values_.raw(), ctx.device(), buffer_values_.nbytes(), &ctx);
  }
  if (host_numel > 0) host_buffer_values_ = Tensor::zeros_cpu({host_numel}, ctx.param_dtype());
  for (Param& p : buffers_) {
    const Tensor& flat = p.host ? host_buffer_values_ : buffer_values_;
    p.value = p.compute = flat.slice_rows(p.offset, p.offset + p.numel()).reshape(p.shape);
  }
}

void ParamStore::point_grads_at(const Tensor& flat) {
  KD_CHECK(trainable(), "point_grads_at: the parameter store has no gradients (frozen)");
  KD_CHECK(flat.defined() && flat.numel() == numel_ && flat.dtype() == grads_.dtype() &&
               flat.device() == grads_.device(),
           "point_grads_at: need ", dtype_name(grads_.dtype()), "[", numel_, "] on ", device_name(grads_.device()),
           ", got ", flat.describe());
  for (Param& p : params_) p.grad = flat.slice_rows(p.offset, p.offset + p.numel()).reshape(p.shape);
}

void ParamStore::release_for_inference(Context& ctx) {
  KD_CHECK(allocated() && !released_, "release_for_inference: the store is not allocated or already released");
  KD_CHECK(!trainable(), "release_for_inference: a trainable store keeps its values (allocate it untrainable)");
  // What stays: fp32 values where read (and, on the CPU, where the compute copy is read: it is
  // the value there), compute copies (GPU) where read. New, packed buffers; the old ones go.
  int64_t value_numel = 0, compute_numel = 0;
  auto keeps_value = [&](const Param& p) {
    return p.frozen_reads == FrozenReads::value || (!ctx.is_cuda() && p.frozen_reads == FrozenReads::compute);
  };
  auto keeps_compute = [&](const Param& p) { return ctx.is_cuda() && p.frozen_reads == FrozenReads::compute; };
  for (const Param& p : params_) {
    if (keeps_value(p)) value_numel += p.numel();
    if (keeps_compute(p)) compute_numel += p.numel();
  }
  if (value_numel > 0) kept_values_ = Tensor::empty({value_numel}, values_.dtype(), ctx);
  if (compute_numel > 0) kept_compute_ = Tensor::empty({compute_numel}, DType::bf16, ctx);
  int64_t vo = 0, co = 0;
  for (Param& p : params_) {
    Tensor value, compute;
    if (keeps_value(p)) {
      value = kept_values_.slice_rows(vo, vo + p.numel()).reshape(p.shape);
      copy_bytes(value.raw(), ctx.device(), p.value.raw(), ctx.device(), value.nbytes(), &ctx);
      vo += p.numel();
    }
    if (keeps_compute(p)) {
      compute = kept_compute_.slice_rows(co, co + p.numel()).reshape(p.shape);
      copy_bytes(compute.raw(), ctx.device(), p.compute.raw(), ctx.device(), compute.nbytes(), &ctx);
      co += p.numel();
    }
    p.value = value;
    p.compute = ctx.is_cuda() ? compute : value;
  }
  values_ = compute_ = Tensor();
  released_ = true;
}

size_t ParamStore::bytes_held() const {
  size_t bytes = 0;
  for (const Tensor* t : {&values_, &grads_, &compute_, &kept_values_, &kept_compute_})
    if (t->defined()) bytes += t->nbytes();
  return bytes;
}

int64_t ParamStore::legacy_offset(const Param& target) const {
  int64_t offset = 0;
  for (bool decayed : {true, false})
    for (const Param& p : params_) {
      if (p.decay != decayed) continue;
      if (&p == &target) return offset;
      offset += p.numel();
    }
  KD_FAIL("legacy_offset: '", target.name, "' is not a parameter of this store");
}

Param& ParamStore::get(const std::string& name) {
  for (auto* list : {&params_, &buffers_})
    for (Param& p : *list)
      if (p.name == name) return p;
  KD_FAIL("no parameter or buffer named '", name, "'");
}

void ParamStore::init(uint64_t seed, Context& ctx) {
  KD_CHECK(allocated(), "parameter store not allocated");
  std::vector<float> host(static_cast<size_t>(numel_));
  for (const Param& p : params_) {
    float* v = host.data() + p.offset;
    const uint64_t stream = hash_string(p.name.c_str());
    double std_dev = p.init_std;
    if (p.init == ParamInit::kaiming_fan_out) {
      // kd layout: conv OHWI [c_out, kh, kw, c_in/g], dense [out, in]: fan_out = c_out * kh * kw
      const int64_t fan_out = p.shape.size() == 4 ? p.shape[0] * p.shape[1] * p.shape[2] : p.shape[0];
      std_dev = std::sqrt(2.0 / double(fan_out));
    }
    for (int64_t i = 0; i < p.numel(); ++i) {
      switch (p.init) {
        case ParamInit::zeros: v[i] = 0.0f; break;
        case ParamInit::ones: v[i] = 1.0f; break;
        case ParamInit::normal:
        case ParamInit::kaiming_fan_out: v[i] = float(std_dev * random_normal(seed, stream, uint64_t(i))); break;
      }
    }
  }
  upload(values_, host.data(), ctx);
  sync_compute(ctx);
  for (Param& p : buffers_) {
    KD_CHECK(p.init == ParamInit::zeros || p.init == ParamInit::ones, "buffer '", p.name,
             "': buffers start at zeros or ones");
    std::vector<float> v(size_t(p.numel()), p.init == ParamInit::ones ? 1.0f : 0.0f);
    upload(p.value, v.data(), ctx);
  }
}

void ParamStore::upload(const Tensor& dst, const float* host, Context& ctx) {
  const size_t n = size_t(dst.numel());
  if (dst.dtype() == DType::f64) {
    std::vector<double> wide(host, host + n);
    copy_bytes(dst.raw(), ctx.device(), wide.data(), Device::cpu, n * sizeof(double), &ctx);
  } else {
    copy_bytes(dst.raw(), ctx.device(), host, Device::cpu, n * sizeof(float), &ctx);
  }
}

void ParamStore::zero_grads(Context& ctx) {
  KD_CHECK(trainable(), "zero_grads: the parameter store has no gradients (frozen)");
  fill_zero(grads_.raw(), ctx.device(), grads_.nbytes(), &ctx);
}

void ParamStore::sync_compute(Context& ctx) {
  if (!ctx.is_cuda()) return;
  KD_CHECK(!released_, "sync_compute on a store released for inference");
#if KD_HAVE_CUDA
  cast_f32_to_bf16_cuda(ctx.cuda_handles(), numel_, values_.data<float>(), compute_.data<bf16>());
#endif
}

namespace {
// kd OHWI [o][y][x][i] <-> file OIHW [o][i][y][x], either direction.
template <typename T>
void convert_layout(const Param& p, const T* src, T* dst, bool to_file) {
  if (p.layout == ParamLayout::same) {
    std::copy(src, src + p.numel(), dst);
    return;
  }
  const int64_t O = p.shape[0], H = p.shape[1], W = p.shape[2], I = p.shape[3];
  for (int64_t o = 0; o < O; ++o)
    for (int64_t y = 0; y < H; ++y)
      for (int64_t x = 0; x < W; ++x)
        for (int64_t i = 0; i < I; ++i) {
          const int64_t kd_index = ((o * H + y) * W + x) * I + i, file_index = ((o * I + i) * H + y) * W + x;
          if (to_file)
            dst[file_index] = src[kd_index];
          else
            dst[kd_index] = src[file_index];
        }
}
}  // namespace

template <typename T>
void to_file_layout(const Param& p, const T* kd, T* file) {
  convert_layout(p, kd, file, true);
}

template <typename T>
void from_file_layout(const Param& p, const T* file, T* kd) {
  convert_layout(p, file, kd, false);
}

template void to_file_layout<float>(const Param&, const float*, float*);
template void to_file_layout<double>(const Param&, const double*, double*);
template void from_file_layout<float>(const Param&, const float*, float*);
template void from_file_layout<double>(const Param&, const double*, double*);

void ParamStore::load(const TensorSource& file, Context& ctx, bool strict, const std::string& prefix,
                      const std::vector<std::string>& skip) {
  KD_CHECK(allocated(), "parameter store not allocated");
  KD_CHECK(!released_, file.path(), ": cannot load into a model whose weights were released for inference");
  std::set<std::string> expected;
  std::vector<std::string> missing;
  const DType dtype = ctx.param_dtype();
  for (auto* list : {&params_, &buffers_})
    for (Param& p : *list) {
      const std::string key = prefix + p.name;
      expected.insert(key);
      if (std::find(skip.begin(), skip.end(), p.name) != skip.end()) continue;
      if (!file.contains(key)) {
        // A counter (BatchNorm's num_batches_tracked) absent from a file starts at zero: some
        // published checkpoints drop it.
        if (!(p.buffer && p.host)) missing.push_back(key);
        continue;
      }
      // Buffers: any shape with the right element count ([] or [1] for a counter).
      const Shape stored_shape = p.buffer ? file.shape_of(key) : p.file_shape;
      KD_CHECK(shape_numel(stored_shape) == p.numel(), file.path(), ": buffer '", key, "' has shape ",
               shape_str(stored_shape), ", expected ", shape_str(p.file_shape));
      Tensor stored = file.tensor_as(key, stored_shape, dtype);
      Tensor host = Tensor::zeros_cpu(p.shape, dtype);
      if (dtype == DType::f64)
        from_file_layout(p, stored.data<double>(), host.data<double>());
      else
        from_file_layout(p, stored.data<float>(), host.data<float>());
      p.value.copy_from(host, &ctx);
    }
  if (strict) {
    if (!missing.empty()) {
      std::string list;
      for (size_t i = 0; i < missing.size() && i < 5; ++i) list += (i ? ", " : "") + missing[i];
      KD_FAIL(file.path(), ": ", missing.size(), " parameter(s) missing, e.g. ", list);
    }
    std::vector<std::string> unexpected;
    for (const std::string& name : file.names())
      if (name.compare(0, prefix.size(), prefix) == 0 && !expected.count(name) && name.rfind("optimizer.", 0) != 0)
        unexpected.push_back(name);
    if (!unexpected.empty()) {
      std::string list;
      for (size_t i = 0; i < unexpected.size() && i < 5; ++i) list += (i ? ", " : "") + unexpected[i];
      KD_FAIL(file.path(), ": ", unexpected.size(), " tensor(s) the model does not have, e.g. ", list);
    }
  }
  sync_compute(ctx);
}

void ParamStore::save(SafetensorsWriter& out, Context& ctx, const std::string& prefix) const {
  KD_CHECK(allocated(), "parameter store not allocated");
  KD_CHECK(!released_, "cannot save a model whose weights were released for inference");
  Tensor host = values_.to(Device::cpu, &ctx);
  for (const Param& p : params_) {
    Tensor file = Tensor::zeros_cpu(p.file_shape, host.dtype());
    if (host.dtype() == DType::f64)
      to_file_layout(p, host.data<double>() + p.offset, file.data<double>());
    else
      to_file_layout(p, host.data<float>() + p.offset, file.data<float>());
    out.add(prefix + p.name, file);
  }
  for (const Param& p : buffers_) {
    const Tensor value = p.value.to(Device::cpu, &ctx);
    Tensor file = Tensor::zeros_cpu(p.file_shape, p.file_dtype == DType::i64 ? DType::i64 : value.dtype());
    for (int64_t i = 0; i < p.numel(); ++i) {
      const double v = value.dtype() == DType::f64 ? value.data<double>()[i] : double(value.data<float>()[i]);
      if (file.dtype() == DType::i64)
        file.data<int64_t>()[i] = int64_t(std::llround(v));
      else if (file.dtype() == DType::f64)
        file.data<double>()[i] = v;
      else
        file.data<float>()[i] = float(v);
    }
    out.add(prefix + p.name, file);
  }
}

}  // namespace kd
