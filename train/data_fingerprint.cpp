#include "train/data_fingerprint.h"

#include <sys/stat.h>

#include <algorithm>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "kernels/check.h"
#include "train/distributed.h"

namespace kd {

using json = nlohmann::json;

std::string DataFingerprint::to_json() const {
  char hash[17];
  std::snprintf(hash, sizeof hash, "%016llx", (unsigned long long)list_hash);
  return json{{"images", images}, {"class_names", class_names}, {"images_per_class", images_per_class}, {"list_hash", hash}}
      .dump();
}

DataFingerprint DataFingerprint::from_json(const std::string& text, const std::string& where) {
  DataFingerprint f;
  try {
    const json j = json::parse(text);
    f.images = j.at("images").get<int64_t>();
    f.class_names = j.at("class_names").get<std::vector<std::string>>();
    f.images_per_class = j.at("images_per_class").get<std::vector<int64_t>>();
    f.list_hash = std::stoull(j.at("list_hash").get<std::string>(), nullptr, 16);
  } catch (const std::exception& e) {
    KD_FAIL(where, ": the data fingerprint is damaged (", e.what(), ")");
  }
  return f;
}

DataFingerprint fingerprint_data(const DataSource& source, const std::string& root) {
  DataFingerprint f;
  f.images = source.size();
  f.class_names = source.class_names();
  f.images_per_class.assign(size_t(std::max(0, source.num_classes())), 0);
  uint64_t h = fnv1a64(nullptr, 0);
  for (int64_t i = 0; i < f.images; ++i) {
    std::string place = source.where(i);
    if (!root.empty() && place.compare(0, root.size(), root) == 0) place.erase(0, root.size());
    const int label = source.label(i);
    if (label >= 0 && size_t(label) < f.images_per_class.size()) ++f.images_per_class[size_t(label)];
    int64_t bytes = -1;
    struct stat st {};
    const std::string file = source.file_path(i);
    if (!file.empty() && ::stat(file.c_str(), &st) == 0) bytes = int64_t(st.st_size);
    h = fnv1a64(place.data(), place.size(), h);
    h = fnv1a64(&label, sizeof label, h);
    h = fnv1a64(&bytes, sizeof bytes, h);
  }
  f.list_hash = h;
  return f;
}

std::string describe_data_change(const DataFingerprint& then, const DataFingerprint& now) {
  std::string out;
  auto add = [&](const std::string& part) { out += (out.empty() ? "" : "; ") + part; };
  if (then.images != now.images)
    add(std::to_string(then.images) + " images then, " + std::to_string(now.images) + " now");
  if (then.class_names != now.class_names || then.images_per_class.size() != now.images_per_class.size()) {
    add(std::to_string(then.images_per_class.size()) + " classes then, " + std::to_string(now.images_per_class.size()) +
        " now");
    for (size_t c = 0; c < std::max(then.class_names.size(), now.class_names.size()); ++c) {
      const std::string a = c < then.class_names.size() ? then.class_names[c] : "(none)";
      const std::string b = c < now.class_names.size() ? now.class_names[c] : "(none)";
      if (a != b) {
        add("class " + std::to_string(c) + " was '" + a + "', is '" + b + "'");
        break;
      }
    }
  } else {
    for (size_t c = 0; c < then.images_per_class.size(); ++c)
      if (then.images_per_class[c] != now.images_per_class[c])
        add("class '" + (c < now.class_names.size() ? now.class_names[c] : std::to_string(c)) + "' had " +
            std::to_string(then.images_per_class[c]) + " images, now " + std::to_string(now.images_per_class[c]));
  }
  if (out.empty() && then.list_hash != now.list_hash)
    add("the same number of images per class, but image paths, labels or file sizes differ");
  return out;
}

}  // namespace kd
