#include "checkpoint_run.h"

#include <csignal>
#include <cstdlib>
#include <string_view>

#include "qkscope/checkpoint.h"
#include "qkscope/qk_merge.h"
#include "qkscope/error.h"

namespace qkscope::cli {
namespace {

constexpr const char* kKind = "qkscope.checkpoint.v1";

std::string setting_key(const std::string& name) { return "checkpoint.setting." + name; }

}  // namespace

RunSettings checkpoint_settings(const CaptureOptions& o, int max_length) {
  RunSettings s;
  s.push_back({"model file", hash_file(o.model)});
  if (!o.text.empty()) s.push_back({"corpus (--text)", hash_file(o.text)});
  if (!o.ids.empty()) s.push_back({"corpus (--ids)", hash_file(o.ids)});
  if (!o.tokenizer.empty()) s.push_back({"--tokenizer", hash_file(o.tokenizer)});
  if (!o.vocab.empty()) s.push_back({"--vocab", hash_file(o.vocab) + (o.cased ? " cased" : "")});
  if (!o.spm.empty()) s.push_back({"--spm", hash_file(o.spm)});
  s.push_back({"--max-length", std::to_string(max_length)});
  s.push_back({"--pad-to", o.pad_to ? std::to_string(*o.pad_to) : "none"});
  s.push_back({"--batch-size", std::to_string(o.batch_size)});
  s.push_back({"--layers", o.layers_text.empty() ? "all" : o.layers_text});
  s.push_back({"--max-tokens", o.max_tokens ? std::to_string(*o.max_tokens) : "none"});
  s.push_back({"--seed", std::to_string(o.seed)});
  s.push_back({"--first-sequence", std::to_string(o.first_sequence)});
  // Thread counts can change the forwards' summation order, hence the q/k in the last bits.
  s.push_back({"--threads", std::to_string(o.threads)});
  return s;
}

Checkpointer::Checkpointer(const CaptureOptions& o, RunSettings settings)
    : path_(o.checkpoint),
      settings_(std::move(settings)),
      first_sequence_(o.first_sequence),
      source_(o.text.empty() ? o.ids : o.text),
      every_sequences_(o.checkpoint_every),
      every_seconds_(o.checkpoint_seconds),
      last_time_(std::chrono::steady_clock::now()) {
  // A file size limit (ulimit -f) then fails the write with EFBIG instead of killing the run.
  if (enabled()) std::signal(SIGXFSZ, SIG_IGN);
}

void Checkpointer::after_batch(const QkStore& store, int64_t next_sequence,
                               const SequenceLines& lines, bool force) {
  if (!enabled()) return;
  const auto now = std::chrono::steady_clock::now();
  const bool by_count = every_sequences_ > 0 && next_sequence - last_sequence_ >= every_sequences_;
  const bool by_time =
      every_seconds_ > 0 && std::chrono::duration<double>(now - last_time_).count() >= every_seconds_;
  if (!force && !by_count && !by_time) return;
  if (next_sequence == last_sequence_ && writes_ > 0) return;  // nothing new since the last one

  std::map<std::string, std::string> extra;
  extra["checkpoint.kind"] = kKind;
  extra["checkpoint.next_sequence"] = std::to_string(next_sequence);
  for (const auto& [name, value] : settings_) extra[setting_key(name)] = value;
  // The identity of the kept sequences, as the --save-qk file of the finished run records it
  // (its range then covers the whole corpus).
  const SequenceRange offered{first_sequence_, first_sequence_ + next_sequence, source_, lines.lines()};
  for (auto& [key, value] : store_sequence_metadata({offered}, store)) extra[key] = std::move(value);
  const int write_number = writes_ + 1;
  try {
    write_store_file(path_, store, extra, [&](uint64_t, uint64_t) {
      test_crash_point("checkpoint", write_number);
    });
  } catch (const Error& e) {
    throw Error(fmt::format("checkpoint not written ({}); the previous checkpoint, if any, is "
                            "intact; stopping", e.what()));
  }
  writes_ = write_number;
  last_sequence_ = next_sequence;
  last_time_ = std::chrono::steady_clock::now();
}

ResumePoint resume_from(const std::string& path, const RunSettings& settings, QkStore& store) {
  StoreFile f = read_store_file(path);
  const auto value = [&](const std::string& key) -> const std::string* {
    auto it = f.metadata.find(key);
    return it == f.metadata.end() ? nullptr : &it->second;
  };
  const std::string* kind = value("checkpoint.kind");
  QKSCOPE_CHECK_AS(UsageError, kind && *kind == kKind,
                   "--resume {}: not a checkpoint of capture (no checkpoint.kind '{}')", path, kKind);
  for (const auto& [name, mine] : settings) {
    const std::string* theirs = value(setting_key(name));
    QKSCOPE_CHECK_AS(UsageError, theirs && *theirs == mine,
                     "--resume {}: {} differs: the checkpoint was written with '{}', this run has "
                     "'{}'", path, name, theirs ? *theirs : "(none)", mine);
  }
  const std::string* next = value("checkpoint.next_sequence");
  QKSCOPE_CHECK(next, "--resume {}: checkpoint.next_sequence is missing", path);
  ResumePoint point;
  point.next_sequence = std::stoll(*next);
  point.ranges = read_sequence_ranges(f.metadata, f.kept, path);
  if (!point.ranges.empty()) {
    // Written by Checkpointer: one range, the sequences offered before next_sequence.
    const int64_t first = point.ranges.front().begin;
    QKSCOPE_CHECK_AS(FormatError,
                     point.ranges.size() == 1 && point.ranges.front().end == first + point.next_sequence,
                     "--resume {}: its sequences.* keys ({} ranges, the first {}:{}) are not the "
                     "{} sequences before checkpoint.next_sequence", path, point.ranges.size(),
                     first, point.ranges.front().end, point.next_sequence);
  }
  for (const SiteData& site : f.kept.sites)
    store.declare_site(site.layer, SiteMeta{site.module, site.prescale, site.head_index});
  store.merge(f.kept, f.counts);
  return point;
}

void test_crash_point(const char* point, int64_t n_here) {
  static const char* spec = std::getenv("QKSCOPE_TEST_CRASH");
  if (!spec) return;
  const std::string_view s(spec);
  const size_t colon = s.find(':');
  if (s.substr(0, colon) != point) return;
  const int64_t n = colon == std::string_view::npos ? 0 : std::atoll(spec + colon + 1);
  if (n_here >= n) std::raise(SIGKILL);
}

}  // namespace qkscope::cli
