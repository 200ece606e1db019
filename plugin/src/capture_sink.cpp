// Sinks, sessions and the site table: the plugin's Torch-free part.
#include <algorithm>
#include <atomic>

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
