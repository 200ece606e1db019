// load_tokenizer_json(): HuggingFace tokenizer.json into the HF pipeline of pipeline.h.
// Every message names the file; unsupported components are named by their "type".
#include <cstdint>
#include <utility>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "bpe.h"
#include "file.h"
#include "pipeline.h"
#include "qkscope/error.h"
#include "qkscope/text/tokenizer.h"
#include "wordpiece.h"

namespace qkscope::text {
namespace {

using nlohmann::json;
using detail::Normalizer;
using detail::PreTokenizer;

// The file being read, for messages.
struct Source {
  std::string path;

  [[noreturn]] void fail(std::string_view what) const {
    throw FormatError(fmt::format("{}: {}", path, what));
  }
  [[noreturn]] void unsupported(std::string_view component, std::string_view type,
                                std::string_view supported) const {
    throw Error(fmt::format("{}: unsupported {} type '{}' (supported: {})", path, component, type,
                            supported));
  }
};

const json* find(const json& object, const char* key) {
  auto it = object.find(key);
  return it == object.end() || it->is_null() ? nullptr : &*it;
}

bool get_bool(const json& object, const char* key, bool fallback, const Source& src,
              std::string_view where) {
  const json* v = find(object, key);
  if (v == nullptr) return fallback;
  if (!v->is_boolean()) src.fail(fmt::format("{}.{} must be true or false", where, key));
  return v->get<bool>();
}

std::optional<std::string> get_string(const json& object, const char* key, const Source& src,
                                      std::string_view where) {
  const json* v = find(object, key);
  if (v == nullptr) return std::nullopt;
  if (!v->is_string()) src.fail(fmt::format("{}.{} must be a string", where, key));
  return v->get<std::string>();
}

// HF's ids are u32: a larger one cannot come from a real file, and would overflow vocab_size().
int64_t get_id(const json& v, const Source& src, std::string_view where) {
  if (!v.is_number_integer() || v.get<int64_t>() < 0 || v.get<int64_t>() > UINT32_MAX) {
    src.fail(fmt::format("{} must be an integer id in [0, 2^32), got {}", where, v.dump()));
  }
  return v.get<int64_t>();
}

// The "type" of a component object.
std::string type_of(const json& node, const Source& src, std::string_view where) {
  if (!node.is_object()) src.fail(fmt::format("{} must be an object or null", where));
  auto type = get_string(node, "type", src, where);
  if (!type) src.fail(fmt::format("{} has no \"type\"", where));
  return *type;
}

const json& get_array(const json& object, const char* key, const Source& src,
                      std::string_view where) {
  const json* v = find(object, key);
  if (v == nullptr || !v->is_array()) src.fail(fmt::format("{}.{} must be an array", where, key));
  return *v;
}

std::unique_ptr<Normalizer> parse_normalizer(const json& node, const Source& src,
                                             const std::string& where) {
  const std::string type = type_of(node, src, where);
  if (type == "BertNormalizer") {
    detail::BertNormalizerOptions o;
    o.clean_text = get_bool(node, "clean_text", true, src, where);
    o.handle_chinese_chars = get_bool(node, "handle_chinese_chars", true, src, where);
    o.lowercase = get_bool(node, "lowercase", true, src, where);
    o.strip_accents = get_bool(node, "strip_accents", o.lowercase, src, where);  // null: follow
    return detail::make_bert_normalizer(o);
  }
  if (type == "Lowercase") return detail::make_lowercase();
  if (type == "StripAccents") return detail::make_strip_accents();
  if (type == "NFC") return detail::make_unicode_normalizer(detail::NormalForm::kNFC);
  if (type == "NFD") return detail::make_unicode_normalizer(detail::NormalForm::kNFD);
  if (type == "NFKC") return detail::make_unicode_normalizer(detail::NormalForm::kNFKC);
  if (type == "NFKD") return detail::make_unicode_normalizer(detail::NormalForm::kNFKD);
  if (type == "Sequence") {
    std::vector<std::unique_ptr<Normalizer>> steps;
    const json& list = get_array(node, "normalizers", src, where);
    for (std::size_t i = 0; i < list.size(); ++i) {
      steps.push_back(parse_normalizer(list[i], src, fmt::format("{}.normalizers[{}]", where, i)));
    }
    return detail::make_normalizer_sequence(std::move(steps));
  }
  src.unsupported("normalizer", type,
                  "BertNormalizer, Lowercase, StripAccents, NFC, NFD, NFKC, NFKD, Sequence");
}

detail::SplitBehavior parse_behavior(const json& node, const Source& src,
                                     const std::string& where) {
  const auto name = get_string(node, "behavior", src, where).value_or("");
  if (name == "Removed") return detail::SplitBehavior::kRemoved;
  if (name == "Isolated") return detail::SplitBehavior::kIsolated;
  if (name == "MergedWithPrevious") return detail::SplitBehavior::kMergedWithPrevious;
  if (name == "MergedWithNext") return detail::SplitBehavior::kMergedWithNext;
  if (name == "Contiguous") return detail::SplitBehavior::kContiguous;
  src.fail(fmt::format("{}.behavior '{}' is not one of Removed, Isolated, MergedWithPrevious, "
                       "MergedWithNext, Contiguous",
                       where, name));
}

std::unique_ptr<PreTokenizer> parse_pre_tokenizer(const json& node, const Source& src,
                                                  const std::string& where) {
  const std::string type = type_of(node, src, where);
  if (type == "BertPreTokenizer") return detail::make_bert_pre_tokenizer();
  if (type == "ByteLevel") {
    // HF's defaults when a field is absent: add_prefix_space true, use_regex true.
    return detail::make_byte_level(get_bool(node, "add_prefix_space", true, src, where),
                                   get_bool(node, "use_regex", true, src, where));
  }
  if (type == "Split") {
    const json* pattern = find(node, "pattern");
    if (pattern == nullptr || !pattern->is_object()) {
      src.fail(fmt::format("{}.pattern must be {{\"Regex\": ...}} or {{\"String\": ...}}", where));
    }
    const auto regex = get_string(*pattern, "Regex", src, where + ".pattern");
    const auto literal = get_string(*pattern, "String", src, where + ".pattern");
    if (!regex && !literal) {
      src.fail(fmt::format("{}.pattern must be {{\"Regex\": ...}} or {{\"String\": ...}}", where));
    }
    const detail::SplitBehavior behavior = parse_behavior(node, src, where);
    const bool invert = get_bool(node, "invert", false, src, where);
    try {
      return detail::make_split(regex ? *regex : *literal, !regex, behavior, invert);
    } catch (const FormatError& e) {  // the regex does not compile
      src.fail(fmt::format("{}: {}", where, e.what()));
    }
  }
  if (type == "Sequence") {
    std::vector<std::unique_ptr<PreTokenizer>> steps;
    const json& list = get_array(node, "pretokenizers", src, where);
    for (std::size_t i = 0; i < list.size(); ++i) {
      steps.push_back(
          parse_pre_tokenizer(list[i], src, fmt::format("{}.pretokenizers[{}]", where, i)));
    }
    return detail::make_pre_tokenizer_sequence(std::move(steps));
  }
  src.unsupported("pre_tokenizer", type, "BertPreTokenizer, ByteLevel, Split, Sequence");
}

detail::Vocab parse_vocab(const json& model, const Source& src) {
  const json* vocab = find(model, "vocab");
  if (vocab == nullptr || !vocab->is_object()) src.fail("model.vocab must be an object");
  detail::Vocab out;
  out.reserve(vocab->size());
  for (auto it = vocab->begin(); it != vocab->end(); ++it) {
    out.emplace(it.key(), get_id(it.value(), src, fmt::format("model.vocab[\"{}\"]", it.key())));
  }
  return out;
}

// Merges as "a b" strings (older files; "#version" lines skipped as HF does) or ["a", "b"].
std::vector<std::pair<std::string, std::string>> parse_merges(const json& model,
                                                              const Source& src) {
  std::vector<std::pair<std::string, std::string>> merges;
  const json* list = find(model, "merges");
  if (list == nullptr) return merges;
  if (!list->is_array()) src.fail("model.merges must be an array");
  for (std::size_t i = 0; i < list->size(); ++i) {
    const json& m = (*list)[i];
    if (m.is_string()) {
      const std::string s = m.get<std::string>();
      if (s.rfind("#version", 0) == 0) continue;
      const auto space = s.find(' ');
      if (space == std::string::npos || s.find(' ', space + 1) != std::string::npos) {
        src.fail(fmt::format("model.merges[{}] \"{}\" is not two tokens separated by a space", i,
                             s));
      }
      merges.emplace_back(s.substr(0, space), s.substr(space + 1));
    } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
      merges.emplace_back(m[0].get<std::string>(), m[1].get<std::string>());
    } else {
      src.fail(fmt::format("model.merges[{}] must be \"a b\" or [\"a\", \"b\"], got {}", i,
                           m.dump()));
    }
  }
  return merges;
}

std::unique_ptr<detail::Model> parse_model(const json& model, const Source& src,
                                           std::string& type) {
  if (!model.is_object()) src.fail("\"model\" must be an object");
  const auto explicit_type = get_string(model, "type", src, "model");
  // Files written before models were tagged carry no "type"; their fields tell.
  type = explicit_type ? *explicit_type
         : model.contains("merges")                   ? "BPE"
         : model.contains("max_input_chars_per_word") ? "WordPiece"
                                                      : "(none)";
  if (type == "WordPiece") {
    detail::WordPieceOptions o;
    o.unk_token = get_string(model, "unk_token", src, "model").value_or(o.unk_token);
    o.continuing_subword_prefix = get_string(model, "continuing_subword_prefix", src, "model")
                                      .value_or(o.continuing_subword_prefix);
    if (const json* max = find(model, "max_input_chars_per_word")) {
      o.max_input_chars_per_word =
          static_cast<std::size_t>(get_id(*max, src, "model.max_input_chars_per_word"));
    }
    return detail::make_wordpiece(parse_vocab(model, src), o, src.path);
  }
  if (type == "BPE") {
    if (const json* dropout = find(model, "dropout")) {
      if (!dropout->is_number() || dropout->get<double>() != 0.0) {
        throw Error(fmt::format("{}: unsupported BPE dropout {} (it makes encoding random; "
                                "supported: null or 0)",
                                src.path, dropout->dump()));
      }
    }
    detail::BpeOptions o;
    o.unk_token = get_string(model, "unk_token", src, "model");
    o.continuing_subword_prefix = get_string(model, "continuing_subword_prefix", src, "model");
    o.end_of_word_suffix = get_string(model, "end_of_word_suffix", src, "model");
    o.fuse_unk = get_bool(model, "fuse_unk", false, src, "model");
    o.byte_fallback = get_bool(model, "byte_fallback", false, src, "model");
    o.ignore_merges = get_bool(model, "ignore_merges", false, src, "model");
    return detail::make_bpe(parse_vocab(model, src), parse_merges(model, src), o, src.path);
  }
  src.unsupported("model", type, "WordPiece, BPE");
}

std::vector<detail::AddedToken> parse_added_tokens(const json& root, const Source& src) {
  std::vector<detail::AddedToken> out;
  const json* list = find(root, "added_tokens");
  if (list == nullptr) return out;
  if (!list->is_array()) src.fail("added_tokens must be an array");
  for (std::size_t i = 0; i < list->size(); ++i) {
    const json& t = (*list)[i];
    const std::string where = fmt::format("added_tokens[{}]", i);
    if (!t.is_object() || !t.contains("id")) src.fail(where + " must be an object with an id");
    detail::AddedToken token;
    token.id = get_id(t["id"], src, where + ".id");
    auto content = get_string(t, "content", src, where);
    if (!content) src.fail(where + " has no content");
    token.content = std::move(*content);
    token.special = get_bool(t, "special", false, src, where);
    token.single_word = get_bool(t, "single_word", false, src, where);
    token.lstrip = get_bool(t, "lstrip", false, src, where);
    token.rstrip = get_bool(t, "rstrip", false, src, where);
    token.normalized = get_bool(t, "normalized", !token.special, src, where);
    out.push_back(std::move(token));
  }
  return out;
}

// ["[CLS]", 101] of BertProcessing / RobertaProcessing.
int64_t parse_token_pair(const json& node, const char* key, const Source& src,
                         const std::string& where) {
  const json* v = find(node, key);
  if (v == nullptr || !v->is_array() || v->size() != 2) {
    src.fail(fmt::format("{}.{} must be [token, id]", where, key));
  }
  return get_id((*v)[1], src, fmt::format("{}.{}[1]", where, key));
}

struct Frame {
  std::vector<int64_t> prefix;
  std::vector<int64_t> suffix;
};

Frame parse_template(const json& node, const Source& src, const std::string& where) {
  const json& single = get_array(node, "single", src, where);
  const json* specials = find(node, "special_tokens");
  Frame frame;
  bool seen_a = false;
  for (std::size_t i = 0; i < single.size(); ++i) {
    const json& piece = single[i];
    const std::string at = fmt::format("{}.single[{}]", where, i);
    if (const json* seq = piece.is_object() ? find(piece, "Sequence") : nullptr) {
      const auto id = get_string(*seq, "id", src, at + ".Sequence").value_or("");
      if (id != "A" || seen_a) src.fail(at + ": a single-sequence template takes $A once");
      seen_a = true;
      continue;
    }
    const json* special = piece.is_object() ? find(piece, "SpecialToken") : nullptr;
    if (special == nullptr) {
      src.fail(at + " must be {\"Sequence\": ...} or {\"SpecialToken\": ...}");
    }
    const auto name = get_string(*special, "id", src, at + ".SpecialToken");
    const json* entry = specials && name ? find(*specials, name->c_str()) : nullptr;
    if (entry == nullptr) {
      src.fail(fmt::format("{}: special token '{}' is not in {}.special_tokens", at,
                           name.value_or(""), where));
    }
    const json& ids = get_array(*entry, "ids", src, fmt::format("{}.special_tokens", where));
    for (const json& id : ids) {
      (seen_a ? frame.suffix : frame.prefix).push_back(get_id(id, src, at));
    }
  }
  if (!seen_a) src.fail(where + ".single has no $A");
  return frame;
}

Frame parse_post_processor(const json* node, const Source& src, const std::string& where) {
  if (node == nullptr) return {};
  const std::string type = type_of(*node, src, where);
  if (type == "TemplateProcessing") return parse_template(*node, src, where);
  if (type == "BertProcessing" || type == "RobertaProcessing") {
    return {{parse_token_pair(*node, "cls", src, where)},
            {parse_token_pair(*node, "sep", src, where)}};
  }
  if (type == "ByteLevel") return {};  // only trims offsets
  if (type == "Sequence") {
    // Each processor wraps what the previous ones produced.
    Frame total;
    const json& list = get_array(*node, "processors", src, where);
    for (std::size_t i = 0; i < list.size(); ++i) {
      Frame f = parse_post_processor(&list[i], src, fmt::format("{}.processors[{}]", where, i));
      total.prefix.insert(total.prefix.begin(), f.prefix.begin(), f.prefix.end());
      total.suffix.insert(total.suffix.end(), f.suffix.begin(), f.suffix.end());
    }
    return total;
  }
  src.unsupported("post_processor", type,
                  "TemplateProcessing, BertProcessing, RobertaProcessing, ByteLevel, Sequence");
}

// serde_json's recursion limit, which HuggingFace's loader inherits. Deeper files would exhaust
// the stack here: the component parsers recurse, and so does json::dump() in messages.
constexpr int kMaxDepth = 128;

}  // namespace

std::unique_ptr<Tokenizer> load_tokenizer_json(const std::filesystem::path& path) {
  const Source src{path.string()};
  json root;
  try {
    root = json::parse(detail::read_file(path), [&](int depth, json::parse_event_t, json&) {
      if (depth > kMaxDepth) {
        src.fail(fmt::format("JSON nested deeper than {} levels", kMaxDepth));
      }
      return true;
    });
  } catch (const json::exception& e) {  // parse errors, and numbers too large for a double
    src.fail(fmt::format("malformed JSON: {}", e.what()));
  }
  if (!root.is_object()) src.fail("a tokenizer.json must hold a JSON object");
  const json* model = find(root, "model");
  if (model == nullptr) src.fail("no \"model\"");

  detail::PipelineParts parts;
  std::string model_type;
  parts.model = parse_model(*model, src, model_type);
  parts.name = fmt::format("{} (tokenizer.json: {})", model_type, src.path);
  if (const json* n = find(root, "normalizer")) {
    parts.normalizer = parse_normalizer(*n, src, "normalizer");
  }
  if (const json* p = find(root, "pre_tokenizer")) {
    parts.pre_tokenizer = parse_pre_tokenizer(*p, src, "pre_tokenizer");
  }
  Frame frame = parse_post_processor(find(root, "post_processor"), src, "post_processor");
  parts.prefix = std::move(frame.prefix);
  parts.suffix = std::move(frame.suffix);
  parts.added_tokens = parse_added_tokens(root, src);
  if (const json* padding = find(root, "padding")) {
    if (const json* pad = padding->is_object() ? find(*padding, "pad_id") : nullptr) {
      parts.pad_id = get_id(*pad, src, "padding.pad_id");
    }
  }
  return detail::make_pipeline_tokenizer(std::move(parts));
}

}  // namespace qkscope::text
