// Sinks, sessions and the site table: the plugin's Torch-free part.
#include <algorithm>
#include <atomic>
#include <set>

#include <fmt/format.h>

#include "qkscope/capture_session.h"
#include "qkscope/capture_sink.h"
#include "qkscope/error.h"
#include "qkscope/qk_file.h"

namespace qkscope {

// ---- sinks ----------------------------------------------------------------------------------

void CaptureSink::prepare(const std::vector<SiteDescription>&) {}

std::vector<int> CaptureSink::wants_heads(const SiteDescription& site) {
  std::vector<int> heads(std::max(site.n_heads, 0));
  for (size_t h = 0; h < heads.size(); ++h) heads[h] = static_cast<int>(h);
  return heads;
}

CallbackSink::CallbackSink(Consume consume, WantsHeads wants)
    : consume_(std::move(consume)), wants_(std::move(wants)) {
  QKSCOPE_CHECK(static_cast<bool>(consume_), "CallbackSink: the consume function is empty");
}

std::vector<int> CallbackSink::wants_heads(const SiteDescription& site) {
  return wants_ ? wants_(site) : CaptureSink::wants_heads(site);
}

void CallbackSink::consume(const SiteDescription& site, const QkBatch& batch) {
  consume_(site, batch);
}

StoreSink::StoreSink(QkStore& store, SiteFilter filter) : store_(store), filter_(std::move(filter)) {}

bool StoreSink::layer_kept(int layer) const {
  return filter_.layers.empty() ||
         std::find(filter_.layers.begin(), filter_.layers.end(), layer) != filter_.layers.end();
}

void StoreSink::prepare(const std::vector<SiteDescription>& sites) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (declared_) return;
  // Layers are the sites a forward has reached (skipped sites and branches not taken have none).
  int n_layers = 0;
  for (const SiteDescription& site : sites) n_layers = std::max(n_layers, site.layer + 1);
  for (int layer : filter_.layers)
    QKSCOPE_CHECK(layer >= 0 && layer < n_layers,
                  "layer {} requested but the model has {} attention layers (0..{})", layer,
                  n_layers, n_layers - 1);
  declared_layers_.assign(n_layers, 0);
  for (const SiteDescription& site : sites) {
    if (site.layer < 0 || site.n_heads < 0 || !layer_kept(site.layer)) continue;
    SiteMeta meta;
    meta.module = site.module;
    meta.prescale = site.prescale;
    if (filter_.heads.empty()) {
      for (int h = 0; h < site.n_heads; ++h) meta.head_index.push_back(h);
    } else {
      meta.head_index = filter_.heads;
    }
    store_.declare_site(site.layer, meta);
    declared_layers_[site.layer] = 1;
  }
  declared_ = true;
}

std::vector<int> StoreSink::wants_heads(const SiteDescription& site) {
  if (!layer_kept(site.layer)) return {};
  {
    std::lock_guard<std::mutex> lock(mutex_);
    // A site first reached after the declarations (a branch not taken before) is not kept.
    if (declared_ && (site.layer >= static_cast<int>(declared_layers_.size()) ||
                      !declared_layers_[site.layer]))
      return {};
  }
  if (filter_.heads.empty()) return CaptureSink::wants_heads(site);
  for (int h : filter_.heads)
    QKSCOPE_CHECK(h >= 0 && h < site.n_heads, "head {} requested but site {} ({}) has {} heads",
                  h, site.layer, site.module, site.n_heads);
  return filter_.heads;
}

void StoreSink::consume(const SiteDescription&, const QkBatch& batch) { store_.add(batch); }

SafetensorsSink::SafetensorsSink(std::string path, StoreOptions store_options, SiteFilter filter)
    : path_(std::move(path)), store_(store_options), inner_(store_, std::move(filter)) {}

void SafetensorsSink::prepare(const std::vector<SiteDescription>& sites) { inner_.prepare(sites); }
std::vector<int> SafetensorsSink::wants_heads(const SiteDescription& site) {
  return inner_.wants_heads(site);
}
void SafetensorsSink::consume(const SiteDescription& site, const QkBatch& batch) {
  QKSCOPE_CHECK(!closed_, "q/k file '{}' is already closed", path_);
  inner_.consume(site, batch);
}

void SafetensorsSink::close() {
  QKSCOPE_CHECK(!closed_, "q/k file '{}' is already closed", path_);
  closed_ = true;
  write_qk_file(path_, store_.take());
}

// ---- sequence assembler ---------------------------------------------------------------------

SequenceAssembler::SequenceAssembler(CaptureSink& target) : target_(target) {}

void SequenceAssembler::prepare(const std::vector<SiteDescription>& sites) {
  target_.prepare(sites);
}

std::vector<int> SequenceAssembler::wants_heads(const SiteDescription& site) {
  return target_.wants_heads(site);
}

void SequenceAssembler::consume(const SiteDescription& site, const QkBatch& batch) {
  if (batch.n_tokens == 0) return;
  const int has_ids = batch.token_id != nullptr ? 1 : 0;
  const size_t row = static_cast<size_t>(batch.n_heads) * static_cast<size_t>(batch.head_dim);
  std::lock_guard<std::mutex> lock(mutex_);
  QKSCOPE_CHECK(ids_ < 0 || ids_ == has_ids,
                "sequence assembler: layer {}: a batch {} token ids after batches {}", batch.layer,
                has_ids ? "with" : "without", has_ids ? "without" : "with");
  Layer& layer = layers_[batch.layer];
  if (layer.n_heads < 0 || layer.sequences.empty()) {
    layer.n_heads = batch.n_heads;
    layer.head_dim = batch.head_dim;
  }
  QKSCOPE_CHECK(layer.n_heads == batch.n_heads && layer.head_dim == batch.head_dim,
                "sequence assembler: layer {} ({}) brought {} heads of dimension {} after {} heads "
                "of dimension {}: the sink must want the same heads at every forward",
                batch.layer, site.module, batch.n_heads, batch.head_dim, layer.n_heads,
                layer.head_dim);
  ids_ = has_ids;
  layer.site = site;
  Tokens* tokens = nullptr;
  int64_t current = 0;
  for (int64_t i = 0; i < batch.n_tokens; ++i) {
    if (tokens == nullptr || batch.sequence[i] != current) {
      current = batch.sequence[i];
      tokens = &layer.sequences[current];
    }
    const float* q = batch.q + static_cast<size_t>(i) * row;
    const float* k = batch.k + static_cast<size_t>(i) * row;
    tokens->q.insert(tokens->q.end(), q, q + row);
    tokens->k.insert(tokens->k.end(), k, k + row);
    tokens->position.push_back(batch.position[i]);
    if (has_ids) tokens->token_id.push_back(batch.token_id[i]);
  }
}

std::map<int, SequenceAssembler::Layer> SequenceAssembler::take(
    const std::vector<int64_t>* sequences) {
  std::lock_guard<std::mutex> lock(mutex_);
  std::map<int, Layer> out;
  if (sequences == nullptr) {
    for (auto& [number, layer] : layers_)
      if (!layer.sequences.empty()) out.emplace(number, std::move(layer));
    layers_.clear();
    return out;
  }
  for (auto& [number, layer] : layers_) {
    Layer taken;
    taken.site = layer.site;
    taken.n_heads = layer.n_heads;
    taken.head_dim = layer.head_dim;
    for (int64_t s : *sequences) {
      auto it = layer.sequences.find(s);
      if (it == layer.sequences.end()) continue;
      taken.sequences.emplace(s, std::move(it->second));
      layer.sequences.erase(it);
    }
    if (!taken.sequences.empty()) out.emplace(number, std::move(taken));
  }
  return out;
}

void SequenceAssembler::deliver(std::map<int, Layer> layers) {
  if (layers.empty()) return;
  // Each (layer, sequence)'s tokens in position order.
  std::map<int, std::map<int64_t, std::vector<int64_t>>> order;
  for (auto& [number, layer] : layers) {
    for (auto& [sequence, tokens] : layer.sequences) {
      std::vector<int64_t>& o = order[number][sequence];
      o.resize(tokens.position.size());
      for (size_t i = 0; i < o.size(); ++i) o[i] = static_cast<int64_t>(i);
      std::stable_sort(o.begin(), o.end(), [&](int64_t a, int64_t b) {
        return tokens.position[a] < tokens.position[b];
      });
    }
  }
  // Check everything before the target sees anything.
  std::map<int64_t, int> all;  // sequence -> its lowest layer with tokens
  for (auto& [number, layer] : layers)
    for (auto& [sequence, tokens] : layer.sequences) all.emplace(sequence, number);
  for (const auto& [sequence, lowest] : all) {
    const Tokens* first = nullptr;
    const std::vector<int64_t>* first_order = nullptr;
    int first_layer = -1;
    for (auto& [number, layer] : layers) {
      auto it = layer.sequences.find(sequence);
      QKSCOPE_CHECK(it != layer.sequences.end(),
                    "sequence assembler: sequence {} has tokens at layer {} but none at layer {}",
                    sequence, lowest, number);
      const Tokens& tokens = it->second;
      const std::vector<int64_t>& o = order[number][sequence];
      if (first == nullptr) {
        for (size_t i = 0; i < o.size(); ++i) {
          const int64_t p = tokens.position[o[i]];
          QKSCOPE_CHECK(p == static_cast<int64_t>(i),
                        "sequence assembler: sequence {} at layer {}: positions are not 0..{} "
                        "each once: {} where {} was expected ({}); were the same sequence "
                        "indices given to every forward of the generation?",
                        sequence, number, o.size() - 1, p, i,
                        p < static_cast<int64_t>(i) ? "a position arrived twice"
                                                    : "a position is missing");
        }
        first = &tokens;
        first_order = &o;
        first_layer = number;
        continue;
      }
      QKSCOPE_CHECK(o.size() == first_order->size(),
                    "sequence assembler: sequence {} has {} tokens at layer {} but {} at layer {}",
                    sequence, o.size(), number, first_order->size(), first_layer);
      for (size_t i = 0; i < o.size(); ++i) {
        QKSCOPE_CHECK(tokens.position[o[i]] == first->position[(*first_order)[i]],
                      "sequence assembler: sequence {}: layer {} has position {} where layer {} "
                      "has {}", sequence, number, tokens.position[o[i]], first_layer,
                      first->position[(*first_order)[i]]);
        if (!tokens.token_id.empty())
          QKSCOPE_CHECK(tokens.token_id[o[i]] == first->token_id[(*first_order)[i]],
                        "sequence assembler: sequence {} position {}: token id {} at layer {} "
                        "but {} at layer {}", sequence, i, tokens.token_id[o[i]], number,
                        first->token_id[(*first_order)[i]], first_layer);
      }
    }
  }
  // One batch per layer, ascending: the store samples a sequence at its lowest layer.
  for (auto& [number, layer] : layers) {
    const size_t row = static_cast<size_t>(layer.n_heads) * static_cast<size_t>(layer.head_dim);
    size_t n = 0;
    for (auto& [sequence, tokens] : layer.sequences) n += tokens.position.size();
    std::vector<float> q(n * row), k(n * row);
    std::vector<int64_t> seq(n), position(n), token_id;
    const bool has_ids = !layer.sequences.empty() && !layer.sequences.begin()->second.token_id.empty();
    if (has_ids) token_id.resize(n);
    size_t t = 0;
    for (auto& [sequence, tokens] : layer.sequences) {
      for (int64_t i : order[number][sequence]) {
        std::copy_n(tokens.q.data() + i * row, row, q.data() + t * row);
        std::copy_n(tokens.k.data() + i * row, row, k.data() + t * row);
        seq[t] = sequence;
        position[t] = tokens.position[i];
        if (has_ids) token_id[t] = tokens.token_id[i];
        ++t;
      }
      // Free as we go: the assembled batch is the only copy from here on.
      std::vector<float>().swap(tokens.q);
      std::vector<float>().swap(tokens.k);
    }
    QkBatch batch;
    batch.layer = number;
    batch.n_tokens = static_cast<int64_t>(n);
    batch.n_heads = layer.n_heads;
    batch.head_dim = layer.head_dim;
    batch.q = q.data();
    batch.k = k.data();
    batch.sequence = seq.data();
    batch.position = position.data();
    batch.token_id = has_ids ? token_id.data() : nullptr;
    target_.consume(layer.site, batch);
  }
}

void SequenceAssembler::flush() { deliver(take(nullptr)); }

void SequenceAssembler::finish(const std::vector<int64_t>& sequences) {
  deliver(take(&sequences));
}

void SequenceAssembler::discard(const std::vector<int64_t>& sequences) { take(&sequences); }

std::vector<int64_t> SequenceAssembler::new_sequences(int64_t n) {
  QKSCOPE_CHECK(n >= 0, "sequence assembler: {} sequences requested", n);
  const int64_t first = target_.take_sequences(n);
  std::vector<int64_t> out(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) out[static_cast<size_t>(i)] = first + i;
  return out;
}

int64_t SequenceAssembler::buffered_tokens() const {
  std::lock_guard<std::mutex> lock(mutex_);
  for (const auto& [number, layer] : layers_) {
    if (layer.sequences.empty()) continue;
    int64_t n = 0;
    for (const auto& [sequence, tokens] : layer.sequences)
      n += static_cast<int64_t>(tokens.position.size());
    return n;
  }
  return 0;
}

int64_t SequenceAssembler::buffered_sequences() const {
  std::lock_guard<std::mutex> lock(mutex_);
  std::set<int64_t> all;
  for (const auto& [number, layer] : layers_)
    for (const auto& [sequence, tokens] : layer.sequences) all.insert(sequence);
  return static_cast<int64_t>(all.size());
}

// ---- sessions -------------------------------------------------------------------------------

namespace {
thread_local CaptureSession* tls_session = nullptr;
std::atomic<int64_t> g_capture_copies{0};
}  // namespace

CaptureSession::CaptureSession(CaptureSink& sink)
    : sink_(sink), own_numbering_(false), next_sequence_(0), previous_(tls_session) {
  tls_session = this;
}

CaptureSession::CaptureSession(CaptureSink& sink, int64_t first_sequence)
    : sink_(sink), own_numbering_(true), next_sequence_(first_sequence), previous_(tls_session) {
  tls_session = this;
}

CaptureSession::~CaptureSession() {
  if (tls_session == this) tls_session = previous_;
}

int64_t CaptureSession::take_sequences(int64_t n) {
  if (!own_numbering_) return sink_.take_sequences(n);
  const int64_t first = next_sequence_;
  next_sequence_ += n;
  return first;
}

CaptureSession* CaptureSession::current() { return tls_session; }

namespace detail {
int64_t capture_copies() { return g_capture_copies.load(std::memory_order_relaxed); }
void count_capture_copies(int64_t n) { g_capture_copies.fetch_add(n, std::memory_order_relaxed); }
}  // namespace detail

// ---- site table -----------------------------------------------------------------------------

std::string format_sites(const std::vector<SiteDescription>& sites) {
  auto number = [](int v) { return v < 0 ? std::string("?") : std::to_string(v); };
  std::string out = fmt::format("{:>5}  {:>4}  {:<7}  {:>5}  {:>8}  {:>11}  {:<14}  {}\n", "layer",
                                "site", "form", "heads", "head_dim", "prescale", "scale at",
                                "module");
  for (const SiteDescription& s : sites) {
    const std::string layer = !s.skipped.empty() ? "-" : number(s.layer);
    const std::string prescale = s.prescale_known ? fmt::format("{:.9g}", s.prescale) : "?";
    out += fmt::format("{:>5}  {:>4}  {:<7}  {:>5}  {:>8}  {:>11}  {:<14}  {}", layer, s.site,
                       s.kind, number(s.n_heads), number(s.head_dim), prescale,
                       s.scale_at.empty() ? "-" : s.scale_at, s.module.empty() ? "-" : s.module);
    if (!s.skipped.empty()) out += "  [skipped: " + s.skipped + "]";
    out += "\n";
  }
  return out;
}

}  // namespace qkscope
