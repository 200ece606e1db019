// load_sentencepiece(): a SentencePiece .model, encoded by libsentencepiece itself (its
// normalizer and unigram/BPE search are data in the model file, not worth re-implementing).
#include <sentencepiece_processor.h>

#include <utility>

#include <fmt/format.h>

#include "qkscope/error.h"
#include "qkscope/text/tokenizer.h"

namespace qkscope::text {
namespace {

class SentencePieceTokenizer final : public Tokenizer {
 public:
  SentencePieceTokenizer(std::unique_ptr<sentencepiece::SentencePieceProcessor> sp,
                         std::vector<int64_t> prefix, std::vector<int64_t> suffix,
                         std::string name)
      : Tokenizer(std::move(prefix), std::move(suffix)),
        sp_(std::move(sp)),
        name_(std::move(name)) {}

  int64_t vocab_size() const override { return sp_->GetPieceSize(); }

  int64_t pad_id() const override {
    for (int id : {sp_->pad_id(), sp_->eos_id()}) {
      if (id >= 0) return id;
    }
    return sp_->unk_id();
  }

  std::string name() const override { return name_; }

  std::optional<int64_t> token_to_id(std::string_view token) const override {
    const int id = sp_->PieceToId(token);
    // PieceToId answers unk_id for unknown pieces; only the unk piece itself maps there.
    if (id == sp_->unk_id() && sp_->IdToPiece(id) != token) return std::nullopt;
    return id;
  }

  std::optional<std::string> id_to_token(int64_t id) const override {
    if (id < 0 || id >= sp_->GetPieceSize()) return std::nullopt;
    return sp_->IdToPiece(static_cast<int>(id));
  }

 protected:
  std::vector<int64_t> encode_valid(std::string_view text) const override {
    std::vector<int> ids;
    const auto status = sp_->Encode(text, &ids);
    QKSCOPE_CHECK(status.ok(), "{}: encoding failed: {}", name_, status.ToString());
    return std::vector<int64_t>(ids.begin(), ids.end());
  }

 private:
  std::unique_ptr<sentencepiece::SentencePieceProcessor> sp_;
  std::string name_;
};

}  // namespace

std::unique_ptr<Tokenizer> load_sentencepiece(const std::filesystem::path& path,
                                              SentencePieceOptions options) {
  const std::string source = path.string();
  std::error_code ec;
  QKSCOPE_CHECK(std::filesystem::is_regular_file(path, ec), "cannot open {}: no such file",
                source);
  auto sp = std::make_unique<sentencepiece::SentencePieceProcessor>();
  const auto status = sp->Load(source);
  QKSCOPE_CHECK_AS(FormatError, status.ok(), "{}: not a SentencePiece model: {}", source,
                   status.ToString());

  std::vector<int64_t> prefix, suffix;
  if (options.add_bos) {
    QKSCOPE_CHECK_AS(UsageError, sp->bos_id() >= 0,
                     "{}: the model has no bos piece, so add_bos cannot be used", source);
    prefix.push_back(sp->bos_id());
  }
  if (options.add_eos) {
    QKSCOPE_CHECK_AS(UsageError, sp->eos_id() >= 0,
                     "{}: the model has no eos piece, so add_eos cannot be used", source);
    suffix.push_back(sp->eos_id());
  }
  std::string name = fmt::format("SentencePiece ({}, bos {}, eos {})", source,
                                 options.add_bos ? "on" : "off", options.add_eos ? "on" : "off");
  return std::make_unique<SentencePieceTokenizer>(std::move(sp), std::move(prefix),
                                                  std::move(suffix), std::move(name));
}

}  // namespace qkscope::text
