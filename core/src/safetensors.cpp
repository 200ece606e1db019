#include "qkscope/safetensors.h"

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <limits>
#include <set>
#include <sstream>
#include <tuple>
#include <utility>

#include <nlohmann/json.hpp>

#include "qkscope/atomic_file.h"
#include "qkscope/error.h"

namespace qkscope {
namespace {

using nlohmann::json;

// The reference implementation's limit: a larger header is an attack or a broken file.
constexpr uint64_t kMaxHeaderBytes = 100'000'000;

struct DtypeRow {
  Dtype dtype;
  const char* name;
  std::size_t size;
};
constexpr std::array<DtypeRow, 15> kDtypes{{
    {Dtype::BOOL, "BOOL", 1},     {Dtype::U8, "U8", 1},   {Dtype::I8, "I8", 1},
    {Dtype::F8_E5M2, "F8_E5M2", 1}, {Dtype::F8_E4M3, "F8_E4M3", 1}, {Dtype::I16, "I16", 2},
    {Dtype::U16, "U16", 2},       {Dtype::F16, "F16", 2}, {Dtype::BF16, "BF16", 2},
    {Dtype::I32, "I32", 4},       {Dtype::U32, "U32", 4}, {Dtype::F32, "F32", 4},
    {Dtype::F64, "F64", 8},       {Dtype::I64, "I64", 8}, {Dtype::U64, "U64", 8},
}};

const DtypeRow& dtype_row(Dtype dtype) {
  for (const DtypeRow& row : kDtypes)
    if (row.dtype == dtype) return row;
  throw InternalError(fmt::format("qkscope internal error: no dtype {}", static_cast<int>(dtype)));
}

bool host_is_little_endian() {
  const uint16_t one = 1;
  unsigned char first = 0;
  std::memcpy(&first, &one, 1);
  return first == 1;
}

// Reverses the bytes of each `elem_size`-byte element of `data` (little-endian <-> host on a
// big-endian machine).
void swap_elements(void* data, std::size_t n_bytes, std::size_t elem_size) {
  auto* p = static_cast<unsigned char*>(data);
  for (std::size_t i = 0; i + elem_size <= n_bytes; i += elem_size)
    std::reverse(p + i, p + i + elem_size);
}

uint64_t decode_u64_le(const unsigned char* bytes) {
  uint64_t value = 0;
  for (int i = 7; i >= 0; --i) value = (value << 8) | bytes[i];
  return value;
}

std::string encode_u64_le(uint64_t value) {
  std::string bytes(8, '\0');
  for (int i = 0; i < 8; ++i) bytes[i] = static_cast<char>((value >> (8 * i)) & 0xff);
  return bytes;
}

// a * b, or nullopt when it does not fit in 64 bits.
std::optional<uint64_t> checked_mul(uint64_t a, uint64_t b) {
  uint64_t product = 0;
  if (__builtin_mul_overflow(a, b, &product)) return std::nullopt;
  return product;
}

// Every reader error: "<file>: <rule>: <detail>", so tests and users can match the rule.
[[noreturn]] void fail(const std::string& file, std::string_view rule, const std::string& detail) {
  throw FormatError(fmt::format("{}: {}: {}", file, rule, detail));
}

// Values quoted in messages are cut short: a broken header can be 100 MB.
std::string brief(const json& value) {
  constexpr std::size_t kMax = 80;
  std::string text = value.dump();
  if (text.size() > kMax) text = text.substr(0, kMax) + "...";
  return text;
}

// The deepest legitimate value: root object (0) > entry (1) > shape array (2) > dimension (3).
constexpr int kMaxDepth = 3;

// nlohmann::json keeps the last of duplicate keys silently; a strict reader refuses them, since
// two entries for one tensor name mean the file is not what its writer meant. Deep nesting is
// refused while parsing, before it can cost memory or recursion.
json parse_header_json(const std::string& file, const std::string& text) {
  std::vector<std::set<std::string>> open_objects;
  json::parser_callback_t strict = [&](int depth, json::parse_event_t event, json& parsed) {
    if (depth > kMaxDepth)
      fail(file, "header nested too deeply",
           fmt::format("values nested deeper than {} levels", kMaxDepth));
    if (event == json::parse_event_t::object_start) {
      open_objects.emplace_back();
    } else if (event == json::parse_event_t::object_end) {
      open_objects.pop_back();
    } else if (event == json::parse_event_t::key) {
      const auto& key = parsed.get_ref<const std::string&>();
      if (!open_objects.back().insert(key).second)
        fail(file, "duplicate key in header", fmt::format("key '{}' appears twice", key));
    }
    return true;
  };
  try {
    return json::parse(text, strict);
  } catch (const json::exception& e) {
    fail(file, "header is not valid JSON", e.what());
  }
}

// A JSON number that is a non-negative integer (not 3.0, not -1, not > 2^64).
std::optional<uint64_t> as_unsigned(const json& value) {
  if (!value.is_number_unsigned()) {
    // nlohmann stores non-negative literals as unsigned; a signed one here is negative.
    return std::nullopt;
  }
  return value.get<uint64_t>();
}

TensorInfo parse_entry(const std::string& file, const std::string& name, const json& entry) {
  const std::string where = fmt::format("tensor '{}'", name);
  if (!entry.is_object())
    fail(file, "tensor entry is not an object", fmt::format("{} is {}", where, brief(entry)));
  for (const auto& item : entry.items()) {
    const std::string& key = item.key();
    if (key != "dtype" && key != "shape" && key != "data_offsets")
      fail(file, "unknown key in tensor entry", fmt::format("{} has key '{}'", where, key));
  }
  for (const char* key : {"dtype", "shape", "data_offsets"})
    if (!entry.contains(key))
      fail(file, fmt::format("tensor entry missing '{}'", key), where);

  TensorInfo info;
  info.name = name;

  const json& dtype = entry.at("dtype");
  std::optional<Dtype> parsed_dtype;
  if (dtype.is_string()) parsed_dtype = parse_dtype(dtype.get_ref<const std::string&>());
  if (!parsed_dtype) fail(file, "unknown dtype", fmt::format("{} has dtype {}", where, brief(dtype)));
  info.dtype = *parsed_dtype;

  const json& shape = entry.at("shape");
  if (!shape.is_array())
    fail(file, "shape is not an array of non-negative integers",
         fmt::format("{} has shape {}", where, brief(shape)));
  uint64_t n_bytes = dtype_size(info.dtype);
  bool overflow = false;
  for (const json& dim : shape) {
    const std::optional<uint64_t> size = as_unsigned(dim);
    if (!size || *size > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
      fail(file, "shape is not an array of non-negative integers",
           fmt::format("{} has shape {}", where, brief(shape)));
    info.shape.push_back(static_cast<int64_t>(*size));
    const std::optional<uint64_t> product = checked_mul(n_bytes, *size);
    if (product) n_bytes = *product;
    else overflow = true;  // unless a later dimension is 0, which the loop cannot know yet
  }
  const bool empty = std::find(info.shape.begin(), info.shape.end(), 0) != info.shape.end();
  if (empty) n_bytes = 0;
  else if (overflow)
    fail(file, "tensor byte size overflows",
         fmt::format("{} has shape {} of {}", where, brief(shape), dtype_name(info.dtype)));

  const json& offsets = entry.at("data_offsets");
  const auto bad_offsets = [&] {
    fail(file, "data_offsets is not [begin, end] with begin <= end",
         fmt::format("{} has data_offsets {}", where, brief(offsets)));
  };
  if (!offsets.is_array() || offsets.size() != 2) bad_offsets();
  const std::optional<uint64_t> begin = as_unsigned(offsets[0]);
  const std::optional<uint64_t> end = as_unsigned(offsets[1]);
  if (!begin || !end || *begin > *end) bad_offsets();
  info.begin = *begin;
  info.end = *end;

  if (info.n_bytes() != n_bytes)
    fail(file, "byte size does not match shape and dtype",
         fmt::format("{} is {} {} ({} bytes) but data_offsets [{}, {}] hold {} bytes", where,
                     dtype_name(info.dtype), shape_string(info.shape), n_bytes, info.begin,
                     info.end, info.n_bytes()));
  return info;
}

std::map<std::string, std::string> parse_metadata(const std::string& file, const json& metadata) {
  if (!metadata.is_object())
    fail(file, "__metadata__ is not an object of strings",
         fmt::format("__metadata__ is {}", brief(metadata)));
  std::map<std::string, std::string> result;
  for (const auto& item : metadata.items()) {
    if (!item.value().is_string())
      fail(file, "__metadata__ is not an object of strings",
           fmt::format("key '{}' has value {}", item.key(), brief(item.value())));
    result.emplace(item.key(), item.value().get<std::string>());
  }
  return result;
}

// The tensors, sorted by offsets, must tile [0, data_size) exactly (see the header comment).
void check_layout(const std::string& file, std::vector<TensorInfo>& tensors, uint64_t data_size) {
  std::sort(tensors.begin(), tensors.end(), [](const TensorInfo& a, const TensorInfo& b) {
    return std::tie(a.begin, a.end, a.name) < std::tie(b.begin, b.end, b.name);
  });
  for (const TensorInfo& t : tensors)
    if (t.end > data_size)
      fail(file, "tensor data past end of data section",
           fmt::format("tensor '{}' has data_offsets [{}, {}] but the data section holds {} bytes",
                       t.name, t.begin, t.end, data_size));
  uint64_t covered = 0;  // the data section is tiled up to here
  const TensorInfo* previous = nullptr;
  for (const TensorInfo& t : tensors) {
    if (t.begin < covered)
      fail(file, "overlapping tensors",
           fmt::format("tensor '{}' [{}, {}) overlaps tensor '{}' [{}, {})", t.name, t.begin,
                       t.end, previous->name, previous->begin, previous->end));
    if (t.begin > covered)
      fail(file, "hole in data section",
           fmt::format("bytes [{}, {}) before tensor '{}' belong to no tensor", covered, t.begin,
                       t.name));
    covered = t.end;
    previous = &t;
  }
  if (covered != data_size)
    fail(file, "trailing bytes in data section",
         fmt::format("bytes [{}, {}) after the last tensor belong to no tensor", covered,
                     data_size));
}

}  // namespace

const char* dtype_name(Dtype dtype) { return dtype_row(dtype).name; }
std::size_t dtype_size(Dtype dtype) { return dtype_row(dtype).size; }

std::optional<Dtype> parse_dtype(std::string_view name) {
  for (const DtypeRow& row : kDtypes)
    if (name == row.name) return row.dtype;
  return std::nullopt;
}

std::string shape_string(const Shape& shape) { return fmt::format("[{}]", fmt::join(shape, ", ")); }

int64_t TensorInfo::numel() const {
  // A zero anywhere makes the product 0 even where the other dimensions would overflow.
  if (std::find(shape.begin(), shape.end(), 0) != shape.end()) return 0;
  int64_t n = 1;
  for (int64_t dim : shape) n *= dim;  // validated against the byte size: cannot overflow
  return n;
}

// ---------------------------------------------------------------------------------------------
// Reader

SafetensorsFile::SafetensorsFile(SafetensorsFile&&) noexcept = default;
SafetensorsFile& SafetensorsFile::operator=(SafetensorsFile&&) noexcept = default;
SafetensorsFile::~SafetensorsFile() = default;

SafetensorsFile SafetensorsFile::open(const std::string& path) {
  auto in = std::make_unique<std::ifstream>(path, std::ios::binary);
  QKSCOPE_CHECK_AS(FormatError, in->is_open(), "{}: cannot open file: {}", path,
                   std::strerror(errno));
  in->seekg(0, std::ios::end);
  const std::streamoff size = in->tellg();
  QKSCOPE_CHECK_AS(FormatError, size >= 0, "{}: cannot determine the file size", path);
  in->seekg(0, std::ios::beg);
  SafetensorsFile file;
  file.name_ = path;
  file.parse(std::move(in), static_cast<uint64_t>(size));
  return file;
}

SafetensorsFile SafetensorsFile::from_bytes(std::string bytes, const std::string& name) {
  const uint64_t size = bytes.size();
  SafetensorsFile file;
  file.name_ = name;
  file.parse(std::make_unique<std::istringstream>(std::move(bytes)), size);
  return file;
}

void SafetensorsFile::parse(std::unique_ptr<std::istream> in, uint64_t file_size) {
  in_ = std::move(in);
  if (file_size < 8)
    fail(name_, "file shorter than 8 bytes",
         fmt::format("the file has {} bytes, too few for the header length", file_size));
  std::array<unsigned char, 8> length_bytes{};
  in_->read(reinterpret_cast<char*>(length_bytes.data()), 8);
  QKSCOPE_CHECK_AS(FormatError, in_->gcount() == 8, "{}: read error in the header length", name_);
  const uint64_t header_size = decode_u64_le(length_bytes.data());
  if (header_size > kMaxHeaderBytes)
    fail(name_, "header length absurd",
         fmt::format("header length {} exceeds the limit of {} bytes", header_size,
                     kMaxHeaderBytes));
  if (header_size > file_size - 8)
    fail(name_, "header length past end of file",
         fmt::format("header length {} but only {} bytes follow it", header_size, file_size - 8));

  std::string text(header_size, '\0');
  in_->read(text.data(), static_cast<std::streamsize>(header_size));
  QKSCOPE_CHECK_AS(FormatError, static_cast<uint64_t>(in_->gcount()) == header_size,
                   "{}: read error in the header", name_);
  // The reference requires '{' first; JSON would otherwise allow leading whitespace.
  if (text.empty() || text[0] != '{')
    fail(name_, "header is not a JSON object", "the header does not start with '{'");
  const json header = parse_header_json(name_, text);
  if (!header.is_object()) fail(name_, "header is not a JSON object", brief(header));

  data_start_ = 8 + header_size;
  for (const auto& item : header.items()) {
    if (item.key() == "__metadata__") metadata_ = parse_metadata(name_, item.value());
    else tensors_.push_back(parse_entry(name_, item.key(), item.value()));
  }
  check_layout(name_, tensors_, file_size - data_start_);
  for (std::size_t i = 0; i < tensors_.size(); ++i) index_.emplace(tensors_[i].name, i);
}

bool SafetensorsFile::has(const std::string& tensor) const { return index_.count(tensor) > 0; }

const TensorInfo& SafetensorsFile::info(const std::string& tensor) const {
  const auto it = index_.find(tensor);
  if (it == index_.end()) fail(name_, "missing tensor", fmt::format("no tensor '{}'", tensor));
  return tensors_[it->second];
}

const std::string& SafetensorsFile::metadata_value(const std::string& key) const {
  const auto it = metadata_.find(key);
  if (it == metadata_.end())
    fail(name_, "missing metadata", fmt::format("__metadata__ has no key '{}'", key));
  return it->second;
}

void SafetensorsFile::read_into(const TensorInfo& info, void* out) const {
  if (info.n_bytes() == 0) return;
  in_->clear();
  in_->seekg(static_cast<std::streamoff>(data_start_ + info.begin), std::ios::beg);
  in_->read(static_cast<char*>(out), static_cast<std::streamsize>(info.n_bytes()));
  // Only a file changed since open() can end early: its size was checked then.
  if (!*in_ || static_cast<uint64_t>(in_->gcount()) != info.n_bytes())
    fail(name_, "file truncated while reading",
         fmt::format("tensor '{}' bytes [{}, {}) could not be read", info.name, info.begin,
                     info.end));
}

template <class T>
std::vector<T> SafetensorsFile::read(const std::string& tensor,
                                     const std::optional<Shape>& expected) const {
  const TensorInfo& t = info(tensor);
  const Dtype want = DtypeOf<T>::value;
  if (t.dtype != want)
    fail(name_, "dtype mismatch",
         fmt::format("tensor '{}' is {}, expected {}", tensor, dtype_name(t.dtype),
                     dtype_name(want)));
  if (expected) {
    bool same = expected->size() == t.shape.size();
    for (std::size_t i = 0; same && i < t.shape.size(); ++i)
      same = (*expected)[i] == kAnyDim || (*expected)[i] == t.shape[i];
    if (!same)
      fail(name_, "shape mismatch",
           fmt::format("tensor '{}' has shape {}, expected {} (-1: any size)", tensor,
                       shape_string(t.shape), shape_string(*expected)));
  }
  std::vector<T> values(static_cast<std::size_t>(t.numel()));
  read_into(t, values.data());
  if (!host_is_little_endian()) swap_elements(values.data(), t.n_bytes(), sizeof(T));
  return values;
}

template std::vector<float> SafetensorsFile::read<float>(const std::string&,
                                                         const std::optional<Shape>&) const;
template std::vector<double> SafetensorsFile::read<double>(const std::string&,
                                                           const std::optional<Shape>&) const;
template std::vector<int64_t> SafetensorsFile::read<int64_t>(const std::string&,
                                                             const std::optional<Shape>&) const;
template std::vector<int32_t> SafetensorsFile::read<int32_t>(const std::string&,
                                                             const std::optional<Shape>&) const;
template std::vector<uint8_t> SafetensorsFile::read<uint8_t>(const std::string&,
                                                             const std::optional<Shape>&) const;

std::string SafetensorsFile::read_bytes(const std::string& tensor) const {
  const TensorInfo& t = info(tensor);
  std::string bytes(t.n_bytes(), '\0');
  read_into(t, bytes.data());
  return bytes;
}

// ---------------------------------------------------------------------------------------------
// Writer

void SafetensorsWriter::set_metadata(const std::string& key, const std::string& value) {
  metadata_[key] = value;
}

void SafetensorsWriter::add(const std::string& name, Dtype dtype, const Shape& shape,
                            const void* data, std::size_t n_bytes) {
  QKSCOPE_CHECK(name != "__metadata__", "safetensors: tensor name '__metadata__' is reserved");
  for (const Entry& e : entries_)
    QKSCOPE_CHECK(e.info.name != name, "safetensors: tensor '{}' added twice", name);
  uint64_t expected = dtype_size(dtype);
  bool overflow = false;
  for (int64_t dim : shape) {
    QKSCOPE_CHECK(dim >= 0, "safetensors: tensor '{}' has negative dimension in shape {}", name,
                  shape_string(shape));
    const std::optional<uint64_t> product = checked_mul(expected, static_cast<uint64_t>(dim));
    if (product) expected = *product;
    else overflow = true;
  }
  if (std::find(shape.begin(), shape.end(), 0) != shape.end()) expected = 0;
  else QKSCOPE_CHECK(!overflow, "safetensors: tensor '{}' byte size overflows", name);
  QKSCOPE_CHECK(expected == n_bytes,
                "safetensors: tensor '{}' is {} {} ({} bytes) but {} bytes were given", name,
                dtype_name(dtype), shape_string(shape), expected, n_bytes);
  Entry entry;
  entry.info.name = name;
  entry.info.dtype = dtype;
  entry.info.shape = shape;
  entry.info.end = n_bytes;
  entry.data = data;
  entries_.push_back(std::move(entry));
}

std::vector<SafetensorsWriter::Entry> SafetensorsWriter::layout() const {
  std::vector<Entry> ordered = entries_;
  // Larger elements first keeps every tensor aligned to its element size (the data section
  // starts at a multiple of 8).
  std::stable_sort(ordered.begin(), ordered.end(), [](const Entry& a, const Entry& b) {
    return dtype_size(a.info.dtype) > dtype_size(b.info.dtype);
  });
  uint64_t offset = 0;
  for (Entry& e : ordered) {
    const uint64_t n_bytes = e.info.end;  // add() stored the size there
    e.info.begin = offset;
    e.info.end = offset + n_bytes;
    offset = e.info.end;
  }
  return ordered;
}

std::string SafetensorsWriter::header() const {
  nlohmann::ordered_json root = nlohmann::ordered_json::object();
  if (!metadata_.empty()) {
    nlohmann::ordered_json metadata = nlohmann::ordered_json::object();
    for (const auto& [key, value] : metadata_) metadata[key] = value;
    root["__metadata__"] = std::move(metadata);
  }
  for (const Entry& e : layout()) {
    nlohmann::ordered_json entry = nlohmann::ordered_json::object();
    entry["dtype"] = dtype_name(e.info.dtype);
    entry["shape"] = e.info.shape;
    entry["data_offsets"] = {e.info.begin, e.info.end};
    root[e.info.name] = std::move(entry);
  }
  std::string text;
  try {
    text = root.dump();
  } catch (const nlohmann::ordered_json::exception& e) {
    throw Error(fmt::format("safetensors: a tensor name or metadata string is not valid UTF-8: {}",
                            e.what()));
  }
  // As the reference writer does: pad with spaces so the data section starts 8-aligned.
  text.append((8 - text.size() % 8) % 8, ' ');
  return text;
}

template <class Sink>
void SafetensorsWriter::emit(Sink& sink) const {
  const std::string text = header();
  sink.write(encode_u64_le(text.size()));
  sink.write(text);
  const bool swap = !host_is_little_endian();
  for (const Entry& e : layout()) {
    const auto* bytes = static_cast<const char*>(e.data);
    const std::size_t elem = dtype_size(e.info.dtype);
    if (!swap || elem == 1) {
      if (e.info.n_bytes() > 0) sink.write(std::string_view(bytes, e.info.n_bytes()));
      continue;
    }
    // Big-endian host: convert through a bounded buffer rather than a copy of the tensor.
    std::string chunk;
    const std::size_t chunk_bytes = (std::size_t{1} << 20) / elem * elem;
    for (std::size_t at = 0; at < e.info.n_bytes(); at += chunk_bytes) {
      chunk.assign(bytes + at, std::min<std::size_t>(chunk_bytes, e.info.n_bytes() - at));
      swap_elements(chunk.data(), chunk.size(), elem);
      sink.write(chunk);
    }
  }
}

namespace {
struct StringSink {
  std::string& out;
  void write(std::string_view bytes) { out.append(bytes); }
};
struct FileSink {
  AtomicFile& out;
  void write(std::string_view bytes) { out.write(bytes); }
};
}  // namespace

std::string SafetensorsWriter::bytes() const {
  std::string out;
  StringSink sink{out};
  emit(sink);
  return out;
}

void SafetensorsWriter::write(const std::string& path) const {
  AtomicFile file(path);
  FileSink sink{file};
  emit(sink);
  file.commit();
}

}  // namespace qkscope
