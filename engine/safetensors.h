// safetensors (https://github.com/huggingface/safetensors): 8-byte little-endian header length,
// a JSON header {name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {str: str}},
// then the raw little-endian tensor bytes. Reading validates everything before trusting it and
// names the file and the tensor in every error; writing is atomic (temp file, fsync, rename).
// kd stores a checksum of every tensor's bytes in the metadata ("kd_checksums") and open()
// verifies them, so a file corrupted after it was written is an error naming the tensor.
#pragma once
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "engine/tensor.h"
#include "engine/tensor_source.h"

namespace kd {

struct SafetensorsEntry {
  std::string name;
  DType dtype;
  Shape shape;
  size_t offset = 0;  // into the data section
  size_t bytes = 0;
};

class SafetensorsFile : public TensorSource {
 public:
  // Reads and validates the header and kd's tensor checksums; the data section is memory-mapped.
  static SafetensorsFile open(const std::string& path);

  const std::string& path() const override { return path_; }
  std::vector<std::string> names() const override;  // sorted
  bool contains(const std::string& name) const override { return entries_.count(name) != 0; }
  Shape shape_of(const std::string& name) const override { return entry(name).shape; }
  const SafetensorsEntry& entry(const std::string& name) const;  // throws: "file F has no tensor N"
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

  // A CPU view of the stored bytes (kept alive by the returned tensor). The mapping is read-only:
  // copy before writing. Data another writer left misaligned for its dtype comes back as a copy.
  Tensor tensor(const std::string& name) const;
  // The same, checking the shape: "F: tensor N has shape [..], expected [..]".
  Tensor tensor(const std::string& name, const Shape& expected) const;
  // Converted to a new f32 CPU tensor from f32, bf16, f16, u8, i32 or i64, shape checked.
  Tensor tensor_f32(const std::string& name, const Shape& expected) const;
  // The same converted to f32 or f64.
  Tensor tensor_as(const std::string& name, const Shape& expected, DType to) const override;

 private:
  std::string path_;
  std::shared_ptr<Storage> mapping_;  // the whole file
  const uint8_t* data_ = nullptr;     // start of the data section
  std::map<std::string, SafetensorsEntry> entries_;
  std::map<std::string, std::string> metadata_;
};

class SafetensorsWriter {
 public:
  // The tensor is copied to host memory now, so the caller may reuse it; a device tensor needs its
  // context (whose stream orders the copy).
  void add(const std::string& name, const Tensor& t, Context* ctx = nullptr);
  void set_metadata(const std::string& key, const std::string& value) { metadata_[key] = value; }
  // Writes `path` atomically: path.tmp.<pid>, fsync, rename over path, fsync the folder.
  // A crash at any point leaves either the old file or the new one, never a torn file.
  void write(const std::string& path) const;

 private:
  std::vector<std::pair<std::string, Tensor>> tensors_;
  std::map<std::string, std::string> metadata_;
};

// The 64-bit checksum kd stores per tensor: any change within one 8-byte word changes it.
uint64_t content_checksum64(const void* data, size_t bytes);

// DType <-> safetensors names ("F32", "BF16", "F16", "U8", "I32", "I64").
const char* safetensors_dtype_name(DType t);
DType parse_safetensors_dtype(const std::string& name, const std::string& context);

// n little-endian values of dtype `stored` at src (any alignment) -> n f32 or f64 values at dst
// (`to`), exactly as tensor_as converts: f16 and bf16 exactly, integers rounded to nearest.
void convert_to_float(DType stored, const uint8_t* src, size_t n, DType to, void* dst);

}  // namespace kd
