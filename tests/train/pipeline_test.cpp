// Building models from files: model.reset_head loads every weight but the classifier from a
// checkpoint of another class count; without it, a class-count mismatch is an error naming the
// tensor.
#include "train/pipeline.h"

#include <gtest/gtest.h>

#include "engine/safetensors.h"
#include "tests/data/data_fixtures.h"

namespace kd {
namespace {

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
