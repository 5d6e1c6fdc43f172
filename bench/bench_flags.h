// Command-line flags the bench binaries read before handing the rest to Google Benchmark.
#pragma once

#include <cstring>

namespace lowbit::bench {

// The value of `flag` at argv[i] ("--flag=V" or "--flag V", advancing i past V), else nullptr.
inline const char* flag_value(int argc, char** argv, int& i, const char* flag) {
  const size_t n = std::strlen(flag);
  if (std::strncmp(argv[i], flag, n) == 0 && argv[i][n] == '=') return argv[i] + n + 1;
  if (std::strcmp(argv[i], flag) == 0 && i + 1 < argc) return argv[++i];
  return nullptr;
}

}  // namespace lowbit::bench
