// Checkpoint files survive a SIGKILL at any moment of a write: a child process writes two different
// checkpoints in turn as fast as it can while the parent kills it at random times; after each kill
// the file loads and is exactly one of the two (write_file_atomic: a temporary file, fsync, rename).
#include <doctest/doctest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <random>
#include <string>
#include <thread>

#include "core/math.h"
#include "core/serialize.h"

using namespace lowbit;

namespace {

Checkpoint version(int which) {
  Checkpoint c;
  c.meta["version"] = int64_t(which);
  c.tensors["w"] = Tensor::full({1 << 20}, double(which), DType::f32);  // 4 MB: the write takes a while
  return c;
}

}  // namespace

TEST_CASE("a checkpoint killed while being written is the old or the new one, never a broken one") {
  // Per process: two builds' suites may run at once on one machine.
  const auto dir = std::filesystem::temp_directory_path() / ("lowbit_test_crash_safety_" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  const std::string path = (dir / "checkpoint.ckpt").string();
  save_checkpoint(path, version(0));
  std::mt19937 rng(7);
  int during_write = 0;
  for (int round = 0; round < 20; ++round) {
    int ready[2];
    REQUIRE(pipe(ready) == 0);
    const pid_t child = fork();
    REQUIRE(child >= 0);
    if (child == 0) {
      const Checkpoint a = version(1), b = version(2);
      const char go = 1;
      if (write(ready[1], &go, 1) != 1) _exit(1);  // writing starts now
      for (int i = 0;; ++i) save_checkpoint(path, i % 2 ? a : b);
      _exit(0);  // not reached
    }
    // The kill lands a random time after the child is seen writing (not after fork or a fixed delay:
    // under a sanitizer or on a loaded machine the child may not run for tens of milliseconds).
    char go = 0;
    REQUIRE(read(ready[0], &go, 1) == 1);
    close(ready[0]), close(ready[1]);
    const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (!std::filesystem::exists(path + ".tmp") && std::chrono::steady_clock::now() < give_up)
      std::this_thread::sleep_for(std::chrono::microseconds(50));
    std::this_thread::sleep_for(std::chrono::microseconds(rng() % 5000));
    kill(child, SIGKILL);
    int status = 0;
    waitpid(child, &status, 0);
    REQUIRE(WIFSIGNALED(status));
    during_write += std::filesystem::exists(path + ".tmp");
    const Checkpoint c = load_checkpoint(path);  // throws on a torn or corrupt file
    const int64_t v = c.get_int("version");
    CHECK((v == 0 || v == 1 || v == 2));
    CHECK(math::all_finite(c.tensors.at("w")));
    CHECK(max_abs_diff(c.tensors.at("w"), version(int(v)).tensors.at("w")) == 0.0);
  }
  MESSAGE(during_write, " of 20 kills landed while a temporary file was being written");
  CHECK(during_write > 0);  // the test did kill writes in progress
  // A leftover temporary file does not stand in the way of the next write.
  save_checkpoint(path, version(3));
  CHECK(load_checkpoint(path).get_int("version") == 3);
  std::filesystem::remove_all(dir);
}
