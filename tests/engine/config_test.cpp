// ConfigSchema: TOML files and command-line overrides against a declared schema; every error
// names the key and where the value came from; to_toml() loads back to the same values.
#include "engine/config.h"

#include <gtest/gtest.h>

#include "tests/support/testing.h"
#include <unistd.h>

#include <cmath>
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <initializer_list>
#include <limits>

#include "kernels/check.h"

namespace kd {
namespace {

using test::error_of;

// The options of a small training run, bound to fields that hold the defaults.
struct RunConfig {
  int64_t seed = 0;
  double lr = 1e-3;
  int64_t steps = 100;
  bool nesterov = false;
  std::string optimizer = "adam";
  std::string data_path = "/data/train";
  std::vector<std::string> sources = {"a"};
  std::vector<int64_t> resolution = {224, 160};
  std::vector<double> betas = {0.9, 0.999};
  std::string run_name = "demo";

  void bind(ConfigSchema& s) {
    s.bind("seed", &seed, "random seed");
    s.bind("optim.lr", &lr, "peak learning rate");
    s.bind("optim.steps", &steps, "number of steps");
    s.bind("optim.nesterov", &nesterov, "Nesterov momentum");
    s.bind("optim.name", &optimizer, "optimizer", {"sgd", "adam", "shampoo"});
    s.bind("optim.betas", &betas, "Adam betas");
    s.bind("data.train.path", &data_path, "training images");
    s.bind("data.sources", &sources, "source names");
    s.bind("data.resolution", &resolution, "teacher and student resolution");
    s.bind("run.name", &run_name, "");
  }
};

class Config : public ::testing::Test {
 protected:
  void SetUp() override { cfg.bind(schema); }
  RunConfig cfg;
  ConfigSchema schema;
};

void expect_has(const std::string& msg, std::initializer_list<std::string> fragments) {
  for (const std::string& f : fragments) EXPECT_NE(msg.find(f), std::string::npos) << "no '" << f << "' in: " << msg;
}

TEST_F(Config, LoadsNestedTablesAndDottedKeys) {
  schema.load_string(R"(
seed = 7
run.name = "r1"
[optim]
steps = 5000
lr = 3e-4
nesterov = true
name = "shampoo"
betas = [0.95, 1]
[data]
sources = ["imagenet", "flowers"]
resolution = [384, 224]
[data.train]
path = "/x/y"
)",
                     "run.toml");
  EXPECT_EQ(cfg.seed, 7);
  EXPECT_EQ(cfg.steps, 5000);
  EXPECT_EQ(cfg.lr, 3e-4);
  EXPECT_TRUE(cfg.nesterov);
  EXPECT_EQ(cfg.optimizer, "shampoo");
  EXPECT_EQ(cfg.betas, (std::vector<double>{0.95, 1.0}));
  EXPECT_EQ(cfg.sources, (std::vector<std::string>{"imagenet", "flowers"}));
  EXPECT_EQ(cfg.resolution, (std::vector<int64_t>{384, 224}));
  EXPECT_EQ(cfg.data_path, "/x/y");
  EXPECT_EQ(cfg.run_name, "r1");
}

TEST_F(Config, AddMissingTakesTheOtherSchemasNewKeysBoundToItsVariables) {
  // A second option set sharing optim.lr and adding optim.clip: one schema reads both.
  double other_lr = 5.0, clip = 0.0;
  ConfigSchema other;
  other.bind("optim.lr", &other_lr, "the other lr");
  other.bind("optim.clip", &clip, "gradient clip");
  schema.add_missing(other);
  schema.load_string("[optim]\nlr = 0.5\nclip = 2.0\n", "test.toml");
  EXPECT_EQ(cfg.lr, 0.5);  // the schema's own binding wins
  EXPECT_EQ(other_lr, 5.0);
  EXPECT_EQ(clip, 2.0);
  expect_has(schema.help(), {"optim.clip", "gradient clip"});
  ConfigSchema clash;
  double table = 0;
  clash.bind("optim.name.x", &table, "a table where optim.name is an option");
  expect_has(error_of([&] { schema.add_missing(clash); }), {"optim.name.x", "optim.name"});
}

TEST_F(Config, IntegersAreAcceptedForFloats) {
  schema.load_string("[optim]\nlr = 2\n", "a.toml");
  EXPECT_EQ(cfg.lr, 2.0);
}

TEST_F(Config, WrongTypesNameKeyOriginAndValue) {
  expect_has(error_of([&] { schema.load_string("[optim]\nsteps = 1.5\n", "a.toml"); }),
             {"a.toml:2:", "key 'optim.steps' expects an int, got float 1.5"});
  expect_has(error_of([&] { schema.load_string("[optim]\nlr = \"fast\"\n", "a.toml"); }),
             {"a.toml:2:", "key 'optim.lr' expects a float, got string \"fast\""});
  expect_has(error_of([&] { schema.load_string("seed = true", "a.toml"); }), {"key 'seed' expects an int, got bool"});
  expect_has(error_of([&] { schema.load_string("[optim]\nnesterov = 1", "a.toml"); }),
             {"key 'optim.nesterov' expects a bool, got int 1"});
  expect_has(error_of([&] { schema.load_string("data.resolution = [1, 2.5]", "a.toml"); }),
             {"key 'data.resolution' expects an int list, got element 1 = float 2.5"});
  expect_has(error_of([&] { schema.load_string("data.sources = \"one\"", "a.toml"); }),
             {"key 'data.sources' expects a string list, got string \"one\""});
  expect_has(error_of([&] { schema.load_string("[optim.lr]\nx = 1", "a.toml"); }),
             {"key 'optim.lr' expects a float, got a table"});
}

TEST_F(Config, ChoicesAreEnforcedAndListed) {
  expect_has(error_of([&] { schema.load_string("optim.name = \"adamw\"", "a.toml"); }),
             {"a.toml:1:", "key 'optim.name' is \"adamw\", not one of: sgd, adam, shampoo"});
  expect_has(error_of([&] { schema.apply_override("optim.name=lamb"); }),
             {"command line", "key 'optim.name' is \"lamb\", not one of: sgd, adam, shampoo"});
  EXPECT_EQ(cfg.optimizer, "adam");
}

TEST_F(Config, UnknownKeysAreErrorsWithSuggestions) {
  expect_has(error_of([&] { schema.load_string("\n[optim]\nlrr = 1.0\n", "b.toml"); }),
             {"b.toml:3:", "unknown key 'optim.lrr' (did you mean 'optim.lr'?)"});
  expect_has(error_of([&] { schema.load_string("lr = 1.0\n", "b.toml"); }),
             {"unknown key 'lr' (did you mean 'optim.lr'?)"});
  expect_has(error_of([&] { schema.load_string("[optimm]\nlr = 1.0\n", "b.toml"); }),
             {"unknown section 'optimm' (did you mean 'optim'?)"});
  expect_has(error_of([&] { schema.load_string("optim = 1.0\n", "b.toml"); }),
             {"'optim' is a section, not a key", "optim.lr"});
  const std::string far = error_of([&] { schema.load_string("completely_unrelated = 1", "b.toml"); });
  expect_has(far, {"unknown key 'completely_unrelated'"});
  EXPECT_EQ(far.find("did you mean"), std::string::npos) << far;
  expect_has(error_of([&] { schema.apply_override("optim.lrr=3"); }),
             {"command line", "unknown key 'optim.lrr' (did you mean 'optim.lr'?)"});
}

TEST_F(Config, SyntaxErrorsGiveLineAndColumn) {
  const std::string msg = error_of([&] { schema.load_string("seed = 1\n[optim\nlr = 2\n", "bad.toml"); });
  expect_has(msg, {"bad.toml:2:", "TOML syntax error"});
  const std::string dup = error_of([&] { schema.load_string("seed = 1\nseed = 2\n", "dup.toml"); });
  expect_has(dup, {"dup.toml:2:", "TOML syntax error"});
}

TEST_F(Config, AFailedLoadChangesNothing) {
  EXPECT_THROW(schema.load_string("seed = 9\n[optim]\nlr = 0.5\nsteps = \"many\"\n", "a.toml"), Error);
  EXPECT_EQ(cfg.seed, 0);
  EXPECT_EQ(cfg.lr, 1e-3);
}

TEST_F(Config, LoadsFilesAndNamesMissingOnes) {
  const std::string path = ::testing::TempDir() + "kd_config_" + std::to_string(::getpid()) + ".toml";
  std::ofstream(path) << "[optim]\nsteps = 12\nlr = \"x\"\n";
  expect_has(error_of([&] { schema.load_file(path); }), {path + ":3:", "optim.lr"});
  std::ofstream(path) << "[optim]\nsteps = 12\n";
  schema.load_file(path);
  EXPECT_EQ(cfg.steps, 12);
  std::remove(path.c_str());
  expect_has(error_of([&] { schema.load_file(path); }), {"cannot read config file " + path, "No such file"});
}

TEST_F(Config, OverridesParseTomlValuesAndBareWords) {
  schema.apply_override("optim.lr=3e-4");
  schema.apply_override(" optim.steps = 1_000 ");
  schema.apply_override("optim.nesterov=true");
  schema.apply_override("optim.name=sgd");
  schema.apply_override("data.train.path=/x/y");
  schema.apply_override("run.name=2024");           // any text is a string for a string option
  schema.apply_override("optim.betas=[0.5, 1]");
  schema.apply_override("data.resolution=[8]");
  schema.apply_override("seed=-3");
  EXPECT_EQ(cfg.lr, 3e-4);
  EXPECT_EQ(cfg.steps, 1000);
  EXPECT_TRUE(cfg.nesterov);
  EXPECT_EQ(cfg.optimizer, "sgd");
  EXPECT_EQ(cfg.data_path, "/x/y");
  EXPECT_EQ(cfg.run_name, "2024");
  EXPECT_EQ(cfg.betas, (std::vector<double>{0.5, 1.0}));
  EXPECT_EQ(cfg.resolution, (std::vector<int64_t>{8}));
  EXPECT_EQ(cfg.seed, -3);
  schema.apply_override("run.name=\"quoted # not a comment\"");
  EXPECT_EQ(cfg.run_name, "quoted # not a comment");
  schema.apply_override("run.name=a=b");  // only the first '=' splits
  EXPECT_EQ(cfg.run_name, "a=b");
  schema.apply_override("run.name=");
  EXPECT_EQ(cfg.run_name, "");
}

TEST_F(Config, StringListOverrides) {
  schema.apply_override("data.sources=[\"x\", \"y z\"]");
  EXPECT_EQ(cfg.sources, (std::vector<std::string>{"x", "y z"}));
  schema.apply_override("data.sources=imagenet, flowers");
  EXPECT_EQ(cfg.sources, (std::vector<std::string>{"imagenet", "flowers"}));
  schema.apply_override("data.sources=/one/path");
  EXPECT_EQ(cfg.sources, (std::vector<std::string>{"/one/path"}));
  schema.apply_override("data.sources=");
  EXPECT_TRUE(cfg.sources.empty());
}

TEST_F(Config, MalformedOverrides) {
  expect_has(error_of([&] { schema.apply_override("optim.lr"); }),
             {"command line", "override 'optim.lr' is not key=value"});
  expect_has(error_of([&] { schema.apply_override("=3"); }), {"command line", "no key"});
  expect_has(error_of([&] { schema.apply_override("optim.lr=fast"); }),
             {"command line", "key 'optim.lr' expects a float, got string \"fast\""});
  expect_has(error_of([&] { schema.apply_override("optim.steps=2.0"); }),
             {"command line", "key 'optim.steps' expects an int, got float 2.0"});
  expect_has(error_of([&] { schema.apply_override("optim.lr=[1,2"); }), {"expects a float, got string \"[1,2\""});
  EXPECT_EQ(cfg.lr, 1e-3);
  EXPECT_EQ(cfg.steps, 100);
}

TEST_F(Config, ToTomlLoadsBackToTheSameValues) {
  cfg.seed = std::numeric_limits<int64_t>::min();
  cfg.lr = 0.1;
  cfg.steps = std::numeric_limits<int64_t>::max();
  cfg.nesterov = true;
  cfg.optimizer = "shampoo";
  cfg.data_path = "C:\\dir with \"quotes\"\ttab\nnewline \x01 caf\xc3\xa9";
  cfg.sources = {};
  cfg.resolution = {-1, 0, 7};
  cfg.betas = {1e-300, -0.0, 1.0 / 3.0, 5e-324, 1e22, INFINITY, -INFINITY, 2.0};
  cfg.run_name = "";
  const std::string text = schema.to_toml();
  expect_has(text, {"[optim]\n", "[data.train]\n", "# peak learning rate\nlr = 0.1\n",
                    "# optimizer (one of: sgd, adam, shampoo)\n"});
  EXPECT_LT(text.find("seed ="), text.find("[optim]")) << text;  // root keys before any table

  RunConfig other;
  other.lr = 5;
  ConfigSchema fresh;
  other.bind(fresh);
  fresh.load_string(text, "resolved.toml");
  EXPECT_EQ(other.seed, cfg.seed);
  EXPECT_EQ(other.lr, cfg.lr);
  EXPECT_EQ(other.steps, cfg.steps);
  EXPECT_EQ(other.nesterov, cfg.nesterov);
  EXPECT_EQ(other.optimizer, cfg.optimizer);
  EXPECT_EQ(other.data_path, cfg.data_path);
  EXPECT_EQ(other.sources, cfg.sources);
  EXPECT_EQ(other.resolution, cfg.resolution);
  ASSERT_EQ(other.betas.size(), cfg.betas.size());
  for (size_t i = 0; i < cfg.betas.size(); ++i) {
    EXPECT_EQ(other.betas[i], cfg.betas[i]) << i;
    EXPECT_EQ(std::signbit(other.betas[i]), std::signbit(cfg.betas[i])) << i;
  }
  EXPECT_EQ(other.run_name, cfg.run_name);
  EXPECT_EQ(fresh.to_toml(), text);
}

TEST_F(Config, RandomDoublesRoundTripExactly) {
  std::vector<double> values;
  uint64_t x = 0x9e3779b97f4a7c15ull;
  for (int i = 0; i < 2000; ++i) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    double d;
    std::memcpy(&d, &x, 8);
    if (std::isfinite(d)) values.push_back(d);
  }
  cfg.betas = values;
  RunConfig other;
  ConfigSchema fresh;
  other.bind(fresh);
  fresh.load_string(schema.to_toml(), "resolved.toml");
  EXPECT_EQ(other.betas, values);
}

TEST_F(Config, NanRoundTrips) {
  cfg.lr = NAN;
  RunConfig other;
  ConfigSchema fresh;
  other.bind(fresh);
  fresh.load_string(schema.to_toml(), "resolved.toml");
  EXPECT_TRUE(std::isnan(other.lr));
}

TEST_F(Config, HelpListsEveryOptionWithTypeValueAndDoc) {
  schema.apply_override("optim.lr=0.25");
  const std::string help = schema.help();
  EXPECT_EQ(std::count(help.begin(), help.end(), '\n'), 10);
  expect_has(help, {"optim.lr", "float", "0.25 (default 0.001)", "peak learning rate", "optim.steps",
                    "int", "100", "data.sources", "string list", "[\"a\"]", "data.resolution", "int list",
                    "[224, 160]", "optimizer (one of: sgd, adam, shampoo)", "bool", "false"});
  EXPECT_EQ(help.find("100 (default"), std::string::npos);  // unchanged values show no default
}

TEST(ConfigSchemaBind, RejectsBadDeclarations) {
  double a = 0, b = 0;
  std::string s = "x";
  ConfigSchema schema;
  schema.bind("optim.lr", &a, "");
  EXPECT_THROW(schema.bind("optim.lr", &b, ""), Error);           // twice
  EXPECT_THROW(schema.bind("optim", &b, ""), Error);              // a table of another key
  EXPECT_THROW(schema.bind("optim.lr.warmup", &b, ""), Error);    // a key as a table
  EXPECT_THROW(schema.bind("bad key", &b, ""), Error);
  EXPECT_THROW(schema.bind("a..b", &b, ""), Error);
  EXPECT_THROW(schema.bind("", &b, ""), Error);
  EXPECT_THROW(schema.bind("x.y", static_cast<double*>(nullptr), ""), Error);
  EXPECT_THROW(schema.bind("opt", &s, "", {"a", "b"}), Error);    // default not among choices
  EXPECT_TRUE(schema.contains("optim.lr"));
  EXPECT_FALSE(schema.contains("optim"));
}

// One member of a list option from the command line: teacher.1.resolution=384 (an ensemble).
TEST(ConfigOverrides, IndexedOverridesSetOrAppendOneListEntry) {
  std::vector<int64_t> res{224};
  std::vector<std::string> weights{"a.safetensors"};
  std::vector<double> mean{0.5, 0.5, 0.5};
  ConfigSchema s;
  s.bind("teacher.resolution", &res, "per teacher");
  s.bind("teacher.weights", &weights, "per teacher");
  s.bind("augment.mean", &mean, "per channel");
  s.apply_override("teacher.1.resolution=384");  // appends
  s.apply_override("teacher.0.resolution=160");  // replaces
  EXPECT_EQ(res, (std::vector<int64_t>{160, 384}));
  s.apply_override("teacher.1.weights=b.npz");
  EXPECT_EQ(weights, (std::vector<std::string>{"a.safetensors", "b.npz"}));
  s.apply_override("augment.2.mean=0.25");
  EXPECT_EQ(mean[2], 0.25);
  auto fails = [&](const std::string& o, const std::string& part) {
    try {
      s.apply_override(o);
      FAIL() << o << " was accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(part), std::string::npos) << e.what();
    }
  };
  fails("teacher.5.resolution=1", "has 2 entries");
  fails("teacher.0.resolution=big", "not a valid entry of teacher.resolution");
  fails("teacher.0.nothing=1", "teacher.0.nothing");
  EXPECT_EQ(res, (std::vector<int64_t>{160, 384})) << "a failed override changes nothing";
}

}  // namespace
}  // namespace kd
