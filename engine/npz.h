// NumPy .npz archives (what np.savez / np.savez_compressed write, and how BiT's original weights
// were released): a ZIP archive whose members are .npy files, each stored or deflate-compressed.
//
// ZIP (PKWARE APPNOTE): the end-of-central-directory record at the end of the file points to the
// central directory, one entry per member (name, method, CRC-32, sizes, offset of its local
// header); sizes and offsets that do not fit 32 bits are 0xFFFFFFFF there and sit in a ZIP64
// extra field (NumPy always writes that field into local headers; kd reads sizes from the
// central directory, which is authoritative). Archives with more than 65535 members or a central
// directory past 4 GiB use the ZIP64 end records. Encryption and split archives are refused.
//
// Each member is a .npy file (engine/npy.h); kd reads descr <f2 <f4 <f8 |u1 <i4 <i8, and
// fortran_order arrays are transposed into C order.
//
// The archive is memory-mapped at open; every member's .npy header is parsed then (shapes are
// known without reading data), its data is read, inflated and CRC-checked only when asked for.
// Every error names the file and the member.
#pragma once
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "engine/tensor.h"
#include "engine/tensor_source.h"

namespace kd {

struct NpzMember {
  std::string name;   // the array's name: the ZIP member name without ".npy"
  std::string descr;  // NumPy's dtype string, e.g. "<f4"
  DType dtype = DType::f32;
  Shape shape;  // () -> {} (one element)
  bool fortran_order = false;
  bool deflated = false;      // compression method 8, else 0 (stored)
  uint64_t offset = 0;        // of the member's stored (maybe compressed) bytes in the file
  uint64_t stored_bytes = 0;  // compressed size
  uint64_t member_bytes = 0;  // uncompressed size: the whole .npy file
  uint64_t header_bytes = 0;  // of the .npy file before the array data
  uint32_t crc32 = 0;         // of the uncompressed .npy file
  uint64_t data_bytes() const { return member_bytes - header_bytes; }
};

class NpzFile : public TensorSource {
 public:
  // Reads the ZIP directory and every member's .npy header; throws naming the file (and the
  // member) on anything malformed: not a ZIP, truncated, unsupported method or dtype, ...
  static NpzFile open(const std::string& path);

  const std::string& path() const override { return path_; }
  std::vector<std::string> names() const override;  // sorted
  bool contains(const std::string& name) const override { return members_.count(name) != 0; }
  Shape shape_of(const std::string& name) const override { return member(name).shape; }
  const NpzMember& member(const std::string& name) const;  // throws: "F: archive has no array 'N'"

  // The array in its stored dtype, in C order, as a new CPU tensor (inflated, CRC-checked).
  Tensor tensor(const std::string& name) const;
  // Converted to a new f32 or f64 CPU tensor, its shape checked: "F: array 'N' has shape .."
  Tensor tensor_as(const std::string& name, const Shape& expected, DType to) const override;

 private:
  // The member's array data (after its .npy header), as stored, into dst (data_bytes() bytes);
  // the CRC-32 of the whole member is checked.
  void read_data(const NpzMember& m, uint8_t* dst) const;
  std::string path_;
  std::shared_ptr<Storage> mapping_;  // the whole file
  std::map<std::string, NpzMember> members_;
};

}  // namespace kd
