#include "engine/tensor.h"

#include <cstdlib>
#include <cstring>
#include <sstream>

#include "engine/context.h"

namespace kd {

size_t dtype_size(DType t) {
  switch (t) {
    case DType::f32: return 4;
    case DType::bf16: return 2;
    case DType::f16: return 2;
    case DType::u8: return 1;
    case DType::i32: return 4;
    case DType::i64: return 8;
    case DType::f64: return 8;
  }
  return 0;
}

const char* dtype_name(DType t) {
  switch (t) {
    case DType::f32: return "f32";
    case DType::bf16: return "bf16";
    case DType::f16: return "f16";
    case DType::u8: return "u8";
    case DType::i32: return "i32";
    case DType::i64: return "i64";
    case DType::f64: return "f64";
  }
  return "?";
}

const char* device_name(Device d) { return d == Device::cpu ? "cpu" : "cuda"; }

std::string shape_str(const Shape& s) {
  std::ostringstream out;
  out << '[';
  for (size_t i = 0; i < s.size(); ++i) out << (i ? ", " : "") << s[i];
  out << ']';
  return out.str();
}

int64_t shape_numel(const Shape& s) {
  int64_t n = 1;
  for (int64_t d : s) n *= d;
  return n;
}

Storage::~Storage() {
  if (release && data) release(data);
}

Tensor Tensor::empty(const Shape& shape, DType dtype, Context& ctx) {
  for (int64_t d : shape) KD_CHECK(d >= 0, "negative dimension in shape ", shape_str(shape));
  Tensor t;
  t.storage_ = ctx.pool().allocate(size_t(shape_numel(shape)) * dtype_size(dtype));
  t.data_ = t.storage_->data;
  t.shape_ = shape;
  t.dtype_ = dtype;
  t.device_ = ctx.device();
  return t;
}

Tensor Tensor::zeros_cpu(const Shape& shape, DType dtype) {
  for (int64_t d : shape) KD_CHECK(d >= 0, "negative dimension in shape ", shape_str(shape));
  const size_t bytes = size_t(shape_numel(shape)) * dtype_size(dtype);
  auto storage = std::make_shared<Storage>();
  storage->data = std::calloc(bytes ? bytes : 1, 1);
  KD_CHECK(storage->data, "out of host memory allocating ", bytes, " bytes for ", shape_str(shape));
  storage->bytes = bytes;
  storage->release = [](void* p) { std::free(p); };
  Tensor t;
  t.storage_ = storage;
  t.data_ = storage->data;
  t.shape_ = shape;
  t.dtype_ = dtype;
  return t;
}

Tensor Tensor::borrow(void* data, const Shape& shape, DType dtype, Device device,
                      std::shared_ptr<Storage> keep_alive) {
  Tensor t;
  t.storage_ = std::move(keep_alive);
  t.data_ = data;
  t.shape_ = shape;
  t.dtype_ = dtype;
  t.device_ = device;
  return t;
}

int64_t Tensor::dim(int i) const {
  const int n = ndim();
  if (i < 0) i += n;
  KD_CHECK(i >= 0 && i < n, "dimension ", i, " out of range for ", describe());
  return shape_[size_t(i)];
}

Tensor Tensor::reshape(const Shape& shape) const {
  KD_CHECK(shape_numel(shape) == numel(), "cannot reshape ", describe(), " to ", shape_str(shape));
  Tensor t = *this;
  t.shape_ = shape;
  return t;
}

Tensor Tensor::slice_rows(int64_t begin, int64_t end) const {
  KD_CHECK(ndim() >= 1 && 0 <= begin && begin <= end && end <= shape_[0], "rows [", begin, ", ", end,
           ") out of range for ", describe());
  const int64_t row = shape_[0] ? numel() / shape_[0] : 0;
  Tensor t = *this;
  t.shape_[0] = end - begin;
  t.data_ = static_cast<char*>(data_) + size_t(begin * row) * dtype_size(dtype_);
  return t;
}

Tensor Tensor::to(Device device, Context* ctx) const {
  Tensor out;
  if (device == Device::cpu) {
    out = zeros_cpu(shape_, dtype_);
  } else {
    KD_CHECK(ctx && ctx->is_cuda(), "copying ", describe(), " to cuda needs a cuda context");
    out = empty(shape_, dtype_, *ctx);
  }
  out.copy_from(*this, ctx);
  return out;
}

Tensor Tensor::clone_cpu() const { return to(Device::cpu, nullptr); }

void Tensor::copy_from(const Tensor& src, Context* ctx) {
  KD_CHECK(src.shape_ == shape_ && src.dtype_ == dtype_, "copy from ", src.describe(), " into ", describe());
  KD_CHECK(ctx || (device_ == Device::cpu && src.device_ == Device::cpu), "copy from ", src.describe(), " into ",
           describe(), " needs the cuda context (its stream orders the copy)");
  copy_bytes(data_, device_, src.data_, src.device_, nbytes(), ctx);
}

std::string Tensor::describe() const {
  return std::string(dtype_name(dtype_)) + shape_str(shape_) + " on " + device_name(device_);
}

void check_shape(const Tensor& t, const Shape& expected, const std::string& what) {
  KD_CHECK(t.defined(), what, ": tensor is missing (expected shape ", shape_str(expected), ")");
  KD_CHECK(t.shape() == expected, what, ": expected shape ", shape_str(expected), ", got ", shape_str(t.shape()));
}

void check_dtype(const Tensor& t, DType expected, const std::string& what) {
  KD_CHECK(t.dtype() == expected, what, ": expected dtype ", dtype_name(expected), ", got ", dtype_name(t.dtype()));
}

}  // namespace kd
