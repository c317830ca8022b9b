// Test data written on the fly: a temporary folder per test, IDX files (raw and gzipped) and
// images through stb_image_write (tests/support/stb_image_write.cpp compiles it).
#pragma once
#include <unistd.h>
#include <zlib.h>

#include <atomic>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <vector>

#include <stb/stb_image_write.h>

#include "data/image.h"

namespace kd::test {

namespace fs = std::filesystem;

// A fresh folder under the system temp folder, removed with everything in it at the end.
class TempDir {
 public:
  TempDir() {
    static std::atomic<int> counter{0};
    std::random_device entropy;
    path_ = fs::temp_directory_path() / ("kd_data_test_" + std::to_string(getpid()) + "_" +
                                         std::to_string(counter++) + "_" + std::to_string(entropy()));
    fs::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  std::string str() const { return path_.string(); }
  // The path of `relative` inside the folder; its parent folders are created.
  std::string file(const std::string& relative) const {
    const fs::path p = path_ / relative;
    fs::create_directories(p.parent_path());
    return p.string();
  }

 private:
  fs::path path_;
};

inline void write_bytes(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(bytes.data()), std::streamsize(bytes.size()));
}

inline void write_text(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
}

// The whole file as bytes ("" when it cannot be opened).
inline std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

inline void write_gzip(const std::string& path, const std::vector<uint8_t>& bytes) {
  gzFile f = gzopen(path.c_str(), "wb");
  gzwrite(f, bytes.data(), unsigned(bytes.size()));
  gzclose(f);
}

// An IDX file: two zero bytes, the type, the number of dimensions, big-endian sizes, payload.
inline std::vector<uint8_t> idx_bytes(const std::vector<uint32_t>& dims, const std::vector<uint8_t>& payload,
                                      uint8_t type = 0x08) {
  std::vector<uint8_t> b = {0, 0, type, uint8_t(dims.size())};
  for (uint32_t d : dims) {
    b.push_back(uint8_t(d >> 24));
    b.push_back(uint8_t(d >> 16));
    b.push_back(uint8_t(d >> 8));
    b.push_back(uint8_t(d));
  }
  b.insert(b.end(), payload.begin(), payload.end());
  return b;
}

inline std::vector<uint8_t> random_bytes(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<uint8_t> v(n);
  for (uint8_t& x : v) x = uint8_t(rng());
  return v;
}

// A smooth test pattern with `channels` channels: every pixel different, every channel different.
inline std::vector<uint8_t> gradient(int width, int height, int channels) {
  std::vector<uint8_t> v(size_t(width) * height * channels);
  for (int y = 0; y < height; ++y)
    for (int x = 0; x < width; ++x)
      for (int c = 0; c < channels; ++c)
        v[(size_t(y) * width + x) * channels + c] = uint8_t(x * 17 + y * 31 + c * 70);
  return v;
}

inline void write_png(const std::string& path, int w, int h, int c, const std::vector<uint8_t>& px) {
  stbi_write_png(path.c_str(), w, h, c, px.data(), w * c);
}
inline void write_bmp(const std::string& path, int w, int h, int c, const std::vector<uint8_t>& px) {
  stbi_write_bmp(path.c_str(), w, h, c, px.data());
}
inline void write_jpg(const std::string& path, int w, int h, int c, const std::vector<uint8_t>& px) {
  stbi_write_jpg(path.c_str(), w, h, c, px.data(), 100);
}

// A small RGB PNG whose every pixel is `value`, so a test can tell images apart after loading.
inline void write_flat_png(const std::string& path, int w, int h, uint8_t value) {
  write_png(path, w, h, 3, std::vector<uint8_t>(size_t(w) * h * 3, value));
}

}  // namespace kd::test
