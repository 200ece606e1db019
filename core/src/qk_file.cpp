#include "qkscope/qk_file.h"

#include <charconv>
#include <cmath>
#include <cstddef>
#include <limits>
#include <numeric>
#include <optional>
#include <set>
#include <string_view>
#include <vector>

#include "qkscope/error.h"
#include "qkscope/safetensors.h"

namespace qkscope {
namespace {

[[noreturn]] void fail(const std::string& file, std::string_view rule, const std::string& detail) {
  throw FormatError(fmt::format("{}: {}: {}", file, rule, detail));
}

std::string q_name(int layer) { return fmt::format("layer{}.q", layer); }
std::string k_name(int layer) { return fmt::format("layer{}.k", layer); }
std::string module_key(int layer) { return fmt::format("layer{}.module", layer); }
std::string prescale_key(int layer) { return fmt::format("layer{}.prescale", layer); }
std::string heads_key(int layer) { return fmt::format("layer{}.heads", layer); }

constexpr const char* kSequence = "tokens.sequence";
constexpr const char* kPosition = "tokens.position";
constexpr const char* kTokenId = "tokens.id";

bool is_identity(const std::vector<int>& heads) {
  for (std::size_t h = 0; h < heads.size(); ++h)
    if (heads[h] != static_cast<int>(h)) return false;
  return true;
}

// ---------------------------------------------------------------------------------------------
// Parsing metadata strings: the whole string must be the number, in the C locale.

template <class T>
std::optional<T> parse_number(std::string_view text) {
  T value{};
  const auto [end, err] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (err != std::errc() || end != text.data() + text.size() || text.empty()) return std::nullopt;
  return value;
}

// "3,0,7" -> {3, 0, 7}; "" -> {}. nullopt when an element is not a non-negative int.
std::optional<std::vector<int>> parse_int_list(std::string_view text) {
  std::vector<int> values;
  if (text.empty()) return values;
  std::size_t start = 0;
  while (true) {
    const std::size_t comma = text.find(',', start);
    const std::string_view item =
        text.substr(start, comma == std::string_view::npos ? std::string_view::npos : comma - start);
    const std::optional<int> value = parse_number<int>(item);
    if (!value || *value < 0) return std::nullopt;
    values.push_back(*value);
    if (comma == std::string_view::npos) return values;
    start = comma + 1;
  }
}

std::vector<int> read_layers(const SafetensorsFile& file) {
  const std::string& text = file.metadata_value("layers");
  const std::optional<std::vector<int>> layers = parse_int_list(text);
  bool increasing = layers.has_value();
  for (std::size_t i = 1; increasing && i < layers->size(); ++i)
    increasing = (*layers)[i - 1] < (*layers)[i];
  if (!increasing)
    fail(file.name(), "bad layers list",
         fmt::format("layers is '{}', expected strictly increasing non-negative integers "
                     "separated by commas",
                     text));
  return *layers;
}

double read_prescale(const SafetensorsFile& file, int layer) {
  const std::string& text = file.metadata_value(prescale_key(layer));
  const std::optional<double> value = parse_number<double>(text);
  if (!value || !std::isfinite(*value) || *value <= 0)
    fail(file.name(), "bad metadata number",
         fmt::format("{} is '{}', expected a positive finite number", prescale_key(layer), text));
  return *value;
}

std::vector<int> read_heads(const SafetensorsFile& file, int layer, int n_heads) {
  const auto it = file.metadata().find(heads_key(layer));
  if (it == file.metadata().end()) {
    std::vector<int> heads(static_cast<std::size_t>(n_heads));
    std::iota(heads.begin(), heads.end(), 0);
    return heads;
  }
  const std::optional<std::vector<int>> heads = parse_int_list(it->second);
  if (!heads)
    fail(file.name(), "bad metadata number",
         fmt::format("{} is '{}', expected non-negative integers separated by commas",
                     heads_key(layer), it->second));
  if (heads->size() != static_cast<std::size_t>(n_heads))
    fail(file.name(), "head list does not match H",
         fmt::format("{} lists {} heads but {} has {}", heads_key(layer), heads->size(),
                     q_name(layer), n_heads));
  return *heads;
}

// An optional non-negative count; `fallback` when absent.
int64_t read_count(const SafetensorsFile& file, const std::string& key, int64_t fallback) {
  const auto it = file.metadata().find(key);
  if (it == file.metadata().end()) return fallback;
  const std::optional<int64_t> value = parse_number<int64_t>(it->second);
  if (!value || *value < 0)
    fail(file.name(), "bad metadata number",
         fmt::format("{} is '{}', expected a non-negative integer", key, it->second));
  return *value;
}

// ---------------------------------------------------------------------------------------------
// Checking tensors before reading them.

void expect_rank(const SafetensorsFile& file, const TensorInfo& info, std::size_t rank) {
  if (info.shape.size() != rank)
    fail(file.name(), "shape mismatch",
         fmt::format("tensor '{}' has shape {}, expected {} dimensions", info.name,
                     shape_string(info.shape), rank));
}

void expect_tokens(const SafetensorsFile& file, const TensorInfo& info, int64_t n_tokens) {
  if (info.shape[0] != n_tokens)
    fail(file.name(), "token count mismatch",
         fmt::format("tensor '{}' has {} tokens but {} has {}", info.name, info.shape[0],
                     kSequence, n_tokens));
}

// Every tensor must be one the layout names: an extra one means a writer we do not understand.
void reject_unexpected_tensors(const SafetensorsFile& file, const std::vector<int>& layers) {
  std::set<std::string> expected = {kSequence, kPosition, kTokenId};
  for (int layer : layers) {
    expected.insert(q_name(layer));
    expected.insert(k_name(layer));
  }
  for (const TensorInfo& info : file.tensors())
    if (expected.count(info.name) == 0)
      fail(file.name(), "unexpected tensor",
           fmt::format("tensor '{}' is not part of the layout (layers '{}')", info.name,
                       file.metadata_value("layers")));
}

std::vector<int64_t> read_token_array(const SafetensorsFile& file, const std::string& name,
                                      int64_t n_tokens) {
  const TensorInfo& info = file.info(name);
  expect_rank(file, info, 1);
  expect_tokens(file, info, n_tokens);
  return file.read<int64_t>(name);
}

SiteData read_site(const SafetensorsFile& file, int layer, int64_t n_tokens) {
  const TensorInfo& q = file.info(q_name(layer));
  const TensorInfo& k = file.info(k_name(layer));
  expect_rank(file, q, 3);
  expect_tokens(file, q, n_tokens);
  if (k.shape != q.shape)
    fail(file.name(), "q/k shape mismatch",
         fmt::format("'{}' has shape {} but '{}' has {}", q.name, shape_string(q.shape), k.name,
                     shape_string(k.shape)));
  if (q.shape[1] < 1 || q.shape[2] < 1 || q.shape[1] > std::numeric_limits<int>::max() ||
      q.shape[2] > std::numeric_limits<int>::max())
    fail(file.name(), "shape mismatch",
         fmt::format("tensor '{}' has shape {}, expected H and D between 1 and 2^31-1", q.name,
                     shape_string(q.shape)));

  SiteData site;
  site.layer = layer;
  site.module = file.metadata_value(module_key(layer));
  site.prescale = read_prescale(file, layer);
  site.n_heads = static_cast<int>(q.shape[1]);
  site.head_dim = static_cast<int>(q.shape[2]);
  site.head_index = read_heads(file, layer, site.n_heads);
  site.q = file.read<float>(q.name);
  site.k = file.read<float>(k.name);
  return site;
}

// The sample.* keys (QkData::sample): absent when none of them is present.
std::optional<QkData::Sample> read_sample(const SafetensorsFile& file) {
  const auto& m = file.metadata();
  if (!m.count("sample.seed") && !m.count("sample.max_tokens") && !m.count("sample.cutoff"))
    return std::nullopt;
  QkData::Sample sample;
  const std::string& seed = file.metadata_value("sample.seed");
  const std::optional<uint64_t> s = parse_number<uint64_t>(seed);
  if (!s)
    fail(file.name(), "bad metadata number",
         fmt::format("sample.seed is '{}', expected a non-negative integer", seed));
  sample.seed = *s;
  sample.max_tokens = read_count(file, "sample.max_tokens", 0);
  const std::string& cutoff = file.metadata_value("sample.cutoff");
  const std::optional<double> c = parse_number<double>(cutoff);
  if (!c || !(*c >= 0 && *c <= 2))
    fail(file.name(), "bad metadata number",
         fmt::format("sample.cutoff is '{}', expected a number in [0, 2]", cutoff));
  sample.cutoff = *c;
  return sample;
}

}  // namespace

std::vector<std::pair<std::string, std::string>> sample_metadata(const QkData& data) {
  if (!data.sample) return {};
  return {{"sample.seed", std::to_string(data.sample->seed)},
          {"sample.max_tokens", std::to_string(data.sample->max_tokens)},
          {"sample.cutoff", fmt::format("{:.17g}", data.sample->cutoff)}};
}

namespace {

// The writer of `data`'s file; it points into `data`, which must outlive it.
SafetensorsWriter qk_writer(const QkData& data, const std::string& where) {
  validate(data, where);
  const int64_t n = data.n_tokens();

  SafetensorsWriter writer;
  writer.set_metadata("format", kQkFormat);
  std::vector<int> layers;
  for (const SiteData& site : data.sites) layers.push_back(site.layer);
  writer.set_metadata("layers", fmt::format("{}", fmt::join(layers, ",")));
  writer.set_metadata("tokens_seen", std::to_string(data.tokens_seen));
  writer.set_metadata("sequences_seen", std::to_string(data.sequences_seen));
  for (const auto& [key, value] : sample_metadata(data)) writer.set_metadata(key, value);

  writer.add(kSequence, {n}, data.sequence);
  writer.add(kPosition, {n}, data.position);
  if (data.has_token_ids()) writer.add(kTokenId, {n}, data.token_id);
  for (const SiteData& site : data.sites) {
    writer.set_metadata(module_key(site.layer), site.module);
    writer.set_metadata(prescale_key(site.layer), fmt::format("{:.17g}", site.prescale));
    if (!is_identity(site.head_index))
      writer.set_metadata(heads_key(site.layer), fmt::format("{}", fmt::join(site.head_index, ",")));
    const Shape shape = {n, site.n_heads, site.head_dim};
    writer.add(q_name(site.layer), shape, site.q);
    writer.add(k_name(site.layer), shape, site.k);
  }
  return writer;
}

QkData read_qk(const SafetensorsFile& file) {
  const std::string& path = file.name();
  const std::string& format = file.metadata_value("format");
  if (format != kQkFormat)
    fail(path, "wrong format string",
         fmt::format("format is '{}', expected '{}'", format, kQkFormat));
  const std::vector<int> layers = read_layers(file);
  reject_unexpected_tensors(file, layers);

  const TensorInfo& sequence = file.info(kSequence);
  expect_rank(file, sequence, 1);
  const int64_t n = sequence.shape[0];

  QkData data;
  data.sequence = file.read<int64_t>(kSequence);
  data.position = read_token_array(file, kPosition, n);
  if (file.has(kTokenId)) data.token_id = read_token_array(file, kTokenId, n);
  for (int layer : layers) data.sites.push_back(read_site(file, layer, n));

  const std::set<int64_t> sequences(data.sequence.begin(), data.sequence.end());
  data.tokens_seen = read_count(file, "tokens_seen", n);
  data.sequences_seen =
      read_count(file, "sequences_seen", static_cast<int64_t>(sequences.size()));

  data.sample = read_sample(file);

  try {
    validate(data, path);
  } catch (const FormatError&) {
    throw;
  } catch (const Error& e) {
    throw FormatError(e.what());  // same message: in a file, a broken invariant is a format error
  }
  return data;
}

}  // namespace

void write_qk_file(const std::string& path, const QkData& data) {
  qk_writer(data, path).write(path);
}

void write_qk_file(const std::string& path, const QkData& data,
                   const std::vector<std::pair<std::string, std::string>>& extra) {
  SafetensorsWriter writer = qk_writer(data, path);
  for (const auto& [key, value] : extra) {
    QKSCOPE_CHECK(key != "format" && key != "tokens_seen" && key != "sequences_seen" &&
                      key.rfind("layer", 0) != 0 && key.rfind("sample.", 0) != 0,
                  "{}: metadata key '{}' is the layout's own", path, key);
    writer.set_metadata(key, value);
  }
  writer.write(path);
}

QkData read_qk_file(const std::string& path) { return read_qk(SafetensorsFile::open(path)); }

std::string qk_file_bytes(const QkData& data) { return qk_writer(data, "qk_file_bytes").bytes(); }

QkData parse_qk_bytes(std::string bytes, const std::string& name) {
  return read_qk(SafetensorsFile::from_bytes(std::move(bytes), name));
}

}  // namespace qkscope
