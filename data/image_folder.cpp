// Image-folder readers (root/<class>/<image>, Tiny-ImageNet train and val layouts) over stb_image.
#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include "core/error.h"
#include "core/parallel.h"
#include "data/dataset.h"
#include "data/io.h"
#include "data/transforms.h"

#define STB_IMAGE_IMPLEMENTATION
#define STBI_ONLY_PNG
#define STBI_ONLY_JPEG
#define STBI_ONLY_BMP
#include <stb/stb_image.h>

namespace lowbit::data {

namespace fs = std::filesystem;

namespace {

bool is_image_file(const fs::path& p) {
  std::string ext = p.extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return char(std::tolower(c)); });
  return ext == ".png" || ext == ".jpg" || ext == ".jpeg" || ext == ".bmp";
}

std::vector<std::string> image_files_in(const fs::path& dir) {
  std::vector<std::string> files;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir, ec))
    if (entry.is_regular_file() && is_image_file(entry.path())) files.push_back(entry.path().string());
  LOWBIT_CHECK(!ec, "read_image_folder: ", dir.string(), ": cannot list directory (", ec.message(), ")");
  std::sort(files.begin(), files.end());
  return files;
}

// Decodes (in parallel) and assembles files[i] with labels[i] into a data set.
ImageDataset decode_all(const std::vector<std::string>& files, const std::vector<int32_t>& labels, int64_t resize_to,
                        const std::string& root) {
  const int64_t n = int64_t(files.size());
  LOWBIT_CHECK(n > 0, "read_image_folder: ", root, ": no images (.png, .jpg, .jpeg, .bmp) found");
  struct Decoded {
    std::vector<uint8_t> pixels;
    int64_t h = 0, w = 0;
    std::string error;
  };
  std::vector<Decoded> dec(static_cast<size_t>(n));
  parallel_for(0, n, 8, [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i) {
      Decoded& d = dec[size_t(i)];
      int w = 0, h = 0, comp = 0;
      uint8_t* px = stbi_load(files[size_t(i)].c_str(), &w, &h, &comp, 3);
      if (!px) {
        d.error = detail::concat("read_image_folder: ", files[size_t(i)], ": cannot decode image (",
                                 stbi_failure_reason() ? stbi_failure_reason() : "unknown", ")");
        continue;
      }
      d.h = h, d.w = w;
      if (resize_to > 0 && (h != resize_to || w != resize_to)) {
        std::vector<float> in(size_t(h) * size_t(w) * 3), out(size_t(resize_to * resize_to * 3));
        for (size_t k = 0; k < in.size(); ++k) in[k] = px[k];
        resize_bilinear_hwc(in.data(), h, w, 3, out.data(), resize_to, resize_to);
        d.pixels.resize(out.size());
        for (size_t k = 0; k < out.size(); ++k) d.pixels[k] = uint8_t(std::clamp(std::lround(out[k]), 0l, 255l));
        d.h = d.w = resize_to;
      } else {
        d.pixels.assign(px, px + size_t(h) * size_t(w) * 3);
      }
      stbi_image_free(px);
    }
  });
  for (const auto& d : dec) LOWBIT_CHECK(d.error.empty(), d.error);
  const int64_t H = dec[0].h, W = dec[0].w;
  for (int64_t i = 0; i < n; ++i)
    LOWBIT_CHECK(dec[size_t(i)].h == H && dec[size_t(i)].w == W, "read_image_folder: ", files[size_t(i)], ": size ",
                 dec[size_t(i)].h, "x", dec[size_t(i)].w, " differs from ", H, "x", W, " of ", files[0],
                 " (pass resize_to, or \"folder:DIR@SIZE\")");
  ImageDataset ds;
  ds.images = Tensor::empty({n, H, W, 3}, DType::u8);
  uint8_t* out = ds.images.data<uint8_t>();
  for (int64_t i = 0; i < n; ++i) std::memcpy(out + i * H * W * 3, dec[size_t(i)].pixels.data(), size_t(H * W * 3));
  ds.labels = Tensor::from_vector(labels, {n});
  ds.source = root;
  return ds;
}

}  // namespace

ImageDataset read_image_folder(const std::string& root, int64_t resize_to) {
  std::error_code ec;
  LOWBIT_CHECK(fs::is_directory(root, ec), "read_image_folder: ", root, ": not a directory");
  std::vector<std::string> classes;
  for (const auto& entry : fs::directory_iterator(root, ec))
    if (entry.is_directory()) classes.push_back(entry.path().filename().string());
  std::sort(classes.begin(), classes.end());
  LOWBIT_CHECK(!classes.empty(), "read_image_folder: ", root,
               ": no class sub-directories (expected root/<class>/<image>)");
  std::vector<std::string> files;
  std::vector<int32_t> labels;
  for (size_t c = 0; c < classes.size(); ++c) {
    fs::path dir = fs::path(root) / classes[c];
    if (fs::is_directory(dir / "images", ec)) dir /= "images";  // Tiny-ImageNet train/<wnid>/images
    for (auto& f : image_files_in(dir)) {
      files.push_back(std::move(f));
      labels.push_back(int32_t(c));
    }
  }
  ImageDataset ds = decode_all(files, labels, resize_to, root);
  ds.num_classes = int64_t(classes.size());
  ds.class_names = classes;
  return ds;
}

ImageDataset read_image_annotations(const std::string& root, const std::vector<std::string>& class_names,
                                    int64_t resize_to) {
  const fs::path ann = fs::path(root) / "val_annotations.txt";
  LOWBIT_CHECK(file_exists(ann.string()), "read_image_annotations: ", ann.string(), ": file not found");
  std::map<std::string, int32_t> index;
  for (size_t c = 0; c < class_names.size(); ++c) index[class_names[c]] = int32_t(c);
  std::ifstream in(ann);
  std::string line;
  std::vector<std::string> files;
  std::vector<int32_t> labels;
  int64_t line_no = 0;
  while (std::getline(in, line)) {
    ++line_no;
    if (line.empty() || line == "\r") continue;
    std::istringstream fields(line);
    std::string file, wnid;
    fields >> file >> wnid;
    LOWBIT_CHECK(!wnid.empty(), "read_image_annotations: ", ann.string(), ":", line_no,
                 ": expected \"<file> <class> ...\"");
    const auto it = index.find(wnid);
    LOWBIT_CHECK(it != index.end(), "read_image_annotations: ", ann.string(), ":", line_no, ": class '", wnid,
                 "' is not one of the ", class_names.size(), " training classes");
    const fs::path img = fs::path(root) / "images" / file;
    LOWBIT_CHECK(file_exists(img.string()), "read_image_annotations: ", ann.string(), ":", line_no, ": ", img.string(),
                 ": file not found");
    files.push_back(img.string());
    labels.push_back(it->second);
  }
  ImageDataset ds = decode_all(files, labels, resize_to, root);
  ds.num_classes = int64_t(class_names.size());
  ds.class_names = class_names;
  return ds;
}

}  // namespace lowbit::data
