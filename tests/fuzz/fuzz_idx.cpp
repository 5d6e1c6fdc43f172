// libFuzzer harness of the IDX reader (MNIST / Fashion-MNIST): data/dataset.h read_idx_data, the
// code read_idx runs on the two files' contents (raw or gzip).
//
// Input: the images file, the separator "--labels--", the labels file (either may be gzip). Without
// a separator the whole input is the images file and the labels file is empty.
#include <cstdint>
#include <cstring>
#include <span>
#include <string_view>

#include "core/error.h"
#include "data/dataset.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  const size_t cut = input.find("--labels--");
  const std::span<const uint8_t> all(data, size);
  const auto images = cut == std::string_view::npos ? all : all.first(cut);
  const auto labels = cut == std::string_view::npos ? all.last(0) : all.subspan(cut + 10);
  try {
    const lowbit::data::ImageDataset ds = lowbit::data::read_idx_data(images, "images.idx", labels, "labels.idx");
    ds.validate();  // what a reader returns is a consistent data set
  } catch (const lowbit::Error&) {
    // Rejected with a message: fine. Anything else (a crash, another exception) is a finding.
  }
  return 0;
}
