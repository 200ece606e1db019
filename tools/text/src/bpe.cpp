#include "bpe.h"

#include <queue>

#include <fmt/format.h>

#include "qkscope/error.h"
#include "utf8.h"

namespace qkscope::text::detail {
namespace {

struct MergeInfo {
  uint32_t rank;
  int64_t new_id;
};

inline uint64_t pair_key(int64_t left, int64_t right) {
  return (static_cast<uint64_t>(left) << 32) | static_cast<uint32_t>(right);
}

// One symbol of the word being merged: a doubly linked list over a vector, so merging is
// O(1) and positions stay stable (they order ties, as in HF's Word::merge_all).
struct Symbol {
  int64_t id;
  int prev;
  int next;
  std::size_t len;  // bytes covered; 0 marks a symbol merged into its left neighbour
};

struct Candidate {
  uint32_t rank;
  int pos;
  int64_t new_id;
  // priority_queue is a max-heap: invert so the lowest rank, then the leftmost, comes first.
  bool operator<(const Candidate& o) const {
    return rank != o.rank ? rank > o.rank : pos > o.pos;
  }
};

class Bpe final : public Model {
 public:
  Bpe(Vocab vocab, std::unordered_map<uint64_t, MergeInfo> merges, BpeOptions options,
      std::string source)
      : vocab_(std::move(vocab)),
        merges_(std::move(merges)),
        options_(std::move(options)),
        source_(std::move(source)) {
    if (options_.unk_token) {
      if (auto it = vocab_.find(*options_.unk_token); it != vocab_.end()) unk_id_ = it->second;
    }
  }

  void tokenize(std::string_view word, std::vector<int64_t>& out) const override {
    if (options_.ignore_merges) {
      if (auto it = vocab_.find(std::string(word)); it != vocab_.end()) {
        out.push_back(it->second);
        return;
      }
    }
    std::vector<Symbol> symbols = initial_symbols(word);
    merge_all(symbols);
    for (const Symbol& s : symbols)
      if (s.len > 0) out.push_back(s.id);
  }

  const Vocab& vocab() const override { return vocab_; }

 private:
  void add(std::vector<Symbol>& symbols, int64_t id, std::size_t len) const {
    const int n = static_cast<int>(symbols.size());
    if (n > 0) symbols.back().next = n;
    symbols.push_back({id, n - 1, -1, len});
  }

  // HF's BPE::merge_word up to merge_all: one symbol per character, unknown characters
  // handled by byte_fallback, then unk_token (fused or not), else dropped.
  std::vector<Symbol> initial_symbols(std::string_view word) const {
    std::vector<Symbol> symbols;
    symbols.reserve(word.size());
    std::size_t unk_len = 0;  // bytes of the unk symbol not yet added (0: none pending)
    std::string key;
    std::size_t pos = 0;
    while (pos < word.size()) {
      const std::size_t start = pos;
      next_code_point(word, pos);
      const std::string_view ch = word.substr(start, pos - start);
      key.clear();
      if (start > 0 && options_.continuing_subword_prefix) {
        key = *options_.continuing_subword_prefix;
      }
      key.append(ch);
      if (pos == word.size() && options_.end_of_word_suffix) key += *options_.end_of_word_suffix;

      if (auto it = vocab_.find(key); it != vocab_.end()) {
        if (unk_len > 0) add(symbols, *unk_id_, unk_len);
        unk_len = 0;
        add(symbols, it->second, ch.size());
        continue;
      }
      if (options_.byte_fallback && add_byte_fallback(symbols, key)) continue;
      if (!options_.unk_token) continue;  // no unk token: HF silently drops the character
      // Like HF, a unk_token missing from the vocabulary only matters once it is needed.
      QKSCOPE_CHECK_AS(FormatError, unk_id_.has_value(),
                       "{}: BPE unk_token '{}' is not in the vocabulary, and '{}' needs it",
                       source_, *options_.unk_token, ch);
      if (unk_len > 0 && !options_.fuse_unk) {
        add(symbols, *unk_id_, unk_len);
        unk_len = 0;
      }
      unk_len += ch.size();
    }
    if (unk_len > 0) add(symbols, *unk_id_, unk_len);
    return symbols;
  }

  // Every byte of `key` as a "<0xAB>" token, only if all of them exist (HF's rule).
  bool add_byte_fallback(std::vector<Symbol>& symbols, const std::string& key) const {
    std::vector<int64_t> ids;
    for (char c : key) {
      auto it = vocab_.find(fmt::format("<0x{:02X}>", static_cast<unsigned char>(c)));
      if (it == vocab_.end()) return false;
      ids.push_back(it->second);
    }
    for (int64_t id : ids) add(symbols, id, 1);
    return true;
  }

  const MergeInfo* find_merge(int64_t left, int64_t right) const {
    auto it = merges_.find(pair_key(left, right));
    return it == merges_.end() ? nullptr : &it->second;
  }

  // HF's Word::merge_all without dropout. Stale heap entries (their left symbol was merged
  // away, or its right neighbour changed) are recognised and skipped when popped.
  void merge_all(std::vector<Symbol>& symbols) const {
    std::priority_queue<Candidate> queue;
    for (int i = 0; i + 1 < static_cast<int>(symbols.size()); ++i) {
      if (const MergeInfo* m = find_merge(symbols[i].id, symbols[i + 1].id))
        queue.push({m->rank, i, m->new_id});
    }
    while (!queue.empty()) {
      const Candidate top = queue.top();
      queue.pop();
      Symbol& left = symbols[top.pos];
      if (left.len == 0 || left.next == -1) continue;
      const int right_pos = left.next;
      const Symbol right = symbols[right_pos];
      const MergeInfo* m = find_merge(left.id, right.id);
      if (m == nullptr || m->new_id != top.new_id) continue;

      left.id = top.new_id;
      left.len += right.len;
      left.next = right.next;
      symbols[right_pos].len = 0;
      if (right.next != -1) symbols[right.next].prev = top.pos;

      if (left.prev != -1) {
        if (const MergeInfo* p = find_merge(symbols[left.prev].id, left.id))
          queue.push({p->rank, left.prev, p->new_id});
      }
      if (left.next != -1) {
        if (const MergeInfo* n = find_merge(left.id, symbols[left.next].id))
          queue.push({n->rank, top.pos, n->new_id});
      }
    }
  }

  Vocab vocab_;
  std::unordered_map<uint64_t, MergeInfo> merges_;
  BpeOptions options_;
  std::string source_;
  std::optional<int64_t> unk_id_;
};

}  // namespace

std::unique_ptr<Model> make_bpe(Vocab vocab,
                                const std::vector<std::pair<std::string, std::string>>& merges,
                                BpeOptions options, const std::string& source) {
  auto lookup = [&](const std::string& token, std::size_t rank) {
    auto it = vocab.find(token);
    QKSCOPE_CHECK_AS(FormatError, it != vocab.end(),
                     "{}: BPE merge {} uses '{}', which is not in the vocabulary", source, rank,
                     token);
    return it->second;
  };
  for (const auto& [token, id] : vocab) {
    QKSCOPE_CHECK_AS(FormatError, id >= 0 && id <= UINT32_MAX,
                     "{}: BPE token '{}' has id {}, outside [0, 2^32)", source, token, id);
  }
  const std::size_t prefix_len =
      options.continuing_subword_prefix ? options.continuing_subword_prefix->size() : 0;
  std::unordered_map<uint64_t, MergeInfo> table;
  table.reserve(merges.size());
  for (std::size_t rank = 0; rank < merges.size(); ++rank) {
    const auto& [left, right] = merges[rank];
    // The merged token drops the right part's continuation prefix ("a" + "##b" -> "ab").
    QKSCOPE_CHECK_AS(FormatError, right.size() >= prefix_len,
                     "{}: BPE merge {} has right part '{}' shorter than its prefix", source, rank,
                     right);
    const int64_t left_id = lookup(left, rank);
    const int64_t right_id = lookup(right, rank);
    const int64_t new_id = lookup(left + right.substr(prefix_len), rank);
    // A repeated pair takes its last rank, as HF's HashMap collect does.
    table[pair_key(left_id, right_id)] = MergeInfo{static_cast<uint32_t>(rank), new_id};
  }
  return std::make_unique<Bpe>(std::move(vocab), std::move(table), std::move(options), source);
}

}  // namespace qkscope::text::detail
