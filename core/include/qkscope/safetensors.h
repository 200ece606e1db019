// A strict reader and a writer for safetensors files
// (https://github.com/huggingface/safetensors): an 8-byte little-endian header length N, N bytes
// of JSON header, then the data section of raw little-endian tensor bytes.
//
// The header is an object: one entry per tensor,
//   "name": {"dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end]}
// (offsets in bytes, relative to the start of the data section, end exclusive), plus an optional
// "__metadata__" object of string values.
//
// Rules the reader enforces (each error is a FormatError naming the rule, the file and, where
// there is one, the tensor):
//   - the file holds at least the 8-byte header length;
//   - the header length is at most 100,000,000 bytes and lies within the file;
//   - the header is valid UTF-8 JSON, an object, starting with '{', with no duplicate keys and
//     no nesting deeper than a shape array (depth 3);
//   - each entry is an object with exactly the keys dtype, shape, data_offsets;
//   - dtype is one of the names of `Dtype`; shape is an array of non-negative integers;
//   - data_offsets is [begin, end] of non-negative integers with begin <= end;
//   - end - begin == product(shape) * dtype size (computed without overflow);
//   - tensors do not overlap, and together they cover the data section exactly: no holes and no
//     trailing bytes. This is the reference implementation's rule (it rejects both), so every
//     file this reader accepts is also accepted by the `safetensors` Python package;
//   - "__metadata__", when present, is an object whose values are all strings.
// Nothing is read past a declared size: the header is checked against the file size before it
// is read, and each tensor's bytes only when asked for.
#pragma once

#include <cstddef>
#include <cstdint>
#include <iosfwd>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace qkscope {

// Element types of safetensors, with their header names ("F32", ...).
enum class Dtype { BOOL, U8, I8, F8_E5M2, F8_E4M3, I16, U16, F16, BF16, I32, U32, F32, F64, I64, U64 };

const char* dtype_name(Dtype dtype);
std::size_t dtype_size(Dtype dtype);                    // bytes per element
std::optional<Dtype> parse_dtype(std::string_view name);  // nullopt for an unknown name

// The dtype a C++ element type is stored as (float: F32, double: F64, int64_t: I64,
// int32_t: I32, uint8_t: U8).
template <class T>
struct DtypeOf;
template <> struct DtypeOf<float> { static constexpr Dtype value = Dtype::F32; };
template <> struct DtypeOf<double> { static constexpr Dtype value = Dtype::F64; };
template <> struct DtypeOf<int64_t> { static constexpr Dtype value = Dtype::I64; };
template <> struct DtypeOf<int32_t> { static constexpr Dtype value = Dtype::I32; };
template <> struct DtypeOf<uint8_t> { static constexpr Dtype value = Dtype::U8; };

using Shape = std::vector<int64_t>;

// "[2, 3]"
std::string shape_string(const Shape& shape);

// One header entry.
struct TensorInfo {
  std::string name;
  Dtype dtype = Dtype::F32;
  Shape shape;
  uint64_t begin = 0;  // byte range [begin, end) inside the data section
  uint64_t end = 0;

  uint64_t n_bytes() const { return end - begin; }
  int64_t numel() const;  // product of shape (1 for a scalar)
};

// A parsed, validated safetensors file. Tensor bytes stay on disk (or in the buffer given to
// from_bytes) until a read is asked for. Reads move a shared stream, so one object must not be
// used by several threads at once.
class SafetensorsFile {
 public:
  // Any dimension in an expected shape.
  static constexpr int64_t kAnyDim = -1;

  // Opens and validates `path`; the file stays open for later reads.
  static SafetensorsFile open(const std::string& path);
  // Validates an in-memory file; `name` stands for the file in messages.
  static SafetensorsFile from_bytes(std::string bytes, const std::string& name);

  SafetensorsFile(SafetensorsFile&&) noexcept;
  SafetensorsFile& operator=(SafetensorsFile&&) noexcept;
  ~SafetensorsFile();

  const std::string& name() const { return name_; }
  // All tensors, in the order of their data (increasing offsets).
  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

  bool has(const std::string& tensor) const;
  // The entry of `tensor`; FormatError "missing tensor" when absent.
  const TensorInfo& info(const std::string& tensor) const;
  // The metadata value of `key`; FormatError "missing metadata" when absent.
  const std::string& metadata_value(const std::string& key) const;

  // The values of `tensor`, row-major, converted from little-endian. FormatError "dtype mismatch"
  // when its dtype is not DtypeOf<T>, "shape mismatch" when `expected` is given and differs
  // (kAnyDim matches any size), "missing tensor" when absent. T: float, double, int64_t,
  // int32_t, uint8_t.
  template <class T>
  std::vector<T> read(const std::string& tensor,
                      const std::optional<Shape>& expected = std::nullopt) const;

  // The raw little-endian bytes of `tensor`, any dtype.
  std::string read_bytes(const std::string& tensor) const;

 private:
  SafetensorsFile() = default;
  void parse(std::unique_ptr<std::istream> in, uint64_t file_size);
  void read_into(const TensorInfo& info, void* out) const;

  std::string name_;
  std::unique_ptr<std::istream> in_;
  uint64_t data_start_ = 0;  // file offset of the data section
  std::vector<TensorInfo> tensors_;
  std::map<std::string, std::size_t> index_;  // name -> position in tensors_
  std::map<std::string, std::string> metadata_;
};

extern template std::vector<float> SafetensorsFile::read<float>(
    const std::string&, const std::optional<Shape>&) const;
extern template std::vector<double> SafetensorsFile::read<double>(
    const std::string&, const std::optional<Shape>&) const;
extern template std::vector<int64_t> SafetensorsFile::read<int64_t>(
    const std::string&, const std::optional<Shape>&) const;
extern template std::vector<int32_t> SafetensorsFile::read<int32_t>(
    const std::string&, const std::optional<Shape>&) const;
extern template std::vector<uint8_t> SafetensorsFile::read<uint8_t>(
    const std::string&, const std::optional<Shape>&) const;

// Builds a safetensors file. The writer does not copy tensor data: every `data` pointer passed
// to add() must stay valid and unchanged until write() or bytes() has returned.
//
// Layout, as the reference implementation writes it: the header JSON is compact, "__metadata__"
// first (omitted when empty), then the tensors in data order; it is padded with spaces to a
// multiple of 8 bytes. Tensors are laid out by decreasing element size, in order of addition
// within one size, so every tensor starts at a multiple of its element size.
class SafetensorsWriter {
 public:
  // Sets one "__metadata__" entry (replacing an earlier value of `key`).
  void set_metadata(const std::string& key, const std::string& value);

  // Adds a tensor of `dtype` and `shape` whose `n_bytes` bytes are at `data`, elements in host
  // byte order (written little-endian). Throws Error for a duplicate name, the reserved name
  // "__metadata__", a negative dimension, or n_bytes != product(shape) * dtype size.
  void add(const std::string& name, Dtype dtype, const Shape& shape, const void* data,
           std::size_t n_bytes);

  template <class T>
  void add(const std::string& name, const Shape& shape, const std::vector<T>& values) {
    add(name, DtypeOf<T>::value, shape, values.data(), values.size() * sizeof(T));
  }
  // The writer keeps a pointer: a temporary vector would be gone before write().
  template <class T>
  void add(const std::string& name, const Shape& shape, const std::vector<T>&& values) = delete;

  // The padded header (JSON and spaces, without the 8-byte length).
  std::string header() const;
  // The whole file in memory.
  std::string bytes() const;
  // Writes the file atomically (see AtomicFile). Throws Error.
  void write(const std::string& path) const;

 private:
  struct Entry {
    TensorInfo info;  // begin/end unused until layout()
    const void* data = nullptr;
  };
  std::vector<Entry> layout() const;  // entries in data order, with offsets
  template <class Sink>
  void emit(Sink& sink) const;

  std::vector<Entry> entries_;
  std::map<std::string, std::string> metadata_;
};

}  // namespace qkscope
