#include "train/progress.h"

#include <unistd.h>

#include <cstdio>

namespace lowbit::train {

std::string format_duration(double s) {
  char buf[32];
  const long t = static_cast<long>(s + 0.5);
  if (t >= 3600)
    std::snprintf(buf, sizeof buf, "%ld:%02ld:%02ld", t / 3600, (t / 60) % 60, t % 60);
  else
    std::snprintf(buf, sizeof buf, "%02ld:%02ld", t / 60, t % 60);
  return buf;
}

bool Progress::is_terminal() { return ::isatty(STDOUT_FILENO) == 1; }

Progress::Progress(std::string label, int64_t total_batches, int64_t plain_every)
    : label_(std::move(label)),
      total_(total_batches),
      plain_every_(plain_every),
      tty_(is_terminal()),
      start_(std::chrono::steady_clock::now()),
      last_draw_(start_) {}

double Progress::seconds() const {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
}

void Progress::update(int64_t done, double loss, double acc, int64_t images) {
  const auto now = std::chrono::steady_clock::now();
  const double secs = seconds();
  const double rate = secs > 0 ? images / secs : 0;
  const double eta = done > 0 ? secs * double(total_ - done) / double(done) : 0;
  if (tty_) {
    // Redraw at most ~10 times a second, and always on the last batch.
    if (done != total_ && now - last_draw_ < std::chrono::milliseconds(100)) return;
    last_draw_ = now;
    constexpr int kWidth = 24;
    const int filled = total_ > 0 ? static_cast<int>(kWidth * done / total_) : kWidth;
    std::string bar(filled, '#');
    bar.resize(kWidth, '.');
    std::printf("\r%s [%s] %lld/%lld loss %.4f acc %5.2f%% %6.0f img/s ETA %s\x1b[K", label_.c_str(), bar.c_str(),
                static_cast<long long>(done), static_cast<long long>(total_), loss, 100 * acc, rate,
                format_duration(eta).c_str());
    std::fflush(stdout);
  } else if (done == total_ || (plain_every_ > 0 && done % plain_every_ == 0)) {
    std::printf("%s batch %lld/%lld loss %.4f acc %.2f%% %.0f img/s ETA %s\n", label_.c_str(),
                static_cast<long long>(done), static_cast<long long>(total_), loss, 100 * acc, rate,
                format_duration(eta).c_str());
    std::fflush(stdout);
  }
}

void Progress::finish() {
  if (tty_) {
    std::printf("\n");
    std::fflush(stdout);
  }
}

}  // namespace lowbit::train
