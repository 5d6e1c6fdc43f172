// The doctest main shared by every test executable, with skip reporting (tests/test_skip.h):
// LOWBIT_SKIP marks the running test case as skipped; a listener counts the executed cases and the
// skipped ones; main() returns 77 (CTest's SKIP_RETURN_CODE, set in tests/CMakeLists.txt) when
// every executed case was skipped and none failed, so CTest reports "Skipped" instead of "Passed".
// Failures keep doctest's own exit code; a run where any case ran for real returns 0 and lists the
// skipped cases on stderr. A LOWBIT_SKIP after an assertion or a SUBCASE of its case is an error
// (exit 1): the case did run something, and the skip's `return` would drop the sibling subcases.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <cstdio>
#include <string>
#include <vector>

#include "test_skip.h"

namespace {

struct SkipState {
  unsigned cases_run = 0;
  unsigned cases_failed = 0;
  std::vector<std::string> skipped;  // "case: reason", one per skipped case
  std::vector<std::string> misused;  // cases that checked or entered a SUBCASE before LOWBIT_SKIP
  // The running case.
  std::string current;
  std::string reason;
  bool skip_called = false;
  bool subcase_entered = false;
};

SkipState& state() {
  static SkipState s;
  return s;
}

struct SkipListener : doctest::IReporter {
  explicit SkipListener(const doctest::ContextOptions&) {}

  void test_case_start(const doctest::TestCaseData& tc) override {
    SkipState& s = state();
    ++s.cases_run;
    s.current = tc.m_name;
    s.reason.clear();
    s.skip_called = false;
    s.subcase_entered = false;
  }
  void subcase_start(const doctest::SubcaseSignature&) override { state().subcase_entered = true; }
  void test_case_end(const doctest::CurrentTestCaseStats& stats) override {
    SkipState& s = state();
    if (!s.skip_called) return;
    // A skip must come before anything real: a case that already asserted (or ran a SUBCASE,
    // whose siblings the skip's return would also drop) did not cleanly skip.
    if (stats.numAssertsCurrentTest > 0 || s.subcase_entered)
      s.misused.push_back(s.current);
    else
      s.skipped.push_back(s.current + ": " + s.reason);
  }
  void test_run_end(const doctest::TestRunStats& stats) override {
    state().cases_failed = stats.numTestCasesFailed + (stats.numAssertsFailed > 0 ? 1 : 0);
  }

  void report_query(const doctest::QueryData&) override {}
  void test_run_start() override {}
  void test_case_reenter(const doctest::TestCaseData&) override {}
  void test_case_exception(const doctest::TestCaseException&) override {}
  void subcase_end() override {}
  void log_assert(const doctest::AssertData&) override {}
  void log_message(const doctest::MessageData&) override {}
  void test_case_skipped(const doctest::TestCaseData&) override {}
};

REGISTER_LISTENER("lowbit_skip", 1, SkipListener);

}  // namespace

namespace lowbit::testing {
void mark_skipped(const std::string& reason) {
  SkipState& s = state();
  s.skip_called = true;
  s.reason = reason;
}
}  // namespace lowbit::testing

int main(int argc, char** argv) {
  doctest::Context context(argc, argv);
  const int rc = context.run();
  if (context.shouldExit()) return rc;  // --help, --list-test-cases, ...
  const SkipState& s = state();
  if (!s.skipped.empty()) {
    std::fprintf(stderr, "[lowbit] %zu of %u test case(s) skipped:\n", s.skipped.size(), s.cases_run);
    for (const std::string& line : s.skipped) std::fprintf(stderr, "  %s\n", line.c_str());
  }
  if (!s.misused.empty()) {
    std::fprintf(stderr,
                 "[lowbit] error: LOWBIT_SKIP after an assertion or a SUBCASE (skip first thing in the case):\n");
    for (const std::string& name : s.misused) std::fprintf(stderr, "  %s\n", name.c_str());
    return 1;
  }
  if (rc == 0 && s.cases_failed == 0 && s.cases_run > 0 && s.skipped.size() == s.cases_run) {
    std::fprintf(stderr, "[lowbit] every executed test case was skipped: exit code 77 (CTest: Skipped)\n");
    return 77;
  }
  return rc;
}
