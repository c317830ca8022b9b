#include "train/pipeline.h"

#include <filesystem>

#include "engine/ops.h"
#include "engine/safetensors.h"
#include "models/weights.h"

namespace kd {

static SourcePtr open_split(const DataOptions& d, const std::string& split, const std::string& labels,
                            const char* key) {
  KD_CHECK(!split.empty(), "data.", key, " is empty: name the ", key, " split");
  try {
    SourceOptions o;
    o.labels = labels;
    o.root = d.root;
    return open_source(d.kind, split, o);
  } catch (const Error& e) {
    KD_FAIL("data.", key, " = '", split, "' (", d.kind, "): ", e.what());
  }
}

Datasets open_datasets(const DataOptions& d, bool need_train) {
  Datasets out;
  if (need_train) {
    out.train = open_split(d, d.train, d.train_labels, "train");
    if (d.train_subset > 0) {
      KD_CHECK(d.train_subset <= out.train->size(), "data.train_subset = ", d.train_subset, " but the training split has ",
               out.train->size(), " images");
      out.train = balanced_subset(out.train, d.train_subset, uint64_t(d.subset_seed));
    }
  }
  out.test = open_split(d, d.test, d.test_labels, "test");
  if (d.test_limit > 0 && d.test_limit < out.test->size()) {
    std::vector<int64_t> first(static_cast<size_t>(d.test_limit));
    for (int64_t i = 0; i < d.test_limit; ++i) first[size_t(i)] = i;
    out.test = subset(out.test, first);
  }
  out.num_classes = out.test->num_classes();
  if (out.train) {
    KD_CHECK(out.train->num_classes() <= out.num_classes || out.test->class_names().empty(), "data: the training split has ",
             out.train->num_classes(), " classes, the test split ", out.num_classes);
    out.num_classes = std::max(out.num_classes, out.train->num_classes());
  }
  KD_CHECK(out.num_classes >= 2, "data: need at least 2 classes, found ", out.num_classes);
  return out;
}

PackedImages pack_images(const std::vector<Image>& images) {
  std::vector<const Image*> pointers;
  for (const Image& im : images) pointers.push_back(&im);
  return pack_images(pointers);
}

PackedImages pack_images(const std::vector<const Image*>& images) {
  PackedImages p;
  size_t total = 0;
  for (const Image* im : images) total += im->bytes();
  p.pixels.resize(total);
  size_t offset = 0;
  for (const Image* image : images) {
    const Image& im = *image;
    std::copy(im.pixels.begin(), im.pixels.end(), p.pixels.begin() + std::ptrdiff_t(offset));
    p.sources.push_back(SourceImage{int64_t(offset), int32_t(im.height), int32_t(im.width)});
    p.sizes.push_back(ImageSize{int32_t(im.height), int32_t(im.width)});
    offset += im.bytes();
  }
  return p;
}

std::pair<Tensor, Tensor> render_views(Context& ctx, const PackedImages& batch, const std::vector<ViewRecipe>& recipes,
                                       const Normalization& norm, int64_t res1, int64_t res2) {
  return ops::augment(ctx, batch.pixels.data(), batch.pixels.size(), batch.sources, recipes, norm, res1, res1, res2,
                      res2);
}

std::unique_ptr<Model> build_model(Context& ctx, const std::string& arch, int64_t classes, bool zero_head,
                                   const std::string& weights, uint64_t seed, bool frozen) {
  ModelSpec spec;
  spec.arch = arch;
  spec.num_classes = classes;
  spec.zero_head = zero_head;
  std::unique_ptr<Model> model = create_model(spec);
  model->params().allocate(ctx, !frozen);
  if (weights.empty()) {
    model->params().init(seed, ctx);
  } else {
    KD_CHECK(std::filesystem::exists(weights), "weights file ", weights, " does not exist");
    model->params().load(*open_weights(weights, arch), ctx);
  }
  if (frozen) model->freeze_for_inference(ctx);
  return model;
}

std::unique_ptr<Model> load_checkpoint_model(Context& ctx, const std::string& path, bool frozen) {
  KD_CHECK(!is_npz_path(path), path, ": a .npz (BiT's release) holds no architecture; give it (e.g. teacher.arch = ",
           "resnetv2_152x2_bit)");
  SafetensorsFile file = SafetensorsFile::open(path);
  const auto& meta = file.metadata();
  KD_CHECK(meta.count("arch") && meta.count("num_classes"), path,
           ": not a kd checkpoint (no 'arch'/'num_classes' metadata); give the architecture explicitly");
  int64_t classes = 0;
  try {
    classes = std::stoll(meta.at("num_classes"));
  } catch (const std::exception&) {
    KD_FAIL(path, ": metadata num_classes = '", meta.at("num_classes"), "' is not a number");
  }
  ModelSpec spec;
  spec.arch = meta.at("arch");
  spec.num_classes = classes;
  std::unique_ptr<Model> model = create_model(spec);
  model->params().allocate(ctx, !frozen);
  model->params().load(file, ctx);
  if (frozen) model->freeze_for_inference(ctx);
  return model;
}

std::vector<std::unique_ptr<Model>> build_teachers(Context& ctx, const TeacherOptions& t, int64_t classes) {
  std::vector<std::unique_ptr<Model>> out;
  for (size_t i = 0; i < t.weights.size(); ++i) {
    const std::string& arch = t.arch.empty() ? std::string() : t.arch[t.arch.size() == 1 ? 0 : i];
    std::unique_ptr<Model> m;
    if (arch.empty()) {
      m = load_checkpoint_model(ctx, t.weights[i], /*frozen=*/true);
    } else {
      m = build_model(ctx, arch, classes, false, t.weights[i], 0, /*frozen=*/true);
    }
    KD_CHECK(m->spec().num_classes == classes, "teacher ", t.weights[i], " has ", m->spec().num_classes,
             " classes, the data ", classes);
    out.push_back(std::move(m));
  }
  return out;
}

Tensor teacher_logits(Context& ctx, const std::vector<Model*>& teachers, const Tensor& x) {
  KD_CHECK(!teachers.empty(), "teacher_logits: no teachers");
  Tensor stacked;
  for (size_t k = 0; k < teachers.size(); ++k) {
    Tensor logits = teachers[k]->forward(ctx, x, Mode::eval);
    if (!stacked.defined()) stacked = Tensor::empty({int64_t(teachers.size()), logits.dim(0), logits.dim(1)}, logits.dtype(), ctx);
    KD_CHECK(logits.dim(1) == stacked.dim(2), "teachers disagree on the class count");
    copy_bytes(stacked.slice_rows(int64_t(k), int64_t(k) + 1).raw(), ctx.device(), logits.raw(), ctx.device(),
               logits.nbytes(), &ctx);
  }
  return stacked;
}

}  // namespace kd
