// MPI wrapper (distributed.h). Compiled against MPI only with LOWBIT_WITH_MPI.
#include "core/distributed.h"

#include <algorithm>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "core/error.h"

#ifdef LOWBIT_WITH_MPI
#include <mpi.h>
#endif

namespace lowbit::dist {

bool compiled_with_mpi() {
#ifdef LOWBIT_WITH_MPI
  return true;
#else
  return false;
#endif
}

bool launched_by_mpirun() {
  for (const char* v : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK"})
    if (std::getenv(v)) return true;
  return false;
}

int local_size() {
  if (!active()) return 1;
  if (const char* v = std::getenv("OMPI_COMM_WORLD_LOCAL_SIZE")) {
    const int n = std::atoi(v);
    if (n >= 1) return n;
  }
  return 1;
}

#ifdef LOWBIT_WITH_MPI

namespace {
bool g_started = false;
int g_rank = 0, g_size = 1;

void check(int rc, const char* what) {
  if (rc == MPI_SUCCESS) return;
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(rc, text, &len);
  throw Error(detail::concat("MPI: ", what, " failed: ", std::string(text, size_t(len))));
}

// MPI counts are int: long buffers go in pieces.
template <class F>
void in_pieces(int64_t n, F&& f) {
  constexpr int64_t kMax = INT_MAX / 2;
  for (int64_t at = 0; at < n; at += kMax) f(at, int(std::min(kMax, n - at)));
}
}  // namespace

void init() {
  if (g_started || !launched_by_mpirun()) return;
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (!initialized) {
    int provided = 0;
    check(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided), "MPI_Init_thread");
  }
  g_started = true;
  MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
  MPI_Comm_size(MPI_COMM_WORLD, &g_size);
  std::atexit([] { finalize(); });
}

void finalize() {
  if (!g_started) return;
  g_started = false;
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized) MPI_Finalize();
  g_rank = 0, g_size = 1;
}

bool active() { return g_started; }
int rank() { return g_rank; }
int size() { return g_size; }

void allreduce_sum(float* data, int64_t n) {
  if (g_size == 1 || n <= 0) return;
  in_pieces(n, [&](int64_t at, int count) {
    check(MPI_Allreduce(MPI_IN_PLACE, data + at, count, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD), "MPI_Allreduce");
  });
}

void allreduce_sum(double* data, int64_t n) {
  if (g_size == 1 || n <= 0) return;
  in_pieces(n, [&](int64_t at, int count) {
    check(MPI_Allreduce(MPI_IN_PLACE, data + at, count, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD), "MPI_Allreduce");
  });
}

struct Request::Impl {
  std::vector<MPI_Request> pieces;
};

namespace {
template <class T>
std::unique_ptr<Request::Impl> start_iallreduce(T* data, int64_t n, MPI_Datatype type) {
  if (g_size == 1 || n <= 0) return nullptr;
  auto impl = std::make_unique<Request::Impl>();
  in_pieces(n, [&](int64_t at, int count) {
    MPI_Request q;
    check(MPI_Iallreduce(MPI_IN_PLACE, data + at, count, type, MPI_SUM, MPI_COMM_WORLD, &q), "MPI_Iallreduce");
    impl->pieces.push_back(q);
  });
  return impl;
}
}  // namespace

Request iallreduce_sum(float* data, int64_t n) {
  Request r;
  r.impl_ = start_iallreduce(data, n, MPI_FLOAT);
  return r;
}
Request iallreduce_sum(double* data, int64_t n) {
  Request r;
  r.impl_ = start_iallreduce(data, n, MPI_DOUBLE);
  return r;
}

void wait(Request& r) {
  if (!r.impl_) return;
  check(MPI_Waitall(int(r.impl_->pieces.size()), r.impl_->pieces.data(), MPI_STATUSES_IGNORE), "MPI_Waitall");
  r.impl_.reset();
}

bool test(Request& r) {
  if (!r.impl_) return true;
  int done = 0;
  check(MPI_Testall(int(r.impl_->pieces.size()), r.impl_->pieces.data(), &done, MPI_STATUSES_IGNORE), "MPI_Testall");
  if (done) r.impl_.reset();
  return done != 0;
}

void broadcast(void* data, int64_t bytes, int root) {
  if (g_size == 1 || bytes <= 0) return;
  auto* p = static_cast<char*>(data);
  in_pieces(bytes, [&](int64_t at, int count) {
    check(MPI_Bcast(p + at, count, MPI_BYTE, root, MPI_COMM_WORLD), "MPI_Bcast");
  });
}

void barrier() {
  if (g_size > 1) check(MPI_Barrier(MPI_COMM_WORLD), "MPI_Barrier");
}

void abort(int code) {
  std::fflush(stdout);
  std::fflush(stderr);
  if (g_started) MPI_Abort(MPI_COMM_WORLD, code);
  std::_Exit(code);
}

#else  // single process

void init() {}
void finalize() {}
bool active() { return false; }
int rank() { return 0; }
int size() { return 1; }
void allreduce_sum(float*, int64_t) {}
void allreduce_sum(double*, int64_t) {}
struct Request::Impl {};
Request iallreduce_sum(float*, int64_t) { return Request(); }
Request iallreduce_sum(double*, int64_t) { return Request(); }
void wait(Request&) {}
bool test(Request&) { return true; }
void broadcast(void*, int64_t, int) {}
void barrier() {}
void abort(int code) {
  std::fflush(stdout);
  std::fflush(stderr);
  std::_Exit(code);
}

#endif

Request::Request() = default;
Request::Request(Request&&) noexcept = default;
Request& Request::operator=(Request&& o) noexcept {
  if (this != &o) {
    if (pending()) wait(*this);
    impl_ = std::move(o.impl_);
  }
  return *this;
}
Request::~Request() {
  if (pending()) {
    try {
      wait(*this);
    } catch (...) {  // a failed MPI call in a destructor: nothing left to report it to
    }
  }
}
bool Request::pending() const { return impl_ != nullptr; }

}  // namespace lowbit::dist
