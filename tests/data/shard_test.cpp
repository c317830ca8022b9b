#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <map>
#include <memory>
#include <set>

#include "data/loader.h"
#include "data/sampler.h"
#include "data/shard_index.h"
#include "data/shard_pack.h"
#include "data/shard_source.h"
#include "tests/data/data_fixtures.h"

namespace kd {
namespace {

using test::TempDir;

#define EXPECT_CONTAINS(text, part) EXPECT_NE(std::string(text).find(part), std::string::npos) << (text)

// An ImageFolder of `per_class` images in each of three classes, random pixels of random sizes;
// PNGs and BMPs (lossless, so pixels compare exactly) and a JPEG per class.
std::string write_folder(const TempDir& dir, int per_class, uint64_t seed) {
  std::mt19937_64 rng(seed);
  const char* classes[] = {"cat", "dog", "emu"};
  for (int c = 0; c < 3; ++c)
    for (int k = 0; k < per_class; ++k) {
      const int w = 5 + int(rng() % 20), h = 4 + int(rng() % 20);
      const std::vector<uint8_t> px = test::random_bytes(size_t(w) * h * 3, rng());
      const std::string stem = std::string("folder/") + classes[c] + "/img" + std::to_string(k);
      if (k == 0) test::write_jpg(dir.file(stem + ".JPG"), w, h, 3, px);
      else if (k % 3 == 1) test::write_bmp(dir.file(stem + ".bmp"), w, h, 3, px);
      else test::write_png(dir.file(stem + ".png"), w, h, 3, px);
    }
  return dir.str() + "/folder";
}

// Packs `folder` into dir/out with shards of `shard_kib` KiB; returns the output folder.
std::string pack(const TempDir& dir, const std::string& folder, uint64_t shard_kib, bool shuffle = true) {
  PackOptions o;
  o.shard_bytes = shard_kib << 10;
  o.shuffle = shuffle;
  const std::string out = dir.str() + "/out";
  pack_shards(*open_image_folder(folder), folder, out, o);
  return out;
}

// Output of a shell command ("" when it cannot run).
std::string run_command(const std::string& command) {
  std::unique_ptr<FILE, int (*)(FILE*)> pipe(popen(command.c_str(), "r"), &pclose);
  std::string out;
  char buf[4096];
  for (size_t got; pipe && (got = fread(buf, 1, sizeof(buf), pipe.get())) > 0;) out.append(buf, got);
  return out;
}

TEST(Shards, PackedSamplesDecodeToTheFolderImagesWithTheirLabels) {
  TempDir dir;
  const std::string folder = write_folder(dir, 7, 1);
  const std::string out = pack(dir, folder, 4);
  const SourcePtr files = open_image_folder(folder), shards = open_shards(out, JpegDecoder::stb, 2);
  ASSERT_EQ(shards->size(), 21);
  EXPECT_EQ(shards->class_names(), (std::vector<std::string>{"cat", "dog", "emu"}));
  EXPECT_EQ(shards->num_classes(), 3);
  // Packed in a seeded random order; the index keeps every sample's original path.
  const ShardIndex index = read_shard_index(out);
  std::map<std::string, int64_t> folder_index;
  for (int64_t j = 0; j < files->size(); ++j) folder_index[files->file_path(j).substr(folder.size() + 1)] = j;
  std::set<int> used_shards;
  std::vector<int64_t> packed_order;
  for (int64_t i = 0; i < shards->size(); ++i) {
    ASSERT_EQ(folder_index.count(index.path(i)), 1u) << index.path(i);
    const int64_t j = folder_index[index.path(i)];
    packed_order.push_back(j);
    EXPECT_EQ(shards->label(i), files->label(j));
    const Image a = files->load(j), b = shards->load(i);
    EXPECT_EQ(b.label, files->label(j));
    ASSERT_EQ(std::tie(a.width, a.height), std::tie(b.width, b.height)) << shards->where(i);
    ASSERT_EQ(a.pixels, b.pixels) << shards->where(i);
    used_shards.insert(shards->shard(i));
  }
  EXPECT_GE(used_shards.size(), 4u) << "4 KiB shards hold one or two of these images each";
  EXPECT_EQ(*used_shards.rbegin() + 1, int(used_shards.size())) << "shards are numbered densely";
  std::sort(packed_order.begin(), packed_order.end());
  EXPECT_EQ(packed_order, std::vector<int64_t>({0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18,
                                                19, 20})) << "every image packed once";
  EXPECT_CONTAINS(shards->where(0), "shard-000000.tar member 000000000.");
  const std::string unshuffled = pack(dir, folder, 4, false);  // packs into the same folder again
  EXPECT_CONTAINS(open_shards(unshuffled)->where(0), "shard-000000.tar member 000000000.jpg (cat/img0.JPG)");
  EXPECT_NE(read_shard_index(unshuffled).path(0) + read_shard_index(unshuffled).path(1),
            index.path(0) + index.path(1)) << "the default pack order is not the folder's";
  EXPECT_CONTAINS(shards->describe(), "21 images in");
  EXPECT_EQ(shards->file_path(0), "");
}

TEST(Shards, StandardTarListsEveryMemberInOrder) {
  TempDir dir;
  const std::string out = pack(dir, write_folder(dir, 4, 2), 1 << 20, false);  // one shard, the folder's order
  const ShardIndex index = read_shard_index(out);
  ASSERT_EQ(index.shards.size(), 1u);
  std::string expected;
  for (int64_t i = 0; i < int64_t(index.samples.size()); ++i)
    expected += index.member_name(i) + "\n" + shard_member_name(i, ".cls") + "\n";
  EXPECT_CONTAINS(expected, "000000001.bmp\n000000001.cls\n000000002.png\n");
  const std::string listed = run_command("tar tf '" + out + "/shard-000000.tar' 2>&1");
  ASSERT_FALSE(listed.empty()) << "the tar binary did not run";
  EXPECT_EQ(listed, expected);
  // The .cls member holds the label as text; tar extracts the image bytes unchanged.
  EXPECT_EQ(run_command("tar xOf '" + out + "/shard-000000.tar' 000000005.cls"), "1");
  const std::string original = test::read_text(dir.str() + "/folder/dog/img1.bmp");
  ASSERT_GT(original.size(), 54u);
  EXPECT_EQ(run_command("tar xOf '" + out + "/shard-000000.tar' 000000005.bmp"), original);
}

TEST(Shards, PackRefusesAMissingFileAndLeavesNoIndexBehind) {
  TempDir dir;
  const std::string folder = write_folder(dir, 3, 3);
  const std::string out = pack(dir, folder, 4);
  ASSERT_NO_THROW(open_shards(out));
  // A second pack into the same folder that fails half way: no index must describe the mix.
  test::write_text(dir.file("folder/list.txt"), "cat/img1.bmp 0\ncat/missing.png 1\n");
  PackOptions o;
  o.shard_bytes = 4 << 10;
  try {
    pack_shards(*open_list_file(folder + "/list.txt", folder), folder, out, o);
    FAIL() << "packed a missing file";
  } catch (const Error& e) {
    EXPECT_CONTAINS(e.what(), "cat/missing.png");
  }
  try {
    open_shards(out);
    FAIL() << "opened an interrupted pack";
  } catch (const Error& e) {
    EXPECT_CONTAINS(e.what(), "index.tsv");
  }
}

TEST(Shards, ShardAwareOrderSeesEverySampleOnceAndStaysInsideAGroup) {
  // 10 shards of 3..7 samples each, shard_of scrambled so samples of a shard are not adjacent.
  std::vector<int> shard_of;
  for (int k = 0; k < 10; ++k)
    for (int j = 0; j < 3 + (k * 7) % 5; ++j) shard_of.push_back(k);
  std::mt19937_64 rng(4);
  std::shuffle(shard_of.begin(), shard_of.end(), rng);
  const int64_t n = int64_t(shard_of.size()), group = 3;
  const ShardLayout layout = shard_layout(shard_of, group);
  for (int64_t epoch : {0, 1, 5}) {
    const std::vector<int64_t> order = shard_epoch_order(layout, 9, epoch);
    std::vector<int64_t> sorted = order;
    std::sort(sorted.begin(), sorted.end());
    for (int64_t i = 0; i < n; ++i) ASSERT_EQ(sorted[size_t(i)], i) << "epoch " << epoch;
    // Walk the order: a group opens shards until it holds `group` of them, and the next group
    // starts only when every sample of the open shards has come.
    std::set<int> open;
    int64_t left = 0;  // samples of the open shards not seen yet
    int64_t groups = 0;
    for (int64_t s : order) {
      const int k = shard_of[size_t(s)];
      if (!open.count(k)) {
        ASSERT_LT(int64_t(open.size()), group) << "a group spans more than " << group << " shards";
        if (open.empty()) ++groups;
        open.insert(k);
        left += int64_t(std::count(shard_of.begin(), shard_of.end(), k));
      }
      if (--left == 0) open.clear();
    }
    EXPECT_EQ(groups, 4) << "10 shards in groups of 3";
  }
  EXPECT_NE(shard_epoch_order(layout, 9, 0), shard_epoch_order(layout, 9, 1)) << "each epoch has its own order";
  EXPECT_NE(shard_epoch_order(layout, 9, 0), shard_epoch_order(layout, 10, 0)) << "another seed, another order";
}

TEST(Shards, ShardAwareSamplerIsAPureFunctionOfSeedAndStepAndSplitsOverRanks) {
  std::vector<int> shard_of;
  for (int i = 0; i < 96; ++i) shard_of.push_back((i * 5) % 12);  // 12 shards of 8
  const int64_t batch = 12;
  EpochSampler a(shard_layout(shard_of, 4), batch, 21), b(shard_layout(shard_of, 4), batch, 21);
  EpochSampler other(shard_layout(shard_of, 4), batch, 22);
  std::vector<int64_t> stream;
  for (int64_t step = 0; step < 24; ++step) {
    const auto idx = a.indices(step);
    stream.insert(stream.end(), idx.begin(), idx.end());
  }
  for (int64_t epoch = 0; epoch < 3; ++epoch) {
    std::vector<int64_t> seen(stream.begin() + epoch * 96, stream.begin() + (epoch + 1) * 96);
    EXPECT_EQ(seen, shard_epoch_order(shard_layout(shard_of, 4), 21, epoch));
  }
  EXPECT_EQ(b.indices(17), a.indices(17)) << "step 17 recomputed fresh (resume)";
  EXPECT_NE(other.indices(0), a.indices(0));
  for (int ranks : {2, 3, 4}) {
    for (int64_t step : {0, 7, 13}) {
      std::vector<int64_t> joined;
      for (int r = 0; r < ranks; ++r) {
        EpochSampler rank(shard_layout(shard_of, 4), batch, 21, r, ranks);
        const auto part = rank.indices(step);
        joined.insert(joined.end(), part.begin(), part.end());
      }
      EXPECT_EQ(joined, a.indices(step)) << ranks << " ranks, step " << step;
    }
  }
  EXPECT_THROW(EpochSampler(ShardLayout{{0, 1, 1}, {0, 3}, 4}, 1, 0), Error) << "a sample listed twice";
  EXPECT_THROW(shard_layout(shard_of, 0), Error) << "groups of 0 shards";
}

TEST(Shards, ATruncatedShardAndACorruptMemberAreSkippedAndCountedByTheLoader) {
  TempDir dir;
  const std::string out = pack(dir, write_folder(dir, 5, 5), 3);
  const ShardIndex index = read_shard_index(out);
  const int64_t n = int64_t(index.samples.size());
  // Sample 4's image bytes become noise; the last shard loses its last member's second half.
  const ShardSample corrupt = index.samples[4];
  std::string shard = test::read_text(out + "/" + index.shards[size_t(corrupt.shard)].name);
  const std::vector<uint8_t> noise = test::random_bytes(size_t(corrupt.size), 6);
  std::copy(noise.begin(), noise.end(), shard.begin() + std::ptrdiff_t(corrupt.offset));
  test::write_text(out + "/" + index.shards[size_t(corrupt.shard)].name, shard);
  const ShardSample last = index.samples.back();
  ASSERT_NE(last.shard, corrupt.shard);
  const std::string last_path = out + "/" + index.shards.back().name;
  std::string tail = test::read_text(last_path);
  tail.resize(size_t(last.offset + last.size / 2));
  test::write_text(last_path, tail);

  std::vector<std::string> reported;
  LoaderOptions o;
  o.batch_size = 4;
  o.num_threads = 3;
  o.on_bad_image = [&](const std::string& origin, const std::string&) { reported.push_back(origin); };
  std::vector<std::vector<int64_t>> batches;
  for (int64_t i = 0; i < n; i += 4) batches.push_back({i, i + 1 < n ? i + 1 : 0, i + 2 < n ? i + 2 : 0});
  Loader loader(open_shards(out, JpegDecoder::stb, 2), fixed_plan(batches), o);
  int64_t images = 0;
  while (auto batch = loader.next()) images += int64_t(batch->size());
  EXPECT_EQ(images, int64_t(batches.size()) * 3);
  EXPECT_EQ(loader.bad_images(), 2);
  ASSERT_EQ(reported.size(), 2u);
  EXPECT_CONTAINS(reported[0], shard_file_name(corrupt.shard) + " member 000000004.");
  EXPECT_CONTAINS(reported[1], shard_file_name(last.shard) + " member " + index.member_name(n - 1));
}

TEST(Shards, AMalformedIndexIsAnErrorNamingIt) {
  TempDir dir;
  const std::string out = pack(dir, write_folder(dir, 3, 7), 4);
  const std::string good = test::read_text(out + "/index.tsv");
  const ShardIndex index = read_shard_index(out);
  const std::string first_sample = "sample\t0\t512\t" + std::to_string(index.samples[0].size);
  ASSERT_NE(good.find(first_sample), std::string::npos);
  auto replaced = [&](const std::string& from, const std::string& to) {
    std::string text = good;
    text.replace(text.find(from), from.size(), to);
    return text;
  };
  const std::string shards = std::to_string(index.shards.size());
  const struct {
    std::string text, complaint;
  } cases[] = {
      {replaced("kd-shards\t1\t" + shards, "kd-shards\t1\t" + std::to_string(index.shards.size() + 1)),
       "shards, " + shards + " are listed"},
      {replaced(first_sample, "sample\t0\t99999999\t" + std::to_string(index.samples[0].size)), "offset 99999999"},
      {replaced(first_sample, "sample\t0\t512\t9999999"), "past the end of shard-000000.tar"},
      {replaced("shard-000001.tar", "shard-000099.tar"), "shard-000099.tar is missing"},
      {good.substr(0, good.rfind('\n', good.size() - 2) + 1), "a truncated index"},
      {"{\"not\": \"an index\"}\n", "kd-shards"},
  };
  for (const auto& c : cases) {
    test::write_text(out + "/index.tsv", c.text);
    try {
      open_shards(out);
      ADD_FAILURE() << "accepted an index with " << c.complaint;
    } catch (const Error& e) {
      EXPECT_CONTAINS(e.what(), out + "/index.tsv");
      EXPECT_CONTAINS(e.what(), c.complaint);
    }
  }
}

}  // namespace
}  // namespace kd
