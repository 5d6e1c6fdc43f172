#include "core/parallel.h"

#include <tbb/blocked_range.h>
#include <tbb/global_control.h>
#include <tbb/info.h>
#include <tbb/parallel_for.h>
#include <tbb/task_arena.h>

#include <cstdlib>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>

extern "C" void openblas_set_num_threads(int);

namespace lowbit {
namespace {

struct ThreadState {
  std::mutex mu;
  int threads = 0;
  std::unique_ptr<tbb::global_control> control;
};

ThreadState& state() {
  static ThreadState s;
  return s;
}

int default_threads() {
  if (const char* env = std::getenv("LOWBIT_NUM_THREADS")) {
    char* end = nullptr;
    long v = std::strtol(env, &end, 10);
    if (end == env || *end != '\0' || v < 1 || v > 4096)
      throw std::invalid_argument(std::string("LOWBIT_NUM_THREADS must be a positive integer, got '") + env + "'");
    return static_cast<int>(v);
  }
  return tbb::info::default_concurrency();
}

void apply_threads(ThreadState& s, int n) {
  s.threads = n;
  s.control =
      std::make_unique<tbb::global_control>(tbb::global_control::max_allowed_parallelism, static_cast<size_t>(n));
  openblas_set_num_threads(1);
}

}  // namespace

void set_num_threads(int n) {
  if (n < 1) throw std::invalid_argument("set_num_threads: need n >= 1, got " + std::to_string(n));
  ThreadState& s = state();
  std::lock_guard<std::mutex> lock(s.mu);
  apply_threads(s, n);
}

int num_threads() {
  ThreadState& s = state();
  std::lock_guard<std::mutex> lock(s.mu);
  if (s.threads == 0) apply_threads(s, default_threads());
  return s.threads;
}

namespace detail {
void parallel_for_impl(int64_t begin, int64_t end, int64_t grain, const std::function<void(int64_t, int64_t)>& fn) {
  tbb::parallel_for(tbb::blocked_range<int64_t>(begin, end, static_cast<size_t>(grain)),
                    [&](const tbb::blocked_range<int64_t>& r) { fn(r.begin(), r.end()); });
}
}  // namespace detail

void parallel_chunks(int64_t begin, int64_t end, int64_t chunks,
                     const std::function<void(int64_t, int64_t, int64_t)>& fn) {
  if (end <= begin) return;
  if (chunks < 1) chunks = 1;
  const int64_t n = end - begin;
  if (chunks > n) chunks = n;
  auto bounds = [&](int64_t c) { return begin + n * c / chunks; };
  if (chunks == 1 || in_serial_scope() || num_threads() == 1) {
    for (int64_t c = 0; c < chunks; ++c) fn(c, bounds(c), bounds(c + 1));
    return;
  }
  tbb::parallel_for(tbb::blocked_range<int64_t>(0, chunks, 1), [&](const tbb::blocked_range<int64_t>& r) {
    for (int64_t c = r.begin(); c < r.end(); ++c) fn(c, bounds(c), bounds(c + 1));
  });
}

void parallel_tasks(int64_t n, const std::function<void(int64_t)>& fn) {
  if (n <= 0) return;
  if (n == 1 || in_serial_scope() || num_threads() == 1) {
    for (int64_t i = 0; i < n; ++i) fn(i);
    return;
  }
  tbb::parallel_for(tbb::blocked_range<int64_t>(0, n, 1), [&](const tbb::blocked_range<int64_t>& r) {
    for (int64_t i = r.begin(); i < r.end(); ++i) tbb::this_task_arena::isolate([&] { fn(i); });
  });
}

}  // namespace lowbit
