// From decoded images to views: packing a batch's images into one pixel buffer for the augment
// op, moving recipes drawn on the files' sizes onto the decoded pixels, and rendering. JPEGs
// left encoded by the loader (data.jpeg_decoder=nvjpeg) are decoded here, on the GPU, straight
// into the device pixel buffer the augment kernel reads.
#pragma once
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "data/image.h"
#include "data/recipe.h"
#include "data/source.h"
#include "engine/context.h"
#include "kernels/augment.h"

namespace kd {

// A batch's images laid out back to back in one uint8 buffer, as the augment op reads them:
// host-decoded images first (`host_bytes` of them, uploaded), then the places of the images the GPU
// decodes (`device_bytes` covers both), a job each. The layout only: the host pixels stay in the
// images (`host_pixels` points at them) until write_host_pixels() gathers them into the buffer
// the upload reads (the pinned staging slot on a GPU: one copy, no per-step allocation), so the
// images must outlive the PackedImages (pack_images refuses temporaries).
struct PackedImages {
  struct Placement {
    int offset_y = 0, offset_x = 0, scale_num = 8;  // as in data/image.h's Image
  };
  struct HostPixels {
    const uint8_t* data = nullptr;
    size_t bytes = 0;
    size_t offset = 0;  // in the buffer
  };
  struct DeviceJpeg {
    std::vector<uint8_t> encoded;
    std::string origin;
    int64_t offset = 0;  // in the device buffer
    int32_t height = 0, width = 0;
  };
  std::vector<HostPixels> host_pixels;
  size_t host_bytes = 0;
  std::vector<SourceImage> sources;
  std::vector<ImageSize> sizes;       // decoded
  std::vector<ImageSize> file_sizes;  // as the files hold them: training views are drawn on these
  std::vector<Placement> placements;  // where the decoded pixels sit in the files' images
  std::vector<DeviceJpeg> device_jpegs;
  size_t device_bytes = 0;            // the whole buffer on the device: pixels, then the device JPEGs

  // Writes the host pixels to dst[0, host_bytes), each image at its offset (images in parallel).
  void write_host_pixels(uint8_t* dst) const;
};
PackedImages pack_images(const std::vector<Image>& images);
PackedImages pack_images(const std::vector<const Image*>& images);
PackedImages pack_images(std::vector<Image>&& images) = delete;  // the pixels would not outlive the call
// Moves recipes drawn on the file sizes onto the decoded pixels (region or DCT-scaled decodes;
// a whole, full-size decode is left as it is).
void place_views(std::vector<ViewRecipe>& recipes, const PackedImages& batch);

// Renders recipes of a packed batch at one or two resolutions (see ops::augment).
std::pair<Tensor, Tensor> render_views(Context& ctx, const PackedImages& batch, const std::vector<ViewRecipe>& recipes,
                                       const Normalization& norm, int64_t res1, int64_t res2 = 0);
// The same recipes at every resolution in `resolutions` (duplicates rendered once), one tensor
// per entry of `resolutions`.
std::vector<Tensor> render_views_at(Context& ctx, const PackedImages& batch, const std::vector<ViewRecipe>& recipes,
                                    const Normalization& norm, const std::vector<int64_t>& resolutions);

// Images 0 .. count - 1 of `source` in index order, batch_size at a time, rendered as evaluation
// renders them (centre crops of crop_fraction) at each of `resolutions`: f(views, rows) per batch,
// views[k] at resolutions[k]. The teachers' passes over a fixed set of images (the fixed teacher's
// logits, the FP8 teacher's calibration). on_bad_image as LoaderOptions' (null: a line on stderr).
void for_each_centre_crop_batch(Context& ctx, const SourcePtr& source, int64_t count, int64_t batch_size, int threads,
                                float crop_fraction, const Normalization& norm, const std::vector<int64_t>& resolutions,
                                const std::function<void(const std::vector<Tensor>& views, int64_t rows)>& f,
                                std::function<void(const std::string&, const std::string&)> on_bad_image = nullptr);

// Images the GPU decoder could not decode (then decoded on the host) and could not decode at
// all (rendered mid-grey), since the process started. Each is also reported once on stderr.
struct DeviceJpegCounts {
  int64_t decoded_on_gpu = 0, host_fallbacks = 0, undecodable = 0;
};
DeviceJpegCounts device_jpeg_counts();

}  // namespace kd
