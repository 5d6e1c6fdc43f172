#include <doctest/doctest.h>

#include <atomic>
#include <thread>
#include <vector>

#include "core/parallel.h"

using namespace lowbit;

TEST_CASE("parallel_for visits every index exactly once") {
  for (int threads : {1, 2}) {
    set_num_threads(threads);
    std::vector<int> hits(10007, 0);
    parallel_for(0, static_cast<int64_t>(hits.size()), 64, [&](int64_t lo, int64_t hi) {
      for (int64_t i = lo; i < hi; ++i) hits[i] += 1;
    });
    for (int h : hits) REQUIRE(h == 1);
  }
}

TEST_CASE("parallel_chunks splits independently of the scheduler") {
  set_num_threads(2);
  std::vector<std::pair<int64_t, int64_t>> seen(7);
  parallel_chunks(3, 103, 7, [&](int64_t c, int64_t lo, int64_t hi) { seen[c] = {lo, hi}; });
  CHECK(seen.front().first == 3);
  CHECK(seen.back().second == 103);
  for (size_t c = 1; c < seen.size(); ++c) CHECK(seen[c].first == seen[c - 1].second);
}

TEST_CASE("inside a SerialScope every parallel region runs inline on the calling thread, in order") {
  set_num_threads(2);
  const auto me = std::this_thread::get_id();
  std::vector<std::pair<int64_t, int64_t>> calls;
  bool elsewhere = false;
  {
    SerialScope outer;
    {
      SerialScope nested;
      CHECK(in_serial_scope());
    }
    CHECK(in_serial_scope());
    parallel_for(0, 10007, 1, [&](int64_t lo, int64_t hi) {
      calls.push_back({lo, hi});
      elsewhere |= std::this_thread::get_id() != me;
    });
    std::vector<int64_t> chunks;
    parallel_chunks(0, 100, 7, [&](int64_t c, int64_t, int64_t) {
      chunks.push_back(c);
      elsewhere |= std::this_thread::get_id() != me;
    });
    std::vector<int64_t> tasks;
    parallel_tasks(5, [&](int64_t i) {
      tasks.push_back(i);
      elsewhere |= std::this_thread::get_id() != me;
    });
    CHECK(chunks == std::vector<int64_t>{0, 1, 2, 3, 4, 5, 6});
    CHECK(tasks == std::vector<int64_t>{0, 1, 2, 3, 4});
  }
  CHECK(!in_serial_scope());
  CHECK(calls == std::vector<std::pair<int64_t, int64_t>>{{0, 10007}});
  CHECK(!elsewhere);
  // Scopes are per thread: one on each of two tasks, neither leaking into the other or the caller.
  std::atomic<int> inside{0};
  parallel_tasks(2, [&](int64_t) {
    SerialScope s;
    inside += in_serial_scope();
  });
  CHECK(inside == 2);
  CHECK(!in_serial_scope());
}

TEST_CASE("set_num_threads rejects nonsense") { CHECK_THROWS(set_num_threads(0)); }
