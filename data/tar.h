// POSIX ustar archives, the container of packed shards (data/shard_pack.h). Only what shards
// need: regular-file members written back to back, each a 512-byte header followed by its data
// padded with zeros to a multiple of 512 bytes, and two zero blocks at the end. Any tar reader
// (`tar tf`, Python's tarfile, WebDataset) lists them.
//
// Header layout (offsets in bytes, numbers as zero-padded octal text ending in NUL):
//   0 name[100]  100 mode[8]  108 uid[8]  116 gid[8]  124 size[12]  136 mtime[12]
//   148 checksum[8] (sum of all 512 header bytes with this field read as spaces)
//   156 typeflag ('0': regular file)  257 magic "ustar\0"  263 version "00"  345 prefix[155]
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>

namespace kd {

constexpr size_t kTarBlock = 512;

// Bytes of the padded data of a member of `size` bytes.
inline uint64_t tar_padded(uint64_t size) { return (size + kTarBlock - 1) / kTarBlock * kTarBlock; }

// Writes one member (header, data, padding) to `out`; returns the archive offset of its data,
// given `offset`, the archive offset the header is written at. Throws kd::Error naming `archive`
// when writing fails or the name does not fit (at most 100 bytes, no prefix field is used).
uint64_t write_tar_member(std::FILE* out, const std::string& archive, uint64_t offset, const std::string& name,
                          const uint8_t* data, size_t size);
// The two zero blocks that end an archive.
void write_tar_end(std::FILE* out, const std::string& archive);

// What a header says, for checking a member read back by offset. `valid` is false when the
// checksum or the magic is wrong (then nothing else is meaningful).
struct TarHeader {
  bool valid = false;
  std::string name;
  uint64_t size = 0;
};
TarHeader read_tar_header(const uint8_t* block);  // block: kTarBlock bytes

}  // namespace kd
