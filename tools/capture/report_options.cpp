#include "report_options.h"

#include <memory>

#ifdef QKSCOPE_HAVE_PLUGIN
#include "qkscope/text/tokenizer.h"
#endif

namespace qkscope::cli {

ReportOptions report_options(const CaptureOptions& o) {
  ReportOptions r;
  r.k = o.report_k;
  r.seed = o.seed;
  r.max_tokens = o.report_tokens;
#ifdef QKSCOPE_HAVE_PLUGIN
  std::shared_ptr<text::Tokenizer> tokenizer;
  if (!o.tokenizer.empty()) tokenizer = text::load_tokenizer_json(o.tokenizer);
  else if (!o.vocab.empty()) tokenizer = text::load_bert_vocab(o.vocab, /*lowercase=*/!o.cased);
  else if (!o.spm.empty()) tokenizer = text::load_sentencepiece(o.spm);
  if (tokenizer)
    r.token_text = [tokenizer](int64_t id) { return tokenizer->id_to_token(id).value_or(""); };
#endif
  return r;
}

}  // namespace qkscope::cli
