// Building models from files: model.reset_head loads every weight but the classifier from a
// checkpoint of another class count; without it, a class-count mismatch is an error naming the
// tensor.
#include "train/pipeline.h"

#include <gtest/gtest.h>

#include "data/sampler.h"
#include "engine/safetensors.h"
#include "tests/data/data_fixtures.h"

namespace kd {
namespace {

// 40 images in shards of 5 when `sharded`, else a source of plain files.
class ShardedFake final : public DataSource {
 public:
  explicit ShardedFake(bool sharded) : sharded_(sharded) {}
  int64_t size() const override { return 40; }
  int num_classes() const override { return 2; }
  int label(int64_t i) const override { return int(i % 2); }
  int shard(int64_t i) const override { return sharded_ ? int((i * 7) % 40 / 5) : -1; }
  Image load(int64_t) const override { KD_FAIL("not loaded in this test"); }
  std::string where(int64_t i) const override { return "fake #" + std::to_string(i); }
  std::string describe() const override { return "fake"; }

 private:
  bool sharded_;
};

TEST(Pipeline, TheSamplerReadsShardsShardByShardAndOtherSourcesInOnePermutation) {
  DataOptions d;
  d.batch_size = 8;
  d.shuffle_shards = 2;
  const ShardedFake sharded(true), plain(false);
  std::vector<int> shard_of;
  for (int64_t i = 0; i < 40; ++i) shard_of.push_back(sharded.shard(i));
  const std::vector<int64_t> want = shard_epoch_order(shard_layout(shard_of, 2), 5, 1);
  EpochSampler by_shard = make_sampler(sharded, d, 5, 1, 2), whole = make_sampler(plain, d, 5, 1, 2);
  EpochSampler reference(40, 8, 5, 1, 2);
  for (int64_t step = 5; step < 10; ++step)  // epoch 1, rank 1 of 2: slots 4..7
    for (int64_t j = 0; j < 4; ++j) {
      EXPECT_EQ(by_shard.indices(step)[size_t(j)], want[size_t((step - 5) * 8 + 4 + j)]);
      EXPECT_EQ(whole.indices(step)[size_t(j)], reference.indices(step)[size_t(j)]);
    }
}

TEST(Pipeline, ResetHeadLoadsAllButTheClassifier) {
  test::TempDir dir;
  auto ctx = Context::cpu();
  for (const char* arch : {"resnetv2(depths=1-1, width=8, stem=conv3)", "resnet18"}) {
    std::unique_ptr<Model> source = build_model(*ctx, arch, 4, false, "", 7);
    SafetensorsWriter w;
    source->params().save(w, *ctx);
    w.write(dir.file("four.safetensors"));
    try {
      build_model(*ctx, arch, 6, false, dir.file("four.safetensors"), 1);
      FAIL() << arch << ": a 4-class head loaded into 6 classes";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(source->head_params()[0]), std::string::npos) << e.what();
    }
    std::unique_ptr<Model> fresh = build_model(*ctx, arch, 6, false, "", 1);
    std::unique_ptr<Model> tuned = build_model(*ctx, arch, 6, false, dir.file("four.safetensors"), 1, false, true);
    for (const Param& p : tuned->params().params()) {
      const bool head = p.name == tuned->head_params()[0] || p.name == tuned->head_params()[1];
      const Param& want = head ? fresh->params().get(p.name) : source->params().get(p.name);
      ASSERT_EQ(p.numel(), want.numel()) << p.name;
      EXPECT_EQ(0, std::memcmp(p.value.raw(), want.value.raw(), p.value.nbytes()))
          << arch << ": " << p.name << (head ? " should keep its initialisation" : " should come from the file");
    }
  }
}

}  // namespace
}  // namespace kd
