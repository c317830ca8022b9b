// Opening a weights file for ParamStore::load by what it is: BiT's original .npz release (read
// under timm's resnetv2 names, see models/bit_npz.h) or safetensors (timm state dicts and kd's
// own checkpoints). The arch decides how an .npz is named; safetensors carry timm's names already.
#pragma once
#include <memory>
#include <string>

#include "engine/tensor_source.h"

namespace kd {

// True for paths ending in ".npz" (any case).
bool is_npz_path(const std::string& path);

// `path` as a TensorSource: an .npz for a ResNetV2 `arch` through BitNpzSource, anything else as
// safetensors. Throws naming the file when it is missing or malformed, and for an .npz whose
// arch is empty or not a ResNetV2.
std::unique_ptr<TensorSource> open_weights(const std::string& path, const std::string& arch);

}  // namespace kd
