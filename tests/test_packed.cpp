// PackedLayout: step sizes and row offsets of time-major packed conversations.
#include <gtest/gtest.h>

#include "mman/error.h"
#include "mman/packed.h"

namespace mman {

TEST(PackedLayout, StepsAndOffsetsFollowLengths) {
  const PackedLayout p = PackedLayout::from_lengths({4, 2, 2, 1});
  EXPECT_EQ(p.convs(), 4);
  EXPECT_EQ(p.steps(), 4);
  EXPECT_EQ(p.rows(), 9);
  EXPECT_EQ(p.batch_sizes, (std::vector<int>{4, 3, 1, 1}));
  EXPECT_EQ(p.step_offsets, (std::vector<int64_t>{0, 4, 7, 8, 9}));
  EXPECT_EQ(p.row(0, 3), 8);
  EXPECT_EQ(p.row(2, 1), 6);
}

TEST(PackedLayout, RejectsUnsortedOrEmptyConversations) {
  EXPECT_THROW(PackedLayout::from_lengths({1, 2}), Error);
  EXPECT_THROW(PackedLayout::from_lengths({2, 0}), Error);
  EXPECT_EQ(PackedLayout::from_lengths({}).rows(), 0);
}

}  // namespace mman
