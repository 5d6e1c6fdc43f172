#include <doctest/doctest.h>

#include <atomic>
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

TEST_CASE("set_num_threads rejects nonsense") { CHECK_THROWS(set_num_threads(0)); }
