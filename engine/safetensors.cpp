#include "engine/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <nlohmann/json.hpp>
#include <set>

#include "engine/file_write.h"

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "safetensors stores little-endian bytes");

namespace kd {

namespace {

using json = nlohmann::json;

constexpr uint64_t kMaxHeaderBytes = 100'000'000;  // as the reference implementation
constexpr const char* kMetadataKey = "__metadata__";
// Metadata key of the per-tensor content checksums kd writes: {"tensor": "<16 hex digits>"}.
constexpr const char* kChecksumsKey = "kd_checksums";

// IEEE binary16 -> binary32, exact for every input: subnormals, infinities and NaN payloads.
float f16_to_float(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t mant = h & 0x3ffu;
  uint32_t bits;
  if (exp == 0x1f) {
    bits = sign | 0x7f800000u | (mant << 13);  // inf, or NaN keeping its payload
  } else if (exp != 0) {
    bits = sign | ((exp + 127 - 15) << 23) | (mant << 13);
  } else if (mant == 0) {
    bits = sign;  // +-0
  } else {
    // Subnormal: mant * 2^-24. Shift the leading one up to the implicit bit position.
    int e = -14;
    while ((mant & 0x400u) == 0) {
      mant <<= 1;
      --e;
    }
    bits = sign | (uint32_t(e + 127) << 23) | ((mant & 0x3ffu) << 13);
  }
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

template <typename T>
T load(const uint8_t* p) {
  T v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

std::string errno_text(int err) { return std::string(std::strerror(err)) + " (errno " + std::to_string(err) + ")"; }

// Parses one tensor entry of the header; `where` is "path: tensor 'name'".
SafetensorsEntry parse_entry(const std::string& name, const json& e, const std::string& where,
                             uint64_t data_bytes) {
  KD_CHECK(e.is_object(), where, ": entry is not a JSON object");
  for (const char* field : {"dtype", "shape", "data_offsets"})
    KD_CHECK(e.contains(field), where, ": entry has no '", field, "'");
  const json& dtype = e["dtype"];
  const json& shape = e["shape"];
  const json& offsets = e["data_offsets"];
  KD_CHECK(dtype.is_string(), where, ": 'dtype' is not a string");
  KD_CHECK(shape.is_array(), where, ": 'shape' is not an array");
  KD_CHECK(offsets.is_array() && offsets.size() == 2, where, ": 'data_offsets' is not [begin, end]");

  SafetensorsEntry out;
  out.name = name;
  out.dtype = parse_safetensors_dtype(dtype.get<std::string>(), where);
  uint64_t numel = 1;
  for (size_t i = 0; i < shape.size(); ++i) {
    const json& d = shape[i];
    KD_CHECK(d.is_number_unsigned(), where, ": shape dimension ", i, " is ", d.dump(),
             ", not a non-negative integer");
    const uint64_t v = d.get<uint64_t>();
    KD_CHECK(v <= uint64_t(INT64_MAX) && !__builtin_mul_overflow(numel, v, &numel), where, ": shape ",
             shape.dump(), " overflows");
    out.shape.push_back(int64_t(v));
  }
  uint64_t expected_bytes = 0;
  KD_CHECK(!__builtin_mul_overflow(numel, uint64_t(dtype_size(out.dtype)), &expected_bytes), where,
           ": shape ", shape.dump(), " overflows");

  for (const json& o : offsets)
    KD_CHECK(o.is_number_unsigned(), where, ": 'data_offsets' ", offsets.dump(),
             " are not non-negative integers");
  const uint64_t begin = offsets[0].get<uint64_t>(), end = offsets[1].get<uint64_t>();
  KD_CHECK(begin <= end, where, ": data_offsets ", offsets.dump(), " have begin > end");
  KD_CHECK(end <= data_bytes, where, ": data_offsets ", offsets.dump(), " end beyond the data section (",
           data_bytes, " bytes); is the file truncated?");
  KD_CHECK(end - begin == expected_bytes, where, ": data_offsets ", offsets.dump(), " hold ", end - begin,
           " bytes, but ", dtype_name(out.dtype), shape_str(out.shape), " needs ", expected_bytes);
  out.offset = size_t(begin);
  out.bytes = size_t(expected_bytes);
  return out;
}

std::shared_ptr<Storage> map_file(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  KD_CHECK(fd >= 0, path, ": cannot open: ", errno_text(errno));
  struct stat st {};
  if (fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    KD_FAIL(path, ": cannot stat: ", errno_text(err));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    KD_FAIL(path, ": not a regular file");
  }
  const size_t size = size_t(st.st_size);
  if (size < 8) {
    ::close(fd);
    KD_FAIL(path, ": file is ", size, " bytes, shorter than the 8-byte header length");
  }
  // Read-only: tensors viewing the mapping must not be written to (copy them first).
  void* p = mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
  const int err = errno;
  ::close(fd);
  KD_CHECK(p != MAP_FAILED, path, ": cannot mmap ", size, " bytes: ", errno_text(err));
  auto storage = std::make_shared<Storage>();
  storage->data = p;
  storage->bytes = size;
  storage->release = [size](void* q) { munmap(q, size); };
  return storage;
}

std::string hex64(uint64_t v) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", (unsigned long long)v);
  return buf;
}

// Compares every tensor that kd_checksums lists with its stored checksum.
void verify_checksums(const std::string& path, const std::string& listing, const uint8_t* data,
                      const std::map<std::string, SafetensorsEntry>& entries) {
  json sums;
  try {
    sums = json::parse(listing);
  } catch (const json::exception& e) {
    KD_FAIL(path, ": __metadata__ '", kChecksumsKey, "' is not valid JSON: ", e.what());
  }
  KD_CHECK(sums.is_object(), path, ": __metadata__ '", kChecksumsKey, "' is not a JSON object");
  for (const auto& [name, stored] : sums.items()) {
    auto it = entries.find(name);
    KD_CHECK(it != entries.end(), path, ": '", kChecksumsKey, "' lists tensor '", name, "', which the file lacks");
    KD_CHECK(stored.is_string(), path, ": the checksum of tensor '", name, "' is not a string");
    const std::string computed = hex64(content_checksum64(data + it->second.offset, it->second.bytes));
    KD_CHECK(stored.get<std::string>() == computed, path, ": tensor '", name, "' fails its checksum (stored ",
             stored.get<std::string>(), ", computed ", computed, "): the file is corrupt");
  }
}

}  // namespace

uint64_t content_checksum64(const void* data, size_t bytes) {
  // Four independent lanes of h = rotl((h ^ word) * K1, 31) * K2: every step is a bijection of
  // the lane and of the word, so any change confined to one 8-byte word (a flipped byte) always
  // changes the result, and the lanes keep four multiplies in flight.
  constexpr uint64_t K1 = 0x9E3779B185EBCA87ull, K2 = 0xC2B2AE3D27D4EB4Full;
  auto round = [](uint64_t h, uint64_t w) {
    h = (h ^ w) * K1;
    return ((h << 31) | (h >> 33)) * K2;
  };
  const auto* p = static_cast<const uint8_t*>(data);
  uint64_t lane[4] = {K1, K2, ~K1, ~K2};
  size_t i = 0;
  for (; i + 32 <= bytes; i += 32)
    for (int l = 0; l < 4; ++l) lane[l] = round(lane[l], load<uint64_t>(p + i + 8 * size_t(l)));
  for (size_t l = 0; i + 8 <= bytes; i += 8, ++l) lane[l] = round(lane[l], load<uint64_t>(p + i));
  uint64_t tail = 0;  // the last bytes - i < 8
  std::memcpy(&tail, p + i, bytes - i);
  uint64_t h = round(uint64_t(bytes), tail);
  for (int l = 0; l < 4; ++l) h = round(h, lane[l]);
  return h;
}

const char* safetensors_dtype_name(DType t) {
  switch (t) {
    case DType::f32: return "F32";
    case DType::bf16: return "BF16";
    case DType::f16: return "F16";
    case DType::u8: return "U8";
    case DType::i32: return "I32";
    case DType::i64: return "I64";
    case DType::f64: return "F64";
  }
  KD_FAIL("no safetensors name for dtype ", int(t));
}

DType parse_safetensors_dtype(const std::string& name, const std::string& context) {
  for (DType t : {DType::f32, DType::bf16, DType::f16, DType::u8, DType::i32, DType::i64, DType::f64})
    if (name == safetensors_dtype_name(t)) return t;
  KD_FAIL(context, ": unsupported dtype '", name, "' (kd reads F32, F64, BF16, F16, U8, I32, I64)");
}

SafetensorsFile SafetensorsFile::open(const std::string& path) {
  SafetensorsFile f;
  f.path_ = path;
  f.mapping_ = map_file(path);
  const auto* bytes = static_cast<const uint8_t*>(f.mapping_->data);
  const uint64_t file_bytes = f.mapping_->bytes;

  const uint64_t header_bytes = load<uint64_t>(bytes);
  KD_CHECK(header_bytes <= kMaxHeaderBytes, path, ": header length ", header_bytes,
           " is absurd (more than ", kMaxHeaderBytes, " bytes); not a safetensors file?");
  KD_CHECK(header_bytes <= file_bytes - 8, path, ": header length ", header_bytes, " exceeds the file (",
           file_bytes, " bytes)");
  const char* head = reinterpret_cast<const char*>(bytes + 8);
  KD_CHECK(header_bytes > 0 && head[0] == '{', path, ": header does not start with '{'");

  // Parse, noting duplicate top-level names (nlohmann would silently keep the last one).
  std::set<std::string> seen;
  std::string duplicate;
  json::parser_callback_t on_event = [&](int depth, json::parse_event_t event, json& parsed) {
    if (depth == 1 && event == json::parse_event_t::key && !seen.insert(parsed.get<std::string>()).second)
      duplicate = parsed.get<std::string>();
    return true;
  };
  json header;
  try {
    header = json::parse(head, head + header_bytes, on_event);
  } catch (const json::exception& e) {
    KD_FAIL(path, ": header is not valid JSON: ", e.what());
  }
  KD_CHECK(header.is_object(), path, ": header is not a JSON object");
  KD_CHECK(duplicate.empty(), path, ": header names '", duplicate, "' twice");

  const uint64_t data_bytes = file_bytes - 8 - header_bytes;
  f.data_ = bytes + 8 + header_bytes;
  for (const auto& [name, value] : header.items()) {
    if (name == kMetadataKey) {
      if (value.is_null()) continue;
      KD_CHECK(value.is_object(), path, ": __metadata__ is not a JSON object");
      for (const auto& [key, v] : value.items()) {
        KD_CHECK(v.is_string(), path, ": __metadata__ value for '", key, "' is ", v.dump(), ", not a string");
        f.metadata_[key] = v.get<std::string>();
      }
      continue;
    }
    f.entries_[name] = parse_entry(name, value, path + ": tensor '" + name + "'", data_bytes);
  }

  // Tensors must tile the data section exactly: no overlaps, no holes, nothing after the last one.
  std::vector<const SafetensorsEntry*> by_offset;
  for (const auto& kv : f.entries_) by_offset.push_back(&kv.second);
  std::sort(by_offset.begin(), by_offset.end(), [](const SafetensorsEntry* a, const SafetensorsEntry* b) {
    return std::make_pair(a->offset, a->offset + a->bytes) < std::make_pair(b->offset, b->offset + b->bytes);
  });
  size_t covered = 0;
  const SafetensorsEntry* previous = nullptr;
  for (const SafetensorsEntry* e : by_offset) {
    KD_CHECK(e->offset >= covered, path, ": tensor '", e->name, "' [", e->offset, ", ", e->offset + e->bytes,
             ") overlaps tensor '", previous ? previous->name : "", "' [",
             previous ? previous->offset : 0, ", ", covered, ")");
    KD_CHECK(e->offset == covered, path, ": data section has ", e->offset - covered,
             " unreferenced bytes before tensor '", e->name, "' (at offset ", covered, ")");
    covered = e->offset + e->bytes;
    previous = e;
  }
  KD_CHECK(covered == data_bytes, path, ": data section has ", data_bytes - covered,
           " bytes after the last tensor (at offset ", covered, ")");
  const auto sums = f.metadata_.find(kChecksumsKey);
  if (sums != f.metadata_.end()) verify_checksums(path, sums->second, f.data_, f.entries_);
  return f;
}

std::vector<std::string> SafetensorsFile::names() const {
  std::vector<std::string> out;
  for (const auto& kv : entries_) out.push_back(kv.first);
  return out;
}

const SafetensorsEntry& SafetensorsFile::entry(const std::string& name) const {
  auto it = entries_.find(name);
  KD_CHECK(it != entries_.end(), path_, ": file has no tensor '", name, "' (it holds ", entries_.size(),
           " tensors)");
  return it->second;
}

Tensor SafetensorsFile::tensor(const std::string& name) const {
  const SafetensorsEntry& e = entry(name);
  const uint8_t* p = data_ + e.offset;
  if (reinterpret_cast<uintptr_t>(p) % dtype_size(e.dtype) == 0)
    return Tensor::borrow(const_cast<uint8_t*>(p), e.shape, e.dtype, Device::cpu, mapping_);
  // Another writer may have packed the data without alignment: copy, so the view is aligned.
  Tensor t = Tensor::zeros_cpu(e.shape, e.dtype);
  std::memcpy(t.raw(), p, e.bytes);
  return t;
}

Tensor SafetensorsFile::tensor(const std::string& name, const Shape& expected) const {
  const SafetensorsEntry& e = entry(name);
  KD_CHECK(e.shape == expected, path_, ": tensor '", name, "' has shape ", shape_str(e.shape), ", expected ",
           shape_str(expected));
  return tensor(name);
}

namespace {
template <typename T>
void convert_stored(DType stored, const uint8_t* src, size_t n, T* dst) {
  switch (stored) {
    case DType::f32:
      for (size_t i = 0; i < n; ++i) dst[i] = T(load<float>(src + 4 * i));
      break;
    case DType::f64:
      for (size_t i = 0; i < n; ++i) dst[i] = T(load<double>(src + 8 * i));
      break;
    case DType::bf16:
      for (size_t i = 0; i < n; ++i) dst[i] = T(bf16_to_float(bf16{load<uint16_t>(src + 2 * i)}));
      break;
    case DType::f16:
      for (size_t i = 0; i < n; ++i) dst[i] = T(f16_to_float(load<uint16_t>(src + 2 * i)));
      break;
    case DType::u8:
      for (size_t i = 0; i < n; ++i) dst[i] = T(src[i]);
      break;
    case DType::i32:
      for (size_t i = 0; i < n; ++i) dst[i] = T(load<int32_t>(src + 4 * i));
      break;
    case DType::i64:
      for (size_t i = 0; i < n; ++i) dst[i] = T(load<int64_t>(src + 8 * i));
      break;
  }
}
}  // namespace

Tensor SafetensorsFile::tensor_as(const std::string& name, const Shape& expected, DType to) const {
  const SafetensorsEntry& e = entry(name);
  KD_CHECK(e.shape == expected, path_, ": tensor '", name, "' has shape ", shape_str(e.shape), ", expected ",
           shape_str(expected));
  KD_CHECK(to == DType::f32 || to == DType::f64, "tensor_as converts to f32 or f64, not ", dtype_name(to));
  Tensor out = Tensor::zeros_cpu(e.shape, to);
  convert_to_float(e.dtype, data_ + e.offset, size_t(shape_numel(e.shape)), to, out.raw());
  return out;
}

void convert_to_float(DType stored, const uint8_t* src, size_t n, DType to, void* dst) {
  KD_CHECK(to == DType::f32 || to == DType::f64, "convert_to_float converts to f32 or f64, not ", dtype_name(to));
  if (to == DType::f32)
    convert_stored(stored, src, n, static_cast<float*>(dst));
  else
    convert_stored(stored, src, n, static_cast<double*>(dst));
}

Tensor SafetensorsFile::tensor_f32(const std::string& name, const Shape& expected) const {
  return tensor_as(name, expected, DType::f32);
}

// ---- writing ----------------------------------------------------------------------------------

void SafetensorsWriter::add(const std::string& name, const Tensor& t, Context* ctx) {
  KD_CHECK(name != kMetadataKey, "safetensors: '", kMetadataKey, "' is reserved, not a tensor name");
  KD_CHECK(t.defined(), "safetensors: tensor '", name, "' is undefined");
  for (const auto& kv : tensors_) KD_CHECK(kv.first != name, "safetensors: tensor '", name, "' added twice");
  KD_CHECK(t.device() == Device::cpu || ctx, "safetensors: tensor '", name, "' is ", t.describe(),
           ": adding it needs its context");
  tensors_.emplace_back(name, t.to(Device::cpu, ctx));
}

void SafetensorsWriter::write(const std::string& path) const {
  // Data order: larger dtypes first, then by name, so that every tensor is aligned for its dtype
  // in the file and in a mapping of it (the reference implementation orders them the same way).
  std::vector<const std::pair<std::string, Tensor>*> order;
  for (const auto& kv : tensors_) order.push_back(&kv);
  std::sort(order.begin(), order.end(), [](const auto* a, const auto* b) {
    const size_t sa = dtype_size(a->second.dtype()), sb = dtype_size(b->second.dtype());
    return sa != sb ? sa > sb : a->first < b->first;
  });
  json header = json::object();  // an ordered map: the header lists tensors sorted by name
  size_t offset = 0;
  for (const auto* kv : order) {
    const Tensor& t = kv->second;
    header[kv->first] = {{"dtype", safetensors_dtype_name(t.dtype())},
                         {"shape", t.shape()},
                         {"data_offsets", {offset, offset + t.nbytes()}}};
    offset += t.nbytes();
  }
  json checksums = json::object();
  for (const auto* kv : order)
    checksums[kv->first] = hex64(content_checksum64(kv->second.raw(), kv->second.nbytes()));
  if (!metadata_.empty()) header[kMetadataKey] = metadata_;
  std::string head;
  try {
    if (!order.empty()) header[kMetadataKey][kChecksumsKey] = checksums.dump();
    head = header.dump();
  } catch (const json::exception& e) {
    KD_FAIL("cannot write ", path, ": a tensor name or metadata string is not valid UTF-8 (", e.what(), ")");
  }
  head.append((8 - head.size() % 8) % 8, ' ');
  const uint64_t head_bytes = head.size();

  AtomicFile file(path);
  file.write(&head_bytes, 8);
  file.write(head.data(), head.size());
  for (const auto* kv : order) file.write(kv->second.raw(), kv->second.nbytes());
  file.commit();
}

}  // namespace kd
