// YamlMap: typed getters, locations in errors, unknown keys with suggestions, --set overrides.
#include <gtest/gtest.h>

#include <fstream>

#include "mman/error.h"
#include "mman/exp/yaml_reader.h"
#include "support/test_support.h"

namespace mman {
namespace {

struct Loaded {
  std::shared_ptr<YamlSource> source = std::make_shared<YamlSource>();
  YAML::Node root;
};

Loaded load(const test::TempDir& dir, const std::string& text, const std::vector<std::string>& overrides = {}) {
  const std::string path = dir.file("c.yaml");
  std::ofstream(path) << text;
  Loaded l;
  l.root = load_yaml_with_overrides(path, overrides, *l.source);
  return l;
}

TEST(YamlReader, ReadsTypedValuesWithDefaults) {
  test::TempDir dir;
  Loaded l = load(dir, "train:\n  lr: 1e-3\n  epochs: 20\n  seeds: [1, 2]\n  shuffle: true\nname: x\n");
  YamlMap root(l.source, l.root, "");
  YamlMap train = root.map("train");
  EXPECT_DOUBLE_EQ(train.number("lr", 0.1, 0, 1, true), 1e-3);
  EXPECT_EQ(train.integer("epochs", 100, 1, 1000), 20);
  EXPECT_EQ(train.integer("patience", 7, 0, 100), 7);
  EXPECT_EQ(train.integer_list("seeds", {0}, 0, 1 << 30), (std::vector<int64_t>{1, 2}));
  EXPECT_TRUE(train.boolean("shuffle", false));
  EXPECT_EQ(root.string("name", ""), "x");
  EXPECT_NO_THROW(train.finish());
  EXPECT_NO_THROW(root.finish());
}

TEST(YamlReader, ErrorsCarryFileLineColumnAndKeyPath) {
  test::TempDir dir;
  Loaded l = load(dir, "train:\n  lr: fast\n  epochs: -3\n");
  YamlMap train = YamlMap(l.source, l.root, "").map("train");
  EXPECT_EQ(test::error_message([&] { train.number("lr", 0.1, 0, 1, true); }),
            dir.file("c.yaml") + ":2:7: train.lr: expected a number, found 'fast'");
  EXPECT_EQ(test::error_message([&] { train.integer("epochs", 1, 1, 1000); }),
            dir.file("c.yaml") + ":3:11: train.epochs: expected an integer in [1, 1000], found -3");
}

TEST(YamlReader, UnknownKeySuggestsTheClosestKnownOne) {
  test::TempDir dir;
  Loaded l = load(dir, "train:\n  lr: 0.001\n  epocs: 5\n");
  YamlMap train = YamlMap(l.source, l.root, "").map("train");
  train.number("lr", 0.1, 0, 1);
  train.integer("epochs", 1, 1, 10);
  EXPECT_EQ(test::error_message([&] { train.finish(); }),
            dir.file("c.yaml") + ":3:3: train.epocs: unknown key 'epocs' (did you mean 'epochs'?)");
}

TEST(YamlReader, ChoiceListsOptionsAndSuggests) {
  test::TempDir dir;
  Loaded l = load(dir, "backend: cdua\n");
  YamlMap root(l.source, l.root, "");
  EXPECT_EQ(test::error_message([&] { root.choice("backend", "auto", {"auto", "cpu", "cuda"}); }),
            dir.file("c.yaml") + ":1:10: backend: expected one of auto, cpu, cuda, found 'cdua' (did you mean 'cuda'?)");
}

TEST(YamlReader, OverridesReplaceAndCreateKeysAndAreNamedInErrors) {
  test::TempDir dir;
  Loaded l = load(dir, "train:\n  lr: 0.001\n", {"train.lr=0.5", "train.seeds=[3, 4]", "data.protocol=iemocap6"});
  YamlMap root(l.source, l.root, "");
  YamlMap train = root.map("train");
  EXPECT_DOUBLE_EQ(train.number("lr", 0.1, 0, 1), 0.5);
  EXPECT_EQ(train.integer_list("seeds", {0}, 0, 100), (std::vector<int64_t>{3, 4}));
  EXPECT_EQ(root.map("data").string("protocol", ""), "iemocap6");

  Loaded bad = load(dir, "train:\n  lr: 0.001\n", {"train.lr=abc"});
  YamlMap bad_train = YamlMap(bad.source, bad.root, "").map("train");
  EXPECT_EQ(test::error_message([&] { bad_train.number("lr", 0.1, 0, 1); }),
            "--set train.lr=abc: train.lr: expected a number, found 'abc'");
}

TEST(YamlReader, BadFilesAndBadOverridesAreClearErrors) {
  test::TempDir dir;
  YamlSource source;
  EXPECT_NE(test::error_message([&] { load_yaml_with_overrides(dir.file("missing.yaml"), {}, source); }).find("cannot open"),
            std::string::npos);
  EXPECT_NE(test::error_message([&] { load(dir, "train: [1, 2\n"); }).find("invalid YAML"), std::string::npos);
  EXPECT_NE(test::error_message([&] { load(dir, "- a\n- b\n"); }).find("expected a mapping"), std::string::npos);
  EXPECT_NE(test::error_message([&] { load(dir, "a: 1\n", {"novalue"}); }).find("expected key.path=value"), std::string::npos);
  EXPECT_NE(test::error_message([&] { load(dir, "a: 1\n", {"a.b=2"}); }).find("'a' is not a mapping"), std::string::npos);
}

TEST(YamlReader, EditDistance) {
  EXPECT_EQ(edit_distance("kitten", "sitting"), 3u);
  EXPECT_EQ(edit_distance("", "abc"), 3u);
  EXPECT_EQ(did_you_mean("zzzzzz", {"lr", "epochs"}), "");
}

}  // namespace
}  // namespace mman
