// LOWBIT_SKIP("reason"): ends the current doctest test case as *skipped*, e.g. when the data it
// needs is absent. CTest only sees an exit code, so tests/doctest_main.cpp turns skips into one:
//
//   - every executed test case ended in LOWBIT_SKIP, and nothing failed -> exit 77, which
//     tests/CMakeLists.txt maps to CTest's "Skipped" (SKIP_RETURN_CODE 77);
//   - any failure -> doctest's own non-zero code (a skip never hides a failure);
//   - otherwise (at least one case ran for real) -> 0, and the skipped cases are listed on stderr.
//
// LOWBIT_SKIP must come first in its test case, before any assertion (CHECK, REQUIRE, ...) and
// any SUBCASE; otherwise the executable fails (exit 1) naming the case: a case that checked
// something did not cleanly skip, and the `return` inside a SUBCASE would also drop its sibling
// subcases unseen. Since one real case makes the whole executable "Passed", skippable cases belong
// in an executable of their own whose cases are registered one CTest test each (see
// LOWBIT_TESTS_PER_CASE in tests/CMakeLists.txt), e.g. tests/test_data_shared.cpp.
#pragma once

#include <doctest/doctest.h>

#include <string>

namespace lowbit::testing {
// Records a skip of the current test case (called by LOWBIT_SKIP; defined in doctest_main.cpp).
void mark_skipped(const std::string& reason);
}  // namespace lowbit::testing

#define LOWBIT_SKIP(reason)                               \
  do {                                                    \
    const std::string lowbit_skip_reason_ = (reason);     \
    MESSAGE("skipped: " << lowbit_skip_reason_);          \
    ::lowbit::testing::mark_skipped(lowbit_skip_reason_); \
    return;                                               \
  } while (0)
