// A program embedding a lowbit model as firmware would: the runtime header
// (deploy/runtime/lowbit_runtime.h) and, built with -DLOWBIT_EMBEDDED, the header of
// `lowbit export --c-header model.h`; nothing else (scripts/test_runtime_consumer.sh builds it
// with -std=c++17 -Wall -Wextra -Werror -pedantic, no lowbit library).
//
// Usage: consumer IMAGES [MODEL.lbq]
//   IMAGES: raw images, height x width x channels uint8 each (NHWC), back to back. Prints
//   "index,predicted" per image. The embedded build runs the compiled-in model and, given
//   MODEL.lbq, first checks the compiled-in bytes equal the file; the other build loads MODEL.lbq.
#include <cstdio>
#include <fstream>
#include <iterator>
#include <vector>

#include "lowbit_runtime.h"
#ifdef LOWBIT_EMBEDDED
#include "model.h"
#endif

int main(int argc, char** argv) {
  if (argc < 2 || argc > 3) {
    std::fprintf(stderr, "usage: consumer IMAGES [MODEL.lbq]\n");
    return 2;
  }
  try {
#ifdef LOWBIT_EMBEDDED
    const auto net = lowbit_runtime::Model::from_memory(model_lbq, model_lbq_size);
    if (argc == 3) {
      std::ifstream f(argv[2], std::ios::binary);
      const std::vector<unsigned char> file((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
      if (file != std::vector<unsigned char>(model_lbq, model_lbq + model_lbq_size)) {
        std::fprintf(stderr, "consumer: the compiled-in model differs from %s\n", argv[2]);
        return 1;
      }
    }
#else
    if (argc != 3) throw std::runtime_error("this build loads the model from a file: consumer IMAGES MODEL.lbq");
    const auto net = lowbit_runtime::Model::load(argv[2]);
#endif
    std::ifstream f(argv[1], std::ios::binary);
    const std::vector<uint8_t> pixels((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    const size_t image = size_t(net.height() * net.width() * net.channels());
    if (pixels.empty() || pixels.size() % image != 0) {
      std::fprintf(stderr, "consumer: %s: %zu bytes are not whole %zu-byte images\n", argv[1], pixels.size(), image);
      return 1;
    }
    const std::vector<int> predicted = net.predict(pixels.data(), int(pixels.size() / image));
    std::printf("index,predicted\n");
    for (size_t i = 0; i < predicted.size(); ++i) std::printf("%zu,%d\n", i, predicted[i]);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "consumer: %s\n", e.what());
    return 1;
  }
  return 0;
}
