#include "models/bit_npz.h"

#include <cstdio>
#include <cstring>
#include <regex>

namespace kd {

namespace {

constexpr const char* kRootKernel = "root_block/standardized_conv2d/kernel";

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// HWIO [kh, kw, c_in, c_out] -> OIHW [c_out, c_in, kh, kw].
Shape oihw_of(const Shape& hwio) { return {hwio[3], hwio[2], hwio[0], hwio[1]}; }

template <typename T>
void hwio_to_oihw(const T* src, const Shape& hwio, T* dst) {
  const int64_t kh = hwio[0], kw = hwio[1], ci = hwio[2], co = hwio[3];
  for (int64_t h = 0; h < kh; ++h)
    for (int64_t w = 0; w < kw; ++w)
      for (int64_t i = 0; i < ci; ++i)
        for (int64_t o = 0; o < co; ++o) dst[((o * ci + i) * kh + h) * kw + w] = src[((h * kw + w) * ci + i) * co + o];
}

// [C], [1, 1, 1, C], [C, 1]...: at most one dimension that is not 1.
bool is_vector_like(const Shape& s) {
  int non_unit = 0;
  for (int64_t d : s) non_unit += d != 1;
  return non_unit <= 1;
}

}  // namespace

std::string bit_npz_to_timm_name(const std::string& array, const std::string& prefix) {
  if (array.compare(0, prefix.size(), prefix) != 0) return "";
  const std::string rest = array.substr(prefix.size());
  if (rest == kRootKernel) return "stem.conv.weight";
  if (rest == "group_norm/gamma") return "norm.weight";
  if (rest == "group_norm/beta") return "norm.bias";
  if (rest == "head/conv2d/kernel") return "head.fc.weight";
  if (rest == "head/conv2d/bias") return "head.fc.bias";
  static const std::regex unit(
      R"(block(\d+)/unit(\d+)/([abc])/(standardized_conv2d/kernel|group_norm/gamma|group_norm/beta|proj/standardized_conv2d/kernel))");
  std::smatch m;
  if (!std::regex_match(rest, m, unit)) return "";
  const std::string block = m[1], unit_digits = m[2], part = m[3], what = m[4];
  if (block.size() > 6 || unit_digits.size() > 6) return "";
  const int stage = std::stoi(block), index = std::stoi(unit_digits);
  char canonical[32];
  std::snprintf(canonical, sizeof canonical, "block%d/unit%02d", stage, index);
  if (stage < 1 || index < 1 || rest.compare(0, std::strlen(canonical), canonical) != 0 ||
      rest[std::strlen(canonical)] != '/')
    return "";  // timm looks the names up as block{i+1}/unit{j+1:02d}: "unit1" or "block01" is not read
  const std::string base = "stages." + std::to_string(stage - 1) + ".blocks." + std::to_string(index - 1) + ".";
  const char n = char('1' + (part[0] - 'a'));  // a, b, c -> 1, 2, 3
  if (what == "standardized_conv2d/kernel") return base + "conv" + n + ".weight";
  if (what == "group_norm/gamma") return base + "norm" + n + ".weight";
  if (what == "group_norm/beta") return base + "norm" + n + ".bias";
  return part == "a" ? base + "downsample.conv.weight" : "";  // proj hangs off unit a only
}

BitNpzSource::BitNpzSource(NpzFile npz) : npz_(std::move(npz)) {
  const std::vector<std::string> all = npz_.names();
  std::vector<std::string> roots;
  for (const std::string& name : all)
    if (ends_with(name, kRootKernel)) roots.push_back(name);
  if (roots.size() != 1) {
    std::string some;
    for (size_t i = 0; i < all.size() && i < 3; ++i) some += (i ? ", " : "") + all[i];
    KD_CHECK(!roots.empty(), npz_.path(), ": no '", kRootKernel, "' array: not a BiT ResNetV2 .npz (it holds ",
             all.size(), " arrays", all.empty() ? "" : ", e.g. " + some, ")");
    KD_FAIL(npz_.path(), ": ", roots.size(), " root blocks ('", roots[0], "', '", roots[1],
            "'): more than one BiT network in one archive");
  }
  prefix_ = roots[0].substr(0, roots[0].size() - std::strlen(kRootKernel));
  for (const std::string& name : all) {
    const std::string timm = bit_npz_to_timm_name(name, prefix_);
    Array a{name, Layout::same};
    if (!timm.empty()) {
      const bool kernel = ends_with(name, "/kernel");
      const Shape& s = npz_.shape_of(name);
      if (kernel && s.size() == 4) a.layout = Layout::hwio_to_oihw;
      if (!kernel && is_vector_like(s)) a.layout = Layout::vector;
    }
    const std::string& key = timm.empty() ? name : timm;
    KD_CHECK(arrays_.emplace(key, a).second, npz_.path(), ": arrays '", arrays_.at(key).array, "' and '", name,
             "' both map to '", key, "'");
  }
}

std::unique_ptr<BitNpzSource> BitNpzSource::open(const std::string& path) {
  return std::make_unique<BitNpzSource>(NpzFile::open(path));
}

std::vector<std::string> BitNpzSource::names() const {
  std::vector<std::string> out;
  for (const auto& kv : arrays_) out.push_back(kv.first);
  return out;
}

const BitNpzSource::Array& BitNpzSource::find(const std::string& name) const {
  auto it = arrays_.find(name);
  KD_CHECK(it != arrays_.end(), npz_.path(), ": BiT archive has no array for '", name, "' (it holds ", arrays_.size(),
           " arrays)");
  return it->second;
}

Shape BitNpzSource::shape_of(const std::string& name) const {
  const Array& a = find(name);
  const Shape stored = npz_.shape_of(a.array);
  switch (a.layout) {
    case Layout::hwio_to_oihw:
      return oihw_of(stored);
    case Layout::vector:
      return {shape_numel(stored)};
    case Layout::same:
      break;
  }
  return stored;
}

Tensor BitNpzSource::tensor_as(const std::string& name, const Shape& expected, DType to) const {
  const Array& a = find(name);
  const Shape stored = npz_.shape_of(a.array);
  const Shape presented = shape_of(name);
  const char* layout = a.layout == Layout::hwio_to_oihw ? " HWIO" : "";
  KD_CHECK(presented == expected, npz_.path(), ": tensor '", name, "' (array '", a.array, "' ", shape_str(stored),
           layout, ") has shape ", shape_str(presented), ", expected ", shape_str(expected));
  Tensor t = npz_.tensor_as(a.array, stored, to);
  if (a.layout != Layout::hwio_to_oihw) return t.reshape(presented);
  Tensor out = Tensor::zeros_cpu(presented, to);
  if (to == DType::f64)
    hwio_to_oihw(t.data<double>(), stored, out.data<double>());
  else
    hwio_to_oihw(t.data<float>(), stored, out.data<float>());
  return out;
}

}  // namespace kd
