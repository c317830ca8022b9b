// kd eval reads the configs of kd train and kd distill alike (the checkpoint is the student), and
// --list-keys in each mode lists exactly the keys that mode accepts, with their help.
#include <gtest/gtest.h>

#include <fstream>

#include "tests/tools/tool_fixtures.h"

namespace kd::test {
namespace {

TEST(EvalCli, AcceptsTrainAndDistillConfigsAndEvaluatesTheCheckpoint) {
  TempDir dir;
  write_stripes_dataset(dir);
  const auto trained =
      run_kd(concat({"train"}, concat(tiny_run(dir, "student", 4), {"model.arch=resnetv2(depths=1, width=4)"})));
  ASSERT_EQ(trained.code, 0) << trained.err;
  const std::string data = "[data]\nkind = \"image_folder\"\ntrain = \"" + dir.str() + "/train\"\ntest = \"" +
                           dir.str() + "/test\"\n[augment]\nresolution = 16\n";
  std::ofstream(dir.file("distill.toml")) << data << "[student]\narch = \"resnetv2(depths=1, width=4)\"\n"
                                          << "[teacher]\nweights = [\"teacher.safetensors\"]\n"
                                          << "[distill]\nstrategy = \"consistent\"\ntemperature = 2.0\n";
  std::ofstream(dir.file("train.toml")) << data << "[model]\narch = \"resnetv2(depths=1, width=4)\"\n"
                                        << "[run]\nlabel_smoothing = 0.1\n";
  const std::string model = dir.str() + "/runs/student/model.safetensors";
  for (const char* config : {"distill.toml", "train.toml"}) {
    const auto r = run_kd({"eval", model, "-c", dir.file(config), "--device", "cpu", "--json"});
    EXPECT_EQ(r.code, 0) << config << ": " << r.err;
    EXPECT_NE(r.out.find("\"images\": 64"), std::string::npos) << config << ": " << r.out;
  }
  // Still checked: an unknown key is named.
  std::ofstream(dir.file("bad.toml")) << "[distill]\ntemprature = 2.0\n";
  const auto bad = run_kd({"eval", model, "-c", dir.file("bad.toml"), "--device", "cpu"});
  EXPECT_EQ(bad.code, 1);
  EXPECT_NE(bad.err.find("distill.temprature"), std::string::npos) << bad.err;
}

bool lists(const std::string& help, const std::string& key) { return help.find("\n" + key + " ") != std::string::npos; }

TEST(EvalCli, ListKeysInEachModeListsTheKeysItAcceptsWithTheirHelp) {
  const auto train = run_kd({"train", "--list-keys"});
  const auto distill = run_kd({"distill", "--list-keys"});
  const auto eval = run_kd({"eval", "--list-keys"});
  for (const auto* r : {&train, &distill, &eval}) {
    EXPECT_EQ(r->code, 0) << r->err;
    EXPECT_TRUE(lists("\n" + r->out, "data.test")) << r->out;
    EXPECT_NE(r->out.find("write TensorBoard event files"), std::string::npos) << "run.tensorboard's help";
  }
  EXPECT_TRUE(lists(train.out, "model.arch"));
  EXPECT_FALSE(lists(train.out, "student.arch"));
  EXPECT_FALSE(lists(train.out, "distill.strategy"));
  EXPECT_TRUE(lists(distill.out, "student.arch"));
  EXPECT_TRUE(lists(distill.out, "distill.strategy"));
  EXPECT_FALSE(lists(distill.out, "model.arch"));
  for (const char* key : {"model.arch", "run.label_smoothing", "student.arch", "teacher.weights", "distill.strategy"})
    EXPECT_TRUE(lists(eval.out, key)) << key << " missing from kd eval --list-keys";
}

}  // namespace
}  // namespace kd::test
