// The autotuning cache file: choices survive a restart, two writers of one file merge, a corrupt
// or foreign file is ignored with a warning naming it (and rewritten), an unwritable one costs the
// persistence and nothing else.
#include "engine/autotune_cache.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <sstream>

#include "kernels/check.h"
#include "tests/data/data_fixtures.h"
#include "tests/support/testing.h"

namespace kd {
namespace {

bool has_warning(AutotuneCache& c, const std::string& part) {
  for (const std::string& w : c.warnings())
    if (w.find(part) != std::string::npos) return true;
  return false;
}

const std::string kForward = "conv2d_forward_cuda | NVIDIA H100 sm_90 | cuDNN 9.19.0 | [128, 56, 56, 256] -> 64";
const std::string kWgrad = "conv2d_backward_filter_cuda | NVIDIA H100 sm_90 | cuDNN 9.19.0 | [128, 7, 7, 512] -> 512";

TEST(AutotuneCache, ChoicesSurviveARestart) {
  test::TempDir dir;
  const std::string path = dir.str() + "/sub/folder/autotune.tsv";  // folders are created
  {
    AutotuneCache cache(path);
    EXPECT_EQ(cache.find(kForward), -1);
    cache.put(kForward, 3, 0.125);
    cache.put(kWgrad, 0, 1.5);
    cache.put(kForward, 5, 0.1);  // a later choice replaces the earlier one
  }
  AutotuneCache again(path);
  EXPECT_EQ(again.size(), 2u);
  EXPECT_EQ(again.find(kForward), 5);
  EXPECT_EQ(again.find(kWgrad), 0);
  EXPECT_EQ(again.find("conv2d_forward_cuda | another shape"), -1);
  EXPECT_TRUE(again.warnings().empty());
  EXPECT_EQ(test::read_text(path).rfind("# kd autotune cache v1\n", 0), 0u) << test::read_text(path);
}

TEST(AutotuneCache, TwoWritersOfOneFileMerge) {
  test::TempDir dir;
  const std::string path = dir.str() + "/autotune.tsv";
  AutotuneCache rank0(path), rank1(path);  // both read the (missing) file first
  rank0.put(kForward, 2, 0.3);
  rank1.put(kWgrad, 1, 0.7);
  AutotuneCache later(path);
  EXPECT_EQ(later.find(kForward), 2);
  EXPECT_EQ(later.find(kWgrad), 1);
}

TEST(AutotuneCache, ACorruptFileIsIgnoredWithAWarningAndRewritten) {
  test::TempDir dir;
  const std::string path = dir.str() + "/autotune.tsv";
  const std::vector<std::pair<std::string, std::string>> corrupt{
      {"# kd autotune cache v1\n" + kForward + "\t3\t0.1\n" + kWgrad + "\tthree\t0.1\n", "corrupt at line 3"},
      {"# kd autotune cache v1\n" + kForward + "\t3\n", "corrupt at line 2"},
      {"# kd autotune cache v1\n" + kForward + "\t-1\t0.1\n", "corrupt at line 2"},
      {"# kd autotune cache v1\n\t3\t0.1\n", "corrupt at line 2"},
      {"\x89PNG\r\n\x1a\n binary", "does not start with '# kd autotune cache v1'"},
      {"# kd autotune cache v9\n" + kForward + "\t3\t0.1\n", "does not start with"},
  };
  for (const auto& [text, expected] : corrupt) {
    std::ofstream(path, std::ios::trunc) << text;
    AutotuneCache cache(path);
    EXPECT_EQ(cache.size(), 0u) << text;
    EXPECT_EQ(cache.find(kForward), -1) << "nothing of a corrupt file is used: " << text;
    EXPECT_TRUE(has_warning(cache, expected)) << text;
    EXPECT_TRUE(has_warning(cache, path)) << "the warning names the file";
    cache.put(kWgrad, 4, 2.0);
    AutotuneCache rewritten(path);
    EXPECT_TRUE(rewritten.warnings().empty()) << test::read_text(path);
    EXPECT_EQ(rewritten.find(kWgrad), 4);
  }
}

TEST(AutotuneCache, AnUnwritableFileCostsOnlyThePersistence) {
  test::TempDir dir;
  const std::string blocker = dir.str() + "/not_a_folder";
  std::ofstream(blocker) << "a file where a folder should be";
  AutotuneCache cache(blocker + "/autotune.tsv");
  cache.put(kForward, 1, 0.5);
  EXPECT_EQ(cache.find(kForward), 1) << "kept in memory";
  EXPECT_TRUE(has_warning(cache, "cannot write " + blocker + "/autotune.tsv")) << (cache.warnings().empty() ? std::string() : cache.warnings()[0]);
  AutotuneCache memory_only("");
  memory_only.put(kForward, 2, 0.5);
  EXPECT_EQ(memory_only.find(kForward), 2);
  EXPECT_TRUE(memory_only.warnings().empty());
}

TEST(AutotuneCache, KeysAreOneLineWithoutTabs) {
  AutotuneCache cache("");
  EXPECT_THROW(cache.put("a\tb", 1, 0.1), Error);
  EXPECT_THROW(cache.put("a\nb", 1, 0.1), Error);
  EXPECT_THROW(cache.put("", 1, 0.1), Error);
  EXPECT_THROW(cache.put("key", -2, 0.1), Error);
}

TEST(AutotuneCache, TheDefaultPathFollowsTheEnvironment) {
  const char* names[] = {"KD_CACHE_DIR", "XDG_CACHE_HOME", "HOME"};
  std::vector<std::string> saved;
  for (const char* n : names) saved.push_back(std::getenv(n) ? std::getenv(n) : "");
  setenv("KD_CACHE_DIR", "/c/kd", 1);
  setenv("XDG_CACHE_HOME", "/x", 1);
  setenv("HOME", "/h", 1);
  EXPECT_EQ(default_autotune_cache_path(), "/c/kd/autotune.tsv");
  unsetenv("KD_CACHE_DIR");
  EXPECT_EQ(default_autotune_cache_path(), "/x/kd/autotune.tsv");
  unsetenv("XDG_CACHE_HOME");
  EXPECT_EQ(default_autotune_cache_path(), "/h/.cache/kd/autotune.tsv");
  unsetenv("HOME");
  EXPECT_EQ(default_autotune_cache_path(), "");
  for (size_t i = 0; i < 3; ++i)
    if (saved[i].empty())
      unsetenv(names[i]);
    else
      setenv(names[i], saved[i].c_str(), 1);
}

}  // namespace
}  // namespace kd
