// Data-parallel processes: a thin wrapper over MPI (docs/distributed.md).
//
// Contract
//   - Built with LOWBIT_WITH_MPI (CMake option, on when MPI is found) the functions below talk to
//     MPI_COMM_WORLD; built without it they are the single-process stubs (rank 0 of 1, collectives
//     are no-ops), so code calls them unconditionally.
//   - init() starts MPI only when the process was launched by mpirun / mpiexec (the launcher's
//     environment: OMPI_COMM_WORLD_SIZE, PMI_SIZE, PMIX_RANK); a program started on its own stays a
//     single process and never touches MPI. init() is idempotent; finalize() ends MPI if init()
//     started it (also registered with atexit, so an early return cannot skip it).
//   - Only the calling (main) thread uses MPI (MPI_THREAD_FUNNELED); oneTBB threads never do.
//   - Collectives must be called by every rank in the same order with the same sizes. Their results
//     are identical on every rank (MPI_Allreduce delivers the same reduced buffer everywhere).
//   - abort(code) ends every rank of the job (MPI_Abort): an error on one rank must not leave the
//     others waiting in a collective.
#pragma once

#include <cstdint>
#include <memory>

namespace lowbit::dist {

bool compiled_with_mpi();   // LOWBIT_WITH_MPI
bool launched_by_mpirun();  // the launcher's environment variables are set

void init();
void finalize();
bool active();  // init() started MPI (and finalize() has not ended it)

int rank();  // 0 without MPI
int size();  // 1 without MPI
inline bool is_root() { return rank() == 0; }
// Ranks sharing this node (OMPI_COMM_WORLD_LOCAL_SIZE), 1 without MPI: the default thread count per
// rank is the node's hardware threads divided by it.
int local_size();

// Element-wise sums over every rank, in place.
void allreduce_sum(float* data, int64_t n);
void allreduce_sum(double* data, int64_t n);
// Non-blocking element-wise sums (MPI_Iallreduce), in place: the buffer must stay alive and untouched
// until the request completes. Start them in the same order on every rank; wait() completes one,
// test() drives MPI's progress and says whether it has completed. A request destroyed while pending
// is waited for. Without MPI (or with one rank) a request is complete at once.
class Request {
 public:
  Request();
  ~Request();
  Request(Request&&) noexcept;
  Request& operator=(Request&&) noexcept;
  bool pending() const;
  struct Impl;

 private:
  friend Request iallreduce_sum(float*, int64_t);
  friend Request iallreduce_sum(double*, int64_t);
  friend void wait(Request&);
  friend bool test(Request&);
  std::unique_ptr<Impl> impl_;
};
Request iallreduce_sum(float* data, int64_t n);
Request iallreduce_sum(double* data, int64_t n);
void wait(Request& request);
bool test(Request& request);

// Rank `root`'s bytes to every rank, in place.
void broadcast(void* data, int64_t bytes, int root = 0);
void barrier();
[[noreturn]] void abort(int code);

}  // namespace lowbit::dist
