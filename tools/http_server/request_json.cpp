#include "request_json.h"

#include <fmt/format.h>

#include <algorithm>
#include <limits>

namespace qkscope::http {
namespace {

// The JSON type of `v` as a client would name it.
std::string type_name(const nlohmann::json& v) {
  if (v.is_number_integer()) return "an integer";
  if (v.is_number_float()) return "a fractional number";
  return std::string(v.type_name());  // "object", "array", "string", "boolean", "null"
}

HttpError bad(const std::string& reason) { return HttpError(400, reason); }

}  // namespace

nlohmann::json parse_object(const std::string& body) {
  if (body.find_first_not_of(" \t\r\n") == std::string::npos) return nlohmann::json::object();
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(body);
  } catch (const nlohmann::json::exception& e) {
    // A syntax error, or a number past a double (out_of_range.406). nlohmann's message:
    // "[json.exception.parse_error.101] parse error at line 1, column 5: syntax error ...";
    // the part after the bracket is the reason.
    std::string what = e.what();
    const size_t at = what.find("] ");
    throw bad("body is not valid JSON: " + (at == std::string::npos ? what : what.substr(at + 2)));
  }
  if (!j.is_object()) throw bad("body: expected a JSON object, got " + type_name(j));
  return j;
}

void check_keys(const nlohmann::json& object, std::initializer_list<const char*> allowed) {
  for (auto it = object.begin(); it != object.end(); ++it) {
    if (std::none_of(allowed.begin(), allowed.end(),
                     [&](const char* a) { return it.key() == a; })) {
      std::string names;
      for (const char* a : allowed) names += std::string(names.empty() ? "" : ", ") + a;
      throw bad(fmt::format("unknown field \"{}\" (expected some of: {})", it.key(), names));
    }
  }
}

std::optional<int64_t> get_int(const nlohmann::json& object, const char* key, int64_t min,
                               int64_t max) {
  const auto it = object.find(key);
  if (it == object.end() || it->is_null()) return std::nullopt;
  if (!it->is_number_integer())
    throw bad(fmt::format("{}: expected an integer, got {}", key, type_name(*it)));
  if (it->is_number_unsigned() &&
      it->get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
    throw bad(fmt::format("{}: expected {}..{}, got {}", key, min, max, it->dump()));
  const int64_t v = it->get<int64_t>();
  if (v < min || v > max) throw bad(fmt::format("{}: expected {}..{}, got {}", key, min, max, v));
  return v;
}

std::optional<bool> get_bool(const nlohmann::json& object, const char* key) {
  const auto it = object.find(key);
  if (it == object.end() || it->is_null()) return std::nullopt;
  if (!it->is_boolean())
    throw bad(fmt::format("{}: expected true or false, got {}", key, type_name(*it)));
  return it->get<bool>();
}

std::optional<std::string> get_string(const nlohmann::json& object, const char* key) {
  const auto it = object.find(key);
  if (it == object.end() || it->is_null()) return std::nullopt;
  if (!it->is_string()) throw bad(fmt::format("{}: expected a string, got {}", key, type_name(*it)));
  return it->get<std::string>();
}

std::optional<std::vector<int>> get_int_list(const nlohmann::json& object, const char* key,
                                             int max) {
  const auto it = object.find(key);
  if (it == object.end() || it->is_null()) return std::nullopt;
  if (!it->is_array())
    throw bad(fmt::format("{}: expected a list of integers, got {}", key, type_name(*it)));
  std::vector<int> out;
  for (size_t i = 0; i < it->size(); ++i) {
    const nlohmann::json& e = (*it)[i];
    if (!e.is_number_integer())
      throw bad(fmt::format("{}[{}]: expected an integer, got {}", key, i, type_name(e)));
    const bool too_big = e.is_number_unsigned() ? e.get<uint64_t>() > static_cast<uint64_t>(max)
                                                : e.get<int64_t>() > max;
    if (too_big || (!e.is_number_unsigned() && e.get<int64_t>() < 0))
      throw bad(fmt::format("{}[{}]: expected 0..{}, got {}", key, i, max, e.dump()));
    const int v = static_cast<int>(e.get<int64_t>());
    if (std::find(out.begin(), out.end(), v) != out.end())
      throw bad(fmt::format("{}[{}]: {} is listed twice", key, i, v));
    out.push_back(v);
  }
  return out;
}

std::vector<int64_t> get_ids(const nlohmann::json& object, int64_t vocab) {
  const auto it = object.find("ids");
  if (it == object.end() || !it->is_array())
    throw bad(fmt::format("ids: expected a list of token ids, got {}",
                          it == object.end() ? std::string("nothing") : type_name(*it)));
  std::vector<int64_t> ids;
  ids.reserve(it->size());
  for (size_t i = 0; i < it->size(); ++i) {
    const nlohmann::json& e = (*it)[i];
    if (!e.is_number_integer())
      throw bad(fmt::format("ids[{}]: expected an integer token id, got {}", i, type_name(e)));
    const bool in_range = e.is_number_unsigned()
                              ? e.get<uint64_t>() < static_cast<uint64_t>(vocab)
                              : e.get<int64_t>() >= 0 && e.get<int64_t>() < vocab;
    if (!in_range)
      throw bad(fmt::format("ids[{}]: expected a token id in 0..{}, got {}", i, vocab - 1,
                            e.dump()));
    ids.push_back(e.get<int64_t>());
  }
  return ids;
}

}  // namespace qkscope::http
