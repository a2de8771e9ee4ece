// tools/sanitize_kernels.sh (the KernelsNative.ComputeSanitizer ctest entry) with stand-in programs: usage
// errors, the skips (exit 77, with the reason) without compute-sanitizer or a usable device, the memcheck and
// racecheck runs it makes, and a sanitizer's errors turned into a failure.
#include <gtest/gtest.h>

#include <string>

#include "support/test_support.h"

namespace mman {
namespace {

std::string script() { return std::string("bash ") + MMAN_TEST_TOOLS_DIR + "/sanitize_kernels.sh"; }
bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

// A folder with a stand-in compute-sanitizer (logs its arguments, exits 86 -- "errors found" -- when
// FAKE_SANITIZER_ERRORS is set, else runs the program as the real one does) and stand-ins for the test
// binary whose probe test passes or skips with a reason, as GoogleTest prints them.
struct FakeTools {
  test::TempDir dir;
  std::string sanitizer = dir.file("compute-sanitizer");
  std::string log = dir.file("log");
  std::string usable = dir.file("usable_binary");
  std::string unusable = dir.file("unusable_binary");

  FakeTools() {
    write(sanitizer, "echo \"sanitizer $*\" >> '" + log + "'\n[ -n \"$FAKE_SANITIZER_ERRORS\" ] && exit 86\nshift 4\nexec \"$@\"\n");
    write(usable, "case \"$1\" in\n  --gtest_filter=KernelsNative.DeviceIsUsable)\n"
                  "    echo '[ RUN      ] KernelsNative.DeviceIsUsable'\n"
                  "    echo '[       OK ] KernelsNative.DeviceIsUsable (0 ms)' ;;\n"
                  "  *) echo \"tests $*\" >> '" + log + "' ;;\nesac\n");
    write(unusable, "echo '[ RUN      ] KernelsNative.DeviceIsUsable'\necho 'x.cpp:75: Skipped'\n"
                    "echo 'no usable CUDA device: CUDA driver version is insufficient for CUDA runtime version'\n"
                    "echo '[  SKIPPED ] KernelsNative.DeviceIsUsable (0 ms)'\n");
  }
  void write(const std::string& path, const std::string& body) {
    const test::CommandResult r =
        test::run_command("printf '%s' '#!/bin/sh\n' > '" + path + "' && cat >> '" + path + "' <<'MMAN_EOF'\n" + body +
                          "MMAN_EOF\nchmod +x '" + path + "'");
    ASSERT_EQ(r.exit_code, 0) << r.output;
  }
  test::CommandResult run(const std::string& binary, const std::string& env = "") const {
    return test::run_command(env + " MMAN_COMPUTE_SANITIZER='" + sanitizer + "' " + script() + " '" + binary + "'");
  }
};

TEST(SanitizeKernelsScript, UsageErrorsExitTwo) {
  test::CommandResult r = test::run_command(script());
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_TRUE(contains(r.output, "expected one argument")) << r.output;
  r = test::run_command(script() + " /nonexistent/test_kernels_native");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_TRUE(contains(r.output, "is not an executable file")) << r.output;
  EXPECT_EQ(test::run_command(script() + " --help").exit_code, 0);
}

TEST(SanitizeKernelsScript, SkipsWithTheReasonWithoutTheToolOrADevice) {
  FakeTools tools;
  test::CommandResult r =
      test::run_command("MMAN_COMPUTE_SANITIZER=/nonexistent/compute-sanitizer " + script() + " '" + tools.usable + "'");
  EXPECT_EQ(r.exit_code, 77) << r.output;
  EXPECT_TRUE(contains(r.output, "skipped: MMAN_COMPUTE_SANITIZER='/nonexistent/compute-sanitizer' is not an executable"))
      << r.output;
  r = tools.run(tools.unusable);
  EXPECT_EQ(r.exit_code, 77) << r.output;
  EXPECT_TRUE(contains(r.output, "skipped: no usable CUDA device: CUDA driver version is insufficient")) << r.output;
  EXPECT_EQ(test::read_file(tools.log), "") << "the sanitizer ran without a device";
}

TEST(SanitizeKernelsScript, RunsMemcheckOnAllAndRacecheckOnSharedMemoryKernels) {
  FakeTools tools;
  const test::CommandResult r = tools.run(tools.usable);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "memcheck and racecheck clean")) << r.output;
  const std::string log = test::read_file(tools.log);
  EXPECT_TRUE(contains(log, "sanitizer --tool memcheck --error-exitcode 86 " + tools.usable + "\n")) << log;
  EXPECT_TRUE(contains(log, "sanitizer --tool racecheck --error-exitcode 86 " + tools.usable +
                                " --gtest_filter=KernelsNative.Mma*:KernelsNative.CrossEntropy*"))
      << log;
  EXPECT_TRUE(contains(log, "tests --gtest_filter=KernelsNative.Mma*")) << "racecheck ran the tests: " << log;
}

TEST(SanitizeKernelsScript, SanitizerErrorsFail) {
  FakeTools tools;
  const test::CommandResult r = tools.run(tools.usable, "FAKE_SANITIZER_ERRORS=1");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_TRUE(contains(r.output, "memcheck reported errors")) << r.output;
  EXPECT_TRUE(contains(r.output, "racecheck reported errors")) << r.output;
}

}  // namespace
}  // namespace mman
