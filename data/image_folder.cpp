// Image-folder readers (root/<class>/<image>, Tiny-ImageNet train and val layouts) over stb_image.
#include <algorithm>
#include <cctype>
#include <climits>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
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
    DecodedImage image;
    std::string error;
  };
  std::vector<Decoded> dec(static_cast<size_t>(n));
  parallel_for(0, n, 8, [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i) {
      Decoded& d = dec[size_t(i)];
      try {
        d.image = decode_image(read_file_raw(files[size_t(i)], "read_image_folder"), files[size_t(i)], resize_to);
      } catch (const Error& e) {
        d.error = e.what();
      }
    }
  });
  for (const auto& d : dec) LOWBIT_CHECK(d.error.empty(), d.error);
  const int64_t H = dec[0].image.height, W = dec[0].image.width;
  for (int64_t i = 0; i < n; ++i) {
    const DecodedImage& im = dec[size_t(i)].image;
    LOWBIT_CHECK(im.height == H && im.width == W, "read_image_folder: ", files[size_t(i)], ": size ", im.height, "x",
                 im.width, " differs from ", H, "x", W, " of ", files[0], " (pass resize_to, or \"folder:DIR@SIZE\")");
  }
  ImageDataset ds;
  ds.images = Tensor::empty({n, H, W, 3}, DType::u8);
  uint8_t* out = ds.images.data<uint8_t>();
  for (int64_t i = 0; i < n; ++i)
    std::memcpy(out + i * H * W * 3, dec[size_t(i)].image.pixels.data(), size_t(H * W * 3));
  ds.labels = Tensor::from_vector(labels, {n});
  ds.source = root;
  return ds;
}

// stb_image reads zeros past the end of a BMP: its pixel rows must be in the file. Returns "" or
// what is wrong.
std::string check_bmp_size(std::span<const uint8_t> b) {
  if (b.size() < 30 || b[0] != 'B' || b[1] != 'M') return "";  // not a BMP, or too short for stb_image to accept
  const uint32_t header = load_le32(b.data() + 14);
  if (header != 12 && header != 40 && header != 56 && header != 108 && header != 124)
    return "";  // stb_image rejects it
  int64_t w, h, bpp;
  if (header == 12) {  // OS/2 BITMAPCOREHEADER: 16-bit sizes
    w = load_le16(b.data() + 18), h = load_le16(b.data() + 20), bpp = load_le16(b.data() + 24);
  } else {
    w = int32_t(load_le32(b.data() + 18)), h = int32_t(load_le32(b.data() + 22)), bpp = load_le16(b.data() + 28);
  }
  h = h < 0 ? -h : h;  // negative: rows stored top-down
  if (bpp != 1 && bpp != 4 && bpp != 8 && bpp != 16 && bpp != 24 && bpp != 32)
    return detail::concat("corrupt BMP: ", bpp, " bits per pixel (1, 4, 8, 16, 24 or 32)");
  if (w <= 0 || h <= 0 || w > (int64_t(1) << 24) || h > (int64_t(1) << 24)) return "";  // stb_image decides
  // stb_image reads the pixel rows from the header's offset (bfOffBits), after the headers and palette.
  const int64_t offset = load_le32(b.data() + 10), rows = (w * bpp + 31) / 32 * 4 * h;
  if (offset < 14 + int64_t(header))
    return detail::concat("corrupt BMP: pixel data offset ", offset, " lies inside the ", 14 + int64_t(header),
                          " bytes of headers");
  if (offset + rows <= int64_t(b.size())) return "";
  return detail::concat("truncated BMP: ", w, "x", h, " pixels at ", bpp, " bits need ", rows,
                        " bytes of pixel rows from byte ", offset, ", the file has ", b.size(), " bytes");
}

// PNG chunks: every chunk up to IEND must be in the file (stb_image allocates an IDAT chunk's
// declared length, up to 1 GiB, before reading it: a 100-byte file made it allocate 2 GiB), and
// the first IDAT chunk must not be empty (stb_image 2.27 copies it into a null buffer,
// memcpy(nullptr, p, 0), undefined behaviour). Returns "" or what is wrong.
std::string check_png(std::span<const uint8_t> b) {
  static const uint8_t signature[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
  if (b.size() < 8 || std::memcmp(b.data(), signature, 8) != 0) return "";
  bool data_seen = false;
  for (size_t pos = 8;;) {
    if (b.size() - pos < 12) return detail::concat("truncated PNG: ends at byte ", b.size(), " without an IEND chunk");
    const uint32_t length = load_be32(b.data() + pos);
    std::string type(reinterpret_cast<const char*>(b.data() + pos + 4), 4);
    for (char& c : type)
      if (!std::isalnum(static_cast<unsigned char>(c))) c = '?';
    if (length > b.size() - pos - 12)
      return detail::concat("truncated PNG: chunk ", type, " at byte ", pos, " declares ", length, " bytes, only ",
                            b.size() - pos - 12, " left");
    if (type == "IDAT") {
      if (length == 0 && !data_seen)
        return detail::concat("PNG with an empty IDAT chunk at byte ", pos, " before the image data (not supported)");
      data_seen = true;
    }
    if (type == "IEND") return "";
    pos += 12 + size_t(length);  // length, type, data, CRC
  }
}

// Debian's stb_image (2.27) writes past its Huffman tables when a JPEG DHT segment declares more
// than 256 codes in one table (fixed upstream in 2.28). Such files are rejected before stb_image
// sees them. The walk visits every place stb_image could read a DHT: marker segments are skipped by
// their length as stb_image reads them, and anywhere else (padding, entropy-coded data) every
// 0xFF run followed by a byte other than 0x00 is taken as a marker, which is what stb_image does.
// It stops at the end-of-image marker, where stb_image stops; a JPEG without one is cut short
// (stb_image would decode the missing part as grey). A scan that decodes with a Huffman table no
// DHT defined before it is rejected too: stb_image 2.27 would read the table's uninitialised
// memory and index its symbol array out of bounds. Likewise a scan of a component whose
// quantization table no DQT defined before it (stb_image would dequantize with uninitialised
// memory, and its int products overflow), and quantization tables with entries beyond 255
// (16-bit tables: stb_image 2.27 multiplies them into int without a check, an overflow for large
// coefficients; 2.28 rejects those products). Returns "" or what is wrong.
std::string check_jpeg(std::span<const uint8_t> b) {
  const size_t n = b.size();
  auto at = [&](size_t i) -> uint32_t { return i < n ? b[i] : 0; };  // stb_image reads zeros past the end
  size_t i = 0;
  bool defined[2][4] = {};      // Huffman tables [DC, AC][id] defined so far
  bool quantizer[4] = {};       // quantization tables defined so far
  uint32_t table_of[256] = {};  // the frame's component id -> its quantization table (+1; 0: none)
  if (at(0) != 0xFF) return "";
  while (i < n && b[i] == 0xFF) ++i;
  if (at(i) != 0xD8) return "";  // not a JPEG (stb_image's test: 0xFF run, then SOI)
  ++i;
  while (i < n) {
    if (b[i++] != 0xFF) continue;
    while (i < n && b[i] == 0xFF) ++i;
    if (i >= n) break;
    const uint32_t marker = b[i++];
    if (marker == 0xD9) return "";  // end of image
    if (marker == 0x00 || marker == 0x01 || marker == 0xD8 || (marker >= 0xD0 && marker <= 0xD7))
      continue;  // no length
    const size_t length = at(i) << 8 | at(i + 1);
    if (marker == 0xC4) {  // DHT: tables of 1 + 16 + sum(counts) bytes while the declared length lasts
      size_t pos = i + 2;
      for (int64_t left = int64_t(length) - 2; left > 0;) {
        const uint32_t table_class = at(pos) >> 4, table_id = at(pos) & 15;
        if (table_class <= 1 && table_id <= 3) defined[table_class][table_id] = true;
        uint32_t codes = 0;
        for (size_t k = 1; k <= 16; ++k) codes += at(pos + k);
        if (codes > 256)
          return detail::concat("corrupt JPEG: Huffman table with ", codes, " codes (at most 256) at byte ", pos);
        pos += 17 + codes;
        left -= 17 + int64_t(codes);
      }
    }
    if (marker == 0xDB) {  // DQT: Pq << 4 | Tq, then 64 entries of 1 (Pq 0) or 2 (Pq 1) bytes
      size_t pos = i + 2;
      for (int64_t left = int64_t(length) - 2; left > 0;) {
        const uint32_t wide = at(pos) >> 4, id = at(pos) & 15;
        for (size_t k = 0; wide == 1 && k < 64; ++k)
          if ((at(pos + 1 + 2 * k) << 8 | at(pos + 2 + 2 * k)) > 255)
            return detail::concat("corrupt JPEG: quantization table ", id, " at byte ", pos,
                                  " has an entry beyond 255 (16-bit tables are not supported)");
        if (wide <= 1 && id <= 3) quantizer[id] = true;
        pos += wide ? 129 : 65;
        left -= wide ? 129 : 65;
      }
    }
    if (marker == 0xC0 || marker == 0xC1 || marker == 0xC2) {  // SOF: P, Y, X, Nf, then (id, HV, Tq) per component
      std::fill(std::begin(table_of), std::end(table_of), 0u);
      for (uint32_t c = 0, nf = at(i + 7); c < nf; ++c) table_of[at(i + 8 + 3 * c)] = (at(i + 10 + 3 * c) & 15) + 1;
    }
    if (marker == 0xDA) {  // SOS: Ns, then (component, DC table << 4 | AC table) per component, Ss, Se, Ah/Al
      const uint32_t components = at(i + 2);
      for (uint32_t c = 0; c < components; ++c) {
        const uint32_t q = table_of[at(i + 3 + 2 * c)];
        if (q >= 1 && q <= 4 && !quantizer[q - 1])
          return detail::concat("corrupt JPEG: the scan at byte ", i - 2, " uses quantization table ", q - 1,
                                ", which no DQT segment before it defines");
      }
      const uint32_t ss = at(i + 3 + 2 * components), se = at(i + 4 + 2 * components),
                     ah = at(i + 5 + 2 * components) >> 4;
      for (uint32_t c = 0; c < components; ++c) {
        const uint32_t tables = at(i + 4 + 2 * c), dc = tables >> 4, ac = tables & 15;
        // The tables this scan decodes with (a DC scan's first pass, and any AC coefficients).
        if ((ss == 0 && ah == 0 && dc <= 3 && !defined[0][dc]) || (se > 0 && ac <= 3 && !defined[1][ac]))
          return detail::concat("corrupt JPEG: the scan at byte ", i - 2, " uses Huffman table ",
                                ss == 0 && ah == 0 && dc <= 3 && !defined[0][dc] ? "DC " : "AC ",
                                ss == 0 && ah == 0 && dc <= 3 && !defined[0][dc] ? dc : ac,
                                ", which no DHT segment before it defines");
      }
    }
    i += std::max<size_t>(length, 2);
  }
  return "truncated JPEG: no end-of-image marker (0xFFD9)";
}

}  // namespace

DecodedImage decode_image(std::span<const uint8_t> file, const std::string& name, int64_t resize_to,
                          int64_t max_pixels) {
  LOWBIT_CHECK(resize_to >= 0 && (resize_to == 0 || resize_to <= kMaxImagePixels / resize_to),
               "read_image_folder: ", name, ": resize size ", resize_to, " outside [0, ",
               int64_t(std::sqrt(double(kMaxImagePixels))), "]");
  LOWBIT_CHECK(file.size() <= size_t(INT32_MAX), "read_image_folder: ", name, ": ", file.size(),
               " bytes is too large for the image decoder");
  const auto* bytes = reinterpret_cast<const stbi_uc*>(file.data());
  const int len = int(file.size());
  for (const std::string& defect : {check_jpeg(file), check_png(file), check_bmp_size(file)})
    LOWBIT_CHECK(defect.empty(), "read_image_folder: ", name, ": ", defect);
  // The header's size first: a few bytes must not make the decoder allocate and fill gigabytes.
  int w = 0, h = 0, comp = 0;
  if (stbi_info_from_memory(bytes, len, &w, &h, &comp)) {
    const int64_t info_w = std::abs(int64_t(w)), info_h = std::abs(int64_t(h));  // a top-down BMP: height < 0
    LOWBIT_CHECK(info_w * info_h <= max_pixels, "read_image_folder: ", name, ": ", info_w, "x", info_h,
                 " image exceeds the reader's limit of ", max_pixels, " pixels");
  }
  uint8_t* px = stbi_load_from_memory(bytes, len, &w, &h, &comp, 3);
  LOWBIT_CHECK(px != nullptr, "read_image_folder: ", name, ": cannot decode image (",
               stbi_failure_reason() ? stbi_failure_reason() : "unknown", ")");
  struct Free {
    uint8_t* p;
    ~Free() { stbi_image_free(p); }
  } owner{px};
  // stb_image returns a BMP of height 0 as a valid image without pixels.
  LOWBIT_CHECK(w > 0 && h > 0, "read_image_folder: ", name, ": zero height or width: ", w, "x", h, " image");
  DecodedImage d;
  d.height = h, d.width = w;
  if (resize_to > 0 && (h != resize_to || w != resize_to)) {
    std::vector<float> in(size_t(h) * size_t(w) * 3), out(size_t(resize_to * resize_to * 3));
    for (size_t k = 0; k < in.size(); ++k) in[k] = px[k];
    resize_bilinear_hwc(in.data(), h, w, 3, out.data(), resize_to, resize_to);
    d.pixels.resize(out.size());
    for (size_t k = 0; k < out.size(); ++k) d.pixels[k] = uint8_t(std::clamp(std::lround(out[k]), 0l, 255l));
    d.height = d.width = resize_to;
  } else {
    d.pixels.assign(px, px + size_t(h) * size_t(w) * 3);
  }
  return d;
}

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
