// libFuzzer harness of the image-folder reader's single-image path: data/dataset.h decode_image
// (data/image_folder.cpp; stb_image with PNG, JPEG and BMP), which read_image_folder and
// read_image_annotations run on every file's contents. Input: one image file; inputs of even
// length are also resized to 12 x 12 (the "folder:DIR@SIZE" path). The pixel limit is 2^16 here
// instead of the readers' kMaxImagePixels (2^26), so that inputs declaring huge images, which
// stb_image would fill from a few bytes, are rejected fast instead of slowing the fuzzer down; the
// limit check itself is the same code.
#include <cstdint>
#include <span>

#include "core/error.h"
#include "data/dataset.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const auto im = lowbit::data::decode_image(std::span<const uint8_t>(data, size), "image.png", size % 2 ? 0 : 12,
                                               int64_t(1) << 16);
    if (im.height <= 0 || im.width <= 0 || im.pixels.size() != size_t(im.height * im.width * 3)) __builtin_trap();
  } catch (const lowbit::Error&) {
  }
  return 0;
}
