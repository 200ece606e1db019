// The HF encoding pipeline: added tokens, normalizer, pre-tokenizer, model, special tokens.
// Both load_tokenizer_json() and load_bert_vocab() assemble one of these.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "added_vocabulary.h"
#include "model.h"
#include "normalizers.h"
#include "pre_tokenizers.h"
#include "qkscope/text/tokenizer.h"

namespace qkscope::text::detail {

struct PipelineParts {
  std::string name;                               // Tokenizer::name()
  std::unique_ptr<Normalizer> normalizer;         // may be null
  std::unique_ptr<PreTokenizer> pre_tokenizer;    // may be null: each stretch is one word
  std::unique_ptr<Model> model;
  std::vector<AddedToken> added_tokens;
  std::vector<int64_t> prefix;                    // special ids before the content
  std::vector<int64_t> suffix;                    // special ids after the content
  std::optional<int64_t> pad_id;                  // else resolved from common pad tokens
};

std::unique_ptr<Tokenizer> make_pipeline_tokenizer(PipelineParts parts);

}  // namespace qkscope::text::detail
