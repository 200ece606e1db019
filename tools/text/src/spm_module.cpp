// libqkscope_spm: the only code that calls libsentencepiece (see spm_module.h for why it is a
// separately dlopen'ed module). Built with hidden visibility: it exports the two extern "C"
// entry points and nothing else. Self-contained on purpose (no fmt, no qkscope headers), so
// that under RTLD_DEEPBIND it never binds to a second copy of anything of ours.
#include <sentencepiece_processor.h>

#include <exception>
#include <memory>
#include <new>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "spm_module.h"

namespace qkscope::text::detail {
namespace {

class SpmModelImpl final : public SpmModel {
 public:
  explicit SpmModelImpl(std::unique_ptr<sentencepiece::SentencePieceProcessor> sp)
      : sp_(std::move(sp)) {}

  bool encode(std::string_view text, std::vector<int>& ids, std::string& error) const override {
    try {
      const auto status = sp_->Encode(text, &ids);
      if (status.ok()) return true;
      error = status.ToString();
    } catch (const std::exception& e) {
      error = e.what();
    }
    return false;
  }
  int piece_size() const override { return sp_->GetPieceSize(); }
  int piece_to_id(std::string_view piece) const override { return sp_->PieceToId(piece); }
  std::string id_to_piece(int id) const override { return sp_->IdToPiece(id); }
  int bos_id() const override { return sp_->bos_id(); }
  int eos_id() const override { return sp_->eos_id(); }
  int pad_id() const override { return sp_->pad_id(); }
  int unk_id() const override { return sp_->unk_id(); }

 private:
  std::unique_ptr<sentencepiece::SentencePieceProcessor> sp_;
};

}  // namespace
}  // namespace qkscope::text::detail

extern "C" {

__attribute__((visibility("default"))) int qkscope_spm_abi_version() {
  return qkscope::text::detail::kSpmAbiVersion;
}

__attribute__((visibility("default"))) qkscope::text::detail::SpmModel* qkscope_spm_load(
    const char* path, std::string* error) {
  try {
    auto sp = std::make_unique<sentencepiece::SentencePieceProcessor>();
    const auto status = sp->Load(std::string_view(path));
    if (!status.ok()) {
      *error = status.ToString();
      return nullptr;
    }
    return new qkscope::text::detail::SpmModelImpl(std::move(sp));
  } catch (const std::exception& e) {
    *error = e.what();
  } catch (...) {
    *error = "unknown exception in libsentencepiece";
  }
  return nullptr;
}

}  // extern "C"

// The entry points' types must match what the loader casts them to.
static_assert(std::is_same_v<decltype(&qkscope_spm_abi_version),
                             qkscope::text::detail::SpmAbiVersionFn>);
static_assert(std::is_same_v<decltype(&qkscope_spm_load), qkscope::text::detail::SpmLoadFn>);
