#include "train/pipeline.h"

#include <algorithm>
#include <filesystem>

#include "data/sampler.h"

#include "engine/ops.h"
#include "kernels/optim.h"
#include "engine/safetensors.h"
#include "models/weights.h"

namespace kd {

static SourcePtr open_split(const DataOptions& d, const std::string& kind, const std::string& split,
                            const std::string& labels, const char* key) {
  KD_CHECK(!split.empty(), "data.", key, " is empty: name the ", key, " split");
  try {
    SourceOptions o;
    o.labels = labels;
    o.root = d.root;
    o.jpeg_decoder = parse_jpeg_decoder(d.jpeg_decoder);
    o.max_pixels = int64_t(d.max_image_mpixels * double(1 << 20));
    o.cached_shards = d.cached_shard_count();
    return open_source(kind, split, o);
  } catch (const Error& e) {
    KD_FAIL("data.", key, " = '", split, "' (", kind, "): ", e.what());
  }
}

Datasets open_datasets(const DataOptions& d, bool need_train) {
  Datasets out;
  if (need_train) {
    out.train = open_split(d, d.train_kind.empty() ? d.kind : d.train_kind, d.train, d.train_labels, "train");
    if (d.train_subset > 0) {
      KD_CHECK(d.train_subset <= out.train->size(), "data.train_subset = ", d.train_subset, " but the training split has ",
               out.train->size(), " images");
      if (out.train->num_classes() > 0) {
        out.train = balanced_subset(out.train, d.train_subset, uint64_t(d.subset_seed));
      } else {  // unlabelled images: a seeded choice, in index order
        std::vector<int64_t> pick = seeded_permutation(out.train->size(), uint64_t(d.subset_seed), 0x737562ull);
        pick.resize(size_t(d.train_subset));
        std::sort(pick.begin(), pick.end());
        out.train = subset(out.train, pick);
      }
    }
  }
  KD_CHECK(d.kind != "images", "data.kind = images has no labels to evaluate against: set data.kind to the evaluation "
           "data's format and data.train_kind = images for the images to distill on");
  out.test = open_split(d, d.kind, d.test, d.test_labels, "test");
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

EpochSampler make_sampler(const DataSource& train, const DataOptions& data, uint64_t seed, int rank, int world_size) {
  if (train.shard(0) < 0) return EpochSampler(train.size(), data.batch_size, seed, rank, world_size);
  std::vector<int> shard_of(size_t(train.size()));
  for (int64_t i = 0; i < train.size(); ++i) shard_of[size_t(i)] = train.shard(i);
  return EpochSampler(shard_layout(shard_of, data.shuffle_shards), data.batch_size, seed, rank, world_size);
}

std::unique_ptr<Model> build_model(Context& ctx, const std::string& arch, int64_t classes, bool zero_head,
                                   const std::string& weights, uint64_t seed, bool frozen, bool reset_head) {
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
    KD_CHECK(!reset_head || !model->head_params().empty(), arch, " does not name its classifier: reset_head is not "
             "available for it");
    if (reset_head) model->params().init(seed, ctx);  // the head's start; the rest is overwritten
    const std::unique_ptr<TensorSource> file = open_weights(weights, arch);
    std::vector<std::string> skip = reset_head ? model->head_params() : std::vector<std::string>{};
    model->params().load(*file, ctx, /*strict=*/!reset_head, "", skip);
    if (reset_head) {  // strict but for the head: every other weight must be in the file
      for (const Param& p : model->params().params())
        KD_CHECK(std::find(skip.begin(), skip.end(), p.name) != skip.end() || file->contains(p.name), weights,
                 ": parameter '", p.name, "' is missing");
    }
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
  return teacher_logits(ctx, teachers, std::vector<Tensor>(teachers.size(), x));
}

Tensor mean_over_teachers(Context& ctx, const Tensor& stacked) {
  const int64_t k = stacked.dim(0), per = stacked.numel() / k;
  Tensor mean = Tensor::empty({1, stacked.dim(1), stacked.dim(2)}, stacked.dtype(), ctx);
  copy_bytes(mean.raw(), ctx.device(), stacked.raw(), ctx.device(), mean.nbytes(), &ctx);
  if (ctx.is_cuda()) {
#if KD_HAVE_CUDA
    float* m = mean.data<float>();
    for (int64_t t = 1; t < k; ++t) accumulate_cuda(ctx.cuda_handles(), per, stacked.data<float>() + t * per, m);
    scale_cuda(ctx.cuda_handles(), per, 1.0f / float(k), m);
#endif
  } else if (stacked.dtype() == DType::f64) {
    double* m = mean.data<double>();
    for (int64_t i = 0; i < per; ++i) {
      double s = 0;
      for (int64_t t = 0; t < k; ++t) s += stacked.data<double>()[t * per + i];
      m[i] = s / double(k);
    }
  } else {
    float* m = mean.data<float>();
    for (int64_t t = 1; t < k; ++t) accumulate_cpu(per, stacked.data<float>() + t * per, m);
    scale_cpu(per, 1.0f / float(k), m);
  }
  return mean;
}

Tensor teacher_logits(Context& ctx, const std::vector<Model*>& teachers, const std::vector<Tensor>& inputs) {
  KD_CHECK(!teachers.empty() && inputs.size() == teachers.size(), "teacher_logits: ", inputs.size(), " inputs for ",
           teachers.size(), " teachers");
  Tensor stacked;
  for (size_t k = 0; k < teachers.size(); ++k) {
    const Tensor& x = inputs[k];
    Tensor logits = teachers[k]->forward(ctx, x, Mode::eval);
    if (!stacked.defined()) stacked = Tensor::empty({int64_t(teachers.size()), logits.dim(0), logits.dim(1)}, logits.dtype(), ctx);
    KD_CHECK(logits.dim(1) == stacked.dim(2), "teachers disagree on the class count");
    copy_bytes(stacked.slice_rows(int64_t(k), int64_t(k) + 1).raw(), ctx.device(), logits.raw(), ctx.device(),
               logits.nbytes(), &ctx);
  }
  return stacked;
}

}  // namespace kd
