// Writes NumPy .npz archives byte by byte for the tests of kd's reader (engine/npz.h): .npy
// members with any header, ZIP archives with stored or deflated members, optional ZIP64 records,
// and the offsets of every part so a test can corrupt or cut exactly one of them. Also BiT's npz
// format from a kd model's parameters (the inverse of timm's resnetv2._load_weights, written here
// independently of models/bit_npz.cpp).
#pragma once
#include <zlib.h>

#include <cstdint>
#include <cstring>
#include <fstream>
#include <regex>
#include <string>
#include <vector>

#include "engine/context.h"
#include "engine/param.h"

namespace kd::test {

inline void put16(std::vector<uint8_t>& out, uint32_t v) { out.push_back(uint8_t(v)), out.push_back(uint8_t(v >> 8)); }
inline void put32(std::vector<uint8_t>& out, uint32_t v) { put16(out, v & 0xffff), put16(out, v >> 16); }
inline void put64(std::vector<uint8_t>& out, uint64_t v) { put32(out, uint32_t(v)), put32(out, uint32_t(v >> 32)); }
inline void append(std::vector<uint8_t>& out, const void* p, size_t n) {
  out.insert(out.end(), static_cast<const uint8_t*>(p), static_cast<const uint8_t*>(p) + n);
}

// A .npy file: header `dict` verbatim (e.g. "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }"),
// padded with spaces and a newline to a multiple of 64 bytes as NumPy does, then `data`.
inline std::vector<uint8_t> npy_raw(const std::string& dict, const void* data, size_t bytes, int version = 1) {
  const size_t fixed = version == 1 ? 10 : 12;
  std::string text = dict;
  while ((fixed + text.size() + 1) % 64 != 0) text += ' ';
  text += '\n';
  std::vector<uint8_t> out = {0x93, 'N', 'U', 'M', 'P', 'Y', uint8_t(version), 0};
  if (version == 1)
    put16(out, uint32_t(text.size()));
  else
    put32(out, uint32_t(text.size()));
  append(out, text.data(), text.size());
  append(out, data, bytes);
  return out;
}

// shape as NumPy prints it: "()", "(3,)", "(2, 3)".
inline std::string py_shape(const std::vector<int64_t>& shape) {
  std::string s = "(";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + (shape.size() == 1 ? ",)" : ")");
}

template <typename T>
std::vector<uint8_t> npy(const std::string& descr, const std::vector<int64_t>& shape, const std::vector<T>& values,
                         bool fortran = false, int version = 1) {
  const std::string dict = "{'descr': '" + descr + "', 'fortran_order': " + (fortran ? "True" : "False") +
                           ", 'shape': " + py_shape(shape) + ", }";
  return npy_raw(dict, values.data(), values.size() * sizeof(T), version);
}

struct ZipEntry {
  std::string name;  // e.g. "weights.npy"
  std::vector<uint8_t> content;
  bool deflate = false;
  uint16_t method = 0xffff;  // overrides the method field when set (unsupported methods)
};

struct ZipOptions {
  bool zip64 = false;  // sizes/offsets as 0xFFFFFFFF plus ZIP64 extra fields, and the ZIP64 end records
  std::string comment;
};

struct ZipBytes {
  std::vector<uint8_t> bytes;
  std::vector<size_t> local_offsets, data_offsets, data_sizes;
  size_t central_offset = 0, end_offset = 0;
};

inline std::vector<uint8_t> raw_deflate(const std::vector<uint8_t>& in) {
  z_stream z{};
  deflateInit2(&z, 6, Z_DEFLATED, -MAX_WBITS, 8, Z_DEFAULT_STRATEGY);
  std::vector<uint8_t> out(deflateBound(&z, uLong(in.size())) + 16);
  z.next_in = const_cast<Bytef*>(in.data());
  z.avail_in = uInt(in.size());
  z.next_out = out.data();
  z.avail_out = uInt(out.size());
  deflate(&z, Z_FINISH);
  out.resize(z.total_out);
  deflateEnd(&z);
  return out;
}

inline ZipBytes build_zip(const std::vector<ZipEntry>& entries, const ZipOptions& o = {}) {
  ZipBytes z;
  std::vector<uint8_t>& out = z.bytes;
  std::vector<uint8_t> central;
  for (const ZipEntry& e : entries) {
    const std::vector<uint8_t> stored = e.deflate ? raw_deflate(e.content) : e.content;
    const uint16_t method = e.method != 0xffff ? e.method : e.deflate ? 8 : 0;
    const uint32_t crc = uint32_t(crc32(crc32(0, Z_NULL, 0), e.content.data(), uInt(e.content.size())));
    const size_t local = out.size();
    std::vector<uint8_t> local_extra, central_extra;
    if (o.zip64) {
      put16(local_extra, 1), put16(local_extra, 16), put64(local_extra, e.content.size()),
          put64(local_extra, stored.size());
      put16(central_extra, 1), put16(central_extra, 24), put64(central_extra, e.content.size());
      put64(central_extra, stored.size()), put64(central_extra, local);
    }
    const uint32_t csize = o.zip64 ? 0xffffffffu : uint32_t(stored.size());
    const uint32_t usize = o.zip64 ? 0xffffffffu : uint32_t(e.content.size());
    put32(out, 0x04034b50), put16(out, o.zip64 ? 45 : 20), put16(out, 0), put16(out, method), put16(out, 0);
    put16(out, 0x21), put32(out, crc), put32(out, csize), put32(out, usize), put16(out, uint32_t(e.name.size()));
    put16(out, uint32_t(local_extra.size()));
    append(out, e.name.data(), e.name.size());
    append(out, local_extra.data(), local_extra.size());
    z.local_offsets.push_back(local);
    z.data_offsets.push_back(out.size());
    z.data_sizes.push_back(stored.size());
    append(out, stored.data(), stored.size());

    put32(central, 0x02014b50), put16(central, 0x031e), put16(central, o.zip64 ? 45 : 20), put16(central, 0);
    put16(central, method), put16(central, 0), put16(central, 0x21), put32(central, crc), put32(central, csize);
    put32(central, usize), put16(central, uint32_t(e.name.size())), put16(central, uint32_t(central_extra.size()));
    put16(central, 0), put16(central, 0), put16(central, 0), put32(central, 0);
    put32(central, o.zip64 ? 0xffffffffu : uint32_t(local));
    append(central, e.name.data(), e.name.size());
    append(central, central_extra.data(), central_extra.size());
  }
  z.central_offset = out.size();
  append(out, central.data(), central.size());
  if (o.zip64) {
    const size_t record = out.size();
    put32(out, 0x06064b50), put64(out, 44), put16(out, 45), put16(out, 45), put32(out, 0), put32(out, 0);
    put64(out, entries.size()), put64(out, entries.size()), put64(out, central.size()), put64(out, z.central_offset);
    put32(out, 0x07064b50), put32(out, 0), put64(out, record), put32(out, 1);
  }
  z.end_offset = out.size();
  put32(out, 0x06054b50), put16(out, 0), put16(out, 0);
  put16(out, o.zip64 ? 0xffff : uint32_t(entries.size())), put16(out, o.zip64 ? 0xffff : uint32_t(entries.size()));
  put32(out, o.zip64 ? 0xffffffffu : uint32_t(central.size()));
  put32(out, o.zip64 ? 0xffffffffu : uint32_t(z.central_offset));
  put16(out, uint32_t(o.comment.size()));
  append(out, o.comment.data(), o.comment.size());
  return z;
}

inline void write_file_bytes(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(bytes.data()), std::streamsize(bytes.size()));
}

// timm's resnetv2 name -> BiT's npz name (prefix "resnet/"), as timm's _load_weights reads it.
inline std::string bit_name_of(const std::string& timm) {
  static const std::regex unit(R"(stages\.(\d+)\.blocks\.(\d+)\.(conv|norm)([123])\.(weight|bias))");
  static const std::regex proj(R"(stages\.(\d+)\.blocks\.(\d+)\.downsample\.conv\.weight)");
  auto unit_prefix = [](const std::smatch& m) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "resnet/block%d/unit%02d/", std::stoi(m[1]) + 1, std::stoi(m[2]) + 1);
    return std::string(buf);
  };
  std::smatch m;
  if (std::regex_match(timm, m, unit)) {
    const std::string part(1, char('a' + (m[4].str()[0] - '1')));
    if (m[3] == "conv") return unit_prefix(m) + part + "/standardized_conv2d/kernel";
    return unit_prefix(m) + part + "/group_norm/" + (m[5] == "weight" ? "gamma" : "beta");
  }
  if (std::regex_match(timm, m, proj)) return unit_prefix(m) + "a/proj/standardized_conv2d/kernel";
  if (timm == "stem.conv.weight") return "resnet/root_block/standardized_conv2d/kernel";
  if (timm == "norm.weight") return "resnet/group_norm/gamma";
  if (timm == "norm.bias") return "resnet/group_norm/beta";
  if (timm == "head.fc.weight") return "resnet/head/conv2d/kernel";
  if (timm == "head.fc.bias") return "resnet/head/conv2d/bias";
  return "";
}

struct BitNpzOptions {
  bool deflate = false;
  bool gamma_4d = false;        // GroupNorm gamma/beta as [1, 1, 1, C] instead of [C]
  std::vector<ZipEntry> extra;  // appended as they are
  std::string drop;             // a timm name left out
};

// BiT's npz of a kd model's f32 parameters: kernels HWIO (file OIHW transposed by (2, 3, 1, 0)).
inline void write_bit_npz(const ParamStore& store, Context& ctx, const std::string& path, const BitNpzOptions& o = {}) {
  const Tensor host = store.values().to(Device::cpu, &ctx);
  std::vector<ZipEntry> entries;
  for (const Param& p : store.params()) {
    if (p.name == o.drop) continue;
    std::vector<float> file(size_t(p.numel()));
    to_file_layout(p, host.data<float>() + p.offset, file.data());
    std::vector<float> stored = file;
    std::vector<int64_t> shape = p.file_shape;
    if (shape.size() == 4) {  // OIHW -> HWIO
      const int64_t co = shape[0], ci = shape[1], kh = shape[2], kw = shape[3];
      for (int64_t a = 0; a < co; ++a)
        for (int64_t b = 0; b < ci; ++b)
          for (int64_t h = 0; h < kh; ++h)
            for (int64_t w = 0; w < kw; ++w)
              stored[size_t(((h * kw + w) * ci + b) * co + a)] = file[size_t(((a * ci + b) * kh + h) * kw + w)];
      shape = {kh, kw, ci, co};
    } else if (o.gamma_4d && p.name.find("norm") != std::string::npos) {
      shape = {1, 1, 1, shape[0]};
    }
    entries.push_back({bit_name_of(p.name) + ".npy", npy("<f4", shape, stored), o.deflate});
  }
  entries.insert(entries.end(), o.extra.begin(), o.extra.end());
  write_file_bytes(path, build_zip(entries).bytes);
}

}  // namespace kd::test
