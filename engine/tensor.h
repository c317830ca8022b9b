// Tensor: a typed, shaped view of a reference-counted buffer on one device. Images are NHWC.
// Tensors never copy implicitly between devices; `to()` is the only host<->device copy.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "kernels/check.h"
#include "kernels/common.h"

namespace kd {

enum class DType : uint8_t { f32, bf16, f16, u8, i32, i64, f64 };
enum class Device : uint8_t { cpu, cuda };

size_t dtype_size(DType t);
const char* dtype_name(DType t);
const char* device_name(Device d);

template <typename T> constexpr DType dtype_of();
template <> constexpr DType dtype_of<float>() { return DType::f32; }
template <> constexpr DType dtype_of<double>() { return DType::f64; }
template <> constexpr DType dtype_of<bf16>() { return DType::bf16; }
template <> constexpr DType dtype_of<uint8_t>() { return DType::u8; }
template <> constexpr DType dtype_of<int32_t>() { return DType::i32; }
template <> constexpr DType dtype_of<int64_t>() { return DType::i64; }

using Shape = std::vector<int64_t>;
std::string shape_str(const Shape& s);  // "[2, 64, 64, 3]"
int64_t shape_numel(const Shape& s);

// A block of memory and how to give it back (to a pool, to free, or nothing for a borrowed view).
struct Storage {
  void* data = nullptr;
  size_t bytes = 0;
  Device device = Device::cpu;
  std::function<void(void*)> release;
  Storage() = default;
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;
  ~Storage();
};

class Context;

class Tensor {
 public:
  Tensor() = default;

  // Uninitialised memory from the context's pool (the activation arena).
  static Tensor empty(const Shape& shape, DType dtype, Context& ctx);
  // Heap memory on the host, outside any pool; zero-filled.
  static Tensor zeros_cpu(const Shape& shape, DType dtype);
  // A borrowed view of memory someone else owns (a parameter buffer, a file mapping).
  static Tensor borrow(void* data, const Shape& shape, DType dtype, Device device,
                       std::shared_ptr<Storage> keep_alive = nullptr);

  bool defined() const { return storage_ != nullptr || data_ != nullptr; }
  const Shape& shape() const { return shape_; }
  int ndim() const { return int(shape_.size()); }
  int64_t dim(int i) const;  // negative i counts from the end
  int64_t numel() const { return shape_numel(shape_); }
  size_t nbytes() const { return size_t(numel()) * dtype_size(dtype_); }
  DType dtype() const { return dtype_; }
  Device device() const { return device_; }
  bool is_cuda() const { return device_ == Device::cuda; }

  void* raw() const { return data_; }
  template <typename T> T* data() const {
    KD_CHECK(dtype_ == dtype_of<T>(), "tensor holds ", dtype_name(dtype_), ", accessed as ",
             dtype_name(dtype_of<T>()));
    return static_cast<T*>(data_);
  }

  Tensor reshape(const Shape& shape) const;        // same numel, shares memory
  Tensor slice_rows(int64_t begin, int64_t end) const;  // [begin, end) along dim 0, shares memory
  Tensor to(Device device, Context* ctx = nullptr) const;  // copy (ctx needed for cuda targets)
  Tensor clone_cpu() const;                        // copy of a host tensor
  void copy_from(const Tensor& src, Context* ctx = nullptr);  // same shape/dtype, any devices

  std::string describe() const;  // "f32[2, 10] on cpu"

 private:
  std::shared_ptr<Storage> storage_;
  void* data_ = nullptr;
  Shape shape_;
  DType dtype_ = DType::f32;
  Device device_ = Device::cpu;
};

// Shape checks with messages that name the tensor and both shapes.
void check_shape(const Tensor& t, const Shape& expected, const std::string& what);
void check_dtype(const Tensor& t, DType expected, const std::string& what);

}  // namespace kd
