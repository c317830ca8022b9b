#include "models/weights.h"

#include <algorithm>
#include <cctype>

#include "engine/safetensors.h"
#include "models/bit_npz.h"
#include "models/resnet_v2.h"

namespace kd {

bool is_npz_path(const std::string& path) {
  if (path.size() < 4) return false;
  std::string ext = path.substr(path.size() - 4);
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return char(std::tolower(c)); });
  return ext == ".npz";
}

std::unique_ptr<TensorSource> open_weights(const std::string& path, const std::string& arch) {
  if (!is_npz_path(path)) return std::make_unique<SafetensorsFile>(SafetensorsFile::open(path));
  KD_CHECK(!arch.empty(), path, ": a .npz holds no architecture; name it (e.g. teacher.arch = resnetv2_152x2_bit)");
  ResNetV2Config config;
  KD_CHECK(parse_resnetv2_arch(arch, &config), path, ": .npz weights are read as BiT's ResNetV2 release, but arch '",
           arch, "' is not a ResNetV2");
  return BitNpzSource::open(path);
}

}  // namespace kd
