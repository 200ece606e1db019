#include "pipeline.h"

#include <algorithm>
#include <utility>

namespace qkscope::text::detail {
namespace {

class PipelineTokenizer final : public Tokenizer {
 public:
  explicit PipelineTokenizer(PipelineParts parts)
      : Tokenizer(std::move(parts.prefix), std::move(parts.suffix)),
        name_(std::move(parts.name)),
        normalizer_(std::move(parts.normalizer)),
        pre_tokenizer_(std::move(parts.pre_tokenizer)),
        model_(std::move(parts.model)),
        added_(std::move(parts.added_tokens), normalizer_.get()),
        id_to_token_(invert(model_->vocab())) {
    // Added tokens win over the model's entries for the same id, as in HF's id_to_token.
    for (const AddedToken& t : added_.tokens()) {
      id_to_token_[t.id] = t.content;
      added_by_content_.emplace(t.content, t.id);
    }
    vocab_size_ = 0;
    for (const auto& [id, token] : id_to_token_) vocab_size_ = std::max(vocab_size_, id + 1);
    pad_id_ = parts.pad_id ? *parts.pad_id : resolve_pad_id();
    // A post-processor's or the padding section's ids need not be vocabulary entries, but the
    // model sees them too: vocab_size() must cover every id encode() returns, and pad_id().
    for (const std::vector<int64_t>* ids : {&prefix_ids(), &suffix_ids()})
      for (int64_t id : *ids) vocab_size_ = std::max(vocab_size_, id + 1);
    vocab_size_ = std::max(vocab_size_, pad_id_ + 1);
  }

  int64_t vocab_size() const override { return vocab_size_; }
  int64_t pad_id() const override { return pad_id_; }
  std::string name() const override { return name_; }

  std::optional<int64_t> token_to_id(std::string_view token) const override {
    const std::string key(token);
    if (auto it = added_by_content_.find(key); it != added_by_content_.end()) return it->second;
    if (auto it = model_->vocab().find(key); it != model_->vocab().end()) return it->second;
    return std::nullopt;
  }

  std::optional<std::string> id_to_token(int64_t id) const override {
    if (auto it = id_to_token_.find(id); it != id_to_token_.end()) return it->second;
    return std::nullopt;
  }

 protected:
  // HF's encode_single_sequence: AddedVocabulary::extract_and_normalize, then pre-tokenize and
  // tokenize each stretch that is not an added token.
  std::vector<int64_t> encode_valid(std::string_view text) const override {
    std::vector<int64_t> ids;
    if (text.empty()) return ids;
    for (const Segment& raw : added_.split_raw(text)) {
      if (raw.id) {
        ids.push_back(*raw.id);
        continue;
      }
      const std::string_view stretch = text.substr(raw.begin, raw.end - raw.begin);
      const std::string normalized =
          normalizer_ ? normalizer_->normalize(stretch) : std::string(stretch);
      if (normalized.empty()) continue;
      for (const Segment& seg : added_.split_normalized(normalized)) {
        if (seg.id) {
          ids.push_back(*seg.id);
          continue;
        }
        std::vector<std::string> words{normalized.substr(seg.begin, seg.end - seg.begin)};
        if (pre_tokenizer_) pre_tokenizer_->pre_tokenize(words);
        for (const std::string& word : words) {
          if (!word.empty()) model_->tokenize(word, ids);
        }
      }
    }
    return ids;
  }

 private:
  int64_t resolve_pad_id() const {
    for (const char* candidate : {"[PAD]", "<pad>", "</s>", "<|endoftext|>"}) {
      if (auto id = token_to_id(candidate)) return *id;
    }
    return 0;
  }

  std::string name_;
  std::unique_ptr<Normalizer> normalizer_;
  std::unique_ptr<PreTokenizer> pre_tokenizer_;
  std::unique_ptr<Model> model_;
  AddedVocabulary added_;
  std::unordered_map<int64_t, std::string> id_to_token_;
  std::unordered_map<std::string, int64_t> added_by_content_;
  int64_t vocab_size_ = 0;
  int64_t pad_id_ = 0;
};

}  // namespace

std::unique_ptr<Tokenizer> make_pipeline_tokenizer(PipelineParts parts) {
  return std::make_unique<PipelineTokenizer>(std::move(parts));
}

}  // namespace qkscope::text::detail
