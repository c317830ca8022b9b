#include "data/tar.h"

#include <cerrno>
#include <cstring>

#include "kernels/check.h"

namespace kd {

namespace {

// `value` as zero-padded octal in field[0 .. width-2], NUL at field[width-1].
void put_octal(uint8_t* field, size_t width, uint64_t value) {
  for (size_t i = width - 1; i-- > 0; value >>= 3) field[i] = uint8_t('0' + (value & 7));
  field[width - 1] = 0;
}

uint64_t get_octal(const uint8_t* field, size_t width) {
  uint64_t v = 0;
  size_t i = 0;
  while (i < width && field[i] == ' ') ++i;
  for (; i < width && field[i] >= '0' && field[i] <= '7'; ++i) v = v * 8 + uint64_t(field[i] - '0');
  return v;
}

// Sum of the header bytes with the checksum field (148..155) counted as eight spaces.
uint64_t header_checksum(const uint8_t* block) {
  uint64_t sum = 0;
  for (size_t i = 0; i < kTarBlock; ++i) sum += (i >= 148 && i < 156) ? uint64_t(' ') : block[i];
  return sum;
}

void write_all(std::FILE* out, const std::string& archive, const void* data, size_t size) {
  if (size > 0 && std::fwrite(data, 1, size, out) != size)
    KD_FAIL("cannot write ", archive, ": ", std::strerror(errno));
}

}  // namespace

uint64_t write_tar_member(std::FILE* out, const std::string& archive, uint64_t offset, const std::string& name,
                          const uint8_t* data, size_t size) {
  KD_CHECK(!name.empty() && name.size() <= 100, "tar member name '", name, "' of ", archive,
           " must have 1 to 100 bytes");
  KD_CHECK(uint64_t(size) < (uint64_t(1) << 33), "tar member ", name, " of ", archive, " is larger than 8 GiB");
  uint8_t header[kTarBlock] = {};
  std::memcpy(header, name.data(), name.size());
  put_octal(header + 100, 8, 0644);
  put_octal(header + 108, 8, 0);
  put_octal(header + 116, 8, 0);
  put_octal(header + 124, 12, size);
  put_octal(header + 136, 12, 0);  // mtime 0: the same input packs to the same bytes
  header[156] = '0';
  std::memcpy(header + 257, "ustar", 6);
  std::memcpy(header + 263, "00", 2);
  // The checksum field: six octal digits, NUL, space (what GNU tar writes).
  put_octal(header + 148, 7, header_checksum(header));
  header[155] = ' ';
  write_all(out, archive, header, kTarBlock);
  write_all(out, archive, data, size);
  static const uint8_t zeros[kTarBlock] = {};
  write_all(out, archive, zeros, size_t(tar_padded(size) - size));
  return offset + kTarBlock;
}

void write_tar_end(std::FILE* out, const std::string& archive) {
  static const uint8_t zeros[2 * kTarBlock] = {};
  write_all(out, archive, zeros, sizeof(zeros));
}

TarHeader read_tar_header(const uint8_t* block) {
  TarHeader h;
  if (std::memcmp(block + 257, "ustar", 5) != 0) return h;
  if (get_octal(block + 148, 8) != header_checksum(block)) return h;
  h.name.assign(reinterpret_cast<const char*>(block), strnlen(reinterpret_cast<const char*>(block), 100));
  h.size = get_octal(block + 124, 12);
  h.valid = true;
  return h;
}

}  // namespace kd
