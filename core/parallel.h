// Threading for lowbit: one oneTBB arena sized by set_num_threads, one parallel_for.
//
// Contract
//   set_num_threads(n)   caps every lowbit parallel region at n threads (tbb::global_control).
//                        Default: env LOWBIT_NUM_THREADS, else the machine's hardware threads.
//   parallel_for(b, e, grain, fn) calls fn(lo, hi) on disjoint sub-ranges covering [b, e);
//                        ranges shorter than `grain` run inline on the caller. Every index is
//                        visited by exactly one call, so kernels that write disjoint outputs are
//                        deterministic for any thread count.
//   SerialScope          while one lives on a thread, the parallel_for, parallel_chunks and
//                        parallel_tasks calls made on that thread run inline on it (serially, in
//                        index order): for a task that already has a core to itself (the integer
//                        engine running whole chunks of a batch in parallel), whose kernels'
//                        own parallel regions would only add fork/join. Nests; the results are the
//                        same, since every region's result is independent of the thread count.
//   OpenBLAS is kept single-threaded (we own the cores); Eigen is built EIGEN_DONT_PARALLELIZE.
#pragma once

#include <cstdint>
#include <functional>

namespace lowbit {

void set_num_threads(int n);
int num_threads();

namespace detail {
inline thread_local int serial_depth = 0;  // SerialScopes alive on this thread
void parallel_for_impl(int64_t begin, int64_t end, int64_t grain, const std::function<void(int64_t, int64_t)>& fn);
}  // namespace detail

class SerialScope {
 public:
  SerialScope() { ++detail::serial_depth; }
  ~SerialScope() { --detail::serial_depth; }
  SerialScope(const SerialScope&) = delete;
  SerialScope& operator=(const SerialScope&) = delete;
};

inline bool in_serial_scope() { return detail::serial_depth > 0; }

template <class F>
void parallel_for(int64_t begin, int64_t end, int64_t grain, F&& fn) {
  if (end <= begin) return;
  if (grain < 1) grain = 1;
  if (end - begin <= grain || in_serial_scope() || num_threads() == 1) {
    fn(begin, end);
    return;
  }
  detail::parallel_for_impl(begin, end, grain, std::function<void(int64_t, int64_t)>(fn));
}

// Splits [begin, end) into exactly `chunks` contiguous pieces, fixed by the range alone (not the
// scheduler), and calls fn(chunk_index, lo, hi) for each in parallel. Use for reductions whose
// partial results are combined in chunk order: the answer depends only on `chunks`.
void parallel_chunks(int64_t begin, int64_t end, int64_t chunks,
                     const std::function<void(int64_t, int64_t, int64_t)>& fn);

// Runs fn(i) for every i in [0, n) as concurrent tasks (independent jobs, e.g. DCQ's sections).
// Each task is isolated: a thread waiting inside task i's nested parallel regions runs only task
// i's work, never another task's, so per-thread state (kernel scratch buffers, the autograd grad
// mode) is never shared by two tasks in flight. Nested parallel regions still spread over the
// threads that are free. With one thread the tasks run in index order on the caller.
void parallel_tasks(int64_t n, const std::function<void(int64_t)>& fn);

}  // namespace lowbit
