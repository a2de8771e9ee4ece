// Label protocols: class maps, Table 1 counts under iemocap4, name matching and errors.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "mman/data/protocol.h"
#include "mman/error.h"

namespace mman {
namespace {

const std::vector<std::string> kIemocap = {"hap", "sad", "neu", "ang", "exc", "fru"};

std::string error_of(const std::string& protocol, const std::vector<std::string>& names) {
  try {
    make_protocol(protocol, names);
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

// The paper's Table 1 train counts per raw class; iemocap4 merges hap+exc and sad+fru.
TEST(Protocol, Iemocap4MergesTable1Counts) {
  const std::vector<int> counts = {504, 839, 1324, 933, 742, 1468};  // hap sad neu ang exc fru
  std::vector<int> labels;
  for (size_t k = 0; k < counts.size(); ++k) labels.insert(labels.end(), static_cast<size_t>(counts[k]), static_cast<int>(k));
  labels.push_back(-1);  // unlabelled stays unlabelled
  const LabelProtocol p = make_protocol("iemocap4", kIemocap);
  EXPECT_EQ(p.class_names, (std::vector<std::string>{"happy", "sad", "neutral", "angry"}));
  EXPECT_EQ(p.num_outputs(), 4);
  EXPECT_FALSE(p.binary());
  std::vector<int> per_class(4, 0);
  int context = 0;
  for (int y : labels) {
    const int c = p.map(y);
    if (c < 0) {
      ++context;
    } else {
      ++per_class[static_cast<size_t>(c)];
    }
  }
  EXPECT_EQ(per_class, (std::vector<int>{504 + 742, 839 + 1468, 1324, 933}));
  EXPECT_EQ(per_class, (std::vector<int>{1246, 2307, 1324, 933}));
  EXPECT_EQ(context, 1);
}

TEST(Protocol, MatchesRawNamesByNameNotPositionAndIgnoringCase) {
  const std::vector<std::string> names = {"FRU", "Ang", "neu", "EXC", "sad", "Hap", "oth"};
  const LabelProtocol p4 = make_protocol("iemocap4", names);
  EXPECT_EQ(p4.raw_to_class, (std::vector<int>{1, 3, 2, 0, 1, 0, -1}));  // 'oth' is context only
  const LabelProtocol p6 = make_protocol("iemocap6", names);
  EXPECT_EQ(p6.class_names, kIemocap);
  EXPECT_EQ(p6.raw_to_class, (std::vector<int>{5, 3, 2, 4, 1, 0, -1}));
  EXPECT_EQ(p6.num_outputs(), 6);
}

TEST(Protocol, Iemocap6KeepsTheSixClassesInConventionalOrder) {
  const LabelProtocol p = make_protocol("iemocap6", kIemocap);
  for (int k = 0; k < 6; ++k) EXPECT_EQ(p.map(k), k);
  EXPECT_EQ(p.map(-1), -1);
  EXPECT_EQ(p.map(6), -1);
}

TEST(Protocol, Binary4HasFourHeadsAndLeavesExcFruAsContext) {
  const LabelProtocol p = make_protocol("binary4", kIemocap);
  EXPECT_TRUE(p.binary());
  EXPECT_EQ(p.heads, 4);
  EXPECT_EQ(p.num_outputs(), 8);
  EXPECT_EQ(p.class_names, (std::vector<std::string>{"happy", "sad", "neutral", "angry"}));
  EXPECT_EQ(p.raw_to_class, (std::vector<int>{0, 1, 2, 3, -1, -1}));
}

TEST(Protocol, RawUsesTheFilesOwnNames) {
  const LabelProtocol p = make_protocol("raw", {"positive", "negative"});
  EXPECT_EQ(p.class_names, (std::vector<std::string>{"positive", "negative"}));
  EXPECT_EQ(p.raw_to_class, (std::vector<int>{0, 1}));
  EXPECT_EQ(p.num_outputs(), 2);
  EXPECT_EQ(make_protocol("raw", kIemocap).num_classes(), 6);
}

TEST(Protocol, IemocapProtocolsNameWhatIsMissingAndSuggestRaw) {
  for (const char* name : {"iemocap4", "iemocap6", "binary4"}) {
    const std::string msg = error_of(name, {"positive", "negative"});
    EXPECT_NE(msg.find(name), std::string::npos) << msg;
    EXPECT_NE(msg.find("lack hap, sad, neu, ang, exc, fru"), std::string::npos) << msg;
    EXPECT_NE(msg.find("'raw'"), std::string::npos) << msg;
  }
  const std::string msg = error_of("iemocap4", {"hap", "sad", "neu", "ang", "exc"});
  EXPECT_NE(msg.find("lack fru;"), std::string::npos) << msg;
}

TEST(Protocol, UnknownNameListsTheChoices) {
  const std::string msg = error_of("iemocap5", kIemocap);
  EXPECT_NE(msg.find("unknown label protocol 'iemocap5'"), std::string::npos) << msg;
  for (const std::string& n : protocol_names()) EXPECT_NE(msg.find(n), std::string::npos) << msg;
  EXPECT_EQ(protocol_names().size(), 4u);
}

}  // namespace
}  // namespace mman
