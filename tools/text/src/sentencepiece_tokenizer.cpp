// load_sentencepiece(): a SentencePiece .model, encoded by libsentencepiece itself (its
// normalizer and unigram/BPE search are data in the model file, not worth re-implementing).
//
// libsentencepiece is reached only through the libqkscope_spm module, dlopen'ed here with
// RTLD_LOCAL | RTLD_DEEPBIND (spm_module.h says why: its bundled protobuf must never share a
// symbol scope with LibTorch's libprotobuf).
#include <dlfcn.h>
#include <link.h>

#include <cstdlib>
#include <mutex>
#include <optional>
#include <system_error>
#include <utility>

#include <fmt/format.h>

#include "qkscope/error.h"
#include "qkscope/text/tokenizer.h"
#include "spm_module.h"

// Set by tools/text/CMakeLists.txt.
#ifndef QKSCOPE_SPM_MODULE_NAME
#error "QKSCOPE_SPM_MODULE_NAME must be defined (file name of the qkscope_spm module)"
#endif

namespace qkscope::text {

// ---------------------------------------------------------------------------------------------
// Finding and loading libqkscope_spm.
namespace detail {
namespace {

namespace fs = std::filesystem;

// RTLD_DEEPBIND is what keeps libsentencepiece bound to its own protobuf when LibTorch's
// libprotobuf is already in the global scope. The sanitizer runtimes refuse it (they abort on
// such a dlopen), so sanitizer builds load with RTLD_LOCAL only: there, a process that also
// holds libprotobuf cannot use SentencePiece models (the torch regression test skips).
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define QKSCOPE_SPM_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define QKSCOPE_SPM_SANITIZED 1
#endif
#endif
#ifdef QKSCOPE_SPM_SANITIZED
constexpr int kDlopenFlags = RTLD_NOW | RTLD_LOCAL;
#else
constexpr int kDlopenFlags = RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND;
#endif

// The file holding this code: the executable (qkscope_text linked statically) or a shared
// object that qkscope_text was linked into. Empty when it cannot be told.
fs::path own_object_file() {
  Dl_info info{};
  link_map* map = nullptr;
  if (dladdr1(reinterpret_cast<void*>(&own_object_file), &info, reinterpret_cast<void**>(&map),
              RTLD_DL_LINKMAP) == 0 ||
      map == nullptr) {
    return {};
  }
  std::error_code ec;
  if (map->l_name == nullptr || map->l_name[0] == '\0') {
    // The main program (dladdr would answer argv[0], which need not be a path to it).
    fs::path exe = fs::read_symlink("/proc/self/exe", ec);
    return ec ? fs::path() : exe;
  }
  fs::path file = fs::absolute(map->l_name, ec);
  return ec ? fs::path(map->l_name) : file;
}

std::string dl_error() {
  const char* message = dlerror();
  return message != nullptr ? message : "unknown dlopen error";
}

}  // namespace

std::vector<fs::path> spm_module_candidates() {
  const fs::path name = QKSCOPE_SPM_MODULE_NAME;
  if (const char* env = std::getenv("QKSCOPE_SPM_MODULE"); env != nullptr && *env != '\0') {
    return {fs::path(env)};
  }
  std::vector<fs::path> candidates;
  auto add = [&candidates](fs::path path) {
    path = path.lexically_normal();
    for (const auto& known : candidates) {
      if (known == path) return;
    }
    candidates.push_back(std::move(path));
  };
  if (const fs::path self = own_object_file(); !self.empty()) {
    const fs::path dir = self.parent_path();
    add(dir / name);
    add(dir / ".." / "lib" / name);
    add(dir / ".." / "lib" / "qkscope" / name);
#ifdef QKSCOPE_SPM_INSTALL_LIBDIR
    if (fs::path(QKSCOPE_SPM_INSTALL_LIBDIR).is_relative()) {
      add(dir / ".." / QKSCOPE_SPM_INSTALL_LIBDIR / name);
    }
#endif
  }
#ifdef QKSCOPE_SPM_BUILD_PATH
  add(fs::path(QKSCOPE_SPM_BUILD_PATH));
#endif
#ifdef QKSCOPE_SPM_INSTALL_FULL_LIBDIR
  add(fs::path(QKSCOPE_SPM_INSTALL_FULL_LIBDIR) / name);
#endif
  return candidates;
}

SpmModule open_spm_module(const std::vector<fs::path>& candidates) {
  // One line (capture shows an error's first line only): "tried A (why), B (why)".
  std::string tried;
  auto note = [&tried](const std::string& file, const std::string& why) {
    tried += fmt::format("{}{} ({})", tried.empty() ? "" : ", ", file, why);
  };
  for (const auto& path : candidates) {
    const std::string file = path.string();
    // A bare name (only from $QKSCOPE_SPM_MODULE) is left to the dynamic linker's search.
    std::error_code ec;
    if (path.has_parent_path() && !fs::exists(path, ec)) {
      note(file, "no such file");
      continue;
    }
    dlerror();
    void* handle = dlopen(file.c_str(), kDlopenFlags);
    if (handle == nullptr) {
      std::string why = dl_error();
      if (why.rfind(file + ": ", 0) == 0) why.erase(0, file.size() + 2);  // it names the file
      note(file, why);
      continue;
    }
    std::string problem;
    const auto version = reinterpret_cast<SpmAbiVersionFn>(dlsym(handle, kSpmAbiVersionSymbol));
    const auto load = reinterpret_cast<SpmLoadFn>(dlsym(handle, kSpmLoadSymbol));
    if (version == nullptr || load == nullptr) {
      problem = fmt::format("not a qkscope SentencePiece module (no {} / {})",
                            kSpmAbiVersionSymbol, kSpmLoadSymbol);
    } else if (const int v = version(); v != kSpmAbiVersion) {
      problem = fmt::format("module interface version {} but this program needs {}: a stale copy",
                            v, kSpmAbiVersion);
    }
    if (problem.empty()) return SpmModule{handle, path, load};
    dlclose(handle);
    note(file, problem);
  }
  if (candidates.empty()) tried = "no candidate paths";
  const char* env = std::getenv("QKSCOPE_SPM_MODULE");
  throw Error(fmt::format(
      "cannot load {}, the module through which SentencePiece models are read (it keeps "
      "libsentencepiece's bundled protobuf apart from LibTorch's): tried {}; {}",
      QKSCOPE_SPM_MODULE_NAME, tried,
      env != nullptr && *env != '\0'
          ? "QKSCOPE_SPM_MODULE is set, so only its path was tried"
          : "set QKSCOPE_SPM_MODULE to the module's path"));
}

const SpmModule& spm_module() {
  static std::mutex mutex;
  static std::optional<SpmModule> module;
  std::lock_guard<std::mutex> lock(mutex);
  if (!module) module = open_spm_module(spm_module_candidates());
  return *module;
}

}  // namespace detail

// ---------------------------------------------------------------------------------------------
namespace {

class SentencePieceTokenizer final : public Tokenizer {
 public:
  SentencePieceTokenizer(std::unique_ptr<detail::SpmModel> sp, std::vector<int64_t> prefix,
                         std::vector<int64_t> suffix, std::string name)
      : Tokenizer(std::move(prefix), std::move(suffix)),
        sp_(std::move(sp)),
        name_(std::move(name)) {}

  int64_t vocab_size() const override { return sp_->piece_size(); }

  int64_t pad_id() const override {
    for (int id : {sp_->pad_id(), sp_->eos_id()}) {
      if (id >= 0) return id;
    }
    return sp_->unk_id();
  }

  std::string name() const override { return name_; }

  std::optional<int64_t> token_to_id(std::string_view token) const override {
    const int id = sp_->piece_to_id(token);
    // piece_to_id answers unk_id for unknown pieces; only the unk piece itself maps there.
    if (id == sp_->unk_id() && sp_->id_to_piece(id) != token) return std::nullopt;
    return id;
  }

  std::optional<std::string> id_to_token(int64_t id) const override {
    if (id < 0 || id >= sp_->piece_size()) return std::nullopt;
    return sp_->id_to_piece(static_cast<int>(id));
  }

 protected:
  std::vector<int64_t> encode_valid(std::string_view text) const override {
    std::vector<int> ids;
    std::string error;
    QKSCOPE_CHECK(sp_->encode(text, ids, error), "{}: encoding failed: {}", name_, error);
    return std::vector<int64_t>(ids.begin(), ids.end());
  }

 private:
  std::unique_ptr<detail::SpmModel> sp_;
  std::string name_;
};

}  // namespace

std::unique_ptr<Tokenizer> load_sentencepiece(const std::filesystem::path& path,
                                              SentencePieceOptions options) {
  const std::string source = path.string();
  std::error_code ec;
  QKSCOPE_CHECK(std::filesystem::is_regular_file(path, ec), "cannot open {}: no such file",
                source);
  const detail::SpmModule& module = detail::spm_module();
  std::string error;
  std::unique_ptr<detail::SpmModel> sp(module.load(source.c_str(), &error));
  QKSCOPE_CHECK_AS(FormatError, sp != nullptr, "{}: not a SentencePiece model: {}", source,
                   error);

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
