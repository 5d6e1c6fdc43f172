// Error reporting: every failed check throws lowbit::Error with a message that names the op and what is wrong.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>

namespace lowbit {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

namespace detail {
template <class... Args>
std::string concat(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  return os.str();
}
}  // namespace detail

}  // namespace lowbit

// LOWBIT_CHECK(cond, "op", ": message parts ", value, ...) throws lowbit::Error("op: message parts value...").
#define LOWBIT_CHECK(cond, ...)                                                \
  do {                                                                         \
    if (!(cond)) throw ::lowbit::Error(::lowbit::detail::concat(__VA_ARGS__)); \
  } while (0)
