// Fuzz target: QkStore's input checks, fed fuzzed options, site declarations and batches.
//
// Input: a little program read byte by byte (see below): store options, 0-3 site declarations,
// then up to 64 operations (add a batch, declare a site late, take). Batch shapes and indices
// are fuzzed, including negative and zero sizes, undeclared layers, null pointers, repeated
// sequences and mismatched tokens; the buffers behind the pointers always hold the
// n_tokens * n_heads * head_dim values a batch claims (the one thing add() cannot check).
// The store may refuse anything with a qkscope::Error; it must never crash, and it must keep:
//   - tokens_kept() <= max_tokens (when a budget is set) and <= tokens_seen();
//   - take() returns tokens_kept() tokens, and a result that passes validate() whenever the
//     batches it came from had valid positions and the fault is not the caller's (see
//     caller_fault()).
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <optional>
#include <vector>

#include "fuzz_util.h"
#include "qkscope/error.h"
#include "qkscope/qk_data.h"
#include "qkscope/qk_store.h"

namespace {

using qkscope::fuzz::Bytes;

// Layers are drawn from a small range so that batches often hit declared sites.
int draw_layer(Bytes& in) { return static_cast<int>(in.range(-2, 6)); }

qkscope::SiteMeta draw_meta(Bytes& in) {
  qkscope::SiteMeta meta;
  meta.module = in.text(6);
  switch (in.u8() % 4) {
    case 0: meta.prescale = 1.0; break;
    case 1: meta.prescale = 0.125; break;
    case 2: meta.prescale = std::numeric_limits<double>::quiet_NaN(); break;
    default: meta.prescale = in.raw<double>();
  }
  const std::size_t n_heads = in.u8() % 5;
  for (std::size_t h = 0; h < n_heads; ++h) {
    // Mostly 0..H-1, sometimes anything (duplicates, negative).
    meta.head_index.push_back(in.u8() % 4 == 0 ? static_cast<int>(in.range(-2, 8))
                                               : static_cast<int>(h));
  }
  return meta;
}

struct Batch {
  std::vector<float> q, k;
  std::vector<int64_t> sequence, position, token_id;
  qkscope::QkBatch view;
  bool valid_positions = true;  // non-negative, sorted within each sequence
};

Batch draw_batch(Bytes& in, const std::vector<int>& declared, bool with_ids) {
  Batch b;
  qkscope::QkBatch& v = b.view;
  v.layer = !declared.empty() && in.u8() % 4 != 0 ? declared[in.u8() % declared.size()]
                                                   : draw_layer(in);
  v.n_tokens = in.range(-1, 24);
  v.n_heads = static_cast<int>(in.range(-1, 4));
  v.head_dim = static_cast<int>(in.range(-1, 5));
  const std::size_t n = static_cast<std::size_t>(std::max<int64_t>(v.n_tokens, 0));
  const std::size_t values =
      n * static_cast<std::size_t>(std::max(v.n_heads, 0)) * std::max(v.head_dim, 0);
  const float base = static_cast<float>(in.u8());
  for (std::size_t i = 0; i < values; ++i) {
    b.q.push_back(base + 0.5f * static_cast<float>(i));
    b.k.push_back(base - 0.25f * static_cast<float>(i));
  }
  if (in.u8() % 8 == 0 && values > 0) b.q[0] = std::numeric_limits<float>::quiet_NaN();

  // Whole sequences numbered from `first` (the valid shape), or free indices.
  const bool structured = in.u8() % 4 != 0;
  const int64_t first = in.range(-1, 8);
  const int64_t length = in.range(1, 6);
  for (std::size_t t = 0; t < n; ++t) {
    if (structured) {
      b.sequence.push_back(first + static_cast<int64_t>(t) / length);
      b.position.push_back(static_cast<int64_t>(t) % length);
    } else {
      b.sequence.push_back(in.range(-1, 8));
      b.position.push_back(in.range(-1, 8));
    }
    b.token_id.push_back(b.sequence.back() * 31 + b.position.back());
  }
  b.valid_positions = structured && first >= 0;

  v.q = b.q.data();
  v.k = b.k.data();
  v.sequence = b.sequence.data();
  v.position = b.position.data();
  v.token_id = with_ids ? b.token_id.data() : nullptr;
  switch (in.u8() % 16) {  // sometimes a missing array
    case 0: v.q = nullptr; break;
    case 1: v.sequence = nullptr; break;
    case 2: v.position = nullptr; break;
    default: break;
  }
  return b;
}

// What validate() refuses in a take() result that is the caller's doing, not the store's: site
// metadata the store passes through unchecked, and a site no batch with tokens ever reached
// (its head_dim is unknown).
bool caller_fault(const qkscope::QkData& taken) {
  for (const auto& site : taken.sites) {
    std::vector<int> heads = site.head_index;
    std::sort(heads.begin(), heads.end());
    if (std::adjacent_find(heads.begin(), heads.end()) != heads.end() ||
        (!heads.empty() && heads[0] < 0) || !std::isfinite(site.prescale) ||
        site.prescale <= 0 || site.layer < 0 || site.head_dim < 1)
      return true;
  }
  return false;
}

void check_counts(const qkscope::QkStore& store, const std::optional<int64_t>& budget) {
  FUZZ_EXPECT(store.tokens_kept() >= 0);
  FUZZ_EXPECT(store.tokens_kept() <= store.tokens_seen());
  if (budget) FUZZ_EXPECT(store.tokens_kept() <= *budget);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, std::size_t size) {
  Bytes in(data, size);
  qkscope::StoreOptions options;
  if (in.flag()) options.max_tokens = in.range(-1, 64);
  options.seed = in.raw<uint64_t>();
  std::optional<qkscope::QkStore> store;
  try {
    store.emplace(options);
  } catch (const qkscope::Error&) {
    return 0;
  }

  std::vector<int> declared;
  const auto declare = [&](int layer, const qkscope::SiteMeta& meta) {
    try {
      store->declare_site(layer, meta);
      if (std::find(declared.begin(), declared.end(), layer) == declared.end())
        declared.push_back(layer);
    } catch (const qkscope::Error&) {
    }
  };
  const int n_sites = in.u8() % 4;
  for (int i = 0; i < n_sites; ++i) {
    const int layer = draw_layer(in);
    declare(layer, draw_meta(in));
  }

  const bool with_ids = in.flag();
  bool all_valid = true;  // every batch offered had valid positions
  for (int op = 0; op < 64 && !in.empty(); ++op) {
    switch (in.u8() % 8) {
      case 0: {  // a late declaration: refused once a batch has arrived
        const int layer = draw_layer(in);
        declare(layer, draw_meta(in));
        break;
      }
      case 1: {
        const int64_t kept = store->tokens_kept();
        qkscope::QkData taken;
        try {
          taken = store->take();
        } catch (const qkscope::Error&) {
          return 0;  // a kept sequence missed a site; the store is spent
        }
        FUZZ_EXPECT(taken.n_tokens() == kept);
        FUZZ_EXPECT(taken.sites.size() == declared.size());
        if (all_valid && !caller_fault(taken)) {
          try {
            qkscope::validate(taken, "take()");
          } catch (const qkscope::Error& e) {
            std::fprintf(stderr, "%s\n", e.what());
            FUZZ_EXPECT(!"take() returned data that validate() refuses");
          }
        }
        break;
      }
      default: {
        Batch batch = draw_batch(in, declared, in.u8() % 8 == 0 ? !with_ids : with_ids);
        try {
          store->add(batch.view);
          all_valid = all_valid && batch.valid_positions;
        } catch (const qkscope::Error&) {
          // Refused, possibly after keeping part of the batch: whatever it kept must have
          // passed the same checks.
          all_valid = all_valid && batch.valid_positions;
        }
        check_counts(*store, options.max_tokens);
      }
    }
  }
  return 0;
}
