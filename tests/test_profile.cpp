// tools/profile.sh: tool detection, usage errors and a missing profiler reported without side effects.
#include <gtest/gtest.h>

#include <filesystem>
#include <string>

#include "support/test_support.h"

namespace mman {
namespace {

std::string script() { return std::string("bash ") + MMAN_TEST_TOOLS_DIR + "/profile.sh"; }
std::string quoted(const std::string& s) { return "'" + s + "'"; }

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

TEST(ProfileScript, CheckReportsBothProfilersAndTheBuild) {
  const test::CommandResult r = test::run_command(script() + " check");
  EXPECT_TRUE(contains(r.output, "nsys (Nsight Systems): ")) << r.output;
  EXPECT_TRUE(contains(r.output, "ncu (Nsight Compute): ")) << r.output;
  EXPECT_TRUE(contains(r.output, "-lineinfo ")) << r.output;
  // Exit 3 exactly when a profiler is missing.
  EXPECT_EQ(r.exit_code, contains(r.output, "not found") ? 3 : 0) << r.output;
}

TEST(ProfileScript, UsageErrorsExitTwoWithAMessage) {
  struct Case {
    std::string args, message;
  };
  for (const Case& c : {Case{"bogus", "unknown mode 'bogus'"}, Case{"nsys", "needs a CONFIG"},
                        Case{"nsys /nonexistent/x.yaml", "'/nonexistent/x.yaml' does not exist"},
                        Case{"ncu --count 0 x.yaml", "--count needs a positive count"},
                        Case{"ncu --frobnicate", "unknown option '--frobnicate'"},
                        Case{"nsys --cmd -- true", "--cmd is for ncu"}, Case{"ncu --cmd", "needs a program"}}) {
    const test::CommandResult r = test::run_command(script() + " " + c.args);
    EXPECT_EQ(r.exit_code, 2) << c.args << ": " << r.output;
    EXPECT_TRUE(contains(r.output, c.message)) << c.args << ": " << r.output;
  }
  const test::CommandResult help = test::run_command(script() + " help");
  EXPECT_EQ(help.exit_code, 0);
  EXPECT_TRUE(contains(help.output, "Usage:")) << help.output;
}

TEST(ProfileScript, AMissingProfilerIsReportedBeforeAnythingIsWritten) {
  const test::CommandResult check = test::run_command(script() + " check");
  if (!contains(check.output, "nsys (Nsight Systems): not found"))
    GTEST_SKIP() << "Nsight Systems is installed here; profiling a run is not a unit test";
  test::TempDir dir;
  const std::string out = dir.file("profile");
  const std::string build = std::filesystem::path(MMAN_EXP_BINARY).parent_path().string();
  const std::string config = std::string(MMAN_TEST_SOURCE_DIR) + "/../experiments/smoke.yaml";
  const test::CommandResult r = test::run_command(script() + " nsys --build " + quoted(build) + " --out " +
                                                  quoted(out) + " " + quoted(config));
  EXPECT_EQ(r.exit_code, 3) << r.output;
  EXPECT_TRUE(contains(r.output, "nsys (Nsight Systems) is not installed")) << r.output;
  EXPECT_FALSE(std::filesystem::exists(out)) << "a report directory was created without a profiler";
}

}  // namespace
}  // namespace mman
