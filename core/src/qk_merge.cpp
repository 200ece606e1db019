#include "qkscope/qk_merge.h"

#include <algorithm>
#include <charconv>
#include <map>

#include "qkscope/checkpoint.h"
#include "qkscope/error.h"
#include "qkscope/qk_store.h"

namespace qkscope {
namespace {

std::string layer_list(const QkData& d) {
  std::vector<int> layers;
  for (const SiteData& s : d.sites) layers.push_back(s.layer);
  return fmt::format("{}", fmt::join(layers, ","));
}

// Throws naming the first difference between the sites of `a` and `b`.
void check_same_sites(const std::string& pa, const QkData& a, const std::string& pb,
                      const QkData& b) {
  QKSCOPE_CHECK(layer_list(a) == layer_list(b), "cannot merge {} and {}: layers {} vs {}", pa, pb,
                layer_list(a), layer_list(b));
  for (size_t i = 0; i < a.sites.size(); ++i) {
    const SiteData &x = a.sites[i], &y = b.sites[i];
    QKSCOPE_CHECK(x.module == y.module, "cannot merge {} and {}: layer {} is module '{}' vs '{}' "
                  "(different models?)", pa, pb, x.layer, x.module, y.module);
    QKSCOPE_CHECK(x.prescale == y.prescale, "cannot merge {} and {}: layer {} prescale {} vs {}",
                  pa, pb, x.layer, x.prescale, y.prescale);
    QKSCOPE_CHECK(x.head_index == y.head_index, "cannot merge {} and {}: layer {} heads {} vs {}",
                  pa, pb, x.layer, fmt::join(x.head_index, ","), fmt::join(y.head_index, ","));
    QKSCOPE_CHECK(a.n_tokens() == 0 || b.n_tokens() == 0 || x.head_dim == y.head_dim,
                  "cannot merge {} and {}: layer {} head_dim {} vs {}", pa, pb, x.layer,
                  x.head_dim, y.head_dim);
  }
  QKSCOPE_CHECK(a.n_tokens() == 0 || b.n_tokens() == 0 || a.has_token_ids() == b.has_token_ids(),
                "cannot merge {} and {}: token ids in {} only", pa, pb,
                a.has_token_ids() ? pa : pb);
}

std::optional<int64_t> parse_int(std::string_view text) {
  int64_t value = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size()) return std::nullopt;
  return value;
}

// The distinct sequences of `kept`, in order (tokens are sorted by sequence).
std::vector<int64_t> kept_sequences(const QkData& kept) {
  std::vector<int64_t> out;
  for (int64_t s : kept.sequence)
    if (out.empty() || out.back() != s) out.push_back(s);
  return out;
}

std::string range_text(const SequenceRange& r) {
  return fmt::format("{}..{} of {}", r.begin, r.end - 1, r.source.empty() ? "?" : r.source);
}

}  // namespace

std::vector<std::pair<std::string, std::string>> sequence_metadata(
    const std::vector<SequenceRange>& ranges, const QkData& kept) {
  std::vector<std::pair<std::string, std::string>> out;
  if (ranges.empty()) return out;
  out.emplace_back("sequences.count", std::to_string(ranges.size()));
  std::vector<std::vector<int64_t>> lines(ranges.size());
  for (int64_t s : kept_sequences(kept)) {
    const auto r = std::find_if(ranges.begin(), ranges.end(),
                                [&](const SequenceRange& x) { return s >= x.begin && s < x.end; });
    QKSCOPE_CHECK(r != ranges.end(), "sequence_metadata: kept sequence {} is in no range", s);
    if (r->lines.empty()) continue;
    const auto l = std::lower_bound(r->lines.begin(), r->lines.end(), std::make_pair(s, int64_t{0}));
    QKSCOPE_CHECK(l != r->lines.end() && l->first == s,
                  "sequence_metadata: no line for sequence {} of {}", s, range_text(*r));
    lines[static_cast<size_t>(r - ranges.begin())].push_back(l->second);
  }
  for (size_t i = 0; i < ranges.size(); ++i) {
    out.emplace_back(fmt::format("sequences.{}.range", i),
                     fmt::format("{}:{}", ranges[i].begin, ranges[i].end));
    out.emplace_back(fmt::format("sequences.{}.source", i), ranges[i].source);
    if (!ranges[i].lines.empty())
      out.emplace_back(fmt::format("sequences.{}.lines", i), fmt::format("{}", fmt::join(lines[i], ",")));
  }
  return out;
}

std::vector<SequenceRange> read_sequence_ranges(const std::map<std::string, std::string>& metadata,
                                                const QkData& kept, const std::string& file) {
  const auto value = [&](const std::string& key) -> const std::string* {
    const auto it = metadata.find(key);
    return it == metadata.end() ? nullptr : &it->second;
  };
  const auto bad = [&](const std::string& key, const std::string& what) {
    const std::string* v = value(key);
    return FormatError(fmt::format("{}: bad sequences metadata: {} is '{}', expected {}", file, key,
                                   v ? *v : "(absent)", what));
  };
  std::vector<SequenceRange> ranges;
  const std::string* count_text = value("sequences.count");
  if (!count_text) return ranges;
  const auto count = parse_int(*count_text);
  if (!count || *count < 1 || *count > 1000000) throw bad("sequences.count", "a count from 1");
  const std::vector<int64_t> sequences = kept_sequences(kept);
  for (int64_t i = 0; i < *count; ++i) {
    SequenceRange r;
    const std::string range_key = fmt::format("sequences.{}.range", i);
    const std::string* range = value(range_key);
    const size_t colon = range ? range->find(':') : std::string::npos;
    const auto b = colon == std::string::npos ? std::nullopt : parse_int(std::string_view(*range).substr(0, colon));
    const auto e = colon == std::string::npos ? std::nullopt : parse_int(std::string_view(*range).substr(colon + 1));
    if (!b || !e || *b < 0 || *e < *b || (!ranges.empty() && *b < ranges.back().end))
      throw bad(range_key, "B:E with 0 <= B <= E, after the previous range");
    r.begin = *b;
    r.end = *e;
    const std::string* source = value(fmt::format("sequences.{}.source", i));
    if (source) r.source = *source;
    const std::string lines_key = fmt::format("sequences.{}.lines", i);
    if (const std::string* lines = value(lines_key)) {
      auto s = std::lower_bound(sequences.begin(), sequences.end(), r.begin);
      std::string_view rest(*lines);
      while (!rest.empty()) {
        const size_t comma = rest.find(',');
        const auto line = parse_int(rest.substr(0, comma));
        if (!line || *line < 1 || s == sequences.end() || *s >= r.end)
          throw bad(lines_key, "a line from 1 for each kept sequence of the range");
        r.lines.emplace_back(*s++, *line);
        rest = comma == std::string_view::npos ? std::string_view() : rest.substr(comma + 1);
      }
      if (s != sequences.end() && *s < r.end)
        throw bad(lines_key, "a line from 1 for each kept sequence of the range");
    }
    ranges.push_back(std::move(r));
  }
  for (int64_t s : sequences)
    if (std::none_of(ranges.begin(), ranges.end(), [&](const SequenceRange& r) { return s >= r.begin && s < r.end; }))
      throw FormatError(fmt::format("{}: bad sequences metadata: kept sequence {} is in no "
                                    "sequences.N.range", file, s));
  return ranges;
}

QkData merge_qk_files(const std::vector<std::string>& paths, std::optional<int64_t> max_tokens,
                      std::optional<uint64_t> seed, std::vector<SequenceRange>* ranges) {
  QKSCOPE_CHECK(!paths.empty(), "merge_qk_files: no file");
  std::vector<StoreFile> files;
  std::vector<std::vector<SequenceRange>> file_ranges;
  for (const std::string& p : paths) {
    files.push_back(read_store_file(p));
    file_ranges.push_back(read_sequence_ranges(files.back().metadata, files.back().kept, p));
  }
  // Overlapping ranges: the same indices for different sequences (or the same ones twice).
  for (size_t i = 0; i < files.size(); ++i)
    for (size_t j = 0; j < i; ++j)
      for (const SequenceRange& a : file_ranges[j])
        for (const SequenceRange& b : file_ranges[i])
          QKSCOPE_CHECK(a.end <= b.begin || b.end <= a.begin,
                        "cannot merge {} and {}: both drew sequences {}..{} ({}: sequences {}; "
                        "{}: sequences {}); runs over different inputs need distinct sequence "
                        "indices (capture --first-sequence N)", paths[j], paths[i],
                        std::max(a.begin, b.begin), std::min(a.end, b.end) - 1, paths[j],
                        range_text(a), paths[i], range_text(b));
  if (ranges) {
    // A file without ranges (another tool's, a server's) leaves the merged file without them.
    ranges->clear();
    if (std::any_of(file_ranges.begin(), file_ranges.end(), [](const auto& l) { return l.empty(); }))
      file_ranges.clear();
    for (auto& list : file_ranges)
      for (SequenceRange& r : list) ranges->push_back(std::move(r));
    std::sort(ranges->begin(), ranges->end(),
              [](const SequenceRange& a, const SequenceRange& b) { return a.begin < b.begin; });
  }

  std::optional<size_t> seeded;  // the first file that records a seed
  std::map<int64_t, size_t> owner;  // sequence -> file
  for (size_t i = 0; i < files.size(); ++i) {
    const QkData& d = files[i].kept;
    check_same_sites(paths[0], files[0].kept, paths[i], d);
    if (d.sample) {
      if (!seeded) seeded = i;
      const uint64_t s0 = files[*seeded].kept.sample->seed;
      QKSCOPE_CHECK(d.sample->seed == s0, "cannot merge {} and {}: sampled with seed {} vs {}",
                    paths[*seeded], paths[i], s0, d.sample->seed);
    }
    for (int64_t t = 0; t < d.n_tokens(); ++t) {
      auto [it, fresh] = owner.emplace(d.sequence[t], i);
      QKSCOPE_CHECK(fresh || it->second == i,
                    "cannot merge {} and {}: both hold sequence {}; runs over different inputs "
                    "need distinct sequence indices (capture --first-sequence N)",
                    paths[it->second], paths[i], d.sequence[t]);
    }
  }
  const uint64_t file_seed = seeded ? files[*seeded].kept.sample->seed : 0;
  const uint64_t chosen = seed.value_or(file_seed);
  for (size_t i = 0; i < files.size(); ++i) {
    const auto& sample = files[i].kept.sample;
    QKSCOPE_CHECK(!sample || sample->cutoff >= 2 || sample->seed == chosen,
                  "cannot merge {} with --seed {}: its sequences were sampled with seed {}",
                  paths[i], chosen, sample ? sample->seed : 0);
  }

  QkStore store(StoreOptions{max_tokens, chosen});
  for (const SiteData& s : files[0].kept.sites)
    store.declare_site(s.layer, SiteMeta{s.module, s.prescale, s.head_index});
  for (StoreFile& f : files) {
    store.merge(f.kept, f.counts);
    f.kept = QkData();  // free as we go
  }
  return store.take();
}

}  // namespace qkscope
