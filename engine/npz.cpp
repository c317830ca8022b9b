#include "engine/npz.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>

#include "engine/npy.h"
#include "engine/safetensors.h"

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "ZIP and .npy ('<' dtypes) store little-endian bytes");

namespace kd {

namespace {

// ZIP record signatures and fixed sizes (APPNOTE 4.3).
constexpr uint32_t kLocalHeaderSig = 0x04034b50, kCentralSig = 0x02014b50, kEndSig = 0x06054b50;
constexpr uint32_t kZip64EndSig = 0x06064b50, kZip64LocatorSig = 0x07064b50;
constexpr uint64_t kLocalHeaderBytes = 30, kCentralBytes = 46, kEndBytes = 22, kZip64LocatorBytes = 20,
                   kZip64EndBytes = 56;
constexpr uint32_t kZip64Marker = 0xffffffffu;
constexpr uint16_t kZip64ExtraId = 0x0001;
constexpr uint16_t kMethodStored = 0, kMethodDeflate = 8;
constexpr uint16_t kFlagEncrypted = 0x1, kFlagDataDescriptor = 0x8;
// Deflate's best case: a 258-byte match per 2 bits of a fixed-Huffman block, about 1032:1.
constexpr uint64_t kMaxDeflateRatio = 1032;

template <typename T>
T load(const uint8_t* p) {
  T v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

std::string hex32(uint32_t v) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "0x%08x", v);
  return buf;
}

std::string errno_text(int err) { return std::string(std::strerror(err)) + " (errno " + std::to_string(err) + ")"; }

std::shared_ptr<Storage> map_file(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  KD_CHECK(fd >= 0, path, ": cannot open: ", errno_text(errno));
  struct stat st {};
  const bool stat_ok = fstat(fd, &st) == 0;
  const int stat_err = errno;
  if (!stat_ok || !S_ISREG(st.st_mode) || st.st_size == 0) {
    ::close(fd);
    KD_CHECK(stat_ok, path, ": cannot stat: ", errno_text(stat_err));
    KD_FAIL(path, S_ISREG(st.st_mode) ? ": file is empty, not a .npz archive" : ": not a regular file");
  }
  const size_t size = size_t(st.st_size);
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

// [begin, begin + n) lies inside a file of `size` bytes (no overflow).
bool fits(uint64_t begin, uint64_t n, uint64_t size) { return begin <= size && n <= size - begin; }

// The ZIP64 extended-information extra field replaces each 32-bit field that holds 0xFFFFFFFF,
// in this order: uncompressed size, compressed size, local header offset (APPNOTE 4.5.3).
struct Zip64Fields {
  uint64_t* member_bytes;
  uint64_t* stored_bytes;
  uint64_t* header_offset;  // null in a local header
};

void read_zip64_extra(const uint8_t* extra, uint64_t n, Zip64Fields f, const std::string& where) {
  uint64_t* wanted[3] = {f.member_bytes, f.stored_bytes, f.header_offset};
  uint64_t pos = 0;
  while (pos + 4 <= n) {
    const uint16_t id = load<uint16_t>(extra + pos), len = load<uint16_t>(extra + pos + 2);
    KD_CHECK(pos + 4 + len <= n, where, ": extra field runs past its record");
    if (id == kZip64ExtraId) {
      uint64_t at = pos + 4;
      for (uint64_t* field : wanted) {
        if (!field || *field != kZip64Marker) continue;
        KD_CHECK(at + 8 <= pos + 4 + len, where, ": ZIP64 extra field is too short for the sizes it replaces");
        *field = load<uint64_t>(extra + at);
        at += 8;
      }
      return;
    }
    pos += 4 + len;
  }
  for (uint64_t* field : wanted)
    KD_CHECK(!field || *field != kZip64Marker, where,
             ": a size or offset is 0xFFFFFFFF but there is no ZIP64 extra field");
}

// With no end record the file is not a ZIP archive or lost its end: walk the local headers from
// the start to say which member the file breaks off in.
std::string describe_missing_end(const uint8_t* bytes, uint64_t size) {
  if (size < 4 || load<uint32_t>(bytes) != kLocalHeaderSig)
    return "not a ZIP archive (a .npz is one): no ZIP header at the start and no end-of-central-directory record";
  uint64_t pos = 0;
  std::string last;
  while (fits(pos, 4, size) && load<uint32_t>(bytes + pos) == kLocalHeaderSig) {
    if (!fits(pos, kLocalHeaderBytes, size)) break;
    const uint8_t* h = bytes + pos;
    const uint16_t flags = load<uint16_t>(h + 6), name_len = load<uint16_t>(h + 26), extra_len = load<uint16_t>(h + 28);
    if (!fits(pos + kLocalHeaderBytes, uint64_t(name_len) + extra_len, size)) break;
    const std::string name(reinterpret_cast<const char*>(h + kLocalHeaderBytes), name_len);
    uint64_t stored = load<uint32_t>(h + 18), member = load<uint32_t>(h + 22);
    try {
      read_zip64_extra(h + kLocalHeaderBytes + name_len, extra_len, {&member, &stored, nullptr}, "");
    } catch (const Error&) {
      return "truncated or corrupt: the file ends in or after member '" + name +
             "' (no end-of-central-directory record)";
    }
    if (flags & kFlagDataDescriptor && stored == 0)
      return "truncated: no end-of-central-directory record (the file breaks off at or after member '" + name + "')";
    const uint64_t data = pos + kLocalHeaderBytes + name_len + extra_len;
    if (!fits(data, stored, size))
      return "truncated: member '" + name + "' needs bytes up to " + std::to_string(data + stored) +
             ", the file ends at " + std::to_string(size);
    last = name;
    pos = data + stored + ((flags & kFlagDataDescriptor) ? 16 : 0);
  }
  if (!last.empty() && fits(pos, 4, size) && load<uint32_t>(bytes + pos) != kCentralSig)
    return "corrupt: no ZIP record after member '" + last + "' and no end-of-central-directory record";
  return last.empty() ? "truncated: the file breaks off in the first member's header"
                      : "truncated: the file breaks off after member '" + last +
                            "' (in the central directory; no end-of-central-directory record)";
}

struct Directory {
  uint64_t entries = 0, offset = 0, bytes = 0;
};

// Finds the end-of-central-directory record (22 bytes plus a comment of up to 65535 bytes, so
// searched for backwards) and, when present, the ZIP64 end record it points to.
Directory read_end_records(const std::string& path, const uint8_t* bytes, uint64_t size) {
  uint64_t end = UINT64_MAX;
  if (size >= kEndBytes) {
    const uint64_t lowest = size - kEndBytes > 65535 ? size - kEndBytes - 65535 : 0;
    for (uint64_t pos = size - kEndBytes + 1; pos-- > lowest;)
      if (load<uint32_t>(bytes + pos) == kEndSig && pos + kEndBytes + load<uint16_t>(bytes + pos + 20) == size) {
        end = pos;
        break;
      }
  }
  KD_CHECK(end != UINT64_MAX, path, ": ", describe_missing_end(bytes, size));
  const uint8_t* e = bytes + end;
  KD_CHECK(load<uint16_t>(e + 4) == 0 && load<uint16_t>(e + 6) == 0, path,
           ": a split (multi-disk) ZIP archive; kd reads single-file archives");
  Directory d{load<uint16_t>(e + 10), load<uint32_t>(e + 16), load<uint32_t>(e + 12)};
  if (end >= kZip64LocatorBytes && load<uint32_t>(e - kZip64LocatorBytes) == kZip64LocatorSig) {
    const uint64_t record = load<uint64_t>(e - kZip64LocatorBytes + 8);
    KD_CHECK(fits(record, kZip64EndBytes, end) && load<uint32_t>(bytes + record) == kZip64EndSig, path,
             ": the ZIP64 end-of-central-directory locator points to offset ", record,
             ", where no ZIP64 end record is");
    const uint8_t* z = bytes + record;
    KD_CHECK(load<uint32_t>(z + 16) == 0 && load<uint32_t>(z + 20) == 0, path, ": a split (multi-disk) ZIP archive");
    d = Directory{load<uint64_t>(z + 32), load<uint64_t>(z + 48), load<uint64_t>(z + 40)};
  }
  KD_CHECK(fits(d.offset, d.bytes, size), path, ": the central directory [", d.offset, ", +", d.bytes,
           ") lies beyond the end of the file (", size, " bytes); truncated?");
  return d;
}

// ---- inflating -----------------------------------------------------------------------------------

// Inflates a raw deflate stream (ZIP method 8) into successive output buffers.
class Inflater {
 public:
  Inflater(const uint8_t* in, uint64_t in_bytes, std::string where)
      : in_(in), left_(in_bytes), where_(std::move(where)) {
    KD_CHECK(inflateInit2(&z_, -MAX_WBITS) == Z_OK, where_, ": zlib inflateInit2 failed");
  }
  ~Inflater() { inflateEnd(&z_); }
  Inflater(const Inflater&) = delete;
  Inflater& operator=(const Inflater&) = delete;

  // Fills out[0, n) and returns how many bytes it wrote (fewer only at the end of the stream).
  uint64_t read(uint8_t* out, uint64_t n) {
    uint64_t written = 0;
    while (written < n && !ended_) {
      if (z_.avail_in == 0 && left_ > 0) {
        const uInt chunk = uInt(std::min<uint64_t>(left_, 1u << 30));
        z_.next_in = const_cast<Bytef*>(in_);
        z_.avail_in = chunk;
        in_ += chunk;
        left_ -= chunk;
      }
      const uInt room = uInt(std::min<uint64_t>(n - written, 1u << 30));
      z_.next_out = out + written;
      z_.avail_out = room;
      const int rc = inflate(&z_, Z_NO_FLUSH);
      written += room - z_.avail_out;
      if (rc == Z_STREAM_END) {
        ended_ = true;
      } else if (rc == Z_BUF_ERROR && z_.avail_in == 0 && left_ == 0) {
        KD_FAIL(where_, ": compressed data ends before the deflate stream does (truncated or corrupt)");
      } else if (rc != Z_OK && rc != Z_BUF_ERROR) {
        KD_FAIL(where_, ": corrupt deflate data (zlib: ", z_.msg ? z_.msg : zError(rc), ")");
      }
    }
    return written;
  }
  bool ended() const { return ended_; }

 private:
  z_stream z_{};
  const uint8_t* in_;
  uint64_t left_;
  std::string where_;
  bool ended_ = false;
};

std::string member_where(const std::string& path, const std::string& zip_name) {
  return path + ": member '" + zip_name + "'";
}

// The first n uncompressed bytes of a member (n <= member_bytes).
std::vector<uint8_t> member_prefix(const uint8_t* stored, const NpzMember& m, uint64_t n, const std::string& where) {
  std::vector<uint8_t> out(size_t(std::min(n, m.member_bytes)));
  if (out.empty()) return out;  // memcpy and zlib want real pointers, even for no bytes
  if (!m.deflated) {
    std::memcpy(out.data(), stored, out.size());
  } else {
    Inflater z(stored, m.stored_bytes, where);
    KD_CHECK(z.read(out.data(), out.size()) == out.size(), where, ": deflate stream holds fewer than ", out.size(),
             " bytes, but the directory says ", m.member_bytes);
  }
  return out;
}

}  // namespace

NpzFile NpzFile::open(const std::string& path) {
  NpzFile f;
  f.path_ = path;
  f.mapping_ = map_file(path);
  const auto* bytes = static_cast<const uint8_t*>(f.mapping_->data);
  const uint64_t size = f.mapping_->bytes;
  const Directory dir = read_end_records(path, bytes, size);

  uint64_t pos = dir.offset;
  const uint64_t dir_end = dir.offset + dir.bytes;
  for (uint64_t k = 0; k < dir.entries; ++k) {
    KD_CHECK(fits(pos, kCentralBytes, dir_end) && load<uint32_t>(bytes + pos) == kCentralSig, path,
             ": central directory entry ", k, " of ", dir.entries, " is missing or corrupt (at offset ", pos, ")");
    const uint8_t* c = bytes + pos;
    const uint16_t flags = load<uint16_t>(c + 8), method = load<uint16_t>(c + 10);
    const uint16_t name_len = load<uint16_t>(c + 28), extra_len = load<uint16_t>(c + 30),
                   comment_len = load<uint16_t>(c + 32);
    KD_CHECK(fits(pos + kCentralBytes, uint64_t(name_len) + extra_len + comment_len, dir_end), path,
             ": central directory entry ", k, " runs past the directory");
    const std::string zip_name(reinterpret_cast<const char*>(c + kCentralBytes), name_len);
    const std::string where = member_where(path, zip_name);
    NpzMember m;
    m.crc32 = load<uint32_t>(c + 16);
    m.stored_bytes = load<uint32_t>(c + 20);
    m.member_bytes = load<uint32_t>(c + 24);
    uint64_t local = load<uint32_t>(c + 42);
    read_zip64_extra(c + kCentralBytes + name_len, extra_len, {&m.member_bytes, &m.stored_bytes, &local}, where);
    pos += kCentralBytes + name_len + extra_len + comment_len;

    KD_CHECK(!(flags & kFlagEncrypted), where, ": encrypted members are not supported");
    KD_CHECK(method == kMethodStored || method == kMethodDeflate, where, ": compression method ", method,
             " is not supported (kd reads stored (0) and deflate (8) members, as NumPy writes)");
    m.deflated = method == kMethodDeflate;
    KD_CHECK(m.deflated || m.stored_bytes == m.member_bytes, where, ": stored member has compressed size ",
             m.stored_bytes, " but uncompressed size ", m.member_bytes);
    // Checked before anything is allocated for the member: a directory could otherwise make a
    // tiny file ask for terabytes.
    KD_CHECK(!m.deflated || m.member_bytes / kMaxDeflateRatio <= m.stored_bytes, where, ": the directory says ",
             m.stored_bytes, " compressed bytes hold ", m.member_bytes, ", more than deflate's ", kMaxDeflateRatio,
             ":1 can (corrupt)");
    constexpr const char* kSuffix = ".npy";
    KD_CHECK(zip_name.size() > 4 && zip_name.compare(zip_name.size() - 4, 4, kSuffix) == 0, where,
             ": not a .npy array (every member of a .npz is one)");
    m.name = zip_name.substr(0, zip_name.size() - 4);
    KD_CHECK(!f.members_.count(m.name), where, ": the archive holds two members of this name");

    // The local header repeats the name; its extra field may differ from the central one.
    KD_CHECK(fits(local, kLocalHeaderBytes, size) && load<uint32_t>(bytes + local) == kLocalHeaderSig, where,
             ": no local header at offset ", local, " (truncated or corrupt)");
    const uint8_t* h = bytes + local;
    const uint16_t local_name_len = load<uint16_t>(h + 26), local_extra_len = load<uint16_t>(h + 28);
    KD_CHECK(fits(local + kLocalHeaderBytes, uint64_t(local_name_len) + local_extra_len, size), where,
             ": local header runs past the end of the file (truncated?)");
    KD_CHECK(std::string(reinterpret_cast<const char*>(h + kLocalHeaderBytes), local_name_len) == zip_name &&
                 load<uint16_t>(h + 8) == method,
             where, ": local header at offset ", local, " disagrees with the central directory (corrupt)");
    m.offset = local + kLocalHeaderBytes + local_name_len + local_extra_len;
    KD_CHECK(fits(m.offset, m.stored_bytes, size), where, ": data [", m.offset, ", ", m.offset + m.stored_bytes,
             ") lies beyond the end of the file (", size, " bytes); truncated?");

    // The .npy header: 10 or 12 bytes tell its size.
    std::vector<uint8_t> prefix = member_prefix(bytes + m.offset, m, 12, where);
    const uint64_t header_size = npy_header_size(prefix.data(), prefix.size(), where);
    KD_CHECK(header_size <= m.member_bytes, where, ": .npy header of ", header_size,
             " bytes is longer than the member (", m.member_bytes, " bytes)");
    if (prefix.size() < header_size) prefix = member_prefix(bytes + m.offset, m, header_size, where);
    const NpyHeader npy = parse_npy_header(prefix.data(), prefix.size(), where);
    m.descr = npy.descr, m.dtype = npy.dtype, m.shape = npy.shape, m.fortran_order = npy.fortran_order;
    m.header_bytes = npy.bytes;
    KD_CHECK(m.data_bytes() == npy.data_bytes, where, ": holds ", m.data_bytes(), " bytes of array data, but '",
             m.descr, "' ", shape_str(m.shape), " needs ", npy.data_bytes);
    f.members_[m.name] = std::move(m);
  }
  KD_CHECK(pos == dir_end, path, ": central directory holds ", dir_end - pos, " bytes after its ", dir.entries,
           " entries (corrupt)");
  return f;
}

std::vector<std::string> NpzFile::names() const {
  std::vector<std::string> out;
  for (const auto& kv : members_) out.push_back(kv.first);
  return out;
}

const NpzMember& NpzFile::member(const std::string& name) const {
  auto it = members_.find(name);
  KD_CHECK(it != members_.end(), path_, ": archive has no array '", name, "' (it holds ", members_.size(), " arrays)");
  return it->second;
}

void NpzFile::read_data(const NpzMember& m, uint8_t* dst) const {
  const std::string where = member_where(path_, m.name + ".npy");
  const uint8_t* stored = static_cast<const uint8_t*>(mapping_->data) + m.offset;
  uLong crc = crc32(0L, Z_NULL, 0);
  auto add_crc = [&crc](const uint8_t* p, uint64_t n) {
    for (uint64_t done = 0; done < n;) {
      const uInt chunk = uInt(std::min<uint64_t>(n - done, 1u << 30));
      crc = crc32(crc, p + done, chunk);
      done += chunk;
    }
  };
  if (!m.deflated) {
    add_crc(stored, m.member_bytes);
    std::memcpy(dst, stored + m.header_bytes, m.data_bytes());
  } else {
    Inflater z(stored, m.stored_bytes, where);
    std::vector<uint8_t> header(m.header_bytes);
    const uint64_t got = z.read(header.data(), header.size());
    const uint64_t data = got == header.size() ? z.read(dst, m.data_bytes()) : 0;
    uint8_t extra = 0;
    KD_CHECK(got + data == m.member_bytes && z.read(&extra, 1) == 0 && z.ended(), where,
             ": deflate stream does not hold the ", m.member_bytes, " bytes the directory says (corrupt)");
    add_crc(header.data(), header.size());
    add_crc(dst, m.data_bytes());
  }
  KD_CHECK(uint32_t(crc) == m.crc32, where, ": CRC-32 mismatch (directory says ", hex32(m.crc32), ", the data has ",
           hex32(uint32_t(crc)), "): the file is corrupt");
}

Tensor NpzFile::tensor(const std::string& name) const {
  const NpzMember& m = member(name);
  Tensor stored = Tensor::zeros_cpu(m.shape, m.dtype);
  read_data(m, static_cast<uint8_t*>(stored.raw()));
  if (!m.fortran_order || m.shape.size() < 2) return stored;
  // Fortran order: the first index varies fastest. Walk the C-order output with an odometer,
  // keeping the Fortran offset of the current index.
  Tensor out = Tensor::zeros_cpu(m.shape, m.dtype);
  const size_t rank = m.shape.size(), elem = dtype_size(m.dtype);
  std::vector<int64_t> stride(rank, 1), index(rank, 0);
  for (size_t d = 1; d < rank; ++d) stride[d] = stride[d - 1] * m.shape[d - 1];
  const auto* src = static_cast<const uint8_t*>(stored.raw());
  auto* dst = static_cast<uint8_t*>(out.raw());
  int64_t from = 0;
  for (int64_t i = 0, n = shape_numel(m.shape); i < n; ++i) {
    std::memcpy(dst + size_t(i) * elem, src + size_t(from) * elem, elem);
    for (size_t d = rank; d-- > 0;) {
      from += stride[d];
      if (++index[d] < m.shape[d]) break;
      from -= stride[d] * m.shape[d];
      index[d] = 0;
    }
  }
  return out;
}

Tensor NpzFile::tensor_as(const std::string& name, const Shape& expected, DType to) const {
  const NpzMember& m = member(name);
  KD_CHECK(m.shape == expected, path_, ": array '", name, "' has shape ", shape_str(m.shape), ", expected ",
           shape_str(expected));
  KD_CHECK(to == DType::f32 || to == DType::f64, "tensor_as converts to f32 or f64, not ", dtype_name(to));
  Tensor stored = tensor(name);
  if (stored.dtype() == to) return stored;
  Tensor out = Tensor::zeros_cpu(m.shape, to);
  convert_to_float(m.dtype, static_cast<const uint8_t*>(stored.raw()), size_t(stored.numel()), to, out.raw());
  return out;
}

}  // namespace kd
