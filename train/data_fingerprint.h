// What a run's training data is, cheaply (no decoding; one stat per image file): the number of
// images, the classes with their image counts, and a hash of the image list (each image's path
// below the data root or its place in the file, its label, and its file size). Checkpoints carry
// it; a resume compares it with the data it finds, so a dataset that shrank or changed between
// a checkpoint and a resume is an error (run.allow_data_change accepts it).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "data/source.h"

namespace kd {

struct DataFingerprint {
  int64_t images = 0;
  std::vector<std::string> class_names;   // empty when the source does not name its classes
  std::vector<int64_t> images_per_class;  // by label
  uint64_t list_hash = 0;

  std::string to_json() const;
  // Throws naming `where` when the text is not a fingerprint.
  static DataFingerprint from_json(const std::string& text, const std::string& where);
};

// root: the data.train setting, stripped from the front of image paths (moving the folder is no change).
DataFingerprint fingerprint_data(const DataSource& source, const std::string& root);

// "" when the two agree, else what changed, e.g. "96 images then, 92 now; class 'vertical' had 24 images, now 20".
std::string describe_data_change(const DataFingerprint& then, const DataFingerprint& now);

}  // namespace kd
