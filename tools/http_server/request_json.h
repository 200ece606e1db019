// Reading request bodies: every check a client can fail ends in an HttpError with a one-line
// reason that names the field, what was expected and what arrived. Torch-free.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "service.h"

namespace qkscope::http {

// Parses `body` as a JSON object (400 otherwise); an empty body is the empty object.
nlohmann::json parse_object(const std::string& body);

// 400 when `object` has a key not in `allowed` (a misspelt option must not be ignored).
void check_keys(const nlohmann::json& object, std::initializer_list<const char*> allowed);

// Optional fields of `object`: nullopt when absent (or null); 400 when of another type or
// (integers) outside [min, max].
std::optional<int64_t> get_int(const nlohmann::json& object, const char* key, int64_t min,
                               int64_t max);
std::optional<bool> get_bool(const nlohmann::json& object, const char* key);
std::optional<std::string> get_string(const nlohmann::json& object, const char* key);
// A list of distinct integers in [0, max].
std::optional<std::vector<int>> get_int_list(const nlohmann::json& object, const char* key,
                                             int max);

// "ids": integers in [0, vocab); 400 naming the first bad entry. Does not check the count.
std::vector<int64_t> get_ids(const nlohmann::json& object, int64_t vocab);

}  // namespace qkscope::http
