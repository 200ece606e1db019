// The boundary between qkscope_text and libqkscope_spm, the one module that links
// libsentencepiece.
//
// Why a module: libsentencepiece bundles its own copy of protobuf-lite and exports its symbols;
// LibTorch brings the system libprotobuf. Linked into one program, the two copies share the
// global symbol scope and libprotobuf's static initialisers run into libsentencepiece's copy
// (SIGSEGV before main). So qkscope_text never links libsentencepiece: load_sentencepiece()
// dlopens libqkscope_spm with RTLD_LOCAL | RTLD_DEEPBIND, which keeps libsentencepiece's
// symbols out of the global scope and makes it bind to its own protobuf first.
//
// Only this header's types cross the boundary: an abstract class (no exceptions thrown across,
// no allocation owned by one side freed by the other except through the virtual destructor)
// and two extern "C" functions. Both sides are built from the same tree, and the module
// answers kSpmAbiVersion so that a stale installed copy is refused rather than misused.
#pragma once

#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

namespace qkscope::text::detail {

// Bump whenever SpmModel or the C functions below change.
inline constexpr int kSpmAbiVersion = 1;

// One loaded SentencePiece model (sentencepiece::SentencePieceProcessor behind it). All member
// functions are const and thread-safe, as the processor's are.
class SpmModel {
 public:
  virtual ~SpmModel() = default;
  // Piece ids of `text`; on failure returns false and sets `error` (never throws).
  virtual bool encode(std::string_view text, std::vector<int>& ids,
                      std::string& error) const = 0;
  virtual int piece_size() const = 0;
  // unk_id() for pieces not in the vocabulary (as the processor answers).
  virtual int piece_to_id(std::string_view piece) const = 0;
  // The piece of an id in [0, piece_size()).
  virtual std::string id_to_piece(int id) const = 0;
  // -1 when the model has no such piece.
  virtual int bos_id() const = 0;
  virtual int eos_id() const = 0;
  virtual int pad_id() const = 0;
  virtual int unk_id() const = 0;
};

// The module's entry points (looked up with dlsym).
using SpmAbiVersionFn = int (*)();
// Loads the .model file at `path`. Returns a new model (delete it through SpmModel), or nullptr
// with the library's message in `*error`. Never throws.
using SpmLoadFn = SpmModel* (*)(const char* path, std::string* error);
inline constexpr const char* kSpmAbiVersionSymbol = "qkscope_spm_abi_version";
inline constexpr const char* kSpmLoadSymbol = "qkscope_spm_load";

// ---- loader side (sentencepiece_tokenizer.cpp); declared here for the tests ----

// Where libqkscope_spm is looked for, in order: $QKSCOPE_SPM_MODULE alone when set and not
// empty; otherwise next to the executable or shared object holding qkscope_text's code (that
// directory, ../lib, ../lib/qkscope, ../<install libdir>), then the build tree's copy, then the
// install prefix's libdir. Duplicates are dropped.
std::vector<std::filesystem::path> spm_module_candidates();

struct SpmModule {
  void* handle = nullptr;  // never dlclosed
  std::filesystem::path path;
  SpmLoadFn load = nullptr;
};

// dlopens the first candidate that loads and answers kSpmAbiVersion (not cached). Throws
// qkscope::Error naming every path tried and why each failed (dlerror() text).
SpmModule open_spm_module(const std::vector<std::filesystem::path>& candidates);

// The process-wide module: open_spm_module(spm_module_candidates()) on the first successful
// call, that module ever after. Thread-safe; a failed attempt is retried on the next call.
const SpmModule& spm_module();

}  // namespace qkscope::text::detail
