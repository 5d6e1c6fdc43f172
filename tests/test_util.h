// Small helpers shared by the test files: a temporary directory per test case, and checks on the
// lowbit::Error a call throws.
#pragma once

#include <doctest/doctest.h>
#include <unistd.h>

#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "core/error.h"

namespace lowbit::testing {

// A fresh directory (temp dir / "lowbit_<name>_<pid>"), removed with its contents afterwards.
struct TempDir {
  std::filesystem::path path;
  explicit TempDir(const std::string& name) {
    path = std::filesystem::temp_directory_path() / ("lowbit_" + name + "_" + std::to_string(::getpid()));
    std::filesystem::remove_all(path);
    std::filesystem::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  std::string operator/(const std::string& name) const { return (path / name).string(); }
};

// The message of the lowbit::Error f throws, "" when it throws none.
inline std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

inline bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

// Runs fn, requires a lowbit::Error whose message contains every one of `parts`.
inline void expect_error(const std::function<void()>& fn, const std::vector<std::string>& parts) {
  const std::string message = error_of(fn);
  REQUIRE_MESSAGE(!message.empty(), "expected a lowbit::Error mentioning ", parts[0]);
  for (const auto& p : parts) CHECK_MESSAGE(contains(message, p), "\"", message, "\" lacks \"", p, "\"");
}

}  // namespace lowbit::testing
