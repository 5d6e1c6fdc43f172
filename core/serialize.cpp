#include "core/serialize.h"

#include <fcntl.h>
#include <unistd.h>
#include <zlib.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

namespace lowbit {
namespace {

constexpr char kMagic[8] = {'L', 'O', 'W', 'B', 'I', 'T', 'C', 'K'};
constexpr size_t kHeaderSize = 8 + 4 + 4 + 8 + 4;
enum class MetaType : uint8_t { i64 = 0, f64 = 1, str = 2 };

class Writer {
 public:
  template <class T>
  void pod(const T& v) {
    out_.append(reinterpret_cast<const char*>(&v), sizeof(T));
  }
  void bytes(const void* p, size_t n) { out_.append(static_cast<const char*>(p), n); }
  void str(const std::string& s) {
    pod(static_cast<uint32_t>(s.size()));
    out_.append(s);
  }
  std::string& buffer() { return out_; }

 private:
  std::string out_;
};

// Bounds-checked reader over the payload: every short read names the file and what was being read.
class Reader {
 public:
  Reader(const std::string& path, const char* data, size_t size) : path_(path), p_(data), end_(data + size) {}
  template <class T>
  T pod(const char* what) {
    need(sizeof(T), what);
    T v;
    std::memcpy(&v, p_, sizeof(T));
    p_ += sizeof(T);
    return v;
  }
  std::string str(const char* what) {
    const uint32_t n = pod<uint32_t>(what);
    need(n, what);
    std::string s(p_, n);
    p_ += n;
    return s;
  }
  const char* take(size_t n, const char* what) {
    need(n, what);
    const char* at = p_;
    p_ += n;
    return at;
  }
  bool done() const { return p_ == end_; }

 private:
  void need(size_t n, const char* what) {
    LOWBIT_CHECK(static_cast<size_t>(end_ - p_) >= n, "load_checkpoint: ", path_, ": truncated record while reading ",
                 what, " (", n, " bytes needed, ", end_ - p_, " left)");
  }
  std::string path_;
  const char* p_;
  const char* end_;
};

uint32_t crc32_of(std::string_view s) {
  uLong crc = crc32(0L, Z_NULL, 0);
  size_t done = 0;
  while (done < s.size()) {  // zlib takes uInt lengths
    const uInt chunk = static_cast<uInt>(std::min<size_t>(s.size() - done, 1u << 30));
    crc = crc32(crc, reinterpret_cast<const Bytef*>(s.data() + done), chunk);
    done += chunk;
  }
  return static_cast<uint32_t>(crc);
}

std::string read_whole_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  LOWBIT_CHECK(in.good(), "load_checkpoint: cannot open ", path, ": ", std::strerror(errno));
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace

int64_t Checkpoint::get_int(const std::string& key) const {
  auto it = meta.find(key);
  LOWBIT_CHECK(it != meta.end(), "checkpoint: missing metadata '", key, "'");
  LOWBIT_CHECK(std::holds_alternative<int64_t>(it->second), "checkpoint: metadata '", key, "' is not an integer");
  return std::get<int64_t>(it->second);
}

double Checkpoint::get_double(const std::string& key) const {
  auto it = meta.find(key);
  LOWBIT_CHECK(it != meta.end(), "checkpoint: missing metadata '", key, "'");
  LOWBIT_CHECK(std::holds_alternative<double>(it->second), "checkpoint: metadata '", key, "' is not a real number");
  return std::get<double>(it->second);
}

const std::string& Checkpoint::get_string(const std::string& key) const {
  auto it = meta.find(key);
  LOWBIT_CHECK(it != meta.end(), "checkpoint: missing metadata '", key, "'");
  LOWBIT_CHECK(std::holds_alternative<std::string>(it->second), "checkpoint: metadata '", key, "' is not a string");
  return std::get<std::string>(it->second);
}

std::map<std::string, Tensor> Checkpoint::tensors_with_prefix(const std::string& prefix) const {
  std::map<std::string, Tensor> out;
  for (const auto& [name, t] : tensors)
    if (name.compare(0, prefix.size(), prefix) == 0) out.emplace(name.substr(prefix.size()), t);
  return out;
}

void Checkpoint::add_tensors(const std::string& prefix, const std::map<std::string, Tensor>& ts) {
  for (const auto& [name, t] : ts) tensors[prefix + name] = t;
}

void write_file_atomic(const std::string& path, const std::string& contents) {
  const std::string tmp = path + ".tmp";
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  LOWBIT_CHECK(fd >= 0, "write_file_atomic: cannot create ", tmp, ": ", std::strerror(errno));
  size_t written = 0;
  while (written < contents.size()) {
    const ssize_t n = ::write(fd, contents.data() + written, contents.size() - written);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const int err = errno;
      ::close(fd);
      ::unlink(tmp.c_str());
      throw Error(detail::concat("write_file_atomic: writing ", tmp, " failed: ", std::strerror(err)));
    }
    written += static_cast<size_t>(n);
  }
  const bool synced = ::fsync(fd) == 0;
  const bool closed = ::close(fd) == 0;
  if (!synced || !closed) {
    ::unlink(tmp.c_str());
    throw Error(detail::concat("write_file_atomic: flushing ", tmp, " failed: ", std::strerror(errno)));
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    throw Error(detail::concat("write_file_atomic: renaming ", tmp, " to ", path, " failed: ", std::strerror(err)));
  }
  // Make the rename itself durable.
  const auto slash = path.find_last_of('/');
  const std::string dir = slash == std::string::npos ? "." : (slash == 0 ? "/" : path.substr(0, slash));
  const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
}

void save_checkpoint(const std::string& path, const Checkpoint& ckpt) {
  Writer payload;
  payload.pod(static_cast<uint32_t>(ckpt.meta.size()));
  for (const auto& [key, value] : ckpt.meta) {
    payload.str(key);
    if (const auto* i = std::get_if<int64_t>(&value)) {
      payload.pod(MetaType::i64);
      payload.pod(*i);
    } else if (const auto* d = std::get_if<double>(&value)) {
      payload.pod(MetaType::f64);
      payload.pod(*d);
    } else {
      payload.pod(MetaType::str);
      payload.str(std::get<std::string>(value));
    }
  }
  payload.pod(static_cast<uint32_t>(ckpt.tensors.size()));
  for (const auto& [name, t] : ckpt.tensors) {
    LOWBIT_CHECK(t.defined(), "save_checkpoint: ", path, ": tensor '", name, "' is undefined");
    const Tensor c = t.contiguous();
    payload.str(name);
    payload.pod(static_cast<uint8_t>(c.dtype()));
    payload.pod(static_cast<uint32_t>(c.dim()));
    for (int64_t d : c.shape()) payload.pod(d);
    const uint64_t nbytes = static_cast<uint64_t>(c.numel()) * dtype_size(c.dtype());
    payload.pod(nbytes);
    payload.bytes(c.data_ptr(), nbytes);
  }

  Writer file;
  file.bytes(kMagic, sizeof(kMagic));
  file.pod(kCheckpointVersion);
  file.pod(static_cast<uint32_t>(0));
  file.pod(static_cast<uint64_t>(payload.buffer().size()));
  file.pod(crc32_of(payload.buffer()));
  file.buffer().append(payload.buffer());
  write_file_atomic(path, file.buffer());
}

Checkpoint load_checkpoint(const std::string& path) { return load_checkpoint_data(read_whole_file(path), path); }

Checkpoint load_checkpoint_data(std::string_view raw, const std::string& path) {
  LOWBIT_CHECK(raw.size() >= kHeaderSize, "load_checkpoint: ", path, ": truncated: ", raw.size(),
               " bytes, shorter than the ", kHeaderSize, "-byte header");
  LOWBIT_CHECK(std::memcmp(raw.data(), kMagic, sizeof(kMagic)) == 0, "load_checkpoint: ", path,
               ": not a lowbit checkpoint (bad magic)");
  Reader header(path, raw.data() + sizeof(kMagic), kHeaderSize - sizeof(kMagic));
  const auto version = header.pod<uint32_t>("version");
  LOWBIT_CHECK(version == kCheckpointVersion, "load_checkpoint: ", path, ": format version ", version,
               " is not supported (this build reads version ", kCheckpointVersion, ")");
  header.pod<uint32_t>("flags");
  const auto payload_size = header.pod<uint64_t>("payload size");
  const auto crc = header.pod<uint32_t>("checksum");
  LOWBIT_CHECK(raw.size() - kHeaderSize == payload_size, "load_checkpoint: ", path,
               ": truncated or padded: header says ", payload_size, " payload bytes, file has ",
               raw.size() - kHeaderSize);
  const std::string_view payload = raw.substr(kHeaderSize);
  LOWBIT_CHECK(crc32_of(payload) == crc, "load_checkpoint: ", path, ": checksum mismatch (file is corrupt)");

  Checkpoint ckpt;
  Reader in(path, payload.data(), payload.size());
  const auto n_meta = in.pod<uint32_t>("metadata count");
  for (uint32_t i = 0; i < n_meta; ++i) {
    std::string key = in.str("metadata key");
    LOWBIT_CHECK(!ckpt.meta.count(key), "load_checkpoint: ", path, ": metadata '", key, "' appears twice");
    const auto type = in.pod<MetaType>("metadata type");
    MetaValue value;
    switch (type) {
      case MetaType::i64: value = in.pod<int64_t>("integer metadata"); break;
      case MetaType::f64: value = in.pod<double>("real metadata"); break;
      case MetaType::str: value = in.str("string metadata"); break;
      default:
        throw Error(detail::concat("load_checkpoint: ", path, ": metadata '", key, "' has unknown type ",
                                   static_cast<int>(type)));
    }
    ckpt.meta.emplace(std::move(key), std::move(value));
  }
  const auto n_tensors = in.pod<uint32_t>("tensor count");
  for (uint32_t i = 0; i < n_tensors; ++i) {
    std::string name = in.str("tensor name");
    LOWBIT_CHECK(!ckpt.tensors.count(name), "load_checkpoint: ", path, ": tensor '", name, "' appears twice");
    const auto dt = in.pod<uint8_t>("tensor dtype");
    LOWBIT_CHECK(dt <= static_cast<uint8_t>(DType::u8), "load_checkpoint: ", path, ": tensor '", name,
                 "' has unknown dtype ", int(dt));
    const DType dtype = static_cast<DType>(dt);
    const auto ndim = in.pod<uint32_t>("tensor rank");
    LOWBIT_CHECK(ndim <= 16, "load_checkpoint: ", path, ": tensor '", name, "' has implausible rank ", ndim);
    Shape shape(ndim);
    // Sizes checked as they are read, before anything is multiplied or allocated: at most 2^40
    // elements (the product of the non-zero sizes, so strides cannot overflow either).
    int64_t elements = 1;
    bool empty = false;
    for (auto& d : shape) {
      d = in.pod<int64_t>("tensor dims");
      LOWBIT_CHECK(d >= 0, "load_checkpoint: ", path, ": tensor '", name, "' has a negative dimension");
      LOWBIT_CHECK(d == 0 || elements <= (int64_t(1) << 40) / d, "load_checkpoint: ", path, ": tensor '", name,
                   "' has an implausible shape ", shape_str(shape), " (more than 2^40 elements)");
      if (d == 0) empty = true;
      elements *= d == 0 ? 1 : d;
    }
    const uint64_t need = empty ? 0 : uint64_t(elements) * dtype_size(dtype);
    const auto nbytes = in.pod<uint64_t>("tensor size");
    LOWBIT_CHECK(nbytes == need, "load_checkpoint: ", path, ": tensor '", name, "' ", shape_str(shape), " ",
                 dtype_name(dtype), " declares ", nbytes, " bytes (its shape needs ", need, ")");
    const char* data = in.take(nbytes, "tensor data");  // before allocating: the bytes are in the file
    Tensor t = Tensor::empty(shape, dtype);
    if (nbytes) std::memcpy(t.data_ptr(), data, nbytes);
    ckpt.tensors.emplace(std::move(name), std::move(t));
  }
  LOWBIT_CHECK(in.done(), "load_checkpoint: ", path, ": trailing bytes after the last tensor");
  return ckpt;
}

}  // namespace lowbit
