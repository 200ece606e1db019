// A model's output as JSON: the tensors themselves, or a summary. Torch-free header.
#pragma once

#include <nlohmann/json.hpp>

namespace c10 {
struct IValue;
}

namespace qkscope::http {

// Tensors as {"dtype": "float32", "shape": [...], "data": [... row-major ...]}; tuples and
// lists as arrays, dicts with string keys as objects, scalars as themselves. Floating values
// are written as the shortest decimal that reads back to the same double, and a float32 widened
// to double reads back to the same float: the client gets the model's output bit for bit.
// NaN and infinities have no JSON number: they are written as the strings "NaN", "Infinity",
// "-Infinity". Throws qkscope::Error for an output of another kind.
nlohmann::json output_tensors(const c10::IValue& output);

// The same structure with, per tensor, dtype and shape only, plus "argmax": for a floating
// tensor of rank >= 1, the index of the largest entry along the last dimension (for logits,
// the predicted token of every position), nested as the leading dimensions.
nlohmann::json output_summary(const c10::IValue& output);

}  // namespace qkscope::http
